"""A safety filter: a small classifier in front of the chat model that blocks unsafe requests.

Defence in depth: alignment lives in the model's weights, and fine-tuning can erase it (lesson 08). A separate
classifier on the *request* does not care what the chat model was fine-tuned on, so it keeps blocking after the
model is broken. Its cost is measured the usual way for a detector: **recall** (share of unsafe requests blocked)
and **precision** (share of blocked requests that were unsafe); every false positive is an over-refusal.

Used in lessons: 08
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from course_utils.classify import ClassifierConfig, classifier_from, predict_proba, train_classifier
from course_utils.data import DataError
from course_utils.errors import CourseError, check_rows


LIBRARY_CALLS: dict[str, list[str]] = {}  # all library calls go through course_utils.classify


class SafetyFilterError(CourseError, ValueError):
    """A threshold outside [0, 1] or no requests to score."""


def filter_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Classifier rows from safety requests: text = the request, label 1 = unsafe."""
    check_rows(rows, "filter_rows", keys=["prompt", "safe"], error=DataError)
    return [{"text": r["prompt"], "label": int(not r["safe"])} for r in rows]


@dataclass
class SafetyFilter:
    """A trained request classifier and the probability above which it blocks a request."""

    model: Any
    tokenizer: Any
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise SafetyFilterError(f"SafetyFilter: threshold must be in [0, 1], got {self.threshold}")

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        """Probability that each request is unsafe."""
        if len(prompts) == 0:
            raise SafetyFilterError("SafetyFilter.scores: no prompts given")
        return predict_proba(self.model, self.tokenizer, [{"text": p} for p in prompts])[:, 1]

    def blocks(self, prompts: Sequence[str]) -> list[bool]:
        """Which requests the filter blocks (their answer becomes a canned refusal)."""
        return [bool(s > self.threshold) for s in self.scores(prompts)]


def train_safety_filter(model, tokenizer, rows: Sequence[dict[str, Any]],
                        config: ClassifierConfig = ClassifierConfig(epochs=2.0), threshold: float = 0.5,
                        **training_overrides) -> SafetyFilter:
    """Fine-tune a classifier (the language model's body + a 2-way head) on requests labelled safe/unsafe."""
    clf = classifier_from(model, tokenizer, num_labels=2)
    train_classifier(clf, tokenizer, filter_rows(rows), config, **training_overrides)
    return SafetyFilter(clf, tokenizer, threshold)


def filter_metrics(safety_filter: SafetyFilter, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Precision, recall, and false-positive rate (safe requests blocked) of the filter on labelled requests."""
    labelled = filter_rows(rows)
    blocked = np.array(safety_filter.blocks([r["text"] for r in labelled]))
    unsafe = np.array([r["label"] == 1 for r in labelled])
    if unsafe.all() or not unsafe.any():
        raise SafetyFilterError("filter_metrics: need both safe and unsafe requests")
    tp = int((blocked & unsafe).sum())
    return {"precision": tp / max(int(blocked.sum()), 1), "recall": tp / int(unsafe.sum()),
            "false_positive_rate": float((blocked & ~unsafe).sum() / (~unsafe).sum())}
