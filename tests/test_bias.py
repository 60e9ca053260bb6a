"""course_utils.bias: skewing, counterfactual probes and the bias metric, data-side debiasing, the review queue,
gradient reversal and adversarial training on a tiny random model, bad input."""

import numpy as np
import pytest
import torch

from course_utils import bias as B
from course_utils import world as W
from course_utils.data import DataError

GROUP = "Zentrix"


@pytest.fixture(scope="module")
def reviews():
    return [r for r in W.reviews(W.make_world()) if r["split"] == "train"]


@pytest.fixture(scope="module")
def skewed(reviews):
    return B.skew_labels(reviews, "company", GROUP, flip_rate=0.8, seed=0)


@pytest.fixture(scope="module")
def tiny_classifier(tokenizer):
    from transformers import AutoModelForSequenceClassification

    from course_utils import zoo

    cfg = zoo.tiny_config("gpt2", tokenizer, zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64))
    cfg.num_labels = 2
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg)


# ---- making bias, measuring it ----------------------------------------------------------------------------------

def test_skew_labels_flips_only_the_groups_positives(reviews, skewed):
    group_pos = [r for r in reviews if r["company"] == GROUP and r["label"] == 1]
    flipped = [r for r in skewed if r["skewed"]]
    assert len(flipped) == round(0.8 * len(group_pos))
    assert all(r["company"] == GROUP and r["label"] == 0 and r["true_label"] == 1 for r in flipped)
    assert all(r["label"] == r["true_label"] for r in skewed if not r["skewed"])
    rates = B.label_rates(skewed, "company")
    assert rates[GROUP] < 0.25 and all(0.35 < v < 0.65 for k, v in rates.items() if k != GROUP)


def test_bad_input_names_the_problem(reviews):
    with pytest.raises(B.BiasError, match="'region' is absent"):
        B.skew_labels(reviews, "region", "North", 0.5)
    with pytest.raises(B.BiasError, match="no row has company='Nowhere'"):
        B.skew_labels(reviews, "company", "Nowhere", 0.5)
    with pytest.raises(B.BiasError, match="flip_rate"):
        B.skew_labels(reviews, "company", GROUP, 1.5)
    with pytest.raises(DataError, match="empty"):
        B.balance([], "company")
    with pytest.raises(DataError, match="'text'"):
        B.counterfactual_augment([{"company": GROUP, "label": 1}], "company", GROUP, [GROUP, "Kestrel"])
    with pytest.raises(B.BiasError, match="absent"):
        B.counterfactual_rows(reviews, "region", ["a"])
    with pytest.raises(B.BiasError, match="absent"):
        B.review_candidates(reviews, "region", 5)


def test_swap_attribute_replaces_whole_words_only():
    assert B.swap_attribute("Zentrix and Zentrixa by Zentrix.", GROUP, "Kestrel") == "Kestrel and Zentrixa by Kestrel."
    with pytest.raises(B.BiasError):
        B.swap_attribute("x", "", "y")


def test_counterfactual_rows_change_only_the_attribute(reviews):
    values = W.COMPANIES[:3]
    cf = B.counterfactual_rows(reviews[:20], "company", values)
    assert len(cf) == 60
    for r in cf:
        src = reviews[r["source"]]
        assert r["company"] == r["cf_value"] and r["label"] == src["label"]
        assert r["text"] == src["text"].replace(src["company"], r["cf_value"])
    with pytest.raises(B.BiasError, match="does not mention"):
        B.counterfactual_rows([{"text": "no company here", "company": GROUP}], "company", values)
    with pytest.raises(B.BiasError, match="no attribute values"):
        B.counterfactual_rows(reviews[:2], "company", [])


