"""course_utils.quality: corruption, each cleaning step, label-error detection, augmentation, bad input."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import quality as Q
from course_utils import world as W
from course_utils.data import DataError


@pytest.fixture(scope="module")
def reviews():
    return [r for r in W.reviews(W.make_world()) if r["split"] == "train"]


@pytest.fixture(scope="module")
def corrupted(reviews):
    return Q.corrupt(reviews, Q.CorruptionConfig(seed=3))


# ---- corruption -------------------------------------------------------------------------------------------------

def test_corrupt_adds_each_kind_at_its_rate(reviews, corrupted):
    cfg = Q.CorruptionConfig(seed=3)
    n = len(reviews)
    summary = Q.corruption_summary(corrupted)
    assert summary["flipped"] == round(cfg.flip_rate * n)
    assert summary["duplicate"] == round(cfg.duplicate_rate * n)
    assert summary["near_duplicate"] == round(cfg.near_duplicate_rate * n)
    assert summary["contradiction"] == round(cfg.contradiction_rate * n)
    assert summary["junk"] == round(cfg.junk_rate * n)
    assert summary["rows"] == len(corrupted) == n + sum(summary[k] for k in
                                                        ("duplicate", "near_duplicate", "contradiction", "junk"))
    assert 0.2 < summary["wrong_label_share"] < 0.4


def test_corrupt_keeps_provenance_and_leaves_input_alone(reviews, corrupted):
    before = [dict(r) for r in reviews[:5]]
    Q.corrupt(reviews[:50], Q.CorruptionConfig(seed=1))
    assert reviews[:5] == before
    for r in corrupted:
        if r["corruption"] == "clean":
            assert r["label"] == r["true_label"]
        elif r["corruption"] == "flipped":
            assert r["label"] != r["true_label"]
        elif r["corruption"] == "junk":
            assert r["true_label"] is None and r["junk_kind"]


def test_corrupt_is_deterministic(reviews):
    assert Q.corrupt(reviews[:100], Q.CorruptionConfig(seed=5)) == Q.corrupt(reviews[:100], Q.CorruptionConfig(seed=5))


@pytest.mark.parametrize("field", ["flip_rate", "junk_rate", "duplicate_rate"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_corruption_rates_outside_unit_interval_are_refused(field, value):
    with pytest.raises(Q.QualityError, match=field):
        Q.CorruptionConfig(**{field: value})


def test_corrupt_bad_input():
    with pytest.raises(DataError, match="empty"):
        Q.corrupt([])
    with pytest.raises(DataError, match="'text'"):
        Q.corrupt([{"label": 1}])
    with pytest.raises(Q.QualityError, match="two classes"):
        Q.corrupt([{"text": "a b", "label": 1}] * 3)
    with pytest.raises(Q.QualityError, match="not str"):
        Q.corrupt([{"text": None, "label": 1}, {"text": "x", "label": 0}])


# ---- normalisation and rule filters -----------------------------------------------------------------------------

@given(st.text(alphabet=st.characters(max_codepoint=127, whitelist_categories=("Lu", "Ll", "Nd", "Zs", "Po")),
               max_size=40))
@settings(max_examples=60, deadline=None)
def test_hash_ignores_case_punctuation_and_spacing(text):
    variant = "  " + text.upper().replace(" ", "  ") + " !!"
    assert Q.text_hash(text) == Q.text_hash(variant)


def test_rule_filters_pass_every_clean_review_and_catch_each_kind_of_junk():
    clean = W.reviews(W.make_world())
    assert [Q.rule_violation(r["text"]) for r in clean if Q.rule_violation(r["text"])] == []
    rng = random.Random(0)
    for kind in ("empty", "truncated", "boilerplate", "foreign", "debris"):
        caught = 0
        for r in clean[:40]:
            text, k = Q._junk(rng, r, "text")
            while k != kind:
                text, k = Q._junk(rng, r, "text")
            caught += Q.rule_violation(text) is not None
        assert caught >= 36, f"{kind}: only {caught}/40 caught"


def test_rule_filter_reports_reasons():
    rows = [{"text": "The lamp works well. I like it."}, {"text": ""}, {"text": "spam spam spam spam spam spam."}]
    kept, rep = Q.rule_filter(rows)
    assert kept == rows[:1]
    assert rep.rows_in == 3 and rep.rows_out == 1
    assert set(rep.reasons()) == {"empty", "repeated words"}
    assert "rule filters: 3 -> 1" in str(rep)
    with pytest.raises(Q.QualityError, match="min_alpha_share"):
        Q.QualityRules(min_alpha_share=2)
    with pytest.raises(Q.QualityError, match="min_words"):
        Q.QualityRules(min_words=10, max_words=5)
    with pytest.raises(DataError, match="'text'"):
        Q.rule_filter([{"body": "x"}])


# ---- duplicates and contradictions ------------------------------------------------------------------------------

def test_contradictions_drop_every_copy_of_a_disputed_text():
    rows = [{"text": "It works.", "label": 1}, {"text": "it works!", "label": 0}, {"text": "Fine.", "label": 1},
            {"text": "fine", "label": 1}]
    kept, rep = Q.drop_contradictions(rows)
    assert kept == rows[2:] and len(rep.removed) == 2 and rep.removed[0]["reason"].startswith("same text")


def test_exact_duplicates_keep_the_first_copy():
    rows = [{"text": "The lamp works."}, {"text": "the LAMP works!"}, {"text": "The lamp broke."}]
    kept, rep = Q.drop_exact_duplicates(rows)
    assert kept == [rows[0], rows[2]] and "of row 0" in rep.removed[0]["reason"]


def test_near_duplicates_catch_small_edits_but_not_different_reviews(reviews):
    rng = random.Random(0)
    originals = reviews[:30]
    copies = [{"text": Q.near_duplicate(r["text"], rng)} for r in originals]
    kept, rep = Q.drop_near_duplicates(originals + copies, threshold=0.7)
    assert len(kept) >= 28  # distinct world reviews survive (the world has a few near-identical ones)
    copy_texts = {c["text"] for c in copies}
    assert sum(r["text"] in copy_texts for r in rep.removed) >= 27
    with pytest.raises(Q.QualityError, match="threshold"):
        Q.drop_near_duplicates(originals, threshold=1.2)


def test_jaccard_matrix_is_a_similarity():
    sim = Q.jaccard_matrix(["the red lamp", "the red lamp!", "a blue kettle", ""])
    assert np.allclose(sim, sim.T) and np.allclose(np.diag(sim)[:3], 1) and sim.min() >= 0 and sim.max() <= 1
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] < 0.3


# ---- label errors -----------------------------------------------------------------------------------------------

def test_confident_learning_finds_injected_flips_far_better_than_chance(reviews):
    noisy = Q.corrupt(reviews, Q.CorruptionConfig(flip_rate=0.2, duplicate_rate=0, near_duplicate_rate=0,
                                                  contradiction_rate=0, junk_rate=0, seed=1))
    probs = Q.out_of_fold_probs(noisy, seed=0)
    assert probs.shape == (len(noisy), 2) and np.allclose(probs.sum(1), 1)
    flagged = Q.find_label_issues(noisy, probs)
    truth = Q.label_error_mask(noisy)
    got, chance = Q.detection_scores(flagged, truth), Q.random_flagger_scores(int(flagged.sum()), truth)
    assert got["precision"] > chance["precision"] + 0.4 and got["recall"] > chance["recall"] + 0.4


def test_drop_label_issues_reports_the_model_confidence(reviews):
    noisy = Q.corrupt(reviews[:300], Q.CorruptionConfig(flip_rate=0.1, duplicate_rate=0, near_duplicate_rate=0,
                                                        contradiction_rate=0, junk_rate=0))
    kept, rep = Q.drop_label_issues(noisy)
    assert rep.removed and all("p(given label)=" in r["reason"] for r in rep.removed)
    assert len(kept) + len(rep.removed) == 300


def test_label_issue_bad_input():
    rows = [{"text": "good", "label": 1}] * 3 + [{"text": "bad", "label": 0}] * 3
    with pytest.raises(Q.DataError, match="n_folds=5"):
        Q.out_of_fold_probs(rows)
    with pytest.raises(Q.QualityError, match="shape"):
        Q.find_label_issues(rows, np.full((2, 2), 0.5))
    with pytest.raises(DataError, match="empty"):
        Q.find_label_issues([], np.zeros((0, 2)))


def test_detection_scores_by_hand():
    s = Q.detection_scores([True, True, False, False], [True, False, True, False])
    assert s == {"flagged": 2, "errors": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    r = Q.random_flagger_scores(1, [True, False, False, False])
    assert r["precision"] == 0.25 and r["recall"] == 0.25
    with pytest.raises(Q.QualityError):
        Q.detection_scores([True], [True, False])
    with pytest.raises(Q.QualityError):
        Q.random_flagger_scores(5, [True, False])


def test_label_error_mask_skips_junk():
    rows = [{"label": 1, "true_label": 0}, {"label": 1, "true_label": None}, {"label": 0, "true_label": 0}]
    assert Q.label_error_mask(rows).tolist() == [True, False, False]


# ---- the whole pipeline -----------------------------------------------------------------------------------------

def test_pipeline_removes_junk_and_most_wrong_labels(corrupted):
    kept, reports = Q.clean(corrupted)
    table = Q.removal_table(reports)
    assert [row["step"] for row in table] == [r.step for r in reports]
    assert table[0]["junk"] >= 0.9 * Q.corruption_summary(corrupted)["junk"]
    assert all(r["rows out"] == nxt["rows in"] for r, nxt in zip(table, table[1:]))
    assert Q.corruption_summary(kept)["wrong_label_share"] < 0.5 * Q.corruption_summary(corrupted)["wrong_label_share"]
    assert Q.corruption_summary(kept)["junk"] == 0 and Q.corruption_summary(kept)["contradiction"] == 0


def test_pipeline_bad_input():
    with pytest.raises(Q.QualityError, match="empty"):
        Q.clean([])
    with pytest.raises(Q.QualityError, match="no steps"):
        Q.clean([{"text": "a", "label": 0}], steps=())
    with pytest.raises(Q.QualityError, match="removed every row"):
        Q.clean([{"text": "", "label": 0}], steps=(Q.rule_filter,))
    with pytest.raises(Q.QualityError):
        Q.removal_table([])


# ---- augmentation -----------------------------------------------------------------------------------------------

def test_augment_keeps_labels_and_multiplies_rows(reviews):
    rows = reviews[:50]
    out = Q.augment(rows, copies=2, seed=0)
    assert len(out) == 150 and sum(r["augmented"] for r in out) == 100
    assert Counter_labels(out) == {k: 3 * v for k, v in Counter_labels(rows).items()}
    changed = sum(r["text"] not in {x["text"] for x in rows} for r in out if r["augmented"])
    assert changed >= 80
    assert out == Q.augment(rows, copies=2, seed=0)
    with pytest.raises(Q.QualityError, match="copies"):
        Q.augment(rows, copies=-1)
    with pytest.raises(Q.QualityError, match="alpha"):
        Q.eda("a b c", random.Random(0), alpha=3)
    with pytest.raises(DataError, match="empty"):
        Q.augment([])


@given(st.lists(st.sampled_from(["the", "lamp", "works", "well", "broke", "cheap", "."]), min_size=1, max_size=15),
       st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_eda_never_empties_a_text(words, seed):
    assert Q.eda(" ".join(words), random.Random(seed)).split()


def Counter_labels(rows):
    from collections import Counter

    return dict(Counter(r["label"] for r in rows))


# ---- the verdict task, held-out junk, intervals -----------------------------------------------------------------

@pytest.fixture(scope="module")
def verdicts():
    return Q.verdict_reviews(W.make_world(), n=400, seed=1)


def test_verdict_reviews_are_balanced_deterministic_and_follow_the_majority_meaning(verdicts):
    assert verdicts == Q.verdict_reviews(W.make_world(), n=400, seed=1)
    assert verdicts != Q.verdict_reviews(W.make_world(), n=400, seed=2)
    assert sum(r["label"] for r in verdicts) == 200
    assert sum(r["split"] == "test" for r in verdicts) == 80
    assert 0 < sum(r["negated"] > 0 for r in verdicts) < 400
    for r in verdicts:
        words = r["text"].rstrip(".").replace(",", "").split()
        meaning = 0
        for i, w in enumerate(words):
            if w in Q.PRAISE or w in Q.COMPLAINT:
                good = (w in Q.PRAISE) != (words[i - 1] in Q.NEGATIONS)
                meaning += 1 if good else -1
        assert (meaning > 0) == bool(r["label"]), r["text"]
    # every clean review passes the rule filters: whatever they remove is damage
    assert [r["text"] for r in verdicts if Q.rule_violation(r["text"])] == []


def test_no_single_word_decides_a_verdict(verdicts):
    from collections import defaultdict

    labels = defaultdict(set)
    for r in verdicts:
        for w in set(r["text"].rstrip(".").replace(",", "").split()):
            labels[w].add(r["label"])
    assert all(len(v) == 2 for w, v in labels.items() if w in Q.PRAISE + Q.COMPLAINT)


def test_verdict_reviews_bad_input():
    with pytest.raises(Q.QualityError, match="odd"):
        Q.verdict_reviews(W.make_world(), qualities=2)
    with pytest.raises(Q.QualityError, match="negation_rate"):
        Q.verdict_reviews(W.make_world(), negation_rate=1.5)


def test_corrupt_draws_only_the_junk_kinds_asked_for(verdicts):
    train = [r for r in verdicts if r["split"] == "train"]
    held = Q.corrupt(train, Q.CorruptionConfig(seed=0, junk_rate=0.3, junk_kinds=Q.HELD_OUT_JUNK))
    kinds = {r["junk_kind"] for r in held if r["corruption"] == "junk"}
    assert kinds == set(Q.HELD_OUT_JUNK)
    design = Q.corrupt(train, Q.CorruptionConfig(seed=0, junk_rate=0.3))
    assert {r["junk_kind"] for r in design if r["corruption"] == "junk"} <= set(Q.DESIGN_JUNK)
    with pytest.raises(Q.QualityError, match="junk_kinds"):
        Q.CorruptionConfig(junk_kinds=("gibberish",))


def test_junk_caught_separates_design_and_held_out_kinds(verdicts):
    train = [r for r in verdicts if r["split"] == "train"]
    rows = Q.corrupt(train, Q.CorruptionConfig(seed=0, junk_rate=0.5, junk_kinds=Q.DESIGN_JUNK + Q.HELD_OUT_JUNK))
    _, report = Q.rule_filter(rows)
    table = {r["junk kind"]: r for r in Q.junk_caught(report, rows)}
    assert set(table) == set(Q.DESIGN_JUNK + Q.HELD_OUT_JUNK)
    assert all(r["rules written for it"] == (k in Q.DESIGN_JUNK) for k, r in table.items())
    assert sum(r["injected"] for r in table.values()) == Q.corruption_summary(rows)["junk"]
    assert all(0 <= r["caught"] <= r["injected"] for r in table.values())
    assert table["off_topic"]["share caught"] == 0  # fluent text about something else breaks no rule


def test_intervals_bracket_their_estimates():
    low, high = Q.proportion_interval(30, 100)
    assert low < 0.3 < high and 0 <= low and high <= 1
    with pytest.raises(Q.QualityError):
        Q.proportion_interval(5, 3)
    truth = np.array([True] * 25 + [False] * 75)
    rng = Q.random_flagger_range(20, truth)
    assert rng["precision low"] <= 0.25 <= rng["precision high"]
    with pytest.raises(Q.QualityError):
        Q.random_flagger_range(0, truth)


def test_detector_report_compares_with_a_random_flagger_of_the_same_size():
    truth = np.array([True] * 20 + [False] * 80)
    flagged = np.array([True] * 15 + [False] * 5 + [True] * 5 + [False] * 75)
    det, rnd = Q.detector_report(flagged, truth)
    assert det["flagged"] == rnd["flagged"] == 20
    assert det["precision"] == pytest.approx(0.75) and rnd["precision"] == pytest.approx(0.2)
    assert det["lift"] == pytest.approx(0.75 / 0.2)
    assert det["precision low"] < 0.75 < det["precision high"]
    assert rnd["precision high"] < det["precision low"]


def test_verdict_of_reads_the_meaning(verdicts):
    assert all(Q.verdict_of(r["text"]) == r["label"] for r in verdicts)
    assert Q.verdict_of("The lamp is not flimsy, not noisy and cheap.") == 1
    assert Q.verdict_of("The lamp is great, but hardly sturdy and never quiet.") == 0
    assert Q.verdict_of("The lamp is.") is None


# ---- the rule filters on the junk they were written for: a unit test, not a finding (issue 35) -----------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rule_filters_catch_the_design_junk_of_the_lesson(seed):
    """Lesson 03 used to claim this (recall 1.0); rules graded on the junk they were written for test the rules,
    so it lives here."""
    rows = Q.verdict_reviews(W.make_world(), seed=seed)
    train = [r for r in rows if r["split"] == "train"]
    corrupted = Q.corrupt(train, Q.CorruptionConfig(seed=seed, junk_kinds=Q.DESIGN_JUNK + Q.HELD_OUT_JUNK))
    _, report = Q.rule_filter(corrupted)
    design = [r for r in Q.junk_caught(report, corrupted) if r["rules written for it"]]
    assert {r["junk kind"] for r in design} == set(Q.DESIGN_JUNK)
    assert sum(r["caught"] for r in design) / sum(r["injected"] for r in design) >= 0.9
    assert not [r for r in report.removed if r["corruption"] == "clean"]  # no untouched review is lost to the rules


# ---- controls -------------------------------------------------------------------------------------------------

def test_rule_idea_junk_is_caught_and_is_held_out(verdicts):
    train = [r for r in verdicts if r["split"] == "train"]
    idea = Q.rule_idea_junk(train, per_kind=15, seed=4)
    assert len(idea) == 15 * len(Q.RULE_IDEA_JUNK) and not set(Q.RULE_IDEA_JUNK) & set(Q.DESIGN_JUNK)
    assert Q.rule_idea_junk(train, per_kind=15, seed=4) == idea
    for kind in Q.RULE_IDEA_JUNK:
        assert Q.rule_catch_share([r for r in idea if r["junk_kind"] == kind]) == 1.0
    assert Q.rule_catch_share(train) == 0.0
    with pytest.raises(Q.QualityError):
        Q.rule_idea_junk(train, per_kind=0)


def test_meaning_reader_solves_the_clean_task_and_not_a_flipped_one(verdicts):
    assert Q.meaning_reader_accuracy(verdicts) == 1.0
    flipped = [dict(r, label=1 - r["label"]) for r in verdicts[:40]]
    assert Q.meaning_reader_accuracy(flipped) == 0.0


def test_shuffled_probabilities_keep_the_confidences_but_not_their_rows():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = Q.shuffled_probs(probs, seed=1)
    assert sorted(map(tuple, out)) == sorted(map(tuple, probs))
    assert np.array_equal(Q.shuffled_probs(probs, seed=1), out)
    with pytest.raises(Q.QualityError):
        Q.shuffled_probs(np.array([0.5, 0.5]))


def test_confident_learning_on_shuffled_probabilities_is_no_better_than_chance(verdicts):
    train = [r for r in verdicts if r["split"] == "train"]
    rows = Q.corrupt(train, Q.CorruptionConfig(seed=2, duplicate_rate=0, near_duplicate_rate=0,
                                               contradiction_rate=0, junk_rate=0))
    probs = Q.out_of_fold_probs(rows, seed=2)
    truth = Q.label_error_mask(rows)
    real = Q.detector_report(Q.find_label_issues(rows, probs), truth)[0]
    control = Q.detector_report(Q.find_label_issues(rows, Q.shuffled_probs(probs, seed=2)), truth)[0]
    assert real["lift"] > 1.5 > 1.25 > control["lift"]


def test_random_cleaner_keeps_the_budget_and_the_order():
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(50)]
    kept = Q.random_cleaner(rows, 20, seed=3)
    assert len(kept) == 20 and kept == sorted(kept, key=rows.index)
    assert Q.random_cleaner(rows, 20, seed=3) == kept
    with pytest.raises(Q.QualityError):
        Q.random_cleaner(rows, 51)


def test_study_seed_refuses_unknown_training_sets():
    with pytest.raises(Q.QualityError, match="training_sets"):
        Q.study_seed(W.make_world(), 0, training_sets=("noisy",))
