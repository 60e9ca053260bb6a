"""course_utils.safety_filter: a small classifier in front of the chat model, judged by precision and recall."""

import pytest

from course_utils import safety_filter as F
from course_utils import world as W
from course_utils import zoo
from course_utils.classify import ClassifierConfig
from course_utils.data import DataError
from course_utils.safety_filter import SafetyFilterError

SPEC = zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64, max_positions=128)


@pytest.fixture(scope="module")
def rows():
    return W.safety_requests(W.make_world())


def tiny(tokenizer, family="gpt2", seed=0):
    return zoo.build_model(family, tokenizer, SPEC, seed=seed)


def test_safety_filter_learns_and_reports_precision_recall(tokenizer, rows):
    train, test = ([r for r in rows if r["split"] == split] for split in ("train", "test"))
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
