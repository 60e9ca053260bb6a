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

To put the three on **one scale**, `change_report` measures each as 1 - CKA: hidden states (tokens as examples),
attention maps (each query token's attention over the keys, all heads side by side) and weight matrices (output
units as examples). A change only means something against a **floor**: the same comparison between two clean
fine-tunes that differ only by their data order (`against_floor`). Lesson 04 asks whether noise moves the upper
blocks more than the lower ones, and attention less than hidden states, as Li & Sen (2026) report for 7 B
models; with four blocks, what it finds is declared and measured there, not stated here. `torch` computes
everything; no library ships CKA for Hugging Face models, and the formula is three lines.

Used in lessons: 04
"""

from __future__ import annotations

from typing import Mapping, Sequence

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


def paired_attention(model, reference, tokenizer, texts: Sequence[str], max_length: int, where: str):
    """Both models' attention maps on the same probe texts, and which query positions count: real tokens after the
    first (the first can only attend to itself, so it would look 'identical' in every model)."""
    maps, mask = attention_maps(model, tokenizer, texts, max_length)
    ref_maps, _ = attention_maps(reference, tokenizer, texts, max_length)
    if len(maps) != len(ref_maps):
        raise LayerError(f"{where}: the models have {len(maps)} and {len(ref_maps)} blocks")
    queries = mask.bool().clone()
    queries[:, 0] = False
    if not queries.any():
        raise LayerError(f"{where}: the probe texts need at least two tokens")
    return maps, ref_maps, queries


def attention_similarity(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[float]:
    """Per block, the mean similarity of the two models' attention distributions (1 - JS divergence).

    Averaged over probe texts, heads and real query tokens; the first token is left out, since it can only attend
    to itself and would count as 'identical' in every model.
    """
    maps, ref_maps, queries = paired_attention(model, reference, tokenizer, texts, max_length, "attention_similarity")
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


# ---------------------------------------------------------------------------------------------------------------
# one scale for three views: 1 - CKA, against a floor


@torch.no_grad()
def attention_cka_per_layer(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[float]:
    """Per block, linear CKA between the two models' attention maps: each real query token (the first left out,
    it can only attend to itself) is one example, its attention over the keys in every head its features."""
    maps, ref_maps, queries = paired_attention(model, reference, tokenizer, texts, max_length,
                                               "attention_cka_per_layer")

    def rows(a):  # (batch, heads, query, key) -> (n real queries, heads * key)
        a = a.permute(0, 2, 1, 3)
        return a[queries].reshape(int(queries.sum()), -1)

    return [linear_cka(rows(a), rows(b)) for a, b in zip(maps, ref_maps)]


def weight_cka_per_layer(model, reference) -> list[float]:
    """Per block, the mean linear CKA of its weight matrices against the reference's (rows as examples)."""
    blocks, ref_blocks = transformer_blocks(model), transformer_blocks(reference)
    if len(blocks) != len(ref_blocks):
        raise LayerError(f"weight_cka_per_layer: the models have {len(blocks)} and {len(ref_blocks)} blocks")
    out = []
    for i, (block, ref) in enumerate(zip(blocks, ref_blocks), start=1):
        ref_params = dict(ref.named_parameters())
        values = []
        for name, p in block.named_parameters():
            if p.ndim != 2:
                continue
            if name not in ref_params or ref_params[name].shape != p.shape:
                raise LayerError(f"weight_cka_per_layer: block {i} parameter {name!r} has no match in the reference")
            values.append(linear_cka(p.detach(), ref_params[name].detach()))
        out.append(float(np.mean(values)))
    return out


VIEWS = {"hidden": "hidden states", "attention": "attention maps", "weights": "weights"}


def change_report(model, reference, tokenizer, texts: Sequence[str], max_length: int = 64) -> list[dict[str, float]]:
    """One row per block (1 = lowest): change = 1 - CKA against `reference` of the hidden states, the attention
    maps and the weights, all on the same scale (0 = the same up to rotation and scale)."""
    hidden = cka_per_layer(model, reference, tokenizer, texts, max_length)[1:]
    attention = attention_cka_per_layer(model, reference, tokenizer, texts, max_length)
    weights = weight_cka_per_layer(model, reference)
    return [{"layer": i + 1, "hidden": 1 - h, "attention": 1 - a, "weights": 1 - w}
            for i, (h, a, w) in enumerate(zip(hidden, attention, weights))]


