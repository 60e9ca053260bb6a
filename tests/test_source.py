"""Code a learner can see: each notebook lists the course modules it imports, each module names the lessons that
import it (both written by `tools.sourcelinks.refresh`), and `look_inside` shows a function's own source."""

import ast
import inspect

import nbformat
import pytest

from course_utils import forgetting, source
from course_utils.paths import NOTEBOOKS_DIR, PACKAGE_DIR, REPO_URL
from course_utils.source import SourceError, look_inside, modules_used, source_links, source_of
from course_utils.tools import sourcelinks as SL
from course_utils.tools.site import MODULE_LINK, copy_notebook_for_site, module_pages

NOTEBOOKS = SL.course_notebooks()
USING = SL.lessons_using(NOTEBOOKS)
RERUN = "run `python -m course_utils.tools.sourcelinks` (course_utils.tools.sourcelinks.refresh) and commit"


def notebook_with(tmp_path, *codes, first="# Lesson 05: x"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(first)]
                                  + [nbformat.v4.new_code_cell(c) for c in codes])
    path = tmp_path / "05_x.ipynb"
    nbformat.write(nb, path)
    return path


def test_modules_used_reads_every_import_form(tmp_path):
    path = notebook_with(tmp_path,
                         'import sys\nif "google.colab" in sys.modules:\n    !pip install -q x\n%time 1\n'
                         "from course_utils.profiles import setup",
                         "from course_utils import world as W, zoo\nimport course_utils.quality\nimport numpy",
                         "def f():\n    from course_utils.alignment.judge import refused\n"
                         "from course_utils import tools\nfrom .x import y")
    assert modules_used(path) == ["alignment", "profiles", "quality", "world", "zoo"]


def test_modules_used_names_the_notebook_and_cell_it_cannot_read(tmp_path):
    with pytest.raises(SourceError, match=r"05_x.ipynb: code cell 1 is not Python"):
        modules_used(notebook_with(tmp_path, "x = 1", "def ("))


def test_source_links_point_at_github_and_the_site():
    line = source_links(["forgetting", "zoo"], up=2)
    assert line.startswith("**Course code used here:** ")
    github = f"{REPO_URL}/blob/main/course_utils/forgetting.py"
    assert f"[`forgetting`]({github}) ([site](../../course_utils/forgetting.py))" in line
    assert source_links([]) == "**Course code used here:** none."
    # a subpackage (as alignment becomes) links to its folder; `tools` stands in for one here
    assert source.module_path("tools") == "course_utils/tools/"
    assert source.github_url("tools") == f"{REPO_URL}/tree/main/course_utils/tools"
    assert MODULE_LINK.sub(r"](\1code/\2.html)", "[site](../../course_utils/tools/)") == "[site](../../code/tools.html)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_lists_exactly_the_modules_the_notebook_imports(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    lines = SL.COURSE_CODE_LINE.findall(first)
    assert lines == [SL.course_code_line(path)], f"{path.name}: its first cell's course-code line is stale; {RERUN}"
    for module in modules_used(path):
        assert (PACKAGE_DIR.parent / source.module_path(module)).exists(), f"{path.name}: no module {module}"


@pytest.mark.parametrize("module, path", SL.course_modules().items(), ids=lambda v: str(getattr(v, "name", v)))
def test_each_module_names_the_lessons_that_import_it(module, path):
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    expected = SL.used_in_line(USING.get(module, []))
    assert doc.rstrip().splitlines()[-1] == expected, f"{path.name}: its docstring should end {expected!r}; {RERUN}"


