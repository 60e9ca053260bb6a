"""The `gpu` profile's loading plan: which dtype, and whether to load in 4 bits, for a real model on a given GPU.

On a GPU the course fine-tunes hub checkpoints (`zoo.HUB_MODELS`: GPT-2 124 M, Qwen2 0.5 B, SmolLM2 360 M).
What fits depends on the method and the card. The rule of thumb (the same one the capstone uses):
full fine-tuning with AdamW needs about 16 bytes per parameter (fp32 weights, gradients and two Adam moments), so
a 0.5 B model needs ~8 GB before activations; LoRA keeps the base weights frozen in 16 bits (2 bytes per
parameter), and QLoRA in 4 bits (~0.5 byte), which is how a 7 B model fits a free 16 GB T4.

Everything here is plain Python and `transformers` config objects, so it is unit-tested on CPU; only
`from_pretrained` with these settings needs CUDA (and `bitsandbytes` for 4 bits: `pip install bitsandbytes`).

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from course_utils.errors import CourseError
from course_utils.profiles import check_gpu_profile
from course_utils.zoo import check_family


LIBRARY_CALLS = {
    "transformers:BitsAndBytesConfig": ["load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype",
                                        "bnb_4bit_use_double_quant"],
}

HUB_PARAMS = {"gpt2": 124e6, "qwen2": 494e6, "llama": 362e6}  # parameter counts of zoo.HUB_MODELS
BYTES_PER_PARAM = {"full": 16.0, "lora": 2.0, "qlora": 0.55}   # weights (+ optimizer state for full FT)
HEADROOM = 0.6  # share of GPU memory for weights and optimizer; the rest is activations and the CUDA context


class GpuPlanError(CourseError, ValueError):
    pass


@dataclass(frozen=True)
class GpuPlan:
    family: str
    method: str            # "full", "lora" or "qlora" (LoRA over a 4-bit base)
    dtype: str             # "float32" (full FT; Trainer autocasts), "bfloat16" or "float16"
    needs_gb: float        # weights + optimizer state, before activations
    mixed_precision: str   # the Trainer flag to set: "bf16", "fp16" or "no"

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keywords for `zoo.load(family, profile="gpu", **kwargs)`."""
        import torch

        kwargs: dict[str, Any] = {"dtype": getattr(torch, self.dtype), "device_map": {"": 0}}
        if self.method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, self.dtype),
                bnb_4bit_use_double_quant=True)
        return kwargs


# the methods to try, in order, when the asked one does not fit: each next one keeps less in memory
FALLBACKS = {"full": ("full", "lora", "qlora"), "lora": ("lora", "qlora"), "qlora": ("qlora",)}


def needed_gb(params: float, method: str, lora_state_ratio: float = 0.0) -> float:
    """GB for the weights (and optimizer state) of `method` on a model of `params` parameters, before activations.

    LoRA's adapter has optimizer state too: `lora_state_ratio` of full fine-tuning's (lesson 01 measures it; 0
    counts the frozen 16-bit base alone)."""
    if method not in BYTES_PER_PARAM:
        raise GpuPlanError(f"method must be one of {sorted(BYTES_PER_PARAM)}, got {method!r}")
    if method == "lora":
        return params * (BYTES_PER_PARAM["lora"] + BYTES_PER_PARAM["full"] * lora_state_ratio) / 1e9
    return params * BYTES_PER_PARAM[method] / 1e9


def fits(gb: float, memory_gb: float) -> bool:
    """The one memory rule: weights and optimizer state may take `HEADROOM` of the memory, the rest is left for
    activations and the CUDA context."""
    return gb <= HEADROOM * memory_gb


def fitting_method(params: float, memory_gb: float, method: str = "full", lora_state_ratio: float = 0.0) -> str | None:
    """The first of `method` and its fallbacks (full -> LoRA -> QLoRA) that `fits` `memory_gb`; None if none does."""
    if method not in FALLBACKS:
        raise GpuPlanError(f"method must be 'full', 'lora' or 'qlora', got {method!r}")
    return next((m for m in FALLBACKS[method] if fits(needed_gb(params, m, lora_state_ratio), memory_gb)), None)


def plan(family: str, gpu_memory_gb: float, method: str = "full", bf16_supported: bool = True,
         params: float | None = None) -> GpuPlan:
    """The loading plan for `family` on a GPU of `gpu_memory_gb`: the asked method if it fits, else LoRA in 16
    bits, else LoRA over a 4-bit base (QLoRA); a one-line error if even that does not fit.

    `bf16_supported` is False on a T4 (compute capability 7.5): it then trains in fp16 mixed precision.
    """

    check_family(family)
    if not gpu_memory_gb > 0:
        raise GpuPlanError(f"gpu_memory_gb must be > 0, got {gpu_memory_gb!r}")
    params = params or HUB_PARAMS[family]
    half = "bfloat16" if bf16_supported else "float16"
    chosen = fitting_method(params, gpu_memory_gb, method)
    if chosen is None:
        raise GpuPlanError(f"{family} ({params / 1e9:.2g} B parameters) does not fit {gpu_memory_gb:g} GB even with "
                           f"4-bit LoRA (needs ~{needed_gb(params, 'qlora'):.1f} GB before activations)")
    dtype = "float32" if chosen == "full" else half
    return GpuPlan(family, chosen, dtype, round(needed_gb(params, chosen), 2), "bf16" if bf16_supported else "fp16")


def current_plan(family: str, method: str = "full") -> GpuPlan:
    """`plan` for the GPU torch sees now (the gpu profile)."""
    import torch


    _, memory = check_gpu_profile()
    return plan(family, memory, method, bf16_supported=torch.cuda.is_bf16_supported())
