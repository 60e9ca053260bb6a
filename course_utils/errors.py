"""The course's own error type: one line that says what went wrong and where, never a deep library traceback.

It also holds the course's one vocabulary of input checks: numbers (`check_number` and the names built on it:
`check_rate`, `check_count`, `check_positive`, `check_seed`), texts (`check_text`, `check_texts`), rows and models.
Every other module calls these rather than writing its own.

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


class CourseError(Exception):
    """Base of every error `course_utils` raises on purpose for bad input or a missing resource."""


# Checks that helpers call at their top, so bad input fails here, in one line that names the function and the
# argument, rather than deep inside torch or transformers. They never change a valid value.


@dataclass(frozen=True)
class Limit:
    """The allowed range of a number: `low <= x <= high` (`low < x` with `low_open`, `x < high` with `high_open`)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        def show(v: float) -> str:
            return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

        return f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}{')' if self.high_open else ']'}"

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def check_number(value, where: str, name: str, kind: type = float, limit: Limit | None = None,
                 error: type[CourseError] = CourseError, says: str | None = None) -> int | float:
    """The course's one numeric gate: `value` as a Python `int` (`kind=int`: integers, numpy's too) or a finite
    `float` (`kind=float`: any real number) inside `limit`; else one line `<where>: <name> must be <says>, got
    <value>`. Booleans, strings, NaN and infinities are never numbers here. A valid value keeps its meaning."""
    span = f" in {limit.text()}" if limit is not None else ""
    wanted = says or (f"an integer{span}" if kind is int else f"a finite number{span}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or (kind is int and not isinstance(value, numbers.Integral)) \
            or (kind is not int and not math.isfinite(value)):
        raise error(f"{where}: {name} must be {wanted}, got {value!r:.80}")
    value = int(value) if kind is int else float(value)
    if limit is not None and not limit.admits(value):
        raise error(f"{where}: {name} must be {says or 'in ' + limit.text()}, got {value!r}")
    return value


def check_rate(value, where: str, name: str = "rate", low: float = 0.0, high: float = 1.0,
               high_open: bool = False, error: type[CourseError] = CourseError) -> float:
    """`value` as a float in [low, high] (or [low, high) with `high_open`), else `error` naming `where` and `name`."""
    limit = Limit(low, high, high_open=high_open)
    return check_number(value, where, name, float, limit, error, says=None)


def check_count(value, where: str, name: str, minimum: int = 0, error: type[CourseError] = CourseError) -> int:
    """`value` as an int >= `minimum`, else `error` naming `where` and `name`."""
    return check_number(value, where, name, int, Limit(minimum), error, says=f"an integer >= {minimum}")


def check_positive(value, where: str, name: str, error: type[CourseError] = CourseError) -> float:
    """`value` as a finite float > 0, else `error` naming `where` and `name`."""
    return check_number(value, where, name, float, Limit(0, low_open=True), error, says="a positive number")


def check_seed(seed, where: str = "seed", error: type[CourseError] = CourseError) -> int:
    """`seed` as a Python int in [0, 2**32) (numpy integers accepted), else a one-line error naming `where`."""
    return check_number(seed, where, "seed", int, Limit(0, 2**32, high_open=True), error,
                        says="an integer in [0, 2**32)")


def check_texts(texts, where: str, what: str = "text", error: type[CourseError] = CourseError) -> list[str]:
    """The one sequence-of-texts check: `texts` is a list (or tuple, or other sized sequence) of strings that are
    valid Unicode; a bare string (which would be read as its characters), bytes, a dict, a non-string item or a
    lone surrogate is one line naming `where` and the first bad item. An iterator (a generator) is read once.
    Returns the texts as a list."""
    if isinstance(texts, Iterator):
        texts = list(texts)
    if isinstance(texts, (str, bytes, bytearray, Mapping)) or not hasattr(texts, "__len__") \
            or not hasattr(texts, "__iter__"):
        raise error(f"{where}: expected a list of {what}s, got {type(texts).__name__}"
                    f"{' (a single string would be read as its characters)' if isinstance(texts, str) else ''}")
    texts = list(texts)
    for i, t in enumerate(texts):
        check_text(t, where, f"{what} {i}", error)
    return texts


def check_text(value, where: str, what: str = "text", error: type[CourseError] = CourseError) -> str:
    """`value` is a string that is valid Unicode (no lone surrogate, which no file or tokenizer can encode)."""
    if not isinstance(value, str):
        raise error(f"{where}: {what} is {type(value).__name__} ({value!r:.40}), not str")
    bad = _LONE_SURROGATE.search(value)
    if bad is not None:
        raise error(f"{where}: {what} holds a lone surrogate {bad.group()!a} at character {bad.start()} "
                    f"(not valid Unicode; was it decoded with errors='surrogateescape'?)")
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_rows(rows, where: str, keys=(), text_keys=(), int_keys=(), error: type[CourseError] = CourseError) -> None:
    """`rows` is a non-empty list of dicts (or a `datasets.Dataset`) with `keys`, whose `text_keys` hold strings
    and whose `int_keys` hold integer class labels; else one line naming the helper, the row and the column."""
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__len__"):
        raise error(f"{where}: rows must be a list of dicts, got {type(rows).__name__}")
    if len(rows) == 0:
        raise error(f"{where}: no rows given (the dataset is empty)")
    if hasattr(rows, "column_names"):  # a datasets.Dataset: columns are uniform
        missing = [k for k in dict.fromkeys((*keys, *text_keys, *int_keys)) if k not in rows.column_names]
        if missing:
            raise error(f"{where}: missing column(s) {missing}; it has {rows.column_names}")
        return
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise error(f"{where}: row {i} is {type(row).__name__}, not a dict")
        missing = [k for k in dict.fromkeys((*keys, *text_keys, *int_keys)) if k not in row]
        if missing:
            raise error(f"{where}: row {i} has no column(s) {missing}; it has {sorted(map(str, row))}")
        for k in text_keys:
            if not isinstance(row[k], str):
                raise error(f"{where}: row {i} column {k!r} is {type(row[k]).__name__}, not str")
        for k in int_keys:
            if isinstance(row[k], bool) or not isinstance(row[k], numbers.Integral):
                raise error(f"{where}: row {i} column {k!r} is {row[k]!r}, not an integer class")


def check_model(model, where: str, error: type[CourseError] = CourseError) -> None:
    """`model` is a torch model with a `transformers` config (what every course helper expects)."""
    if not hasattr(model, "parameters") or not hasattr(model, "config"):
        raise error(f"{where}: expected a transformers model, got {type(model).__name__}")


def check_vocab(model, tokenizer, where: str, error: type[CourseError] = CourseError) -> None:
    """The tokenizer's ids all fit the model's embedding table: a mismatched pair fails here, not in torch."""
    check_model(model, where, error)
    if not hasattr(tokenizer, "convert_tokens_to_ids") or not hasattr(tokenizer, "__len__"):
        raise error(f"{where}: expected a transformers tokenizer, got {type(tokenizer).__name__}")
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    n_model = embeddings.num_embeddings if embeddings is not None else getattr(model.config, "vocab_size", None)
    if n_model is not None and len(tokenizer) > n_model:
        raise error(f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has only "
                    f"{n_model}; load the tokenizer that belongs to this model")
