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

Used in lessons: 04
"""

from __future__ import annotations

import gc
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from course_utils import layers, zoo
from course_utils.config import CourseConfig
from course_utils.errors import CourseError, check_rate, check_rows
from course_utils.evaluate import generate
from course_utils.profiles import dry_run, seed_everything
from course_utils.train import causal_collator, quiet_output, tokenize_prompt_completion, with_finite_guard
from course_utils.world import ATTRIBUTES


NOISE_TYPES = ("label", "grammar", "typo")
KIND_COLOURS = {"label": "tab:red", "grammar": "tab:blue", "typo": "tab:green"}  # each noise type's plot colour
LIBRARY_CALLS = {
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator", "callbacks"],
    "transformers:TrainingArguments": ["max_steps", "per_device_train_batch_size", "learning_rate", "warmup_steps",
                                       "logging_strategy", "logging_steps", "seed", "data_seed"],
}


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


# the study: fine-tune a causal LM to answer questions on noisy data, for each family, noise type, rate and seed
#
# The task is the paper's QA task on our world: "Question: Where was Darius Hollowell born?\nAnswer:" is to be
# completed with the answer sentence " Darius Hollowell was born in Corrin." The base models learned the facts in
# pretraining; fine-tuning teaches them to answer in this format, and they are judged on questions about people
# they were never fine-tuned on. The short answer (the value) is scored by exact match and token F1, as in
# extractive QA.

QA_FORMAT = "Question: {question}\nAnswer:"
CLEAN = "none"          # the noise type of the clean runs (rate 0), shared by every noise type's curve
RERUN = "clean rerun"   # the floor: a clean run that differs from the clean run only by its data order
RATES = (0.2, 0.3, 0.4)
FULL_GRID = ((CLEAN, 0.0),) + tuple((kind, rate) for kind in NOISE_TYPES for rate in RATES)


@dataclass
class NoiseStudyConfig(CourseConfig):
    """One fine-tuning recipe for every cell of the grid: same data, steps and hyper-parameters.

    The budget (steps, learning rate) was chosen on validation people so that a clean model learns the task well
    but not perfectly (room to see a regulariser) and a noisy one still learns something (no collapse)."""

    error = NoiseError

    n_train: int = 320          # training questions (noise is injected here only; validation and test stay clean)
    n_val: int = 64             # validation questions: where the budget was chosen
    n_test: int = 128           # test questions, about other people than training and validation
    steps: int = 40             # optimizer steps of `batch_size` questions
    batch_size: int = 16
    learning_rate: float = 1e-3
    max_length: int = 48        # question + answer are about 20 tokens
    grammar_word_rate: float = 0.15   # the paper's rates: ~15 % of words get a grammatical error,
    typo_word_rate: float = 0.10      # ~10 % a typo, in each chosen sample
    rerun_offset: int = 1000    # the floor's data order: seed + rerun_offset
    log_every: int = 5          # training-loss curve resolution (steps)
    n_probe: int = 64           # test questions used as probe texts by the layer analysis

    @classmethod
    def for_profile(cls, profile: str) -> "NoiseStudyConfig":
        """cpu: the shipped ~1 M models at a high learning rate; gpu: hub models (124 M - 500 M parameters) need a
        small one and more steps. A dry run (stand-ins, `COURSE_REHEARSAL=1`) runs the gpu code path on the
        smallest grid that still exercises every step: it checks code, not findings."""
        if profile == "gpu" and dry_run():
            return cls(n_train=32, n_val=16, n_test=16, steps=4, learning_rate=3e-5, log_every=2, n_probe=8)
        if profile == "gpu":
            return cls(steps=120, learning_rate=3e-5)
        return cls()


@dataclass
class QASplit:
    """Q/A rows about seen people, split by person: nobody is in two of train / val / test."""

    train: list
    val: list
    test: list


def qa_study_data(qa_rows: Sequence[dict[str, Any]], config: NoiseStudyConfig = NoiseStudyConfig(),
                  seed: int = 0) -> QASplit:
    """Split `world.qa_pairs` rows of *seen* people (the base model knows their facts) by person, drawn with `seed`:
    test people first, then validation people, the rest for training (their rows shuffled, the first `n_train`)."""
    rows = [r for r in qa_rows if r.get("split") == "seen"]
    _check_rows(rows, ["person", "attribute", "question", "answer", "value"], "qa_study_data")
    people = sorted({r["person"] for r in rows})
    random.Random(seed).shuffle(people)
    per_person = max(1, len(rows) // max(1, len(people)))
    n_test_p, n_val_p = math.ceil(config.n_test / per_person), math.ceil(config.n_val / per_person)
    test_p, val_p = set(people[:n_test_p]), set(people[n_test_p:n_test_p + n_val_p])
    rng = random.Random(seed + 1)
    train = [r for r in rows if r["person"] not in test_p | val_p]
    rng.shuffle(train)
    test = [r for r in rows if r["person"] in test_p][: config.n_test]
    val = [r for r in rows if r["person"] in val_p][: config.n_val]
    if len(train) < config.n_train or len(test) < config.n_test or len(val) < config.n_val:
        raise NoiseError(f"qa_study_data: asked for {config.n_train} / {config.n_val} / {config.n_test} rows, "
                         f"the seen people give {len(train)} / {len(val)} / {len(test)}")
    return QASplit(train[: config.n_train], val, test)


def inject_qa(rows: Sequence[dict[str, Any]], kind: str, rate: float, seed: int,
              config: NoiseStudyConfig = NoiseStudyConfig()) -> tuple[list[dict[str, Any]], NoiseRecord]:
    """The study's noise on Q/A rows: label noise states another value of the attribute in the answer;
    grammatical and typographical noise corrupt the *question* at the paper's word rates (the answer stays right)."""
    if kind == "label":
        return flip_answers(rows, rate, seed)
    if kind == "grammar":
        return grammar_noise(rows, rate, seed, word_rate=config.grammar_word_rate, text_key="question")
    if kind == "typo":
        return typo_noise(rows, rate, seed, word_rate=config.typo_word_rate, text_key="question")
    raise NoiseError(f"inject_qa: unknown noise type {kind!r}; choose one of {NOISE_TYPES}")


