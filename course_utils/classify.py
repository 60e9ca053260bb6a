"""Text classification with the course's decoder models (reviews -> sentiment), shared by several lessons.

A decoder-only model classifies by reading the hidden state of the *last real token* through a new linear head
(`GPT2ForSequenceClassification`, `Qwen2ForSequenceClassification`, `LlamaForSequenceClassification`). The head
finds that token via `config.pad_token_id`, so it must be set. Lessons 03 (data quality), 04 (noise) and 07 (bias)
all fine-tune such a classifier and compare accuracies, so the recipe lives here once.

Used in lessons: 07, 08
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from course_utils import zoo
from course_utils.config import CourseConfig, Limit
from course_utils.data import DataError
from course_utils.errors import check_count, check_positive, check_rows, check_vocab
from course_utils.text import encode, model_device, pad_batch
from course_utils.train import quiet, with_finite_guard


LIBRARY_CALLS = {
    "transformers:DataCollatorWithPadding": ["tokenizer"],
    "transformers:Trainer.predict": ["test_dataset"],
}


@dataclass
class ClassifierConfig(CourseConfig):
    """Fine-tuning settings for a small classifier; the defaults fit a ~1 M model on ~1 k reviews in seconds."""

    error = DataError
    LIMITS = {"num_labels": Limit(2, 10**6)}

    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_length: int = 64
    seed: int = 0
    num_labels: int = 2


def load_classifier(family: str, num_labels: int = 2, profile: str | None = None):
    """A shipped (or hub) base model of `family` with a fresh classification head, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification


    zoo.check_family(family)
    check_count(num_labels, "load_classifier", "num_labels", minimum=2, error=DataError)
    model, tok = zoo.load(family, profile=profile, model_class=AutoModelForSequenceClassification,
                          num_labels=num_labels)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def tokenize_labelled(tokenizer, rows: Sequence[dict[str, Any]], max_length: int = 64, text_key: str = "text",
                      label_key: str = "label", num_labels: int | None = None):
    """A `datasets.Dataset` with input_ids / attention_mask / labels from rows of text and integer label.

    Labels must be integers (a float or a string label is refused, not rounded); with `num_labels` they must
    also lie in [0, num_labels), since an out-of-range label would only fail deep inside the loss."""
    from datasets import Dataset


    check_rows(rows, "tokenize_labelled", keys=[text_key, label_key], error=DataError)
    data = []
    for i, row in enumerate(rows):
        if not isinstance(row[text_key], str):
            raise DataError(f"tokenize_labelled row {i}: {text_key!r} is {type(row[text_key]).__name__}, not str")
        label = row[label_key]
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            raise DataError(f"tokenize_labelled row {i}: {label_key!r} is {label!r}, not an integer class")
        if num_labels is not None and not 0 <= label < num_labels:
            raise DataError(f"tokenize_labelled row {i}: {label_key!r} is {label}, outside [0, {num_labels})")
        ids = encode(tokenizer, row[text_key], max_tokens=max_length)
        data.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(row[label_key])})
    return Dataset.from_list(data)


def train_classifier(model, tokenizer, train_rows: Sequence[dict[str, Any]], config: ClassifierConfig = ClassifierConfig(),
                     eval_rows: Sequence[dict[str, Any]] | None = None, callbacks: Sequence = (), **args_overrides):
    """Fine-tune `model` (all trainable parameters) on labelled rows with `Trainer`; returns the trainer."""
    from transformers import DataCollatorWithPadding, Trainer


    where = "train_classifier"
    check_vocab(model, tokenizer, where, error=DataError)
    check_positive(config.epochs, where, "config.epochs", error=DataError)
    check_positive(config.learning_rate, where, "config.learning_rate", error=DataError)
    check_count(config.batch_size, where, "config.batch_size", minimum=1, error=DataError)
    n_labels = getattr(model.config, "num_labels", config.num_labels)
    train_data = tokenize_labelled(tokenizer, train_rows, config.max_length, num_labels=n_labels)
    eval_data = tokenize_labelled(tokenizer, eval_rows, config.max_length, num_labels=n_labels) if eval_rows else None
    args = config.training_arguments(lr_scheduler_type="linear", warmup_steps=0.1, per_device_eval_batch_size=64,
                                     **args_overrides)
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=with_finite_guard(callbacks))
    quiet(trainer)  # no printed log dicts: each lesson shows its own table
    trainer.train()
    return trainer


