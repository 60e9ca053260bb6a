"""Each lesson's measured table, saved in one documented format so the capstone and `course report` can read it.

Format (`runs/results/<lesson>.json`, one file per lesson, holding the latest run; nothing is overwritten silently:
the previous version is first moved to `runs/results/history/<lesson>-<UTC timestamp>.json`):

    {"lesson": "04_noise_study", "profile": "cpu",
     "table": [{...one row per measured configuration...}],
     "checks": {"label noise costs more than typos": true, ...},   # the lesson's asserted findings
     "claims": [{"claim": ..., "values": {seed: value}, "mean": ..., "verdict": "held", ...}],  # claims.records
     "echoes": "Li & Sen 2026 ...",                                  # the published figure it echoes
     "notes": "free text: what did not reproduce at toy scale"}

Saving is atomic and never loses a record: the new record is validated and serialised first (finite numbers,
string keys, real booleans), written to a temporary file beside the target and moved into place in one step; the
previous record is copied to history first; concurrent writers (two kernels) take turns through a lock file.

The table holds numbers the notebook computed; nothing in it is typed in.

Used in lessons: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

from course_utils.errors import CourseError
from course_utils.paths import RUNS_DIR
from course_utils.profiles import choose_profile


def results_dir() -> Path:
    return RUNS_DIR / "results"


class ResultsError(CourseError, ValueError):
    """A record that cannot be saved as JSON, or a saved record that is damaged (the message names the file)."""


def _clean(value: Any, where: str) -> Any:
    """`value` as plain JSON: numpy scalars unwrapped, NaN as null, string keys; anything else a one-line error."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ResultsError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if hasattr(key, "item"):
                key = key.item()
            if isinstance(key, bool) or not isinstance(key, (str, int, float)):
                raise ResultsError(f"{where}: key {key!r} is a {type(key).__name__}, not a string")
            out[str(key)] = _clean(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ResultsError(f"{where}: {type(value).__name__} {value!r:.60} cannot be saved as JSON")


@contextmanager
def _locked(directory: Path):
    """One writer at a time in `directory` (an advisory lock file; a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the whole new one, never half of either."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rows(table: Any) -> list[dict[str, Any]]:
    if hasattr(table, "reset_index") and hasattr(table, "to_dict"):  # a pandas DataFrame
        index_name = table.index.name
        table = table.reset_index() if index_name is not None else table
        table = table.to_dict(orient="records")
    rows = [dict(r) for r in table]
    for row in rows:
        for key, value in row.items():
            if hasattr(value, "item"):  # numpy scalars
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            row[key] = value
    return rows


def save_results(lesson: str, table: Any, checks: Mapping[str, bool] | None = None, echoes: str = "",
                 notes: str = "", profile: str | None = None, directory: Path | None = None,
                 claims: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write a lesson's measured table (a DataFrame or a list of dicts) and its checked findings.

    The latest record is `<directory>/<lesson>.json` (what the capstone and `course report` read). If that file
    already exists, it is archived first as `<directory>/history/<lesson>-<UTC timestamp>.json`, so re-running a
    lesson never silently destroys an earlier measurement.
    """

    if not isinstance(lesson, str) or not lesson.strip() or any(c in lesson for c in "/\\"):
        raise CourseError(f"save_results: lesson must be a notebook stem like '04_noise_study', got {lesson!r}")
    if isinstance(table, (str, bytes, Mapping)) or not hasattr(table, "__iter__"):
        raise CourseError(f"save_results({lesson!r}): table must be a DataFrame or a list of dicts, "
                          f"got {type(table).__name__}")
    if checks is not None and not isinstance(checks, Mapping):
        raise CourseError(f"save_results({lesson!r}): checks must be a dict {{finding: bool}}, "
                          f"got {type(checks).__name__}")
    bad = [i for i, r in enumerate(table if isinstance(table, Sequence) else []) if not isinstance(r, Mapping)]
    if bad:
        raise CourseError(f"save_results({lesson!r}): table row {bad[0]} is {type(table[bad[0]]).__name__}, "
                          f"not a dict")
    rows = _rows(table)
    if not rows:
        raise CourseError(f"save_results({lesson!r}): the measured table is empty")
    record = {"lesson": lesson, "profile": profile or choose_profile(), "table": rows,
              "checks": {str(k): bool(v) for k, v in (checks or {}).items()}, "echoes": echoes, "notes": notes}
    if claims is not None:
        record["claims"] = list(claims)
    text = json.dumps(_clean(record, f"save_results({lesson!r})"), indent=2, allow_nan=False)  # keys in the lesson's order + "\n"
    out = Path(directory or results_dir()) / f"{lesson}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent):
        if out.exists():
            archive(out)
        write_atomic(out, text)
    return out


def archive(path: Path) -> Path:
    """Copy a saved record to `history/<stem>-<UTC timestamp>.json` beside it; returns the archived path.

    A copy, not a move: until the new record replaces it, the old one stays where readers look."""
    from datetime import datetime, timezone

    history = path.parent / "history"
    history.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = history / f"{path.stem}-{stamp}.json"
    n = 1
    while target.exists():  # two saves within the same microsecond: keep both
        target, n = history / f"{path.stem}-{stamp}-{n}.json", n + 1
    shutil.copy2(path, target)
    return target


def history(lesson: str, directory: Path | None = None) -> list[Path]:
    """Archived earlier records of `lesson`, oldest first."""
    return sorted((Path(directory or results_dir()) / "history").glob(f"{lesson}-*.json"))


def load_results(lesson: str, directory: Path | None = None) -> dict[str, Any]:
    """A saved lesson record; a clear error naming the lesson to run if it is missing."""
    path = Path(directory or results_dir()) / f"{lesson}.json"
    if not path.is_file():
        raise CourseError(f"no saved results for lesson {lesson!r} ({path.name}); run that lesson first "
                          f"(`course run {lesson.split('_')[0]}`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: the saved results of lesson {lesson!r} are damaged ({err.__class__.__name__}); "
                           f"rerun that lesson (`course run {lesson.split('_')[0]}`)") from None
    if not isinstance(record, dict) or "table" not in record:
        raise ResultsError(f"{path}: not a lesson record (no 'table'); rerun lesson {lesson!r}")
    return record


def saved_lessons(directory: Path | None = None) -> Sequence[str]:
    return sorted(p.stem for p in Path(directory or results_dir()).glob("*.json"))