# ---- scoring: exact match and token F1 of the short answer ----

def _tokens(text: str) -> list[str]:
    """SQuAD-style normalisation: lower case, punctuation dropped, split on whitespace."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 between two answers (SQuAD): harmonic mean of token precision and recall, 0 when nothing overlaps."""
    pred, ref = _tokens(prediction), _tokens(reference)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(ref))
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def short_answer(generated: str, row: dict[str, Any]) -> str:
    """The short answer in a generated answer sentence: what follows the reference sentence's words before the
    value ("Darius Hollowell was born in" -> "Corrin"); when the model left that format, its whole first sentence
    (so F1 still gives partial credit if the value is in it, and exact match does not)."""
    first = re.split(r"[.\n]", generated.strip(), maxsplit=1)[0].strip()
    prefix = row["answer"].rsplit(row["value"], 1)[0].strip()
    if prefix and _tokens(first)[: len(_tokens(prefix))] == _tokens(prefix):
        return " ".join(first.split()[len(prefix.split()):])
    return first


def qa_scores(outputs: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Exact match and token F1 of the short answers in `outputs` against each row's `value`, averaged."""
    if len(outputs) != len(rows) or not rows:
        raise NoiseError(f"qa_scores: need as many outputs as rows (at least one), got {len(outputs)} and {len(rows)}")
    shorts = [short_answer(o, r) for o, r in zip(outputs, rows)]
    em = sum(_tokens(s) == _tokens(r["value"]) for s, r in zip(shorts, rows)) / len(rows)
    f1 = sum(token_f1(s, r["value"]) for s, r in zip(shorts, rows)) / len(rows)
    return {"em": em, "f1": f1}


def score_qa(model, tokenizer, rows: Sequence[dict[str, Any]], max_new_tokens: int = 12) -> dict[str, float]:
    """Greedy answers to the rows' questions, scored by `qa_scores`."""
    outputs = generate(model, tokenizer, [QA_FORMAT.format(question=r["question"]) for r in rows], max_new_tokens,
                       batch_size=128)
    return qa_scores(outputs, rows)


def trivial_baseline(train_rows: Sequence[dict[str, Any]], test_rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """What a model scores that learned the format but nothing about people: the training set's most common value
    of the asked attribute, in the right sentence."""
    from collections import Counter

    common = {a: Counter(r["value"] for r in train_rows if r["attribute"] == a).most_common(1)[0][0]
              for a in {r["attribute"] for r in train_rows}}
    outputs = [r["answer"].rsplit(r["value"], 1)[0] + common.get(r["attribute"], "") + "." for r in test_rows]
    return qa_scores(outputs, test_rows)


# ---- training ----

@dataclass
class NoisyRun:
    """One fine-tuning run of the study: its result row, training-loss curve, the tuned model and tokenizer."""

    row: dict[str, Any]
    curve: list[dict[str, Any]]
    model: Any
    tokenizer: Any


DEEP = "qwen2_deep"   # the 8-block Qwen2 of `zoo.VARIANTS`, for the question of upper versus lower blocks


def load_base(family: str):
    """The base model a run starts from: a family ('gpt2', 'qwen2', 'llama') or a variant named
    '<family>_<variant>' (e.g. `DEEP`), shipped under data_samples/models/."""
    base, _, variant = family.partition("_")
    return zoo.load_variant(base, variant) if variant else zoo.load(family)


def qa_training_arguments(config: NoiseStudyConfig, data_seed: int):
    """`config`'s `TrainingArguments` for one run: its steps, batch and learning rate (the config's own fields), a
    short warm-up (a quarter of the steps, at most 5), the loss logged every `log_every` steps, and this run's
    data order and initialisation drawn with `data_seed`."""
    return config.training_arguments(warmup_steps=min(5, config.steps // 4), logging_steps=config.log_every,
                                     seed=data_seed, data_seed=data_seed)


def train_qa(family: str, rows: Sequence[dict[str, Any]], data_seed: int,
             config: NoiseStudyConfig = NoiseStudyConfig()):
    """Fine-tune `family`'s base model on Q/A rows (loss on the answer only) for `config.steps` steps; the data
    order is drawn with `data_seed`. Returns (model, tokenizer, training-loss curve)."""
    from transformers import Trainer

    seed_everything(data_seed)   # the run starts here
    with quiet_output():
        model, tok = load_base(family)
    data = tokenize_prompt_completion(tok, [QA_FORMAT.format(question=r["question"]) for r in rows],
                                      [" " + r["answer"] for r in rows], config.max_length)
    args = qa_training_arguments(config, data_seed)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=causal_collator(tok),
                      callbacks=with_finite_guard())
    with quiet_output():  # the Trainer prints a metrics line per run; a hundred runs would bury the notebook's tables
        trainer.train()
    curve = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    return model, tok, curve


def train_noisy(family: str, split: QASplit, kind: str, rate: float, seed: int,
                config: NoiseStudyConfig = NoiseStudyConfig(), data_seed: int | None = None) -> NoisyRun:
    """Inject `kind` noise at `rate` (seeded) into the training rows, fine-tune, score on the clean test questions.

    `seed` fixes the noise draw and, unless `data_seed` is given, the data order: a noisy run and the clean run of
    the same seed differ *only* by the noise (the base weights are the same; no new head is initialised)."""
    import time

    data_seed = seed if data_seed is None else data_seed
    noisy, record = (list(split.train), None) if rate == 0 else inject_qa(split.train, kind, rate, seed, config)
    start = time.process_time()
    model, tok, curve = train_qa(family, noisy, data_seed, config)
    scores = score_qa(model, tok, split.test)
    row = {"family": family, "noise": kind, "rate": rate, "seed": seed, "data_seed": data_seed, **scores,
           "noisy_rows": len(record.changes) if record else 0, "final_loss": curve[-1]["loss"] if curve else None,
           "cpu_s": round(time.process_time() - start, 2)}
    return NoisyRun(row, curve, model, tok)


@dataclass(frozen=True)
class Run:
    """One cell of the grid and one seed."""

    family: str
    noise: str
    rate: float
    seed: int


def plan_runs(families: Sequence[str], seeds: Sequence[int],
              points: Sequence[tuple[str, float]] = FULL_GRID) -> list[Run]:
    """The runs for each family and seed at each (noise type, rate) point; `FULL_GRID` is clean + 3 types x 3 rates.
    The layer analysis adds one clean rerun per family and seed (`RERUN`)."""
    for kind, rate in points:
        if kind not in NOISE_TYPES + (CLEAN, RERUN):
            raise NoiseError(f"plan_runs: unknown noise type {kind!r}; choose from {NOISE_TYPES + (CLEAN,)}")
        check_rate(rate, "plan_runs", error=NoiseError)
    return [Run(family, kind, float(rate), seed) for family in families for seed in seeds for kind, rate in points]


def layer_comparisons(runs: Sequence[Run], family: str, seed: int) -> dict[str, tuple[Run, Run]]:
    """Which models the layer analysis compares for one family and seed: each noise type at its highest rate, and
    the clean rerun (the floor), each against the clean model of the same seed."""
    mine = [r for r in runs if r.family == family and r.seed == seed]
    ref = Run(family, CLEAN, 0.0, seed)
    if ref not in mine:
        return {}
    pairs = {}
    for kind in NOISE_TYPES:
        rates = [r.rate for r in mine if r.noise == kind]
        if rates:
            pairs[f"{kind} {max(rates):.0%}"] = (Run(family, kind, max(rates), seed), ref)
    pairs[RERUN] = (Run(family, RERUN, 0.0, seed), ref)
    return pairs


def run_study(runs: Sequence[Run], splits: dict[int, QASplit], config: NoiseStudyConfig = NoiseStudyConfig(),
              layer_analysis: bool = True):
    """Run the grid (a progress bar counts the runs) and, per family and seed, the layer analysis.

    `splits` maps each seed to its `QASplit`. Returns (results, curves, layer_rows): one row per run, one row per
    logged training step, and one row per compared pair and block (`layers.change_report`). Each (family, seed)
    keeps only the handful of models it compares, then drops them.
    """
    from tqdm.auto import tqdm

    runs = list(runs)
    for family, seed in dict.fromkeys((r.family, r.seed) for r in runs):
        if layer_analysis and Run(family, RERUN, 0.0, seed) not in runs:
            runs.append(Run(family, RERUN, 0.0, seed))
    missing = sorted({r.seed for r in runs} - set(splits))
    if missing:
        raise NoiseError(f"run_study: no data split for seed(s) {missing}")
    results, curves, layer_rows = [], [], []
    bar = tqdm(total=len(runs), desc="fine-tuning runs", unit="run")
    # Each Trainer run ends with a full garbage collection (accelerate frees memory); with the libraries' many
    # long-lived objects that costs ~0.3-0.6 s per run. Freezing the objects that exist now exempts them.
    gc.freeze()
    try:
        for family, seed in dict.fromkeys((r.family, r.seed) for r in runs):
            pairs = layer_comparisons(runs, family, seed) if layer_analysis else {}
            needed = {run for pair in pairs.values() for run in pair}
            kept, tok = {}, None
            for run in (r for r in runs if r.family == family and r.seed == seed):
                rerun = run.noise == RERUN
                done = train_noisy(family, splits[seed], CLEAN if rerun else run.noise, run.rate, seed, config,
                                   data_seed=seed + config.rerun_offset if rerun else None)
                row, tok = {**done.row, "noise": run.noise}, done.tokenizer
                results.append(row)
                curves += [{"family": family, "noise": run.noise, "rate": run.rate, "seed": seed, **c}
                           for c in done.curve]
                if run in needed:
                    kept[run] = done.model
                bar.set_postfix_str(f"{family} {run.noise} {run.rate:.0%} F1 {row['f1']:.2f}")
                bar.update()
            probes = [QA_FORMAT.format(question=r["question"]) + " " + r["answer"]
                      for r in splits[seed].test[: config.n_probe]]
            for name, (a, b) in pairs.items():
                for lrow in layers.change_report(kept[a], kept[b], tok, probes, config.max_length):
                    layer_rows.append({"family": family, "seed": seed, "comparison": name, **lrow})
            kept.clear()
        bar.close()
    finally:
        gc.unfreeze()
    return results, curves, layer_rows


# ---- reading the grid ----

def summarise(results) -> "pd.DataFrame":
    """Mean F1 and exact match, spread (std, min, max over seeds) and seed count per family x noise x rate, and
    the drop in F1 from clean (clean reruns, the layer floor, are left out)."""
    import pandas as pd

    df = pd.DataFrame(results)
    df = df[df.noise != RERUN]
    table = df.groupby(["family", "noise", "rate"]).f1.agg(["mean", "std", "min", "max", "count"])
    table.insert(0, "em", df.groupby(["family", "noise", "rate"]).em.mean())
    clean = df[df.noise == CLEAN].groupby("family").f1.mean()
    table["drop"] = clean.reindex(table.index.get_level_values("family")).to_numpy() - table["mean"]
    return table.rename(columns={"count": "seeds", "mean": "f1"})


def drops_per_seed(results) -> "pd.DataFrame":
    """Per family, seed, noise type and rate: clean F1 of that seed minus the noisy run's F1 (the paired drop)."""
    import pandas as pd

    df = pd.DataFrame(results)
    clean = df[df.noise == CLEAN].set_index(["family", "seed"]).f1
    noisy = df[df.noise.isin(NOISE_TYPES)].copy()
    noisy["drop"] = clean.reindex(pd.MultiIndex.from_frame(noisy[["family", "seed"]])).to_numpy() - noisy.f1
    return noisy[["family", "seed", "noise", "rate", "f1", "drop"]].reset_index(drop=True)


def accuracy_findings(results, small_rate: float = 0.2) -> dict[str, dict[Any, float]]:
    """The per-seed numbers behind the lesson's accuracy claims, keyed by what each measures:

    - `label cost over input noise (<family>)`: F1 drop at 40 % label noise minus the mean drop of typo and
      grammar noise at 40 %, per seed;
    - `input-noise cost`: mean F1 drop of typo and grammar noise over 20-40 % and the families, per seed;
    - `regulariser gain`: F1 of typo and grammar noise at `small_rate` minus clean, mean over types and families.
    """
    d = drops_per_seed(results)
    out: dict[str, dict[Any, float]] = {}
    for family in dict.fromkeys(d.family):
        f = d[(d.family == family) & (d.rate == 0.4)].pivot(index="seed", columns="noise", values="drop")
        out[f"label cost over input noise ({family})"] = (f["label"] - f[["typo", "grammar"]].mean(axis=1)).to_dict()
    inputs = d[d.noise.isin(["typo", "grammar"])]
    out["input-noise cost"] = inputs.groupby("seed")["drop"].mean().to_dict()
    out["regulariser gain"] = (-inputs[inputs.rate == small_rate].groupby("seed")["drop"].mean()).to_dict()
    return out


def plot_f1_vs_rate(results, baseline: float | None = None,
                    title: str = "test F1 vs share of noisy training samples"):
    """One panel per family: F1 (mean over seeds, bars span min-max) against noise rate, per noise type; the
    trivial baseline as a dotted line."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(results)
    df = df[df.noise != RERUN]
    families = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.3), sharey=True, squeeze=False)
    for ax, family in zip(axes[0], families):
        fam = df[df.family == family]
        clean = fam[fam.noise == CLEAN].f1
        for kind in NOISE_TYPES:
            part = fam[fam.noise == kind].groupby("rate").f1
            if not len(part):
                continue
            stats = pd.concat([pd.DataFrame({"mean": [clean.mean()], "min": [clean.min()], "max": [clean.max()]},
                                            index=[0.0]), part.agg(["mean", "min", "max"])])
            ax.errorbar(stats.index * 100, stats["mean"],
                        yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        marker="o", capsize=3, color=KIND_COLOURS[kind], label=kind)
        if baseline is not None:
            ax.axhline(baseline, color="grey", ls=":", lw=1, label="trivial baseline")
        ax.set_ylim(0, 1.0)
        ax.set_title(family)
        ax.set_xlabel("noisy training samples (%)")
    axes[0][0].set_ylabel("test F1 (clean test questions)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_learning_curves(curves, rate: float = 0.4):
    """Training loss against step, one panel per family: clean and each noise type at `rate` (mean over seeds).
    Label noise keeps the loss high: a share of the answers cannot be predicted from the question."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(curves)
    families = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.0), sharey=True, squeeze=False)
    for ax, family in zip(axes[0], families):
        fam = df[df.family == family]
        for kind, colour in ((CLEAN, "black"), *KIND_COLOURS.items()):
            part = fam[(fam.noise == kind) & (fam.rate == (0.0 if kind == CLEAN else rate))]
            if len(part):
                mean = part.groupby("step").loss.mean()
                ax.plot(mean.index, mean.values, color=colour, label=kind if kind != CLEAN else "clean")
        ax.set_yscale("log")
        ax.set_title(family)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("training loss per answer token")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def explorer(results, rows: Sequence[dict[str, Any]], config: NoiseStudyConfig = NoiseStudyConfig(),
             n_examples: int = 4):
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
        noisy, record = inject_qa(rows, kind, r, 0, config)
        shown = [{"before": f"{rows[i]['question']} -> {rows[i]['answer']}",
                  "after": f"{noisy[i]['question']} -> {noisy[i]['answer']}"} for i in record.changed[:n_examples]]
        display(pd.DataFrame(shown).style.set_properties(**{"text-align": "left"}))
        fig = plot_f1_vs_rate(df[df.family == family], title=f"{family}: {kind} noise at {rate} marked")
        cell = df[(df.family == family) & (df.noise == kind) & (df.rate == r)].f1
        if len(cell):
            fig.axes[0].plot([r * 100], [cell.mean()], marker="*", ms=16, color="black", zorder=5)
        plt.show()

    out = widgets.interactive_output(show, {"family": family, "kind": kind, "rate": rate})
    return widgets.VBox([widgets.HBox([family, kind, rate]), out])
