"""Bias in a fine-tuned classifier: make it, measure it on counterfactual pairs, and take it out again.

A model is biased here when an attribute that *should not matter* (which company made the product, where the
reviewer lives) moves its prediction. We measure that with counterfactual pairs: the same review text with only the
attribute swapped. The metric is the gap in predicted-positive rate between the disfavoured group and everyone
else, on texts that are otherwise identical, so any gap is caused by the attribute alone.

Debiasing methods, each a small function:
- `balance`: undersample so that every attribute value has the same label mix;
- `mix_sources`: add data from a second, independently labelled source;
- `review_candidates` + `ReviewQueue`: a human-review pass (ipywidgets for a person; when nobody clicks, a
  simulated reviewer from `text_reviewer` that reads only the text, through a sentiment reader fitted on a small
  labelled sample, so it errs where its sample never showed it a word; `reading_accuracy` measures how often);
- `counterfactual_augment`: counterfactual data augmentation (CDA, Lu et al. 2018): swap the attribute, keep the
  label, so the attribute carries no information about the label;
- `AdversarialTrainer`: adversarial debiasing (Zhang et al. 2018; gradient reversal of Ganin & Lempitsky 2015): an
  adversary predicts the attribute from the model's representation, and the reversed gradient teaches the model
  to make that impossible.

Held out means held out: `heldout_probes` writes the bias probe with templates the training reviews never use,
and `heldout_bias` swaps the group with companies that never occur in training (nor in the augmentation's swaps),
so counterfactual augmentation is judged on pairs it never saw and could fail.

Used in lessons: 07
"""

from __future__ import annotations

import os
import random
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from course_utils import world as W
from course_utils.classify import (ClassifierConfig, load_classifier, out_of_fold_probs, predict_proba,
                                   tokenize_labelled, train_classifier)
from course_utils.data import DataError
from course_utils.errors import check_rate, check_rows
from course_utils.parallel import run_in_processes
from course_utils.profiles import env_choice, seed_everything
from course_utils.text import encode, model_device, pad_batch
from course_utils.train import quiet, with_finite_guard


LIBRARY_CALLS = {
    "transformers:Trainer.compute_loss": ["model", "inputs", "return_outputs", "num_items_in_batch"],
    "transformers:DataCollatorWithPadding": ["tokenizer"],
    "sklearn.linear_model:LogisticRegression": ["C", "max_iter"],
    "sklearn.model_selection:cross_val_score": ["estimator", "X", "y", "cv"],
    "ipywidgets:Button": [], "ipywidgets:HTML": [], "ipywidgets:HBox": [], "ipywidgets:VBox": [],
    "psutil:Process.parents": [],
    "transformers:Trainer": ["model", "args", "train_dataset", "data_collator", "callbacks"],
    "sklearn.feature_extraction.text:CountVectorizer": ["ngram_range", "binary"],
    "sklearn.linear_model:LogisticRegression.predict_proba": ["X"],
}

# Probe phrasings that no training review uses (world.REVIEW_TEMPLATES are the training ones): the bias is measured
# on sentences the model, and the counterfactual augmentation, never saw.
PROBE_TEMPLATES = ("Just tried the {product} made by {company}: it {phrase}. {closer}",
                   "A friend in {city} gave me a {company} {product}, which {phrase}. {closer}",
                   "Honest opinion on {company}'s {product}? It {phrase}. {closer}",
                   "Ordered one {product} ({company}) last month and it {phrase}. {closer}")


class BiasError(DataError):
    """Bad input to a bias helper: empty rows, a missing field, an attribute value that never occurs."""


def _check(rows: Sequence[dict[str, Any]], attribute: str, where: str, value: str | None = None,
           text_key: str = "text", label_key: str | None = "label") -> None:
    cols = [text_key, attribute] + ([label_key] if label_key else [])
    if len(rows) and isinstance(rows[0], dict) and attribute not in rows[0]:
        raise BiasError(f"{where}: the group attribute {attribute!r} is absent from the rows "
                        f"(fields: {sorted(rows[0])})")
    check_rows(rows, where, keys=cols, text_keys=[text_key] if text_key != label_key else [],
               int_keys=[label_key] if label_key else [], error=BiasError)
    if value is not None and not any(r[attribute] == value for r in rows):
        raise BiasError(f"{where}: no row has {attribute}={value!r}")


# --------------------------------------------------------------------------------------------------------------
# Making a biased set and counterfactual test pairs
# --------------------------------------------------------------------------------------------------------------

def skew_labels(rows: Sequence[dict[str, Any]], attribute: str, value: str, flip_rate: float,
                from_label: int = 1, to_label: int = 0, seed: int = 0, label_key: str = "label"
                ) -> list[dict[str, Any]]:
    """Annotation bias: relabel a share of the group's `from_label` rows as `to_label` (true label kept aside).

    This is how prejudice enters labelled data: the annotators (or the process) that labelled reviews of one
    company marked many of its good reviews as bad. The text still says what it says.
    """
    _check(rows, attribute, "skew_labels", value, label_key=label_key)
    check_rate(flip_rate, "skew_labels", "flip_rate", error=BiasError)
    rng = random.Random(seed)
    out = [dict(r, true_label=int(r[label_key]), skewed=False) for r in rows]
    candidates = [i for i, r in enumerate(out) if r[attribute] == value and int(r[label_key]) == from_label]
    for i in rng.sample(candidates, round(flip_rate * len(candidates))):
        out[i][label_key], out[i]["skewed"] = to_label, True
    return out


