"""Noise injectors for fine-tuning data: label noise, grammatical noise and typographical noise.

Lesson 04 reproduces, at toy scale, a study of how noisy training data hurts fine-tuning (Li & Sen,
arXiv 2604.12469). Each injector here picks *exactly* `round(rate * n)` training samples (the noise rate is a share
of samples, as in that study), corrupts each chosen sample, and returns the noisy copy of the data together with a
`NoiseRecord` that says which rows changed and how. Everything is seeded: the same seed gives the same noise.

- **label noise** changes what the model is asked to predict: a flipped label is always a *different valid* label
  (or, for Q/A, a different valid answer value). The text is untouched.
- **grammatical noise** breaks agreement ("it work"), articles ("an kettle"), tense ("it breaks after a week"
  for "it broke after a week") and word order on a share of the words of each chosen sample. The label is untouched.
- **typographical noise** swaps, drops, doubles or replaces (by a keyboard neighbour) one character in a share of
  the words of each chosen sample. The label is untouched.

No library offers seeded, recorded, rate-exact text corruption of this kind (nlpaug-style augmenters draw their
own randomness and do not report which rows changed), so the few rules are written out here.
"""

from __future__ import annotations

import gc
import io
import math
import random
import re
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from course_utils import layers
from course_utils.classify import ClassifierConfig, accuracy, load_classifier, train_classifier
from course_utils.config import CourseConfig
from course_utils.errors import CourseError, check_rate, check_rows
from course_utils.world import ATTRIBUTES


NOISE_TYPES = ("label", "grammar", "typo")
LIBRARY_CALLS: dict[str, list[str]] = {}  # plain Python: no library entry points


class NoiseError(CourseError):
    """A noise rate outside [0, 1], empty data, a missing column or an unknown noise type."""


@dataclass
class NoiseRecord:
    """What an injector did: which rows it chose, and the value before and after for each changed row."""

    kind: str
    rate: float
    seed: int
    n_rows: int
    chosen: list[int] = field(default_factory=list)          # row indices picked for corruption (sorted)
    changes: list[dict[str, Any]] = field(default_factory=list)  # {"index", "before", "after"} per changed row

    @property
    def changed(self) -> list[int]:
        """Rows whose content actually differs (a text with no letters cannot get a typo, for example)."""
        return [c["index"] for c in self.changes]

    @property
    def fraction(self) -> float:
        """Share of rows that were changed."""
        return len(self.changes) / self.n_rows if self.n_rows else 0.0


# ---------------------------------------------------------------------------------------------------------------
# shared checks and row selection


def _check_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str], where: str) -> None:
    check_rows(rows, where, keys, error=NoiseError)


def n_noisy(n_rows: int, rate: float) -> int:
    """How many of `n_rows` samples a noise rate corrupts: the nearest whole number to rate * n (halves round up)."""
    return min(n_rows, int(math.floor(rate * n_rows + 0.5 + 1e-9)))


def choose_rows(n_rows: int, rate: float, seed: int) -> list[int]:
    """The sorted indices of exactly `n_noisy(n_rows, rate)` rows, drawn without replacement with `seed`."""
    return sorted(random.Random(seed).sample(range(n_rows), n_noisy(n_rows, rate)))


# ---------------------------------------------------------------------------------------------------------------
# label noise


def flip_labels(rows: Sequence[dict[str, Any]], rate: float, seed: int = 0, label_key: str = "label",
                labels: Sequence[Any] | None = None) -> tuple[list[dict[str, Any]], NoiseRecord]:
    """Copy of `rows` where exactly round(rate * n) labels are replaced by a *different* valid label.

    The valid labels are `labels` if given, else the labels present in the data. The new label is drawn uniformly
    from the other valid labels, so with two classes a flip is simply 0 <-> 1.
    """
    where = "flip_labels"
    rate = check_rate(rate, where, error=NoiseError)
    _check_rows(rows, [label_key], where)
    valid = sorted(set(labels) if labels is not None else {r[label_key] for r in rows}, key=repr)
    bad = [i for i, r in enumerate(rows) if r[label_key] not in valid]
    if bad:
        raise NoiseError(f"{where}: row {bad[0]} has label {rows[bad[0]][label_key]!r}, not one of {valid}")
    chosen = choose_rows(len(rows), rate, seed)
    if chosen and len(valid) < 2:
        raise NoiseError(f"{where}: need at least two valid labels to flip one, got {valid}")
    rng = random.Random(seed + 1)
    out = [dict(r) for r in rows]
    record = NoiseRecord("label", rate, seed, len(rows), chosen)
    for i in chosen:
        before = out[i][label_key]
        after = rng.choice([v for v in valid if v != before])
        out[i][label_key] = after
        record.changes.append({"index": i, "before": before, "after": after})
    return out, record


