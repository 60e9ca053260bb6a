import pytest
import torch

from course_utils import costs, zoo
from course_utils import peft_methods as P

SMALL = zoo.TinySpec(hidden=32, layers=2, heads=2, intermediate=64, max_positions=64)


def _batch(n=4, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 1000, (n, length), generator=g)
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}


def test_parameter_counts_match_a_hand_count(tokenizer):
    model = zoo.build_model("gpt2", tokenizer, SMALL)
    V, d, L, P_ = len(tokenizer), SMALL.hidden, SMALL.layers, SMALL.max_positions
    per_block = (2 * 2 * d                  # two LayerNorms (weight + bias)
                 + d * 3 * d + 3 * d        # fused q|k|v projection c_attn
                 + d * d + d                # attention output c_proj
                 + d * 4 * d + 4 * d        # MLP c_fc
                 + 4 * d * d + d)           # MLP c_proj
    hand = V * d + P_ * d + L * per_block + 2 * d   # token + position embeddings (output head tied), final LayerNorm
    counts = costs.parameter_counts(model)
    assert counts["total"] == counts["trainable"] == hand
    P.freeze_lower_layers(model, 1)
    assert costs.parameter_counts(model)["trainable"] == per_block + 2 * d   # the top block and the final norm


def test_lora_trainable_count_matches_a_hand_count(tokenizer):
    r, d = 4, SMALL.hidden
    gpt2 = P.apply_lora(zoo.build_model("gpt2", tokenizer, SMALL), r=r)
    # per block: c_attn (d -> 3d) gets A (r x d) and B (3d x r); attention c_proj (d -> d) gets r*d + d*r
    assert costs.parameter_counts(gpt2)["trainable"] == SMALL.layers * (r * (d + 3 * d) + r * (d + d))
    llama = P.apply_lora(zoo.build_model("llama", tokenizer, SMALL), r=r)
    # q, k, v, o are all d -> d for Llama with as many KV heads as heads
    assert costs.parameter_counts(llama)["trainable"] == SMALL.layers * 4 * r * (d + d)
    qwen = P.apply_lora(zoo.build_model("qwen2", tokenizer, SMALL), r=r)
    kv = d // SMALL.heads * (SMALL.heads // 2)     # Qwen2 has half as many key/value heads
    assert costs.parameter_counts(qwen)["trainable"] == SMALL.layers * r * (2 * (d + d) + 2 * (d + kv))


def test_tensor_memory_counts_allocations_and_frees():
    with costs.TensorMemory(baseline=100) as tracker:
        a = torch.empty(1000)            # 4000 bytes
        b = torch.empty(500)             # 2000 bytes
        view = a.t()                     # a view allocates nothing
        del a, view
        c = torch.ones(100, dtype=torch.float64)   # 800 bytes
    assert tracker.peak == 100 + 4000 + 2000
    assert tracker.live == 100 + 2000 + 800
    del b, c


def test_peak_step_memory_state_is_three_numbers_per_trainable_weight(tokenizer):
    full = zoo.build_model("gpt2", tokenizer, SMALL)
    before = [p.detach().clone() for p in full.parameters()]
    m_full = costs.peak_step_memory(full, _batch())
    assert all(torch.equal(a, b) for a, b in zip(before, full.parameters())), "measuring changed the model"
    n_full = zoo.count_parameters(full, trainable_only=True)
    assert m_full["state_mb"] * costs.MB == pytest.approx(3 * 4 * n_full, rel=0.02)   # grad + 2 AdamW moments
    lora = P.apply_lora(zoo.build_model("gpt2", tokenizer, SMALL), r=2)
    m_lora = costs.peak_step_memory(lora, _batch())
    assert m_lora["state_mb"] < 0.1 * m_full["state_mb"]
    assert m_lora["peak_mb"] < m_full["peak_mb"]
    assert m_full["activations_mb"] > 0 and m_full["peak_mb"] >= m_full["weights_mb"] + m_full["activations_mb"]


