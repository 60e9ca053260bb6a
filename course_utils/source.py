"""Where the code a lesson calls lives: the course modules a notebook imports, links to their source, and
`look_inside`, which shows a function's own code in the notebook (d2l's "Defined in", both ways).

A lesson calls `F.run_study(...)`; the idea it teaches lives a few calls down, in a function such as
`forgetting.ewc_penalty`. `look_inside(F.ewc_penalty)` prints that function's source, with the file and line it
comes from and a link to it, so a learner reads the very code that produced the numbers, not a paraphrase of it.
`look_inside` works on library code too: `look_inside(DPOTrainer._compute_loss, start=..., stop=...)` shows the
lines of trl's DPO loss, linked to the release that is installed.

Used in lessons: 02, 03, 06, 08
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from course_utils.errors import CourseError
from course_utils.paths import PACKAGE_DIR, REPO_URL

# Where a library's source lives on GitHub, by release: `{version}` and `{path}` (inside the package) filled in.
UPSTREAM = {
    "trl": "https://github.com/huggingface/trl/blob/v{version}/trl/{path}",
    "transformers": "https://github.com/huggingface/transformers/blob/v{version}/src/transformers/{path}",
    "peft": "https://github.com/huggingface/peft/blob/v{version}/src/peft/{path}",
}
SHELL_LINE = re.compile(r"^(\s*)[!%].*$", re.M)  # `!pip ...`, `%time ...`: IPython, not Python


class SourceError(CourseError):
    """A notebook or an object whose source cannot be read, or an excerpt marker that is not in it."""


def _code_cells(notebook_path: Path) -> list[str]:
    try:
        cells = json.loads(Path(notebook_path).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as e:
        raise SourceError(f"{Path(notebook_path).name}: not a readable notebook ({e})") from None
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]


def _imported(node: ast.AST) -> list[str]:
    """The `course_utils` names one import statement brings in, as dotted paths below the package."""
    if isinstance(node, ast.Import):
        return [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("course_utils.")]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "course_utils":
            return [a.name for a in node.names]
        if node.module.startswith("course_utils."):
            return [node.module.split(".", 1)[1]]
    return []


def modules_used(notebook_path: Path) -> list[str]:
    """The course modules a notebook imports, sorted: `from course_utils import x as y`, `import course_utils.x`
    and `from course_utils.x import f` all count as `x` (a subpackage counts once, by its own name; the tools,
    which no notebook imports, never count)."""
    found = set()
    for i, code in enumerate(_code_cells(notebook_path)):
        try:
            tree = ast.parse(SHELL_LINE.sub(r"\1pass", code))
        except SyntaxError as e:
            raise SourceError(f"{Path(notebook_path).name}: code cell {i} is not Python ({e.msg}, line {e.lineno})")
        found |= {name.split(".")[0] for node in ast.walk(tree) for name in _imported(node)}
    return sorted(found - {"tools"})


def module_path(module: str) -> str:
    """The module's path in the repository: `course_utils/<module>.py`, or `course_utils/<module>/` for a
    subpackage."""
    return f"{PACKAGE_DIR.name}/{module}/" if (PACKAGE_DIR / module).is_dir() else f"{PACKAGE_DIR.name}/{module}.py"


def github_url(module: str) -> str:
    """The module's source on GitHub (a subpackage: its folder)."""
    path = module_path(module)
    return f"{REPO_URL}/{'tree' if path.endswith('/') else 'blob'}/main/{path.rstrip('/')}"


def source_links(modules: list[str], up: int = 1) -> str:
    """One Markdown line linking each module to its source on GitHub and on the course site.

    The site link is relative (`../course_utils/x.py` from a notebook `up` folders below the repository): in a
    clone it opens the file itself, and `course site` points it at the module's page.
    """
    links = [f"[`{m}`]({github_url(m)}) ([site]({'../' * up}{module_path(m)}))" for m in modules]
    return "**Course code used here:** " + (", ".join(links) if links else "none") + "."


@dataclass(frozen=True)
class Excerpt:
    """Lines `first`-`last` of the file at `path` (as a reader finds it: `course_utils/x.py`, `trl/...`)."""

    text: str
    path: str
    first: int
    last: int
    url: str | None
    release: str = ""

    def where(self) -> str:
        lines = f"line {self.first}" if self.first == self.last else f"lines {self.first}-{self.last}"
        return f"{self.path}{f' ({self.release})' if self.release else ''}, {lines}"


def _location(obj, file: Path, first: int, last: int) -> tuple[str, str | None, str]:
    """(path a reader finds it at, link to those lines or None, 'library version' or '')."""
    if file.is_relative_to(PACKAGE_DIR):
        path = f"{PACKAGE_DIR.name}/{file.relative_to(PACKAGE_DIR).as_posix()}"
        return path, f"{REPO_URL}/blob/main/{path}#L{first}-L{last}", ""
    module = inspect.getmodule(obj)
    top = module.__name__.split(".")[0] if module else ""
    root = Path(getattr(sys.modules.get(top), "__file__", None) or file).parent
    if not file.is_relative_to(root):
        return file.name, None, ""
    path = file.relative_to(root.parent).as_posix()
    try:
        version = importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        return path, None, ""
    url = UPSTREAM[top].format(version=version, path=file.relative_to(root).as_posix()) if top in UPSTREAM else None
    return path, url and f"{url}#L{first}-L{last}", f"{top} {version}"


def source_of(obj, start: str | None = None, stop: str | None = None) -> Excerpt:
    """The source of a function, method or class; with `start`/`stop`, only the lines from the first one that
    contains `start` to the first one after it that contains `stop` (dedented)."""
    obj = inspect.unwrap(obj)
    try:
        lines, first = inspect.getsourcelines(obj)
        file = Path(inspect.getsourcefile(obj)).resolve()
    except (TypeError, OSError):
        raise SourceError(f"look_inside: no Python source for {obj!r} (a builtin, or defined in a notebook?)") from None
    name = getattr(obj, "__qualname__", repr(obj))
    a = 0 if start is None else next((i for i, line in enumerate(lines) if start in line), None)
    if a is None:
        raise SourceError(f"look_inside: {start!r} is not in the source of {name}")
    b = len(lines) - 1 if stop is None else next((i for i in range(a, len(lines)) if stop in lines[i]), None)
    if b is None:
        raise SourceError(f"look_inside: {stop!r} is not in the source of {name} after {start!r}")
    path, url, release = _location(obj, file, first + a, first + b)
    return Excerpt(textwrap.dedent("".join(lines[a:b + 1])).rstrip("\n"), path, first + a, first + b, url, release)


def look_inside(obj, start: str | None = None, stop: str | None = None) -> None:
    """Show an object's source in the notebook, under "Defined in <file>, line N" linked to those lines.

    In Jupyter the code is syntax-highlighted; in a plain Python session it is printed. `start`/`stop` pick an
    excerpt of a long function (see `source_of`).
    """
    excerpt = source_of(obj, start, stop)
    try:
        from IPython import get_ipython
        from IPython.display import Code, Markdown, display
    except ImportError:
        get_ipython = None  # noqa: N806 - no IPython: print below
    if get_ipython is None or get_ipython() is None:
        print(f"Defined in {excerpt.where()}" + (f" ({excerpt.url})" if excerpt.url else ""))
        print(excerpt.text)
        return
    where = excerpt.where().replace(excerpt.path, f"[`{excerpt.path}`]({excerpt.url})" if excerpt.url
                                    else f"`{excerpt.path}`", 1)
    display(Markdown(f"Defined in {where}"))
    display(Code(excerpt.text, language="python"))
