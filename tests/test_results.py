import pandas as pd
import pytest

from course_utils.errors import CourseError
from course_utils.results import load_results, save_results, saved_lessons


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
