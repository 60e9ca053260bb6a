"""Training plumbing shared by every lesson: tokenisation, collators and `TrainingArguments` with course defaults.

Lessons train with the Hugging Face `Trainer` (or `trl` trainers built on it), so what a learner sees here is what
they will use on real models. This module only fixes the defaults that matter for a small, repeatable, offline run.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from course_utils.data import DataError
from course_utils.errors import CourseError

class TrainingSettingsError(CourseError, ValueError):
    """Training arguments that `TrainingArguments` would refuse (or silently misuse)."""


LIBRARY_CALLS = {
    "transformers:TrainingArguments": ["save_steps", "save_total_limit", "save_only_model"],
    "transformers:Trainer.train": ["resume_from_checkpoint"],
}


def bos_id(tokenizer) -> int:
    """The id every sequence starts with: BOS where the tokenizer has one, else EOS (Qwen2 has no BOS).

    A fixed first token matters: without it, the first position's prediction is noise that dominates
    distribution-shift measurements (LIBRARY_NOTES: about 8 nats of KL).
    """
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has neither a BOS nor an EOS token")
    return tid


def encode(tokenizer, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
    """Token ids of `text` with the course's conventions: BOS first, optional EOS last, no other specials."""
    if not isinstance(text, str):
        raise DataError(f"encode: text is {type(text).__name__} ({text!r:.40}), not str")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([bos_id(tokenizer)] if add_bos else []) + ids + ([tokenizer.eos_token_id] if add_eos else [])


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int = 128):
    """A `datasets.Dataset` of causal-LM examples, one per text (BOS + text + EOS, truncated to `max_length`)."""
    from datasets import Dataset

    if len(texts) == 0:
        raise DataError("tokenize_texts: no texts given")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"tokenize_texts: text {i} is {type(text).__name__}, not str")
        ids = encode(tokenizer, text, add_eos=True)[:max_length]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return Dataset.from_list(rows)


def tokenize_prompt_completion(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                               max_length: int = 128):
    """Examples whose loss covers only the completion (labels -100 on the prompt): 'answer-only' fine-tuning."""
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
    for prompt, completion in zip(prompts, completions):
        p = encode(tokenizer, prompt)
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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


def training_args(output_dir: str | None = None, **overrides):
    """`TrainingArguments` with course defaults: no reporting, no checkpoints unless asked, CPU when no GPU.

    Pass any `TrainingArguments` keyword to override. The defaults keep a notebook's run short and quiet.
    """
    import inspect
    import math
    import numbers

    import torch
    import transformers
    from transformers import TrainingArguments

    defaults: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="course-run-"),
        report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=50,
        per_device_train_batch_size=16, learning_rate=5e-4, lr_scheduler_type="constant_with_warmup",
        warmup_steps=10, seed=0, data_seed=0, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    defaults.update(overrides)
    known = inspect.signature(TrainingArguments).parameters
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise TrainingSettingsError(f"training_args: unknown TrainingArguments keyword(s) {unknown} "
                                    f"(renamed in transformers {transformers.__version__}?)")
    for key in ("learning_rate", "num_train_epochs"):
        value = defaults[key] if key in defaults else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0
                                  or math.isnan(value)):
            raise TrainingSettingsError(f"training_args: {key} must be a positive number, got {value!r}")
    batch = defaults["per_device_train_batch_size"]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TrainingSettingsError(f"training_args: per_device_train_batch_size must be a positive integer, "
                                    f"got {batch!r}")
    try:
        return TrainingArguments(**defaults)
    except ValueError as err:  # transformers' own consistency checks: keep the message, drop the traceback
        raise TrainingSettingsError(f"training_args: {str(err).strip().splitlines()[0]}") from None


def run_dir(lesson: str, name: str | None = None, root: str | Path | None = None) -> Path:
    """A run-specific folder `runs/checkpoints/<lesson>/<name>` (name defaults to a UTC timestamp).

    Checkpoints of one run never land in another run's folder, so nothing a learner trained is overwritten
    silently; pass the same `name` again to resume that run.
    """
    from course_utils.paths import RUNS_DIR

    if not isinstance(lesson, str) or not lesson.strip() or "/" in lesson:
        raise CourseError(f"run_dir: lesson must be a non-empty name without '/', got {lesson!r}")
    name = name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return Path(root or RUNS_DIR / "checkpoints") / lesson / name


def resumable_training_args(run_folder: str | Path, save_steps: int, save_total_limit: int | None = 2,
                            **overrides):
    """`training_args` that save a checkpoint every `save_steps` steps into `run_folder`, so training can resume.

    Each checkpoint (`checkpoint-<step>/`) holds the weights as `model.safetensors` (transformers 5 writes only
    safetensors, so there is no `save_safetensors` switch any more) plus the optimizer, scheduler, RNG states and
    step counter that `Trainer` needs to continue exactly where it stopped. Only the newest `save_total_limit`
    checkpoints are kept.
    """
    if not isinstance(save_steps, int) or isinstance(save_steps, bool) or save_steps < 1:
        raise CourseError(f"resumable_training_args: save_steps must be a positive int, got {save_steps!r}")
    return training_args(output_dir=str(run_folder), save_strategy="steps", save_steps=save_steps,
                         save_total_limit=save_total_limit, save_only_model=False, **overrides)


def last_checkpoint(run_folder: str | Path) -> str | None:
    """The newest *complete* `checkpoint-<step>` folder in `run_folder`, or None when there is none yet.

    Hand-written rather than `transformers.trainer_utils.get_last_checkpoint`, which returns the newest folder
    even when a kill interrupted its writing; Trainer writes `trainer_state.json` last, so we require it.
    """
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in run_folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    # weights are model.safetensors, or adapter_model.safetensors for a PEFT model
    complete = [p for _, p in steps if (p / "trainer_state.json").is_file() and any(p.glob("*.safetensors"))]
    return str(complete[-1]) if complete else None


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
