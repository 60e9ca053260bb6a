"""The capstone reads measured numbers from saved lesson tables and picks a recipe from them."""

import math

import pytest

from course_utils import capstone as C


def _records(lora_new=0.15, naive_new=0.9, rehearsed=0.05, naive_forgot=0.15, rise=0.08, stopped_acc=0.6,
             end_acc=0.5):
    return {
        C.L01: {"table": [{"family": "llama", "method": "full", "grads+optimizer MB": 12.0, "trainable %": 100.0,
                           "answer_ppl": 1.1, "peak MB (batch 1)": 18.0},
                          {"family": "llama", "method": "lora", "grads+optimizer MB": 0.3, "trainable %": 2.5,
                           "answer_ppl": 1.3, "peak MB (batch 1)": 5.6}]},
        C.L02: {"table": [{"method": "naive", "final_new_recall": naive_new, "forgot@target": naive_forgot},
                          {"method": "naive", "final_new_recall": naive_new, "forgot@target": None},
                          {"method": "rehearsal", "setting": "25% old", "forgot@target": rehearsed,
                           "chosen on validation": True},
                          {"method": "rehearsal", "setting": "50% old", "forgot@target": rehearsed,
                           "chosen on validation": False},
                          {"method": "lower lr", "forgot@target": 0.1},
                          {"method": "ewc", "setting": "lambda=100", "forgot@target": 0.04,
                           "chosen on validation": True},
                          {"method": "lora", "final_new_recall": lora_new, "forgot@target": None}],
                "claims": [{"claim": "rehearsal forgets less",
                            "verdict": "held" if rehearsed < naive_forgot else "not reproduced"}]},
        C.L05: {"table": [{"setting": "no mitigation", "rise": rise, "gap": 0.7, "biography accuracy": end_acc},
                          {"setting": "early stopping", "rise": 0.0, "gap": 0.5, "biography accuracy": stopped_acc},
                          {"setting": "dropout 0.3", "rise": 0.0, "gap": 0.4, "biography accuracy": 0.3}]},
        C.L08: {"table": [{"stage": "aligned", "refusal": 1.0}, {"stage": "benign", "refusal": 0.1},
                          {"stage": "DPO", "refusal": 0.1}, {"stage": "DPO + NLL", "refusal": 0.9},
                          {"stage": "CAI-DPO", "refusal": 0.8}, {"stage": "RLHF", "refusal": 0.1}]},
    }


def test_metric_reads_means_and_filters():
    recs = _records()
    assert C.Metric(C.L02, "forgot@target", {"method": "naive"}).read(recs) == pytest.approx(0.15)  # None skipped
    assert C.Metric(C.L01, "trainable %", {"method": "lora"}).read(recs) == 2.5
    assert math.isnan(C.Metric(C.L07, "gap").read(recs))  # lesson not run: NaN, not a made-up number


def test_metric_names_the_lesson_when_a_column_is_missing():
    with pytest.raises(C.CapstoneError, match="01_compute_full_vs_peft.*no_such_column"):
        C.Metric(C.L01, "no_such_column").read(_records())


def test_problems_table_has_nan_for_lessons_not_run():
    table = C.problems_table(_records())
    assert len(table) == len(C.PROBLEMS)
    assert table.loc[0, "measured"] == 12.0 and table.loc[0, "mitigated"] == 0.3
    assert table[table["lesson"] == "07"]["measured"].isna().all()


def test_improved_follows_the_lessons_declared_claim_not_the_two_numbers():
    """A mitigation "improved" only when the lesson's claim that it works held (issue 36): numbers that move the
    right way are not enough, and a row without such a claim says why."""
    rehearsal = next(p for p in C.PROBLEMS if p.claim == "rehearsal forgets less")
    recs = _records()
    assert C.improved(rehearsal, recs[C.L02]) == "yes ('rehearsal forgets less': held)"
    recs[C.L02]["claims"][0]["verdict"] = "undecided"   # the numbers still improve; the verdict does not
    assert C.improved(rehearsal, recs[C.L02]).startswith("undecided")
    recs[C.L02]["claims"] = []
    assert C.improved(rehearsal, recs[C.L02]).startswith("not in this record")
    assert C.improved(rehearsal, None) == "not run yet"
    tautology = next(p for p in C.PROBLEMS if "early stopping" in p.mitigation)
    assert C.improved(tautology, recs[C.L05]).startswith("not claimed: a tautology")
    with pytest.raises(C.CapstoneError, match="name the lesson's claim"):
        C.Problem("p", "s", C.Metric(C.L02, "x"), "m", C.Metric(C.L02, "y"))
    assert all(p.claim or p.unclaimed for p in C.PROBLEMS)
    assert {p.symptom_metric.lesson for p in C.PROBLEMS} >= {C.L01, C.L02, C.L03, C.L04, C.L05, C.L06, C.L07, C.L08}