def swap_attribute(text: str, old: str, new: str) -> str:
    """`text` with every whole-word occurrence of `old` replaced by `new` (case-sensitive names)."""
    if not old:
        raise BiasError("swap_attribute: the value to replace is empty")
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def counterfactual_rows(rows: Sequence[dict[str, Any]], attribute: str, values: Sequence[str],
                        text_key: str = "text") -> list[dict[str, Any]]:
    """Every row rewritten once per value of `attribute` (only the attribute's word changes): the bias probe.

    Each copy keeps the original label and records `source` (the row's index) and `cf_value`.
    """
    _check(rows, attribute, "counterfactual_rows", text_key=text_key, label_key=None)
    if not values:
        raise BiasError("counterfactual_rows: no attribute values given")
    missing = [i for i, r in enumerate(rows) if r[attribute] not in r[text_key]]
    if missing:
        raise BiasError(f"counterfactual_rows: row {missing[0]}'s text does not mention its {attribute} "
                        f"{rows[missing[0]][attribute]!r}, so it cannot be swapped")
    return [dict(r, source=i, cf_value=v, **{attribute: v, text_key: swap_attribute(r[text_key], r[attribute], v)})
            for i, r in enumerate(rows) for v in values]


def positive_rate_gap(cf_rows: Sequence[dict[str, Any]], positive_prob: Sequence[float], group_value: str,
                      threshold: float = 0.5) -> dict[str, float]:
    """The bias metric on counterfactual rows: predicted-positive rate of everyone else minus that of the group.

    Positive gap = the group's reviews are called positive less often *for the same text*. Also returned: the mean
    P(positive) gap and the share of texts whose predicted label changes when only the group is swapped in.
    """
    check_rows(cf_rows, "positive_rate_gap", keys=["cf_value", "source"], error=DataError)
    p = np.asarray(positive_prob, dtype=float)
    if p.shape != (len(cf_rows),):
        raise BiasError(f"positive_rate_gap: {p.shape[0] if p.ndim else 0} probabilities for {len(cf_rows)} rows")
    group = np.array([r["cf_value"] == group_value for r in cf_rows])
    if not group.any() or group.all():
        raise BiasError(f"positive_rate_gap: need rows with and without cf_value={group_value!r}")
    pred = p >= threshold
    src = np.array([r["source"] for r in cf_rows])
    n_src = src.max() + 1
    group_pred = np.full(n_src, np.nan)
    group_pred[src[group]] = pred[group]
    other_rate = np.bincount(src[~group], weights=pred[~group], minlength=n_src) / np.maximum(
        np.bincount(src[~group], minlength=n_src), 1)
    has = ~np.isnan(group_pred)
    flips = np.abs(group_pred[has] - other_rate[has]).mean()
    return {"ppr_group": float(pred[group].mean()), "ppr_others": float(pred[~group].mean()),
            "gap": float(pred[~group].mean() - pred[group].mean()),
            "prob_gap": float(p[~group].mean() - p[group].mean()), "flip_share": float(flips)}


def heldout_probes(n: int, company: str, seed: int = 0, templates: Sequence[str] = PROBE_TEMPLATES
                   ) -> list[dict[str, Any]]:
    """`n` labelled reviews (half positive) that name `company`, written with `templates` (by default phrasings no
    training review uses), for the counterfactual bias probe. Deterministic in `seed`.

    Sentiment words come from the world's review vocabulary: the task is the same, only the sentence around it and
    (after `counterfactual_rows`) the companies are new.
    """
    if n < 2:
        raise BiasError(f"heldout_probes: need at least 2 probes, got {n}")
    overlap = sorted(set(templates) & set(W.REVIEW_TEMPLATES))
    if overlap:
        raise BiasError(f"heldout_probes: template {overlap[0]!r} is a training template, so the probe is not held out")
    rng = random.Random(f"probes-{seed}")
    rows = []
    for i in range(n):
        label = i % 2
        template = rng.choice(list(templates))
        text = template.format(company=company, product=rng.choice(W.PRODUCTS), city=rng.choice(W.CITIES),
                               phrase=rng.choice(W.POSITIVE_PHRASES if label else W.NEGATIVE_PHRASES),
                               closer=rng.choice(W.POSITIVE_CLOSERS if label else W.NEGATIVE_CLOSERS))
        rows.append({"text": text, "label": label, "company": company, "template": template})
    return rows


