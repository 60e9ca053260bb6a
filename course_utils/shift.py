"""What fine-tuning changes, token by token: KL divergence, base probability and rank-shift classes.

Feed the *same* context to a base model and a tuned model and compare their next-token distributions at every
position of an answer (Lin et al. 2023, "The Unlocking Spell on Base LLMs"; Ghosh et al. 2024, "A Closer Look at
the Limitations of Instruction Tuning"). Three numbers per position tell what tuning changed there:

- the KL divergence between the two distributions. `kl` is KL(tuned || base) = sum_t p_tuned log(p_tuned/p_base),
  "how surprised the base is by the tuned model's beliefs"; `kl_reverse` is KL(base || tuned). Both are in nats;
- the probability under the base model of the token the tuned model chose (`base_prob`);
- that token's rank in the base model's distribution (`base_rank`), and its class: **unshifted** (rank 1: the
  base would have said the same), **marginal** (rank 2-3: the base had it on its short list) or **shifted**
  (rank > 3: tuning taught the model to say something the base would not).

Two entry points: `answer_shift` lets the tuned model answer prompts greedily and scores its answer tokens;
`text_shift` scores given text (the tuned model's top choice at each position), which is how to measure the
collateral change on text the base model already knows. Both return a tidy per-token table (a DataFrame); the
summary functions below turn it into class shares, KL quantiles, KL by position and the most shifted tokens.

Measuring with care (see LIBRARY_NOTES): every sequence starts with BOS (else the first position adds several
nats of noise); report the median and quantiles next to the mean, since a few positions where the base is nearly
certain dominate the mean; and score text the base model knows, since on text it never saw every model is far off.

Used in lessons: 06
"""

from __future__ import annotations

import html
from typing import Mapping, Sequence

import torch

from course_utils.errors import CourseError
from course_utils.text import chat_turn, encode, model_device, pad_batch, pad_id


CLASSES = ("unshifted", "marginal", "shifted")
CLASS_COLOURS = {"unshifted": "#d9ead3", "marginal": "#fce5a0", "shifted": "#f4a6a6"}

LIBRARY_CALLS = {
    # generate() takes its settings through **kwargs; api_contract checks them on GenerationConfig
    "transformers:GenerationMixin.generate": [],
    "ipywidgets:Dropdown": [],
    "ipywidgets:HTML": [],
}


class ShiftError(CourseError):
    """Models or tokenizers that cannot be compared position by position, or empty input."""


def shift_class(rank: int) -> str:
    """URIAL's classes: rank 1 'unshifted', rank 2-3 'marginal', rank > 3 'shifted'."""
    if rank < 1:
        raise ShiftError(f"a token rank starts at 1, got {rank}")
    return "unshifted" if rank == 1 else "marginal" if rank <= 3 else "shifted"


def _vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def check_compatible(base, tuned, tokenizer, tuned_tokenizer=None) -> int:
    """Both models must score the same vocabulary with the same tokenizer; returns the vocabulary size.

    Comparing distributions position by position only means something if token id 17 is the same token in both
    models. A model fine-tuned with extra (chat) tokens, or a tokenizer from another family, fails here.
    """
    vb, vt = _vocab_size(base), _vocab_size(tuned)
    if vb != vt:
        raise ShiftError(f"vocabularies differ: the base model scores {vb} tokens, the tuned model {vt}; "
                         f"compare models that share one tokenizer")
    if len(tokenizer) > vb:
        raise ShiftError(f"the tokenizer has {len(tokenizer)} tokens but the models score only {vb}")
    if tuned_tokenizer is not None and tuned_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ShiftError("the tuned model's tokenizer differs from the base model's (different token ids); "
                         "compare models that share one tokenizer")
    return vb


def prompt_text(tokenizer, prompt: str, chat: bool) -> str:
    """The text a prompt becomes: itself, or with `chat=True` a user turn in the tokenizer's chat template."""
    if not chat:
        return prompt
    return chat_turn(tokenizer, prompt)


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 32,
                   chat: bool = False) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per prompt: the model's greedy answer, cut after its first EOS (kept)."""
    model.eval()
    device, pad, eos = model_device(model), pad_id(tokenizer), tokenizer.eos_token_id
    out = []
    for start in range(0, len(prompts), batch_size):
        seqs = [encode(tokenizer, prompt_text(tokenizer, p, chat)) for p in prompts[start:start + batch_size]]
        ids, mask = pad_batch(seqs, pad, left=True)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
        for seq, row in zip(seqs, gen[:, ids.shape[1]:].tolist()):
            answer = row[:row.index(eos) + 1] if eos in row else row
            out.append((seq, answer))
    return out


