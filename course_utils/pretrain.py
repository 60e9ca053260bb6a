"""Pretraining a tiny base model on the world's corpus, the way `course build` made the shipped models.

The shipped models were trained here with the ordinary `Trainer` until they recalled every attribute of the seen
people; lesson 00 shows the resulting recall curve (`build_info.json`, drawn by `plot_build_history`). A learner
rarely calls `pretrain` directly: it takes minutes per model on two cores, which is why the results are shipped.

Used in lessons: 00
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

from transformers import TrainerCallback

from course_utils.config import CourseConfig
from course_utils.evaluate import fact_recall
from course_utils.train import causal_lm_trainer
from course_utils.zoo import ZooError


@dataclass
class PretrainConfig(CourseConfig):
    """How `course build` pretrains a tiny model: until every attribute of the seen people is recalled."""

    error = ZooError

    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_steps: int = 30
    steps: int = 3000
    decay_steps: int = 1000       # warmup-stable-decay's final cosine decay; 0 keeps the rate constant
    eval_every: int = 200
    target_recall: float = 0.95   # stop once every attribute's recall on the seen people reaches this
    seed: int = 0
    max_length: int = 96


def pretrain(model, tokenizer, texts: list[str], people, config: PretrainConfig = PretrainConfig(),
             log: Callable[[str], None] = print) -> dict:
    """Train `model` on `texts` with `Trainer` until fact recall on `people` reaches the target (or `steps`).

    Memorising a fact is a sudden jump, not a climb: the loss sits near 0.9 while templates are learned, then
    facts appear. So we stop on the *minimum* recall over attributes, checked every `eval_every` steps.
    """
    history: list[dict] = []

    class RecallStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every and state.global_step < config.steps:
                return control
            recall = fact_recall(kwargs["model"], tokenizer, people)
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), float("nan"))
            history.append({"step": state.global_step, "loss": loss, **recall})
            log(f"step {state.global_step:5d}  loss {loss:.3f}  " + "  ".join(f"{k} {v:.2f}" for k, v in recall.items()))
            kwargs["model"].train()
            if min(recall.values()) >= config.target_recall:
                control.should_training_stop = True
            return control

    args = config.training_arguments(**_schedule(config), logging_steps=50, weight_decay=0.0)
    trainer = causal_lm_trainer(model, tokenizer, texts, args, [RecallStop()], max_length=config.max_length)
    start = time.perf_counter()
    trainer.train()
    return {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - start, 1),
            "final_recall": {k: v for k, v in history[-1].items() if k not in ("step", "loss")},
            "history": history, "config": asdict(config)}


def _schedule(config: PretrainConfig) -> dict:
    if config.decay_steps <= 0:
        return {"lr_scheduler_type": "constant_with_warmup"}
    return {"lr_scheduler_type": "warmup_stable_decay",
            "lr_scheduler_kwargs": {"num_decay_steps": min(config.decay_steps, config.steps // 2)}}


# The build's stages (one today). The build saves after each stage, and `course build --resume` runs only the
# stages a saved model has not finished, so a later curriculum (say, a small-batch polish) can be added here.
PRETRAIN_STAGES = (PretrainConfig(),)


def plot_build_history(histories: Mapping[str, Sequence[dict]], attributes: Sequence[str]):
    """Fact recall against pretraining step, one panel per family (the `history` that `pretrain` returns and
    `zoo.build_info` reads back): memorisation arrives as a sudden jump. Lesson 00 shows it."""
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