def flip_answers(rows: Sequence[dict[str, Any]], rate: float, seed: int = 0,
                 values: dict[str, Sequence[str]] | None = None) -> tuple[list[dict[str, Any]], NoiseRecord]:
    """Label noise for Q/A rows (`world.qa_pairs`): the answer states a different valid value of the same attribute.

    Exactly round(rate * n) rows get a wrong `value`, and their `answer` sentence is rewritten to state it.
    `values` maps attribute -> valid values (default: `world.ATTRIBUTES`).
    """

    where = "flip_answers"
    rate = check_rate(rate, where, error=NoiseError)
    _check_rows(rows, ["attribute", "value", "answer"], where)
    values = values or ATTRIBUTES
    for i, r in enumerate(rows):
        if r["attribute"] not in values:
            raise NoiseError(f"{where}: row {i} has unknown attribute {r['attribute']!r}; known: {sorted(values)}")
    chosen = choose_rows(len(rows), rate, seed)
    rng = random.Random(seed + 1)
    out = [dict(r) for r in rows]
    record = NoiseRecord("label", rate, seed, len(rows), chosen)
    for i in chosen:
        row = out[i]
        new = rng.choice([v for v in values[row["attribute"]] if v != row["value"]])
        record.changes.append({"index": i, "before": row["value"], "after": new})
        row["answer"] = row["answer"].replace(row["value"], new)
        row["value"] = new
    return out, record


# ---------------------------------------------------------------------------------------------------------------
# word-level text corruption (shared by grammar and typo noise)

_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)  # leading punctuation, core, trailing punctuation


def _match_case(template: str, word: str) -> str:
    if template[:1].isupper() and word:
        return word[0].upper() + word[1:]
    return word


def _core(word: str) -> str:
    return _WORD.match(word).group(2)


def _corrupt_text(text: str, word_rate: float, rng: random.Random,
                  edit: Callable[[list[str], set[int], random.Random], bool]) -> str:
    """Make about `word_rate` x (number of words) edits to `text` (at least one), keeping its whitespace.

    `edit(words, touched, rng)` picks a word not yet `touched`, changes it (an empty string deletes the word), adds
    the positions it used to `touched`, and returns False when no word is left that it could change.
    """
    parts = re.split(r"(\s+)", text)  # words at even positions, whitespace at odd positions
    slots = [i for i in range(0, len(parts), 2) if parts[i]]
    words = [parts[i] for i in slots]
    if not words:
        return text
    touched: set[int] = set()
    for _ in range(max(1, int(round(word_rate * len(words))))):
        if not edit(words, touched, rng):
            break
    for i, word in zip(slots, words):
        parts[i] = word
    out = []  # drop deleted words together with the whitespace before them (after them, for the first word)
    for i, part in enumerate(parts):
        if i % 2 == 1 and ((i + 1 in slots and parts[i + 1] == "") or (i == 1 and 0 in slots and parts[0] == "")):
            continue
        out.append(part)
    return "".join(out)


def _apply_text_noise(kind: str, rows: Sequence[dict[str, Any]], rate: float, seed: int, word_rate: float,
                      text_key: str, edit) -> tuple[list[dict[str, Any]], NoiseRecord]:
    where = f"{kind}_noise"
    rate = check_rate(rate, where, error=NoiseError)
    word_rate = check_rate(word_rate, where, "word_rate", error=NoiseError)
    _check_rows(rows, [text_key], where)
    for i, r in enumerate(rows):
        if not isinstance(r[text_key], str):
            raise NoiseError(f"{where}: row {i} column {text_key!r} is {type(r[text_key]).__name__}, not str")
    chosen = choose_rows(len(rows), rate, seed)
    rng = random.Random(seed + 1)
    out = [dict(r) for r in rows]
    record = NoiseRecord(kind, rate, seed, len(rows), chosen)
    for i in chosen:
        before = out[i][text_key]
        after = _corrupt_text(before, word_rate, rng, edit)
        if after != before:
            out[i][text_key] = after
            record.changes.append({"index": i, "before": before, "after": after})
    return out, record