def against_floor(layer_rows, floor: str, views: Sequence[str] = tuple(VIEWS)) -> pd.DataFrame:
    """Each comparison's change divided by the floor's change in the same family, seed, block and view: 1 means
    "moved as much as a clean rerun does", 3 means three times as much. Rows keep family, seed, comparison, layer."""
    df = pd.DataFrame(layer_rows)
    need = {"family", "seed", "comparison", "layer", *views}
    if df.empty or not need <= set(df.columns):
        raise LayerError(f"against_floor: layer rows need columns {sorted(need)}")
    base = df[df.comparison == floor].set_index(["family", "seed", "layer"])[list(views)]
    if base.empty:
        raise LayerError(f"against_floor: no rows for the floor comparison {floor!r}")
    rest = df[df.comparison != floor].copy()
    key = pd.MultiIndex.from_frame(rest[["family", "seed", "layer"]])
    for view in views:
        rest[view] = rest[view].to_numpy() / base[view].reindex(key).clip(lower=1e-12).to_numpy()
    return rest.reset_index(drop=True)


def plot_change_profiles(ratios, views: Sequence[str] = tuple(VIEWS), colours: Mapping[str, str] | None = None):
    """One row of panels per view, one column per family: change / floor per block, mean over seeds, one line per
    comparison; the dashed line at 1 is the floor. A comparison whose name starts with a key of `colours` (the
    lesson's own vocabulary, e.g. `noise.KIND_COLOURS`) is drawn in that colour."""
    import matplotlib.pyplot as plt

    df = pd.DataFrame(ratios)
    if df.empty:
        raise LayerError("plot_change_profiles: nothing to plot")
    families = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(len(views), len(families), figsize=(3.8 * len(families), 2.5 * len(views)),
                             sharex=True, squeeze=False)
    for j, family in enumerate(families):
        fam = df[df.family == family]
        for i, view in enumerate(views):
            ax = axes[i][j]
            for name, part in fam.groupby("comparison", sort=False):
                colour = next((c for k, c in (colours or {}).items() if name.startswith(k)), None)
                mean = part.groupby("layer")[view].mean()
                ax.plot(mean.index, mean.values, marker="o", color=colour, label=name)
            ax.axhline(1.0, color="grey", ls="--", lw=1)
            ax.set_yscale("log")
            if i == 0:
                ax.set_title(family)
            if j == 0:
                ax.set_ylabel(f"{VIEWS.get(view, view)}\nchange / floor", fontsize=8)
            if i == len(views) - 1:
                ax.set_xlabel("block (1 = lowest)")
            ax.set_xticks(sorted(fam.layer.unique()))
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def layer_findings(ratios, comparison: str) -> pd.DataFrame:
    """Per family and seed, for one comparison (e.g. "label 40%"), the numbers behind the layer claims, from the
    change-to-floor ratios of `against_floor` (geometric means over blocks, since ratios multiply):

    - `hidden vs floor`: hidden-state change over all blocks, as a multiple of the clean rerun's;
    - `upper / lower`: hidden-state change of the upper half of the blocks over that of the lower half (both
      against the floor; > 1 means the upper blocks moved more); an odd middle block is left out;
    - `hidden / attention`: hidden-state change over attention-map change (> 1: attention moved less).
    """
    df = pd.DataFrame(ratios)
    df = df[df.comparison == comparison]
    if df.empty:
        raise LayerError(f"layer_findings: no rows for comparison {comparison!r}")
    rows = []
    for (family, seed), part in df.groupby(["family", "seed"], sort=False):
        part = part.sort_values("layer")
        log_h = np.log(part.hidden.to_numpy())
        lower, upper = upper_vs_lower(log_h.tolist())
        rows.append({"family": family, "seed": seed, "hidden vs floor": float(np.exp(log_h.mean())),
                     "upper / lower": float(np.exp(upper - lower)),
                     "hidden / attention": float(np.exp(log_h.mean() - np.log(part.attention.to_numpy()).mean()))})
    return pd.DataFrame(rows)
