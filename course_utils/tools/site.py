"""`course site`: the course as a static website, built from the notebooks' stored outputs.

The site is what a learner without Jupyter (or an instructor on a projector) reads: the README as the home page,
the lessons in order with their stored tables and plots and their Colab badges, the solutions, the glossary, the
workshop guide, and the claims scoreboard from the last run, with navigation and full-text search. Nothing is
executed: the pages show what `course run --write` stored.

It uses MkDocs with mkdocs-jupyter (notebooks to pages through nbconvert) and the Material theme, all pure Python
and pinned in pyproject.toml. The sources are laid out as in the repository (`notebooks/`, `docs/`), so the links
the notebooks and the README already use (`../docs/GLOSSARY.md#lora`, `notebooks/05_overfitting.ipynb`) resolve in
the site unchanged; the theme's web fonts are switched off, so a built page makes no request outside itself.
Every course module has a page of its own showing its source (`code/<module>.html`): a notebook's "Course code
used here" line links there (`../course_utils/x.py` in the notebook, pointed at the page when it is copied).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from course_utils.errors import CourseError
from course_utils.paths import NOTEBOOKS_DIR, PACKAGE_DIR, REPO_DIR, REPO_URL, RUNS_DIR
from course_utils.results import load_results, results_dir, saved_lessons
from course_utils.claims import SCOREBOARD_COLUMNS, scoreboard_rows
from course_utils.tools.report import lesson_title
from course_utils.tools.runner import lesson_notebooks
from course_utils.tools.sourcelinks import (NOT_IN_A_LESSON, course_modules, course_notebooks, lesson_number,
                                            lessons_using)


class SiteError(CourseError):
    """The site cannot be built (the generator is missing, or a page or link is broken)."""


def scoreboard_markdown(directory: Path | None = None) -> str:
    """The claims scoreboard of the last run as a Markdown page (or a note saying how to produce one)."""
    directory = Path(directory or results_dir())
    records = {lesson: load_results(lesson, directory) for lesson in saved_lessons(directory)}
    rows = scoreboard_rows(records)
    head = "# Scoreboard\n\nEvery claim the lessons declare, judged over the seeds in the last run on this machine.\n\n"
    if not rows:
        return head + "No lesson results yet: run `course run`, then `course site` again.\n"
    cols = SCOREBOARD_COLUMNS
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731 - one-line table escaping
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


# A relative Markdown link to a page source: `](../docs/GLOSSARY.md#lora)` or `](05_overfitting.ipynb)`.
RELATIVE_PAGE_LINK = re.compile(r"\]\((?!https?:|#)([^)\s]+?)\.(?:md|ipynb)((?:#[^)\s]*)?)\)")
# A notebook's relative link to a course module's source: `](../course_utils/forgetting.py)`, `](../../course_utils/x/)`
# (a subpackage).
MODULE_LINK = re.compile(r"\]\(((?:\.\./)+)course_utils/(\w+)(?:\.py|/)\)")


def _code_block(path: Path, repo_dir: Path) -> list[str]:
    """A file's source as a numbered, highlighted block under its path and GitHub link."""
    rel, code = path.relative_to(repo_dir).as_posix(), path.read_text(encoding="utf-8")
    fence = "`" * max(3, 1 + max(map(len, re.findall(r"`+", code)), default=0))  # longer than any run inside
    return ["", f"## `{rel}`", "", f"[On GitHub]({REPO_URL}/blob/main/{rel})", "",
            f'{fence}python linenums="1"', code.rstrip("\n"), fence]


def module_pages(repo_dir: Path = REPO_DIR) -> dict[str, str]:
    """{`code/<module>.md`: a page with the module's source, line-numbered as on GitHub, and the lessons that
    import it} for every course module (a subpackage: one page, a section per file)."""
    notebooks = course_notebooks(repo_dir / "notebooks")
    lesson_page = {lesson_number(p): p.name for p in notebooks if p.parent.name == "notebooks"}
    using, pages = lessons_using(notebooks), {}
    for module, path in course_modules(repo_dir / PACKAGE_DIR.name).items():
        lessons = [f"[{n}](../notebooks/{lesson_page[n]})" for n in using.get(module, []) if n in lesson_page]
        lines = [f"# `{module}`", "", f"Used in lessons: {', '.join(lessons) or NOT_IN_A_LESSON}."]
        for f in sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]:
            lines += _code_block(f, repo_dir)
        pages[f"code/{module}.md"] = "\n".join(lines) + "\n"
    return pages


