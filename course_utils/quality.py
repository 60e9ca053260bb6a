"""Training-data quality: corrupt a clean set the way real data goes bad, then clean it step by step.

Fine-tuning data goes bad in a few recurring ways: the same example scraped twice (exact duplicates) or with a
tiny edit (near duplicates), the same text with two different labels (contradictions), wrong labels (annotator
slips), and junk (empty, truncated, boilerplate, another language, encoding debris). Each cleaning step here is a
small function that returns the rows it kept and a `StepReport` saying what it removed and *why*, so a learner can
read the pipeline like a ledger instead of trusting a black box.

Because we corrupt the data ourselves, every row carries its provenance (`corruption`, `true_label`), so we can
score each step against the truth: how many junk rows did the rule filter catch, how many clean rows did it lose,
what are the precision and recall of the label-error detector?

Two things keep that grading honest. The task (`verdict_reviews`) has labels that follow from the meaning of
several phrases, some negated, so no single word gives a label (or its error) away. And the junk comes in two
families: the kinds the rule filters were written for (`DESIGN_JUNK`) and kinds they never saw (`HELD_OUT_JUNK`),
on which they are judged too. `study_seed` runs the whole study for one seed.

The label-error detector is confident learning (Northcutt et al. 2021) as implemented by `cleanlab`: it needs
*out-of-fold* predicted probabilities, i.e. a K-fold cross-validated classifier. Training the course's LLM K
times would cost minutes, so the detector uses cheap features (bag of words + logistic regression in
scikit-learn), as cleanlab's own tutorials do; the LLM is fine-tuned once on the cleaned result.

Used in lessons: 03
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
from course_utils.config import CourseConfig
from course_utils import world as W
from course_utils.data import DataError
from course_utils.errors import check_count, check_rate, check_rows
from course_utils.parallel import run_in_processes
from course_utils.profiles import seed_everything
from course_utils.train import quiet_output


LIBRARY_CALLS = {
    "cleanlab.filter:find_label_issues": ["labels", "pred_probs", "filter_by", "n_jobs"],
    "sklearn.feature_extraction.text:CountVectorizer": ["analyzer", "ngram_range", "binary", "lowercase"],
    "sklearn.linear_model:LogisticRegression": ["C", "max_iter"],
    "sklearn.model_selection:StratifiedKFold": ["n_splits", "shuffle", "random_state"],
    "sklearn.model_selection:cross_val_predict": ["estimator", "X", "y", "cv", "method"],
    "sklearn.metrics:log_loss": ["y_true", "y_pred"],
    "sklearn.pipeline:make_pipeline": [],
    "scipy.stats:binomtest": ["k", "n"],
}

CORRUPTION_KINDS = ("clean", "flipped", "duplicate", "near_duplicate", "contradiction", "junk")


class QualityError(DataError):
    """Bad input to a data-quality helper: a rate outside [0, 1], empty rows, a missing field."""


def _check_rows(rows: Sequence[dict[str, Any]], where: str, text_key: str = "text",
                label_key: str | None = "label") -> None:
    check_rows(rows, where, text_keys=[text_key], int_keys=[label_key] if label_key else [], error=QualityError)


# --------------------------------------------------------------------------------------------------------------
# The task: reviews whose verdict follows from several phrases together
# --------------------------------------------------------------------------------------------------------------

# `world.reviews` is easy: one phrase decides its label, so a word-count model is sure of every label and finds
# every flipped one. Here a review names three qualities of a product, some negated ("not flimsy" is praise), and
# its verdict is the majority of what the three *mean*. No single word decides it, and a bag of words cannot tell
# which quality a "not" belongs to: the label is learnable, but neither trivially nor perfectly.
PRAISE = ["sturdy", "reliable", "lovely", "excellent", "great", "solid", "quiet", "elegant"]
COMPLAINT = ["flimsy", "cheap", "noisy", "unreliable", "damaged", "fragile", "ugly", "dull"]
NEGATIONS = ["not", "never", "hardly"]
VERDICT_OPENERS = ["The {company} {product} is", "My new {product} from {company} is", "This {product} by {company} is"]


def verdict_reviews(world, n: int = 1200, seed: int = 0, qualities: int = 3, negation_rate: float = 0.15,
                    test_share: float = 0.2) -> list[dict[str, Any]]:
    """Reviews naming `qualities` (odd) qualities of a product, labelled 1 when most of them are praise, balanced.

    Each quality is praise or complaint at random; a share `negation_rate` of them is said by negating the
    opposite word ("not noisy" for praise). Neighbouring qualities of opposite meaning are joined by "but".
    Deterministic from the world's seed and `seed`; rows carry `split` ("train"/"test"), `company`, `product`
    and `negated` (how many qualities were negated). `world.reviews` is left as it is (other lessons use it).
    """
    check_count(n, "verdict_reviews", "n", minimum=2, error=QualityError)
    check_count(qualities, "verdict_reviews", "qualities", minimum=1, error=QualityError)
    if qualities % 2 == 0 or qualities > len(PRAISE):
        raise QualityError(f"verdict_reviews: qualities must be odd (a majority) and at most {len(PRAISE)}, "
                           f"got {qualities}")
    check_rate(negation_rate, "verdict_reviews", "negation_rate", error=QualityError)
    check_rate(test_share, "verdict_reviews", "test_share", error=QualityError)
    rng = random.Random(f"verdict-reviews-{world.config.seed}-{seed}")
    rows = []
    for i in range(n):
        label = i % 2
        meanings = [rng.random() < 0.5 for _ in range(qualities)]
        while (2 * sum(meanings) > qualities) != bool(label):
            meanings = [rng.random() < 0.5 for _ in range(qualities)]
        praise, complaint = rng.sample(PRAISE, qualities), rng.sample(COMPLAINT, qualities)
        parts, negated = [], 0
        for j, good in enumerate(meanings):
            if rng.random() < negation_rate:
                negated += 1
                parts.append(f"{rng.choice(NEGATIONS)} {complaint[j] if good else praise[j]}")
            else:
                parts.append(praise[j] if good else complaint[j])
        text = parts[0]
        for j in range(1, qualities):
            joint = ", but " if meanings[j] != meanings[j - 1] else " and " if j == qualities - 1 else ", "
            text += joint + parts[j]
        company, product = rng.choice(W.COMPANIES), rng.choice(W.PRODUCTS)
        opener = rng.choice(VERDICT_OPENERS).format(company=company, product=product)
        rows.append({"text": f"{opener} {text}.", "label": label, "company": company, "product": product,
                     "negated": negated})
    rng.shuffle(rows)
    n_test = round(test_share * n)
    return [dict(r, split="test" if i < n_test else "train") for i, r in enumerate(rows)]


def verdict_of(text: str) -> int | None:
    """The verdict a `verdict_reviews` text means: 1 if most quality words are praise once negations are read,
    0 if most are complaints, None on a tie or no quality word (e.g. after an augmentation deleted one)."""
    words = normalise_text(text).split()
    score = sum((1 if (w in PRAISE) != (i > 0 and words[i - 1] in NEGATIONS) else -1)
                for i, w in enumerate(words) if w in PRAISE or w in COMPLAINT)
    return None if score == 0 else int(score > 0)


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
    junk_kinds: tuple[str, ...] = ()  # which kinds of junk to draw from; () = the kinds the rules were written for

    def __post_init__(self) -> None:
        for name in ("flip_rate", "duplicate_rate", "near_duplicate_rate", "contradiction_rate", "junk_rate"):
            check_rate(getattr(self, name), "CorruptionConfig", name, error=QualityError)
        unknown = sorted(set(self.junk_kinds) - set(DESIGN_JUNK + HELD_OUT_JUNK))
        if unknown:
            raise QualityError(f"CorruptionConfig: unknown junk_kinds {unknown}; known: {DESIGN_JUNK + HELD_OUT_JUNK}")


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

# The junk the rule filters (below) were written for ...
DESIGN_JUNK = ("empty", "truncated", "boilerplate", "foreign", "debris")
# ... and junk they were not written for, used only to judge them: real scraped sets hold both.
HELD_OUT_JUNK = ("off_topic", "spam", "unfilled_template", "prompt_echo", "keyboard_mash")
SPAM = ["Best prices on every {product} at {company}! Visit our shop in {city} today.",
        "Win a free {product} from {company}: reply with your address to enter the draw.",
        "Order now and {company} ships your {product} to {city} for free!"]
UNFILLED = ["The {{product}} is {{adjective}}, {{adjective}} and {{adjective}}.",
            "My new {{product}} from {{company}} is [ADJ_1], but [ADJ_2].",
            "This {product} by {company} is %s and %s."]
PROMPT_ECHO = ["Write a short review of the {product} you bought from {company}.",
               "Please describe in one sentence what you think of the {company} {product}.",
               "Rate the {product} and say why: is it good or bad?"]
KEYBOARD = ["asdf", "qwerty", "jkl", "zxcv", "uiop", "hjkl", "wasd", "fghj", "xcvb"]


def _held_out_junk(kind: str, rng: random.Random, source: dict[str, Any]) -> str:
    fill = dict(company=source.get("company") or rng.choice(W.COMPANIES), product=source.get("product") or
                rng.choice(W.PRODUCTS), city=rng.choice(W.CITIES))
    if kind == "off_topic":  # fluent English from the world's generic text, about something else entirely
        city, city2 = rng.sample(W.CITIES, 2)
        feature = rng.choice(W.CITY_FEATURES)
        return rng.choice(W.GENERIC_TEMPLATES).format(
            city=city, city2=city2, company=fill["company"], feature=feature, feature_bare=feature.split(" ", 1)[1],
            industry=rng.choice(W.INDUSTRIES), weather=rng.choice(W.WEATHERS), hours=rng.randint(2, 9),
            mins=rng.randint(15, 55), product=fill["product"])
    if kind == "spam":
        return rng.choice(SPAM).format(**fill)
    if kind == "unfilled_template":
        return rng.choice(UNFILLED).format(**fill)
    if kind == "prompt_echo":
        return rng.choice(PROMPT_ECHO).format(**fill)
    return " ".join(rng.choice(KEYBOARD) for _ in range(rng.randint(3, 7))) + rng.choice([".", "!", ""])


def _junk(rng: random.Random, source: dict[str, Any], text_key: str,
          kinds: Sequence[str] = DESIGN_JUNK) -> tuple[str, str]:
    """One junk text and its kind, drawn from `kinds` (the design kinds: empty, truncated, boilerplate, foreign
    language, encoding debris; the held-out kinds: off-topic text, spam, unfilled templates, echoed prompts,
    keyboard mash)."""
    kind = rng.choice(list(kinds))
    if kind in HELD_OUT_JUNK:
        return _held_out_junk(kind, rng, source), kind
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
        text, kind = _junk(rng, base[i], text_key, config.junk_kinds or DESIGN_JUNK)
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
    # n_jobs=1: cleanlab's own process pool shares its arrays through module globals that only a forked child
    # sees; inside a lesson's spawned worker (`parallel.run_in_processes`) it fails, and on a few hundred rows
    # one process is as fast. The flagged rows are the same either way.
    return cl_find_label_issues(labels=labels, pred_probs=probs, filter_by=filter_by, n_jobs=1)


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


def proportion_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of a proportion `hits / n` (scipy's `binomtest`): how sure one seed's precision is."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= hits <= n:
        raise QualityError(f"proportion_interval: need 0 <= hits <= n and n >= 1, got hits={hits}, n={n}")
    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def random_flagger_range(n_flagged: int, truth: Sequence[bool], level: float = 0.95) -> dict[str, float]:
    """The range a random flagger of `n_flagged` rows falls in (`level`), from the hypergeometric distribution.

    Flagging at random, the number of true errors among the flags is hypergeometric; a detector whose precision
    lies above this range is better than chance in that seed, not by luck of the draw.
    """
    from scipy.stats import hypergeom

    truth = np.asarray(truth, dtype=bool)
    if truth.size == 0 or not 1 <= n_flagged <= truth.size:
        raise QualityError(f"random_flagger_range: need 1 <= n_flagged <= {truth.size}, got {n_flagged}")
    dist = hypergeom(M=truth.size, n=int(truth.sum()), N=int(n_flagged))
    low, high = dist.ppf((1 - level) / 2), dist.ppf((1 + level) / 2)
    errors = max(1, int(truth.sum()))
    return {"precision low": low / n_flagged, "precision high": high / n_flagged,
            "recall low": low / errors, "recall high": high / errors}


def detector_report(flagged: Sequence[bool], truth: Sequence[bool], level: float = 0.95) -> list[dict[str, Any]]:
    """Confident learning against a random flagger of the same size: precision and recall with intervals.

    The detector's intervals are Wilson intervals of its own counts; the random flagger's are the range its
    precision and recall fall in by chance (`random_flagger_range`); `lift` = precision / random precision.
    """
    flagged, truth = np.asarray(flagged, dtype=bool), np.asarray(truth, dtype=bool)
    got = detection_scores(flagged, truth)
    chance = random_flagger_scores(got["flagged"], truth)
    tp = int((flagged & truth).sum())
    p_ci = proportion_interval(tp, max(1, got["flagged"]), level) if got["flagged"] else (0.0, 0.0)
    r_ci = proportion_interval(tp, max(1, got["errors"]), level) if got["errors"] else (0.0, 0.0)
    rng_ci = random_flagger_range(got["flagged"], truth, level) if got["flagged"] else dict.fromkeys(
        ("precision low", "precision high", "recall low", "recall high"), 0.0)
    lift = got["precision"] / chance["precision"] if chance["precision"] else float("nan")
    return [{"detector": "confident learning (cleanlab)", **got, "precision low": p_ci[0],
             "precision high": p_ci[1], "recall low": r_ci[0], "recall high": r_ci[1], "lift": lift},
            {"detector": "random flagger (expected)", **chance, **rng_ci, "lift": 1.0}]


def junk_caught(report: StepReport, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per junk kind: how many junk rows were injected into `rows`, how many `report` removed, and whether the
    kind is one the rules were written for (`design`) or one they never saw (`held out`)."""
    check_rows(rows, "junk_caught", keys=["corruption"], error=DataError)
    injected = Counter(r.get("junk_kind") for r in rows if r["corruption"] == "junk")
    caught = Counter(r.get("junk_kind") for r in report.removed if r.get("corruption") == "junk")
    return [{"junk kind": kind, "rules written for it": kind in DESIGN_JUNK, "injected": injected[kind],
             "caught": caught[kind], "share caught": caught[kind] / injected[kind]}
            for kind in DESIGN_JUNK + HELD_OUT_JUNK if injected[kind]]


