"""Layer by layer: where in the network did fine-tuning (or noisy fine-tuning) change the model?

Three views, each computed per transformer block of a tuned model against a reference model of the same
architecture (the clean fine-tune, or the base model):

- **CKA of hidden states** (linear centred kernel alignment, Kornblith et al. 2019): run both models on the same
  probe texts, collect each layer's hidden state at every real token, and ask how similar the two representation
  spaces are. CKA is 1 for identical representations, and stays 1 under rotations and rescaling, so it compares
  *what* a layer encodes, not the arbitrary coordinates it uses.
- **relative weight change** ||W_tuned - W_ref|| / ||W_ref|| per block, and separately for the attention and the
  MLP sub-modules.
- **attention-map similarity**: for every head and query token, how close the two models' attention distributions
  are (1 - Jensen-Shannon divergence, in bits, so 1 means identical and 0 means disjoint).

Lesson 04 uses them to show that noisy labels change the upper, task-specific layers most, and that attention
patterns move less than hidden states. `torch` computes everything; no library ships CKA for Hugging Face models,
and the formula is three lines.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from course_utils.errors import CourseError, check_vocab
from course_utils.peft_methods import transformer_blocks
from course_utils.text import encode, model_device, pad_batch


LIBRARY_CALLS = {
    "transformers:PreTrainedModel.set_attn_implementation": ["attn_implementation"],
}


class LayerError(CourseError):
    """Mismatched models or representations, or an empty probe set."""


# ---------------------------------------------------------------------------------------------------------------
# CKA


def linear_cka(x, y) -> float:
    """Linear CKA between two representations of the same n examples: x (n, d1), y (n, d2).

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), with Xc, Yc the column-centred matrices. It is 1
    when Y is an orthogonal transform and rescaling of X, and near 0 for unrelated representations.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise LayerError(f"linear_cka: need two 2-D arrays with the same number of rows, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise LayerError("linear_cka: need at least two examples")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    denom = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    if denom == 0:
        raise LayerError("linear_cka: a representation is constant over the examples (zero variance)")
    return float(torch.linalg.norm(y.T @ x) ** 2 / denom)


def _probe_batch(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(texts) == 0:
        raise LayerError("no probe texts given")
    return pad_batch([encode(tokenizer, t, max_tokens=max_length) for t in texts], tokenizer.pad_token_id)


@torch.no_grad()
def hidden_states(model, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[torch.Tensor]:
    """Per layer (embeddings, then each block), the hidden states of every real token: a list of (n_tokens, d)."""
    check_vocab(model, tokenizer, "hidden_states", error=LayerError)
    ids, mask = _probe_batch(tokenizer, texts, max_length)
    device = model_device(model)
    model.eval()
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    keep = mask.bool().to(device)
    return [h[keep].float().cpu() for h in out.hidden_states]


def cka_per_layer(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[float]:
    """Linear CKA between `model` and `reference` at each layer (index 0 = embeddings, i = block i)."""
    a = hidden_states(model, tokenizer, texts, max_length)
    b = hidden_states(reference, tokenizer, texts, max_length)
    if len(a) != len(b):
        raise LayerError(f"cka_per_layer: the models have {len(a) - 1} and {len(b) - 1} blocks")
    return [linear_cka(x, y) for x, y in zip(a, b)]


# ---------------------------------------------------------------------------------------------------------------
# weights


def _submodule(name: str) -> str:
    if "attn" in name:  # GPT-2 `attn.c_attn`, Qwen2/Llama `self_attn.q_proj` ...
        return "attention"
    if "mlp" in name:
        return "mlp"
    return "norm"


def weight_change(model, reference) -> list[dict[str, float]]:
    """Relative weight change ||W - W_ref|| / ||W_ref|| per block: whole block, attention and MLP sub-modules."""

    blocks, ref_blocks = transformer_blocks(model), transformer_blocks(reference)
    if len(blocks) != len(ref_blocks):
        raise LayerError(f"weight_change: the models have {len(blocks)} and {len(ref_blocks)} blocks")
    rows = []
    for i, (block, ref) in enumerate(zip(blocks, ref_blocks), start=1):
        diff = {"block": 0.0, "attention": 0.0, "mlp": 0.0}
        norm = dict.fromkeys(diff, 0.0)
        ref_params = dict(ref.named_parameters())
        for name, p in block.named_parameters():
            if name not in ref_params or ref_params[name].shape != p.shape:
                raise LayerError(f"weight_change: block {i} parameter {name!r} has no match in the reference")
            q = ref_params[name].detach().double()
            d2, n2 = float(((p.detach().double() - q) ** 2).sum()), float((q ** 2).sum())
            for part in ("block", _submodule(name)):
                if part in diff:
                    diff[part] += d2
                    norm[part] += n2
        rows.append({"layer": i, **{k: (diff[k] / norm[k]) ** 0.5 if norm[k] else 0.0 for k in diff}})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# attention maps


@torch.no_grad()
def attention_maps(model, tokenizer, texts: Sequence[str], max_length: int = 64) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per block, the attention weights (batch, heads, query, key), and the padding mask (batch, tokens).

    Fast attention kernels (sdpa) do not return weights, so the model switches to the plain 'eager' attention for
    this call and back afterwards.
    """
    ids, mask = _probe_batch(tokenizer, texts, max_length)
    device = model_device(model)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        model.eval()
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    return [a.float().cpu() for a in out.attentions], mask


def _js_similarity(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """1 - Jensen-Shannon divergence (bits) between distributions along the last axis: 1 identical, 0 disjoint."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log2(a.clamp_min(1e-30)) - torch.log2(b.clamp_min(1e-30))), 0.0).sum(-1)

    return 1.0 - 0.5 * (kl(p, m) + kl(q, m))


def attention_similarity(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[float]:
    """Per block, the mean similarity of the two models' attention distributions (1 - JS divergence).

    Averaged over probe texts, heads and real query tokens; the first token is left out, since it can only attend
    to itself and would count as 'identical' in every model.
    """
    maps, mask = attention_maps(model, tokenizer, texts, max_length)
    ref_maps, _ = attention_maps(reference, tokenizer, texts, max_length)
    if len(maps) != len(ref_maps):
        raise LayerError(f"attention_similarity: the models have {len(maps)} and {len(ref_maps)} blocks")
    queries = mask.bool().clone()
    queries[:, 0] = False
    if not queries.any():
        raise LayerError("attention_similarity: the probe texts need at least two tokens")
    out = []
    for a, b in zip(maps, ref_maps):
        sim = _js_similarity(a, b)                      # (batch, heads, query)
        out.append(float(sim.permute(0, 2, 1)[queries].mean()))
    return out


# ---------------------------------------------------------------------------------------------------------------
# one table per comparison


def layer_report(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[dict[str, float]]:
    """One row per block: CKA (hidden states), attention similarity and relative weight change vs `reference`."""
    cka = cka_per_layer(model, reference, tokenizer, texts, max_length)
    att = attention_similarity(model, reference, tokenizer, texts, max_length)
    weights = weight_change(model, reference)
    return [{"layer": w["layer"], "cka": cka[w["layer"]], "attention_sim": att[w["layer"] - 1],
             "weight_change": w["block"], "weight_change_attention": w["attention"], "weight_change_mlp": w["mlp"]}
            for w in weights]


def upper_vs_lower(values: Sequence[float]) -> tuple[float, float]:
    """Mean of a per-block quantity over the lower and the upper half of the blocks (odd counts: middle skipped)."""
    n = len(values)
    if n < 2:
        raise LayerError(f"upper_vs_lower: need at least two blocks, got {n}")
    half = n // 2
    return float(np.mean(values[:half])), float(np.mean(values[n - half:]))


MEASURES = {"cka": "CKA of hidden states (1 = same)", "attention_sim": "attention-map similarity (1 = same)",
            "weight_change": "relative weight change"}


COLOURS = {"label": "tab:red", "grammar": "tab:blue", "typo": "tab:green"}  # as in noise.plot_accuracy_vs_rate


def plot_layer_profiles(layer_rows, measures: Sequence[str] = tuple(MEASURES)):
    """A grid of panels: one row per measure, one column per family; one line per compared pair of models."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(layer_rows)
    if df.empty:
        raise LayerError("plot_layer_profiles: no layer rows to plot")
    families = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(len(measures), len(families), figsize=(3.8 * len(families), 2.6 * len(measures)),
                             sharex=True, squeeze=False)
    for j, family in enumerate(families):
        fam = df[df.family == family]
        for i, measure in enumerate(measures):
            ax = axes[i][j]
            for name, part in fam.groupby("comparison", sort=False):
                colour = next((c for k, c in COLOURS.items() if name.startswith(k)), None)
                style = dict(ls="--", color="grey") if name.startswith("clean") else dict(marker="o", color=colour)
                ax.plot(part.layer, part[measure], label=name, **style)
            if i == 0:
                ax.set_title(family)
            if j == 0:
                ax.set_ylabel(MEASURES.get(measure, measure), fontsize=8)
            if i == len(measures) - 1:
                ax.set_xlabel("block (1 = lowest)")
            ax.set_xticks(sorted(fam.layer.unique()))
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def layer_findings(layer_rows, noisy: str = "label", inputs: Sequence[str] = ("typo", "grammar"),
                   cka_gap: float = 0.05):
    """The lesson's layer findings from per-layer comparisons: (paper claims, checks, half-by-half summary).

    Change is 1 - CKA. The paper's two claims, per family, for the `noisy` comparison: (1) the upper half of the
    blocks changes more than the lower half; (2) attention maps stay more similar to the reference than hidden
    states do (mean attention similarity > mean CKA). The check: `noisy` moves the hidden states further from the
    reference than any of the `inputs` noise types (its lowest mean CKA at least `cka_gap` below theirs).
    """
    df = pd.DataFrame(layer_rows)
    claims, checks, summary = {}, {}, []
    for family in dict.fromkeys(df.family):
        part = df[df.family == family]
        for comparison, rows in part.groupby("comparison", sort=False):
            rows = rows.sort_values("layer")
            lower, upper = upper_vs_lower((1 - rows.cka).tolist())
            w_lower, w_upper = upper_vs_lower(rows.weight_change.tolist())
            summary.append({"family": family, "comparison": comparison, "1-CKA lower half": lower,
                            "1-CKA upper half": upper, "weight change lower": w_lower, "weight change upper": w_upper,
                            "mean CKA": rows.cka.mean(), "mean attention sim": rows.attention_sim.mean()})
            if comparison.startswith(noisy):
                claims[f"{family}: {noisy} noise changes the upper half more than the lower half"] = bool(upper > lower)
                claims[f"{family}: attention maps stay closer to clean than hidden states"] = bool(
                    rows.attention_sim.mean() > rows.cka.mean())
        mean_cka = part.groupby("comparison").cka.mean()
        noisy_cka = mean_cka[[c for c in mean_cka.index if c.startswith(noisy)]].min()
        input_cka = mean_cka[[c for c in mean_cka.index if c.startswith(tuple(inputs))]].min()
        checks[f"{family}: {noisy} noise moves hidden states further than {' and '.join(inputs)} noise (mean CKA "
               f"lower by >= {cka_gap:g})"] = bool(noisy_cka <= input_cka - cka_gap)
    return claims, checks, pd.DataFrame(summary).set_index(["family", "comparison"])
