"""The gpu profile's loading plan, tested on CPU: method fallback, dtype per card, 4-bit settings."""

import pytest
import torch

from course_utils import gpu


def test_small_models_fully_fine_tune_on_a_t4():
    p = gpu.plan("qwen2", 16, "full", bf16_supported=False)
    assert p.method == "full" and p.dtype == "float32" and p.mixed_precision == "fp16"
    assert p.needs_gb == pytest.approx(494e6 * 16 / 1e9, abs=0.01)


def test_falls_back_to_lora_then_qlora():
    assert gpu.plan("llama", 16, "full", params=1.7e9).method == "lora"
    q = gpu.plan("llama", 16, "full", params=7e9, bf16_supported=False)
    assert q.method == "qlora" and q.dtype == "float16"
    kwargs = q.from_pretrained_kwargs()
    cfg = kwargs["quantization_config"]
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_compute_dtype == torch.float16
    assert kwargs["dtype"] == torch.float16


def test_lora_in_16_bits_has_no_quantisation():
    kwargs = gpu.plan("gpt2", 24, "lora").from_pretrained_kwargs()
    assert "quantization_config" not in kwargs and kwargs["dtype"] == torch.bfloat16


def test_clear_errors():
    with pytest.raises(gpu.GpuPlanError, match="does not fit"):
        gpu.plan("llama", 4, "full", params=70e9)
    with pytest.raises(gpu.GpuPlanError, match="gpu_memory_gb"):
        gpu.plan("gpt2", 0)
    with pytest.raises(gpu.GpuPlanError, match="method"):
        gpu.plan("gpt2", 16, "prefix")
    with pytest.raises(Exception, match="unknown"):
        gpu.plan("mistral", 16)


def test_current_plan_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Exception, match="CUDA"):
        gpu.current_plan("gpt2")


def test_one_memory_rule():
    """16 bytes per parameter for full FT, 2 for a 16-bit LoRA base (+ its adapter's optimizer state), ~0.5 for a
    4-bit one; it fits when it takes at most HEADROOM of the memory; the fallback order is full, LoRA, QLoRA."""
    assert gpu.needed_gb(1e9, "full") == pytest.approx(16.0)
    assert gpu.needed_gb(1e9, "lora") == pytest.approx(2.0)
    assert gpu.needed_gb(1e9, "lora", 0.02) == pytest.approx(2.32)
    assert gpu.needed_gb(1e9, "qlora") == pytest.approx(0.55)
    with pytest.raises(gpu.GpuPlanError, match="method"):
        gpu.needed_gb(1e9, "prefix")
    assert gpu.fits(gpu.HEADROOM * 10, 10) and not gpu.fits(gpu.HEADROOM * 10 + 1e-9, 10)
    assert [gpu.fitting_method(1e9, gb) for gb in (30, 16, 1, 0.5)] == ["full", "lora", "qlora", None]
    assert gpu.fitting_method(1e9, 30, "lora") == "lora" and gpu.fitting_method(1e9, 4, "lora", 0.3) == "qlora"
    for gb in (0.5, 1, 4, 16, 30):
        chosen = gpu.fitting_method(1e9, gb)
        if chosen:
            assert gpu.plan("llama", gb, params=1e9).method == chosen
