"""The package's tiers stay visible: imports point down (or sideways within ground and machinery), no lesson module
imports another, and intra-package imports sit at module level where the graph can be read."""

import ast
from pathlib import Path

import pytest

import course_utils

PACKAGE = Path(course_utils.__file__).parent

GROUND = {"errors", "paths", "data", "profiles", "results", "tokenizer", "text", "config", "claims", "source"}
MACHINERY = {"world", "zoo", "pretrain", "train", "evaluate", "peft_methods", "classify", "distill", "gpu",
             "layers", "plots"}
LESSONS = {"costs", "forgetting", "quality", "noise", "overfitting", "instruct", "shift", "bias", "alignment",
           "safety_filter", "capstone"}
TOOLS = {"tools." + p.stem for p in (PACKAGE / "tools").glob("*.py") if p.stem != "__init__"}
TIER = {**{m: 0 for m in GROUND}, **{m: 1 for m in MACHINERY}, **{m: 2 for m in LESSONS}, **{m: 3 for m in TOOLS}}


def module_names() -> list[str]:
    names = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    return sorted(names) + sorted(TOOLS)


def course_imports(name: str) -> list[tuple[str, bool]]:
    """(imported course_utils module, at module level?) for each intra-package import of `name`."""
    path = PACKAGE / (name.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_utils"):
            if node.module == "course_utils":
                targets = [a.name for a in node.names]
            elif node.module == "course_utils.tools":
                targets = ["tools." + a.name for a in node.names]
            else:
                targets = [node.module.removeprefix("course_utils.")]
            found += [(t, id(node) in top) for t in targets]
    return found


def test_every_module_has_a_tier():
    missing = [m for m in module_names() if m not in TIER]
    assert not missing, f"modules without a tier (add them to the map in course_utils/__init__.py and here): {missing}"


def test_the_module_map_names_every_module():
    doc = course_utils.__doc__
    assert all(m.removeprefix("tools.") in doc for m in module_names())


@pytest.mark.parametrize("name", module_names())
def test_imports_point_down(name):
    for target, _ in course_imports(name):
        assert TIER[target] <= TIER[name], f"{name} (tier {TIER[name]}) imports {target} (tier {TIER[target]})"
        if TIER[name] == 2 and TIER[target] == 2:
            pytest.fail(f"lesson module {name} imports lesson module {target}: move what they share down a tier")


@pytest.mark.parametrize("name", module_names())
def test_intra_package_imports_are_at_module_level(name):
    inline = [t for t, at_top in course_imports(name) if not at_top]
    assert not inline, f"{name} imports {inline} inside a function; import at module level"


def test_no_notebook_imports_a_tool():
    import json

    for path in sorted((PACKAGE.parent / "notebooks").rglob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "course_utils.tools" not in code and "from course_utils import tools" not in code, path.name
