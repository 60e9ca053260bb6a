"""One source for every runtime figure: `course run`'s benchmark, written into the README and the workshop guide.

Lesson headers say "see the course map in the README"; the README's course map and the workshop guide's timing
table carry a runtime column that only this module writes, from the measured `benchmark.json` of `course run`
(`course run --write` updates both). A typed runtime cannot drift from the measurement because nobody types one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from course_utils.paths import REPO_DIR
from course_utils.tools.runner import is_solutions

# (file, header of the column, whose runtime it holds: each lesson's, or its solutions notebook's)
RUNTIME_COLUMNS = (("README.md", "runtime on 2 CPU cores", "lesson"), ("README.md", "solutions", "solutions"),
                   ("docs/WORKSHOP.md", "CPU runtime", "lesson"))


def runtime_text(row: Mapping[str, Any]) -> str:
    """'58 s (95 s CPU)': wall time on the benchmark machine, and the CPU time that is less sensitive to load."""
    return f"{row['seconds']:.0f} s ({row.get('cpu_seconds', 0):.0f} s CPU)"


def _cells(line: str) -> list[str]:
    return line.strip().strip("|").split("|")


def set_runtime_column(text: str, header: str, runtimes: Mapping[str, str]) -> str:
    """In the Markdown table whose header row names `header`, write each lesson's runtime into that column; a
    row is matched by the lesson number at the start of its first cell ('| 05 |' or '| 05 overfitting |')."""
    lines = text.split("\n")
    column = None
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            column = None
            continue
        cells = _cells(line)
        if column is None:
            names = [c.strip() for c in cells]
            column = names.index(header) if header in names else None
            continue
        m = re.match(r"\s*(\d\d)\b", cells[0])
        number = m.group(1) if m else None
        lesson = next((name for name in runtimes if name[:2] == number), None)
        if lesson and column < len(cells):
            cells[column] = f" {runtimes[lesson]} "
            lines[i] = "|" + "|".join(cells) + "|"
    return "\n".join(lines)


def update_course_map(benchmarks: Mapping[str, Mapping[str, Any]], repo_dir: Path = REPO_DIR) -> list[Path]:
    """Write the measured runtime of each lesson in `benchmarks` (and of each solutions notebook, named
    'NN_solutions') into the runtime columns; returns the changed files."""
    runtimes = {"lesson": {}, "solutions": {}}
    for name, row in benchmarks.items():
        if row.get("passed", True):
            runtimes["solutions" if is_solutions(name) else "lesson"][name] = runtime_text(row)
    changed = []
    for name, header, kind in RUNTIME_COLUMNS:
        path = Path(repo_dir) / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = set_runtime_column(text, header, runtimes[kind])
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
