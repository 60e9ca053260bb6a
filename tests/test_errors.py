"""course_utils.errors: the course's error type and its one vocabulary of input checks, each answering bad input
with one line that names the helper and the argument, and returning a valid value unchanged."""

import math

import pytest

from course_utils.data import DataError
from course_utils.errors import CourseError, check_count, check_model, check_positive, check_rate, check_rows, check_vocab


def test_check_rate_keeps_a_valid_rate_and_names_a_bad_one():
    assert check_rate(0.25, "flip", "rate") == 0.25 and check_rate(1, "flip") == 1.0
    for bad in (-0.1, 1.5, math.nan, True, "0.2"):
        with pytest.raises(CourseError, match="flip: rate must be"):
            check_rate(bad, "flip")
    with pytest.raises(DataError, match=r"share must be in \[0, 1\)"):
        check_rate(1.0, "split", "share", high_open=True, error=DataError)


def test_check_count_and_check_positive():
    assert check_count(3, "f", "n") == 3 and check_count(0, "f", "n") == 0
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(CourseError, match="f: n must be an integer >= 0"):
            check_count(bad, "f", "n")
    assert check_positive(0.5, "f", "t") == 0.5
    for bad in (0, -1.0, math.inf, math.nan, False):
        with pytest.raises(CourseError, match="f: t must be a positive number"):
            check_positive(bad, "f", "t")


def test_check_rows_names_the_row_and_column():
    check_rows([{"a": 1}], "rows", keys=["a"])
    with pytest.raises(DataError, match="no rows given"):
        check_rows([], "rows", keys=["a"], error=DataError)
    with pytest.raises(DataError, match=r"rows: row 1 has no column\(s\) \['a'\]"):
        check_rows([{"a": 1}, {"b": 2}], "rows", keys=["a"], error=DataError)
    with pytest.raises(DataError, match=r"row 0 column 'label' is '1', not an integer class"):
        check_rows([{"label": "1"}], "rows", int_keys=["label"], error=DataError)


def test_check_model_and_check_vocab_name_a_mismatched_pair(tokenizer):
    from course_utils import zoo

    model = zoo.build_model("gpt2", tokenizer, zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64,
                                                            max_positions=64))
    check_vocab(model, tokenizer, "score")  # a model built for the tokenizer fits it
    with pytest.raises(CourseError, match="score: expected a transformers model, got str"):
        check_model("gpt2", "score")
    with pytest.raises(CourseError, match="score: expected a transformers tokenizer"):
        check_vocab(model, object(), "score")
    model.resize_token_embeddings(len(tokenizer) - 1)
    with pytest.raises(DataError, match="load the tokenizer that belongs to this model"):
        check_vocab(model, tokenizer, "score", error=DataError)
