import pytest

from course_utils import overfitting as O


@pytest.mark.parametrize("losses, patience, stopped_at, kept", [
    ([3.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.9], 2, 4, 2),      # two evaluations without improvement after the minimum
    ([3.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.9], 3, 5, 2),
    ([3.0, 2.0, 2.1, 1.5, 1.6, 1.7], 1, 2, 1),           # patience 1 stops at the first bump: a local minimum
    ([3.0, 2.0, 2.1, 1.5, 1.6, 1.7], 2, 5, 3),           # patience 2 rides over it and keeps the real minimum
    ([3.0, 2.5, 2.0, 1.5], 1, None, 3),                  # never worsens: trains to the end
    ([2.0, 2.0, 2.0], 2, 2, 0),                          # equal is not an improvement
])
def test_early_stopping_on_synthetic_losses(losses, patience, stopped_at, kept):
    trace = O.early_stopping_trace(losses, patience)
    assert trace["stopped_at"] == stopped_at
    assert trace["kept"] == kept
    assert trace["evaluations"] == (stopped_at + 1 if stopped_at is not None else len(losses))


def test_early_stopping_threshold_ignores_tiny_improvements():
    losses = [2.0, 1.99, 1.98, 1.97]
    assert O.early_stopping_trace(losses, patience=2, threshold=0.05)["stopped_at"] == 2
    assert O.early_stopping_trace(losses, patience=2, threshold=0.0)["stopped_at"] is None


def test_bad_inputs():
    with pytest.raises(O.OverfitError, match="patience must be >= 1"):
        O.early_stopping_trace([1.0], patience=0)
    with pytest.raises(O.OverfitError, match="no validation losses"):
        O.early_stopping_trace([], patience=1)
    with pytest.raises(O.OverfitError, match="dropout must be in"):
        O.Setting("x", dropout=1.0)
    with pytest.raises(O.OverfitError, match="LoRA rank must be >= 1"):
        O.Setting("x", lora_rank=0)
    with pytest.raises(O.OverfitError, match="weight_decay must be >= 0"):
        O.Setting("x", weight_decay=-0.1)
    with pytest.raises(O.OverfitError, match="dropout must be in"):
        O.dropout_overrides("gpt2", -0.1)
    with pytest.raises(O.OverfitError, match="no per-epoch train and validation losses"):
        O.loss_curves([{"loss": 1.0, "step": 5}])


def test_dropout_overrides_cover_each_family():
    assert set(O.dropout_overrides("gpt2", 0.2)) == {"resid_pdrop", "embd_pdrop", "attn_pdrop"}
    assert O.dropout_overrides("llama", 0.2) == {"attention_dropout": 0.2}


def test_loss_curves_and_summary_from_a_log_history():
    history = [{"loss": 2.0, "step": 4, "epoch": 1.0},
               {"eval_train_loss": 1.5, "step": 4, "epoch": 1.0}, {"eval_val_loss": 1.6, "step": 4, "epoch": 1.0},
               {"eval_train_loss": 0.8, "step": 8, "epoch": 2.0}, {"eval_val_loss": 1.2, "step": 8, "epoch": 2.0},
               {"eval_train_loss": 0.2, "step": 12, "epoch": 3.0}, {"eval_val_loss": 1.9, "step": 12, "epoch": 3.0}]
    curves = O.loss_curves(history)
    assert [c["step"] for c in curves] == [4, 8, 12]
    s = O.curve_summary(curves)
    assert s["best_val_loss"] == 1.2 and s["best_epoch"] == 2.0
    assert s["rise"] == pytest.approx(0.7) and s["gap"] == pytest.approx(1.7)
    kept = O.curve_summary(curves, kept_step=8)
    assert kept["rise"] == 0 and kept["gap"] == pytest.approx(0.4)


def test_overfit_args_early_stopping_keeps_the_best():
    es = O.overfit_args(O.Setting("es", early_stopping_patience=2), O.OverfitConfig())
    assert es.load_best_model_at_end and es.metric_for_best_model == O.BEST_METRIC and not es.greater_is_better
    assert es.save_strategy == "best"
    plain = O.overfit_args(O.Setting("plain", lora_rank=4), O.OverfitConfig(learning_rate=1e-3,
                                                                            lora_learning_rate=7e-3))
    assert not plain.load_best_model_at_end and plain.learning_rate == 7e-3