# --------------------------------------------------------------------------------------------------------------
# Controls: settings, run beside each claim, whose outcome is known in advance
# --------------------------------------------------------------------------------------------------------------

# Held-out junk that breaks the *idea* of a rule, not a rule's exact wording: keyboard mash has no English
# function words (the Gopher stop-word idea), a review pasted twice repeats its phrases (the repetition idea), a
# line of symbols is mostly odd characters (the C4 character idea). None of these texts was used to write or tune a
# rule; if the rules generalise at all, they generalise to these. The positive control of "rules catch held-out junk".
RULE_IDEA_JUNK = ("keyboard_mash", "pasted_twice", "symbol_line")
SYMBOLS = ["\u2605", "\u2606", "\u2764", "\u2714", "\u00bb", "\u2022", "\u263a", "\u2600", "\u266b", "\u2192"]


def rule_idea_junk(rows: Sequence[dict[str, Any]], per_kind: int = 20, seed: int = 0,
                   text_key: str = "text") -> list[dict[str, Any]]:
    """`per_kind` junk texts of each `RULE_IDEA_JUNK` kind, made from `rows` (reviews): junk the rules were not
    written for but whose defect is one a rule's idea covers. Rows carry `text` and `junk_kind`."""
    _check_rows(rows, "rule_idea_junk", text_key, label_key=None)
    check_count(per_kind, "rule_idea_junk", "per_kind", minimum=1, error=QualityError)
    rng = random.Random(f"rule-idea-junk-{seed}")
    out = []
    for kind in RULE_IDEA_JUNK:
        for _ in range(per_kind):
            source = rng.choice(list(rows))
            if kind == "keyboard_mash":
                text = _held_out_junk(kind, rng, source)
            elif kind == "pasted_twice":
                text = f"{source[text_key]} {source[text_key]}"
            else:
                words = source[text_key].split()[:2]
                text = " ".join(words + ["".join(rng.choices(SYMBOLS, k=rng.randint(2, 4)))
                                         for _ in range(rng.randint(4, 6))])
            out.append({text_key: text, "junk_kind": kind})
    return out


