"""Layer analysis: CKA properties (hypothesis), weight change and attention similarity on tiny random models."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import layers as L
from course_utils import zoo

PROBE = ["The Zentrix kettle works perfectly. Highly recommended.", "My new lamp from Kestrel arrived damaged.",
         "Mira Stroud was born in Veltra.", "Five stars from me."]
SHAPES = st.tuples(st.integers(8, 40), st.integers(2, 12), st.integers(0, 2**31))
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _rep(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def _direct_cka(x, y):
    """CKA by its HSIC definition, with explicit n x n Gram matrices and the centring matrix H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


@SETTINGS
@given(shape=SHAPES)
def test_cka_with_itself_is_one(shape):
    x = _rep(*shape)
    assert L.linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


@SETTINGS
@given(shape=SHAPES, scale=st.floats(0.01, 100.0))
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(shape, scale):
    n, d, seed = shape
    x = _rep(n, d, seed)
    q, _ = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(d, d)))
    assert L.linear_cka(x, scale * x @ q) == pytest.approx(1.0, abs=1e-9)
    y = _rep(n, d + 1, seed + 2)
    assert L.linear_cka(x @ q, y) == pytest.approx(L.linear_cka(x, y), abs=1e-9)


@SETTINGS
@given(shape=SHAPES, d2=st.integers(1, 12))
def test_cka_matches_the_direct_formula_and_is_symmetric(shape, d2):
    n, d, seed = shape
    x, y = _rep(n, d, seed), _rep(n, d2, seed + 7)
    assert L.linear_cka(x, y) == pytest.approx(_direct_cka(x, y), abs=1e-9)
    assert L.linear_cka(x, y) == pytest.approx(L.linear_cka(y, x), abs=1e-12)
    assert 0.0 <= L.linear_cka(x, y) <= 1.0 + 1e-12


def test_cka_of_unrelated_representations_is_small():
    assert L.linear_cka(_rep(2000, 4, 0), _rep(2000, 4, 1)) < 0.02


def test_cka_errors():
    with pytest.raises(L.LayerError, match="same number of rows"):
        L.linear_cka(np.ones((4, 2)), np.ones((5, 2)))
    with pytest.raises(L.LayerError, match="constant"):
        L.linear_cka(np.ones((4, 2)), _rep(4, 2, 0))


@pytest.fixture(scope="module")
def models(tokenizer):
    """A tiny random classifier per family, and a perturbed copy whose top block alone changed."""
    from transformers import AutoModelForSequenceClassification

    from course_utils.peft_methods import transformer_blocks

    out = {}
    for family in zoo.FAMILIES:
        torch.manual_seed(0)
        config = zoo.tiny_config(family, tokenizer, zoo.TinySpec(hidden=32, layers=4, heads=2, intermediate=64))
        config.num_labels = 2
        config.initializer_range = 0.3  # peaky attention, so that a weight change moves the attention maps too
        model = AutoModelForSequenceClassification.from_config(config)
        tuned = copy.deepcopy(model)
        with torch.no_grad():
            for p in transformer_blocks(tuned)[-1].parameters():
                p.add_(0.5 * torch.randn_like(p) * (p.std() if p.numel() > 1 and p.std() > 0 else 1.0))
        out[family] = (model, tuned)
    return out


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_a_model_against_itself_is_maximally_similar(models, tokenizer, family):
    model, _ = models[family]
    report = L.layer_report(model, copy.deepcopy(model), tokenizer, PROBE)
    assert len(report) == 4
    for row in report:
        assert row["cka"] == pytest.approx(1.0, abs=1e-6)
        assert row["attention_sim"] == pytest.approx(1.0, abs=1e-6)
        assert row["weight_change"] == row["weight_change_attention"] == row["weight_change_mlp"] == 0.0


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_a_change_in_the_top_block_shows_only_there(models, tokenizer, family):
    model, tuned = models[family]
    report = L.layer_report(tuned, model, tokenizer, PROBE)
    lower, upper = report[:-1], report[-1]
    assert all(r["weight_change"] == 0.0 and r["cka"] == pytest.approx(1.0, abs=1e-6) for r in lower)
    assert all(r["attention_sim"] == pytest.approx(1.0, abs=1e-6) for r in lower)
    assert upper["weight_change"] > 0.1 and upper["weight_change_attention"] > 0 and upper["weight_change_mlp"] > 0
    assert upper["cka"] < 0.999 and upper["attention_sim"] < 0.999
    assert model.config._attn_implementation == tuned.config._attn_implementation == "sdpa"  # restored