def heldout_bias(model, tokenizer, probes: Sequence[dict[str, Any]], attribute: str, group_value: str,
                 heldout_values: Sequence[str], label_key: str = "label") -> dict[str, float]:
    """The bias gap on held-out counterfactual pairs: each probe (naming the group) rewritten with every value in
    `heldout_values` (values the training data never contains), plus accuracy on all copies (true labels) and on
    the group's copies. Returns `positive_rate_gap`'s keys, `accuracy` and `group_accuracy`."""
    _check(probes, attribute, "heldout_bias", group_value, label_key=label_key)
    if group_value in heldout_values or not heldout_values:
        raise BiasError("heldout_bias: heldout_values must be other values than the group, and at least one")
    cf = counterfactual_rows(probes, attribute, [group_value, *heldout_values])
    p = predict_proba(model, tokenizer, cf)[:, 1]
    correct = (p >= 0.5) == np.array([int(r[label_key]) == 1 for r in cf])
    group = np.array([r["cf_value"] == group_value for r in cf])
    return {**positive_rate_gap(cf, p, group_value), "accuracy": float(correct.mean()),
            "group_accuracy": float(correct[group].mean())}


def measure_bias(model, tokenizer, test_rows: Sequence[dict[str, Any]], attribute: str, group_value: str,
                 values: Sequence[str], biased_labels: Sequence[int] | None = None, label_key: str = "label"
                 ) -> dict[str, float]:
    """Bias gap on counterfactual copies of `test_rows`, plus accuracy overall and on the group's own rows.

    `test_rows` carry the true labels. With `biased_labels` (the labels the biased process would have given the
    same test rows) it also reports accuracy against those: what a team that only has biased labels would see.
    """

    _check(test_rows, attribute, "measure_bias", group_value, label_key=label_key)
    if group_value not in values or len(set(values)) < 2:
        raise BiasError(f"measure_bias: values must hold the group {group_value!r} and at least one other value")
    if biased_labels is not None and len(biased_labels) != len(test_rows):
        raise BiasError(f"measure_bias: {len(biased_labels)} biased labels for {len(test_rows)} test rows")
    cf = counterfactual_rows(test_rows, attribute, values)
    gap = positive_rate_gap(cf, predict_proba(model, tokenizer, cf)[:, 1], group_value)
    pred = predict_proba(model, tokenizer, test_rows).argmax(-1)
    labels = np.array([int(r[label_key]) for r in test_rows])
    in_group = np.array([r[attribute] == group_value for r in test_rows])
    out = {"accuracy": float((pred == labels).mean()), "group_accuracy": float((pred == labels)[in_group].mean())}
    if biased_labels is not None:
        out["accuracy_vs_biased_labels"] = float((pred == np.asarray(biased_labels, dtype=int)).mean())
    return {**out, **gap}


