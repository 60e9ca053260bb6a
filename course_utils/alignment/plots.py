"""Lesson 08's two figures: DPO's log-probabilities and reward margin over the steps, and each metric by stage.

Used in lessons: 08
"""

from __future__ import annotations

from typing import Sequence

from course_utils.alignment.models import AlignmentError


def plot_dpo_logs(logs: dict[str, Sequence[dict[str, float]]]):
    """Per run (e.g. 'DPO', 'DPO + NLL'): log-probabilities of chosen and rejected answers (left) and the reward
    margin (right) over the training steps, from `dpo_log`."""
    import matplotlib.pyplot as plt

    if not logs:
        raise AlignmentError("plot_dpo_logs: no runs given")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, (name, rows) in enumerate(logs.items()):
        steps = [r["step"] for r in rows]
        color = f"C{i}"
        left.plot(steps, [r["logps/chosen"] for r in rows], color=color, label=f"{name}: chosen")
        left.plot(steps, [r["logps/rejected"] for r in rows], color=color, ls="--", label=f"{name}: rejected")
        right.plot(steps, [r["rewards/margins"] for r in rows], color=color, label=name)
    left.set(xlabel="step", ylabel="log-probability of the answer", yscale="symlog")
    right.set(xlabel="step", ylabel="reward margin (chosen - rejected)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_stages(table, metrics: Sequence[str] = ("refusal", "over_refusal", "helpfulness")):
    """Grouped bars: each metric at each stage (rows of `table`, a DataFrame indexed by stage)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6.0, 0.95 * len(table)), 3.4))
    x = np.arange(len(table))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, table[metric], width, label=metric.replace("_", "-"))
    ax.set_xticks(x, list(table.index), rotation=25, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate on held-out requests")
    ax.legend(ncols=len(metrics), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.16), frameon=False)
    fig.tight_layout()
    return fig
