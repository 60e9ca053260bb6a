"""`course report` renders what the lessons saved, flags failed checks, and names missing lessons."""

import json

import pytest

from course_utils.errors import CourseError
from course_utils.tools.report import build_report, latest_benchmarks, table_html, write_report
from course_utils.results import save_results


def _nbdir(tmp_path, names):
    d = tmp_path / "notebooks"
    d.mkdir()
    for n in names:
        (d / f"{n}.ipynb").write_text("{}")
    return d


def test_report_shows_tables_checks_and_missing_lessons(tmp_path):
    results = tmp_path / "results"
    save_results("01_a", [{"method": "lora", "acc": 0.91}], checks={"lora within 5 points": True},
                 echoes="Hu 2022", profile="cpu", directory=results)
    save_results("02_b", [{"method": "naive", "forgot": 0.2}], checks={"ewc keeps more": False},
                 profile="cpu", directory=results)
    runs = tmp_path / "runs"
    (runs / "run-20260101-000000").mkdir(parents=True)
    (runs / "run-20260101-000000" / "benchmark.json").write_text(json.dumps(
        [{"lesson": "01_a", "seconds": 42.0, "cpu_seconds": 40.0, "peak_memory_mb": 700.0, "passed": True}]))
    page = build_report(results, runs, _nbdir(tmp_path, ["01_a", "02_b", "03_c"]))
    assert "Hu 2022" in page and "0.91" in page and "42 s" in page
    assert "did NOT hold" in page and "ewc keeps more" in page
    assert "03_c" in page and "not run yet" in page


def test_later_benchmarks_win(tmp_path):
    for stamp, secs in [("run-20260101-000000", 10.0), ("run-20260102-000000", 20.0)]:
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "benchmark.json").write_text(json.dumps(
            [{"lesson": "01_a", "seconds": secs, "peak_memory_mb": 1.0, "passed": True}]))
    assert latest_benchmarks(tmp_path)["01_a"]["seconds"] == 20.0


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(CourseError, match="run the lessons first"):
        build_report(tmp_path / "empty", tmp_path, _nbdir(tmp_path, ["01_a"]))


def test_html_is_escaped_and_long_tables_are_cut():
    page = table_html([{"text": "<script>"}] * 50, max_rows=5)
    assert "<script>" not in page and "45 more rows" in page


def test_write_report(tmp_path):
    save_results("01_a", [{"x": 1}], profile="cpu", directory=tmp_path / "r")
    out = write_report(tmp_path / "page.html", tmp_path / "r", tmp_path)
    assert out.read_text().startswith("<!doctype html>")


def test_lesson_titles_figures_and_rounding_for_a_presentable_report():
    from course_utils.paths import NOTEBOOKS_DIR
    from course_utils.tools.report import _cell, lesson_title, main_figure

    assert lesson_title(NOTEBOOKS_DIR / "05_overfitting.ipynb").startswith("Lesson 05")
    assert main_figure(NOTEBOOKS_DIR / "05_overfitting.ipynb")  # a stored plot, embedded as base64 PNG
    assert _cell(0.0001018) == "<td>0.000102</td>" and _cell(0.604123) == "<td>0.604</td>"


def test_saved_results_keep_the_lessons_column_order(tmp_path, monkeypatch):
    import json

    from course_utils import results

    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(results, "results_dir", lambda: tmp_path / "results")
    path = results.save_results("99_x", [{"setting": "a", "accuracy": 0.5, "gap": 0.1}])
    assert list(json.loads(path.read_text())["table"][0]) == ["setting", "accuracy", "gap"]


def test_runtimes_are_written_from_the_benchmark_into_every_runtime_column():
    from course_utils.tools.coursemap import runtime_text, set_runtime_column

    text = "intro\n| # | lesson | runtime on 2 CPU cores | GPU |\n|---|---|---|---|\n| 05 | [x](y) | 1 s | 2 GB |\n\nend"
    out = set_runtime_column(text, "runtime on 2 CPU cores", {"05_overfitting": runtime_text(
        {"seconds": 69.4, "cpu_seconds": 120.2})})
    assert "| 05 | [x](y) | 69 s (120 s CPU) | 2 GB |" in out and out.startswith("intro") and out.endswith("end")
    guide = "| lesson | CPU runtime | x |\n|---|---|---|\n| 05 overfitting | 25 s | a |"
    assert "| 05 overfitting | 69 s (120 s CPU) | a |" in set_runtime_column(guide, "CPU runtime", {
        "05_overfitting": "69 s (120 s CPU)"})


def test_solutions_runtimes_go_to_their_own_column(tmp_path):
    from course_utils.tools.coursemap import update_course_map

    (tmp_path / "README.md").write_text("| # | runtime on 2 CPU cores | solutions |\n|---|---|---|\n| 05 | ? | ? |\n")
    update_course_map({"05_overfitting": {"seconds": 69.4, "cpu_seconds": 120.2},
                       "05_solutions": {"seconds": 20.1, "cpu_seconds": 30.0}}, tmp_path)
    assert "| 05 | 69 s (120 s CPU) | 20 s (30 s CPU) |" in (tmp_path / "README.md").read_text()
