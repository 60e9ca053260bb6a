"""Plots the lessons share. Each returns the matplotlib figure so a notebook can show or save it.

Used in lessons: 00
"""

from __future__ import annotations

from typing import Mapping, Sequence


def plot_build_history(histories: Mapping[str, Sequence[dict]], attributes: Sequence[str]):
    """Fact recall against pretraining step, one panel per family: memorisation arrives as a sudden jump."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2), sharey=True, squeeze=False)
    for ax, (family, history) in zip(axes[0], histories.items()):
        steps = [h["step"] for h in history]
        for attr in attributes:
            ax.plot(steps, [h[attr] for h in history], marker=".", label=attr)
        ax.axhline(1 / 12, color="grey", ls=":", lw=1, label="chance (1/12)")
        ax.set_title(family)
        ax.set_xlabel("pretraining step")
    axes[0][0].set_ylabel("fact recall (seen people)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
