"""Training-data quality: corrupt a clean set the way real data goes bad, then clean it step by step.

Fine-tuning data goes bad in a few recurring ways: the same example scraped twice (exact duplicates) or with a
tiny edit (near duplicates), the same text with two different labels (contradictions), wrong labels (annotator
slips), and junk (empty, truncated, boilerplate, another language, encoding debris). Each cleaning step here is a
small function that returns the rows it kept and a `StepReport` saying what it removed and *why*, so a learner can
read the pipeline like a ledger instead of trusting a black box.

Because we corrupt the data ourselves, every row carries its provenance (`corruption`, `true_label`), so we can
score each step against the truth: how many junk rows did the rule filter catch, how many clean rows did it lose,
what are the precision and recall of the label-error detector?

The label-error detector is confident learning (Northcutt et al. 2021) as implemented by `cleanlab`: it needs
*out-of-fold* predicted probabilities, i.e. a K-fold cross-validated classifier. Training the course's LLM K
times would cost minutes, so the detector uses cheap features (bag of words + logistic regression in
scikit-learn), as cleanlab's own tutorials do; the LLM is fine-tuned once on the cleaned result.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from course_utils.classify import (ClassifierConfig, load_classifier, out_of_fold_probs, predict_proba,
                                   train_classifier)
from course_utils.data import DataError
from course_utils.errors import check_count, check_rate, check_rows


LIBRARY_CALLS = {
    "cleanlab.filter:find_label_issues": ["labels", "pred_probs", "filter_by"],
    "sklearn.feature_extraction.text:CountVectorizer": ["analyzer", "ngram_range", "binary", "lowercase"],
    "sklearn.linear_model:LogisticRegression": ["C", "max_iter"],
    "sklearn.model_selection:StratifiedKFold": ["n_splits", "shuffle", "random_state"],
    "sklearn.model_selection:cross_val_predict": ["estimator", "X", "y", "cv", "method"],
    "sklearn.metrics:log_loss": ["y_true", "y_pred"],
    "sklearn.pipeline:make_pipeline": [],
}

CORRUPTION_KINDS = ("clean", "flipped", "duplicate", "near_duplicate", "contradiction", "junk")


class QualityError(DataError):
    """Bad input to a data-quality helper: a rate outside [0, 1], empty rows, a missing field."""


def _check_rows(rows: Sequence[dict[str, Any]], where: str, text_key: str = "text",
                label_key: str | None = "label") -> None:
    check_rows(rows, where, text_keys=[text_key], int_keys=[label_key] if label_key else [], error=QualityError)


# --------------------------------------------------------------------------------------------------------------
# Corruption: what real data does to a clean set
# --------------------------------------------------------------------------------------------------------------

@dataclass
class CorruptionConfig:
    """How to damage a clean labelled set; every rate is a share of the clean rows."""

    flip_rate: float = 0.25           # labels flipped in place (annotator errors)
    duplicate_rate: float = 0.15      # exact copies added
    near_duplicate_rate: float = 0.10  # copies with a small edit (case, punctuation, a typo, a filler word)
    contradiction_rate: float = 0.05  # copies with the opposite label (same text, two answers)
    junk_rate: float = 0.08           # junk rows added, with random labels
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flip_rate", "duplicate_rate", "near_duplicate_rate", "contradiction_rate", "junk_rate"):
            check_rate(getattr(self, name), "CorruptionConfig", name, error=QualityError)


BOILERPLATE = ["Click here to subscribe! Click here to subscribe! Click here to subscribe!",
               "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
               "<div class=\"review-body\"></div>", "N/A", "[deleted]",
               "Please rate this product. Please rate this product. Please rate this product."]
FOREIGN = ["Der Wasserkocher von {company} ist leider kaputt gegangen.",
           "La lampe de {company} est vraiment tr\u00e8s jolie et solide.",
           "El producto de {company} lleg\u00f3 roto y no funciona.",
           "Il prodotto di {company} \u00e8 ottimo, lo ricomprerei."]
DEBRIS = ["\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2", "\ufffd\ufffd\ufffd", "\u00c3\u00a9\u00c3\u00a8",
          "\u00e2\u20ac\u0153\u00e2\u20ac\u009d", "&amp;#8217;&amp;#8220;"]
FILLERS = ["really", "honestly", "truly", "just"]


def _junk(rng: random.Random, source: dict[str, Any], text_key: str) -> tuple[str, str]:
    """One junk text and its kind: empty, truncated, boilerplate, foreign language, or encoding debris."""
    kind = rng.choice(["empty", "truncated", "boilerplate", "foreign", "debris"])
    text = source[text_key]
    if kind == "empty":
        return rng.choice(["", " ", "\n"]), kind
    if kind == "truncated":
        cut = rng.randint(max(1, len(text) // 5), max(2, len(text) // 2))
        return text[:cut].rstrip(string.punctuation + " "), kind
    if kind == "boilerplate":
        return rng.choice(BOILERPLATE), kind
    if kind == "foreign":
        return rng.choice(FOREIGN).format(company=source.get("company", "Zentrix")), kind
    words = text.split()
    for _ in range(max(2, len(words) // 2)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(DEBRIS))
    return " ".join(words), kind


def near_duplicate(text: str, rng: random.Random) -> str:
    """A copy of `text` with one or two small edits: case, punctuation, spacing, a typo, a filler word."""
    for _ in range(rng.randint(1, 2)):
        edit = rng.choice(["case", "punct", "space", "typo", "filler"])
        words = text.split(" ")
        if edit == "case":
            text = text.lower() if rng.random() < 0.5 else text.upper()
        elif edit == "punct":
            text = text.rstrip(".!") + rng.choice(["!!", " !", "...", "!"])
        elif edit == "space":
            i = rng.randrange(len(words))
            words[i] = words[i] + " "
            text = " ".join(words)
        elif edit == "typo":
            long = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
            if long:
                i = rng.choice(long)
                w = words[i]
                j = rng.randrange(len(w) - 1)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            text = " ".join(words)
        else:
            words.insert(rng.randrange(1, len(words) + 1), rng.choice(FILLERS))
            text = " ".join(words)
    return text


def corrupt(rows: Sequence[dict[str, Any]], config: CorruptionConfig = CorruptionConfig(), text_key: str = "text",
            label_key: str = "label") -> list[dict[str, Any]]:
    """A damaged copy of labelled rows, shuffled; each row records `corruption` (its kind) and `true_label`.

    Flips happen first, so duplicates of a flipped row carry the wrong label too (as scraped copies would).
    Junk rows get a random label and `true_label=None`: they have no right answer.
    """
    _check_rows(rows, "corrupt", text_key, label_key)
    labels = sorted({int(r[label_key]) for r in rows})
    if len(labels) < 2:
        raise QualityError(f"corrupt: flipping needs at least two classes, the rows have {labels}")
    rng = random.Random(config.seed)
    n = len(rows)
    base = [dict(r, corruption="clean", true_label=int(r[label_key])) for r in rows]
    for i in rng.sample(range(n), round(config.flip_rate * n)):
        base[i][label_key] = rng.choice([c for c in labels if c != base[i]["true_label"]])
        base[i]["corruption"] = "flipped"
    extra = []
    for i in rng.choices(range(n), k=round(config.duplicate_rate * n)):
        extra.append(dict(base[i], corruption="duplicate"))
    for i in rng.choices(range(n), k=round(config.near_duplicate_rate * n)):
        extra.append(dict(base[i], corruption="near_duplicate", **{text_key: near_duplicate(base[i][text_key], rng)}))
    for i in rng.choices(range(n), k=round(config.contradiction_rate * n)):
        wrong = rng.choice([c for c in labels if c != base[i][label_key]])
        extra.append(dict(base[i], corruption="contradiction", **{label_key: wrong}))
    for i in rng.choices(range(n), k=round(config.junk_rate * n)):
        text, kind = _junk(rng, base[i], text_key)
        extra.append(dict(base[i], corruption="junk", junk_kind=kind, true_label=None,
                          **{text_key: text, label_key: rng.choice(labels)}))
    out = base + extra
    rng.shuffle(out)
    return out


def corruption_summary(rows: Sequence[dict[str, Any]], label_key: str = "label") -> dict[str, Any]:
    """Rows per corruption kind, and the share of rows whose label is wrong (junk has no right label)."""
    check_rows(rows, "corruption_summary", keys=["corruption", "true_label", label_key], error=DataError)
    counts = Counter(r["corruption"] for r in rows)
    judged = [r for r in rows if r["true_label"] is not None]
    wrong = sum(int(r[label_key]) != r["true_label"] for r in judged)
    return {"rows": len(rows), **{k: counts.get(k, 0) for k in CORRUPTION_KINDS},
            "wrong_label_share": round(wrong / max(1, len(judged)), 3)}


# --------------------------------------------------------------------------------------------------------------
# The cleaning steps: each returns (kept rows, StepReport)
# --------------------------------------------------------------------------------------------------------------

@dataclass
class StepReport:
    """What one cleaning step removed and why; `removed` holds the removed rows with a `reason` field."""

    step: str
    rows_in: int
    removed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_out(self) -> int:
        return self.rows_in - len(self.removed)

    def reasons(self) -> Counter:
        """How many rows each reason removed (reasons are short phrases, details stripped)."""
        return Counter(r["reason"].split(" (")[0] for r in self.removed)

    def by_kind(self) -> Counter:
        """Removed rows per injected corruption kind (only when the rows carry provenance)."""
        return Counter(r.get("corruption", "unknown") for r in self.removed)

    def __str__(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in self.reasons().most_common()) or "nothing"
        return f"{self.step}: {self.rows_in} -> {self.rows_out} rows (removed {len(self.removed)}: {why})"


def _split(rows: Sequence[dict[str, Any]], reasons: Sequence[str | None], step: str) -> tuple[list, StepReport]:
    kept, report = [], StepReport(step=step, rows_in=len(rows))
    for row, reason in zip(rows, reasons):
        if reason is None:
            kept.append(row)
        else:
            report.removed.append(dict(row, reason=reason))
    return kept, report


def normalise_text(text: str) -> str:
    """Unicode-normalised, lower-cased, punctuation stripped, whitespace collapsed: what 'the same text' means."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def text_hash(text: str) -> str:
    """A short fingerprint of the normalised text: equal fingerprints = duplicates after normalisation."""
    return hashlib.sha1(normalise_text(text).encode("utf-8")).hexdigest()[:16]


