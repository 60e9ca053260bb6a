"""Each lesson's measured table, saved in one documented format so the capstone and `course report` can read it.

Format (`runs/results/<lesson>.json`, one file per lesson, holding the latest run; nothing is overwritten silently:
the previous version is first moved to `runs/results/history/<lesson>-<UTC timestamp>.json`):

    {"lesson": "04_noise_study", "profile": "cpu",
     "table": [{...one row per measured configuration...}],
     "checks": {"label noise costs more than typos": true, ...},   # the lesson's asserted findings
     "echoes": "Li & Sen 2026 ...",                                  # the published figure it echoes
     "notes": "free text: what did not reproduce at toy scale"}

The table holds numbers the notebook computed; nothing in it is typed in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from course_utils.errors import CourseError
from course_utils.paths import RUNS_DIR


def results_dir() -> Path:
    return RUNS_DIR / "results"


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
                 notes: str = "", profile: str | None = None, directory: Path | None = None) -> Path:
    """Write a lesson's measured table (a DataFrame or a list of dicts) and its checked findings.

    The latest record is `<directory>/<lesson>.json` (what the capstone and `course report` read). If that file
    already exists, it is archived first as `<directory>/history/<lesson>-<UTC timestamp>.json`, so re-running a
    lesson never silently destroys an earlier measurement.
    """
    from course_utils.profiles import choose_profile

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
              "checks": {k: bool(v) for k, v in (checks or {}).items()}, "echoes": echoes, "notes": notes}
    out = Path(directory or results_dir()) / f"{lesson}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        archive(out)
    out.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return out


def archive(path: Path) -> Path:
    """Move a saved record to `history/<stem>-<UTC timestamp>.json` beside it; returns the archived path."""
    from datetime import datetime, timezone

    history = path.parent / "history"
    history.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = history / f"{path.stem}-{stamp}.json"
    n = 1
    while target.exists():  # two saves within the same microsecond: keep both
        target, n = history / f"{path.stem}-{stamp}-{n}.json", n + 1
    path.replace(target)
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
    return json.loads(path.read_text())


def saved_lessons(directory: Path | None = None) -> Sequence[str]:
    return sorted(p.stem for p in Path(directory or results_dir()).glob("*.json"))
