"""Training settings: one validated base for every lesson's config, and one way to become `TrainingArguments`.

Every run in the course is described by a small dataclass that derives from `CourseConfig`: the number of optimizer
`steps` (or `epochs`), `learning_rate`, `batch_size`, `warmup_steps`, `seed`, `max_length` and whatever the
lesson adds. The fields share one spelling across lessons and one numeric gate: a value that makes no sense (NaN, an
infinite or negative learning rate, zero steps, a string, a boolean where a count belongs) is refused when the
config is made, in one line that names the config and the field, instead of training something other than what
was asked. Integers that numpy produces (`np.int64(8)`) are accepted like Python ints.

`config.training_arguments(...)` turns the shared fields into `transformers.TrainingArguments` through
`training_args`, the course's defaults (no reporting, no checkpoints unless asked, CPU when there is no GPU).

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import tempfile
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from course_utils.errors import CourseError, Limit, check_number
from course_utils.profiles import use_cpu


class ConfigError(CourseError, ValueError):
    """A config field with a value that makes no sense for training (its own line names the field)."""


class TrainingSettingsError(CourseError, ValueError):
    """Training arguments that `TrainingArguments` would refuse (or silently misuse)."""


LIBRARY_CALLS = {
    "transformers:TrainingArguments": ["output_dir", "report_to", "save_strategy", "logging_strategy",
                                       "logging_steps", "per_device_train_batch_size", "learning_rate",
                                       "lr_scheduler_type", "warmup_steps", "seed", "data_seed", "use_cpu",
                                       "dataloader_num_workers", "disable_tqdm", "remove_unused_columns",
                                       "max_steps", "num_train_epochs", "weight_decay"],
}


# The course's vocabulary of training fields, with the range each may take. A config may narrow or add ranges in
# its own `LIMITS`; a field named here means the same thing in every lesson.
COMMON_LIMITS: dict[str, Limit] = {
    "steps": Limit(1, 10**6), "min_steps": Limit(0, 10**6), "decay_steps": Limit(0, 10**6),
    "warmup_steps": Limit(0, 10**6), "eval_every": Limit(1, 10**6),
    "epochs": Limit(0, 10**4, low_open=True),
    "batch_size": Limit(1, 2**16), "max_length": Limit(1, 2**20), "max_completion_length": Limit(1, 2**16),
    "learning_rate": Limit(0, 1, low_open=True), "lora_learning_rate": Limit(0, 1, low_open=True),
    "weight_decay": Limit(0, 10), "seed": Limit(0, 2**32 - 1),
    "lora_r": Limit(1, 4096), "num_labels": Limit(1, 10**6), "num_generations": Limit(2, 1024),
    "n_train": Limit(1, 10**7), "n_test": Limit(1, 10**7), "n_generate": Limit(1, 10**6),
    "beta": Limit(0, 10**3), "temperature": Limit(0, 100, low_open=True),
    "word_rate": Limit(0, 1), "format_target": Limit(0, 1), "target_recall": Limit(0, 1),
}


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def check_field(owner: str, name: str, value: Any, hint: Any, limit: Limit | None,
                error: type[CourseError] = ConfigError) -> Any:
    """`value` for field `name` of config `owner`, converted to the declared type and checked against `limit`.

    The one numeric gate: ints (numpy's too) for int fields, finite reals for float fields, real booleans for
    bool fields; anything else, or a number outside its range, is a one-line `error` naming the field.
    """
    if value is None and _allows_none(hint):
        return None
    kind = _base_type(hint)
    where = f"{owner}: {name}"
    if kind is bool:
        if not isinstance(value, bool):
            raise error(f"{where} must be True or False, got {value!r}")
        return value
    if kind in (int, float):
        return check_number(value, owner, name, kind, limit, error)
    if kind is str:
        if not isinstance(value, str):
            raise error(f"{where} must be a string, got {value!r}")
        return value
    return value


@dataclass
class CourseConfig:
    """Base of every training config in the course: validates each field when the config is made.

    Subclasses declare their fields as a dataclass; `LIMITS` narrows or adds ranges, `error` is the exception type
    the lesson raises, and `check()` holds rules that relate two fields (e.g. batch divisible by group size).
    """

    LIMITS: ClassVar[dict[str, Limit]] = {}
    error: ClassVar[type[CourseError]] = ConfigError

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        limits = {**COMMON_LIMITS, **self.LIMITS}
        for f in dataclasses.fields(self):
            value = check_field(type(self).__name__, f.name, getattr(self, f.name), hints[f.name],
                                limits.get(f.name), self.error)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that relate several fields; the base has none."""

    def training_arguments(self, **overrides):
        """`TrainingArguments` from the shared fields (steps or epochs, learning rate, batch, warm-up, seed),
        with the course defaults of `training_args`; `overrides` are any other `TrainingArguments` keywords."""
        names = {f.name for f in dataclasses.fields(self)}
        mapped = {"steps": "max_steps", "epochs": "num_train_epochs", "learning_rate": "learning_rate",
                  "batch_size": "per_device_train_batch_size", "warmup_steps": "warmup_steps",
                  "weight_decay": "weight_decay", "seed": "seed"}
        kwargs: dict[str, Any] = {}
        for field_name, argument in mapped.items():
            if field_name in names and getattr(self, field_name) is not None:
                kwargs[argument] = getattr(self, field_name)
        if "seed" in kwargs:
            kwargs["data_seed"] = kwargs["seed"]
        if kwargs.get("num_train_epochs") is not None and "max_steps" in kwargs:
            kwargs.pop("max_steps")  # a config with epochs set trains by epochs
        kwargs.update(overrides)
        return training_args(**kwargs)

    def trl_arguments(self, config_cls, **overrides):
        """A trl config (`SFTConfig`, `DPOConfig`, `RewardConfig`, `GRPOConfig`: `TrainingArguments` subclasses)
        from the same fields and course defaults as `training_arguments`, plus what trl needs told: bf16 only on a
        GPU that supports it (trl's configs default to bf16=True even on a CPU, where it is slower than float32),
        no activation checkpointing, progress bars only with a `progress` field set, and trl's own choice of which
        dataset columns to keep. `overrides` are any other keywords of `config_cls` (`beta`, `max_length`...)."""
        trl_defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
        kwargs: dict[str, Any] = dict(bf16=_bf16_supported(), activation_checkpointing=False,
                                      disable_tqdm=not getattr(self, "progress", False),
                                      remove_unused_columns=trl_defaults["remove_unused_columns"])
        return self.training_arguments(args_class=config_cls, **{**kwargs, **overrides})


# Every number a trainer reads, with its kind and range: the one gate in `training_args`, so nothing reaches
# `TrainingArguments` that it would misread (`max_steps=0` trains one step and `-5` three epochs; a NaN weight
# decay or a seed of -1 is taken as given). `max_steps` is left out, not set to -1, to train by epochs.
TRAINER_NUMBERS: dict[str, tuple[type, Limit, str | None]] = {
    "max_steps": (int, Limit(1, 10**9), "an integer >= 1 (leave it out to train by epochs)"),
    "num_train_epochs": (float, Limit(0, 10**4, low_open=True), "a positive number"),
    "learning_rate": (float, Limit(0, math.inf, low_open=True), "a positive number"),
    "weight_decay": (float, Limit(0, 10), None),
    "seed": (int, Limit(0, 2**32 - 1), None), "data_seed": (int, Limit(0, 2**32 - 1), None),
    "warmup_steps": (float, Limit(0, 10**9), None), "warmup_ratio": (float, Limit(0, 1), None),
    "per_device_train_batch_size": (int, Limit(1, math.inf), "a positive integer"),
    "per_device_eval_batch_size": (int, Limit(1, math.inf), "a positive integer"),
    "gradient_accumulation_steps": (int, Limit(1, math.inf), "a positive integer"),
    "logging_steps": (float, Limit(0, 10**9, low_open=True), None),
    "save_steps": (float, Limit(0, 10**9, low_open=True), None),
    "eval_steps": (float, Limit(0, 10**9, low_open=True), None),
    "save_total_limit": (int, Limit(1, math.inf), "a positive integer"),
    "max_grad_norm": (float, Limit(0, math.inf), None),
    "adam_beta1": (float, Limit(0, 1, high_open=True), None), "adam_beta2": (float, Limit(0, 1, high_open=True), None),
    "adam_epsilon": (float, Limit(0, 1, low_open=True), None),
}


def trainer_number(key: str, value: Any, kind: type, limit: Limit, says: str | None) -> Any:
    """`value` for `TrainingArguments` keyword `key` through the numeric gate: a valid Python number is passed on
    unchanged, a numpy one as the Python number it equals; anything else is a one-line `TrainingSettingsError`."""
    checked = check_number(value, "training_args", key, kind, limit, TrainingSettingsError, says)
    if type(value) in (int, float):
        return value
    return int(value) if isinstance(value, numbers.Integral) else checked


def _bf16_supported() -> bool:
    """bf16 mixed precision where it pays: a GPU in use that supports it."""
    import torch

    return bool(not use_cpu() and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def training_args(output_dir: str | None = None, args_class=None, **overrides):
    """`TrainingArguments` with course defaults: no reporting, no checkpoints unless asked, CPU when no GPU.

    Pass any `TrainingArguments` keyword to override. The defaults keep a notebook's run short and quiet.
    `args_class` builds a subclass instead (a trl config, through `CourseConfig.trl_arguments`).
    """
    import transformers
    from transformers import TrainingArguments

    arguments = args_class or TrainingArguments

    defaults: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="course-run-"),
        report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=50,
        per_device_train_batch_size=16, learning_rate=5e-4, lr_scheduler_type="constant_with_warmup",
        warmup_steps=10, seed=0, data_seed=0, use_cpu=use_cpu(),
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    defaults.update(overrides)
    known = inspect.signature(arguments).parameters
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise TrainingSettingsError(f"training_args: unknown TrainingArguments keyword(s) {unknown} "
                                    f"(renamed in transformers {transformers.__version__}?)")
    for key, (kind, limit, says) in TRAINER_NUMBERS.items():
        if key in defaults and (defaults[key] is not None or known[key].default is not None):
            defaults[key] = trainer_number(key, defaults[key], kind, limit, says)
    try:
        return arguments(**defaults)
    except (ValueError, TypeError) as err:  # transformers' own checks: keep the message, drop the traceback
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrainingSettingsError(f"training_args: {first}") from None