@torch.no_grad()
def _compare(base, tuned, tokenizer, items: Sequence[tuple[list[int], int]], chosen_from: str,
             batch_size: int, top_k: int, base_items: Sequence[tuple[list[int], int]] | None = None) -> list[dict]:
    """Score positions `start..len-1` of each sequence (item = (ids, start)) under both models.

    `chosen_from='sequence'`: the chosen token is the one that follows in the sequence (a greedy answer);
    `'tuned'`: it is the tuned model's top choice at that position (for given text).
    `base_items`, when given, are what the base reads instead (its own prompt, then the same scored tokens): item
    i's scored positions `start..` in `items[i]` line up with `base_items[i]`'s positions from its own start.
    """
    base.eval()
    tuned.eval()
    dev_b, dev_t, pad = model_device(base), model_device(tuned), pad_id(tokenizer)
    rows: list[dict] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        bbatch = batch if base_items is None else base_items[start:start + batch_size]
        ids, mask = pad_batch([s for s, _ in batch], pad, left=False)
        bids, bmask = pad_batch([s for s, _ in bbatch], pad, left=False)
        logits_b = base(input_ids=bids.to(dev_b), attention_mask=bmask.to(dev_b)).logits
        logits_t = tuned(input_ids=ids.to(dev_t), attention_mask=mask.to(dev_t)).logits.to(dev_b)
        if logits_b.shape[-1] != logits_t.shape[-1]:
            raise ShiftError(f"vocabularies differ: base logits have {logits_b.shape[-1]} entries, tuned "
                             f"{logits_t.shape[-1]}")
        # the positions that predict each scored token: row r, index j-1 predicts token j
        where = [(r, j) for r, (seq, first) in enumerate(batch) for j in range(max(first, 1), len(seq))]
        if not where:
            continue
        r_idx = torch.tensor([r for r, _ in where], device=dev_b)
        j_idx = torch.tensor([j for _, j in where], device=dev_b)
        jb_idx = torch.tensor([j - batch[r][1] + bbatch[r][1] for r, j in where], device=dev_b)
        lp_b = torch.log_softmax(logits_b[r_idx, jb_idx - 1].float(), -1)
        lp_t = torch.log_softmax(logits_t[r_idx, j_idx - 1].float(), -1)
        kl = (lp_t.exp() * (lp_t - lp_b)).sum(-1).clamp_min(0.0)
        kl_rev = (lp_b.exp() * (lp_b - lp_t)).sum(-1).clamp_min(0.0)
        if chosen_from == "sequence":
            chosen = ids.to(dev_b)[r_idx, j_idx]
        else:
            chosen = lp_t.argmax(-1)
        lp_b_chosen = lp_b.gather(-1, chosen[:, None])
        rank = (lp_b > lp_b_chosen).sum(-1) + 1  # ties get the best rank: a tie with the top is "unshifted"
        top_p, top_i = lp_b.exp().topk(top_k, dim=-1)
        for n, (r, j) in enumerate(where):
            tid = int(chosen[n])
            rows.append({
                "item": start + r, "position": j - batch[r][1], "token_id": tid,
                "token": tokenizer.decode([tid]), "kl": float(kl[n]), "kl_reverse": float(kl_rev[n]),
                "base_prob": float(lp_b_chosen[n].exp()), "tuned_prob": float(lp_t[n, tid].exp()),
                "base_rank": int(rank[n]), "shift_class": shift_class(int(rank[n])),
                "base_top": [(tokenizer.decode([int(i)]), round(float(p), 3))
                             for p, i in zip(top_p[n].tolist(), top_i[n].tolist())],
            })
    return rows


def _table(rows: list[dict]):
    import pandas as pd

    columns = ["item", "prompt", "position", "token_id", "token", "kl", "kl_reverse", "base_prob", "tuned_prob",
               "base_rank", "shift_class", "base_top"]
    return pd.DataFrame(rows, columns=columns)