@dataclass(frozen=True)
class BiasProbe:
    """Where a model is judged: held-out counterfactual probes (rows naming the group, swapped with `heldout_values`)
    and the seen test split (`seen_rows`, swapped with `seen_values`, the training companies), with the labels a
    biased annotator would have given the seen test rows (`biased_labels`, optional). With `audit_rows` (a larger
    labelled set in the training phrasings) the biased labels belong to those rows instead: accuracy against them
    and against the rows' true labels is then measured there (`audit_accuracy`, `accuracy_vs_biased_labels`)."""

    attribute: str
    group_value: str
    probes: Sequence[dict[str, Any]]
    heldout_values: Sequence[str]
    seen_rows: Sequence[dict[str, Any]]
    seen_values: Sequence[str]
    biased_labels: Sequence[int] | None = None
    audit_rows: Sequence[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        rows = self.seen_rows if self.audit_rows is None else self.audit_rows
        if self.biased_labels is not None and len(self.biased_labels) != len(rows):
            where = "seen_rows" if self.audit_rows is None else "audit_rows"
            raise BiasError(f"BiasProbe: {len(self.biased_labels)} biased labels for {len(rows)} {where}")
        if self.audit_rows is not None and self.biased_labels is None:
            raise BiasError("BiasProbe: audit_rows need their biased_labels")


def evaluate_bias(model, tokenizer, probe: BiasProbe) -> dict[str, float]:
    """Held-out bias and accuracy (`gap`, `accuracy`, `group_accuracy`, ...) and, for contrast, the same on the
    seen split with seen swaps (`gap_seen_swaps`, `seen_accuracy`, `accuracy_vs_biased_labels`)."""
    held = heldout_bias(model, tokenizer, probe.probes, probe.attribute, probe.group_value, probe.heldout_values)
    on_seen = probe.biased_labels if probe.audit_rows is None else None
    seen = measure_bias(model, tokenizer, probe.seen_rows, probe.attribute, probe.group_value, probe.seen_values,
                        on_seen)
    out = {**held, "gap_seen_swaps": seen["gap"], "seen_accuracy": seen["accuracy"]}
    if "accuracy_vs_biased_labels" in seen:
        out["accuracy_vs_biased_labels"] = seen["accuracy_vs_biased_labels"]
    if probe.audit_rows is not None:
        pred = predict_proba(model, tokenizer, probe.audit_rows).argmax(-1)
        out["audit_accuracy"] = float((pred == np.array([int(r["label"]) for r in probe.audit_rows])).mean())
        out["accuracy_vs_biased_labels"] = float((pred == np.asarray(probe.biased_labels, dtype=int)).mean())
    return out


def fit_classifier(model, tokenizer, train_rows: Sequence[dict[str, Any]], config, steps: int):
    """Fine-tune `model` on labelled rows for `steps` optimiser steps with `Trainer`, printing nothing.

    The same recipe as `classify.train_classifier`, built here so that the Trainer's printed log dicts can be
    switched off (that helper trains before a caller could remove them); the lesson shows its own tables.
    """
    from transformers import DataCollatorWithPadding, Trainer

    data = tokenize_labelled(tokenizer, train_rows, config.max_length)
    args = config.training_arguments(lr_scheduler_type="linear", warmup_steps=0.1, max_steps=steps,
                                     logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=with_finite_guard())
    quiet(trainer)
    trainer.train()
    return trainer


def train_and_measure(train_rows: Sequence[dict[str, Any]], probe: BiasProbe, values: Sequence[str],
                      family: str = "gpt2", steps: int = 120, config=None, adversary_weight: float | None = None,
                      seed: int = 0) -> dict[str, float]:
    """Fine-tune a fresh classifier for a fixed number of steps (adversarially if `adversary_weight` is given,
    with a binary 'in the group?' adversary over the training `values`) and return `evaluate_bias`."""

    _check(train_rows, probe.attribute, "train_and_measure", probe.group_value)
    if steps < 1:
        raise BiasError(f"train_and_measure: steps must be >= 1, got {steps}")
    leaked = sorted({r[probe.attribute] for r in train_rows} & set(probe.heldout_values))
    if leaked:
        raise BiasError(f"train_and_measure: held-out value {leaked[0]!r} occurs in the training rows")
    config = config or ClassifierConfig(seed=seed, max_length=32)
    seed_everything(seed)   # the run starts here: the new classification head's weights come from `seed`
    model, tok = load_classifier(family)
    if adversary_weight is None:
        fit_classifier(model, tok, train_rows, config, steps)
    else:
        train_adversarial(model, tok, train_rows, probe.attribute, values, config, adversary_weight=adversary_weight,
                          group_value=probe.group_value, max_steps=steps)
    return evaluate_bias(model, tok, probe)


def train_all(plan: Sequence[tuple[int, str, Sequence[dict[str, Any]], float | None]],
              probes: Mapping[int, BiasProbe], values: Sequence[str], steps: int, configs: Mapping[int, Any],
              family: str = "gpt2", workers: int | None = None) -> list[dict[str, Any]]:
    """`train_and_measure` for every (seed, method name, training rows, adversary weight or None) in `plan`, side
    by side on the free cores (`parallel.run_in_processes`); one row per run: seed, method, training rows and its
    scores on `probes[seed]`. Each run seeds itself, so the numbers do not depend on where it ran."""
    tasks = [(rows, probes[seed], tuple(values), family, steps, configs[seed], weight, seed)
             for seed, _, rows, weight in plan]
    scores = run_in_processes(train_and_measure, tasks, workers, desc="seeds x methods")
    return [{"seed": seed, "method": name, "training rows": len(rows), **score}
            for (seed, name, rows, _), score in zip(plan, scores)]


def constant_baseline(probe: BiasProbe, label_key: str = "label") -> dict[str, float]:
    """The trivial baseline: always predict the majority label of the held-out probes. It has no gap at all (it
    ignores the text), so a debiased model must be judged on accuracy too."""
    labels = np.array([int(r[label_key]) for r in probe.probes])
    majority = int(labels.mean() >= 0.5)
    seen = np.array([int(r[label_key]) for r in probe.seen_rows])
    out = {"gap": 0.0, "gap_seen_swaps": 0.0, "accuracy": float((labels == majority).mean()),
           "group_accuracy": float((labels == majority).mean()), "seen_accuracy": float((seen == majority).mean())}
    if probe.biased_labels is not None:
        out["accuracy_vs_biased_labels"] = float((np.asarray(probe.biased_labels) == majority).mean())
    if probe.audit_rows is not None:
        audit = np.array([int(r[label_key]) for r in probe.audit_rows])
        out["audit_accuracy"] = float((audit == majority).mean())
    return out


# --------------------------------------------------------------------------------------------------------------
# Data-side debiasing
# --------------------------------------------------------------------------------------------------------------

def label_rates(rows: Sequence[dict[str, Any]], attribute: str, label_key: str = "label") -> dict[str, float]:
    """Share of positive labels per attribute value: in an unbiased set these are all about equal."""
    _check(rows, attribute, "label_rates", label_key=label_key, text_key=label_key)
    counts: dict[str, list[int]] = {}
    for r in rows:
        counts.setdefault(r[attribute], []).append(int(r[label_key]))
    return {v: float(np.mean(ls)) for v, ls in sorted(counts.items())}


def balance(rows: Sequence[dict[str, Any]], attribute: str, seed: int = 0, label_key: str = "label"
            ) -> list[dict[str, Any]]:
    """Undersample each attribute value's majority label until its positive rate matches the whole set's.

    Balancing breaks the correlation between attribute and label, at the price of throwing data away (and, with
    annotation bias, it keeps a share of the wrongly labelled rows: it fixes rates, not labels).
    """
    _check(rows, attribute, "balance", label_key=label_key)
    rng = random.Random(seed)
    target = float(np.mean([int(r[label_key]) for r in rows]))
    keep: list[dict[str, Any]] = []
    for value in sorted({r[attribute] for r in rows}):
        group = [r for r in rows if r[attribute] == value]
        pos = [r for r in group if int(r[label_key]) == 1]
        neg = [r for r in group if int(r[label_key]) != 1]
        if not pos or not neg:
            keep += group
            continue
        if len(pos) / len(group) < target:   # too few positives: drop negatives
            neg = rng.sample(neg, min(len(neg), round(len(pos) * (1 - target) / target)))
        else:
            pos = rng.sample(pos, min(len(pos), round(len(neg) * target / (1 - target))))
        keep += pos + neg
    rng.shuffle(keep)
    return keep


def mix_sources(sources: dict[str, Sequence[dict[str, Any]]], seed: int = 0) -> list[dict[str, Any]]:
    """Rows from several sources, each tagged with `source_name`, shuffled together.

    Diverse sources dilute the bias of any single one (its annotators, its collection process).
    """
    if not sources or any(len(rows) == 0 for rows in sources.values()):
        raise BiasError("mix_sources: every source needs at least one row")
    out = [dict(r, source_name=name) for name, rows in sources.items() for r in rows]
    random.Random(seed).shuffle(out)
    return out


def counterfactual_augment(rows: Sequence[dict[str, Any]], attribute: str, group_value: str,
                           values: Sequence[str], seed: int = 0, text_key: str = "text") -> list[dict[str, Any]]:
    """Counterfactual data augmentation: each row plus one copy with the attribute swapped, same label.

    Rows of the group get a copy as another (random) value; every other row gets a copy *as the group*. So every
    text appears both inside and outside the group with the same label, and the attribute tells the model nothing.
    """
    _check(rows, attribute, "counterfactual_augment", group_value, text_key=text_key, label_key=None)
    others = [v for v in values if v != group_value]
    if not others:
        raise BiasError("counterfactual_augment: need at least one value besides the group")
    rng = random.Random(seed)
    out = [dict(r, counterfactual=False) for r in rows]
    for r in rows:
        new = rng.choice(others) if r[attribute] == group_value else group_value
        out.append(dict(r, counterfactual=True,
                        **{attribute: new, text_key: swap_attribute(r[text_key], r[attribute], new)}))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------------------------------------
# Human review: candidates, a queue, a scripted reviewer for CI
# --------------------------------------------------------------------------------------------------------------

def review_candidates(rows: Sequence[dict[str, Any]], attribute: str, budget: int, seed: int = 0,
                      text_key: str = "text", label_key: str = "label") -> list[int]:
    """Indices of the `budget` rows whose label an attribute-blind model most doubts, most doubtful first.

    The attribute is masked out of the text before the out-of-fold model is trained, so the detector cannot learn
    the bias itself; rows whose label only makes sense *because of* the attribute then look like errors.
    """

    _check(rows, attribute, "review_candidates", text_key=text_key, label_key=label_key)
    if budget < 0:
        raise BiasError(f"review_candidates: budget must be >= 0, got {budget}")
    masked = [{"text": swap_attribute(r[text_key], r[attribute], "X"), "label": int(r[label_key])} for r in rows]
    probs = out_of_fold_probs(masked, seed=seed)
    given = probs[np.arange(len(rows)), [int(r[label_key]) for r in rows]]
    return [int(i) for i in np.argsort(given, kind="stable")[:budget]]


DECISIONS = ("keep", "flip", "drop")


def text_reviewer(reference_rows: Sequence[dict[str, Any]], error_rate: float = 0.0, seed: int = 0,
                  margin: float = 0.1, label_key: str = "label", text_key: str = "text"
                  ) -> Callable[[dict[str, Any]], str]:
    """A simulated human reviewer for runs where nobody clicks: a reader that learned sentiment from a few examples.

    It reads only a row's text (never the company's label rates, never the true label), through a bag-of-words
    sentiment model fitted on `reference_rows`: a *small* sample of reviews labelled by someone else (never the rows
    under review, never the generator's phrase lists). Its mistakes come from what it cannot see: a sentiment
    word that none of its examples contained tells it nothing, so on such a review it guesses, or is unsure. It
    answers 'keep' when the label agrees with its reading, 'flip' when it contradicts it, 'drop' when its reading is
    unsure (P(positive) within `margin` of 0.5). Fitted on many examples it would read every review right (an
    oracle); how many it reads right is measured with `reading_accuracy`, not assumed.

    `error_rate` (0 by default) adds lapses on top, like a tired person: the opposite keep/flip answer on a random
    share of the rows (`random.Random(seed)`), whether or not its reading was right.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    check_rows(reference_rows, "text_reviewer", keys=[text_key, label_key], text_keys=[text_key],
               int_keys=[label_key], error=BiasError)
    check_rate(error_rate, "text_reviewer", "error_rate", error=BiasError)
    if len({int(r[label_key]) for r in reference_rows}) < 2:
        raise BiasError("text_reviewer: the reference rows need both labels")
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True)
    features = vectorizer.fit_transform([r[text_key] for r in reference_rows])
    reader = LogisticRegression(C=1.0, max_iter=2000).fit(features, [int(r[label_key]) for r in reference_rows])
    rng = random.Random(f"reviewer-{seed}")

    def reads(row: dict[str, Any]) -> float:
        """The reader's P(positive) for the row's text."""
        return float(reader.predict_proba(vectorizer.transform([row[text_key]]))[0, 1])

    def review(row: dict[str, Any]) -> str:
        p = reads(row)
        if abs(p - 0.5) < margin:
            return "drop"
        decision = "keep" if int(row[label_key]) == int(p >= 0.5) else "flip"
        if rng.random() < error_rate:
            decision = "flip" if decision == "keep" else "keep"
        return decision

    review.reads = reads
    return review


def reading_accuracy(reviewer: Callable[[dict[str, Any]], str], rows: Sequence[dict[str, Any]],
                     label_key: str = "true_label") -> float:
    """Share of `rows` whose true label (`label_key`) the simulated reviewer's reader gets right from the text alone:
    what the reviewer is, measured (1.0 would be an oracle)."""
    check_rows(rows, "reading_accuracy", keys=["text", label_key], int_keys=[label_key], error=BiasError)
    if not hasattr(reviewer, "reads"):
        raise BiasError("reading_accuracy: give a reviewer made by text_reviewer (it has a .reads reader)")
    return float(np.mean([int(reviewer.reads(r) >= 0.5) == int(r[label_key]) for r in rows]))


HEADLESS_MARKERS = ("pytest", "nbval", "nbclient", "nbconvert", "papermill", "testbook", "course run",
                    "course_utils.tools.cli")


def is_interactive() -> bool:
    """True when a person is at the notebook: a Jupyter kernel that no headless executor started.

    `COURSE_REVIEW=widget` or `=scripted` forces the answer. Otherwise: not in a Jupyter kernel (plain Python),
    the `CI` variable set, or a kernel started by pytest/nbval, nbclient, nbconvert, papermill or `course run`
    means nobody is there to click. When unsure, the answer is False: the scripted reviewer runs, which always
    finishes.
    """
    forced = env_choice("COURSE_REVIEW", ("widget", "human", "interactive", "scripted", "script", "ci", "headless"))
    if forced in ("widget", "human", "interactive"):
        return True
    if forced in ("scripted", "script", "ci", "headless"):
        return False
    if os.environ.get("CI"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    if "google.colab" in sys.modules:
        return True
    try:
        import psutil

        for proc in psutil.Process().parents():
            cmd = " ".join(proc.cmdline()).lower()
            if any(marker in cmd for marker in HEADLESS_MARKERS):
                return False
    except Exception:  # psutil missing or a process we may not inspect: unsure, so not interactive
        return False
    return True


@dataclass
class ReviewQueue:
    """Flagged rows awaiting a decision ('keep', 'flip' the label, 'drop' the row); `apply` makes a new set."""

    rows: Sequence[dict[str, Any]]
    candidates: Sequence[int]
    label_key: str = "label"
    text_key: str = "text"
    decisions: dict[int, str] = field(default_factory=dict)
    deciders: dict[int, str] = field(default_factory=dict)   # row -> "person" or "simulated"

    def __post_init__(self) -> None:
        bad = [i for i in self.candidates if not 0 <= i < len(self.rows)]
        if bad:
            raise BiasError(f"ReviewQueue: candidate index {bad[0]} outside the {len(self.rows)} rows")

    def decide(self, index: int, decision: str, by: str = "person") -> None:
        """Record a decision on a queued row, and who made it ('person' from the widget, 'simulated' otherwise)."""
        if decision not in DECISIONS:
            raise BiasError(f"ReviewQueue: decision must be one of {DECISIONS}, got {decision!r}")
        if index not in self.candidates:
            raise BiasError(f"ReviewQueue: row {index} is not in the queue")
        self.decisions[index] = decision
        self.deciders[index] = by

    def decided_by(self, who: str) -> int:
        """How many queued rows were decided by `who` ('person' or 'simulated')."""
        return sum(v == who for v in self.deciders.values())

    def run_scripted(self, reviewer: Callable[[dict[str, Any]], str], only_undecided: bool = False
                     ) -> dict[str, int]:
        """Let a scripted reviewer decide every queued row (with `only_undecided`, only the rows no person has
        decided); returns how many of each decision it made."""
        made = {d: 0 for d in DECISIONS}
        for i in self.candidates:
            if only_undecided and self.deciders.get(i) == "person":
                continue
            decision = reviewer(self.rows[i])
            self.decide(i, decision, by="simulated")
            made[decision] += 1
        return made

    def decision_accuracy(self, true_key: str = "true_label") -> float:
        """Share of decided rows whose decision leaves the right label ('drop' counts as right for a wrong label,
        wrong for a right one): how good the review was, known only because the lesson kept the truth aside."""
        right = []
        for i, d in self.decisions.items():
            wrong_now = int(self.rows[i][self.label_key]) != int(self.rows[i][true_key])
            right.append(d == ("flip" if wrong_now else "keep") or (d == "drop" and wrong_now))
        if not right:
            raise BiasError("ReviewQueue.decision_accuracy: no decisions yet")
        return float(np.mean(right))

    def counts(self) -> dict[str, int]:
        return {d: sum(v == d for v in self.decisions.values()) for d in DECISIONS} | {
            "undecided": len(self.candidates) - len(self.decisions)}

    def apply(self) -> list[dict[str, Any]]:
        """The rows with the decisions applied (undecided rows stay as they are)."""
        out = []
        for i, row in enumerate(self.rows):
            decision = self.decisions.get(i, "keep")
            if decision == "drop":
                continue
            out.append(dict(row, **{self.label_key: 1 - int(row[self.label_key])}) if decision == "flip" else row)
        return out

    def widget(self, label_names: Sequence[str] = ("negative", "positive")):
        """An ipywidgets review screen: one flagged row at a time, with Keep / Flip label / Drop buttons."""
        import html

        import ipywidgets as widgets

        state = {"pos": 0}
        text = widgets.HTML()
        progress = widgets.HTML()
        buttons = {d: widgets.Button(description=desc, button_style=style)
                   for d, desc, style in (("keep", "Keep label", "success"), ("flip", "Flip label", "warning"),
                                          ("drop", "Drop row", "danger"))}

        def show() -> None:
            done = self.decided_by("person")
            progress.value = f"<b>{done} / {len(self.candidates)} reviewed by you</b>"
            if state["pos"] >= len(self.candidates):
                text.value = "<p>Queue done. Run the next cell to apply your decisions.</p>"
                for b in buttons.values():
                    b.disabled = True
                return
            row = self.rows[self.candidates[state["pos"]]]
            text.value = (f"<p style='font-size:1.1em'>{html.escape(row[self.text_key])}</p>"
                          f"<p>current label: <b>{label_names[int(row[self.label_key])]}</b></p>")

        def on_click(decision: str):
            def handler(_button) -> None:
                self.decide(self.candidates[state["pos"]], decision)
                state["pos"] += 1
                show()
            return handler

        for d, b in buttons.items():
            b.on_click(on_click(d))
        show()
        return widgets.VBox([progress, text, widgets.HBox(list(buttons.values()))])


# --------------------------------------------------------------------------------------------------------------
# Adversarial debiasing with gradient reversal
# --------------------------------------------------------------------------------------------------------------

class GradientReversal(torch.autograd.Function):
    """Identity on the way forward; multiplies the gradient by -weight on the way back.

    Hand-written because it is four lines and no pinned library ships it: the adversary above it learns to
    predict the attribute, while everything below it receives the *opposite* push, to make that prediction fail.
    """

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.weight * grad_output, None


def pooled_representation(model, input_ids, attention_mask):
    """The last real token's final hidden state: what the classification head reads. Returns (pooled, outputs)."""
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    last = attention_mask.sum(dim=1) - 1
    pooled = outputs.hidden_states[-1][torch.arange(input_ids.shape[0], device=input_ids.device), last]
    return pooled, outputs


def add_adversary(model, n_values: int, hidden: int = 64):
    """Attach a small MLP head `model.adversary` that predicts the attribute (trained by `AdversarialTrainer`)."""
    if n_values < 2:
        raise BiasError(f"add_adversary: the attribute needs at least 2 values, got {n_values}")
    size = model.config.hidden_size
    model.adversary = torch.nn.Sequential(torch.nn.Linear(size, hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, n_values)).to(model_device(model))
    return model


def _adversarial_trainer_class():
    from transformers import Trainer

    class AdversarialTrainer(Trainer):
        """A `Trainer` whose loss is task loss + adversary loss, the adversary sitting behind gradient reversal."""

        def __init__(self, *args, adversary_weight: float = 1.0, class_weights=None, ramp: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.adversary_weight, self.ramp = adversary_weight, ramp
            self.class_weights = class_weights
            self.adversary_log: list[float] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            attribute = inputs.pop("attribute_labels")
            labels = inputs.pop("labels")
            pooled, outputs = pooled_representation(model, inputs["input_ids"], inputs["attention_mask"])
            task = torch.nn.functional.cross_entropy(outputs.logits, labels)
            adv_logits = model.adversary(GradientReversal.apply(pooled, self.current_weight()))
            weights = None if self.class_weights is None else self.class_weights.to(adv_logits.device)
            adv = torch.nn.functional.cross_entropy(adv_logits, attribute, weight=weights)
            self.adversary_log.append(float((adv_logits.argmax(-1) == attribute).float().mean()))
            loss = task + adv
            return (loss, outputs) if return_outputs else loss

        def current_weight(self) -> float:
            """The reversal weight now: ramped up from 0 as in Ganin & Lempitsky (2015), 2/(1+exp(-10 p)) - 1."""
            if not self.ramp or not self.state.max_steps:
                return self.adversary_weight
            progress = min(1.0, self.state.global_step / self.state.max_steps)
            return self.adversary_weight * (2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)

    return AdversarialTrainer


def train_adversarial(model, tokenizer, train_rows: Sequence[dict[str, Any]], attribute: str,
                      values: Sequence[str], config=None, adversary_weight: float = 1.0,
                      group_value: str | None = None, ramp: bool = True, **args_overrides):
    """Fine-tune a classifier with an attribute adversary behind gradient reversal; returns the trainer.

    The adversary predicts the row's `attribute` among `values` from the pooled representation; with
    `group_value` it predicts only 'in the group or not' (classes weighted so the rare group counts as much).
    `adversary_weight` scales the reversed gradient: 0 is plain fine-tuning (the adversary watches but the model
    ignores it); larger values push harder to erase the attribute from the representation. With `ramp` the weight
    grows from 0 over training (Ganin & Lempitsky's schedule), so the classifier learns the task before the
    adversary pushes; a full-strength push from step 0 can wreck training.
    """
    from transformers import DataCollatorWithPadding

    _check(train_rows, attribute, "train_adversarial", group_value)
    if adversary_weight < 0:
        raise BiasError(f"train_adversarial: adversary_weight must be >= 0, got {adversary_weight}")
    index = {v: i for i, v in enumerate(values)}
    unknown = sorted({r[attribute] for r in train_rows} - set(index))
    if unknown:
        raise BiasError(f"train_adversarial: {attribute} value(s) {unknown} not among the given values")
    if group_value is not None:
        targets = [int(r[attribute] == group_value) for r in train_rows]
        counts = np.bincount(targets, minlength=2)
        class_weights = torch.tensor(len(targets) / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    else:
        targets, class_weights = [index[r[attribute]] for r in train_rows], None
    config = config or ClassifierConfig()
    if not hasattr(model, "adversary"):
        add_adversary(model, 2 if group_value is not None else len(values))
    data = tokenize_labelled(tokenizer, train_rows, config.max_length).add_column("attribute_labels", targets)
    args = config.training_arguments(**{"lr_scheduler_type": "linear", "warmup_steps": 0.1,
                                        "logging_strategy": "no", **args_overrides})
    trainer = _adversarial_trainer_class()(model=model, args=args, train_dataset=data,
                                           data_collator=DataCollatorWithPadding(tokenizer),
                                           adversary_weight=adversary_weight, class_weights=class_weights,
                                           ramp=ramp, callbacks=with_finite_guard())
    quiet(trainer)   # no printed log dicts: the lesson shows its own table
    trainer.train()
    return trainer


@torch.no_grad()
def representations(model, tokenizer, rows: Sequence[dict[str, Any]], max_length: int = 64,
                    batch_size: int = 64) -> np.ndarray:
    """Pooled representations (n_rows, hidden) of the rows, as the classification head sees them."""

    check_rows(rows, "representations", keys=["text"], error=DataError)
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(rows), batch_size):
        seqs = [encode(tokenizer, r["text"], max_tokens=max_length) for r in rows[start:start + batch_size]]
        ids, mask = pad_batch(seqs, tokenizer.pad_token_id)
        out.append(pooled_representation(model, ids.to(device), mask.to(device))[0].float().cpu().numpy())
    return np.concatenate(out)


def attribute_leakage(features: np.ndarray, rows: Sequence[dict[str, Any]], attribute: str, group_value: str,
                      folds: int = 5, seed: int = 0) -> float:
    """Balanced accuracy of a fresh linear probe predicting 'in the group?' from the features (0.5 = no leak).

    Adversarial training can hide an attribute from *its* adversary while a new probe still finds it
    (Elazar & Goldberg 2018): this probe is trained after the fact, on frozen features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    _check(rows, attribute, "attribute_leakage", group_value, label_key=None, text_key=attribute)
    y = np.array([r[attribute] == group_value for r in rows])
    if len(features) != len(rows):
        raise BiasError(f"attribute_leakage: {len(features)} feature rows for {len(rows)} rows")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    return float(cross_val_score(probe, features, y, cv=cv, scoring="balanced_accuracy").mean())


def plot_bias_vs_accuracy(table: Sequence[dict[str, Any]], bias_key: str = "gap", accuracy_key: str = "accuracy",
                          name_key: str = "method"):
    """Each method as a point at its mean over the rows (seeds) with bars from the lowest to the highest seed: bias
    gap (x, 0 is fair) against accuracy (y). Methods are named in a legend beside the axes, never on the points,
    so close points cannot hide each other's names. Returns the figure."""
    import matplotlib.pyplot as plt

    if not table:
        raise BiasError("plot_bias_vs_accuracy: empty table")
    by_method: dict[str, list[tuple[float, float]]] = {}
    for row in table:
        by_method.setdefault(row[name_key], []).append((float(row[bias_key]), float(row[accuracy_key])))
    fig, ax = plt.subplots(figsize=(8, 4))
    markers = "osD^v<>ph*"
    for k, (name, points) in enumerate(by_method.items()):
        xs, ys = np.array(points).T
        ax.errorbar(xs.mean(), ys.mean(), xerr=[[xs.mean() - xs.min()], [xs.max() - xs.mean()]],
                    yerr=[[ys.mean() - ys.min()], [ys.max() - ys.mean()]], fmt=markers[k % len(markers)], ms=7,
                    capsize=3, label=name)
    ax.axvline(0, color="grey", ls=":", lw=1)
    ax.set_xlabel("held-out counterfactual gap (others - group); 0 is fair")
    ax.set_ylabel("held-out accuracy (true labels)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
