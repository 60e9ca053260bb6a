"""JSONL files <-> `datasets.Dataset`, with errors that name the file and line.

Real fine-tuning data goes bad in boring ways: a truncated line, a missing field, a wrong type. A learner should
see *where* ("qa.jsonl line 17: missing field 'answer'"), not a traceback from inside a library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from course_utils.errors import CourseError


class DataError(CourseError, ValueError):
    """A data file or data rows that cannot be used as they are."""


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSON lines with sorted keys, so the same rows always give the same bytes."""
    path = Path(path)
    rows = list(rows)
    lines = []
    for i, row in enumerate(rows):  # check every row before touching the file, so a bad row leaves no half file
        if not isinstance(row, dict):
            raise DataError(f"write_jsonl {path.name}: row {i} is {type(row).__name__}, not a dict")
        try:
            lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        except (TypeError, ValueError) as err:
            raise DataError(f"write_jsonl {path.name}: row {i} cannot be written as JSON ({err})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    return path


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed or incomplete line raises `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found (regenerate the world with `course build --data-only`)")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path.name} line {lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path.name} line {lineno}: missing field(s) {', '.join(map(repr, missing))}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows in data file")
    return rows


def require_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str], where: str = "rows") -> None:
    """Check in-memory rows (list of dicts or a `Dataset`) for the columns a helper needs."""
    if len(rows) == 0:
        raise DataError(f"{where}: empty dataset")
    names = rows.column_names if hasattr(rows, "column_names") else None
    if names is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(map(repr, missing))}; has {names}")
        return
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{where} row {i}: expected a dict, got {type(row).__name__}")
        missing = [c for c in columns if c not in row]
        if missing:
            raise DataError(f"{where} row {i}: missing field(s) {', '.join(map(repr, missing))}")


def load_dataset_file(path: str | Path, required: Sequence[str] = ()):
    """A JSONL file as a `datasets.Dataset`, validated line by line first."""
    from datasets import Dataset

    return Dataset.from_list(read_jsonl(path, required))


def data_path(name: str) -> Path:
    """Path of a shipped data file in `data_samples/`."""
    from course_utils.paths import DATA_DIR

    return DATA_DIR / name


def load_sample(name: str, required: Sequence[str] = (), split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a shipped data file, optionally only those whose 'split' field equals `split`."""
    rows = read_jsonl(data_path(name), required)
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise DataError(f"{name}: no rows with split={split!r}")
    return rows