# ---------------------------------------------------------------------------------------------------------------
# grammatical noise

AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
             "does": "do", "do": "does", "this": "these", "these": "this", "it": "they", "my": "our"}
ARTICLES = {"a": "an", "an": "a", "the": "a"}
TENSE = {"is": "was", "was": "is", "are": "were", "were": "are", "works": "worked", "worked": "works",
         "bought": "buy", "buy": "bought", "broke": "breaks", "arrived": "arrives", "stopped": "stops",
         "exceeded": "exceeds", "feels": "felt", "looks": "looked", "want": "wanted", "would": "will",
         "will": "would", "has": "had", "had": "has", "grew": "grows", "enjoys": "enjoyed",
         "employs": "employed"}
GRAMMAR_ERRORS = ("agreement", "article", "tense", "word_order")


def grammar_sites(words: list[str], touched: set[int] = frozenset()) -> dict[str, list[int]]:
    """For each kind of grammatical error, the untouched word positions where it can be made."""
    sites: dict[str, list[int]] = {kind: [] for kind in GRAMMAR_ERRORS}
    for pos, word in enumerate(words):
        core = _core(word).lower() if word else ""
        if pos in touched or not core:
            continue
        if core in AGREEMENT or (len(core) > 3 and core.isalpha() and core.endswith("s") and not core.endswith("ss")):
            sites["agreement"].append(pos)
        if core in ARTICLES:
            sites["article"].append(pos)
        if core in TENSE or (len(core) > 4 and core.isalpha() and core.endswith("ed")):
            sites["tense"].append(pos)
        nxt = pos + 1
        if nxt < len(words) and nxt not in touched and words[nxt] and _core(words[nxt]).lower() not in ("", core):
            sites["word_order"].append(pos)
    return sites


def grammar_edit(words: list[str], touched: set[int], rng: random.Random) -> bool:
    """One grammatical error in an untouched word: agreement, article, tense or word order (mutates `words`).

    The kind of error is drawn uniformly among the kinds this sentence allows, then the word among its sites, so
    that word-order swaps (possible almost anywhere) do not crowd out the others.
    """
    sites = grammar_sites(words, touched)
    kinds = [kind for kind in GRAMMAR_ERRORS if sites[kind]]
    if not kinds:
        return False
    kind = rng.choice(kinds)
    pos = rng.choice(sites[kind])
    lead, core, trail = _WORD.match(words[pos]).groups()
    low = core.lower()
    touched.add(pos)
    if kind == "word_order":  # swap the two words, leaving punctuation where it was
        lead2, core2, trail2 = _WORD.match(words[pos + 1]).groups()
        words[pos], words[pos + 1] = lead + core2 + trail, lead2 + core + trail2
        touched.add(pos + 1)
        return True
    if kind == "agreement":
        new = AGREEMENT.get(low) or low[:-1]
    elif kind == "article":
        if low == "the" or rng.random() < 0.5:
            new = ARTICLES[low]
        else:  # drop the article altogether (an empty word is deleted with its whitespace)
            words[pos] = ""
            return True
    else:  # tense: a listed verb, else a regular past "-ed" turned present ("damaged" -> "damages")
        stem = low[:-1] if low[:-2].endswith(("c", "g", "s", "u", "v", "z")) else low[:-2]
        new = TENSE.get(low) or stem + "s"
    words[pos] = lead + _match_case(core, new) + trail
    return True


def grammar_noise(rows: Sequence[dict[str, Any]], rate: float, seed: int = 0, word_rate: float = 0.25,
                  text_key: str = "text") -> tuple[list[dict[str, Any]], NoiseRecord]:
    """Copy of `rows` where exactly round(rate * n) texts get grammatical errors on about `word_rate` of their words.

    Errors: subject-verb agreement ("it work"), articles ("an kettle", or a dropped article), tense ("it breaks
    after a week") and word order (two neighbouring words swapped). Labels are untouched; a text loses at most one
    word per error (a dropped article) and never gains one.
    """
    return _apply_text_noise("grammar", rows, rate, seed, word_rate, text_key, grammar_edit)


