"""Parameter-efficient fine-tuning: which modules to adapt in each family, LoRA / prefix / IA3 configs, freezing.

The families name their attention matrices differently (see lesson 00): GPT-2 has one fused `c_attn` for q, k and
v plus `c_proj`, while Qwen2 and Llama have separate `q_proj`, `k_proj`, `v_proj`, `o_proj`. A LoRA config that
works for one family silently matches nothing (or the wrong layer) in another, so this module owns the mapping.

The methods of lesson 01, from most to fewest trainable parameters (`apply_method(model, name)`):

| method | what trains | `peft` config |
|---|---|---|
| `full` | every weight | none |
| `freeze` | the upper half of the blocks (the embeddings, shared with the output head, and lower blocks frozen) | none |
| `lora` | two low-rank matrices B·A added to each attention matrix (Hu et al. 2022) | `LoraConfig` |
| `prefix` | `num_virtual_tokens` learned key/value vectors per layer, prepended to attention (Li & Liang 2021) | `PrefixTuningConfig` |
| `ia3` | one learned scaling vector per adapted matrix: keys, values and the MLP output (Liu et al. 2022) | `IA3Config` |
| `adapter` | a bottleneck MLP after each attention and MLP output, plus the layer norms (Houlsby et al. 2019) | ours |

`adapter` is hand-written (`add_bottleneck_adapters`): peft 0.21 has no Houlsby-style bottleneck adapter (its
"adaption prompt" is LLaMA-Adapter, a prompt method), and the `adapters` library is not among the course's pinned
dependencies.

Used in lessons: 01
"""

from __future__ import annotations

import re

import warnings

import torch

from course_utils.errors import CourseError, check_model, check_rate


# Attention-only LoRA targets per family. GPT-2's `c_proj` also names an MLP layer (`mlp.c_proj`), so GPT-2 uses a
# regex that matches only the attention block's matrices.
LORA_TARGETS: dict[str, str | list[str]] = {
    "gpt2": r".*attn\.(c_attn|c_proj)",
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
# Attention + MLP targets, for "LoRA everywhere" comparisons.
LORA_TARGETS_ALL: dict[str, str | list[str]] = {
    "gpt2": r".*(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))",
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

# IA3 scales keys, values and the MLP's output projection; `feedforward_modules` (scaled on their *input*) must be
# a subset of the targets. GPT-2's names need a regex again (`c_proj` exists in attention and MLP).
IA3_TARGETS: dict[str, tuple[str | list[str], str | list[str]]] = {
    "gpt2": (r".*(attn\.c_attn|mlp\.c_proj)", r".*mlp\.c_proj"),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}
# GPT-2's regex again: `c_proj` names both the attention output and the MLP output, and Houlsby adapts both.
ADAPTER_TARGETS: dict[str, str | list[str]] = {
    "gpt2": r".*(attn|mlp)\.c_proj",
    "qwen2": ["o_proj", "down_proj"],
    "llama": ["o_proj", "down_proj"],
}
PEFT_METHODS = ("full", "freeze", "lora", "prefix", "ia3", "adapter")

LIBRARY_CALLS = {
    "peft:LoraConfig": ["r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "fan_in_fan_out"],
    "peft:PrefixTuningConfig": ["task_type", "num_virtual_tokens", "prefix_projection"],
    "peft:IA3Config": ["task_type", "target_modules", "feedforward_modules", "fan_in_fan_out"],
    "peft:get_peft_model": ["model", "peft_config"],
}


class PeftError(CourseError):
    """A family or setting the PEFT helpers do not know."""


def model_family(model) -> str:
    """The course family of a model ('gpt2', 'qwen2' or 'llama') from its config."""
    check_model(model, "model_family", error=PeftError)
    family = getattr(model.config, "model_type", None)
    if family not in LORA_TARGETS:
        raise PeftError(f"model type {family!r} is not one of the course families {tuple(LORA_TARGETS)}")
    return family


def _check_family(family: str, what: str) -> str:
    if not isinstance(family, str) or family not in LORA_TARGETS:
        raise PeftError(f"unknown family {family!r} for {what}; choose one of {tuple(LORA_TARGETS)}")
    return family


def lora_config(family: str, r: int = 8, alpha: int | None = None, dropout: float = 0.0, mlp: bool = False,
                task_type: str = "CAUSAL_LM", target_modules: str | list[str] | None = None):
    """A `peft.LoraConfig` for `family`'s attention matrices (and MLP with `mlp=True`); alpha defaults to 2r.

    `target_modules` overrides the family's mapping (a list of module-name suffixes or one regex)."""
    from peft import LoraConfig

    _check_family(family, "LoRA")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise PeftError(f"LoRA rank must be >= 1, got {r!r}")
    check_rate(dropout, "lora_config", "LoRA dropout", high_open=True, error=PeftError)
    targets = target_modules if target_modules is not None else (LORA_TARGETS_ALL if mlp else LORA_TARGETS)[family]
    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, lora_dropout=dropout,
                      target_modules=targets, task_type=task_type, fan_in_fan_out=family == "gpt2")


def matching_modules(model, target: str | list[str]) -> list[str]:
    """Names of the modules of `model` that a peft `target_modules` value selects.

    The same rule as peft: a string is a regex that must match the whole module name; a list entry matches a
    module whose name is that entry or ends with '.' + entry."""
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(target, str):
        return [n for n in names if re.fullmatch(target, n)]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in target)]


