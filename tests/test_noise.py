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


# --- the QA study -----------------------------------------------------------------------------------------------

QA = W.qa_pairs(W.make_world())


def test_qa_split_is_by_person_and_sized():
    config = N.NoiseStudyConfig()
    split = N.qa_study_data(QA, config, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (config.n_train, config.n_val, config.n_test)
    people = [{r["person"] for r in part} for part in (split.train, split.val, split.test)]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])
    assert all(r["split"] == "seen" for r in split.train + split.val + split.test)
    assert N.qa_study_data(QA, config, seed=1).test != split.test
    with pytest.raises(N.NoiseError, match="asked for"):
        N.qa_study_data(QA, N.NoiseStudyConfig(n_train=5000), seed=0)


def test_qa_noise_touches_the_answer_for_labels_and_the_question_otherwise():
    rows = N.qa_study_data(QA, N.NoiseStudyConfig(), seed=0).train
    noisy, record = N.inject_qa(rows, "label", 0.4, seed=1)
    assert len(record.changes) == 128 and all(noisy[i]["question"] == rows[i]["question"] for i in range(len(rows)))
    for kind in ("grammar", "typo"):
        noisy, record = N.inject_qa(rows, kind, 0.3, seed=1)
        assert len(record.chosen) == 96 and len(record.changes) >= 90
        assert all(a["answer"] == b["answer"] and a["value"] == b["value"] for a, b in zip(noisy, rows))
        assert sum(a["question"] != b["question"] for a, b in zip(noisy, rows)) == len(record.changes)
    with pytest.raises(N.NoiseError, match="unknown noise type"):
        N.inject_qa(rows, "emoji", 0.2, 0)


def test_short_answers_and_scores():
    row = {"answer": "Darius Hollowell was born in Corrin.", "value": "Corrin"}
    assert N.short_answer("Darius Hollowell was born in Corrin. Darius", row) == "Corrin"
    assert N.short_answer("Darius Hollowell was born in Morwick.", row) == "Morwick"
    assert N.short_answer("Mira Stroud likes Corrin.", row) == "Mira Stroud likes Corrin"
    assert N.token_f1("Corrin", "Corrin") == 1.0 and N.token_f1("Morwick", "Corrin") == 0.0
    assert N.token_f1("the Corrin", "Corrin") == pytest.approx(2 / 3)
    scores = N.qa_scores(["Darius Hollowell was born in Corrin.", "Mira Stroud likes Corrin."], [row, row])
    assert scores["em"] == 0.5 and scores["f1"] == pytest.approx(0.5 + 0.5 * 2 * (1 / 4) / (1 + 1 / 4))
    with pytest.raises(N.NoiseError, match="as many outputs"):
        N.qa_scores(["a"], [])


def test_trivial_baseline_answers_the_common_value():
    split = N.qa_study_data(QA, N.NoiseStudyConfig(), seed=0)
    base = N.trivial_baseline(split.train, split.test)
    assert base["em"] == base["f1"] and 0.0 < base["em"] < 0.3  # 12 values per attribute: about 1 in 12


def test_plan_and_layer_comparisons():
    runs = N.plan_runs(["gpt2"], [0, 1])
    assert len(runs) == 2 * 10 and N.Run("gpt2", "label", 0.4, 1) in runs
    pairs = N.layer_comparisons(runs, "gpt2", 1)
    assert pairs["label 40%"] == (N.Run("gpt2", "label", 0.4, 1), N.Run("gpt2", N.CLEAN, 0.0, 1))
    assert pairs[N.RERUN] == (N.Run("gpt2", N.RERUN, 0.0, 1), N.Run("gpt2", N.CLEAN, 0.0, 1))
    with pytest.raises(N.NoiseError, match="unknown noise type"):
        N.plan_runs(["gpt2"], [0], points=[("emoji", 0.2)])


def test_findings_are_paired_by_seed():
    rows = []
    for seed, clean in ((0, 0.8), (1, 0.6)):
        rows.append({"family": "gpt2", "seed": seed, "noise": N.CLEAN, "rate": 0.0, "f1": clean, "em": clean})
        rows.append({"family": "gpt2", "seed": seed, "noise": N.RERUN, "rate": 0.0, "f1": 0.0, "em": 0.0})
        for kind, rate in N.FULL_GRID[1:]:
            cost = {"label": 0.5, "grammar": 0.1, "typo": -0.1}[kind] * rate
            rows.append({"family": "gpt2", "seed": seed, "noise": kind, "rate": rate, "f1": clean - cost, "em": 0})
    found = N.accuracy_findings(rows)
    assert found["label cost over input noise (gpt2)"] == pytest.approx({0: 0.2, 1: 0.2})
    assert found["input-noise cost"] == pytest.approx({0: 0.0, 1: 0.0})
    assert found["regulariser gain"] == pytest.approx({0: 0.0, 1: 0.0})
    summary = N.summarise(rows)
    assert N.RERUN not in summary.index.get_level_values("noise")
    assert summary.loc[("gpt2", "label", 0.4), "drop"] == pytest.approx(0.2)


def test_a_run_can_start_from_the_deep_variant():
    deep, _ = N.load_base(N.DEEP)
    base, _ = N.load_base("qwen2")
    assert deep.config.num_hidden_layers == 2 * base.config.num_hidden_layers


def test_a_runs_training_arguments_come_from_its_config():
    """The values lesson 04 trains with: the config's steps, batch and rate, warm-up min(5, steps // 4), the loss
    logged every `log_every` steps, and the run's data seed for both seeds."""
    config = N.NoiseStudyConfig()
    args = N.qa_training_arguments(config, data_seed=7)
    assert (args.max_steps, args.per_device_train_batch_size, args.learning_rate, args.warmup_steps) == (40, 16, 1e-3, 5)
    assert (args.logging_strategy, args.logging_steps, args.seed, args.data_seed) == ("steps", 5, 7, 7)
    short = N.qa_training_arguments(N.NoiseStudyConfig(steps=4, log_every=2), data_seed=0)
    assert (short.max_steps, short.warmup_steps, short.logging_steps, short.seed) == (4, 1, 2, 0)