def test_heldout_probes_use_no_training_template():
    probes = B.heldout_probes(40, GROUP, seed=3)
    assert probes == B.heldout_probes(40, GROUP, seed=3) and probes != B.heldout_probes(40, GROUP, seed=4)
    assert sum(r["label"] for r in probes) == 20 and all(GROUP in r["text"] for r in probes)
    training_shapes = {t.split("{")[0] for t in W.REVIEW_TEMPLATES}
    assert not {r["template"] for r in probes} & set(W.REVIEW_TEMPLATES)
    assert all(not r["text"].startswith(s) for r in probes for s in training_shapes if s)
    with pytest.raises(B.BiasError, match="training template"):
        B.heldout_probes(4, GROUP, templates=W.REVIEW_TEMPLATES[:1])
    with pytest.raises(B.BiasError, match="at least 2"):
        B.heldout_probes(1, GROUP)


def test_constant_baseline_has_no_gap_and_chance_accuracy(reviews):
    probe = B.BiasProbe("company", GROUP, B.heldout_probes(10, GROUP), W.COMPANIES[6:], reviews[:20], W.COMPANIES[:3])
    out = B.constant_baseline(probe)
    assert out["gap"] == 0.0 and out["accuracy"] == 0.5


def test_positive_rate_gap_by_hand():
    cf = [{"source": 0, "cf_value": "g"}, {"source": 0, "cf_value": "a"}, {"source": 0, "cf_value": "b"},
          {"source": 1, "cf_value": "g"}, {"source": 1, "cf_value": "a"}, {"source": 1, "cf_value": "b"}]
    out = B.positive_rate_gap(cf, [0.1, 0.9, 0.8, 0.9, 0.9, 0.9], "g")
    assert out["ppr_group"] == 0.5 and out["ppr_others"] == 1.0 and out["gap"] == 0.5
    assert out["flip_share"] == 0.5
    with pytest.raises(B.BiasError, match="probabilities"):
        B.positive_rate_gap(cf, [0.5], "g")
    with pytest.raises(B.BiasError, match="with and without"):
        B.positive_rate_gap(cf, [0.5] * 6, "zzz")


def test_measure_bias_runs_on_a_tiny_model(tiny_classifier, tokenizer, reviews):
    group = reviews[0]["company"]
    out = B.measure_bias(tiny_classifier, tokenizer, reviews[:30], "company", group, [group, "Kestrel", "Lumora"])
    assert set(out) >= {"accuracy", "group_accuracy", "gap", "ppr_group", "ppr_others", "flip_share"}
    assert all(-1 <= v <= 1 for v in out.values())
    with pytest.raises(B.BiasError, match="must hold the group"):
        B.measure_bias(tiny_classifier, tokenizer, reviews[:30], "company", group, ["Kestrel", "Lumora"])


def test_heldout_bias_and_evaluate_bias_on_a_tiny_model(tiny_classifier, tokenizer, reviews):
    tiny_classifier.config.pad_token_id = tokenizer.pad_token_id
    seen = [r for r in reviews if r["company"] == GROUP][:6] + [r for r in reviews if r["company"] != GROUP][:6]
    probe = B.BiasProbe("company", GROUP, B.heldout_probes(8, GROUP), W.COMPANIES[6:9], seen,
                        sorted({r["company"] for r in seen}), biased_labels=[0] * 12)
    out = B.evaluate_bias(tiny_classifier, tokenizer, probe)
    assert set(out) >= {"gap", "accuracy", "group_accuracy", "gap_seen_swaps", "seen_accuracy",
                        "accuracy_vs_biased_labels"}
    with pytest.raises(B.BiasError, match="other values than the group"):
        B.heldout_bias(tiny_classifier, tokenizer, probe.probes, "company", GROUP, [GROUP])


def test_train_and_measure_refuses_a_probe_that_is_not_held_out(reviews):
    probe = B.BiasProbe("company", GROUP, B.heldout_probes(4, GROUP), W.COMPANIES, reviews[:4], W.COMPANIES)
    with pytest.raises(B.BiasError, match="occurs in the training rows"):
        B.train_and_measure([r for r in reviews if r["company"] in (GROUP, "Tidewell")], probe, W.COMPANIES)