def test_refresh_is_idempotent_and_rewrites_a_stale_list(tmp_path):
    notebooks, package = tmp_path / "notebooks", tmp_path / "course_utils"
    (notebooks / "solutions").mkdir(parents=True)
    package.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Lesson 03\n\n**Course code used here:** [`zoo`](x).\n\nmore"),
        nbformat.v4.new_code_cell("from course_utils import quality as Q")])
    nbformat.write(nb, notebooks / "03_q.ipynb")
    nb.cells[0].source = "# Solutions"
    nbformat.write(nb, notebooks / "solutions" / "03_solutions.ipynb")
    (package / "quality.py").write_text('"""Quality.\n\nUsed in lessons: 01\n"""\nX = 1\n')
    (package / "text.py").write_text('"""Text in one line."""\n\nY = 2\n')
    assert len(SL.refresh(notebooks, package)) == 4
    assert SL.refresh(notebooks, package) == []
    lesson = nbformat.read(notebooks / "03_q.ipynb", as_version=4).cells[0].source
    assert lesson.startswith("# Lesson 03\n\n**Course code used here:** [`quality`]") and lesson.endswith("\n\nmore")
    solution = nbformat.read(notebooks / "solutions" / "03_solutions.ipynb", as_version=4).cells[0].source
    assert "([site](../../course_utils/quality.py))" in solution
    assert (package / "quality.py").read_text() == '"""Quality.\n\nUsed in lessons: 03\n"""\nX = 1\n'
    (package / "bare.py").write_text("Z = 3\n")
    with pytest.raises(SourceError, match="course_utils/bare.py: no module docstring"):
        SL.refresh(notebooks, package)
    assert (package / "text.py").read_text() == ('"""Text in one line.\n\nUsed in lessons: none (used by other modules '
                                                 'and tools)\n"""\n\nY = 2\n')


def test_source_of_gives_the_file_lines_and_link():
    ex = source_of(forgetting.ewc_penalty)
    lines, first = inspect.getsourcelines(forgetting.ewc_penalty)
    assert ex.text.startswith("def ewc_penalty(") and (ex.first, ex.last) == (first, first + len(lines) - 1)
    assert ex.path == "course_utils/forgetting.py"
    assert ex.url == f"{REPO_URL}/blob/main/course_utils/forgetting.py#L{ex.first}-L{ex.last}"
    part = source_of(forgetting.EWCTrainer.compute_loss, start="penalty = ewc_penalty(", stop="self.last_penalty")
    assert part.text.splitlines()[0].startswith("penalty = ewc_penalty(") and part.last == part.first + 1


def test_source_of_library_code_names_the_installed_release():
    import transformers
    from transformers import Trainer

    ex = source_of(Trainer.compute_loss)
    assert ex.path == "transformers/trainer.py" and ex.release == f"transformers {transformers.__version__}"
    assert ex.url.startswith(f"https://github.com/huggingface/transformers/blob/v{transformers.__version__}/src/")


def test_source_of_says_what_it_cannot_show():
    with pytest.raises(SourceError, match="no Python source"):
        source_of(len)
    with pytest.raises(SourceError, match="'nowhere' is not in the source of ewc_penalty"):
        source_of(forgetting.ewc_penalty, start="nowhere")


def test_look_inside_prints_outside_ipython(capsys):
    look_inside(forgetting.ewc_penalty)
    out = capsys.readouterr().out
    assert out.startswith("Defined in course_utils/forgetting.py, lines ") and "def ewc_penalty(" in out


def test_every_module_has_a_site_page_and_notebook_links_reach_it(tmp_path):
    pages = module_pages()
    assert set(pages) == {f"code/{m}.md" for m in SL.course_modules()}
    page = pages["code/forgetting.md"]
    assert "(../notebooks/02_catastrophic_forgetting.ipynb)" in page
    assert inspect.getsource(forgetting).rstrip("\n") in page and 'python linenums="1"' in page
    target = tmp_path / "nb.ipynb"
    copy_notebook_for_site(NOTEBOOKS_DIR / "solutions" / "02_solutions.ipynb", target)
    first = nbformat.reads(target.read_text(), as_version=4).cells[0].source
    assert "([site](../../code/forgetting.html))" in first and not MODULE_LINK.search(first)