# ---------------------------------------------------------------------------------------------------------------
# typographical noise

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Letters that touch each letter on a QWERTY keyboard: left and right, and the staggered rows above/below."""
    offsets = (0.0, 0.25, 0.75)  # how far each row is shifted to the right
    pos = {ch: (r, c + offsets[r]) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}
    return {ch: "".join(o for o, (r2, x2) in pos.items()
                        if o != ch and ((r2 == r and abs(x2 - x) == 1) or (abs(r2 - r) == 1 and abs(x2 - x) < 1)))
            for ch, (r, x) in pos.items()}


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def typo_edit(words: list[str], touched: set[int], rng: random.Random) -> bool:
    """One typing error in an untouched word: swap two neighbouring letters, drop, double or mistype one letter.

    Only letters are touched, so punctuation and the word count stay as they were; the text's length changes by
    at most one character per typo.
    """
    candidates = [pos for pos, w in enumerate(words) if pos not in touched and any(ch.isalpha() for ch in w)]
    if not candidates:
        return False
    pos = rng.choice(candidates)
    touched.add(pos)
    word = words[pos]
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    swaps = [i for i in letters if i + 1 < len(word) and word[i + 1].isalpha() and word[i + 1] != word[i]]
    typed = [i for i in letters if word[i].lower() in KEYBOARD_NEIGHBOURS]
    kinds = ["double"] + (["drop"] if len(word) > 1 else []) + (["swap"] if swaps else []) + (["neighbour"] if typed else [])
    kind = rng.choice(kinds)
    if kind == "swap":
        i = rng.choice(swaps)
        new = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif kind == "drop":
        i = rng.choice(letters)
        new = word[:i] + word[i + 1:]
    elif kind == "double":
        i = rng.choice(letters)
        new = word[:i + 1] + word[i] + word[i + 1:]
    else:
        i = rng.choice(typed)
        sub = rng.choice(KEYBOARD_NEIGHBOURS[word[i].lower()])
        new = word[:i] + (sub.upper() if word[i].isupper() else sub) + word[i + 1:]
    words[pos] = new
    return True


def typo_noise(rows: Sequence[dict[str, Any]], rate: float, seed: int = 0, word_rate: float = 0.25,
               text_key: str = "text") -> tuple[list[dict[str, Any]], NoiseRecord]:
    """Copy of `rows` where exactly round(rate * n) texts get a typo in about `word_rate` of their words.

    Each typo is one character swapped with its neighbour, dropped, doubled, or replaced by a key next to it on a
    QWERTY keyboard. Labels are untouched; each typo changes a text's length by at most one character.
    """
    return _apply_text_noise("typo", rows, rate, seed, word_rate, text_key, typo_edit)


# ---------------------------------------------------------------------------------------------------------------


def inject(rows: Sequence[dict[str, Any]], kind: str, rate: float, seed: int = 0,
           **kwargs) -> tuple[list[dict[str, Any]], NoiseRecord]:
    """One entry point for the study's grid: `kind` is 'label', 'grammar' or 'typo'."""
    injectors = {"label": flip_labels, "grammar": grammar_noise, "typo": typo_noise}
    if kind not in injectors:
        raise NoiseError(f"unknown noise type {kind!r}; choose one of {NOISE_TYPES}")
    return injectors[kind](rows, rate, seed, **kwargs)


def examples(record: NoiseRecord, n: int = 5) -> list[dict[str, Any]]:
    """The first `n` changes of a record as table rows (index, before, after), for a quick look."""
    return [dict(c) for c in record.changes[:n]]


# ---------------------------------------------------------------------------------------------------------------
# the study: fine-tune a classifier on noisy data, for each family, noise type, rate and seed


