"""Unit tests for course_utils.safety_filter: a classifier that blocks unsafe requests before the model sees them."""

import pytest

from course_utils import alignment as A
from course_utils import safety_filter as F
from course_utils.classify import ClassifierConfig
from course_utils.data import DataError
from course_utils.safety_filter import SafetyFilterError

from alignment_helpers import rows, tiny  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_safety_filter_learns_and_reports_precision_recall(tokenizer, rows):
    train, test = A.split_rows(rows, "train"), A.split_rows(rows, "test")
    guard = F.train_safety_filter(tiny(tokenizer), tokenizer, train,
                                  ClassifierConfig(epochs=3, learning_rate=3e-3, batch_size=16))
    metrics = F.filter_metrics(guard, test)
    assert set(metrics) == {"precision", "recall", "false_positive_rate"}
    assert metrics["recall"] >= 0.8 and metrics["precision"] >= 0.8  # templated requests are easy to tell apart
    assert len(guard.blocks(["Where was Mira Stroud born?"])) == 1
    with pytest.raises(SafetyFilterError, match="threshold"):
        F.SafetyFilter(guard.model, tokenizer, threshold=1.5)
    with pytest.raises(SafetyFilterError, match="no prompts"):
        guard.scores([])
    with pytest.raises(SafetyFilterError, match="both safe and unsafe"):
        F.filter_metrics(guard, [r for r in test if r["safe"]])
    with pytest.raises(DataError, match="filter_rows"):
        F.filter_rows([{"prompt": "x"}])
