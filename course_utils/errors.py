"""The course's own error type: one line that says what went wrong and where, never a deep library traceback.

Used in lessons: none (used by other modules and tools)
"""


class CourseError(Exception):
    """Base of every error `course_utils` raises on purpose for bad input or a missing resource."""


# Checks that helpers call at their top, so bad input fails here, in one line that names the function and the
# argument, rather than deep inside torch or transformers. They never change a valid value.


def check_rate(value, where: str, name: str = "rate", low: float = 0.0, high: float = 1.0,
               high_open: bool = False, error: type[CourseError] = CourseError) -> float:
    """`value` as a float in [low, high] (or [low, high) with `high_open`), else `error` naming `where` and `name`."""
    import math
    import numbers

    interval = f"[{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{where}: {name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if math.isnan(value) or value < low or value > high or (high_open and value == high):
        raise error(f"{where}: {name} must be in {interval}, got {value!r}")
    return value


def check_count(value, where: str, name: str, minimum: int = 0, error: type[CourseError] = CourseError) -> int:
    """`value` as an int >= `minimum`, else `error` naming `where` and `name`."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value, where: str, name: str, error: type[CourseError] = CourseError) -> float:
    """`value` as a finite float > 0, else `error` naming `where` and `name`."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise error(f"{where}: {name} must be a positive number, got {value!r}")
    return float(value)


def check_rows(rows, where: str, keys=(), text_keys=(), int_keys=(), error: type[CourseError] = CourseError) -> None:
    """`rows` is a non-empty list of dicts (or a `datasets.Dataset`) with `keys`, whose `text_keys` hold strings
    and whose `int_keys` hold integer class labels; else one line naming the helper, the row and the column."""
    import numbers

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