@torch.no_grad()
def predict_proba(model, tokenizer, rows: Sequence[dict[str, Any]], max_length: int = 64,
                  batch_size: int = 64, text_key: str = "text") -> np.ndarray:
    """Class probabilities, shape (n_rows, num_labels), in row order."""

    check_rows(rows, "predict_proba", keys=[text_key], error=DataError)
    for i, r in enumerate(rows):
        if not isinstance(r[text_key], str):
            raise DataError(f"predict_proba row {i}: {text_key!r} is {type(r[text_key]).__name__}, not str")
    check_vocab(model, tokenizer, "predict_proba", error=DataError)
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(rows), batch_size):
        seqs = [encode(tokenizer, r[text_key], max_tokens=max_length) for r in rows[start:start + batch_size]]
        ids, mask = pad_batch(seqs, tokenizer.pad_token_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        out.append(torch.softmax(logits, -1).cpu().numpy())
    return np.concatenate(out)


def accuracy(model, tokenizer, rows: Sequence[dict[str, Any]], label_key: str = "label", **kwargs) -> float:
    """Share of rows whose most probable class is the row's label."""
    check_rows(rows, "accuracy", keys=[label_key], error=DataError)
    for i, r in enumerate(rows):
        if isinstance(r[label_key], bool) or not isinstance(r[label_key], numbers.Integral):
            raise DataError(f"accuracy row {i}: {label_key!r} is {r[label_key]!r}, not an integer class")
    preds = predict_proba(model, tokenizer, rows, **kwargs).argmax(-1)
    return float((preds == np.array([int(r[label_key]) for r in rows])).mean())


def out_of_fold_probs(rows: Sequence[dict[str, Any]], n_folds: int = 5, seed: int = 0, C: float | None = None,
                      Cs: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0), text_key: str = "text",
                      label_key: str = "label") -> np.ndarray:
    """Predicted class probabilities for every row from a model that never saw that row (K-fold).

    Cheap features on purpose: word counts and logistic regression train K times in well under a second, where
    K fine-tunes of the LLM would take minutes. Confident learning needs probabilities that are *out of fold*: a
    model that trained on a mislabelled row has memorised its wrong label and would not flag it. For the same
    reason the model must not be too flexible: with `C=None` the regularisation strength is chosen from `Cs` by
    out-of-fold log-loss on the given (noisy) labels, which needs no knowledge of which labels are wrong.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    check_rows(rows, "out_of_fold_probs", keys=[label_key], text_keys=[text_key], error=DataError)
    labels = np.array([int(r[label_key]) for r in rows])
    counts = np.bincount(labels)
    if len(counts) < 2 or counts.min() < n_folds:
        raise DataError(f"out_of_fold_probs: every class needs at least n_folds={n_folds} rows, "
                           f"got counts {counts.tolist()}")
    texts = [r[text_key] for r in rows]
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    best = None
    for c in ([C] if C is not None else Cs):
        model = make_pipeline(CountVectorizer(lowercase=True), LogisticRegression(C=c, max_iter=2000))
        probs = cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")
        loss = log_loss(labels, probs)
        if best is None or loss < best[0]:
            best = (loss, probs)
    return best[1]


def classifier_from(model, tokenizer, num_labels: int = 1):
    """The policy's body with a fresh classification head: a reward model (1 output) or a safety filter (2).

    Starting from the language model, not from scratch, gives the head features that already know the world.
    """
    from transformers import AutoModelForSequenceClassification

    import copy

    config = copy.deepcopy(model.config)
    config.num_labels = num_labels
    config.pad_token_id = tokenizer.pad_token_id
    clf = AutoModelForSequenceClassification.from_config(config)
    result = clf.load_state_dict(model.state_dict(), strict=False)
    if len(result.unexpected_keys) == len(model.state_dict()):
        raise DataError("classifier_from: no weight of the language model fits the classifier")
    return clf.to(model_device(model))
