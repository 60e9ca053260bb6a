"""Noise injectors: exact rates, valid flips, determinism, bounded corruption, clear errors (unit + hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import noise as N
from course_utils import world as W

RATES = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
SEEDS = st.integers(min_value=0, max_value=2**31)
WORD_RATES = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# Texts with words, punctuation and odd whitespace; letters from the keyboard map and beyond (accents, digits).
TEXT = st.text(alphabet=st.sampled_from(list("abcdeiostAIT .,!?'\t\n1é")), max_size=60)
TEXT_ROWS = st.lists(st.fixed_dictionaries({"text": TEXT, "label": st.integers(0, 1)}), min_size=1, max_size=30)
LABEL_ROWS = st.lists(st.fixed_dictionaries({"label": st.integers(0, 3), "text": st.just("x")}), min_size=1,
                      max_size=60)
REVIEWS = [r for r in W.reviews(W.make_world()) if r["split"] == "train"][:200]


def _flip(rows, rate, seed):
    return N.flip_labels(rows, rate, seed, labels=[0, 1, 2, 3])


# --- label noise ------------------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(rows=LABEL_ROWS, rate=RATES, seed=SEEDS)
def test_flipped_fraction_is_exact_and_flips_are_valid_and_different(rows, rate, seed):
    noisy, record = _flip(rows, rate, seed)
    assert abs(len(record.changes) - rate * len(rows)) <= 0.5  # exactly the nearest whole number of rows
    changed = {c["index"] for c in record.changes}
    for i, (before, after) in enumerate(zip(rows, noisy)):
        if i in changed:
            assert after["label"] != before["label"] and after["label"] in (0, 1, 2, 3)
        else:
            assert after == before
        assert after["text"] == before["text"]
    assert rows == [dict(r) for r in rows]  # the input is not mutated


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(rows=LABEL_ROWS, seed=SEEDS)
def test_rate_zero_changes_nothing_and_rate_one_flips_all(rows, seed):
    assert _flip(rows, 0.0, seed)[0] == rows
    noisy, record = _flip(rows, 1.0, seed)
    assert record.fraction == 1.0 and all(a["label"] != b["label"] for a, b in zip(noisy, rows))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(rows=LABEL_ROWS, rate=RATES, seed=SEEDS)
def test_same_seed_same_noise(rows, rate, seed):
    assert _flip(rows, rate, seed) == _flip(rows, rate, seed)


def test_binary_flips_swap_the_label_and_seeds_differ():
    noisy, record = N.flip_labels(REVIEWS, 0.3, seed=0)
    assert record.changed == record.chosen and len(record.chosen) == 60
    assert all(noisy[i]["label"] == 1 - REVIEWS[i]["label"] for i in record.chosen)
    assert N.flip_labels(REVIEWS, 0.3, seed=1)[1].chosen != record.chosen


def test_flip_answers_states_a_different_valid_value():
    qa = W.qa_pairs(W.make_world())[:100]
    noisy, record = N.flip_answers(qa, 0.4, seed=3)
    assert len(record.changes) == 40
    for c in record.changes:
        row = noisy[c["index"]]
        assert row["value"] != qa[c["index"]]["value"] and row["value"] in W.ATTRIBUTES[row["attribute"]]
        assert row["value"] in row["answer"] and qa[c["index"]]["value"] not in row["answer"]


# --- text noise -------------------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(rows=TEXT_ROWS, rate=RATES, seed=SEEDS, word_rate=WORD_RATES, kind=st.sampled_from(["grammar", "typo"]))
def test_text_noise_keeps_labels_and_bounds(rows, rate, seed, word_rate, kind):
    noisy, record = N.inject(rows, kind, rate, seed, word_rate=word_rate)
    assert len(record.chosen) == N.n_noisy(len(rows), rate) and abs(len(record.chosen) - rate * len(rows)) <= 0.5
    assert set(record.changed) <= set(record.chosen)
    for i, (before, after) in enumerate(zip(rows, noisy)):
        assert after["label"] == before["label"]  # text noise never touches the label
        if i not in record.changed:
            assert after == before
            continue
        n_words = len(before["text"].split())
        max_edits = max(1, round(word_rate * n_words))
        if kind == "typo":  # each typo changes one word by at most one character; words are neither added nor lost
            assert len(after["text"].split()) == n_words
            assert abs(len(after["text"]) - len(before["text"])) <= max_edits
        else:  # a grammatical error can drop an article, never add a word
            assert n_words - max_edits <= len(after["text"].split()) <= n_words


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(rows=TEXT_ROWS, seed=SEEDS, kind=st.sampled_from(["grammar", "typo"]))
def test_text_noise_rate_zero_and_determinism(rows, seed, kind):
    assert N.inject(rows, kind, 0.0, seed)[0] == rows
    assert N.inject(rows, kind, 0.5, seed) == N.inject(rows, kind, 0.5, seed)


@pytest.mark.parametrize("kind", ["grammar", "typo"])
def test_every_chosen_review_is_changed(kind):
    noisy, record = N.inject(REVIEWS, kind, 0.4, seed=2)
    assert record.changed == record.chosen and len(record.chosen) == 80
    assert sum(a["text"] != b["text"] for a, b in zip(noisy, REVIEWS)) == 80


def test_grammar_errors_are_the_named_kinds():
    words = "The kettle works and it arrived damaged".split()
    sites = N.grammar_sites(words)
    assert sites["article"] == [0] and 2 in sites["agreement"] and 5 in sites["tense"] and 6 in sites["tense"]
    assert N.grammar_noise([{"text": "a lamp"}], 1.0, seed=0, word_rate=0.0)[0][0]["text"] in (
        "an lamp", "lamp", "lamp a")


def test_typos_use_keyboard_neighbours():
    assert set(N.KEYBOARD_NEIGHBOURS["g"]) == set("tyfhvb")
    assert set(N.KEYBOARD_NEIGHBOURS["q"]) == set("wa")
    assert all(ch in N.KEYBOARD_NEIGHBOURS[o] for ch, ns in N.KEYBOARD_NEIGHBOURS.items() for o in ns)  # symmetric


# --- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "half"])
@pytest.mark.parametrize("kind", N.NOISE_TYPES)
def test_bad_rates_are_refused(kind, rate):
    with pytest.raises(N.NoiseError, match="rate"):
        N.inject(REVIEWS[:5], kind, rate)


@pytest.mark.parametrize("kind", N.NOISE_TYPES)
def test_empty_data_and_unknown_kind_are_refused(kind):
    with pytest.raises(N.NoiseError, match="empty"):
        N.inject([], kind, 0.2)
    with pytest.raises(N.NoiseError, match="unknown noise type"):
        N.inject(REVIEWS[:5], "emoji", 0.2)
    with pytest.raises(N.NoiseError, match="no column"):
        N.inject([{"txt": "a"}], kind, 0.2)


def test_a_single_label_cannot_be_flipped():
    with pytest.raises(N.NoiseError, match="two valid labels"):
        N.flip_labels([{"label": 1}] * 4, 0.5)
