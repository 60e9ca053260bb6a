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


def test_time_steps_and_step_seconds_errors():
    calls = []
    assert costs.time_steps(lambda: calls.append(1), n=3, warmup=2) >= 0
    assert len(calls) == 5
    with pytest.raises(costs.CostError, match="n must be >= 1"):
        costs.time_steps(lambda: None, n=0)

    class Untrained:
        class state:
            global_step = 0
            log_history = []

    with pytest.raises(costs.CostError, match="has not finished"):
        costs.step_seconds(Untrained())


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