def check_targets(model, target: str | list[str]) -> None:
    """A one-line error naming any target that selects no module of `model` (peft would fail deep inside)."""
    groups = [target] if isinstance(target, str) else [[t] for t in target]
    missing = [g if isinstance(g, str) else g[0] for g in groups if not matching_modules(model, g)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if getattr(getattr(m, "weight", None), "dim", lambda: 0)() == 2})
        raise PeftError(f"target module(s) {missing} match nothing in this {type(model).__name__}; "
                        f"its weight matrices are named {leaves}")


def apply_lora(model, r: int = 8, alpha: int | None = None, dropout: float = 0.0, mlp: bool = False,
               task_type: str = "CAUSAL_LM", target_modules: str | list[str] | None = None):
    """Wrap `model` with a LoRA adapter for its family; only the adapter (and a task head, if any) trains."""
    config = lora_config(model_family(model), r, alpha, dropout, mlp, task_type, target_modules)
    check_targets(model, config.target_modules if isinstance(config.target_modules, str)
                  else sorted(config.target_modules))
    return _wrap(model, config)


def _wrap(model, config):
    """`get_peft_model`, without the deprecation warning peft 0.21 triggers inside transformers 5 (not ours)."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)


def prefix_config(num_virtual_tokens: int = 8, task_type: str = "CAUSAL_LM", projection: bool = False):
    """A `peft.PrefixTuningConfig`: `num_virtual_tokens` trained key/value vectors in every layer's attention.

    No target modules: peft reads layers, heads and (for Qwen2's grouped KV heads) the key/value width from the
    model's config, so the same config fits all three families."""
    from peft import PrefixTuningConfig

    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int) or num_virtual_tokens < 1:
        raise PeftError(f"prefix tuning needs num_virtual_tokens >= 1, got {num_virtual_tokens!r}")
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=num_virtual_tokens,
                              prefix_projection=projection)


def ia3_config(family: str, task_type: str = "CAUSAL_LM"):
    """A `peft.IA3Config` for `family`: learned vectors that rescale keys, values and the MLP output."""
    from peft import IA3Config

    targets, feedforward = IA3_TARGETS[_check_family(family, "IA3")]
    return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward,
                     fan_in_fan_out=family == "gpt2")