def test_peak_step_memory_errors(tokenizer):
    model = zoo.build_model("gpt2", tokenizer, SMALL)
    with pytest.raises(costs.CostError, match="needs input_ids and labels"):
        costs.peak_step_memory(model, {"input_ids": _batch()["input_ids"]})
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(costs.CostError, match="no trainable parameters"):
        costs.peak_step_memory(model, _batch())


def test_saved_size_adapter_is_a_small_share_of_the_checkpoint(tokenizer, tmp_path):
    full = costs.saved_size(zoo.build_model("llama", tokenizer, SMALL), tmp_path / "full")
    adapter = costs.saved_size(P.apply_lora(zoo.build_model("llama", tokenizer, SMALL), r=2), tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert full["weights_mb"] * costs.MB >= 4 * zoo.count_parameters(zoo.build_model("llama", tokenizer, SMALL))
    assert adapter["weights_mb"] < 0.1 * full["weights_mb"]


def test_paired_step_seconds_times_every_model_in_turns_and_changes_nothing(tokenizer, monkeypatch):
    full = zoo.build_model("gpt2", tokenizer, SMALL)
    lora = P.apply_lora(zoo.build_model("gpt2", tokenizer, SMALL), r=2)
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in (("full", full), ("lora", lora))}
    threads_before = torch.get_num_threads()
    seen_threads, order, clock = [], [], [0.0]

    def fake_clock(device):   # each call advances 1 s for full FT's steps and 0.5 s for LoRA's
        seen_threads.append(torch.get_num_threads())
        clock[0] += 0.5 if order and order[-1] == "lora" else 1.0
        return clock[0]

    monkeypatch.setattr(costs, "step_clock", fake_clock)
    for name, model in (("full", full), ("lora", lora)):
        original = model.forward
        monkeypatch.setattr(model, "forward", lambda *a, _n=name, _f=original, **k: (order.append(_n), _f(*a, **k))[1])
    seconds = costs.paired_step_seconds({"full": full, "lora": lora}, _batch(), rounds=3, warmup=1)
    assert order == ["full", "lora"] * 4                       # in turns, warm-up included
    assert set(seen_threads) == {1} and torch.get_num_threads() == threads_before
    assert seconds["full"] > seconds["lora"] > 0
    for name, model in (("full", full), ("lora", lora)):
        assert all(torch.equal(a, b) for a, b in zip(before[name], model.parameters())), f"timing changed {name}"


def test_paired_step_seconds_errors(tokenizer):
    model = zoo.build_model("gpt2", tokenizer, SMALL)
    with pytest.raises(costs.CostError, match="rounds must be >= 1"):
        costs.paired_step_seconds({"m": model}, _batch(), rounds=0)
    with pytest.raises(costs.CostError, match="no models"):
        costs.paired_step_seconds({}, _batch())
    with pytest.raises(costs.CostError, match="needs input_ids and labels"):
        costs.paired_step_seconds({"m": model}, {"input_ids": _batch()["input_ids"]})
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(costs.CostError, match="model 'm' has no trainable parameters"):
        costs.paired_step_seconds({"m": model}, _batch())


class _State:
    def __init__(self, max_steps):
        self.global_step, self.max_steps = 0, max_steps


class _Control:
    should_training_stop = False


def _drive(budget, step_time, max_steps, monkeypatch):
    """Run an EqualBudget through fake steps of `step_time` seconds on a fake clock; return the steps taken."""
    clock = [0.0]
    monkeypatch.setattr(costs, "step_clock", lambda device: clock[0])
    model, state, control = torch.nn.Linear(2, 2), _State(max_steps), _Control()
    while not control.should_training_stop and state.global_step < max_steps:
        budget.on_step_begin(None, state, control, model=model)
        clock[0] += step_time
        state.global_step += 1
        budget.on_step_end(None, state, control, model=model)
    return state.global_step


