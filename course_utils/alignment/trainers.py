"""The trl trainers, wrapped for the course: supervised fine-tuning (`SFTTrainer`), DPO (`DPOTrainer`), a reward
model (`RewardTrainer`) and an RL step (`GRPOTrainer`), with small, fast settings.

`trl` does the training; this module picks the settings (`AlignConfig`, `RLConfig`, made into trl configs by the
config base, `CourseConfig.trl_arguments`), hands over the data as rendered strings (`alignment.data`), adds the
course's `FiniteGuard`, and reads back what trl logged (`dpo_log`, `reward_history`).

Used in lessons: 08
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from course_utils.alignment.data import PAIR_FIELDS, check_pairs
from course_utils.alignment.models import AlignmentError
from course_utils.config import CourseConfig, Limit
from course_utils.data import DataError
from course_utils.errors import check_rows
from course_utils.text import chat_turn, end_of_turn, model_device, pad_batch, stop_ids
from course_utils.train import quiet, with_finite_guard


# Every trl entry point and keyword this module uses (checked by tests/test_api_drift.py). Keywords that reach
# trl as TrainingArguments fields are listed under each config class.
_COMMON_ARGS = ["output_dir", "report_to", "save_strategy", "logging_steps", "max_steps", "learning_rate",
                "per_device_train_batch_size", "lr_scheduler_type", "warmup_steps", "seed", "data_seed", "use_cpu",
                "disable_tqdm", "dataloader_num_workers", "activation_checkpointing", "bf16", "max_length",
                "logging_strategy", "remove_unused_columns"]
LIBRARY_CALLS = {
    "trl:SFTTrainer.__init__": ["model", "args", "train_dataset", "processing_class", "callbacks"],
    "trl:SFTConfig": _COMMON_ARGS + ["completion_only_loss"],
    "trl:DPOTrainer.__init__": ["model", "ref_model", "args", "train_dataset", "processing_class", "callbacks"],
    "trl:DPOConfig": _COMMON_ARGS + ["beta", "loss_type", "loss_weights"],
    "trl:RewardTrainer.__init__": ["model", "args", "train_dataset", "processing_class", "callbacks"],
    "trl:RewardConfig": _COMMON_ARGS,
    "trl:GRPOTrainer.__init__": ["model", "reward_funcs", "args", "train_dataset", "processing_class", "callbacks"],
    "trl:GRPOConfig": [k for k in _COMMON_ARGS if k != "max_length"] + [
        "beta", "num_generations", "max_completion_length", "temperature", "generation_kwargs"],
}


@dataclass
class AlignConfig(CourseConfig):
    """A short trl run: steps, learning rate, batch size, seed. DPO uses `beta` (Rafailov et al.: 0.1)."""

    error = AlignmentError
    LIMITS = {"beta": Limit(0, 1000, low_open=True)}  # DPO's KL weight: 0 would ignore the reference entirely

    steps: int = 60
    learning_rate: float = 1e-3
    batch_size: int = 16
    seed: int = 0
    max_length: int = 64
    warmup_steps: int = 5
    beta: float = 0.1
    progress: bool = False  # show trl/transformers progress bars


def _release(trainer):
    """Undo accelerate's patch of `model.forward` after training, and return the model.

    With mixed precision, accelerate replaces `model.forward` by a wrapper that calls the *original* model's
    forward; `copy.deepcopy(model)` copies that wrapper, so the copy would silently run (and train!) the
    original's weights. Removing the instance attribute restores the class's own `forward`.
    """
    model = trainer.model
    for name in ("forward", "_original_forward"):
        model.__dict__.pop(name, None)
    return trainer


def _trl_args(config_cls, s: AlignConfig, **extra):
    """The trl config of a run with `s`, from the config base (`CourseConfig.trl_arguments`): ten log rows a run."""
    return s.trl_arguments(config_cls, logging_steps=max(1, s.steps // 10), **extra)


def _dataset(rows: Sequence[dict[str, Any]], columns: Sequence[str]):
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in columns} for r in rows])


def sft_train(model, tokenizer, rows: Sequence[dict[str, str]], settings: AlignConfig = AlignConfig()):
    """Supervised fine-tuning with `trl.SFTTrainer` on prompt/completion rows (loss on the completion only)."""
    from trl import SFTConfig, SFTTrainer

    check_rows(rows, "sft_train", keys=["prompt", "completion"], error=DataError)
    args = _trl_args(SFTConfig, settings, max_length=settings.max_length, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=_dataset(rows, ["prompt", "completion"]),
                         processing_class=tokenizer, callbacks=with_finite_guard())
    quiet(trainer, settings.progress).train()
    return _release(trainer)


def dpo_train(model, tokenizer, pairs: Sequence[dict[str, str]], settings: AlignConfig = AlignConfig(),
              ref_model=None, nll_weight: float = 0.0):
    """Direct Preference Optimisation with `trl.DPOTrainer`: raise chosen over rejected, relative to a reference.

    The reference defaults to a frozen copy of `model` as it is now (trl would otherwise reload it by name, which
    fails for a model that was never saved). `nll_weight > 0` adds that much of the plain language-model loss on
    the *chosen* answers (trl's `loss_type=["sigmoid", "sft"]`; RPO, Pang et al. 2024). DPO alone only widens the
    gap between chosen and rejected, and can do so by lowering both; the NLL term makes the chosen answer likely.
    """
    from trl import DPOConfig, DPOTrainer

    check_pairs(pairs, where="dpo_train")
    if not (isinstance(nll_weight, (int, float)) and nll_weight >= 0):
        raise AlignmentError(f"dpo_train: nll_weight must be a number >= 0, got {nll_weight!r}")
    ref = ref_model if ref_model is not None else copy.deepcopy(model)
    loss = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, float(nll_weight)]) if nll_weight > 0 else {}
    args = _trl_args(DPOConfig, settings, max_length=settings.max_length, beta=settings.beta, **loss)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=_dataset(pairs, PAIR_FIELDS),
                         processing_class=tokenizer, callbacks=with_finite_guard())
    quiet(trainer, settings.progress).train()
    return _release(trainer)


DPO_LOG = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "loss")


def dpo_log(trainer) -> list[dict[str, float]]:
    """What trl logged during DPO, by step: the implicit rewards (beta * log-ratio to the reference) of the chosen
    and rejected answers, their margin, and the raw log-probabilities. A margin that widens while `logps/chosen`
    falls means DPO is pushing both answers down, the rejected one faster."""
    rows = [{"step": h["step"], **{k: h[k] for k in DPO_LOG if k in h}} for h in trainer.state.log_history
            if "rewards/margins" in h]
    if not rows:
        raise AlignmentError("dpo_log: the trainer logged no DPO rewards (was it a DPOTrainer that trained?)")
    return rows


# ---------------------------------------------------------------------------------------------------- RLHF
def reward_train(reward_model, tokenizer, pairs: Sequence[dict[str, str]], settings: AlignConfig = AlignConfig()):
    """Train a reward model on preference pairs with `trl.RewardTrainer` (Bradley-Terry: r(chosen) > r(rejected))."""
    from trl import RewardConfig, RewardTrainer

    check_pairs(pairs, where="reward_train")
    args = _trl_args(RewardConfig, settings, max_length=settings.max_length)
    trainer = RewardTrainer(model=reward_model, args=args, train_dataset=_dataset(pairs, PAIR_FIELDS),
                            processing_class=tokenizer, callbacks=with_finite_guard())
    quiet(trainer, settings.progress).train()
    return _release(trainer)


@torch.no_grad()
def reward_scores(reward_model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                  batch_size: int = 64) -> list[float]:
    """The reward model's score of each (rendered prompt, completion), formatted as in training (+ END + EOS)."""

    if len(prompts) != len(completions) or len(prompts) == 0:
        raise AlignmentError(f"reward_scores: need as many completions as prompts (>0), got {len(prompts)} and "
                             f"{len(completions)}")
    reward_model.eval()
    device = model_device(reward_model)
    scores: list[float] = []
    end = end_of_turn(tokenizer)
    for start in range(0, len(prompts), batch_size):
        texts = [p + (c if c.endswith(end) else c.strip() + end) + tokenizer.eos_token
                 for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size])]
        ids, mask = pad_batch([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
                               tokenizer.pad_token_id)
        scores += reward_model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].tolist()
    return scores


