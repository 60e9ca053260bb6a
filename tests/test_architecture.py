"""The package's tiers stay visible: imports point down (or sideways within ground and machinery), no lesson module
imports another, and intra-package imports sit at module level where the graph can be read.

The tier map is read from the package docstring (`course_utils/__init__.py`), the one place it is written, so the
documented map and the checked one cannot drift apart. A subpackage (`course_utils/alignment/`) takes the tier of
its name; its files may import each other."""

import ast
import re
from pathlib import Path

import pytest

import course_utils

PACKAGE = Path(course_utils.__file__).parent
TIER_NAMES = ("Ground", "Machinery", "Lesson modules", "Tools")
GROUND, MACHINERY, LESSONS, TOOLS = range(len(TIER_NAMES))


def _section_names(body: str) -> list[str]:
    """The module names of one tier's section: the first word of each indented row (`name   what it does`), or the
    comma- or 'and'-separated names of its indented lines, parenthesised notes left out."""
    lines = [line for line in body.splitlines() if line.startswith("    ") and line.strip()]
    rows = [line for line in lines if not line.startswith("     ")]  # wrapped continuations sit deeper
    if rows and all(re.match(r"^ {4}[a-z_]+ {2,}\S", row) for row in rows):
        return [row.split()[0] for row in rows]
    text = " ".join(line.strip() for line in lines)
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    names = [n.strip(" .") for n in re.split(r",| and ", text)]
    bad = [n for n in names if not re.fullmatch(r"[a-z_]+", n)]
    assert not bad, f"course_utils/__init__.py: cannot read module names {bad} from the map"
    return names


def documented_tiers(doc: str | None = None) -> dict[str, int]:
    """{module name: tier} as the package docstring lists them (tools without their `tools.` prefix)."""
    parts = re.split(r"^\*\*(.+?)\*\*", doc or course_utils.__doc__, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2]))
    assert list(sections) == list(TIER_NAMES), f"the map's tier headings are {list(sections)}, not {TIER_NAMES}"
    tiers: dict[str, int] = {}
    for tier, heading in enumerate(TIER_NAMES):
        for name in _section_names(sections[heading]):
            key = "tools." + name if tier == TOOLS else name
            assert key not in tiers, f"{name} is listed in two tiers of the map"
            tiers[key] = tier
    return tiers


TIER = documented_tiers()


def _module_name(path: Path) -> str:
    """'costs', 'alignment' (a subpackage's __init__), 'alignment.judge', 'tools.cli'."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_paths() -> dict[str, Path]:
    """Every module of the package, subpackages' files included, by dotted name (the package's own __init__ and
    tools/__init__ left out)."""
    found = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    return {name: found[name] for name in sorted(found) if name not in ("", "tools")}


def module_names() -> list[str]:
    return list(module_paths())


def home(name: str) -> str:
    """The name the map lists a module under: its top-level name, or `tools.<name>` for a tool."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "tools" else parts[0]


def tier_of(name: str) -> int:
    return TOOLS if name == "tools" else TIER[home(name)]


