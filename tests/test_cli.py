import json
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.tools import cli
from course_utils.errors import CourseError
from course_utils.paths import REPO_DIR
from course_utils.tools.runner import LessonResult, format_table, lesson_notebooks


def test_readme_commands_are_what_ci_runs():
    readme = (REPO_DIR / "README.md").read_text()
    ci = (REPO_DIR / ".ci" / "run").read_text().splitlines()
    install = 'pip install -e ".[cpu,dev,lab]"'
    assert install in readme and install in ci
    assert "\npytest\n" in readme and ci[-1] == "pytest"
    assert "course run" in readme


def test_pins_read_back_from_pyproject():
    pins = cli.pinned_requirements()
    assert pins["transformers"] == "5.23.0" and pins["trl"] == "1.16.0"
    assert "torch" not in pins  # a range, so Colab keeps its own torch


def test_doctor_passes_on_this_installation(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[OK] transformers 5.23.0 (pinned 5.23.0)" in out and "[FAIL]" not in out


def test_lesson_selection():
    names = [p.stem for p in lesson_notebooks()]
    assert names and names == sorted(names) and names[0].startswith("00_")
    assert [p.stem for p in lesson_notebooks(["0"])] == [names[0]]
    with pytest.raises(CourseError, match="no lesson matches '77'"):
        lesson_notebooks(["77"])


def test_unknown_lesson_is_a_one_line_error(capsys):
    assert cli.main(["run", "77"]) == 2
    assert "no lesson matches" in capsys.readouterr().err


def test_table_flags_failures_and_budget():
    table = format_table([LessonResult("00_a", 30, 500, True, cpu_seconds=41), LessonResult("01_b", 300, 500, True),
                          LessonResult("02_c", 5, 100, False, "cell 3 (AssertionError: x)")])
    assert "| 00_a | 30 | 41 | 500 | pass |" in table
    assert "over budget" in table and "FAIL: cell 3 (AssertionError: x)" in table


def test_run_names_the_failing_lesson_and_cell(tmp_path, monkeypatch):
    import nbformat

    from course_utils.tools import runner

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("assert x == 2, 'x is not 2'")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "42_broken.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(runner, "lesson_notebooks", lambda sel=(): sorted(tmp_path.glob("42_*.ipynb")))
    results, out_dir = runner.run_lessons(runs_dir=tmp_path / "runs")
    assert not results[0].passed and "cell 1" in results[0].error and "x is not 2" in results[0].error
    assert results[0].peak_memory_mb > 10
    saved = json.loads((out_dir / "benchmark.json").read_text())
    assert saved[0]["lesson"] == "42_broken"
    assert (out_dir / "executed" / "42_broken.ipynb").is_file()


def test_smoke_build_keeps_the_builder_working(tmp_path):
    """CI's shortened build: data, tokenizer and a few pretraining steps per family, in a scratch folder."""
    proc = subprocess.run([sys.executable, "-m", "course_utils.tools.cli", "build", "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from course_utils import zoo

    for family in zoo.FAMILIES:
        model, tok = zoo.load(family, profile="cpu", models_dir=tmp_path / "models")
        assert zoo.build_info(family, tmp_path / "models")["smoke"] is True
    assert (tmp_path / "qa.jsonl").read_bytes() == (REPO_DIR / "data_samples" / "qa.jsonl").read_bytes()


def test_smoke_build_refuses_to_overwrite_shipped_models(capsys):
    assert cli.main(["build", "--smoke"]) == 2
    assert "would overwrite the shipped models" in capsys.readouterr().err


def test_outputs_for_readers_drop_stderr_and_keep_results():
    import nbformat

    from course_utils.tools.runner import outputs_for_readers

    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="/root/x.py:1: Warning"),
                    nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    kept = outputs_for_readers(nb).cells[0].outputs
    assert [o["name"] for o in kept] == ["stdout"] and len(nb.cells[0].outputs) == 2


def test_outputs_for_readers_make_repo_paths_relative():
    import nbformat

    from course_utils.paths import REPO_DIR
    from course_utils.tools.runner import outputs_for_readers

    cell = nbformat.v4.new_code_cell("save_results()")
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": f"PosixPath('{REPO_DIR}/runs/r.json')"},
                                           execution_count=1)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert outputs_for_readers(nb).cells[0].outputs[0]["data"]["text/plain"] == "PosixPath('runs/r.json')"


@pytest.mark.parametrize("typed, lesson", [("5", "05_overfitting"), ("overfitting", "05_overfitting"),
                                           ("05_overfitting.ipynb", "05_overfitting"),
                                           ("notebooks/05_overfitting.ipynb", "05_overfitting"),
                                           ("noise", "04_noise_study"), ("04_noise", "04_noise_study")])
def test_lessons_are_found_however_people_type_them(typed, lesson):
    from course_utils.tools.runner import lesson_notebooks

    assert [p.stem for p in lesson_notebooks([typed])] == [lesson]


def test_a_near_miss_gets_a_did_you_mean():
    from course_utils.errors import CourseError
    from course_utils.tools.runner import lesson_notebooks

    with pytest.raises(CourseError, match="did you mean 05_overfitting"):
        lesson_notebooks(["overfiting"])


def test_help_lists_examples_and_lessons(capsys):
    from course_utils.tools.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    out = capsys.readouterr().out
    assert "course run overfitting" in out and "09_capstone_recipe" in out


def test_doctor_checks_the_kernel_and_the_widget_extension():
    from course_utils.tools.cli import kernel_check, widgets_check

    assert kernel_check()[0], kernel_check()[1]
    assert widgets_check()[0], widgets_check()[1]


def test_solutions_run_right_after_their_lesson():
    from course_utils.tools.runner import is_solutions, with_solutions

    order = [p.stem for p in with_solutions(lesson_notebooks(["05", "06"]))]
    assert order == ["05_overfitting", "05_solutions", "06_what_finetuning_changes", "06_solutions"]
    assert is_solutions("05_solutions") and not is_solutions("05_overfitting")
