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


def scannable_text(path):
    """A file's text for the secret scan; for notebooks, without base64 image payloads (random letters that can
    look like a key) but with every other output kept."""
    if path.suffix != ".ipynb":
        return path.read_text()
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            for mime in [m for m in out.get("data", {}) if m.startswith("image/")]:
                del out["data"][mime]
    return json.dumps(nb)


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
    assert "assert " in text or "C.check(" in text or "C2.check(" in text, \
        f"{path.name}: a lesson checks its findings (declared claims and `claims.check`, or an assert)"


ON_CLAIMS = [p for p in LESSONS if "claims as C" in "\n".join(source(c) for c in cells(p))]
RUN_RANGE = re.compile(r"\b\d+\.\d+\s*[-–]\s*\d+\.\d+\b|\b\d+\s*[-–]\s*\d+\s*%")


@pytest.mark.parametrize("path", ON_CLAIMS, ids=lambda p: p.name)
def test_claims_are_declared_before_they_are_judged_and_saved(path):
    code = [source(c) for c in cells(path) if c["cell_type"] == "code"]
    declared = next(i for i, c in enumerate(code) if "declare(" in c)
    judged = next(i for i, c in enumerate(code) if "verdicts(" in c)
    assert declared < judged, f"{path.name}: declare the claims before the experiment that judges them"
    assert any("check(" in c for c in code[judged:]), f"{path.name}: check the verdicts against the declarations"
    assert any("claims=" in c and "save_results" in c for c in code), f"{path.name}: save the verdicts"
    assert "env.seeds" in "\n".join(code), f"{path.name}: run over the seeds setup() gives"
    assert "setup(seed=" not in "\n".join(code), f"{path.name}: take the seeds from setup(), not a hard-coded one"


ON_CONTROLS = ("00", "02", "03", "05", "06", "07", "08", "09")  # lessons on controls and interval verdicts (issues 30, 32, 33, 35); 01 and 04 follow


@pytest.mark.parametrize("path", ON_CLAIMS, ids=lambda p: p.name)
def test_claims_have_controls_or_name_the_issue_that_gives_them(path):
    """A lesson on controls declares no pending claim; a lesson still pending names the issue that moves it."""
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    pending = re.findall(r"pending=\"([^\"]*)\"", code)
    if path.name[:2] in ON_CONTROLS:
        assert not pending, f"{path.name}: every claim needs its control and threshold rule, none pending"
        assert "control=" in code and "rule=" in code, f"{path.name}: declare each claim's control and rule"
    else:
        assert all(re.fullmatch(r"issue \d+", p) for p in pending), f"{path.name}: pending= names an issue"


@pytest.mark.parametrize("path", ON_CLAIMS, ids=lambda p: p.name)
def test_no_typed_results_in_prose(path):
    """Numbers about our runs come from code: prose quoting a range of results ("0.73-0.81", "67-86 %") is typed."""
    for c in cells(path):
        if c["cell_type"] == "markdown":
            found = RUN_RANGE.findall(source(c))
            assert not found, f"{path.name}: markdown quotes a range of results {found}; compute it in a cell"


# Artefact safety (issue 10): models are saved and loaded as safetensors only, remote code is never trusted, no
# token or secret is stored or printed, and stored outputs carry no local paths of the machine that ran them.
REMOTE_CODE = re.compile(r"trust_remote_code\s*=\s*True")
PICKLE_SAVE = re.compile(r"torch\.save\(|pickle\.dumps?\(|^\s*import (c|_)?pickle|^\s*from (c|_)?pickle import|"
                         r"safe_serialization\s*=\s*False|use_safetensors\s*=\s*False|weights_only\s*=\s*False",
                         re.M)
SECRET = re.compile(r"\bhf_[A-Za-z0-9]{30,}|\b(sk|ghp|gho|xox[bp])-?[A-Za-z0-9_]{20,}|"
                    r"(?i:api[_-]?key|secret|password|token)\s*=\s*[\"'][^\"']{12,}[\"']")
# printing (or showing as a cell's value) an environment variable that holds a token
PRINTED_ENV_SECRET = re.compile(
    r"(print|display|log\w*)\([^\n]*(os\.environ|getenv)[^\n]*(TOKEN|KEY|SECRET|PASSWORD)['\"]|"
    r"^\s*(os\.environ(\.get)?|os\.getenv)[\[(][^\n]*(TOKEN|KEY|SECRET|PASSWORD)['\"][\])]\s*$", re.M)
SOURCES = sorted((REPO_DIR / "course_utils").rglob("*.py"))


def code_of(path):
    if path.suffix == ".py":
        return path.read_text()
    return "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")