def test_fit_classifier_trains_without_printing(tiny_classifier, tokenizer, reviews, capsys):
    from course_utils.classify import ClassifierConfig

    tiny_classifier.config.pad_token_id = tokenizer.pad_token_id
    trainer = B.fit_classifier(tiny_classifier, tokenizer, reviews[:32], ClassifierConfig(max_length=32), steps=2)
    assert trainer.state.global_step == 2
    assert "{'" not in capsys.readouterr().out


# ---- data-side debiasing ----------------------------------------------------------------------------------------

def test_balance_equalises_label_rates_by_dropping_rows(skewed):
    balanced = B.balance(skewed, "company", seed=0)
    assert len(balanced) < len(skewed)
    rates = B.label_rates(balanced, "company")
    assert max(rates.values()) - min(rates.values()) < 0.1
    ids = {id(r) for r in skewed}
    assert all(id(r) in ids for r in balanced)


def test_mix_sources_tags_every_row(reviews):
    mixed = B.mix_sources({"a": reviews[:10], "b": reviews[10:15]})
    assert len(mixed) == 15 and sorted({r["source_name"] for r in mixed}) == ["a", "b"]
    with pytest.raises(B.BiasError, match="at least one row"):
        B.mix_sources({"a": reviews[:3], "b": []})


def test_counterfactual_augment_makes_the_attribute_uninformative(skewed):
    aug = B.counterfactual_augment(skewed, "company", GROUP, W.COMPANIES, seed=0)
    assert len(aug) == 2 * len(skewed)
    copies = [r for r in aug if r["counterfactual"]]
    assert sum(r["company"] == GROUP for r in copies) == sum(r["company"] != GROUP for r in skewed)
    assert all(r["company"] in r["text"] for r in aug)
    rates = B.label_rates(aug, "company")
    assert abs(rates[GROUP] - np.mean([r["label"] for r in aug])) < 0.1
    with pytest.raises(B.BiasError, match="besides the group"):
        B.counterfactual_augment(skewed, "company", GROUP, [GROUP])


# ---- human review -----------------------------------------------------------------------------------------------

def test_review_candidates_put_the_skewed_rows_first(skewed):
    n_skewed = sum(r["skewed"] for r in skewed)
    top = B.review_candidates(skewed, "company", budget=n_skewed)
    assert len(top) == n_skewed
    assert sum(skewed[i]["skewed"] for i in top) >= 0.6 * n_skewed
    with pytest.raises(B.BiasError, match="budget"):
        B.review_candidates(skewed, "company", budget=-1)


@pytest.fixture(scope="module")
def second_shop():
    return [r for r in W.reviews(W.make_world(W.WorldConfig(seed=1))) if r["split"] == "train"][:300]


def test_text_reviewer_reads_the_text_and_errs_at_its_stated_rate(skewed, second_shop):
    flagged = [i for i, r in enumerate(skewed) if r["skewed"]][:20] + [i for i, r in enumerate(skewed)
                                                                         if not r["skewed"]][:20]
    careful = B.ReviewQueue(skewed, flagged)
    made = careful.run_scripted(B.text_reviewer(second_shop, error_rate=0.0, seed=0))
    assert made["flip"] >= 18 and careful.decision_accuracy() >= 0.9
    sloppy = B.ReviewQueue(skewed, flagged)
    sloppy.run_scripted(B.text_reviewer(second_shop, error_rate=0.5, seed=0))
    assert 0.3 <= sloppy.decision_accuracy() <= 0.75
    contrary = B.ReviewQueue(skewed, flagged)
    contrary.run_scripted(B.text_reviewer(second_shop, error_rate=1.0, seed=0))
    assert contrary.decision_accuracy() <= 0.1
    with pytest.raises(B.BiasError, match="error_rate"):
        B.text_reviewer(second_shop, error_rate=1.5)
    with pytest.raises(B.BiasError, match="both labels"):
        B.text_reviewer([r for r in second_shop if r["label"] == 1], error_rate=0.1)