def test_recipe_follows_the_measurements():
    task = C.TaskSpec(goal="new_facts", n_examples=64)
    recipe = C.choose_recipe(C.Resources(), task, _records())
    assert recipe.method == "full" and recipe.rehearsal_ratio == 0.25 and recipe.early_stopping
    # full FT does not fit: LoRA, whatever the goal
    mid = C.choose_recipe(C.Resources(gpu_gb=16, model_params=1e9), task, _records())
    assert mid.method == "lora" and mid.rehearsal_ratio == 0.0
    # LoRA over a 16-bit base does not fit either (7 B in 16 GB): QLoRA, and the reasons say why
    big = C.choose_recipe(C.Resources(gpu_gb=16, model_params=7e9), task, _records())
    assert big.method == "qlora" and any("QLoRA" in r for r in big.reasons)
    # ... but never on a CPU: a 4-bit base needs a CUDA GPU, so the recipe says no method this machine can run fits
    with pytest.raises(C.CapstoneError, match="no method this machine can run fits"):
        C.choose_recipe(C.Resources(gpu_gb=0, model_params=7e9, cpu_ram_gb=16), task, _records())
    with pytest.raises(C.CapstoneError, match="no method fits"):
        C.choose_recipe(C.Resources(gpu_gb=4, model_params=70e9), task, _records())
    # early stopping only where the early-stopped model was at least as good on the task (lesson 05)
    assert not C.choose_recipe(C.Resources(), task, _records(stopped_acc=0.4, end_acc=0.6)).early_stopping
    # the replay share is the one lesson 02's validation chose, used only if its rehearsal claim held there
    assert any("chose a replay share of 25% in 1 of 1 seeds" in r for r in recipe.reasons)
    assert C.choose_recipe(C.Resources(), task, _records(rehearsed=0.3)).rehearsal_ratio == 0.0
    # plenty of data: no early stopping; safety: DPO afterwards
    many = C.choose_recipe(C.Resources(), C.TaskSpec(goal="format", n_examples=10_000, needs_safety=True), _records())
    assert many.method == "lora" and not many.early_stopping and many.dpo_afterwards
    assert any("DPO + NLL 0.90" in r for r in many.reasons)  # the safety reason quotes lesson 08's numbers
    assert all(isinstance(r, str) and r for r in recipe.reasons)


def test_scoreboard_and_evidence_read_declared_claims():
    recs = _records()
    recs[C.L05]["claims"] = [{"claim": "a", "verdict": "held", "mean": 0.5, "held in": "3 of 3"},
                             {"claim": "b", "verdict": "not reproduced", "mean": 0.1, "held in": "0 of 3"}]
    board = C.scoreboard(recs)
    mine = board[board["claim"].isin(["a", "b"])]
    assert list(mine["claim"]) == ["a", "b"] and list(mine["verdict"]) == ["held", "not reproduced"]
    assert C.evidence(recs[C.L05]) == "1 held, 1 not reproduced (declared claims over the seeds)"
    assert C.evidence({"checks": {"x": True, "y": False}}) == "1 of 2 single-seed checks held"
    table = C.problems_table(recs)
    assert all(v.startswith(("yes (", "no (", "not run yet", "not claimed: ", "not in this record", "undecided"))
               for v in table["improved?"])


def test_the_recipe_uses_gpus_memory_plan():
    """One rule: what fits is `gpu.fits` of `gpu.needed_gb`, so the recipe and `gpu.plan` cannot disagree."""
    from course_utils import gpu

    task = C.TaskSpec(goal="new_facts", n_examples=64)
    for gb, params in [(16, 0.5e9), (16, 1e9), (16, 7e9), (80, 7e9), (24, 13e9)]:
        recipe = C.choose_recipe(C.Resources(gpu_gb=gb, model_params=params), task, _records())
        full_fits = gpu.fits(gpu.needed_gb(params, "full"), gb)
        assert full_fits == (recipe.method == "full")
        if not full_fits:
            ratio = 0.3 / 12.0   # lesson 01's LoRA/full optimizer state in _records()
            assert recipe.method == gpu.fitting_method(params, gb, "lora", ratio)


@pytest.mark.parametrize("kwargs", [dict(gpu_gb=-1), dict(model_params=0), dict(gpu_gb=float("nan"))])
def test_bad_resources(kwargs):
    with pytest.raises(C.CapstoneError):
        C.Resources(**kwargs)