def test_bio_task_is_disjoint_and_facts_stated_counts_only_own_sentences():
    from course_utils.world import make_world

    task = O.bio_task(make_world(), n_train=5, n_val=4, n_test=3, seed=1)
    names = [p.name for p in task.train + task.val + task.test]
    assert len(set(names)) == 12 and set(task.bios) == set(names)
    person, other = task.test[0], task.test[1]
    assert O.facts_stated(person, task.bios[person.name]) == 1.0
    assert O.facts_stated(person, task.bios[other.name]) == 0.0   # another person's biography earns nothing
    half = f"{person.name} was born in {person.birth_city}. {person.name} enjoys {person.hobby}."
    assert O.facts_stated(person, half) == 0.5
    with pytest.raises(O.OverfitError, match="need 1 <= sizes"):
        O.bio_task(make_world(), n_train=0)


@pytest.mark.parametrize("values, greater, kept", [
    ([1.8, 1.0, 0.9, 1.0, 1.1, 1.2], False, 2),          # validation loss: keep the minimum
    ([0.1, 0.5, 0.4, 0.45, 0.6, 0.7], True, 1),          # accuracy, patience 2: a dip stops it early
    ([0.1, 0.3, 0.5, 0.6], True, 3),                     # accuracy still rising: keeps the last
    ([0.4, 0.4, 0.4], True, 0),                          # equal is not an improvement
])
def test_kept_by_early_stopping_on_loss_and_on_a_metric(values, greater, kept):
    assert O.kept_by_early_stopping(values, patience=2, greater_is_better=greater) == kept


def test_epoch_probe_only_acts_on_the_validation_evaluation():
    class State:
        global_step = 7

    probe = O.EpochProbe(tokenizer=None, people=[])
    train_metrics = {"eval_train_loss": 0.5}
    assert probe.on_evaluate(None, State(), "control", metrics=train_metrics, model=object()) == "control"
    assert train_metrics == {"eval_train_loss": 0.5} and probe.rows == [] and probe.weights == {}


def _curves(train, val):
    return [{"epoch": float(i + 1), "step": 4 * (i + 1), "train_loss": t, "val_loss": v}
            for i, (t, v) in enumerate(zip(train, val))]


def test_rise_beyond_noise_subtracts_the_rerun_and_is_never_positive_at_the_minimum():
    run = _curves([1.0, 0.5, 0.2, 0.1], [1.5, 1.0, 1.1, 1.2])
    rerun = _curves([1.0, 0.5, 0.2, 0.1], [1.5, 1.0, 1.05, 1.15])
    assert O.rerun_noise(run, rerun) == pytest.approx(0.05)
    assert O.rise_beyond_noise(run, rerun) == pytest.approx(0.2 - 0.05)
    assert O.rise_beyond_noise(run, rerun, kept_step=8) == pytest.approx(-0.05)   # kept at its minimum
    assert O.rise_beyond_noise(run, run, kept_step=8) == 0.0                     # exactly, no rounding
    with pytest.raises(O.OverfitError, match="no evaluation at step"):
        O.rise_beyond_noise(run, rerun, kept_step=5)


def test_gap_at_training_loss_interpolates_and_matches_its_own_checkpoints_exactly():
    plain = _curves([1.0, 0.5, 0.2, 0.1], [1.5, 1.0, 1.1, 1.2])
    assert O.gap_at_training_loss(plain, 0.5) == pytest.approx(0.5)
    assert O.gap_at_training_loss(plain, 0.35) == pytest.approx(1.05 - 0.35)     # half way between epochs 2 and 3
    assert O.gap_at_training_loss(plain, 2.0) == pytest.approx(0.5)              # starts below: first evaluation
    assert O.gap_at_training_loss(plain, 0.01) == pytest.approx(1.1)             # never reaches: last evaluation
    for r in plain:   # any checkpoint of the run itself narrows nothing beyond under-training, exactly
        assert O.narrowing_beyond_undertraining(r["val_loss"] - r["train_loss"], r["train_loss"], plain) == 0.0
    assert O.narrowing_beyond_undertraining(0.35, 0.35, plain) == pytest.approx(0.5)


def test_sign_sentence_reads_the_interval():
    assert "lies above 0" in O.sign_sentence("cost", {0: 0.15, 1: 0.23, 2: 0.13})
    assert "lies below 0" in O.sign_sentence("cost", [-0.15, -0.23, -0.13])
    assert "straddles 0" in O.sign_sentence("cost", [0.07, 0.18, -0.08])
    assert "positive in 2 of 3" in O.sign_sentence("cost", [0.07, 0.18, -0.08])
    assert O.compared("rise", 0.205, 0.341) == "rise 0.205 -> 0.341 (higher)"
