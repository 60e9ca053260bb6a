import math
from types import SimpleNamespace

import pytest
import torch

from course_utils import forgetting as F
from course_utils import zoo
from course_utils.config import TrainingSettingsError

SMALL = zoo.TinySpec(hidden=32, layers=2, heads=2, intermediate=64, max_positions=64)


def small_model(tokenizer, family="gpt2", seed=0):
    """A random-init model of the family, smaller than the shipped ones: these tests check mechanics, fast."""
    return zoo.build_model(family, tokenizer, SMALL, seed=seed)


class Bigram(torch.nn.Module):
    """A causal LM small enough to differentiate by hand: logits at position t = W[:, x_t] + b."""

    def __init__(self, vocab: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))
        self.b = torch.nn.Parameter(torch.randn(vocab, generator=g))

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=self.W.T[input_ids] + self.b)


def hand_grad(model: Bigram, prev: int, nxt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d log p(nxt | prev) / d(W, b) = (onehot(nxt) - p) in column `prev` of W, and in b."""
    with torch.no_grad():
        p = torch.softmax(model.W[:, prev] + model.b, -1)
    delta = torch.nn.functional.one_hot(torch.tensor(nxt), p.numel()).float() - p
    gw = torch.zeros_like(model.W)
    gw[:, prev] = delta
    return gw, delta


def test_empirical_fisher_matches_hand_computation():
    model = Bigram()
    seqs = [[0, 1], [0, 2], [1, 1], [2, 0]]
    fisher = F.fisher_diagonal(model, [{"input_ids": s} for s in seqs], mode="empirical")
    expect_w, expect_b = torch.zeros(3, 3), torch.zeros(3)
    for prev, nxt in seqs:
        gw, gb = hand_grad(model, prev, nxt)
        expect_w += gw ** 2 / len(seqs)
        expect_b += gb ** 2 / len(seqs)
    torch.testing.assert_close(fisher["W"], expect_w)
    torch.testing.assert_close(fisher["b"], expect_b)


def test_sampled_fisher_converges_to_the_expected_fisher():
    """Sampled labels: E_{y ~ p}[(onehot(y)_k - p_k)^2] = p_k (1 - p_k) (a Bernoulli variance), exactly, for b."""
    model = Bigram()
    fisher = F.fisher_diagonal(model, [{"input_ids": [0, 0]}] * 2000, mode="sampled", seed=1)
    with torch.no_grad():
        p = torch.softmax(model.W[:, 0] + model.b, -1)
    expected_b = p * (1 - p)
    torch.testing.assert_close(fisher["b"], expected_b, atol=0.03, rtol=0)
    # column 0 of W carries the same gradient; the other columns were never used
    torch.testing.assert_close(fisher["W"][:, 0], fisher["b"])
    assert fisher["W"][:, 1:].abs().max() == 0


def test_fisher_of_a_real_model_is_nonnegative_and_skips_masked_labels(tokenizer):
    from course_utils.train import tokenize_prompt_completion, tokenize_texts

    model = small_model(tokenizer)
    data = tokenize_texts(tokenizer, ["Mira Stroud was born in Veltra.", "Zentrix makes kettles."])
    fisher = F.fisher_diagonal(model, data, n_samples=2, mode="sampled")
    assert set(fisher) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    # masking every target (labels -100 after the first token) gives a zero Fisher
    masked = [{"input_ids": r["input_ids"], "labels": [-100] * len(r["input_ids"])} for r in data]
    assert sum(f.sum() for f in F.fisher_diagonal(model, masked, mode="empirical").values()) == 0
    pc = tokenize_prompt_completion(tokenizer, ["Q"], ["A"])
    assert F.fisher_diagonal(model, pc, mode="empirical")


def test_penalty_is_zero_at_the_anchor_and_matches_a_direct_computation():
    model = Bigram()
    fisher = {"W": torch.rand(3, 3), "b": torch.rand(3)}
    anchor = F.anchor_weights(model)
    assert F.ewc_penalty(model, fisher, anchor, 5.0).item() == 0.0
    with torch.no_grad():
        model.W.add_(0.3)
        model.b.mul_(-2.0)
    direct = 5.0 / 2 * (sum((fisher["W"] * (model.W - anchor["W"]) ** 2).flatten())
                        + sum(fisher["b"] * (model.b - anchor["b"]) ** 2))
    torch.testing.assert_close(F.ewc_penalty(model, fisher, anchor, 5.0), direct)
    assert F.ewc_penalty(model, fisher, anchor, 0.0).item() == 0.0
    # the penalty's gradient pulls back toward the anchor: lambda * F * (theta - theta*)
    F.ewc_penalty(model, fisher, anchor, 5.0).backward()
    torch.testing.assert_close(model.b.grad, 5.0 * fisher["b"] * (model.b - anchor["b"]).detach())


def test_bad_inputs_get_clear_errors(tokenizer):
    model = Bigram()
    fisher, anchor = {"b": torch.ones(3)}, F.anchor_weights(model)
    with pytest.raises(F.ForgettingError, match="lambda must be >= 0"):
        F.ewc_penalty(model, fisher, anchor, -1.0)
    with pytest.raises(TrainingSettingsError, match=r"ratio must be in \[0, 1\)"):
        F.mix_rehearsal(["n"], ["o"], 1.5)
    with pytest.raises(TrainingSettingsError, match=r"ratio must be in \[0, 1\)"):
        F.mix_rehearsal(["n"], ["o"], -0.1)
    with pytest.raises(TrainingSettingsError, match=r"ratio must be in \[0, 1\)"):
        F.mix_rehearsal(["n"], ["o"], 1.0)
    with pytest.raises(TrainingSettingsError, match="original data is empty"):
        F.mix_rehearsal(["n"], [], 0.25)
    with pytest.raises(TrainingSettingsError, match="new .* data is empty"):
        F.mix_rehearsal([], ["o"], 0.25)
    with pytest.raises(F.ForgettingError, match="no examples of the original data"):
        F.fisher_diagonal(model, [])
    with pytest.raises(F.ForgettingError, match="unknown mode"):
        F.fisher_diagonal(model, [{"input_ids": [0, 1]}], mode="exact")
    with pytest.raises(F.ForgettingError, match="lambda must be >= 0"):
        F.EWCTrainer(model=small_model(tokenizer), fisher={}, anchor={}, ewc_lambda=-2)
    assert F.mix_rehearsal(["n"], [], 0.0) == ["n"]  # no replay asked: an empty original set is fine


def test_value_at_interpolates_between_evaluations():
    curve = [{"new": 0.0, "old": 1.0}, {"new": 0.4, "old": 0.8}, {"new": 0.8, "old": 0.4}]
    assert F.value_at(curve, "new", 0.6, "old") == pytest.approx(0.6)
    assert F.value_at(curve, "new", 0.0, "old") == 1.0
    assert math.isnan(F.value_at(curve, "new", 0.9, "old"))


def test_ewc_trainer_holds_weights_near_the_anchor(tokenizer):
    """A strong EWC spring keeps the weights closer to the anchor than plain fine-tuning on the same data."""
    texts = ["Mira Stroud was born in Veltra.", "Zentrix is a shipping company in Corrin."] * 8
    measure = lambda m: {"loss_probe": 0.0}  # noqa: E731
    cfg = F.RunConfig(steps=6, learning_rate=3e-3, batch_size=4, warmup_steps=0, eval_every=3)
    drift = {}
    for lam in (0.0, 1e4):
        model = small_model(tokenizer)
        anchor = F.anchor_weights(model)
        fisher = {n: torch.ones_like(a) for n, a in anchor.items()}
        hist = F.finetune(model, tokenizer, texts, measure, cfg, ewc=dict(fisher=fisher, anchor=anchor, ewc_lambda=lam),
                          label={"lam": lam})
        assert [h["step"] for h in hist] == [0, 3, 6] and all(h["lam"] == lam for h in hist)
        drift[lam] = sum(((p.detach() - anchor[n]) ** 2).sum().item() for n, p in model.named_parameters())
    assert drift[1e4] < 0.5 * drift[0.0]


def test_finetune_start_row_and_errors(tokenizer):
    model = small_model(tokenizer)
    calls = []
    measure = lambda m: calls.append(1) or {"x": float(len(calls))}  # noqa: E731
    hist = F.finetune(model, tokenizer, ["a b c"] * 4, measure, F.RunConfig(steps=2, eval_every=5, batch_size=2),
                      start={"x": -1.0})
    assert [(h["step"], h["x"]) for h in hist] == [(0, -1.0), (2, 1.0)]
    with pytest.raises(F.ForgettingError, match="no fine-tuning texts"):
        F.finetune(model, tokenizer, [], measure)
    with pytest.raises(TrainingSettingsError, match="every must be >= 1"):
        F.ForgettingMonitor(measure, 0)


def test_fisher_share_sums_to_one_over_layer_kinds(tokenizer):
    model = small_model(tokenizer)
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    share = F.fisher_share(fisher)
    assert share["other"] == 0 and sum(share.values()) == pytest.approx(1.0)
    assert share["embeddings"] > 0 and share["attention"] > 0 and share["mlp"] > 0 and share["norms"] > 0
    with pytest.raises(F.ForgettingError, match="zero everywhere"):
        F.fisher_share({n: torch.zeros_like(f) for n, f in fisher.items()})


def test_summarise_reads_each_run_at_matched_learning():
    curve = lambda method, seed, olds: [  # noqa: E731
        {"method": method, "setting": "", "lr": 1e-3, "seed": seed, "step": 10 * i, "new_recall": new,
         "old_recall": old, "old_ppl": 2.0 + i} for i, (new, old) in enumerate(zip((0.0, 0.5, 1.0), olds))]
    table = F.summarise(curve("naive", 0, (1.0, 0.6, 0.4)) + curve("ewc", 0, (1.0, 0.9, 0.8)), 0.75, base_old=1.0)
    assert list(table["method"]) == ["naive", "ewc"]
    assert table["old_recall@target"].tolist() == pytest.approx([0.5, 0.85])
    assert table["forgot@target"].tolist() == pytest.approx([0.5, 0.15])
    assert table["final_old_ppl"].tolist() == [4.0, 4.0]


def test_run_method_trains_a_copy_and_labels_its_rows(tokenizer):
    base = small_model(tokenizer)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    measure = lambda m: {"new_recall": 0.0, "old_recall": 1.0}  # noqa: E731
    cfg = F.RunConfig(steps=2, batch_size=2, eval_every=2, learning_rate=1e-2)
    rows = F.run_method(base, tokenizer, "rehearsal", ["a b c", "d e f"], measure, cfg, old_texts=["x y z"],
                        ratio=0.5)
    assert {(r["method"], r["setting"], r["lr"], r["seed"]) for r in rows} == {("rehearsal", "50% old", 1e-2, 0)}
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    with pytest.raises(F.ForgettingError, match="unknown method 'dropout'"):
        F.run_method(base, tokenizer, "dropout", ["a"], measure, cfg)
    with pytest.raises(F.ForgettingError, match="pass the Fisher"):
        F.run_method(base, tokenizer, "ewc", ["a"], measure, cfg)


def test_the_replay_pool_and_the_fisher_data_never_hold_a_probed_person():
    """Issue 21: rehearsal and EWC may look at pretraining text, but never at a probed person's biography."""
    from course_utils import world as W

    world = W.make_world()
    data = F.forgetting_data(world, n_new=16, n_val=20, n_test=30, seed=3)
    new, val, test = ({p.name for p in g} for g in (data.new_people, data.val_people, data.test_people))
    assert len(new) == 16 and len(val) == 20 and len(test) == 30 and not (new & val or new & test or val & test)
    surname = lambda name: name.split()[1]  # noqa: E731  (surnames are unique per person, first names repeat)
    assert F.texts_naming(data.replay + data.fisher_texts(100, seed=3), val | test) == []
    corpus = W.pretraining_corpus(world)
    # everything else is still there: generic text and the biographies of the seen people nobody probes
    assert len(data.replay) == len(corpus) - world.config.bios_per_person * (len(val) + len(test))
    assert sum(r["kind"] == "generic" for r in corpus) == sum(t in {r["text"] for r in corpus if r["kind"] == "generic"}
                                                              for t in data.replay)
    unprobed = [p for p in world.seen if p.name not in val | test]
    assert all(any(surname(p.name) in t for t in data.replay) for p in unprobed)
    assert not any(surname(n) in t for n in new for t in data.replay)  # new people were never pretrained on
    assert all(surname(p.name) in " ".join(data.new_texts) for p in data.new_people)
    # a rehearsal run's training set draws its old texts from that pool only
    mixed = F.rehearsal_set(data.new_texts, data.replay, 0.5, seed=0, steps=20, batch_size=8)
    assert F.texts_naming(mixed, val | test) == []
    with pytest.raises(W.WorldError, match="name the probed people"):
        W.replay_texts(world, [])
    with pytest.raises(F.ForgettingError, match="fisher_texts: n must be"):
        data.fisher_texts(10_000, seed=0)


def _summary(rows):
    import pandas as pd

    return pd.DataFrame([dict(zip(["method", "setting", "seed", "val_old_recall@target", "forgot@target"], r))
                         for r in rows])


def test_settings_are_chosen_on_validation_people_only():
    nan = float("nan")
    summary = _summary([
        ("naive", "", 0, 0.70, 0.30), ("naive", "", 1, 0.72, 0.28),
        # seed 0: the validation people prefer lambda=10 although the test people did better with lambda=100;
        # lambda=1000 never reached the target (NaN) and is out
        ("ewc", "lambda=10", 0, 0.90, 0.20), ("ewc", "lambda=100", 0, 0.85, 0.05), ("ewc", "lambda=1000", 0, nan, nan),
        ("ewc", "lambda=10", 1, 0.80, 0.10), ("ewc", "lambda=100", 1, 0.95, 0.15), ("ewc", "lambda=1000", 1, nan, nan),
    ])
    chosen = F.choose_on_validation(summary, "ewc")
    assert chosen == {0: "lambda=10", 1: "lambda=100"}
    assert F.at_edge(summary, "ewc", chosen) == {0: True, 1: False}
    assert F.matched_gain(summary, "ewc", chosen) == pytest.approx({0: 0.10, 1: 0.13})
    assert F.matched_gain(summary, "ewc", "lambda=100") == pytest.approx({0: 0.25, 1: 0.13})
    with pytest.raises(F.ForgettingError, match="no runs of method 'rehearsal'"):
        F.choose_on_validation(summary, "rehearsal")
    with pytest.raises(F.ForgettingError, match="no ewc setting reached the target in seed 2"):
        F.choose_on_validation(_summary([("ewc", "lambda=10", 2, nan, nan)]), "ewc")
    with pytest.raises(F.ForgettingError, match=r"need one ewc \(lambda=5\) run in seed 0, found 0"):
        F.matched_gain(summary, "ewc", "lambda=5")
    assert F.run_values(summary, "naive") == {0: 0.30, 1: 0.28}
    assert F.run_values(summary, "ewc", chosen, column="val_old_recall@target") == {0: 0.90, 1: 0.95}
    with pytest.raises(F.ForgettingError, match="need one ewc run in seed 0, found 3"):
        F.run_values(summary, "ewc")


def test_at_its_learning_reads_the_reference_where_the_method_ended():
    def curve(method, setting, points):
        return [{"method": method, "setting": setting, "lr": 1e-3, "seed": 0, "step": 10 * i, "new_recall": n,
                 "old_recall": o} for i, (n, o) in enumerate(points)]

    curves = curve("naive", "", [(0.0, 1.0), (0.4, 0.6), (0.8, 0.5)]) + curve("lora", "attention, r=8",
                                                                              [(0.0, 1.0), (0.1, 0.9), (0.2, 0.7)])
    table = F.at_its_learning(curves, "lora", "attention, r=8")
    row = table.loc[0]
    assert row["final new_recall"] == 0.2 and row["naive old_recall there"] == pytest.approx(0.8)
    assert row["kept more"] == pytest.approx(-0.1)
    with pytest.raises(F.ForgettingError, match="no lora"):
        F.at_its_learning(curves, "lora", "attention + MLP, r=8")


def test_texts_naming_matches_whole_names_not_a_surname_that_is_also_a_town():
    """Wren Dunmore's surname is a city: a sentence about the town of Dunmore does not name her (issue 35)."""
    from course_utils import world as W

    world = W.make_world()
    wren = next(p for p in world.seen + world.heldout if p.name == "Wren Dunmore")
    texts = ["The market in Dunmore opens at dawn.", "Wren Dunmore was born in Veltra.",
             "Wren Dunmore's job is baker.", "Wren Dunmores are rare.", "Dunmore, Wren: not the name as written."]
    assert F.texts_naming(texts, [wren]) == texts[1:3]
    assert F.texts_naming(texts, ["Celia Ashdale"]) == [] and F.texts_naming(texts, []) == []
    # in the world's own corpus, whole-name matching finds exactly her biographies
    corpus = W.pretraining_corpus(world)
    named = F.texts_naming([r["text"] for r in corpus], [wren])
    assert named == [r["text"] for r in corpus if r["person"] == wren.name]
    assert len(named) < sum("Dunmore" in r["text"] for r in corpus)  # the surname alone over-matches


def test_unrelated_replay_names_no_one_and_study_settings_filter_by_method(tokenizer):
    """Rehearsal's control replays the pool's texts that name no person, mixed exactly as rehearsal mixes (issue 35)."""
    from course_utils import world as W

    world = W.make_world()
    data = F.forgetting_data(world, n_new=16, n_val=20, n_test=30, seed=3)
    assert data.unrelated and set(data.unrelated) <= set(data.replay)
    assert F.texts_naming(data.unrelated, list(world.seen) + list(world.heldout)) == []
    generic = {r["text"] for r in W.pretraining_corpus(world) if r["kind"] == "generic"}
    assert set(data.unrelated) == generic  # every generic sentence, and nothing about anyone
    study = F.ForgettingStudyConfig()
    assert [m for m, _, _ in study.settings(["naive", "rehearsal"])] == ["naive", "rehearsal", "rehearsal", "rehearsal"]
    assert len(study.settings()) == 10
    with pytest.raises(F.ForgettingError, match="unknown methods"):
        study.settings(["dropout"])
    base = small_model(tokenizer)
    measure = lambda m: {"new_recall": 0.0, "old_recall": 1.0}  # noqa: E731
    cfg = F.RunConfig(steps=2, batch_size=2, eval_every=2, learning_rate=1e-2)
    rows = F.run_method(base, tokenizer, "unrelated replay", ["a b c", "d e f"], measure, cfg, old_texts=["x y z"],
                        ratio=0.25)
    assert {(r["method"], r["setting"]) for r in rows} == {("unrelated replay", "25% unrelated")}


def test_at_its_learning_takes_a_setting_per_seed():
    def curve(method, setting, seed, points):
        return [{"method": method, "setting": setting, "lr": 1e-3, "seed": seed, "step": 10 * i, "new_recall": n,
                 "old_recall": o} for i, (n, o) in enumerate(points)]

    naive = [(0.0, 1.0), (0.4, 0.6), (0.8, 0.5)]
    curves = (curve("naive", "", 0, naive) + curve("naive", "", 1, naive)
              + curve("ewc", "lambda=10", 0, [(0.0, 1.0), (0.4, 0.9)]) + curve("ewc", "lambda=100", 0, [(0.0, 1.0)])
              + curve("ewc", "lambda=100", 1, [(0.0, 1.0), (0.4, 0.7)]))
    table = F.at_its_learning(curves, "ewc", {0: "lambda=10", 1: "lambda=100"})
    assert table["kept more"].to_dict() == pytest.approx({0: 0.3, 1: 0.1})


def test_kept_more_at_common_learning_reads_both_runs_at_a_level_both_reached():
    """At the target when both runs reach it (forgot@target of the reference minus the method's); else at the highest
    new recall both reached, so a control that learns too slowly still gets a value (issue 35: seed 6)."""
    def curve(method, setting, points):
        return [{"method": method, "setting": setting, "lr": 1e-3, "seed": 0, "step": 10 * i, "new_recall": n,
                 "old_recall": o} for i, (n, o) in enumerate(points)]

    rehearsal = curve("rehearsal", "50% old", [(0.0, 1.0), (0.4, 0.9), (0.8, 0.8)])
    fast = curve("unrelated replay", "50% unrelated", [(0.0, 1.0), (0.4, 0.8), (0.8, 0.6)])
    slow = curve("unrelated replay", "50% unrelated", [(0.0, 1.0), (0.3, 0.8), (0.5, 0.7)])
    both = F.kept_more_at_common_learning(rehearsal + fast, "rehearsal", {0: "50% old"}, "unrelated replay",
                                          "50% unrelated", 0.6)
    assert both == pytest.approx({0: 0.85 - 0.7})
    assert F.kept_more_at_common_learning(rehearsal + slow, "rehearsal", "50% old", "unrelated replay",
                                          {0: "50% unrelated"}, 0.6) == pytest.approx({0: 0.875 - 0.7})
    with pytest.raises(F.ForgettingError, match="no naive"):
        F.kept_more_at_common_learning(rehearsal, "naive", "", "rehearsal", "50% old", 0.6)


def test_run_studies_gives_the_same_numbers_in_one_process_or_two():
    """Each half of a seed seeds its own runs (LoRA's initial weights included), so spreading the halves over
    worker processes cannot change a number (lesson 02 runs them side by side on two cores)."""
    from course_utils import world as W

    world = W.make_world()
    base, tok = zoo.load("gpt2")
    study = F.ForgettingStudyConfig(ratios=(0.5,), lambdas=(1e3,), n_fisher=4, target=0.01, steps=2, batch_size=2,
                                    warmup_steps=0, eval_every=2)
    probe = [r["text"] for r in W.generic_eval_text(world)][:4]
    one = F.run_studies(base, tok, world, (2, 2, 2), study, (5,), probe, workers=1)
    two = F.run_studies(base, tok, world, (2, 2, 2), study, (5,), probe, workers=2)
    assert one[0] == two[0] and one[1] == two[1]
    assert {r["method"] for r in one[0]} == {"naive", "lower lr", "rehearsal", "unrelated replay", "ewc", "lora"}
    assert all(torch.equal(one[2][5][k], two[2][5][k]) for k in one[2][5])