def answer_shift(base, tuned, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24, chat: bool = False,
                 batch_size: int = 32, top_k: int = 3, base_prompts: Sequence[str] | None = None):
    """Per-token table of the tuned model's greedy answers to `prompts`, each token scored against the base.

    Columns: item (prompt index), prompt, position (0 = first answer token), token_id, token, kl = KL(tuned||base),
    kl_reverse = KL(base||tuned), base_prob and tuned_prob of the chosen token, base_rank, shift_class, and
    base_top (the base model's top-k alternatives with their probabilities). The EOS that ends an answer is a
    position too: learning when to stop is part of what tuning changes.

    `base_prompts` (plain text, one per prompt): the base reads the question in *its own* format instead (Lin et
    al. let each model read the query as it was trained to), followed by the same answer tokens; without it, the
    base reads the tuned model's prompt.
    """
    if len(prompts) == 0:
        raise ShiftError("answer_shift: no prompts given")
    if base_prompts is not None and len(base_prompts) != len(prompts):
        raise ShiftError(f"answer_shift: {len(base_prompts)} base prompts for {len(prompts)} prompts")
    check_compatible(base, tuned, tokenizer)
    answers = greedy_answers(tuned, tokenizer, prompts, max_new_tokens, batch_size, chat)
    items = [(p + a, len(p)) for p, a in answers]
    base_items = None
    if base_prompts is not None:
        base_items = [(encode(tokenizer, b) + a, len(encode(tokenizer, b))) for b, (_, a) in zip(base_prompts, answers)]
    rows = _compare(base, tuned, tokenizer, items, "sequence", batch_size, top_k, base_items)
    for row in rows:
        row["prompt"] = prompts[row["item"]]
    return _table(rows)


def text_shift(base, tuned, tokenizer, texts: Sequence[str], batch_size: int = 32, top_k: int = 3,
               max_length: int = 128):
    """Per-token table over given `texts` (BOS + text + EOS): KL at every position after BOS, and the rank under
    the base of the token the *tuned* model would choose there. Use it on text the base knows (its own domain,
    generic text) to see how much tuning moved the model away from what it already did well."""
    if len(texts) == 0:
        raise ShiftError("text_shift: no texts given")
    check_compatible(base, tuned, tokenizer)
    items = [(encode(tokenizer, t, add_eos=True, max_tokens=max_length), 1) for t in texts]
    rows = _compare(base, tuned, tokenizer, items, "tuned", batch_size, top_k)
    for row in rows:
        row["prompt"] = texts[row["item"]]
        row["position"] += 1  # position 1 = the first text token (position 0 is BOS, never scored)
    return _table(rows)


# ---------------------------------------------------------------- summaries of a per-token table


def _check_table(table, where: str):
    if table is None or len(table) == 0:
        raise ShiftError(f"{where}: the token table is empty")
    missing = [c for c in ("kl", "base_rank", "shift_class", "position", "token") if c not in table.columns]
    if missing:
        raise ShiftError(f"{where}: the table lacks column(s) {missing}; build it with answer_shift/text_shift")


def class_shares(table, by: str | None = None):
    """Share of tokens in each class (columns unshifted, marginal, shifted; rows per `by` group if given)."""
    import pandas as pd

    _check_table(table, "class_shares")
    groups = table.groupby(by) if by else [("all", table)]
    rows = {}
    for key, part in groups:
        counts = part["shift_class"].value_counts(normalize=True)
        rows[key] = {c: float(counts.get(c, 0.0)) for c in CLASSES}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = by or ""
    return out


def kl_summary(table, column: str = "kl", by: str | None = None):
    """Mean, median and quantiles of the per-token KL: the mean alone hides that most positions barely move."""
    import pandas as pd

    _check_table(table, "kl_summary")
    groups = table.groupby(by) if by else [("all", table)]
    rows = {}
    for key, part in groups:
        kl = part[column]
        rows[key] = {"mean": kl.mean(), "q25": kl.quantile(0.25), "median": kl.median(), "q75": kl.quantile(0.75),
                     "q90": kl.quantile(0.9), "max": kl.max(), "share < 0.01": float((kl < 0.01).mean())}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = by or ""
    return out


def kl_by_position(table, max_position: int = 12, column: str = "kl", stat: str = "mean"):
    """`stat` ('mean' or 'median') of the KL at each answer position 0..max_position: where in an answer tuning acts."""
    _check_table(table, "kl_by_position")
    if stat not in ("mean", "median"):
        raise ShiftError(f"kl_by_position: stat must be 'mean' or 'median', got {stat!r}")
    part = table[table["position"] <= max_position]
    return part.groupby("position")[column].agg(stat)


def top_shifted_tokens(table, n: int = 10, classes: Sequence[str] = ("shifted",)):
    """The tokens that most often fall in `classes` (default: shifted), with their count and mean base probability."""
    import pandas as pd

    _check_table(table, "top_shifted_tokens")
    bad = [c for c in classes if c not in CLASSES]
    if bad:
        raise ShiftError(f"top_shifted_tokens: unknown class(es) {bad}; known: {CLASSES}")
    part = table[table["shift_class"].isin(list(classes))]
    if len(part) == 0:
        return pd.DataFrame(columns=["token", "count", "mean_base_prob"])
    out = (part.groupby("token").agg(count=("kl", "size"), mean_base_prob=("base_prob", "mean"))
           .sort_values(["count", "mean_base_prob"], ascending=[False, True]).head(n).reset_index())
    out["token"] = out["token"].map(repr)  # show spaces and newlines
    return out


