"""Unit tests for course_utils.alignment.trainers: the trl wrappers (SFT, DPO, reward model, GRPO) and their settings
(tiny random-init models, fast)."""

import pytest
import torch

from course_utils import alignment as A
from course_utils.data import DataError

from alignment_helpers import FAST, rows, small, tiny  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_settings_validate():
    with pytest.raises(A.AlignmentError, match=r"beta must be in \(0"):
        A.AlignConfig(beta=0)
    with pytest.raises(A.AlignmentError, match=r"beta must be in \(0"):
        A.AlignConfig(beta=-0.1)
    with pytest.raises(A.AlignmentError, match="learning_rate"):
        A.AlignConfig(learning_rate=0)
    with pytest.raises(A.AlignmentError, match=r"AlignConfig: steps must be in \[1,"):
        A.AlignConfig(steps=0)
    with pytest.raises(A.AlignmentError, match="divisible"):
        A.RLConfig(batch_size=6, num_generations=4)
    with pytest.raises(A.AlignmentError, match=r"RLConfig: beta must be in \[0,"):
        A.RLConfig(beta=-1)


def _changed(model, before):
    return any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_sft_and_dpo_train_update_the_model(tokenizer, small):
    train, _ = small
    model = tiny(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = A.sft_train(model, tokenizer, A.aligned_sft_rows(tokenizer, train), FAST)
    assert trainer.state.global_step == 2 and _changed(model, before)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = A.dpo_train(model, tokenizer, A.preference_pairs(tokenizer, train), FAST)
    assert trainer.state.global_step == 2 and _changed(model, before)
    with pytest.raises(A.AlignmentError, match="dpo_train row 0"):
        A.dpo_train(model, tokenizer, [{"prompt": "p", "chosen": "a"}], FAST)
    with pytest.raises(DataError, match="sft_train"):
        A.sft_train(model, tokenizer, [{"prompt": "p"}], FAST)


def test_dpo_nll_weight_is_validated_and_configured(monkeypatch):
    from course_utils.alignment import trainers

    with pytest.raises(A.AlignmentError, match="nll_weight"):
        A.dpo_train(None, None, [{"prompt": "p", "chosen": "c", "rejected": "r"}], nll_weight=-1)
    seen = {}

    class Stop(Exception):
        pass

    def fake_args(cls, settings, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(trainers, "_trl_args", fake_args)
    with pytest.raises(Stop):
        A.dpo_train(object(), None, [{"prompt": "p", "chosen": "c", "rejected": "r"}], nll_weight=0.5)
    assert seen["loss_type"] == ["sigmoid", "sft"] and seen["loss_weights"] == [1.0, 0.5]


def test_dpo_log_reads_trl_rewards_and_plots(tokenizer, small):
    import matplotlib.pyplot as plt

    train, _ = small
    model = tiny(tokenizer)
    trainer = A.dpo_train(model, tokenizer, A.preference_pairs(tokenizer, train), FAST)
    log = A.dpo_log(trainer)
    assert [r["step"] for r in log] == [1, 2]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"} <= set(log[0])
    fig = A.plot_dpo_logs({"DPO": log})
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 1
    plt.close(fig)

    class Empty:
        class state:
            log_history = [{"loss": 1.0, "step": 1}]

    with pytest.raises(A.AlignmentError, match="logged no DPO rewards"):
        A.dpo_log(Empty())
    with pytest.raises(A.AlignmentError, match="no runs"):
        A.plot_dpo_logs({})


def test_reward_model_training_and_scoring(tokenizer, small):
    train, test = small
    model = tiny(tokenizer)
    rm = A.classifier_from(model, tokenizer, num_labels=1)
    # the body is the policy's: same embedding weights, a new 1-output head
    assert torch.equal(rm.get_input_embeddings().weight, model.get_input_embeddings().weight)
    pairs = A.preference_pairs(tokenizer, train)
    trainer = A.reward_train(rm, tokenizer, pairs, A.AlignConfig(steps=30, batch_size=8, learning_rate=3e-3))
    assert trainer.state.global_step == 30
    acc = A.pairwise_accuracy(rm, tokenizer, pairs)
    assert 0.0 <= acc <= 1.0 and acc >= 0.75  # it fits its own training pairs
    scores = A.reward_function(rm, tokenizer)(prompts=[pairs[0]["prompt"]] * 2,
                                              completions=["I can't help with that request.",
                                                           "I can't help with that request." + A.END])
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)  # the wrapper restores the end marker
    with pytest.raises(A.AlignmentError, match="reward_scores"):
        A.reward_scores(rm, tokenizer, ["a"], [])
    with pytest.raises(A.AlignmentError, match="pairwise_accuracy: no preference pairs"):
        A.pairwise_accuracy(rm, tokenizer, [])


def test_rl_train_runs_grpo_with_a_reward_function(tokenizer, small):
    train, _ = small
    model = tiny(tokenizer)
    seen = []

    def reward(prompts, completions, **kwargs):
        seen.extend(completions)
        return [float(A.is_refusal(c)) + 0.01 * len(c) for c in completions]

    settings = A.RLConfig(steps=2, batch_size=4, num_generations=2, max_completion_length=4)
    trainer = A.rl_train(model, tokenizer, [r["prompt"] for r in train], reward, settings)
    assert trainer.state.global_step == 2 and len(seen) == 2 * 4
    assert [h["step"] for h in A.reward_history(trainer)]
    with pytest.raises(A.AlignmentError, match="no requests"):
        A.rl_train(model, tokenizer, [], reward, settings)


def test_trl_configs_come_from_the_config_base():
    """Every trl config is made by `CourseConfig.trl_arguments`, with the values `_trl_args` gave by hand before."""
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from course_utils.alignment.trainers import _trl_args

    recipe = A.lesson_recipe("cpu")
    s = recipe.align
    sft = _trl_args(SFTConfig, s, max_length=s.max_length, completion_only_loss=True)
    expected = dict(report_to=[], save_strategy="no", logging_steps=s.steps // 10, max_steps=s.steps,
                    learning_rate=s.learning_rate, per_device_train_batch_size=s.batch_size,
                    lr_scheduler_type="constant_with_warmup", warmup_steps=s.warmup_steps, seed=s.seed,
                    data_seed=s.seed, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
                    activation_checkpointing=False, bf16=False, max_length=s.max_length, completion_only_loss=True,
                    remove_unused_columns=True)  # trl's own default, not the course's False
    assert {k: getattr(sft, k) for k in expected} == expected
    dpo = _trl_args(DPOConfig, A.AlignConfig(steps=7, progress=True), beta=0.2)
    assert (dpo.logging_steps, dpo.disable_tqdm, dpo.beta) == (1, False, 0.2)
    g = recipe.grpo
    grpo = g.trl_arguments(GRPOConfig, logging_steps=max(1, g.steps // 4), warmup_steps=0)
    assert (grpo.max_steps, grpo.per_device_train_batch_size, grpo.learning_rate, grpo.warmup_steps,
            grpo.logging_steps, grpo.remove_unused_columns) == (g.steps, g.batch_size, g.learning_rate, 0, 4, False)


def test_quiet_leaves_the_printer_when_progress_bars_show():
    from course_utils.train import quiet

    class Trainer:
        removed = []

        def remove_callback(self, callback):
            self.removed.append(callback)

    assert quiet(Trainer(), progress=True).removed == []
    assert len(quiet(Trainer()).removed) == 1
