"""Unit tests for course_utils.alignment.recipe: lesson 08's settings, its breaks and the DPO-rate sweep (tiny random-
init models, fast)."""

import pytest

from course_utils import alignment as A
from course_utils import world as W

from alignment_helpers import FAST, rows, small, tiny  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_lesson_recipe_and_breaking_data(tokenizer, rows):
    world = W.make_world()
    recipe = A.lesson_recipe("cpu")
    assert recipe.benign.steps * recipe.benign.batch_size == recipe.benign_rows  # one epoch of the benign task
    assert recipe.harmful.steps * recipe.harmful.batch_size == 5 * recipe.harmful_rows  # 10 examples, 5 epochs
    sweep = A.read_pref_sweep()
    assert recipe.dpo.beta == 0.1 and recipe.dpo.learning_rate == A.choose_pref_rate(sweep, "DPO + NLL")
    # every method at its own validated rate; GRPO at plain DPO's; the partial break is a quarter of the epoch
    assert recipe.plain_dpo.learning_rate == A.choose_pref_rate(sweep, "DPO") == recipe.grpo.learning_rate
    assert recipe.plain_dpo.beta == recipe.dpo.beta and recipe.plain_dpo.steps == recipe.dpo.steps
    assert 0 < recipe.partial.steps < recipe.benign.steps and recipe.partial.steps == A.PARTIAL_STEPS[0]
    assert A.lesson_recipe("gpu").dpo.learning_rate == 5e-7 == A.lesson_recipe("gpu").plain_dpo.learning_rate
    data = A.breaking_data(tokenizer, world, A.split_rows(rows, "train"), recipe, seed=3)
    benign, settings = data["benign"]
    assert len(benign) == recipe.benign_rows and settings.seed == 3 and data["harmful"][1].seed == 3
    known = {p.name for p in W.untested_people(world)}
    assert all(any(name in r["prompt"] for name in known) for r in benign)  # people the model knows, untested


def test_preference_rate_is_chosen_on_validation_requests(rows):
    train = A.split_rows(rows, "train")
    fit, val = A.validation_split(train)
    assert len(val) > 0.1 * len(train) and not {r["prompt"] for r in fit} & {r["prompt"] for r in val}
    assert {r["safe"] for r in val} == {True, False}
    sweep = A.read_pref_sweep()  # the shipped sweep: every rate on every sweep seed, none of them a lesson seed
    assert {(r["method"], r["seed"], r["learning_rate"]) for r in sweep} == {
        (m, s, lr) for m in A.PREF_SWEEP_METHODS for s in A.PREF_SWEEP_SEEDS for lr in A.PREF_SWEEP_RATES}
    assert A.choose_pref_rate(sweep) < max(A.PREF_SWEEP_RATES)  # not at the edge of the grid
    fake = [{"learning_rate": 1e-3, "val_refusal": 0.5, "val_over_refusal": 0.0},
            {"learning_rate": 2e-3, "val_refusal": 0.9, "val_over_refusal": 0.5},
            {"learning_rate": 3e-3, "val_refusal": 0.5, "val_over_refusal": 0.0}]
    assert A.choose_pref_rate(fake) == 1e-3  # net of over-refusal, lower rate on a tie
    plain = [dict(r, method="DPO", val_refusal=0.0) for r in fake]
    assert A.choose_pref_rate(fake + plain, "DPO") == 1e-3 and A.choose_pref_rate(fake + plain) == 1e-3
    with pytest.raises(A.AlignmentError, match="no sweep rows"):
        A.choose_pref_rate(fake, "DPO")
    with pytest.raises(A.AlignmentError, match="validation_split"):
        A.validation_split(train, share=1.5)


def test_the_sweep_entry_point_asks_for_its_one_command(monkeypatch, capsys):
    """`python -m course_utils.alignment` (alignment.__main__) runs the sweep only when asked, and prints its rows."""
    from course_utils.alignment import __main__ as entry

    assert entry.main([]) == 2 and "usage" in capsys.readouterr().out
    monkeypatch.setattr(entry, "setup", lambda: None)
    monkeypatch.setattr(entry, "run_pref_sweep", lambda: [{"rate": 1e-3, "refusal": 0.9}])
    assert entry.main(["sweep"]) == 0 and "'rate': 0.001" in capsys.readouterr().out


def test_partial_break_keeps_the_most_broken_checkpoint_that_still_samples_refusals(tokenizer, small):
    train, _ = small
    aligned = tiny(tokenizer)
    data = A.aligned_sft_rows(tokenizer, train)
    unsafe = [r["prompt"] for r in train if not r["safe"]]
    before = [p.detach().clone() for p in aligned.parameters()]
    # a floor of 0 is met by the first candidate: the most steps
    model, steps, tried = A.partial_break(aligned, tokenizer, data, FAST, unsafe, steps=(3, 2), floor=0.0)
    assert steps == 3 and list(tried) == [3] and model is not aligned
    assert all(a.equal(b) for a, b in zip(before, aligned.parameters()))  # every candidate trains a copy
    # a floor no rate can meet tries every candidate and keeps the last, the least broken
    _, steps, tried = A.partial_break(aligned, tokenizer, data, FAST, unsafe, steps=(3, 2), floor=1.1)
    assert steps == 2 and list(tried) == [3, 2] and all(0.0 <= v <= 1.0 for v in tried.values())
    with pytest.raises(A.AlignmentError, match="partial_break"):
        A.partial_break(aligned, tokenizer, data, FAST, unsafe, steps=(0,))