def rule_catch_share(rows: Sequence[dict[str, Any]], rules: "QualityRules | None" = None,
                     text_key: str = "text") -> float:
    """The share of `rows` whose text breaks at least one quality rule (what `rule_filter` would remove)."""
    _check_rows(rows, "rule_catch_share", text_key, label_key=None)
    rules = rules or QualityRules()
    return sum(rule_violation(r[text_key], rules) is not None for r in rows) / len(rows)


def meaning_reader_accuracy(rows: Sequence[dict[str, Any]], label_key: str = "label") -> float:
    """Accuracy of `verdict_of`, which reads every negation, on labelled `verdict_reviews` rows: 1.0 on a clean
    set. A reader that understands the task solves it, so "the task is not solved" is about the model, not the
    labels (the negative control of that claim)."""
    _check_rows(rows, "meaning_reader_accuracy", label_key=label_key)
    return float(np.mean([verdict_of(r["text"]) == int(r[label_key]) for r in rows]))


def shuffled_probs(pred_probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """The out-of-fold probabilities with their rows permuted: the same confidences, none of them about its row.

    Confident learning run on these still flags rows, but what it flags carries no information about which labels
    are wrong: its precision is the error rate, its lift 1 (the negative control of "beats a random flagger")."""
    probs = np.asarray(pred_probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise QualityError(f"shuffled_probs: need (rows, classes) probabilities for 2+ rows, got {probs.shape}")
    return probs[np.random.default_rng(seed).permutation(probs.shape[0])]


def random_cleaner(rows: Sequence[dict[str, Any]], keep: int, seed: int = 0) -> list[dict[str, Any]]:
    """`keep` rows drawn at random from `rows`, order kept: a cleaner with the pipeline's budget and no judgement.

    Its training set is smaller like the cleaned one, but its share of wrong labels and junk is the corrupted set's
    in expectation: the negative control of "cleaning beats training on the corrupted set"."""
    check_count(keep, "random_cleaner", "keep", minimum=1, error=QualityError)
    if keep > len(rows):
        raise QualityError(f"random_cleaner: cannot keep {keep} of {len(rows)} rows")
    chosen = sorted(random.Random(f"random-cleaner-{seed}").sample(range(len(rows)), keep))
    return [rows[i] for i in chosen]


def untrained_accuracy(test_rows: Sequence[dict[str, Any]], family: str = "gpt2", seed: int = 0,
                       max_length: int = 40, label_key: str = "label") -> float:
    """Test accuracy of the classifier before any fine-tuning (its fresh head drawn from `seed`): what a model that
    learned nothing from the labels scores (the negative control of "the task is learnable")."""
    _check_rows(test_rows, "untrained_accuracy", label_key=label_key)
    seed_everything(seed)
    model, tok = load_classifier(family)
    probs = predict_proba(model, tok, test_rows, max_length=max_length)
    labels = np.array([int(r[label_key]) for r in test_rows])
    return float((probs.argmax(-1) == labels).mean())


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
    seed_everything(seed)   # the run starts here: the new classification head's weights come from `seed`
    model, tok = load_classifier(family)
    with quiet_output():  # the Trainer prints its end-of-run summary: not for learners
        train_classifier(model, tok, train_rows, config, max_steps=steps, logging_strategy="no")
    probs = predict_proba(model, tok, test_rows, max_length=config.max_length)
    labels = np.array([int(r[label_key]) for r in test_rows])
    p_true = probs[np.arange(len(labels)), labels]
    return model, tok, {"accuracy": float((probs.argmax(-1) == labels).mean()),
                        "log_loss": float(-np.log(np.clip(p_true, 1e-9, 1)).mean())}


# --------------------------------------------------------------------------------------------------------------
# The lesson's study, one seed at a time
# --------------------------------------------------------------------------------------------------------------

@dataclass
class QualityStudyConfig(CourseConfig):
    """One seed of the study: the task's size and difficulty, and the fixed fine-tuning budget per training set."""

    error = QualityError

    n_reviews: int = 1200
    negation_rate: float = 0.15
    steps: int = 200          # the same number of optimiser steps for every training set (equal compute)
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_length: int = 40
    family: str = "gpt2"

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "QualityStudyConfig":
        """The cpu profile's tiny models want a large step; the hub GPT-2 of the gpu profile the usual 5e-5."""
        rates = {"learning_rate": 5e-5} if profile == "gpu" else {}
        return cls(**{**rates, **overrides})


TRAINING_SETS = ("clean", "corrupted", "cleaned (all steps)")
RANDOM_CLEANER = "random cleaner (same budget)"  # the negative control of "cleaning beats the corrupted set"
STUDY_SETS = TRAINING_SETS + (RANDOM_CLEANER,)


def study_seed(world, seed: int, config: QualityStudyConfig = QualityStudyConfig(),
               training_sets: Sequence[str] = TRAINING_SETS) -> dict[str, list[dict[str, Any]]]:
    """Everything the lesson measures in one seed, each table's rows tagged with the seed.

    The seed draws the task (`verdict_reviews`), the corruption (design and held-out junk alike), the folds of
    the label-error detector and the fine-tuning. Fine-tunes the `training_sets` named (of `STUDY_SETS`; the random
    cleaner's set is there for comparisons of cleaning with mere shrinking), each for the same number of steps. Returns {"accuracy": one row per training set, plus the majority baseline, the
    classifier before fine-tuning and the meaning reader `verdict_of`; "detector": confident learning, the random
    flagger, and confident learning on shuffled probabilities; "junk": per injected junk kind; "idea junk": the
    rules on `rule_idea_junk`; "steps": the cleaning steps' removal table}.
    """
    unknown = sorted(set(training_sets) - set(STUDY_SETS))
    if unknown:
        raise QualityError(f"study_seed: unknown training_sets {unknown}; known: {list(STUDY_SETS)}")
    rows = verdict_reviews(world, n=config.n_reviews, seed=seed, negation_rate=config.negation_rate)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    corrupted = corrupt(train, CorruptionConfig(seed=seed, junk_kinds=DESIGN_JUNK + HELD_OUT_JUNK))
    cleaned, reports = clean(corrupted)
    before_label_step = clean(corrupted, DEFAULT_PIPELINE[:-1])[0]  # what the label step receives
    probs = out_of_fold_probs(before_label_step, seed=seed)
    truth = label_error_mask(before_label_step)
    detector = detector_report(find_label_issues(before_label_step, probs), truth)
    shuffled = detector_report(find_label_issues(before_label_step, shuffled_probs(probs, seed)), truth)[0]
    detector.append(dict(shuffled, detector="confident learning, shuffled probabilities (control)"))
    labels = [r["label"] for r in test]
    majority = max(labels.count(c) for c in set(labels)) / len(labels)
    accuracy = [{"training set": "majority class (no training)", "rows": 0, "wrong labels": None,
                 "accuracy": majority, "log_loss": None},
                {"training set": "meaning reader (verdict_of, no training)", "rows": 0, "wrong labels": None,
                 "accuracy": meaning_reader_accuracy(test), "log_loss": None},
                {"training set": "no fine-tuning (fresh classifier)", "rows": 0, "wrong labels": None,
                 "accuracy": untrained_accuracy(test, config.family, seed, config.max_length), "log_loss": None}]
    cfg = ClassifierConfig(seed=seed, max_length=config.max_length, learning_rate=config.learning_rate,
                           batch_size=config.batch_size)
    data_of = {"clean": lambda: train, "corrupted": lambda: corrupted, "cleaned (all steps)": lambda: cleaned,
               RANDOM_CLEANER: lambda: random_cleaner(corrupted, len(cleaned), seed)}
    for name in [s for s in STUDY_SETS if s in training_sets]:
        data = data_of[name]()
        _, _, score = train_and_score(data, test, family=config.family, steps=config.steps, seed=seed, config=cfg)
        wrong = float(label_error_mask(data).mean()) if "true_label" in data[0] else 0.0
        accuracy.append({"training set": name, "rows": len(data), "wrong labels": wrong, **score})
    idea = rule_idea_junk(train, seed=seed)
    idea_junk = [{"junk kind": kind, "injected": sum(r["junk_kind"] == kind for r in idea),
                  "share caught": rule_catch_share([r for r in idea if r["junk_kind"] == kind])}
                 for kind in RULE_IDEA_JUNK]
    tag = lambda table: [dict(r, seed=seed) for r in table]  # noqa: E731
    return {"accuracy": tag(accuracy), "detector": tag(detector), "junk": tag(junk_caught(reports[0], corrupted)),
            "idea junk": tag(idea_junk), "steps": tag(removal_table(reports))}


def run_studies(world, seeds: Sequence[int], config: QualityStudyConfig = QualityStudyConfig(),
                extra_seeds: Sequence[int] = (), extra_sets: Sequence[str] = ("corrupted", "cleaned (all steps)"),
                workers: int | None = None) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """`study_seed` for every seed of `seeds` (everything) and of `extra_seeds` (only `extra_sets`: the seeds one
    claim needs beyond the lesson's), side by side on the free cores (`parallel.run_in_processes`).

    Returns ({table: rows over `seeds`}, the accuracy rows of `extra_seeds`). Every seed draws its own task,
    corruption, folds and fine-tuning, so the numbers do not depend on where a seed ran."""
    tasks = ([(world, seed, config) for seed in seeds]
             + [(world, seed, config, tuple(extra_sets)) for seed in extra_seeds])
    outputs = run_in_processes(study_seed, tasks, workers, desc="seeds")
    results: dict[str, list[dict[str, Any]]] = {}
    for output in outputs[:len(seeds)]:
        for key, rows in output.items():
            results.setdefault(key, []).extend(rows)
    more = [row for output in outputs[len(seeds):] for row in output["accuracy"]]
    return results, more
