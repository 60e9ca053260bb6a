"""Each lesson's measured table, saved in one documented format so the capstone and `course report` can read it.

Format (`runs/results/<lesson>.json`, one file per lesson, rewritten each time the lesson runs):

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
    """Write a lesson's measured table (a DataFrame or a list of dicts) and its checked findings."""
    from course_utils.profiles import choose_profile

    rows = _rows(table)
    if not rows:
        raise CourseError(f"save_results({lesson!r}): the measured table is empty")
    record = {"lesson": lesson, "profile": profile or choose_profile(), "table": rows,
              "checks": {k: bool(v) for k, v in (checks or {}).items()}, "echoes": echoes, "notes": notes}
    out = Path(directory or results_dir()) / f"{lesson}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return out


def load_results(lesson: str, directory: Path | None = None) -> dict[str, Any]:
    """A saved lesson record; a clear error naming the lesson to run if it is missing."""
    path = Path(directory or results_dir()) / f"{lesson}.json"
    if not path.is_file():
        raise CourseError(f"no saved results for lesson {lesson!r} ({path.name}); run that lesson first "
                          f"(`course run {lesson.split('_')[0]}`)")
    return json.loads(path.read_text())


def saved_lessons(directory: Path | None = None) -> Sequence[str]:
    return sorted(p.stem for p in Path(directory or results_dir()).glob("*.json"))