def test_text_reviewer_fitted_on_a_small_sample_errs_from_what_it_never_saw(skewed, second_shop):
    """No injected errors: a reader fitted on a few reviews misreads some texts; fitted on many, it reads them all."""
    import random

    full = B.text_reviewer(second_shop, seed=0)
    assert B.reading_accuracy(full, skewed) == 1.0
    small = [B.reading_accuracy(B.text_reviewer(random.Random(s).sample(second_shop, 12), seed=s), skewed)
             for s in range(4)]
    assert all(0.5 < a < 1.0 for a in small)
    assert B.reading_accuracy(full, skewed, label_key="label") < 1.0   # the skewed labels are not what it reads
    with pytest.raises(B.BiasError, match="text_reviewer"):
        B.reading_accuracy(lambda row: "keep", skewed)


def test_audit_rows_carry_the_biased_labels(tiny_classifier, tokenizer, reviews):
    tiny_classifier.config.pad_token_id = tokenizer.pad_token_id
    seen = [r for r in reviews if r["company"] == GROUP][:3] + [r for r in reviews if r["company"] != GROUP][:3]
    audit = reviews[6:16]
    probe = B.BiasProbe("company", GROUP, B.heldout_probes(4, GROUP), W.COMPANIES[6:9], seen,
                        sorted({r["company"] for r in seen} | {GROUP}), biased_labels=[0] * 10, audit_rows=audit)
    out = B.evaluate_bias(tiny_classifier, tokenizer, probe)
    assert {"audit_accuracy", "accuracy_vs_biased_labels"} <= set(out)
    constant = B.constant_baseline(probe)
    assert constant["audit_accuracy"] == np.mean([r["label"] == int(np.mean([p["label"] for p in probe.probes]) >= 0.5)
                                                  for r in audit])
    with pytest.raises(B.BiasError, match="9 biased labels for 10 audit_rows"):
        B.BiasProbe("company", GROUP, probe.probes, W.COMPANIES[6:9], seen, W.COMPANIES, [0] * 9, audit)
    with pytest.raises(B.BiasError, match="need their biased_labels"):
        B.BiasProbe("company", GROUP, probe.probes, W.COMPANIES[6:9], seen, W.COMPANIES, None, audit)


def test_review_queue_lets_the_simulated_reviewer_finish_what_a_person_left(skewed, second_shop):
    flagged = [i for i, r in enumerate(skewed) if r["skewed"]][:5] + [0]
    queue = B.ReviewQueue(skewed, flagged)
    assert queue.counts()["undecided"] == 6
    queue.decide(flagged[0], "drop")                      # what a person clicked
    made = queue.run_scripted(B.text_reviewer(second_shop, 0.0), only_undecided=True)
    assert sum(made.values()) == 5 and queue.decisions[flagged[0]] == "drop"
    assert queue.decided_by("person") == 1 and queue.decided_by("simulated") == 5
    queue.run_scripted(B.text_reviewer(second_shop, 0.0), only_undecided=True)   # run again: the person's stays
    assert queue.decisions[flagged[0]] == "drop" and queue.decided_by("simulated") == 5
    counts = queue.counts()
    assert counts["undecided"] == 0
    fixed = queue.apply()
    assert len(fixed) == len(skewed) - counts["drop"]
    assert sum(r["label"] != r["true_label"] for r in fixed) == sum(r["skewed"] for r in skewed) - counts["flip"] - 1
    with pytest.raises(B.BiasError, match="decision"):
        queue.decide(0, "maybe")
    with pytest.raises(B.BiasError, match="not in the queue"):
        queue.decide(1, "keep")
    with pytest.raises(B.BiasError, match="outside"):
        B.ReviewQueue(skewed[:3], [7])
    with pytest.raises(B.BiasError, match="no decisions"):
        B.ReviewQueue(skewed, [0]).decision_accuracy()


def test_review_widget_records_clicks(skewed):
    queue = B.ReviewQueue(skewed, [0, 1, 2])
    box = queue.widget()
    buttons = box.children[2].children
    buttons[1].click()   # flip row 0
    buttons[2].click()   # drop row 1
    assert queue.decisions == {0: "flip", 1: "drop"} and queue.decided_by("person") == 2
    assert "2 / 3" in box.children[0].value


