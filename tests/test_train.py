"""course_utils.train: datasets for causal LMs, rehearsal mixing, resumable runs, and the guard that stops a run
whose loss or weights go non-finite.

The resume test launches real Python subprocesses (as a learner's kernel would be), kills one with SIGKILL once a
checkpoint exists, resumes it, and compares it with an uninterrupted run of the same seed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.config import TrainingSettingsError
from course_utils.errors import CourseError
from course_utils.paths import REPO_DIR
from course_utils.train import (FiniteGuard, last_checkpoint, mix_rehearsal, rehearsal_count, resumable_training_args,
                                run_dir, train_with_resume)

# The worker trains the shipped GPT-2 (dropout on, so RNG state matters) for 24 steps = 2 epochs of 96 texts,
# checkpointing every 6 steps. With a positive `slow` it sleeps after step 6 so the parent can kill it mid-run.
WORKER = r'''
import json, os, sys, time
import torch
torch.set_num_threads(1)
from transformers import Trainer, TrainerCallback
from course_utils import zoo
from course_utils.data import load_sample
from course_utils.profiles import setup
from course_utils.forgetting import RunConfig
from course_utils.train import (causal_collator, last_checkpoint, resumable_training_args, tokenize_texts,
                                train_with_resume)

slow, runs = float(sys.argv[1]), sys.argv[2:]


class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= 6:
            time.sleep(slow)


for run in runs:  # several runs in one process save the ~6 s of imports each
    setup(profile="cpu", seed=0, quiet=True)
    model, tok = zoo.load("gpt2")
    texts = [r["text"] for r in load_sample("pretrain_corpus.jsonl")[:96]]
    config = RunConfig(steps=24, batch_size=8, learning_rate=1e-3, warmup_steps=5)
    args = resumable_training_args(config, run, save_steps=6, logging_steps=3)
    trainer = Trainer(model=model, args=args, train_dataset=tokenize_texts(tok, texts, 48),
                      data_collator=causal_collator(tok), callbacks=[Slow()])
    resumed_from = last_checkpoint(run)
    out = train_with_resume(trainer)
    eval_loss = trainer.evaluate(eval_dataset=tokenize_texts(tok, texts[:32], 48))["eval_loss"]
    weights = {k: v.double().sum().item() for k, v in model.state_dict().items()}
    json.dump({"resumed_from": resumed_from and os.path.basename(resumed_from), "steps": trainer.state.global_step,
               "log": {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h},
               "eval_loss": eval_loss, "weights": weights}, open(os.path.join(run, "final.json"), "w"))
'''


def _env():
    env = dict(os.environ, COURSE_PROFILE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", COURSE_THREADS="1",
               PYTHONPATH=str(REPO_DIR))
    return env


def _launch(script: Path, slow: float, *runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(slow), *map(str, runs)], cwd=REPO_DIR, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    full_dir, part_dir = tmp_path / "full", tmp_path / "interrupted"
    part = _launch(script, 0.5, part_dir)
    deadline = time.monotonic() + 120
    while last_checkpoint(part_dir) is None:  # wait for a complete checkpoint, then pull the plug
        assert part.poll() is None, "the run to interrupt ended before it wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    part.send_signal(signal.SIGKILL)
    part.communicate()
    assert part.returncode == -signal.SIGKILL
    assert not (part_dir / "final.json").exists(), "the run finished before it was killed"
    _finish(_launch(script, 0.0, part_dir, full_dir))  # resume the killed run, then an uninterrupted one

    a = json.loads((full_dir / "final.json").read_text())
    b = json.loads((part_dir / "final.json").read_text())
    assert a["resumed_from"] is None and b["resumed_from"] in {"checkpoint-6", "checkpoint-12", "checkpoint-18"}
    assert a["steps"] == b["steps"] == 24
    resumed_step = int(b["resumed_from"].split("-")[1])
    after = [s for s in a["log"] if int(s) > resumed_step]
    assert after and all(b["log"][s] == a["log"][s] for s in after), (a["log"], b["log"])
    # Exact on this CPU: same seed, same data order, RNG/optimizer/scheduler restored from the checkpoint.
    assert b["eval_loss"] == a["eval_loss"]
    assert b["weights"] == a["weights"]
    ckpt = Path(last_checkpoint(part_dir))
    assert (ckpt / "model.safetensors").is_file() and not list(ckpt.glob("pytorch_model*.bin"))


def test_last_checkpoint_skips_an_incomplete_one(tmp_path):
    import torch
    from safetensors.torch import save_file

    assert last_checkpoint(tmp_path / "absent") is None
    for step, complete in [(10, True), (20, True), (30, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))  # whole weights; an empty file is truncated
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert Path(last_checkpoint(tmp_path)).name == "checkpoint-20"


def test_resume_helpers_refuse_bad_settings(tmp_path):
    from course_utils.config import CourseConfig, training_args

    with pytest.raises(CourseError, match="save_steps"):
        resumable_training_args(CourseConfig(), tmp_path, save_steps=0)
    with pytest.raises(CourseError, match="lesson"):
        run_dir("a/b")
    assert run_dir("05_overfitting", "seed0", root=tmp_path) == tmp_path / "05_overfitting" / "seed0"
    assert run_dir("05_overfitting", root=tmp_path) != run_dir("05_overfitting", root=tmp_path)

    class Fake:
        args = training_args(str(tmp_path))

    with pytest.raises(CourseError, match="resumable_training_args"):
        train_with_resume(Fake())


# ---------------------------------------------------------------------------------------------------- the guard
def _tiny_causal_trainer(tmp_path, learning_rate: float, steps: int, logging_steps: int):
    """The shipped GPT-2 on 16 corpus texts through `causal_lm_trainer`; the learning rate is set after the
    arguments are built, since `training_args` itself refuses a non-finite one."""
    from course_utils import zoo
    from course_utils.data import load_sample
    from course_utils.profiles import seed_everything
    from course_utils.config import training_args
    from course_utils.train import causal_lm_trainer

    seed_everything(0)
    model, tok = zoo.load("gpt2")
    args = training_args(str(tmp_path), max_steps=steps, per_device_train_batch_size=4, logging_steps=logging_steps,
                         warmup_steps=0)
    args.learning_rate = learning_rate
    texts = [r["text"] for r in load_sample("pretrain_corpus.jsonl")[:16]]
    return causal_lm_trainer(model, tok, texts, args, max_length=32)


@pytest.mark.parametrize("steps, logging_steps, caught_by", [(3, 1, "logged grad_norm=nan at step 2"),
                                                                  (1, 50, "weight tensor")])
def test_training_that_diverges_stops_instead_of_reporting(one_thread, tmp_path, steps, logging_steps, caught_by):
    """lr=inf turns the weights to NaN after one step: the guard stops at the next log (the gradient norm is NaN;
    Trainer's `logging_nan_inf_filter` hides a NaN loss), or, with no log in between, at the end, where the
    weights are checked."""
    from course_utils.train import non_finite_weights

    trainer = _tiny_causal_trainer(tmp_path, float("inf"), steps, logging_steps)
    with pytest.raises(TrainingSettingsError, match=caught_by) as caught:
        trainer.train()
    assert "\n" not in str(caught.value) and "learning rate inf" in str(caught.value)
    assert non_finite_weights(trainer.model)  # what the guard refused to report on


def test_the_guard_changes_nothing_in_a_valid_run(one_thread, tmp_path):
    runs = []
    for guarded in (True, False):
        trainer = _tiny_causal_trainer(tmp_path / str(guarded), 1e-3, 3, 1)
        if not guarded:
            trainer.remove_callback(FiniteGuard)
        assert any(isinstance(c, FiniteGuard) for c in trainer.callback_handler.callbacks) == guarded
        trainer.train()
        runs.append(([h["loss"] for h in trainer.state.log_history if "loss" in h],
                     {k: v.double().sum().item() for k, v in trainer.model.state_dict().items()}))
    assert runs[0] == runs[1]


def test_finite_guard_stops_a_run_whose_loss_goes_non_finite(one_thread, tmp_path):
    """A weight turned NaN after step 1 makes the loss of step 2 NaN: FiniteGuard stops the run at that log, before
    any later step or metric."""
    import torch
    from transformers import TrainerCallback

    class Poison(TrainerCallback):  # what an overflow would do to one weight
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")

    trainer = _tiny_causal_trainer(tmp_path, 1e-3, 6, 1)
    assert any(isinstance(c, FiniteGuard) for c in trainer.callback_handler.callbacks)
    trainer.args.logging_nan_inf_filter = False  # log the NaN loss itself (the Trainer hides it by default)
    trainer.add_callback(Poison())
    with pytest.raises(TrainingSettingsError, match="FiniteGuard: training logged loss=nan at step 2"):
        trainer.train()
    assert trainer.state.global_step == 2


def test_a_prompt_that_fills_max_length_is_refused(tokenizer):
    from course_utils.data import DataError
    from course_utils.text import encode
    from course_utils.train import tokenize_prompt_completion

    prompt = "Question: where was Cassia Jessham born? Answer:"
    n = len(encode(tokenizer, prompt))
    kept = tokenize_prompt_completion(tokenizer, ["Q:", prompt], ["A", " Paris"], max_length=n + 1)
    assert [sum(label != -100 for label in row) for row in kept["labels"]] == [2, 1]  # one label still to learn
    for max_length in (n, n - 5):
        with pytest.raises(DataError, match=rf"example 1's prompt is {n} tokens, so max_length={max_length} leaves"):
            tokenize_prompt_completion(tokenizer, ["Q:", prompt], ["A", " Paris"], max_length=max_length)


def test_a_huge_text_is_cut_where_it_enters_not_tokenised_whole():
    import time

    from course_utils import text, zoo
    from course_utils.train import tokenize_texts

    _, tok = zoo.load("gpt2")
    huge = "Veltra has a harbour. " * 1_000_000  # about 22 MB
    start = time.perf_counter()
    ids = tokenize_texts(tok, [huge], max_length=64)[0]["input_ids"]
    assert len(ids) == 64 and time.perf_counter() - start < 5
    assert ids == text.encode(tok, "Veltra has a harbour. " * 20, add_eos=True)[:64]


@settings(max_examples=60, deadline=None)
@given(n_new=st.integers(1, 300), n_old=st.integers(1, 500), ratio=st.floats(0, 0.95), seed=st.integers(0, 9),
       epochs=st.integers(1, 3))
def test_mixing_gives_the_asked_ratio_and_is_deterministic(n_new, n_old, ratio, seed, epochs):
    new, old = [("new", i) for i in range(n_new)], [("old", i) for i in range(n_old)]
    mixed = mix_rehearsal(new, old, ratio, seed=seed, epochs=epochs)
    assert mixed == mix_rehearsal(new, old, ratio, seed=seed, epochs=epochs)
    k = rehearsal_count(n_new, ratio)
    per_epoch = n_new + k
    assert len(mixed) == epochs * per_epoch
    for e in range(epochs):
        epoch = mixed[e * per_epoch:(e + 1) * per_epoch]
        assert sorted(x for x in epoch if x[0] == "new") == new  # every new example once per epoch
        share = sum(x[0] == "old" for x in epoch) / per_epoch
        assert abs(share - ratio) <= 0.5 / per_epoch + 1e-12
    # old examples repeat only after every one of them was used
    olds = [x for x in mixed if x[0] == "old"]
    assert len(set(olds)) == min(len(olds), n_old)


def test_mixing_is_exact_when_the_ratio_divides_evenly():
    mixed = mix_rehearsal(list(range(95)), [f"o{i}" for i in range(50)], 0.05)
    assert len(mixed) == 100 and sum(isinstance(x, str) for x in mixed) == 5
    assert mix_rehearsal(list(range(95)), ["o"], 0.05, seed=1) != mix_rehearsal(list(range(95)), ["o"], 0.05, seed=2)