def pairwise_accuracy(reward_model, tokenizer, pairs: Sequence[dict[str, str]]) -> float:
    """Share of pairs where the reward model scores chosen above rejected (chance: 0.5)."""
    check_pairs(pairs, where="pairwise_accuracy")
    prompts = [p["prompt"] for p in pairs]
    chosen = reward_scores(reward_model, tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = reward_scores(reward_model, tokenizer, prompts, [p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def reward_function(reward_model, tokenizer) -> Callable[..., list[float]]:
    """A trl reward function `f(prompts, completions, **kwargs) -> list[float]` backed by the reward model.

    We wrap the model in a function instead of passing it to GRPO directly because GRPO decodes completions
    without special tokens; the wrapper restores the `<|end|>` + EOS the reward model was trained on.
    """
    def reward(prompts, completions, **kwargs) -> list[float]:
        return reward_scores(reward_model, tokenizer, list(prompts), list(completions))

    reward.__name__ = "reward_model"
    return reward


@dataclass
class RLConfig(CourseConfig):
    """One short GRPO run: `num_generations` samples per prompt are scored and compared within their group."""

    error = AlignmentError

    steps: int = 30
    learning_rate: float = 2e-4
    num_generations: int = 4
    batch_size: int = 16  # completions per step (batch_size / num_generations prompts)
    max_completion_length: int = 16
    temperature: float = 1.0
    beta: float = 0.0  # KL to a reference; 0 (trl's default) needs no reference model
    seed: int = 0
    progress: bool = False

    def check(self) -> None:
        if self.batch_size % self.num_generations:
            raise AlignmentError(f"RLConfig: batch_size must be divisible by num_generations (each prompt's group); "
                                 f"got {self.batch_size} and {self.num_generations}")


def rl_train(model, tokenizer, requests: Sequence[str], reward_fn: Callable[..., list[float]],
             settings: RLConfig = RLConfig()):
    """An RL step of RLHF with `trl.GRPOTrainer`: sample answers, score them with `reward_fn`, push up the better.

    trl 1.16 has no `PPOTrainer`; GRPO replaces PPO's value network with the mean reward of a group of samples.
    """
    from trl import GRPOConfig, GRPOTrainer

    if len(requests) == 0:
        raise AlignmentError("rl_train: no requests given")
    s = settings
    args = s.trl_arguments(GRPOConfig, logging_steps=max(1, s.steps // 4), warmup_steps=0, beta=s.beta,
                           num_generations=s.num_generations, max_completion_length=s.max_completion_length,
                           temperature=s.temperature, generation_kwargs={"eos_token_id": stop_ids(tokenizer)})
    data = _dataset([{"prompt": chat_turn(tokenizer, r, bos=True)} for r in requests], ["prompt"])
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=with_finite_guard())
    quiet(trainer, settings.progress).train()
    return _release(trainer)


def reward_history(trainer) -> list[dict[str, float]]:
    """(step, mean reward) from a GRPO trainer's log: did the RL step raise the reward?"""
    return [{"step": h["step"], "reward": h["reward"]} for h in trainer.state.log_history if "reward" in h]
