"""Both ways between lessons and modules: each notebook's first cell lists the course modules it imports (linked
to their source), and each module's docstring ends with the lessons that import it.

Both are written from the notebooks' imports (`source.modules_used`), never by hand: after moving or renaming a
module, run `python -m course_utils.tools.sourcelinks` (or `refresh()`) and commit what it changed. It is
idempotent; tests/test_source.py fails, naming this, when the lists and the imports disagree.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

from course_utils.paths import NOTEBOOKS_DIR, PACKAGE_DIR
from course_utils.source import SourceError, modules_used, source_links

COURSE_CODE_LINE = re.compile(r"^\*\*Course code used here:\*\*.*$", re.M)
USED_IN_LINE = re.compile(r"^Used in lessons: .*$", re.M)
NOT_IN_A_LESSON = "none (used by other modules and tools)"


def course_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The lessons (`NN_*.ipynb`) and their solutions (`solutions/NN_solutions.ipynb`)."""
    return sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")) + sorted((notebooks_dir / "solutions").glob("*.ipynb"))


def lesson_number(notebook: Path) -> str:
    """'02' for `02_catastrophic_forgetting.ipynb` and for `solutions/02_solutions.ipynb`."""
    return notebook.name[:2]


def first_cell_text(text: str, line: str) -> str:
    """The first cell's Markdown with its course-code line replaced by `line` (appended when it has none)."""
    if COURSE_CODE_LINE.search(text):
        return COURSE_CODE_LINE.sub(lambda _: line, text, count=1)
    return text.rstrip("\n") + "\n\n" + line


def course_code_line(notebook: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """The line the notebook's first cell should hold: its modules, linked relative to its folder."""
    return source_links(modules_used(notebook), up=len(notebook.relative_to(notebooks_dir.parent).parts) - 1)


def course_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """{module: the file whose docstring names its lessons}: every `*.py` of the package, and a subpackage's
    `__init__.py` (the tools, which no notebook imports, left out)."""
    files = {p.stem: p for p in package_dir.glob("*.py") if p.stem != "__init__"}
    files |= {p.parent.name: p for p in package_dir.glob("*/__init__.py") if p.parent.name != "tools"}
    return dict(sorted(files.items()))


def lessons_using(notebooks: list[Path]) -> dict[str, list[str]]:
    """{module: the lesson numbers whose lesson or solutions notebook imports it}."""
    using: dict[str, set[str]] = {}
    for nb in notebooks:
        for module in modules_used(nb):
            using.setdefault(module, set()).add(lesson_number(nb))
    return {m: sorted(lessons) for m, lessons in using.items()}


def used_in_line(lessons: list[str]) -> str:
    return "Used in lessons: " + (", ".join(lessons) if lessons else NOT_IN_A_LESSON)


def with_used_in(source: str, line: str) -> str:
    """The module's source with its docstring's last line set to `line` (replaced, or added after a blank line)."""
    doc = (ast.parse(source).body or [None])[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
        raise SourceError("no module docstring to end with the lessons that use it")
    lines = source.splitlines(keepends=True)
    head, body, tail = lines[:doc.lineno - 1], "".join(lines[doc.lineno - 1:doc.end_lineno]), lines[doc.end_lineno:]
    if USED_IN_LINE.search(body):
        body = USED_IN_LINE.sub(lambda _: line, body, count=1)
    else:
        quotes = body.rstrip()[-3:]
        text = body.rstrip()[:-3].rstrip()
        body = f"{text}\n\n{line}\n{quotes}\n"
    return "".join(head) + body + "".join(tail)


def refresh(notebooks_dir: Path = NOTEBOOKS_DIR, package_dir: Path = PACKAGE_DIR, write: bool = True,
            skip: tuple[str, ...] = ()) -> list[Path]:
    """Rewrite every notebook's course-code line and every module's "Used in lessons" line from the notebooks'
    imports; returns the files that were (with `write=False`: would be) changed. `skip`: modules to leave alone."""
    changed = []
    notebooks = course_notebooks(notebooks_dir)
    for path in notebooks:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        text = first_cell_text(nb.cells[0].source, course_code_line(path, notebooks_dir))
        if text != nb.cells[0].source:
            nb.cells[0].source = text
            changed.append(path)
            if write:
                nbformat.write(nb, path)
    using = lessons_using(notebooks)
    for module, path in course_modules(package_dir).items():
        if module in skip:
            continue
        source = path.read_text(encoding="utf-8")
        try:
            new = with_used_in(source, used_in_line(using.get(module, [])))
        except SourceError as e:
            raise SourceError(f"{path.relative_to(package_dir.parent)}: {e}") from None
        if new != source:
            changed.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return changed


if __name__ == "__main__":
    for p in refresh():
        print("rewrote", p)