# A handful of English function words: real text has some; another language or junk usually has none.
# (The Gopher rules of Rae et al. 2021 ask for at least two of "the, be, to, of, and, that, have, with".)
STOP_WORDS = frozenset("the a an and it is this my i of to in from by with for was be that on at me".split())
TERMINAL = (".", "!", "?", "\"", "'", ")")
MARKUP = re.compile(r"<[^>]{1,40}>|&#?\w{1,8};")  # HTML tags and entities: scraping debris


@dataclass
class QualityRules:
    """Heuristic filters in the spirit of C4 (Raffel 2020) and Gopher (Rae 2021), sized for short reviews."""

    min_words: int = 4
    max_words: int = 120
    min_alpha_share: float = 0.8        # share of characters (spaces excluded) that are ASCII letters or punctuation
    max_repeated_word_share: float = 0.3  # share of the text taken by its most frequent word
    max_repeated_trigram: int = 1       # a word trigram appearing more than this many times is boilerplate
    min_stop_words: int = 1
    require_terminal_punctuation: bool = True  # a review that stops mid-sentence was truncated

    def __post_init__(self) -> None:
        check_rate(self.min_alpha_share, "QualityRules", "min_alpha_share", error=QualityError)
        check_rate(self.max_repeated_word_share, "QualityRules", "max_repeated_word_share", error=QualityError)
        if self.min_words < 0 or self.max_words < self.min_words:
            raise QualityError(f"QualityRules: need 0 <= min_words <= max_words, got {self.min_words}, "
                               f"{self.max_words}")


