"""Training plumbing shared by every lesson: tokenisation, collators, checkpoints to resume from, the Trainer.

Lessons train with the Hugging Face `Trainer` (or `trl` trainers built on it), so what a learner sees here is what
they will use on real models. This module only fixes the defaults that matter for a small, repeatable, offline run.

Used in lessons: 02
"""

from __future__ import annotations

import io
import math
import numbers
import random
from contextlib import contextmanager, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from transformers import TrainerCallback

from course_utils.config import CourseConfig, TrainingSettingsError
from course_utils.data import DataError
from course_utils.errors import CourseError
from course_utils.paths import RUNS_DIR
from course_utils.text import check_texts, encode


LIBRARY_CALLS = {
    "transformers:TrainingArguments": ["save_steps", "save_total_limit", "save_only_model"],
    "transformers:Trainer.train": ["resume_from_checkpoint"],
    "transformers:Trainer.remove_callback": ["callback"],
}


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int = 128):
    """A `datasets.Dataset` of causal-LM examples, one per text (BOS + text + EOS, truncated to `max_length`)."""
    from datasets import Dataset

    texts = check_texts(texts, "tokenize_texts")
    if len(texts) == 0:
        raise DataError("tokenize_texts: no texts given")
    rows = []
    for text in texts:
        ids = encode(tokenizer, text, add_eos=True, max_tokens=max_length)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return Dataset.from_list(rows)


def tokenize_prompt_completion(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                               max_length: int = 128):
    """Examples whose loss covers only the completion (labels -100 on the prompt): 'answer-only' fine-tuning.

    Truncation to `max_length` cuts the end, i.e. the completion; an example whose prompt alone fills
    `max_length` would keep no label at all, so it is refused (`DataError` naming it) rather than trained on.
    """
    from datasets import Dataset

    if len(prompts) != len(completions):
        raise DataError(f"tokenize_prompt_completion: {len(prompts)} prompts but {len(completions)} completions")
    if len(prompts) == 0:
        raise DataError("tokenize_prompt_completion: no examples given")
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError(f"tokenize_prompt_completion: example {i} has a {type(prompt).__name__} prompt and a "
                            f"{type(completion).__name__} completion; both must be str")
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        p = encode(tokenizer, prompt)
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(p) >= max_length:  # every label would be -100: the Trainer would log a loss of 0 and learn nothing
            raise DataError(f"tokenize_prompt_completion: example {i}'s prompt is {len(p)} tokens, so max_length="
                            f"{max_length} leaves no completion token to learn from; shorten it or raise max_length")
        ids = (p + c)[:max_length]
        labels = ([-100] * len(p) + c)[:max_length]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return Dataset.from_list(rows)


def causal_collator(tokenizer):
    """Pads a batch; labels are the inputs (or the given labels) with padding masked to -100."""
    from transformers import DataCollatorForSeq2Seq

    # DataCollatorForSeq2Seq pads `labels` with -100 and is happy with decoder-only examples that carry labels.
    def collate(features: list[dict[str, Any]]):
        feats = [dict(f, labels=f.get("labels", f["input_ids"])) for f in features]
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(feats)

    return collate


def run_dir(lesson: str, name: str | None = None, root: str | Path | None = None) -> Path:
    """A run-specific folder `runs/checkpoints/<lesson>/<name>` (name defaults to a UTC timestamp).

    Checkpoints of one run never land in another run's folder, so nothing a learner trained is overwritten
    silently; pass the same `name` again to resume that run.
    """

    if not isinstance(lesson, str) or not lesson.strip() or "/" in lesson:
        raise CourseError(f"run_dir: lesson must be a non-empty name without '/', got {lesson!r}")
    name = name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return Path(root or RUNS_DIR / "checkpoints") / lesson / name


def resumable_training_args(config: CourseConfig, run_folder: str | Path, save_steps: int,
                            save_total_limit: int | None = 2, **overrides):
    """`config`'s `TrainingArguments`, saving a checkpoint every `save_steps` steps into `run_folder`, so
    training can resume; `overrides` are the run's other `TrainingArguments` keywords.

    Each checkpoint (`checkpoint-<step>/`) holds the weights as `model.safetensors` (transformers 5 writes only
    safetensors, so there is no `save_safetensors` switch any more) plus the optimizer, scheduler, RNG states and
    step counter that `Trainer` needs to continue exactly where it stopped. Only the newest `save_total_limit`
    checkpoints are kept.
    """
    if not isinstance(save_steps, int) or isinstance(save_steps, bool) or save_steps < 1:
        raise CourseError(f"resumable_training_args: save_steps must be a positive int, got {save_steps!r}")
    return config.training_arguments(output_dir=str(run_folder), save_strategy="steps", save_steps=save_steps,
                                     save_total_limit=save_total_limit, save_only_model=False, **overrides)