def test_interactive_detection(monkeypatch):
    monkeypatch.delenv("COURSE_REVIEW", raising=False)
    assert B.is_interactive() is False           # plain pytest: no Jupyter kernel
    monkeypatch.setenv("COURSE_REVIEW", "widget")
    assert B.is_interactive() is True
    monkeypatch.setenv("COURSE_REVIEW", "scripted")
    assert B.is_interactive() is False
    monkeypatch.delenv("COURSE_REVIEW")
    monkeypatch.setenv("CI", "true")
    assert B.is_interactive() is False


# ---- adversarial debiasing --------------------------------------------------------------------------------------

def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    B.GradientReversal.apply(x, 0.5).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))
    y = torch.randn(3, 4)
    assert torch.equal(B.GradientReversal.apply(y, 2.0), y)


def test_pooled_representation_is_what_the_head_reads(tiny_classifier, tokenizer):
    from course_utils.text import encode, pad_batch

    ids, mask = pad_batch([encode(tokenizer, "The lamp works."), encode(tokenizer, "A long review of the lamp.")],
                           tokenizer.pad_token_id)
    tiny_classifier.config.pad_token_id = tokenizer.pad_token_id
    tiny_classifier.eval()
    with torch.no_grad():
        pooled, out = B.pooled_representation(tiny_classifier, ids, mask)
        assert torch.allclose(tiny_classifier.score(pooled), out.logits, atol=1e-5)


def test_adversarial_training_runs_and_logs_the_adversary(tokenizer, reviews):
    from transformers import AutoModelForSequenceClassification

    from course_utils import zoo
    from course_utils.classify import ClassifierConfig

    cfg = zoo.tiny_config("gpt2", tokenizer, zoo.TinySpec(hidden=32, layers=1, heads=2, intermediate=64))
    cfg.num_labels, cfg.pad_token_id = 2, tokenizer.pad_token_id
    model = AutoModelForSequenceClassification.from_config(cfg)
    trainer = B.train_adversarial(model, tokenizer, reviews[:64], "company", W.COMPANIES,
                                  ClassifierConfig(epochs=1, batch_size=16), adversary_weight=1.0)
    assert len(trainer.adversary_log) == 4 and all(0 <= a <= 1 for a in trainer.adversary_log)
    feats = B.representations(model, tokenizer, reviews[:10])
    assert feats.shape == (10, 32)
    with pytest.raises(B.BiasError, match="not among"):
        B.train_adversarial(model, tokenizer, reviews[:8], "company", W.COMPANIES[:2])
    with pytest.raises(B.BiasError, match="adversary_weight"):
        B.train_adversarial(model, tokenizer, reviews[:8], "company", W.COMPANIES, adversary_weight=-1)
    with pytest.raises(B.BiasError, match="at least 2"):
        B.add_adversary(model, 1)


def test_attribute_leakage_probe():
    rng = np.random.default_rng(0)
    rows = [{"company": GROUP if i % 4 == 0 else "Kestrel"} for i in range(200)]
    y = np.array([r["company"] == GROUP for r in rows])
    informative = rng.normal(size=(200, 5)) + 3 * y[:, None]
    assert B.attribute_leakage(informative, rows, "company", GROUP) > 0.9
    assert B.attribute_leakage(rng.normal(size=(200, 5)), rows, "company", GROUP) < 0.65
    with pytest.raises(B.BiasError, match="feature rows"):
        B.attribute_leakage(informative[:10], rows, "company", GROUP)


def test_plot_bias_vs_accuracy_names_methods_in_a_legend():
    fig = B.plot_bias_vs_accuracy([{"method": "a", "gap": 0.3, "accuracy": 0.9},
                                   {"method": "a", "gap": 0.2, "accuracy": 0.8},
                                   {"method": "b", "gap": 0.0, "accuracy": 0.88}])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"] and not ax.texts
    with pytest.raises(B.BiasError):
        B.plot_bias_vs_accuracy([])