def test_bad_task():
    with pytest.raises(C.CapstoneError, match="goal"):
        C.TaskSpec(goal="everything")
    with pytest.raises(C.CapstoneError, match="n_examples"):
        C.TaskSpec(n_examples=0)


def _recipe_setup():
    from course_utils import world as W
    from course_utils.evaluate import knowledge_probe
    from course_utils import zoo

    world = W.make_world()
    base, tok = zoo.load("gpt2")
    new, old = world.heldout[:2], world.seen[:4]
    texts = [r["text"] for r in W.heldout_bios(world) if r["person"] in {p.name for p in new}]
    return base, tok, texts, knowledge_probe(tok, old, new)


def test_run_recipe_monitors_forgetting():
    base, tok, texts, measure = _recipe_setup()
    recipe = C.Recipe(method="full", rehearsal_ratio=0.25, early_stopping=True)
    model, history, trainer = C.run_recipe(recipe, base, tok, texts[:4], texts[4:], texts, measure,
                                           C.RecipeConfig(steps=4, batch_size=2, eval_every=2))
    assert [row["step"] for row in history] == [0, 2, 4]
    assert {"new_recall", "old_recall"} <= set(history[0])
    with pytest.raises(C.CapstoneError, match="validation"):
        C.run_recipe(recipe, base, tok, texts, [], texts, measure)


@pytest.mark.parametrize("method", C.RECIPE_METHODS + ("prefix",))
def test_run_recipe_runs_or_refuses_every_method(method):
    """Every method `choose_recipe` can pick is trained as it says (LoRA trains only the adapter) or refused in one
    line (QLoRA needs a 4-bit base on a GPU); never silently trained as something else."""
    base, tok, texts, measure = _recipe_setup()
    recipe = C.Recipe(method=method)
    if method in ("full", "lora"):
        model, history, _ = C.run_recipe(recipe, base, tok, texts[:4], [], texts, measure,
                                         C.RecipeConfig(steps=2, batch_size=2, eval_every=2))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        assert (trainable == total) == (method == "full") and trainable > 0
        assert history[-1]["method"] == method
    else:
        with pytest.raises(C.CapstoneError, match="qlora|QLoRA|unknown method") as err:
            C.run_recipe(recipe, base, tok, texts[:4], [], texts, measure)
        assert "\n" not in str(err.value)


def test_recipe_config_gives_the_training_arguments_the_lesson_relies_on():
    """Lesson 09's settings: max_steps, rate, batch, warm-up 10, no weight decay, the seed for data and init,
    one log line per run; early stopping adds evaluation and checkpoints every `eval_every` steps."""
    config = C.RecipeConfig(steps=120, learning_rate=3e-3, eval_every=20, seed=2)
    args = config.training_arguments(logging_steps=config.steps, **C.early_stopping_arguments(config))
    assert (args.max_steps, args.learning_rate, args.per_device_train_batch_size, args.warmup_steps,
            args.weight_decay, args.seed, args.data_seed, args.logging_steps) == (120, 3e-3, 8, 10, 0.0, 2, 2, 120)
    assert (args.eval_strategy, args.eval_steps, args.save_strategy, args.save_steps, args.save_total_limit) == \
        ("steps", 20, "steps", 20, 4)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    assert args.lr_scheduler_type == "constant_with_warmup" and args.report_to == []
    with pytest.raises(C.CapstoneError, match="RecipeConfig: patience"):
        C.RecipeConfig(patience=0)


def test_lessons_not_run_here_come_from_the_reference_run_and_say_so(tmp_path):
    import json

    from course_utils import capstone as C

    from course_utils.results import ResultsError, save_results

    here, ref = tmp_path / "here", tmp_path / "ref"
    save_results(C.L05, [{"a": 1}], directory=here, profile="cpu")
    save_results(C.L05, [{"a": 2}], directory=ref, profile="cpu")
    save_results(C.L02, [{"a": 3}], directory=ref, profile="cpu")
    records = C.load_records([C.L02, C.L05, C.L07], here, reference=ref)
    assert C.record_sources(records) == {C.L02: "reference run (shipped)", C.L05: "this run"}
    assert records[C.L05]["table"] == [{"a": 1}]
    assert C.load_records([C.L02], here, reference=None) == {}
    (here / f"{C.L05}.json").write_text(json.dumps({"lesson": C.L05, "table": [{"a": 1}]}))  # damaged: no profile
    with pytest.raises(ResultsError, match=C.L05):  # never replaced by the reference run's numbers in silence
        C.load_records([C.L05], here, reference=ref)