def test_weight_change_refuses_different_depths(models, tokenizer):
    from transformers import AutoModelForSequenceClassification

    shallow = AutoModelForSequenceClassification.from_config(
        zoo.tiny_config("gpt2", tokenizer, zoo.TinySpec(hidden=32, layers=2, heads=2)))
    with pytest.raises(L.LayerError, match="blocks"):
        L.weight_change(models["gpt2"][0], shallow)


def test_upper_vs_lower():
    assert L.upper_vs_lower([1, 2, 3, 4]) == (1.5, 3.5)
    assert L.upper_vs_lower([1, 9, 3]) == (1.0, 3.0)
    with pytest.raises(L.LayerError):
        L.upper_vs_lower([1.0])


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_change_report_is_zero_against_itself_and_shows_the_top_block(models, tokenizer, family):
    model, tuned = models[family]
    for row in L.change_report(model, copy.deepcopy(model), tokenizer, PROBE):
        assert row["hidden"] == pytest.approx(0, abs=1e-6) and row["attention"] == pytest.approx(0, abs=1e-6)
        assert row["weights"] == pytest.approx(0, abs=1e-6)
    report = L.change_report(tuned, model, tokenizer, PROBE)
    assert all(r["weights"] == pytest.approx(0, abs=1e-9) and r["hidden"] == pytest.approx(0, abs=1e-6)
               for r in report[:-1])
    assert report[-1]["weights"] > 1e-3 and report[-1]["hidden"] > 1e-3 and report[-1]["attention"] > 1e-4


def _rows(comparison, values, seed=0):
    return [{"family": "gpt2", "seed": seed, "comparison": comparison, "layer": i + 1,
             "hidden": v, "attention": v / 2, "weights": v} for i, v in enumerate(values)]


def test_against_floor_and_findings():
    rows = _rows("floor", [0.01, 0.01, 0.02, 0.02]) + _rows("label 40%", [0.01, 0.02, 0.08, 0.08])
    ratios = L.against_floor(rows, "floor")
    assert ratios.hidden.tolist() == pytest.approx([1, 2, 4, 4]) and set(ratios.comparison) == {"label 40%"}
    found = L.layer_findings(ratios, "label 40%").iloc[0]
    assert found["upper / lower"] == pytest.approx(4 / 2 ** 0.5)
    assert found["hidden vs floor"] == pytest.approx((1 * 2 * 4 * 4) ** 0.25)
    assert found["hidden / attention"] == pytest.approx(1.0)  # attention moved as much, relative to its floor
    with pytest.raises(L.LayerError, match="floor"):
        L.against_floor(rows, "nothing")
    with pytest.raises(L.LayerError, match="no rows"):
        L.layer_findings(ratios, "typo 40%")


def test_change_profiles_take_their_colours_from_the_lesson():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"family": "gpt2", "seed": 0, "comparison": name, "layer": layer, "hidden": 2.0, "attention": 1.5,
             "weights": 1.2} for name in ("label 40%", "typo 40%", "other") for layer in (1, 2)]
    fig = L.plot_change_profiles(rows, colours={"label": "tab:red", "typo": "tab:green"})
    lines = {line.get_label(): line.get_color() for line in fig.axes[0].lines if not line.get_label().startswith("_")}
    assert lines["label 40%"] == "tab:red" and lines["typo 40%"] == "tab:green"
    assert lines["other"] not in ("tab:red", "tab:green")  # no colour given: matplotlib's cycle
