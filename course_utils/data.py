"""JSONL files <-> `datasets.Dataset`, with errors that name the file and line.

Real fine-tuning data goes bad in boring ways: a truncated line, a missing field, a wrong type. A learner should
see *where* ("qa.jsonl line 17: missing field 'answer'"), not a traceback from inside a library.

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from course_utils.errors import CourseError, check_text
from course_utils.paths import DATA_DIR


class DataError(CourseError, ValueError):
    """A data file or data rows that cannot be used as they are."""


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSON lines with sorted keys, so the same rows always give the same bytes; NaN and infinity
    are refused here, as `read_jsonl` refuses them (strict JSON has no spelling for them)."""
    path = Path(path)
    rows = list(rows)
    lines = []
    for i, row in enumerate(rows):  # check every row before touching the file, so a bad row leaves no half file
        if not isinstance(row, dict):
            raise DataError(f"write_jsonl {path.name}: row {i} is {type(row).__name__}, not a dict")
        try:
            line = json.dumps(row, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError, RecursionError) as err:
            raise DataError(f"write_jsonl {path.name}: row {i} cannot be written as JSON "
                            f"({type(err).__name__}: {str(err)[:80]})") from None
        lines.append(check_text(line, f"write_jsonl {path.name}", f"row {i}", DataError))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    return path


class _Refused(ValueError):
    """A line that is valid JSON to Python's parser but not to the course: duplicate keys, NaN or Infinity."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict, refusing a key given twice (plain `json.loads` silently keeps the last one)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _Refused(f"duplicate key {dup!r} in one object (which value is meant?)")
    return row


def _no_constant(name: str) -> float:
    """Refuse `NaN`, `Infinity` and `-Infinity`: Python's extension to JSON, which other tools reject or misread."""
    raise _Refused(f"{name} is not valid JSON (write a number, or null for a missing value)")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing one too large for a float (`1e999` would silently become infinity)."""
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:20]} is too large for a float (it would become infinity)")
    return value


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # where `surrogateescape` put a byte that is not UTF-8


def _decoding_problem(line: str) -> str | None:
    """Why a line read with `errors="surrogateescape"` is not UTF-8 text (None when it is)."""
    if line.startswith(("\udcff\udcfe", "\udcfe\udcff")):
        return "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
    if "\x00" in line:  # never in JSON text; every other byte of UTF-16 text is NUL
        return "it contains NUL bytes (a UTF-16 file?); save it as UTF-8"
    bad = _UNDECODABLE.search(line)
    if bad is None:
        return None
    byte = ord(bad.group()) - 0xDC00
    return f"byte 0x{byte:02x} at column {bad.start() + 1} is not UTF-8 (a Latin-1 or Windows file?); save it as UTF-8"


def _parse_line(line: str) -> Any:
    """One JSON line, strictly: no key twice, no NaN/Infinity (nor a number that overflows to it); else `_Refused`
    saying what is wrong."""
    try:
        return json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except _Refused:
        raise
    except json.JSONDecodeError as err:
        raise _Refused(f"malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise _Refused("the JSON is nested too deeply to read") from None
    except ValueError as err:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise _Refused(f"a number that cannot be read ({str(err).split(';')[0]})") from None


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a UTF-8 JSONL file; a line that is not UTF-8, malformed, ambiguous (a key twice, NaN) or incomplete
    raises `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found (regenerate the world with `course build --data-only`)")
    rows = []
    with path.open(encoding="utf-8", errors="surrogateescape") as f:  # a bad byte is reported below, by line
        for lineno, line in enumerate(f, start=1):
            problem = _decoding_problem(line)
            if problem:
                raise DataError(f"{path.name} line {lineno}: {problem}")
            if not line.strip():
                continue
            try:
                row = _parse_line(line)
            except _Refused as err:
                raise DataError(f"{path.name} line {lineno}: {err}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path.name} line {lineno}: missing field(s) {', '.join(map(repr, missing))}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows in data file")
    return rows


def load_dataset_file(path: str | Path, required: Sequence[str] = ()):
    """A JSONL file as a `datasets.Dataset`, validated line by line first."""
    from datasets import Dataset

    return Dataset.from_list(read_jsonl(path, required))


def data_path(name: str) -> Path:
    """Path of a shipped data file in `data_samples/`."""

    return DATA_DIR / name


def load_sample(name: str, required: Sequence[str] = (), split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a shipped data file, optionally only those whose 'split' field equals `split`."""
    rows = read_jsonl(data_path(name), required)
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise DataError(f"{name}: no rows with split={split!r}")
    return rows