@dataclass
class StudyConfig(CourseConfig):
    """One fine-tuning recipe for every cell of the grid: same data size, steps and hyper-parameters."""

    error = NoiseError

    n_train: int = 240          # training reviews (noise is injected here only; the test set stays clean)
    n_test: int = 240
    epochs: float = 3.0         # 45 steps of 16
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_length: int = 40        # reviews are 12-25 tokens
    word_rate: float = 0.25     # share of words corrupted in each sample hit by grammar or typo noise

    @classmethod
    def for_profile(cls, profile: str) -> "StudyConfig":
        """cpu: the shipped ~1 M models learn fast at a high learning rate; gpu: hub models (124 M - 500 M
        parameters) need a small one, and get more data."""
        if profile == "gpu":
            return cls(n_train=480, epochs=3.0, learning_rate=3e-5, max_length=48)
        return cls(n_train=240, epochs=3.0, learning_rate=3e-3)


def study_data(rows: Sequence[dict[str, Any]], config: StudyConfig = StudyConfig()) -> tuple[list, list]:
    """The first `n_train` training and `n_test` test rows of `world.reviews` (split column 'train'/'test')."""
    train = [r for r in rows if r.get("split") == "train"][: config.n_train]
    test = [r for r in rows if r.get("split") == "test"][: config.n_test]
    if len(train) < config.n_train or len(test) < config.n_test:
        raise NoiseError(f"study_data: asked for {config.n_train} train / {config.n_test} test rows, "
                         f"the data has {len(train)} / {len(test)}")
    return train, test