def summarise(table) -> dict[str, float]:
    """One row for a method: class shares, mean / median / q90 KL (both directions), mean base probability."""
    _check_table(table, "summarise")
    shares = table["shift_class"].value_counts(normalize=True)
    return {"tokens": int(len(table)),
            **{f"share_{c}": float(shares.get(c, 0.0)) for c in CLASSES},
            "kl_mean": float(table["kl"].mean()), "kl_median": float(table["kl"].median()),
            "kl_q90": float(table["kl"].quantile(0.9)), "kl_reverse_mean": float(table["kl_reverse"].mean()),
            "base_prob_mean": float(table["base_prob"].mean())}


# ---------------------------------------------------------------- plots and the token viewer


def plot_class_shares(shares, title: str = "token classes of the tuned answers"):
    """A stacked bar per row of `class_shares(...)`: unshifted / marginal / shifted."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(shares), 3.2))
    bottom = [0.0] * len(shares)
    labels = [str(i) for i in shares.index]
    for c in CLASSES:
        vals = shares[c].tolist()
        ax.bar(labels, vals, bottom=bottom, color=CLASS_COLOURS[c], edgecolor="grey", label=c)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of answer tokens")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_kl_distributions(tables: Mapping[str, object], column: str = "kl", by_position: bool = True,
                          max_position: int = 12):
    """Left: the cumulative distribution of per-token KL per method (log x); right: mean KL by answer position."""
    import matplotlib.pyplot as plt
    import numpy as np

    ncols = 2 if by_position else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.3), squeeze=False)
    ax = axes[0][0]
    for name, table in tables.items():
        kl = np.sort(np.clip(table[column].to_numpy(), 1e-6, None))
        ax.plot(kl, np.arange(1, len(kl) + 1) / len(kl), label=name)
    ax.set_xscale("log")
    ax.set_xlabel(f"per-token {column} (nats, log scale)")
    ax.set_ylabel("share of tokens below")
    ax.legend(fontsize=8)
    if by_position:
        ax = axes[0][1]
        for name, table in tables.items():
            series = kl_by_position(table, max_position, column)
            ax.plot(series.index, series.values, marker=".", label=name)
        ax.set_xlabel("answer position")
        ax.set_ylabel(f"mean {column} (nats)")
        ax.set_yscale("log")
    fig.tight_layout()
    return fig


def shift_html(table, item: int) -> str:
    """One answer as HTML: each token coloured by its class; hover shows the base model's top alternatives."""
    part = table[table["item"] == item].sort_values("position")
    if len(part) == 0:
        raise ShiftError(f"shift_html: no tokens for item {item}")
    spans, notes = [], []
    for row in part.itertuples():
        alts = ", ".join(f"{t!r} {p:.2f}" for t, p in row.base_top)
        tip = f"{row.shift_class}: base rank {row.base_rank}, p_base {row.base_prob:.3f}, KL {row.kl:.2f}; base top: {alts}"
        text = html.escape(row.token).replace("\n", "\\n") or "&nbsp;"
        spans.append(f'<span title="{html.escape(tip)}" style="background:{CLASS_COLOURS[row.shift_class]};'
                     f'padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace">{text}</span>')
        if row.shift_class != "unshifted":
            notes.append(f"<li><code>{html.escape(repr(row.token))}</code> ({row.shift_class}, base rank "
                         f"{row.base_rank}); the base preferred {html.escape(alts)}</li>")
    legend = " ".join(f'<span style="background:{CLASS_COLOURS[c]};padding:1px 4px">{c}</span>' for c in CLASSES)
    prompt = html.escape(str(part["prompt"].iloc[0]))
    return (f"<div><b>prompt:</b> {prompt}<br><b>answer:</b> {''.join(spans)}<br><small>{legend}</small>"
            f"<ul style='font-size:small'>{''.join(notes)}</ul></div>")


def shift_explorer(tables: Mapping[str, object]):
    """An ipywidgets viewer: pick a method and a prompt, see the coloured answer (hover a token for details)."""
    import ipywidgets as widgets

    names = list(tables)
    first = tables[names[0]]
    prompts = first.drop_duplicates("item")[["item", "prompt"]].itertuples(index=False)
    method = widgets.Dropdown(options=names, description="method")
    prompt = widgets.Dropdown(options=[(p[:60], i) for i, p in prompts], description="prompt")
    view = widgets.HTML()

    def refresh(_=None):
        view.value = shift_html(tables[method.value], prompt.value)

    method.observe(refresh, names="value")
    prompt.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox([method, prompt]), view])