def course_imports(name: str) -> list[tuple[str, bool]]:
    """(imported course_utils module, at module level?) for each intra-package import of `name`, relative imports
    inside a subpackage resolved against it."""
    modules = module_paths()
    path = modules[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - node.level + 1]
            module = ".".join(["course_utils", *base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        if module != "course_utils" and not module.startswith("course_utils."):
            continue
        inner = module.removeprefix("course_utils").removeprefix(".")
        for alias in node.names:  # `from course_utils.pkg import name`: a submodule if one has that name
            candidate = ".".join(filter(None, [inner, alias.name]))
            target = candidate if candidate in modules or candidate == "tools" or not inner else inner
            found.append((target, id(node) in top))
    return found


def test_the_map_is_read_from_the_package_docstring():
    assert TIER["errors"] == GROUND and TIER["evaluate"] == MACHINERY and TIER["costs"] == LESSONS
    assert TIER["tools.cli"] == TOOLS and "layers" in TIER and TIER["layers"] == MACHINERY
    doc = """**Ground**: x.\n    errors     e\n**Machinery**: y.\n    world  w\n**Lesson modules**: z.
    costs (01), instruct and shift (06)\n**Tools** (t):\n    cli (the command), runner\n"""
    assert documented_tiers(doc) == {"errors": 0, "world": 1, "costs": 2, "instruct": 2, "shift": 2,
                                     "tools.cli": 3, "tools.runner": 3}


def test_every_module_has_a_tier():
    missing = [m for m in module_names() if home(m) not in TIER]
    assert not missing, f"modules without a tier (add them to the map in course_utils/__init__.py): {missing}"


def test_the_map_names_no_module_that_is_gone():
    homes = {home(m) for m in module_names()}
    gone = [m for m in TIER if m not in homes]
    assert not gone, f"the map in course_utils/__init__.py lists modules that do not exist: {gone}"


@pytest.mark.parametrize("name", module_names())
def test_imports_point_down(name):
    for target, _ in course_imports(name):
        assert tier_of(target) <= tier_of(name), \
            f"{name} (tier {tier_of(name)}) imports {target} (tier {tier_of(target)})"
        if tier_of(name) == LESSONS and tier_of(target) == LESSONS and home(target) != home(name):
            pytest.fail(f"lesson module {name} imports lesson module {target}: move what they share down a tier")


@pytest.mark.parametrize("name", module_names())
def test_intra_package_imports_are_at_module_level(name):
    inline = [t for t, at_top in course_imports(name) if not at_top]
    assert not inline, f"{name} imports {inline} inside a function; import at module level"


def test_subpackage_files_take_their_package_tier(tmp_path, monkeypatch):
    """A subpackage's files are found, take its tier, may import each other, and may not import another lesson."""
    pkg = tmp_path / "course_utils"
    (pkg / "alignment").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "costs.py").write_text("")
    (pkg / "alignment" / "__init__.py").write_text("from course_utils.alignment.judge import judge\n")
    (pkg / "alignment" / "judge.py").write_text("from . import trainers\nfrom course_utils.errors import X\n")
    (pkg / "alignment" / "trainers.py").write_text("from course_utils.costs import y\n")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    assert module_names() == ["alignment", "alignment.judge", "alignment.trainers", "costs"]
    assert course_imports("alignment") == [("alignment.judge", True)]
    assert course_imports("alignment.judge") == [("alignment.trainers", True), ("errors", True)]
    assert [tier_of(n) for n in ("alignment.judge", "alignment.trainers")] == [LESSONS, LESSONS]
    with pytest.raises(pytest.fail.Exception, match="lesson module alignment.trainers imports lesson module costs"):
        test_imports_point_down("alignment.trainers")
    test_imports_point_down("alignment.judge")  # a sibling and the ground: allowed


# Tools whose tests sit in a file named for what they check rather than for the tool.
TESTED_IN = {"tools.api_contract": "test_api_drift.py", "tools.runner": "test_runner_robust.py",
             "tools.build": "test_integrity.py", "tools.coursemap": "test_report.py",
             "tools.fork": "test_notebooks_conventions.py", "tools.sourcelinks": "test_source.py",
             "alignment.__main__": "test_alignment_recipe.py"}


def own_test_file(name: str) -> Path | None:
    """tests/test_<module>.py: for a subpackage's file its own (test_alignment_judge.py) or the package's, for a tool
    its name without `tools.`, or the file `TESTED_IN` names."""
    tests = PACKAGE.parent / "tests"
    candidates = [TESTED_IN.get(name), f"test_{name.split('.')[-1]}.py", f"test_{name.replace('.', '_')}.py",
                  f"test_{home(name).removeprefix('tools.')}.py"]
    found = next((tests / c for c in candidates if c and (tests / c).is_file()), None)
    by_role = sorted(tests.glob(f"test_{name}_*.py"))  # a subpackage tested file by file (test_alignment_judge.py)
    return found or (by_role[0] if by_role else None)


@pytest.mark.parametrize("name", module_names())
def test_every_module_has_its_own_test_file(name):
    found = own_test_file(name)
    assert found, f"{name} has no tests/test_{name.split('.')[-1]}.py: its tests belong there, not in a cross-cutting file"
    if name in TESTED_IN:
        assert name.split(".")[-1] in found.read_text(), f"{found.name} does not mention {name}"


def test_no_notebook_imports_a_tool():
    import json

    for path in sorted((PACKAGE.parent / "notebooks").rglob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "course_utils.tools" not in code and "from course_utils import tools" not in code, path.name