@pytest.mark.parametrize("path", ALL + SOURCES, ids=lambda p: p.name)
def test_no_remote_code_no_pickled_models_no_secrets(path):
    code, raw = code_of(path), scannable_text(path)
    assert not REMOTE_CODE.search(raw), f"{path.name}: trust_remote_code=True runs code from the hub"
    found = PICKLE_SAVE.search(code)
    assert not found, f"{path.name}: {found.group(0)!r}: save and load models as safetensors (save_pretrained)"
    found = SECRET.search(raw)
    assert not found, f"{path.name}: something that looks like a token or secret is stored: {found.group(0)[:12]}..."
    found = PRINTED_ENV_SECRET.search(code)
    assert not found, f"{path.name}: a token-like environment variable is printed: {found.group(0).strip()!r}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_stored_outputs_carry_no_local_paths(path):
    for cell in cells(path):
        for out in cell.get("outputs", []):
            found = LOCAL_PATH.search(json.dumps(out))
            assert not found, f"{path.name}: an output shows a local path ({found.group(0)}...)"


@pytest.mark.parametrize("text, pattern", [
    ("model = AutoModel.from_pretrained(name, trust_remote_code = True)", REMOTE_CODE),
    ("torch.save(model.state_dict(), 'm.pt')", PICKLE_SAVE), ("import pickle", PICKLE_SAVE),
    ("model.save_pretrained(d, safe_serialization=False)", PICKLE_SAVE),
    ("login(token='hf_" + "a1B2" * 9 + "')", SECRET), ("print(os.environ['HF_TOKEN'])", PRINTED_ENV_SECRET),
    ("os.getenv('OPENAI_API_KEY')", PRINTED_ENV_SECRET), ("/root/.cache/huggingface", LOCAL_PATH),
])
def test_the_scanners_catch_what_they_look_for(text, pattern):
    assert pattern.search(text)


@pytest.mark.parametrize("text, pattern", [
    ("cls.from_pretrained(p, use_safetensors=True, trust_remote_code=False)", REMOTE_CODE),
    ("model.save_pretrained(out, safe_serialization=True)", PICKLE_SAVE),
    ('forced = os.environ.get("COURSE_REVIEW", "")', PRINTED_ENV_SECRET),
    ('CHAT_TOKENS = ["<|system|>", "<|user|>"]', SECRET),
])
def test_the_scanners_leave_safe_code_alone(text, pattern):
    assert not pattern.search(text)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_the_colab_set_up_cell_clones_this_repository(path):
    """The set-up cell's `git clone` names paths.REPO_URL, the one place a fork changes (`course fork URL`)."""
    clones = [line for cell in cells(path) if cell["cell_type"] == "code"
              for line in source(cell).splitlines() if "git clone" in line]
    assert clones, f"{path.name}: no set-up cell clones the course for Colab"
    assert all(REPO_URL in line for line in clones), f"{path.name}: clones {clones}, not {REPO_URL}"


def test_course_fork_points_badges_and_set_up_cells_at_the_fork(tmp_path):
    import shutil

    from course_utils.tools.fork import ForkError, retarget

    for rel in ["course_utils/paths.py", "README.md", "notebooks/05_overfitting.ipynb", "docs/WORKSHOP.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_DIR / rel, tmp_path / rel)
    changed = retarget("https://github.com/someone/my-course", repo_dir=tmp_path)
    assert tmp_path / "course_utils/paths.py" in changed and tmp_path / "notebooks/05_overfitting.ipynb" in changed
    nb = (tmp_path / "notebooks/05_overfitting.ipynb").read_text()
    assert "colab.research.google.com/github/someone/my-course/blob/main" in nb
    assert "git clone -q --depth 1 https://github.com/someone/my-course" in nb
    assert REPO_URL.split("github.com/")[1] not in nb
    with pytest.raises(ForkError, match="not a GitHub repository URL"):
        retarget("gitlab.com/x/y", repo_dir=tmp_path)


# Widgets with the same name and behaviour in ipywidgets 7.7 (Colab's own) and 8.x (JupyterLab 4).
COLAB_SAFE_WIDGETS = {"Button", "Checkbox", "Dropdown", "FloatSlider", "HBox", "HTML", "IntSlider", "IntText",
                      "Label", "Output", "SelectionSlider", "Text", "Textarea", "ToggleButtons", "VBox", "Layout"}


def test_widgets_are_ones_colab_renders():
    from course_utils.paths import PACKAGE_DIR

    texts = [p.read_text() for p in PACKAGE_DIR.rglob("*.py")] + [p.read_text() for p in ALL]
    used = {m for t in texts for m in re.findall(r"\b(?:w|widgets)\.([A-Z][A-Za-z]+)\b", t)}
    assert used <= COLAB_SAFE_WIDGETS, f"widgets Colab's ipywidgets 7.7 may not render: {sorted(used - COLAB_SAFE_WIDGETS)}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_runtimes_come_from_the_benchmark_not_the_header(path):
    """One source for runtimes: a lesson's header points at the course map that `course run --write` fills in."""
    header = [line for c in cells(path) if c["cell_type"] == "markdown" for line in source(c).splitlines()
              if "**Runtime:**" in line]
    assert header and all(not re.search(r"\b\d+ s\b", line) for line in header), \
        f"{path.name}: the header types a runtime {header}; say 'see the course map in the README'"