def test_equal_budget_scores_at_equal_steps_and_at_equal_time(monkeypatch):
    calls = []

    def score(model):
        calls.append(model.training)
        return {"q": float(len(calls))}

    # the reference run: equal time is equal steps, scored once
    ref = costs.EqualBudget(score, steps=4)
    assert _drive(ref, 0.5, 100, monkeypatch) == 4 and ref.scores["equal time"] == ref.scores["equal steps"]
    assert ref.step_seconds == 0.5 and ref.steps_at_equal_time == 4 and calls == [False]
    # a method twice as fast gets twice the steps in full FT's 4 x 0.5 s
    fast = costs.EqualBudget(score, steps=4, seconds=2.0)
    assert _drive(fast, 0.25, 100, monkeypatch) == 8 and fast.steps_at_equal_time == 8
    assert fast.scores["equal steps"] != fast.scores["equal time"]
    # a slower method reaches equal time first and still trains on to equal steps
    slow = costs.EqualBudget(score, steps=4, seconds=2.0)
    assert _drive(slow, 1.0, 100, monkeypatch) == 4 and slow.steps_at_equal_time == 2
    # a run cut short by max_steps scores both where it stopped
    capped = costs.EqualBudget(score, steps=4, seconds=100.0)
    assert _drive(capped, 0.5, 6, monkeypatch) == 6 and capped.steps_at_equal_time == 6


def test_equal_budget_errors():
    with pytest.raises(costs.CostError, match="steps must be an integer >= 1"):
        costs.EqualBudget(lambda m: {}, steps=0)
    with pytest.raises(costs.CostError, match="seconds must be a positive number"):
        costs.EqualBudget(lambda m: {}, steps=2, seconds=-1.0)
    with pytest.raises(costs.CostError, match="no step has been timed"):
        costs.EqualBudget(lambda m: {}, steps=2).step_seconds


def _runs():
    """Two seeds of full FT, LoRA and a poor cheap method, as `run_comparison` rows."""
    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.02)):
        rows += [
            {"family": "llama", "method": "full", "seed": seed, "peak MB": 30.0, "peak MB (batch 1)": 18.0,
             "ms/step": 80.0, "answer_ppl": 1.2, "answer_ppl @ equal time": 1.2, "answer_acc": 0.8,
             "answer_acc @ equal time": 0.8, "saved MB": 4.0},
            {"family": "llama", "method": "lora", "seed": seed, "peak MB": 27.0, "peak MB (batch 1)": 6.0,
             "ms/step": 64.0, "answer_ppl": 1.26 + jitter, "answer_ppl @ equal time": 1.2 - jitter,
             "answer_acc": 0.78, "answer_acc @ equal time": 0.82, "saved MB": 0.1},
            {"family": "llama", "method": "ia3", "seed": seed, "peak MB": 29.0, "peak MB (batch 1)": 5.0,
             "ms/step": 60.0, "answer_ppl": 3.0, "answer_ppl @ equal time": 2.5, "answer_acc": 0.2,
             "answer_acc @ equal time": 0.3, "saved MB": 0.01}]
    return rows


def test_versus_and_intervals_compare_with_full_ft_of_the_same_seed():
    ratio = costs.versus(_runs(), "peak MB (batch 1)")
    assert ratio.loc[("llama", "lora"), 0] == pytest.approx(6 / 18) and ("llama", "full") not in ratio.index
    diff = costs.versus(_runs(), "answer_acc", how="difference")
    assert diff.loc[("llama", "ia3"), 1] == pytest.approx(-0.6)
    stats = costs.with_intervals(costs.versus(_runs(), "answer_ppl"))
    lora = stats.loc[("llama", "lora")]
    assert lora["mean"] == pytest.approx((1.26 + 1.28) / 2 / 1.2) and lora["95% low"] < lora["mean"] < lora["95% high"]
    summary = costs.relative_summary(_runs())
    assert summary.loc[("llama", "lora"), "step time x"].startswith("0.800")
    with pytest.raises(costs.CostError, match="no 'full' run for family 'llama'"):
        costs.versus([r for r in _runs() if r["method"] != "full"], "answer_ppl")
    with pytest.raises(costs.CostError, match="how must be"):
        costs.versus(_runs(), "answer_ppl", how="log")
    with pytest.raises(costs.CostError, match="lack column"):
        costs.versus(_runs(), "no such column")


