"""`course run` survives people: Ctrl-C keeps what finished, runs never share a folder, kernels get absolute
paths, and a broken notebook is named. The kernel is replaced by a stand-in, so these tests start no Jupyter."""

import json
from pathlib import Path

import pytest

from course_utils.tools import cli, runner
from course_utils.tools.runner import LessonResult, RunInterrupted


def _lessons(folder: Path, *names: str) -> list[Path]:
    """Empty but valid lesson notebooks named `names` in `folder`."""
    import nbformat

    paths = []
    for name in names:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), folder / f"{name}.ipynb")
        paths.append(folder / f"{name}.ipynb")
    return paths


@pytest.fixture
def lessons(tmp_path, monkeypatch):
    """Three lessons; `runner.run_notebook` passes each instantly and records the environment it was given,
    except the one named in `calls['interrupt']`, which raises KeyboardInterrupt as Ctrl-C would."""
    paths = _lessons(tmp_path, "01_first", "02_second", "03_third")
    calls = {"envs": [], "interrupt": None}

    def fake_run_notebook(path, timeout=1200, env=None, kernel_log=None):
        calls["envs"].append(env)
        if path.stem == calls["interrupt"]:
            raise KeyboardInterrupt
        return LessonResult(path.stem, 1.0, 100.0, True), runner.read_notebook(path)

    monkeypatch.setattr(runner, "lesson_notebooks", lambda sel=(): paths)
    monkeypatch.setattr(runner, "run_notebook", fake_run_notebook)
    monkeypatch.setattr(runner, "RUNS_DIR", tmp_path / "runs")
    return calls


def test_ctrl_c_keeps_finished_lessons_in_one_line(lessons, tmp_path, capsys):
    lessons["interrupt"] = "02_second"
    with pytest.raises(RunInterrupted) as caught:
        runner.run_lessons(runs_dir=tmp_path / "runs")
    out_dir = caught.value.out_dir
    assert caught.value.code == 130 and out_dir.is_absolute() and out_dir.parent == tmp_path / "runs"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"interrupted during lesson 02_second; kept the results of 1 finished lesson in {out_dir}"
    assert [r["lesson"] for r in json.loads((out_dir / "benchmark.json").read_text())] == ["01_first"]
    assert "01_first" in (out_dir / "benchmark.md").read_text()
    assert sorted(p.name for p in out_dir.rglob("*") if p.is_file()) == ["01_first.ipynb", "benchmark.json",
                                                                          "benchmark.md"]  # no temp files left


def test_ctrl_c_through_the_course_command_exits_130(lessons, capsys):
    """`course run` lets the interrupt end the process: SystemExit(130), one line on stderr, no traceback."""
    lessons["interrupt"] = "01_first"
    with pytest.raises(SystemExit) as caught:
        cli.main(["run"])
    assert caught.value.code == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("interrupted")]
    assert len(err) == 1 and "during lesson 01_first; kept the results of 0 finished lessons in" in err[0]


def test_an_uninterrupted_run_saves_every_lesson(lessons, tmp_path):
    results, out_dir = runner.run_lessons()
    assert [r.lesson for r in results] == ["01_first", "02_second", "03_third"]
    assert out_dir.parent == tmp_path / "runs"
    assert len(json.loads((out_dir / "benchmark.json").read_text())) == 3


def test_two_runs_in_the_same_instant_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_stamp", lambda: "20260101-120000-000000")
    folders = [runner.new_run_dir(tmp_path) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() and f.parent == tmp_path for f in folders)
    assert [f.name for f in folders] == sorted(f.name for f in folders)  # later runs still sort later


def test_two_runs_started_together_do_not_share_a_folder(lessons, tmp_path):
    (_, a), (_, b) = runner.run_lessons(), runner.run_lessons()
    assert a != b and (a / "benchmark.json").is_file() and (b / "benchmark.json").is_file()


def test_kernels_get_absolute_course_folders(lessons, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COURSE_DATA_DIR", "my_data")
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    _, out_dir = runner.run_lessons(runs_dir=Path("relative_runs"))
    env = lessons["envs"][0]
    assert env["COURSE_RUNS_DIR"] == str(tmp_path / "relative_runs") == str(out_dir.parent)
    assert env["COURSE_DATA_DIR"] == str(tmp_path / "my_data")
    assert "PYTHONWARNINGS" not in env and env["SOMETHING_ELSE"] == "kept"
    assert all(e == env for e in lessons["envs"])


@pytest.mark.parametrize("content", ["not json at all", '{"cells": 5}', '{"nbformat": 4, "cells": []}', None])
def test_a_broken_notebook_is_named(tmp_path, content):
    path = tmp_path / "05_broken.ipynb"
    if content is not None:
        path.write_text(content)
    with pytest.raises(runner.NotebookError, match=r"^05_broken\.ipynb: cannot be read as a notebook") as caught:
        runner.read_notebook(path)
    assert "\n" not in str(caught.value)


def test_a_broken_lesson_is_a_failed_lesson_named_by_its_file(tmp_path, monkeypatch):
    """Through the real `run_notebook`: the unreadable file never reaches a kernel."""
    broken = tmp_path / "02_broken.ipynb"
    broken.write_text('{"cells": [')
    monkeypatch.setattr(runner, "lesson_notebooks", lambda sel=(): [broken])
    results, out_dir = runner.run_lessons(runs_dir=tmp_path / "runs", keep_going=True)
    assert not results[0].passed and results[0].error.startswith("02_broken.ipynb: cannot be read as a notebook")
    assert json.loads((out_dir / "benchmark.json").read_text())[0]["lesson"] == "02_broken"


def test_write_makes_this_runs_record_the_shipped_reference_and_nothing_older(tmp_path):
    """Stored outputs and reference results come from one run (issue 36): `course run --write` copies the record a
    passing lesson saved in this run over its reference record, and leaves lessons without one (00, 09) alone."""
    import os
    import time

    reference, results = tmp_path / "reference", tmp_path / "runs" / "results"
    reference.mkdir()
    results.mkdir(parents=True)
    (reference / "02_x.json").write_text('{"old": 1}')
    (results / "02_x.json").write_text('{"new": 2}')
    (results / "09_y.json").write_text('{"new": 9}')
    since = time.time() - 5
    assert runner.store_reference("02_x", tmp_path / "runs", since, reference)
    assert json.loads((reference / "02_x.json").read_text()) == {"new": 2}
    assert not runner.store_reference("09_y", tmp_path / "runs", since, reference)
    assert not (reference / "09_y.json").exists()
    os.utime(results / "02_x.json", (since - 60, since - 60))  # saved by an earlier run: not this run's record
    (results / "02_x.json").write_text('{"stale": 0}')
    os.utime(results / "02_x.json", (since - 60, since - 60))
    assert not runner.store_reference("02_x", tmp_path / "runs", since, reference)
    assert json.loads((reference / "02_x.json").read_text()) == {"new": 2}