def last_checkpoint(run_folder: str | Path) -> str | None:
    """The newest *complete* `checkpoint-<step>` folder in `run_folder`, or None when there is none yet.

    Hand-written rather than `transformers.trainer_utils.get_last_checkpoint`, which returns the newest folder
    even when a kill interrupted its writing; Trainer writes `trainer_state.json` last, so we require it, and
    every weights file must be whole (a truncated one falls back to the checkpoint before it).
    """
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in run_folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    # weights are model.safetensors, or adapter_model.safetensors for a PEFT model
    complete = [p for _, p in steps if (p / "trainer_state.json").is_file() and weights_whole(p)]
    return str(complete[-1]) if complete else None


def weights_whole(folder: Path) -> bool:
    """The folder holds safetensors weights and each file's header opens and covers the file (read alone, no
    tensors loaded): false for a file a kill or a full disk cut short."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError):
            return False
    return bool(files)


def train_with_resume(trainer):
    """`trainer.train()`, resumed from the newest checkpoint in `trainer.args.output_dir` when one exists.

    After an interruption (a killed kernel, a closed laptop) call this again with a trainer built the same way:
    Trainer reloads weights, optimizer, scheduler and RNG states and skips the batches already seen, so the run
    ends where an uninterrupted run would have ended.
    """
    if trainer.args.save_strategy == "no":
        raise CourseError("train_with_resume: the trainer saves no checkpoints (save_strategy='no'); "
                          "build its arguments with resumable_training_args(...)")
    return trainer.train(resume_from_checkpoint=last_checkpoint(trainer.args.output_dir))


# ---------------------------------------------------------------------------------------------------- rehearsal
def rehearsal_count(n_new: int, ratio: float) -> int:
    """How many old examples make `ratio` of a set that holds `n_new` new ones: round(ratio * n_new / (1 - ratio))."""
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= ratio < 1.0:
        raise TrainingSettingsError(f"rehearsal ratio must be in [0, 1) (the share of old data in the mix), got {ratio!r}; "
                              f"1.0 would leave no room for the new data")
    return int(round(ratio * n_new / (1.0 - ratio)))


def mix_rehearsal(new: Sequence[Any], old: Sequence[Any], ratio: float, seed: int = 0, epochs: int = 1) -> list[Any]:
    """The fine-tuning set with rehearsal: every new example once per epoch, plus old examples making up `ratio`.

    `ratio` is the share of *old* examples in each epoch (0.05 = 5 % replay, as in Ibrahim et al. 2024). The old
    examples are drawn without replacement from a seeded shuffle of `old`, continuing across epochs, so a long run
    rehearses many different old examples instead of repeating a few. Each epoch is shuffled; the result is the
    same list for the same seed. The old share is exact up to rounding to a whole example (within 0.5 / epoch size).
    """
    if len(new) == 0:
        raise TrainingSettingsError("mix_rehearsal: the new (fine-tuning) data is empty")
    if epochs < 1:
        raise TrainingSettingsError(f"mix_rehearsal: epochs must be >= 1, got {epochs}")
    n_old = rehearsal_count(len(new), ratio)
    if ratio > 0 and len(old) == 0:
        raise TrainingSettingsError(f"mix_rehearsal: ratio {ratio} asks for old examples but the original data is empty")
    rng = random.Random(seed)
    order: list[int] = []
    mixed: list[Any] = []
    for _ in range(epochs):
        picks = []
        while len(picks) < n_old:  # walk through shuffled copies of `old`, so repeats come only after all were used
            if not order:
                order = list(range(len(old)))
                rng.shuffle(order)
            picks.append(old[order.pop()])
        epoch = list(new) + picks
        rng.shuffle(epoch)
        mixed += epoch
    return mixed


# ---------------------------------------------------------------------------------------------------- monitoring
class ForgettingMonitor(TrainerCallback):
    """Calls `measure(model)` before training and every `every` steps (and at the last); rows land in `history`.

    `start`, if given, is the already-measured base model's row, used for step 0 instead of measuring it again.
    """

    def __init__(self, measure: Callable[[Any], dict[str, float]], every: int, label: Mapping[str, Any] = (),
                 start: Mapping[str, float] | None = None):
        if every < 1:
            raise TrainingSettingsError(f"ForgettingMonitor: every must be >= 1, got {every}")
        self.measure, self.every, self.label, self.start = measure, every, dict(label), start
        self.history: list[dict[str, Any]] = []

    def _record(self, state, model) -> None:
        was_training = model.training
        self.history.append({**self.label, "step": state.global_step, **self.measure(model)})
        model.train(was_training)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.start is not None:
            self.history.append({**self.label, "step": state.global_step, **self.start})
        else:
            self._record(state, kwargs["model"])

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._record(state, kwargs["model"])


def rehearsal_set(new: Sequence[Any], old: Sequence[Any], ratio: float, seed: int, steps: int,
                  batch_size: int) -> list[Any]:
    """`mix_rehearsal` with enough epochs for a run of `steps` batches of `batch_size`: the set a rehearsal run
    trains on, whichever lesson runs it."""
    return mix_rehearsal(list(new), list(old), ratio, seed=seed, epochs=steps * batch_size // max(len(new), 1) + 1)


# ---------------------------------------------------------------------------------------------------- the guard
class FiniteGuard(TrainerCallback):
    """Stops training that produced NaN or inf: a too-high learning rate diverges silently otherwise.

    On each log it checks the loss and the gradient norm (the loss alone is not enough: `Trainer` replaces a NaN
    loss by the average of earlier ones in its logs, `logging_nan_inf_filter`); at the end of training it checks
    every trainable weight (once, so it costs nothing per step), so no metric is ever reported for a model whose
    weights are NaN. It only reads numbers: it draws no random numbers and changes nothing, so valid runs give the
    same results. Under fp16 mixed precision an inf gradient norm is normal (the loss scaler skips that step), so
    it is not checked there; the weights still are.
    """

    LOGGED = ("loss", "train_loss", "grad_norm")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.LOGGED:
            value = (logs or {}).get(key)
            if key == "grad_norm" and getattr(args, "fp16", False):
                continue
            if isinstance(value, numbers.Real) and not math.isfinite(value):
                raise TrainingSettingsError(
                    f"FiniteGuard: training logged {key}={value} at step {state.global_step} (learning rate "
                    f"{args.learning_rate}); the run diverged, so lower the learning rate or check the data")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        bad = non_finite_weights(model) if model is not None else []
        if bad:
            raise TrainingSettingsError(
                f"FiniteGuard: after {state.global_step} steps {len(bad)} trainable weight tensor(s) are NaN or inf "
                f"(first: {bad[0]}; learning rate {args.learning_rate}); lower the learning rate and train again")


def non_finite_weights(model) -> list[str]:
    """Names of the trainable parameters that hold a NaN or an inf (empty for a healthy model)."""
    import torch

    return [name for name, p in model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]


def with_finite_guard(callbacks: Sequence[Any] = ()) -> list[Any]:
    """`callbacks` plus a `FiniteGuard`, unless one is already there: what the course's trainers are built with."""
    callbacks = list(callbacks)
    return callbacks if any(isinstance(c, FiniteGuard) for c in callbacks) else [*callbacks, FiniteGuard()]


