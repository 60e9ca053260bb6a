import json

import pandas as pd
import pytest

from course_utils.errors import CourseError
from course_utils.results import history, load_results, save_results, saved_lessons


def test_round_trip_dataframe(tmp_path):
    df = pd.DataFrame({"family": ["gpt2"], "acc": [0.9]}).set_index("family")
    save_results("99_demo", df, checks={"works": True}, echoes="nothing", directory=tmp_path, profile="cpu")
    rec = load_results("99_demo", directory=tmp_path)
    assert rec["table"] == [{"family": "gpt2", "acc": 0.9}]
    assert rec["checks"] == {"works": True} and rec["profile"] == "cpu"
    assert saved_lessons(tmp_path) == ["99_demo"]


def test_missing_and_empty(tmp_path):
    with pytest.raises(CourseError, match="run that lesson first"):
        load_results("04_noise_study", directory=tmp_path)
    with pytest.raises(CourseError, match="empty"):
        save_results("x", [], directory=tmp_path)


def test_save_results_archives_instead_of_overwriting(tmp_path):
    first = save_results("99_demo", [{"x": 1}], directory=tmp_path, profile="cpu")
    second = save_results("99_demo", [{"x": 2}], directory=tmp_path, profile="cpu")
    assert first == second == tmp_path / "99_demo.json"
    assert load_results("99_demo", directory=tmp_path)["table"] == [{"x": 2}]
    (old,) = history("99_demo", directory=tmp_path)
    assert json.loads(old.read_text())["table"] == [{"x": 1}]
    save_results("99_demo", [{"x": 3}], directory=tmp_path, profile="cpu")
    assert [json.loads(p.read_text())["table"][0]["x"] for p in history("99_demo", directory=tmp_path)] == [1, 2]
