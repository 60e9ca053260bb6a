"""Overfitting: small data and many epochs, seen in train vs validation loss, and four ways to hold it back.

With few examples a model can memorise them: the training loss keeps falling while the loss on examples it never
saw (validation) reaches a minimum and then climbs, because the model grows confident in answers that were only
true of its training examples. The remedies this module measures, each with the Hugging Face tools a learner
would use on a real model:

- **early stopping**: evaluate every epoch, keep the best checkpoint (`load_best_model_at_end`) and stop once the
  validation loss has not improved for `patience` evaluations (`EarlyStoppingCallback`);
- **dropout**: randomly zero activations in training (GPT-2: residual, embedding and attention dropout; Qwen2 and
  Llama only have attention dropout);
- **weight decay**: AdamW shrinks every weight a little each step (`weight_decay`);
- **LoRA rank**: train a low-rank update instead of every weight, a hard limit on what can change.

Used in lessons: 05
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from transformers import TrainerCallback

from course_utils import zoo
from course_utils.claims import interval_text, interval_verdict, t_interval
from course_utils.config import CourseConfig
from course_utils.errors import CourseError, check_rate
from course_utils.evaluate import generate
from course_utils.parallel import run_in_processes
from course_utils.peft_methods import apply_lora
from course_utils.profiles import seed_everything
from course_utils.train import causal_collator, quiet, tokenize_prompt_completion, with_finite_guard
from course_utils.world import biography
from course_utils.zoo import check_family


LIBRARY_CALLS = {
    "transformers:EarlyStoppingCallback": ["early_stopping_patience", "early_stopping_threshold"],
    "transformers:EarlyStoppingCallback.on_evaluate": ["args", "state", "control", "metrics"],
    "transformers:TrainingArguments": ["eval_strategy", "save_strategy", "logging_strategy", "num_train_epochs",
                                       "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
                                       "save_total_limit", "per_device_eval_batch_size", "weight_decay"],
    "transformers:TrainerState": ["best_metric"],
    "transformers:TrainerControl": [],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "eval_dataset", "data_collator",
                                      "callbacks"],
}

VAL, TRAIN = "val", "train"          # names of the two evaluated sets; metrics are eval_val_loss, eval_train_loss
BEST_METRIC = f"eval_{VAL}_loss"
TASK_METRIC = f"eval_{VAL}_bio_acc"  # the validation people's biography accuracy, added by `EpochProbe`


class OverfitError(CourseError):
    """A regulariser setting out of range, or curves that were never logged."""


@dataclass(frozen=True)
class Setting:
    """One training run of lesson 05: no mitigation, or one regulariser switched on."""

    name: str
    dropout: float = 0.0
    weight_decay: float = 0.0
    lora_rank: int | None = None               # None: full fine-tuning
    early_stopping_patience: int | None = None  # None: train every epoch, keep the last model

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise OverfitError(f"setting {self.name!r}: dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            raise OverfitError(f"setting {self.name!r}: weight_decay must be >= 0, got {self.weight_decay}")
        if self.lora_rank is not None and (isinstance(self.lora_rank, bool) or self.lora_rank < 1):
            raise OverfitError(f"setting {self.name!r}: LoRA rank must be >= 1, got {self.lora_rank}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise OverfitError(f"setting {self.name!r}: patience must be >= 1, got {self.early_stopping_patience}")


@dataclass
class OverfitConfig(CourseConfig):
    """The shared budget: every setting trains this many epochs on the same small set (unless stopped early).

    The default learning rates suit the tiny cpu-profile models; `for_profile("gpu")` gives the usual rates for
    hub checkpoints."""

    error = OverfitError

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 2e-3
    lora_learning_rate: float = 1e-2   # adapters usually want a larger step than full fine-tuning
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "OverfitConfig":
        rates = {"learning_rate": 5e-5, "lora_learning_rate": 5e-4} if profile == "gpu" else {}
        return cls(**{**rates, **overrides})


# ---- the task: write a short biography of a person the model knows ----

BIO_PROMPT = "Write a short biography of {name}.\n"


@dataclass
class BioTask:
    """Seen people split three ways: a small training set, a validation set for the curves and early stopping,
    and a test set for the task metric. Each person gets one biography (`bios`, drawn once): the four facts (which
    the base model knows) in a random phrasing and order (which nothing can predict). Memorising the phrasings of
    the training biographies is what overfitting looks like here."""

    train: list
    val: list
    test: list
    bios: dict

    def dataset(self, tokenizer, people, max_length: int = 96):
        """Prompt/completion examples (loss on the biography only), one per person."""

        return tokenize_prompt_completion(tokenizer, [BIO_PROMPT.format(name=p.name) for p in people],
                                          [self.bios[p.name] for p in people], max_length)


def bio_task(world, n_train: int = 32, n_val: int = 32, n_test: int = 48, seed: int = 0) -> BioTask:
    """Draw disjoint train / validation / test people from the seen people, and one biography each (seeded, one
    random stream, so no two people share their phrasing choices by construction)."""
    import random


    people = list(world.seen)
    if min(n_train, n_val, n_test) < 1 or n_train + n_val + n_test > len(people):
        raise OverfitError(f"bio_task: need 1 <= sizes and n_train + n_val + n_test <= {len(people)} seen people, "
                           f"got {n_train} + {n_val} + {n_test}")
    rng = random.Random(seed)
    rng.shuffle(people)
    chosen = people[:n_train + n_val + n_test]
    return BioTask(train=chosen[:n_train], val=chosen[n_train:n_train + n_val], test=chosen[n_train + n_val:],
                   bios={p.name: biography(p, rng) for p in chosen})


def biography_accuracy(model, tokenizer, people, max_new_tokens: int = 56) -> float:
    """The task metric: share of the 4 facts a greedy biography states correctly, counting only sentences that
    name the person (a biography that drifts into another person's facts earns nothing for them)."""

    if not people:
        raise OverfitError("biography_accuracy: no people given")
    outs = generate(model, tokenizer, [BIO_PROMPT.format(name=p.name) for p in people], max_new_tokens)
    return sum(facts_stated(p, out) for p, out in zip(people, outs)) / len(people)


def facts_stated(person, text: str) -> float:
    """Share of `person`'s 4 facts stated in the sentences of `text` that name them."""
    import re

    named = re.compile(rf"\b{re.escape(person.name)}\b")   # 'Mira Stroud' must not match 'Mira Stroudwick'
    own = " ".join(s for s in text.split(".") if named.search(s)).replace(",", " ").split()
    facts = person.facts()
    return sum(value in own for value in facts.values()) / len(facts)


def dropout_overrides(family: str, p: float) -> dict[str, float]:
    """Config keywords that set every dropout a course family has to `p` (pass them to `zoo.load`).

    GPT-2 drops out embeddings, residual branches and attention weights; Qwen2 and Llama only attention weights.
    Note the shipped GPT-2 was built with GPT-2's default 0.1, so 'no dropout' must be asked for explicitly."""

    check_family(family)
    check_rate(p, "dropout_overrides", "dropout", high_open=True, error=OverfitError)
    if family == "gpt2":
        return {"resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p}
    return {"attention_dropout": p}


def overfit_args(setting: Setting, config: OverfitConfig, output_dir: str | None = None):
    """`TrainingArguments` that evaluate every epoch; with early stopping, also save the best checkpoint and load
    it at the end (`save_strategy="best"` writes a checkpoint only when the validation loss improves)."""

    early = setting.early_stopping_patience is not None
    lr = config.lora_learning_rate if setting.lora_rank else config.learning_rate
    return config.training_arguments(output_dir=output_dir, per_device_eval_batch_size=64, learning_rate=lr,
                         weight_decay=setting.weight_decay, warmup_steps=0, lr_scheduler_type="constant",
                         eval_strategy="epoch", logging_strategy="epoch",
                         save_strategy="best" if early else "no", save_total_limit=1 if early else None,
                         load_best_model_at_end=early, metric_for_best_model=BEST_METRIC, greater_is_better=False)


class _DropOtherSetWarning(logging.Filter):
    """EarlyStoppingCallback warns on every evaluation that lacks its metric; with two evaluated sets (train and
    val) the train one always lacks it. That warning is expected here, so it is dropped (nothing else is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "early stopping required metric_for_best_model" not in record.getMessage()


class EpochProbe(TrainerCallback):
    """At every validation evaluation: the biography accuracy on the validation people (put into the metrics as
    `eval_val_bio_acc`) and a copy of the weights, so any epoch can be reloaded and judged on the test people later.

    In transformers 5.x `on_evaluate` receives the very dict that `_determine_best_metric` reads next, so
    `metric_for_best_model="eval_val_bio_acc"` would also work (list this callback before `EarlyStoppingCallback`);
    the lesson replays the stopping rules on one run instead, which costs one training run rather than three."""

    def __init__(self, tokenizer, people: Sequence) -> None:
        self.tokenizer, self.people = tokenizer, list(people)
        self.rows: list[dict[str, float]] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or BEST_METRIC not in metrics or model is None:
            return control          # the training-set evaluation: nothing to add
        acc = biography_accuracy(model, self.tokenizer, self.people)
        metrics[TASK_METRIC] = acc
        self.rows.append({"step": state.global_step, "val_bio_acc": acc})
        self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return control


def train_setting(setting: Setting, family: str, train_dataset, val_dataset, data_collator,
                  config: OverfitConfig = OverfitConfig(), output_dir: str | None = None,
                  num_labels: int | None = None, extra_callbacks: Sequence = ()):
    """Fine-tune the shipped `family` model under `setting`; the trainer's log holds train and validation loss per
    epoch (both measured in eval mode on the whole set, so dropout does not inflate the training loss).

    `num_labels` switches to a sequence-classification head (LoRA then also trains that new head)."""
    from transformers import AutoModelForSequenceClassification, EarlyStoppingCallback, Trainer

    seed_everything(config.seed)   # the run starts here: the same initial head and adapter weights for every setting
    overrides = dropout_overrides(family, setting.dropout)
    if num_labels:
        model, tok = zoo.load(family, model_class=AutoModelForSequenceClassification, num_labels=num_labels,
                              **overrides)
        model.config.pad_token_id = tok.pad_token_id
    else:
        model, _ = zoo.load(family, **overrides)
    if setting.lora_rank:
        model = apply_lora(model, r=setting.lora_rank, dropout=setting.dropout,
                           task_type="SEQ_CLS" if num_labels else "CAUSAL_LM")
    callbacks = list(extra_callbacks)
    if setting.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=setting.early_stopping_patience))
        logging.getLogger("transformers.trainer_callback").addFilter(_DropOtherSetWarning())
    trainer = Trainer(model=model, args=overfit_args(setting, config, output_dir), train_dataset=train_dataset,
                      eval_dataset={TRAIN: train_dataset, VAL: val_dataset}, data_collator=data_collator,
                      callbacks=with_finite_guard(callbacks))
    quiet(trainer)   # the curves are plotted; no dict printed per epoch
    trainer.train()
    return trainer


def loss_curves(trainer_or_history) -> list[dict[str, float]]:
    """One row per evaluation: epoch, step, train loss and validation loss (from the trainer's log history)."""
    history = getattr(getattr(trainer_or_history, "state", None), "log_history", trainer_or_history)
    rows: dict[int, dict[str, float]] = {}
    for entry in history:
        if f"eval_{TRAIN}_loss" in entry or BEST_METRIC in entry:
            row = rows.setdefault(entry["step"], {"epoch": round(entry.get("epoch", math.nan), 3),
                                                  "step": entry["step"]})
            for key, name in ((f"eval_{TRAIN}_loss", "train_loss"), (BEST_METRIC, "val_loss")):
                if key in entry:
                    row[name] = entry[key]
    curves = [rows[s] for s in sorted(rows)]
    if not curves or any("val_loss" not in r or "train_loss" not in r for r in curves):
        raise OverfitError("loss_curves: no per-epoch train and validation losses in this log; train with "
                           "train_setting() (eval_strategy='epoch' and both sets evaluated)")
    return curves


def curve_summary(curves: Sequence[Mapping[str, float]], kept_step: int | None = None) -> dict[str, float]:
    """The numbers that describe a train/validation curve pair.

    `best_val_loss` and `best_epoch`: the validation minimum; `final_val_loss`: at the end (or at `kept_step`, the
    checkpoint early stopping kept); `rise`: how far the end lies above the minimum; `gap`: validation minus
    training loss at the end (how much better the model does on what it memorised)."""
    if not curves:
        raise OverfitError("curve_summary: empty curves")
    best = min(curves, key=lambda r: r["val_loss"])
    end = next((r for r in curves if r["step"] == kept_step), None) if kept_step is not None else curves[-1]
    if end is None:
        raise OverfitError(f"curve_summary: no evaluation at step {kept_step}")
    return {"best_val_loss": best["val_loss"], "best_epoch": best["epoch"], "final_val_loss": end["val_loss"],
            "final_train_loss": end["train_loss"], "rise": end["val_loss"] - best["val_loss"],
            "gap": end["val_loss"] - end["train_loss"], "end_epoch": end["epoch"]}


def kept_step(trainer) -> int:
    """The global step of the model the trainer ends with: the best checkpoint under early stopping, else the last."""
    best = getattr(trainer.state, "best_global_step", None)
    if trainer.args.load_best_model_at_end and best:
        return int(best)
    return int(trainer.state.global_step)


def early_stopping_trace(val_losses: Sequence[float], patience: int, threshold: float = 0.0) -> dict[str, Any]:
    """Replay a validation-loss sequence through the real `EarlyStoppingCallback` and the Trainer's best-model rule.

    Returns `stopped_at` (index of the evaluation after which training stops, or None if it never stops),
    `kept` (index of the checkpoint `load_best_model_at_end` would load) and `evaluations` (how many ran).
    A learner can try patience values on a made-up curve before spending compute on a real one."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState


    if patience < 1:
        raise OverfitError(f"early_stopping_trace: patience must be >= 1, got {patience}")
    if len(val_losses) == 0:
        raise OverfitError("early_stopping_trace: no validation losses given")
    # nothing trains here: the course defaults (the bare config base) plus the switches the callback reads
    args = CourseConfig().training_arguments(eval_strategy="epoch", save_strategy="best", load_best_model_at_end=True,
                                             metric_for_best_model="eval_loss", greater_is_better=False)
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    state, control = TrainerState(), TrainerControl()
    kept, stopped_at = None, None
    for i, loss in enumerate(val_losses):
        callback.on_evaluate(args, state, control, metrics={"eval_loss": float(loss)})
        if state.best_metric is None or loss < state.best_metric:   # Trainer._determine_best_metric: strict
            state.best_metric, kept = float(loss), i
        if control.should_training_stop:
            stopped_at = i
            break
    return {"stopped_at": stopped_at, "kept": kept, "evaluations": (stopped_at + 1) if stopped_at is not None
            else len(val_losses)}


def plot_curves(curves_by_setting: Mapping[str, Sequence[Mapping[str, float]]],
                kept: Mapping[str, int] | None = None, ylabel: str = "loss"):
    """Train (dashed) and validation (solid) loss per epoch, one colour per setting, all in one figure; a star
    marks the checkpoint early stopping kept."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (name, curves) in enumerate(curves_by_setting.items()):
        epochs = [r["epoch"] for r in curves]
        ax.plot(epochs, [r["val_loss"] for r in curves], color=f"C{i}", lw=2, label=f"{name}: validation")
        ax.plot(epochs, [r["train_loss"] for r in curves], color=f"C{i}", lw=1, ls="--", label=f"{name}: train")
        if kept and name in kept:
            row = next(r for r in curves if r["step"] == kept[name])
            ax.plot(row["epoch"], row["val_loss"], marker="*", ms=14, color=f"C{i}", mec="black")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def run_setting(setting: Setting, family: str, task: BioTask, tokenizer, config: OverfitConfig = OverfitConfig()):
    """Train one setting on the biography task and measure it. Returns (row, curves, trainer): the row holds the
    curve summary (at the checkpoint the run ends with) and the task metric on the test people."""

    trainer = train_setting(setting, family, task.dataset(tokenizer, task.train), task.dataset(tokenizer, task.val),
                            causal_collator(tokenizer), config)
    curves = loss_curves(trainer)
    kept = kept_step(trainer)
    summary = curve_summary(curves, kept)
    row = {"setting": setting.name, **summary, "kept step": kept,
           "biography accuracy": biography_accuracy(trainer.model, tokenizer, task.test)}
    return row, curves, trainer


def kept_by_early_stopping(values: Sequence[float], patience: int, greater_is_better: bool = False) -> int:
    """Index of the evaluation `EarlyStoppingCallback` + `load_best_model_at_end` would keep, for a sequence of
    validation losses (or, with `greater_is_better`, of a validation metric such as accuracy)."""
    signed = [-float(v) for v in values] if greater_is_better else [float(v) for v in values]
    return early_stopping_trace(signed, patience)["kept"]


def stopping_rules(family: str, task: BioTask, tokenizer, config: OverfitConfig = OverfitConfig(),
                   patience: int = 2, also_epochs: Mapping[str, int] | None = None,
                   ) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    """Train once without mitigation to the end, then compare three choices of the model to keep: the last one,
    the one early stopping on validation loss keeps, and the one early stopping on the validation biography
    accuracy keeps (both with `patience`). Selection reads only the validation people; every kept model is judged
    on the test people. Early stopping would have stopped this same run (same seed, same data order) sooner, so
    its kept checkpoint is one of this run's epochs.

    `also_epochs` ({name: epoch}, counted from 1) judges further checkpoints of the same run, such as the model
    after one epoch, which has not yet learnt the biography format (a positive control: training it on improves
    the task by construction).

    Returns (rows, curves): one row per rule (curve summary at the kept step, kept epoch, test biography accuracy)
    and the per-epoch curves with `val_bio_acc` added."""
    probe = EpochProbe(tokenizer, task.val)
    trainer = train_setting(Setting("no mitigation"), family, task.dataset(tokenizer, task.train),
                            task.dataset(tokenizer, task.val), causal_collator(tokenizer), config,
                            extra_callbacks=[probe])
    acc_by_step = {r["step"]: r["val_bio_acc"] for r in probe.rows}
    curves = [dict(r, val_bio_acc=acc_by_step[r["step"]]) for r in loss_curves(trainer)]
    kept = {"no mitigation": len(curves) - 1,
            "early stopping": kept_by_early_stopping([r["val_loss"] for r in curves], patience),
            "early stopping on task metric": kept_by_early_stopping([r["val_bio_acc"] for r in curves], patience,
                                                                    greater_is_better=True)}
    for name, epoch in (also_epochs or {}).items():
        if not 1 <= epoch <= len(curves):
            raise OverfitError(f"stopping_rules: epoch {epoch} for {name!r} is outside 1..{len(curves)}")
        kept[name] = epoch - 1
    model, final = trainer.model, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    rows = []
    for name, i in kept.items():
        step = curves[i]["step"]
        model.load_state_dict(probe.weights[step])
        rows.append({"setting": name, **curve_summary(curves, step), "kept step": step,
                     "val biography accuracy": curves[i]["val_bio_acc"],
                     "biography accuracy": biography_accuracy(model, tokenizer, task.test)})
    model.load_state_dict(final)
    return rows, curves


def rerun_curves(family: str, task: BioTask, tokenizer, config: OverfitConfig = OverfitConfig(),
                 seed_offset: int = 1000) -> list[dict[str, float]]:
    """The no-mitigation run again, on the same people and biographies, with only the data order (and any other
    randomness of training) drawn from another seed: how far two such runs end apart is the rerun noise, the
    floor any difference between curves must clear."""
    from dataclasses import replace

    rerun = replace(config, seed=config.seed + seed_offset)
    trainer = train_setting(Setting("no mitigation, rerun"), family, task.dataset(tokenizer, task.train),
                            task.dataset(tokenizer, task.val), causal_collator(tokenizer), rerun)
    return loss_curves(trainer)


STUDY_PARTS = ("stopping rules and rerun", "regularisers")  # one seed's runs in two halves of about equal cost


def study_seed(family: str, world, tokenizer, seed: int, regularisers: Sequence[Setting], profile: str = "cpu",
               part: str | None = None, sizes: tuple[int, int, int] = (32, 32, 48), epochs: int = 12,
               batch_size: int = 8, patience: int = 2) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Everything lesson 05 trains in one seed (or one of its `STUDY_PARTS`): the no-mitigation run read by the
    stopping rules and the model after one epoch, its rerun with another data order, and each of `regularisers`.

    Returns (rows tagged with the seed, {setting: per-epoch curves}). The seed draws the people (`bio_task` with
    `sizes` = train, validation, test) and every run's initialisation and data order, so a part computes the same
    numbers wherever it runs (`parallel.run_in_processes` spreads seeds and parts over the free cores).
    """
    if part is not None and part not in STUDY_PARTS:
        raise OverfitError(f"study_seed: unknown part {part!r}; choose from {STUDY_PARTS}")
    task = bio_task(world, *sizes, seed=seed)
    config = OverfitConfig.for_profile(profile, epochs=epochs, batch_size=batch_size, seed=seed)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list] = {}
    if part in (None, STUDY_PARTS[0]):
        kept_rows, curves["no mitigation"] = stopping_rules(family, task, tokenizer, config, patience=patience,
                                                            also_epochs={"after one epoch": 1})
        curves["no mitigation, rerun"] = rerun_curves(family, task, tokenizer, config)
        rows += [dict(r, seed=seed) for r in kept_rows]
    if part in (None, STUDY_PARTS[1]):
        for setting in regularisers:
            row, curves[setting.name], _ = run_setting(setting, family, task, tokenizer, config)
            rows.append(dict(row, seed=seed))
    return rows, curves


def run_studies(family: str, world, tokenizer, seeds: Sequence[int], regularisers: Sequence[Setting],
                profile: str = "cpu", workers: int | None = None) -> tuple[list[dict[str, Any]], dict[int, dict]]:
    """`study_seed` for every seed, in its two `STUDY_PARTS`, side by side on the free cores
    (`parallel.run_in_processes`); returns (every row, {seed: {setting: curves}})."""
    tasks = [(family, world, tokenizer, seed, tuple(regularisers), profile, part)
             for seed in seeds for part in STUDY_PARTS]
    rows: list[dict[str, Any]] = []
    curves: dict[int, dict] = {seed: {} for seed in seeds}
    for task, (part_rows, part_curves) in zip(tasks, run_in_processes(study_seed, tasks, workers,
                                                                      desc="seeds, two halves each")):
        rows += part_rows
        curves[task[3]].update(part_curves)
    return rows, curves


def rerun_noise(curves: Sequence[Mapping[str, float]], rerun: Sequence[Mapping[str, float]]) -> float:
    """How far the final validation losses of a run and its rerun lie apart, relative to the run's minimum (the
    same scale as `rise_beyond_noise`)."""
    if not curves or not rerun:
        raise OverfitError("rerun_noise: empty curves")
    best = min(r["val_loss"] for r in curves)
    return abs(curves[-1]["val_loss"] - rerun[-1]["val_loss"]) / best


def rise_beyond_noise(curves: Sequence[Mapping[str, float]], rerun: Sequence[Mapping[str, float]],
                      kept_step: int | None = None) -> float:
    """(kept - minimum validation loss) / minimum, less the rerun noise: how far the validation loss turned up,
    beyond what retraining with another data order moves it. The minimum is over the evaluations the run saw up
    to the kept model, so a model kept at its minimum (early stopping) scores minus the noise, never above 0.

    A relative rise alone cannot fail (final - minimum is never negative); compared with the rerun noise it can."""
    if not curves:
        raise OverfitError("rise_beyond_noise: empty curves")
    end = len(curves) - 1 if kept_step is None else next(
        (i for i, r in enumerate(curves) if r["step"] == kept_step), None)
    if end is None:
        raise OverfitError(f"rise_beyond_noise: no evaluation at step {kept_step}")
    seen = curves[:end + 1]
    best = min(r["val_loss"] for r in seen)
    return (seen[-1]["val_loss"] - best) / best - rerun_noise(curves, rerun)


def gap_at_training_loss(curves: Sequence[Mapping[str, float]], train_loss: float) -> float:
    """The train/validation gap of a run at the point where its training loss first comes down to `train_loss`
    (linear between evaluations; exactly an evaluation's gap when one has that training loss; the first or last
    evaluation's gap when the run starts below or never reaches it). It is the run stopped early enough to fit its
    training people only as well as another model does: the under-training control."""
    if not curves:
        raise OverfitError("gap_at_training_loss: empty curves")
    for r in curves:
        if r["train_loss"] == train_loss:
            return r["val_loss"] - r["train_loss"]
    if curves[0]["train_loss"] <= train_loss:
        return curves[0]["val_loss"] - curves[0]["train_loss"]
    for before, after in zip(curves, curves[1:]):
        if after["train_loss"] <= train_loss:
            share = (before["train_loss"] - train_loss) / (before["train_loss"] - after["train_loss"])
            val = before["val_loss"] + share * (after["val_loss"] - before["val_loss"])
            return val - train_loss
    return curves[-1]["val_loss"] - curves[-1]["train_loss"]


def narrowing_beyond_undertraining(gap: float, train_loss: float, plain: Sequence[Mapping[str, float]]) -> float:
    """1 - gap / (the no-mitigation run's gap where its training loss comes down to `train_loss`): the share of
    the gap a model removes beyond what stopping the unregularised run at the same fit removes. A regulariser that
    only learns less scores 0: so does any checkpoint of the no-mitigation run itself (exactly, by construction)."""
    matched = gap_at_training_loss(plain, train_loss)
    if matched <= 0:
        raise OverfitError(f"narrowing_beyond_undertraining: the matched gap is {matched:.4g}, not positive")
    return 1 - gap / matched


def sign_sentence(effect: str, values: Mapping[Any, float] | Sequence[float]) -> str:
    """One sentence on the sign of an effect over the seeds, read from its 95 % interval: whether it lies wholly
    above 0, wholly below, or straddles 0 (only then does the sign vary from seed to seed as far as these seeds
    can tell)."""
    numbers = list(values.values()) if isinstance(values, Mapping) else list(values)
    mean, low, high = t_interval(numbers)
    positive = sum(v > 0 for v in numbers)
    if interval_verdict(">", 0.0, low, high) == "held":
        reading = "the whole interval lies above 0: positive on these seeds, not a matter of the seed"
    elif interval_verdict("<", 0.0, low, high) == "held":
        reading = "the whole interval lies below 0: negative on these seeds, not a matter of the seed"
    else:
        reading = "the interval straddles 0: its sign is not settled by these seeds"
    return (f"{effect}: {interval_text(mean, low, high)} over {len(numbers)} seeds, positive in {positive} of "
            f"{len(numbers)}; {reading}.")


def compared(what: str, before: float, after: float, lower: str = "lower", higher: str = "higher") -> str:
    """'<what> 0.205 -> 0.341 (higher)': a measured change in words chosen by its sign, for printed sentences."""
    word = lower if after < before else higher if after > before else "unchanged"
    return f"{what} {before:.3f} -> {after:.3f} ({word})"