def copy_notebook_for_site(source: Path, target: Path) -> None:
    """Copy a notebook, pointing its relative links at the built pages (`X.md` / `X.ipynb` -> `X.html`):
    mkdocs rewrites such links in Markdown pages, but mkdocs-jupyter leaves a notebook's Markdown cells as they are."""
    nb = json.loads(source.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell.get("cell_type") == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            text = text.replace(f"]({REPO_URL}/blob/main/docs/", "](../docs/")  # the site's own glossary page
            text = MODULE_LINK.sub(r"](\1code/\2.html)", text)  # the module's page on the site
            cell["source"] = RELATIVE_PAGE_LINK.sub(r"](\1.html\2)", text)
    target.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")


def _config(lessons: list[Path], solutions: list[Path], code: list[str] = ()) -> dict:
    nav = [{"Home": "index.md"},
           {"Lessons": [{lesson_title(p): f"notebooks/{p.name}"} for p in lessons]},
           {"Solutions": [{p.stem.replace("_", " "): f"notebooks/solutions/{p.name}"} for p in solutions]},
           {"Course code": [{Path(page).stem: page} for page in code]},
           {"Glossary": "docs/GLOSSARY.md"}, {"Workshop guide": "docs/WORKSHOP.md"}, {"Scoreboard": "scoreboard.md"}]
    return {"site_name": "LLM fine-tuning, measured", "docs_dir": "src", "site_dir": "site", "use_directory_urls": False,
            "theme": {"name": "material", "font": False, "features": ["navigation.sections", "search.highlight"]},
            "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": True}}],
            "markdown_extensions": ["tables", "toc", "admonition", "pymdownx.highlight", "pymdownx.superfences"],
            "nav": nav, "validation": {"links": {
                "not_found": "warn", "anchors": "ignore"}}}


def build_site(out_dir: Path | None = None, repo_dir: Path = REPO_DIR) -> Path:
    """Lay out the sources under `out_dir/src`, write `mkdocs.yml`, build into `out_dir/site`; returns the site."""
    try:
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
    except ImportError:
        raise SiteError("course site needs mkdocs and mkdocs-jupyter: pip install -e \".[dev]\"") from None
    out_dir = Path(out_dir or RUNS_DIR / "site").resolve()
    src = out_dir / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks" / "solutions").mkdir(parents=True)
    (src / "docs").mkdir()
    lessons = lesson_notebooks(notebooks_dir=repo_dir / "notebooks")
    solutions = sorted((repo_dir / "notebooks" / "solutions").glob("*.ipynb"))
    for p in lessons:
        copy_notebook_for_site(p, src / "notebooks" / p.name)
    for p in solutions:
        copy_notebook_for_site(p, src / "notebooks" / "solutions" / p.name)
    for p in (repo_dir / "docs").glob("*.md"):
        shutil.copy(p, src / "docs" / p.name)
    (src / "index.md").write_text((repo_dir / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    (src / "scoreboard.md").write_text(scoreboard_markdown(), encoding="utf-8")
    pages = module_pages(repo_dir)
    (src / "code").mkdir()
    for page, text in pages.items():
        (src / page).write_text(text, encoding="utf-8")
    config_file = out_dir / "mkdocs.yml"
    config_file.write_text(json.dumps(_config(lessons, solutions, list(pages)), indent=1))  # JSON is valid YAML
    config = load_config(config_file=str(config_file))
    build(config)
    return out_dir / "site"


def broken_links(site: Path) -> list[str]:
    """Every relative link or image in the built pages whose target is not in the site ('page -> link')."""
    bad = []
    for page in sorted(Path(site).rglob("*.html")):
        if page.name == "404.html":  # served from the site root by any web server: its links are root-absolute
            continue
        for link in re.findall(r'(?:href|src)="([^"]+)"', page.read_text(encoding="utf-8")):
            if link.startswith(("http:", "https:", "#", "data:", "mailto:", "javascript:")):
                continue
            if not (page.parent / link.split("#")[0].split("?")[0]).resolve().exists():
                bad.append(f"{page.relative_to(site).as_posix()} -> {link}")
    return bad