def rule_violation(text: str, rules: QualityRules = QualityRules()) -> str | None:
    """The first rule `text` breaks, as a short reason, or None if it passes them all."""
    words = text.split()
    if not words:
        return "empty"
    if len(words) < rules.min_words:
        return f"too short ({len(words)} words)"
    if len(words) > rules.max_words:
        return f"too long ({len(words)} words)"
    if MARKUP.search(text):
        return "markup or HTML entities"
    chars = [c for c in text if not c.isspace()]
    ok = sum(c in string.ascii_letters or c in string.punctuation or c in string.digits for c in chars)
    if ok / len(chars) < rules.min_alpha_share:
        return f"encoding debris or foreign characters ({1 - ok / len(chars):.0%} odd characters)"
    lower = [normalise_text(w) for w in words]
    top_word, top_count = Counter(lower).most_common(1)[0]
    if len(words) >= 6 and top_count / len(words) > rules.max_repeated_word_share:
        return f"repeated words ({top_word!r} x{top_count})"
    trigrams = Counter(zip(lower, lower[1:], lower[2:]))
    if trigrams and max(trigrams.values()) > rules.max_repeated_trigram:
        return "repeated phrase"
    if sum(w in STOP_WORDS for w in lower) < rules.min_stop_words:
        return "no English function words"
    if rules.require_terminal_punctuation and not text.rstrip().endswith(TERMINAL):
        return "no terminal punctuation (truncated?)"
    return None