@contextmanager
def _quiet():
    """Silence stdout and the weight-loading progress bar of `from_pretrained` for the duration of a run."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass
class NoisyRun:
    """One fine-tuning run of the study: its result row, the tuned model and tokenizer, and the noise record."""

    row: dict[str, Any]
    model: Any
    tokenizer: Any
    record: NoiseRecord


def train_noisy(family: str, train_rows: Sequence[dict[str, Any]], test_rows: Sequence[dict[str, Any]], kind: str,
                rate: float, seed: int, config: StudyConfig = StudyConfig()) -> NoisyRun:
    """Inject `kind` noise at `rate` into the training rows, fine-tune `family`'s classifier, score on clean test.

    The seed fixes the noise draw, the new classification head and the data order, so a noisy run and the clean
    run with the same seed differ *only* by the noise (what the layer analysis compares).
    """
    import time

    from transformers import set_seed


    kwargs = {} if kind == "label" else {"word_rate": config.word_rate}
    noisy, record = inject(train_rows, kind, rate, seed, **kwargs)
    set_seed(seed)
    with _quiet():
        model, tok = load_classifier(family)
    start = time.process_time()
    with _quiet():  # the Trainer prints a metrics line per run; dozens of runs would bury the notebook's tables
        train_classifier(model, tok, noisy, ClassifierConfig(epochs=config.epochs, batch_size=config.batch_size,
                                                              learning_rate=config.learning_rate,
                                                              max_length=config.max_length, seed=seed))
    acc = accuracy(model, tok, list(test_rows), max_length=config.max_length)
    row = {"family": family, "noise": kind, "rate": rate, "seed": seed, "accuracy": acc,
           "noisy_rows": len(record.changes), "cpu_s": round(time.process_time() - start, 2)}
    return NoisyRun(row, model, tok, record)


CLEAN = "none"  # the noise type of the clean runs (rate 0), shared by every noise type's curve
RATES = (0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Run:
    """One cell of the grid and one seed."""

    family: str
    noise: str
    rate: float
    seed: int


FULL_GRID = ((CLEAN, 0.0),) + tuple((kind, rate) for kind in NOISE_TYPES for rate in RATES)


def plan_runs(families: Sequence[str], seeds: Sequence[int],
              points: Sequence[tuple[str, float]] = FULL_GRID) -> list[Run]:
    """The runs for each family and seed at each (noise type, rate) point; `FULL_GRID` is clean + 3 types x 3 rates.

    Concatenate several plans for a thinner grid, e.g. the full grid for one family and a few points for others.
    """
    runs = []
    for kind, rate in points:
        if kind not in NOISE_TYPES + (CLEAN,):
            raise NoiseError(f"plan_runs: unknown noise type {kind!r}; choose from {NOISE_TYPES + (CLEAN,)}")
        check_rate(rate, "plan_runs", error=NoiseError)
    for family in families:
        runs += [Run(family, kind, float(rate), seed) for seed in seeds for kind, rate in points]
    return runs


def layer_comparisons(runs: Sequence[Run], family: str) -> dict[str, tuple[Run, Run]]:
    """Which fine-tuned models the layer analysis compares, per family: each noise type at its highest rate vs
    the clean model of the same seed, and a second clean seed vs the first (the seed-to-seed floor)."""
    mine = [r for r in runs if r.family == family]
    clean = sorted(r.seed for r in mine if r.noise == CLEAN)
    if not clean:
        return {}
    ref = Run(family, CLEAN, 0.0, clean[0])
    pairs = {}
    for kind in NOISE_TYPES:
        rates = [r.rate for r in mine if r.noise == kind and r.seed == ref.seed]
        if rates:
            pairs[f"{kind} {max(rates):.0%}"] = (Run(family, kind, max(rates), ref.seed), ref)
    if len(clean) > 1:
        pairs["clean, other seed"] = (Run(family, CLEAN, 0.0, clean[1]), ref)
    return pairs


def run_study(runs: Sequence[Run], train_rows: Sequence[dict[str, Any]], test_rows: Sequence[dict[str, Any]],
              config: StudyConfig = StudyConfig(), probe_texts: Sequence[str] = (), max_length: int = 40):
    """Run the grid (a progress bar counts the runs) and, per family, the layer analysis of `layer_comparisons`.

    Returns (results, layer_rows): one row per run (family, noise, rate, seed, accuracy ...) and one row per
    compared pair and block (CKA, attention similarity, weight change). Models are dropped once their family
    is analysed, so memory holds one family's handful of models at a time (it matters for hub models on a GPU).
    """
    from tqdm.auto import tqdm


    results, layer_rows = [], []
    families = list(dict.fromkeys(r.family for r in runs))
    bar = tqdm(total=len(runs), desc="fine-tuning runs", unit="run")
    # Each Trainer run ends with a full garbage collection (accelerate frees memory); with the libraries' many
    # long-lived objects that costs ~0.3-0.6 s per run. Freezing the objects that exist now exempts them.
    gc.freeze()
    try:
        for family in families:
            pairs = layer_comparisons(runs, family) if probe_texts else {}
            needed = {run for pair in pairs.values() for run in pair}
            kept, tok = {}, None
            for run in (r for r in runs if r.family == family):
                kind = "label" if run.noise == CLEAN else run.noise
                done = train_noisy(family, train_rows, test_rows, kind, run.rate, run.seed, config)
                row, tok = {**done.row, "noise": run.noise}, done.tokenizer
                results.append(row)
                if run in needed:
                    kept[run] = done.model
                bar.set_postfix_str(f"{family} {run.noise} {run.rate:.0%} acc {row['accuracy']:.2f}")
                bar.update()
            if pairs:
                for name, (a, b) in pairs.items():
                    for lrow in layers.layer_report(kept[a], kept[b], tok, probe_texts, max_length):
                        layer_rows.append({"family": family, "comparison": name, **lrow})
            kept.clear()
        bar.close()
    finally:
        gc.unfreeze()
    return results, layer_rows


def summarise(results) -> "pd.DataFrame":
    """Mean, spread (std over seeds) and seed count per family x noise x rate, and the drop from clean."""
    import pandas as pd

    df = pd.DataFrame(results)
    table = df.groupby(["family", "noise", "rate"]).accuracy.agg(["mean", "std", "min", "max", "count"])
    clean = df[df.noise == CLEAN].groupby("family").accuracy.mean()
    table["drop"] = clean.reindex(table.index.get_level_values("family")).to_numpy() - table["mean"]
    return table.rename(columns={"count": "seeds"})


def plot_accuracy_vs_rate(results, title: str = "test accuracy vs share of noisy training samples"):
    """One panel per family: accuracy (mean over seeds, bars span min-max) against noise rate, per noise type."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(results)
    families = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.3), sharey=True, squeeze=False)
    colours = {"label": "tab:red", "grammar": "tab:blue", "typo": "tab:green"}
    for ax, family in zip(axes[0], families):
        fam = df[df.family == family]
        clean = fam[fam.noise == CLEAN].accuracy
        for kind in NOISE_TYPES:
            part = fam[fam.noise == kind].groupby("rate").accuracy
            if not len(part):
                continue
            stats = pd.concat([pd.DataFrame({"mean": [clean.mean()], "min": [clean.min()], "max": [clean.max()]},
                                            index=[0.0]), part.agg(["mean", "min", "max"])])
            ax.errorbar(stats.index * 100, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        marker="o", capsize=3, color=colours[kind], label=kind)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_title(family)
        ax.set_xlabel("noisy training samples (%)")
    axes[0][0].set_ylabel("test accuracy (clean test set)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def explorer(results, train_rows: Sequence[dict[str, Any]], config: StudyConfig = StudyConfig(), n_examples: int = 4):
    """An ipywidgets control: pick family, noise type and rate; see noisy training examples and the family's curves."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import pandas as pd
    from IPython.display import display

    df = pd.DataFrame(results)
    family = widgets.Dropdown(options=list(dict.fromkeys(df.family)), description="family")
    kind = widgets.Dropdown(options=list(NOISE_TYPES), value="label", description="noise")
    rate = widgets.SelectionSlider(options=[f"{r:.0%}" for r in RATES], value=f"{RATES[-1]:.0%}", description="rate")

    def show(family, kind, rate):
        r = float(rate.rstrip("%")) / 100
        kwargs = {} if kind == "label" else {"word_rate": config.word_rate}
        noisy, record = inject(train_rows, kind, r, seed=0, **kwargs)
        shown = [{"before": train_rows[i]["text"] + f"  [label {train_rows[i]['label']}]",
                  "after": noisy[i]["text"] + f"  [label {noisy[i]['label']}]"} for i in record.changed[:n_examples]]
        display(pd.DataFrame(shown).style.set_properties(**{"text-align": "left"}))
        fig = plot_accuracy_vs_rate(df[df.family == family], title=f"{family}: {kind} noise at {rate} marked")
        ax = fig.axes[0]
        cell = df[(df.family == family) & (df.noise == kind) & (df.rate == r)].accuracy
        if len(cell):
            ax.plot([r * 100], [cell.mean()], marker="*", ms=16, color="black", zorder=5)
        else:
            ax.text(r * 100, 0.55, "not in this grid", ha="center", fontsize=8)
        plt.show()

    out = widgets.interactive_output(show, {"family": family, "kind": kind, "rate": rate})
    return widgets.VBox([widgets.HBox([family, kind, rate]), out])


def accuracy_findings(results, drop_40: float = 0.15, label_gap: float = 0.1,
                      small_margin: float = 0.06) -> dict[str, bool]:
    """The lesson's accuracy claims, each evaluated on the measured runs (only where the grid has the cells).

    - 40 % label noise: mean accuracy more than `drop_40` below clean, and no seed reaching the worst clean seed;
    - at 30 % and 40 %: label noise below typo and grammar noise by more than `label_gap`, with no overlap of seeds;
    - typo and grammar noise at 20 %: mean accuracy within `small_margin` of clean.
    """
    import pandas as pd

    df = pd.DataFrame(results)

    def cell(family, noise, rate):
        return df[(df.family == family) & (df.noise == noise) & (df.rate == rate)].accuracy

    checks = {}
    for family in dict.fromkeys(df.family):
        clean, label40 = cell(family, CLEAN, 0.0), cell(family, "label", 0.4)
        if len(clean) and len(label40):
            checks[f"{family}: 40 % label noise drops accuracy clearly below clean"] = bool(
                label40.mean() < clean.mean() - drop_40 and label40.max() < clean.min())
        for rate in (0.3, 0.4):
            label = cell(family, "label", rate)
            for kind in ("typo", "grammar"):
                other = cell(family, kind, rate)
                if len(label) and len(other):
                    checks[f"{family}: at {rate:.0%} label noise costs more than {kind} noise"] = bool(
                        label.mean() < other.mean() - label_gap and label.max() < other.min())
        for kind in ("typo", "grammar"):
            other = cell(family, kind, 0.2)
            if len(other) and len(clean):
                checks[f"{family}: {kind} noise at 20 % stays within {small_margin} of clean"] = bool(
                    other.mean() > clean.mean() - small_margin)
    return checks