def test_decision_guide_follows_the_measurements():
    guide = costs.decision_guide(_runs(), distillation={"gpt2": 0.9, "llama": 0.8})
    choose = guide["choose"].droplevel("situation")
    # LoRA kept quality (1.06x <= 1.10x) and used least memory among the methods that did
    assert guide.loc[("resources", guide.index[0][1]), "choose"] == "lora"
    assert choose["task complexity"] == "lora"          # within 0.05 accuracy of full FT
    assert choose["data size"] == "distil (soft targets)"
    # had LoRA's perplexity been 1.5x, no cheap method keeps quality: full FT for memory and storage too
    worse = [dict(r, answer_ppl=r["answer_ppl"] * 1.25) if r["method"] == "lora" else r for r in _runs()]
    guide = costs.decision_guide(worse, acc_tolerance=0.01, distillation={"gpt2": 1.1, "llama": 0.8})
    choose = guide["choose"].droplevel("situation")
    assert list(choose["resources"])[0] == "full" and list(choose["resources"])[2] == "full"
    assert choose["task complexity"] == "full" and choose["data size"].startswith("train on the labels")
    with pytest.raises(costs.CostError, match="need the 'full' runs"):
        costs.decision_guide([r for r in _runs() if r["method"] != "full"])


def test_facts_table_and_adapter_checkpoint():
    facts = costs.facts_table(["llama"], ["full", "lora", "adapter"])
    full, lora, adapter = (facts.loc[("llama", m)] for m in ("full", "lora", "adapter"))
    assert full["trainable %"] == 100.0 and lora["trainable"] < 0.05 * full["trainable"]
    assert adapter["checkpoint MB"] * costs.MB >= 4 * adapter["trainable"]          # the adapter alone is saved
    assert adapter["checkpoint MB"] < 0.1 * full["checkpoint MB"]


def test_qa_task_splits_by_person_and_quality_is_in_range(tokenizer):
    from course_utils.world import make_world

    task = costs.qa_task(make_world(), test_share=0.25, n_test=24)
    assert not {r["person"] for r in task.train} & {r["person"] for r in task.test}
    assert len(task.test) == 24 and all(r["split"] == "seen" for r in task.train + task.test)
    model = zoo.build_model("llama", tokenizer, SMALL)
    q = costs.answer_quality(model, tokenizer, task.test[:8], n_generate=4)
    assert q["answer_ppl"] > 1.0 and 0.0 <= q["answer_acc"] <= 1.0
    batch = costs.example_batch(tokenizer, task.train, size=3)
    assert batch["input_ids"].shape[0] == 3 and (batch["labels"] == -100).any()   # the prompt is masked
    with pytest.raises(costs.CostError, match="test_share must be in"):
        costs.qa_task(make_world(), test_share=1.0)
    with pytest.raises(costs.CostError, match="n must be in"):
        costs.labelled_subset(task.train, 0)
    with pytest.raises(costs.CostError, match="no learning rate for method 'bitfit'"):
        costs.CostConfig().args("bitfit")


def test_how_measured_names_the_method_and_its_blind_spots():
    cpu, gpu = costs.how_measured("cpu"), costs.how_measured("cuda")
    assert "TensorMemory" in cpu["memory"] and "not seen" in cpu["memory"] and "CPU seconds" in cpu["time"]
    assert "one thread" in cpu["time"] and "in turns" in cpu["time"] and "in turns" in gpu["time"]
    assert "max_memory_allocated" in gpu["memory"] and "not seen" in gpu["memory"] and "wall-clock" in gpu["time"]