def apply_method(model, method: str, r: int = 8, n_frozen: int | None = None, num_virtual_tokens: int = 8,
                 task_type: str = "CAUSAL_LM", bottleneck: int = 16):
    """`model` made ready to train with one of `PEFT_METHODS`; returns the model to train (maybe a PeftModel).

    `full` and `freeze` change `requires_grad` in place (`n_frozen` defaults to half the blocks); `adapter` inserts
    bottleneck adapters of width `bottleneck` in place; the others wrap the model with a peft adapter. Every
    method but `full` leaves the base weights frozen."""
    if method not in PEFT_METHODS:
        raise PeftError(f"unknown fine-tuning method {method!r}; choose one of {PEFT_METHODS}")
    if method == "full":
        for p in model.parameters():
            p.requires_grad = True
        return model
    if method == "freeze":
        return freeze_lower_layers(model, len(transformer_blocks(model)) // 2 if n_frozen is None else n_frozen)
    if method == "lora":
        return apply_lora(model, r=r, task_type=task_type)
    if method == "adapter":
        return add_bottleneck_adapters(model, bottleneck)
    family = model_family(model)
    config = prefix_config(num_virtual_tokens, task_type) if method == "prefix" else ia3_config(family, task_type)
    if method == "ia3":
        check_targets(model, config.target_modules if isinstance(config.target_modules, str)
                      else sorted(config.target_modules))
    return _wrap(model, config)


def transformer_blocks(model):
    """The list of transformer blocks of a course-family model (GPT-2 `transformer.h`, others `model.layers`)."""
    base = getattr(model, "base_model", model)
    base = getattr(base, "model", base) if hasattr(base, "peft_config") else base
    for path in ("transformer.h", "model.layers", "h", "layers"):
        obj = base
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return list(obj)
        except AttributeError:
            continue
    raise PeftError(f"cannot find the transformer blocks of {type(model).__name__}")


def freeze_lower_layers(model, n_frozen: int, freeze_embeddings: bool = True):
    """Freeze the embeddings and the lowest `n_frozen` blocks; upper blocks, final norm and head stay trainable."""
    blocks = transformer_blocks(model)
    if isinstance(n_frozen, bool) or not isinstance(n_frozen, int) or not 0 <= n_frozen <= len(blocks):
        raise PeftError(f"freeze_lower_layers: n_frozen must be in [0, {len(blocks)}] for this model "
                        f"({len(blocks)} layers), got {n_frozen!r}")
    for p in model.parameters():
        p.requires_grad = True
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad = False
        pos = getattr(getattr(model, "transformer", None), "wpe", None)
        if pos is not None:
            pos.weight.requires_grad = False
    for block in blocks[:n_frozen]:
        for p in block.parameters():
            p.requires_grad = False
    return model


class BottleneckAdapter(torch.nn.Module):
    """Houlsby et al. (2019)'s adapter: h + up(gelu(down(h))), a `width -> bottleneck -> width` MLP with a skip.

    `up` starts at zero, so a freshly inserted adapter is the identity and training starts from the base model."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = torch.nn.Linear(width, bottleneck)
        self.up = torch.nn.Linear(bottleneck, width)
        torch.nn.init.normal_(self.down.weight, std=1e-2)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(torch.nn.functional.gelu(self.down(hidden)))


class AdaptedOutput(torch.nn.Module):
    """An output projection followed by its adapter: where Houlsby places it, before the residual addition."""

    def __init__(self, layer: torch.nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.layer, self.adapter = layer, adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.layer(*args, **kwargs))


def add_bottleneck_adapters(model, bottleneck: int = 16):
    """Insert a `BottleneckAdapter` after every attention output and MLP output projection of `model` (in place) and
    freeze everything but the adapters and the layer norms, as Houlsby et al. (2019) trained them.

    Returns `model`; `model.course_adapters` is set so that `adapter_state_dict` saves the adapter alone."""
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise PeftError(f"bottleneck adapters need a bottleneck width >= 1, got {bottleneck!r}")
    if getattr(model, "course_adapters", False):
        raise PeftError("add_bottleneck_adapters: this model already has bottleneck adapters")
    target = ADAPTER_TARGETS[model_family(model)]
    names = matching_modules(model, target)
    if not names:
        check_targets(model, target)
    width = model.config.hidden_size
    for p in model.parameters():
        p.requires_grad = False
    device = next(model.parameters()).device
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        adapter = BottleneckAdapter(width, bottleneck).to(device)
        setattr(parent, child, AdaptedOutput(getattr(parent, child), adapter))
    for name, p in model.named_parameters():
        if ".adapter." in name or re.search(r"(^|\.)(ln_\w+|\w*norm)\.", name):
            p.requires_grad = True
    model.course_adapters = True
    return model


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The trainable tensors of a model prepared by `add_bottleneck_adapters`: what its checkpoint must store."""
    if not getattr(model, "course_adapters", False):
        raise PeftError("adapter_state_dict: the model has no bottleneck adapters (use save_pretrained)")
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
