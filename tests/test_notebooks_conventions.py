"""Every lesson follows the course's conventions (nbval separately checks that each one runs and its asserts hold)."""

import json
import re

import pytest

from course_utils.paths import NOTEBOOKS_DIR, REPO_DIR, REPO_URL

LESSONS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
ALL = LESSONS + sorted((NOTEBOOKS_DIR / "solutions").glob("*.ipynb"))
LOCAL_PATH = re.compile(r"(/work/|/root/|/home/\w+/|/tmp/|C:\\\\Users)")


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_colab_badge_points_to_this_notebook(path):
    first = source(cells(path)[0])
    rel = path.relative_to(REPO_DIR).as_posix()
    badge = f"https://colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/{rel}"
    assert badge in first, f"{path.name}: the first cell needs the Colab badge linking to {rel}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_setup_cell_works_on_colab_and_locally(path):
    code = [source(c) for c in cells(path) if c["cell_type"] == "code"]
    setup_cell = code[0]
    assert "google.colab" in setup_cell and "pip install" in setup_cell and "setup(" in setup_cell
    assert "[cpu" not in setup_cell, "Colab must keep its own torch: no cpu extra in the Colab install"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_states_runtime_and_ends_with_what_we_measured(path):
    text = "\n".join(source(c) for c in cells(path))
    assert re.search(r"Runtime:\*\* about \d+", text) or "Runtime:" in text, f"{path.name}: state the CPU runtime"
    assert "GPU memory" in text, f"{path.name}: state the GPU memory needs"
    assert "## What we measured" in text
    assert "assert " in text, f"{path.name}: a lesson checks its finding with an assert over measured numbers"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_remote_code_no_secrets_no_local_paths(path):
    raw = path.read_text()
    assert "trust_remote_code=True" not in raw
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", raw), "a hub token is stored in the notebook"
    for cell in cells(path):
        for out in cell.get("outputs", []):
            text = json.dumps(out)
            assert not LOCAL_PATH.search(text), f"{path.name}: an output shows a local path"