# ---------------------------------------------------------------------------------------------------- the trainer
def quiet(trainer, progress: bool = False):
    """Switch off the Trainer's printed log dicts and return it: without progress bars, transformers prints every
    log dict, and each lesson shows its own table instead. The logs stay in `trainer.state.log_history`.
    With `progress=True` (a run that shows its progress bars) the trainer is left as it is."""
    from transformers import PrinterCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def causal_lm_trainer(model, tokenizer, texts: Sequence[str], args, callbacks: Sequence[Any] = (),
                      eval_texts: Sequence[str] | None = None, max_length: int = 96, trainer_class=None,
                      **trainer_kwargs):
    """A `Trainer` (or `trainer_class`, e.g. an EWC subclass) that fine-tunes a causal LM on plain `texts`.

    Every lesson that continues a language model on text builds its trainer here: examples are BOS + text + EOS
    cut to `max_length`, padding is masked out of the loss, `eval_texts` (if given) are the validation set, and
    the printed loss dicts are switched off because each lesson shows its own measured table instead, and a
    `FiniteGuard` stops a run whose loss or weights become NaN or inf.
    """
    from transformers import Trainer

    trainer = (trainer_class or Trainer)(
        model=model, args=args, train_dataset=tokenize_texts(tokenizer, texts, max_length),
        eval_dataset=tokenize_texts(tokenizer, eval_texts, max_length) if eval_texts else None,
        data_collator=causal_collator(tokenizer), callbacks=with_finite_guard(callbacks), **trainer_kwargs)
    return quiet(trainer)


@contextmanager
def quiet_output() -> Iterator[None]:
    """Silence stdout and the hub's progress bars (`from_pretrained`'s weight loading) inside the block: for a
    study that loads and trains many models, whose printed lines would bury the lesson's tables. `quiet` is the
    narrower switch for one trainer's printed logs."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
