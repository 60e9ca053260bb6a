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


def test_lexicon_reviewer_and_queue(skewed):
    reviewer = B.lexicon_reviewer(W.POSITIVE_PHRASES, W.NEGATIVE_PHRASES)
    assert reviewer({"text": "The lamp works perfectly.", "label": 1}) == "keep"
    assert reviewer({"text": "The lamp works perfectly.", "label": 0}) == "flip"
    assert reviewer({"text": "The lamp exists.", "label": 0}) == "drop"
    flagged = [i for i, r in enumerate(skewed) if r["skewed"]][:5] + [0]
    queue = B.ReviewQueue(skewed, flagged)
    assert queue.counts()["undecided"] == 6
    counts = queue.run_scripted(reviewer)
    assert counts["flip"] >= 5 and counts["undecided"] == 0
    fixed = queue.apply()
    assert len(fixed) == len(skewed) - counts["drop"]
    assert sum(r["label"] != r["true_label"] for r in fixed) == sum(r["skewed"] for r in skewed) - counts["flip"]
    with pytest.raises(B.BiasError, match="decision"):
        queue.decide(0, "maybe")
    with pytest.raises(B.BiasError, match="not in the queue"):
        queue.decide(1, "keep")
    with pytest.raises(B.BiasError, match="outside"):
        B.ReviewQueue(skewed[:3], [7])
    with pytest.raises(B.BiasError):
        B.lexicon_reviewer([], ["bad"])


def test_review_widget_records_clicks(skewed):
    queue = B.ReviewQueue(skewed, [0, 1, 2])
    box = queue.widget()
    buttons = box.children[2].children
    buttons[1].click()   # flip row 0
    buttons[2].click()   # drop row 1
    assert queue.decisions == {0: "flip", 1: "drop"}
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


def test_plot_bias_vs_accuracy():
    fig = B.plot_bias_vs_accuracy([{"method": "a", "gap": 0.3, "accuracy": 0.9},
                                   {"method": "b", "gap": 0.0, "accuracy": 0.88}])
    assert len(fig.axes[0].collections) == 2
    with pytest.raises(B.BiasError):
        B.plot_bias_vs_accuracy([])