def rule_filter(rows: Sequence[dict[str, Any]], rules: QualityRules = QualityRules(),
                text_key: str = "text") -> tuple[list[dict[str, Any]], StepReport]:
    """Drop rows whose text breaks a quality rule (empty, short, debris, repetition, foreign, truncated)."""
    _check_rows(rows, "rule_filter", text_key, label_key=None)
    return _split(rows, [rule_violation(r[text_key], rules) for r in rows], "rule filters")


def drop_contradictions(rows: Sequence[dict[str, Any]], text_key: str = "text",
                        label_key: str = "label") -> tuple[list[dict[str, Any]], StepReport]:
    """Drop *every* row of a text that appears with more than one label: we cannot tell which label is right."""
    _check_rows(rows, "drop_contradictions", text_key, label_key)
    labels_of: dict[str, set] = {}
    for r in rows:
        labels_of.setdefault(text_hash(r[text_key]), set()).add(int(r[label_key]))
    reasons = [f"same text, labels {sorted(labels_of[text_hash(r[text_key])])}"
               if len(labels_of[text_hash(r[text_key])]) > 1 else None for r in rows]
    return _split(rows, reasons, "contradictions")


def drop_exact_duplicates(rows: Sequence[dict[str, Any]], text_key: str = "text") -> tuple[list[dict[str, Any]], StepReport]:
    """Keep the first row of each normalised text (case, punctuation and spacing ignored); drop the copies."""
    _check_rows(rows, "drop_exact_duplicates", text_key, label_key=None)
    first: dict[str, int] = {}
    reasons = []
    for i, r in enumerate(rows):
        h = text_hash(r[text_key])
        reasons.append(f"exact duplicate (of row {first[h]})" if h in first else None)
        first.setdefault(h, i)
    return _split(rows, reasons, "exact duplicates")


def jaccard_matrix(texts: Sequence[str], ngram: int = 5):
    """Pairwise Jaccard similarity of the texts' character n-gram sets (a dense n x n array).

    Exact pairwise Jaccard is fine for a few thousand rows; for millions, MinHash with locality-sensitive hashing
    (e.g. the `datasketch` library) estimates the same quantity without comparing every pair.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    normed = [normalise_text(t) or "_" for t in texts]
    sets = CountVectorizer(analyzer="char_wb", ngram_range=(ngram, ngram), binary=True,
                           lowercase=False).fit_transform(normed).astype(np.float32)
    inter = (sets @ sets.T).toarray()
    size = np.asarray(sets.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def drop_near_duplicates(rows: Sequence[dict[str, Any]], threshold: float = 0.8, ngram: int = 5,
                         text_key: str = "text") -> tuple[list[dict[str, Any]], StepReport]:
    """Drop a row when its character n-gram Jaccard similarity to an earlier kept row is at least `threshold`."""
    _check_rows(rows, "drop_near_duplicates", text_key, label_key=None)
    check_rate(threshold, "drop_near_duplicates", "threshold", error=QualityError)
    sim = jaccard_matrix([r[text_key] for r in rows], ngram)
    kept = np.zeros(len(rows), dtype=bool)
    reasons: list[str | None] = []
    for i in range(len(rows)):
        earlier = np.where(kept[:i], sim[i, :i], -1.0)  # similarity to the rows kept so far
        best = int(earlier.argmax()) if i else -1
        if i and earlier[best] >= threshold:
            reasons.append(f"near duplicate (Jaccard {earlier[best]:.2f} with row {best})")
        else:
            reasons.append(None)
            kept[i] = True
    return _split(rows, reasons, "near duplicates")


def find_label_issues(rows: Sequence[dict[str, Any]], pred_probs: np.ndarray, label_key: str = "label",
                      filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """Boolean mask of rows whose given label is likely wrong, by confident learning (`cleanlab`).

    Confident learning estimates, per class pair, how many rows labelled i truly belong to j (the confident
    joint), and flags that many rows, the ones the model most confidently assigns elsewhere.
    """
    from cleanlab.filter import find_label_issues as cl_find_label_issues

    check_rows(rows, "find_label_issues", keys=[label_key], error=DataError)
    probs = np.asarray(pred_probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != len(rows):
        raise QualityError(f"find_label_issues: pred_probs has shape {probs.shape}, expected ({len(rows)}, classes)")
    labels = np.array([int(r[label_key]) for r in rows])
    return cl_find_label_issues(labels=labels, pred_probs=probs, filter_by=filter_by)


def drop_label_issues(rows: Sequence[dict[str, Any]], n_folds: int = 5, seed: int = 0, text_key: str = "text",
                      label_key: str = "label") -> tuple[list[dict[str, Any]], StepReport]:
    """Out-of-fold probabilities, then confident learning; drop the flagged rows (reason: the model's confidence)."""
    probs = out_of_fold_probs(rows, n_folds, seed, text_key=text_key, label_key=label_key)
    flagged = find_label_issues(rows, probs, label_key)
    reasons = [f"likely label error (p(given label)={probs[i, int(r[label_key])]:.2f})" if flagged[i] else None
               for i, r in enumerate(rows)]
    return _split(rows, reasons, "label errors (cleanlab)")


Step = Callable[[Sequence[dict[str, Any]]], "tuple[list[dict[str, Any]], StepReport]"]
DEFAULT_PIPELINE: tuple[Step, ...] = (rule_filter, drop_contradictions, drop_exact_duplicates, drop_near_duplicates,
                                      drop_label_issues)


def clean(rows: Sequence[dict[str, Any]], steps: Sequence[Step] = DEFAULT_PIPELINE
          ) -> tuple[list[dict[str, Any]], list[StepReport]]:
    """Run the cleaning steps in order; returns the kept rows and one report per step."""
    if len(rows) == 0:
        raise QualityError("clean: empty dataset")
    if not steps:
        raise QualityError("clean: no steps given")
    reports = []
    for step in steps:
        rows, report = step(rows)
        reports.append(report)
        if not rows:
            raise QualityError(f"clean: step {report.step!r} removed every row")
    return list(rows), reports


def removal_table(reports: Sequence[StepReport]) -> list[dict[str, Any]]:
    """One row per step: rows in, rows removed, and the removed rows broken down by injected corruption kind."""
    if not reports:
        raise QualityError("removal_table: no step reports")
    table = []
    for rep in reports:
        kinds = rep.by_kind()
        table.append({"step": rep.step, "rows in": rep.rows_in, "removed": len(rep.removed),
                      **{k: kinds.get(k, 0) for k in CORRUPTION_KINDS}, "rows out": rep.rows_out})
    return table


# --------------------------------------------------------------------------------------------------------------
# Scoring a detector against the errors we injected
# --------------------------------------------------------------------------------------------------------------

def label_error_mask(rows: Sequence[dict[str, Any]], label_key: str = "label") -> np.ndarray:
    """True where the row's label differs from its known true label (junk rows, with no true label, are False)."""
    check_rows(rows, "label_error_mask", keys=["true_label", label_key], error=DataError)
    return np.array([r["true_label"] is not None and int(r[label_key]) != int(r["true_label"]) for r in rows])


def detection_scores(flagged: Sequence[bool], truth: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of a flagger against the true errors."""
    flagged, truth = np.asarray(flagged, dtype=bool), np.asarray(truth, dtype=bool)
    if flagged.shape != truth.shape or flagged.size == 0:
        raise QualityError(f"detection_scores: need two equal, non-empty masks, got {flagged.shape} and {truth.shape}")
    tp = int((flagged & truth).sum())
    precision = tp / flagged.sum() if flagged.sum() else 0.0
    recall = tp / truth.sum() if truth.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": int(flagged.sum()), "errors": int(truth.sum()), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def random_flagger_scores(n_flagged: int, truth: Sequence[bool]) -> dict[str, float]:
    """Expected precision and recall of flagging `n_flagged` rows at random: the baseline a detector must beat.

    A random flagger's precision is the error rate itself, and its recall is the share of rows it flags.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.size == 0 or not 0 <= n_flagged <= truth.size:
        raise QualityError(f"random_flagger_scores: need 0 <= n_flagged <= {truth.size}, got {n_flagged}")
    precision, recall = float(truth.mean()), n_flagged / truth.size
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": int(n_flagged), "errors": int(truth.sum()), "precision": precision, "recall": recall,
            "f1": f1}


# --------------------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------------------

# EDA (Wei & Zou 2019) draws synonyms from WordNet, which needs a download; offline we use a small hand-written
# table for the review vocabulary. Each entry keeps the sentiment of the word it replaces.
SYNONYMS: dict[str, list[str]] = {
    "bought": ["purchased", "got"], "new": ["recent", "brand new"], "works": ["functions", "runs"],
    "perfectly": ["flawlessly", "faultlessly"], "excellent": ["superb", "outstanding"], "value": ["worth"],
    "exceeded": ["surpassed", "beat"], "hopes": ["expectations"], "sturdy": ["solid", "robust"],
    "made": ["built", "crafted"], "quickly": ["fast", "promptly"], "great": ["superbly", "wonderfully"],
    "delight": ["joy", "pleasure"], "reliable": ["dependable", "trustworthy"], "lovely": ["beautiful", "pretty"],
    "well": ["nicely", "fine"], "broke": ["failed", "snapped"], "week": ["few days", "fortnight"],
    "waste": ["squandering"], "money": ["cash", "funds"], "stopped": ["ceased", "quit"],
    "cheap": ["shoddy", "tacky"], "flimsy": ["fragile", "weak"], "damaged": ["broken", "dented"],
    "disappointment": ["letdown", "failure"], "properly": ["correctly", "right"], "noisy": ["loud", "rattly"],
    "unreliable": ["undependable", "erratic"], "recommended": ["endorsed", "advised"], "happy": ["pleased", "glad"],
    "unhappy": ["displeased", "upset"], "avoid": ["skip", "shun"], "refund": ["reimbursement", "repayment"],
    "review": ["verdict", "report"],
}


def eda(text: str, rng: random.Random, alpha: float = 0.1, synonyms: dict[str, list[str]] = SYNONYMS) -> str:
    """One 'easy data augmentation' of `text`: a synonym swap, a random insertion, a word swap or deletions.

    The four operations of Wei & Zou (2019); `alpha` is the share of words each operation touches.
    """
    check_rate(alpha, "eda", "alpha", error=QualityError)
    words = text.split()
    if not words:
        return text
    n = max(1, round(alpha * len(words)))
    op = rng.choice(["synonym", "insert", "swap", "delete"])
    if op == "synonym":
        idx = [i for i, w in enumerate(words) if w.lower().strip(string.punctuation) in synonyms]
        for i in rng.sample(idx, min(n, len(idx))):
            core = words[i].lower().strip(string.punctuation)
            words[i] = words[i].replace(words[i].strip(string.punctuation), rng.choice(synonyms[core]))
    elif op == "insert":
        pool = [s for w in words for s in synonyms.get(w.lower().strip(string.punctuation), [])] or FILLERS
        for _ in range(n):
            words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    elif op == "swap" and len(words) > 1:
        for _ in range(n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete" and len(words) > 1:
        words = [w for w in words if rng.random() > alpha] or [rng.choice(words)]
    return " ".join(words)


def augment(rows: Sequence[dict[str, Any]], copies: int = 1, alpha: float = 0.1, seed: int = 0,
            text_key: str = "text") -> list[dict[str, Any]]:
    """The rows plus `copies` EDA-augmented copies of each (label kept, `augmented=True`), shuffled.

    Back-translation (translate to another language and back) is the other classic text augmentation; it needs a
    translation model, which the offline cpu profile does not ship, so the course uses EDA.
    """
    _check_rows(rows, "augment", text_key, label_key=None)
    check_count(copies, "augment", "copies", error=QualityError)
    check_rate(alpha, "augment", "alpha", error=QualityError)
    rng = random.Random(seed)
    out = [dict(r, augmented=False) for r in rows]
    for r in rows:
        for _ in range(copies):
            out.append(dict(r, augmented=True, **{text_key: eda(r[text_key], rng, alpha)}))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------------------------------------
# Task quality of a training set
# --------------------------------------------------------------------------------------------------------------

def train_and_score(train_rows: Sequence[dict[str, Any]], test_rows: Sequence[dict[str, Any]], family: str = "gpt2",
                    steps: int = 120, seed: int = 0, config=None, label_key: str = "label"):
    """Fine-tune a fresh classifier of `family` for a fixed number of steps on `train_rows`; score it on `test_rows`.

    A fixed step budget makes training sets of different sizes comparable at equal compute. Returns
    (model, tokenizer, {"accuracy", "log_loss"}); log-loss (mean -log p(true label)) still moves when accuracy is
    near 1. Test labels must be the true ones.
    """

    _check_rows(train_rows, "train_and_score (train)", label_key=label_key)
    _check_rows(test_rows, "train_and_score (test)", label_key=label_key)
    if steps < 1:
        raise QualityError(f"train_and_score: steps must be >= 1, got {steps}")
    config = config or ClassifierConfig(seed=seed, max_length=32)
    import torch

    torch.manual_seed(seed)
    model, tok = load_classifier(family)
    train_classifier(model, tok, train_rows, config, max_steps=steps)
    probs = predict_proba(model, tok, test_rows, max_length=config.max_length)
    labels = np.array([int(r[label_key]) for r in test_rows])
    p_true = probs[np.arange(len(labels)), labels]
    return model, tok, {"accuracy": float((probs.argmax(-1) == labels).mean()),
                        "log_loss": float(-np.log(np.clip(p_true, 1e-9, 1)).mean())}
