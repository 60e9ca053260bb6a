"""Reliability: a killed training run resumes to the same result, repeated runs repeat, and results are archived.

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
import torch

from course_utils.errors import CourseError
from course_utils.paths import REPO_DIR
from course_utils.results import history, load_results, save_results
from course_utils.train import last_checkpoint, resumable_training_args, run_dir, train_with_resume

# The worker trains the shipped GPT-2 (dropout on, so RNG state matters) for 24 steps = 2 epochs of 96 texts,
# checkpointing every 6 steps. With a positive `slow` it sleeps after step 6 so the parent can kill it mid-run.
WORKER = r'''
import json, os, sys, time
import torch
torch.set_num_threads(1)
from transformers import Trainer, TrainerCallback
from course_utils import zoo
from course_utils.data import load_sample
from course_utils.forgetting import RunConfig
from course_utils.profiles import setup
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
               HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_DIR))
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
    assert last_checkpoint(tmp_path / "absent") is None
    for step, complete in [(10, True), (20, True), (30, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"")
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


def test_save_results_archives_instead_of_overwriting(tmp_path):
    first = save_results("99_demo", [{"x": 1}], directory=tmp_path, profile="cpu")
    second = save_results("99_demo", [{"x": 2}], directory=tmp_path, profile="cpu")
    assert first == second == tmp_path / "99_demo.json"
    assert load_results("99_demo", directory=tmp_path)["table"] == [{"x": 2}]
    (old,) = history("99_demo", directory=tmp_path)
    assert json.loads(old.read_text())["table"] == [{"x": 1}]
    save_results("99_demo", [{"x": 3}], directory=tmp_path, profile="cpu")
    assert [json.loads(p.read_text())["table"][0]["x"] for p in history("99_demo", directory=tmp_path)] == [1, 2]


def _short_classifier_run():
    from course_utils.classify import ClassifierConfig, accuracy, load_classifier, predict_proba, train_classifier
    from course_utils.data import load_sample
    from course_utils.profiles import seed_everything

    seed_everything(0)
    train = load_sample("reviews.jsonl", split="train")[:32]
    test = load_sample("reviews.jsonl", split="test")[:24]
    model, tok = load_classifier("gpt2")
    trainer = train_classifier(model, tok, train, ClassifierConfig(epochs=1, batch_size=16, max_length=32, seed=3),
                               logging_steps=1)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h] + [history[-1]["train_loss"]]
    return {"losses": losses, "accuracy": accuracy(model, tok, test),
            "probs": predict_proba(model, tok, test[:8]).tolist()}


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads mostly wait for each other (3x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_same_seed_gives_the_same_numbers(one_thread):
    """Determinism: the classifier recipe that lessons 03, 04 and 07 use, run twice with one seed."""
    a, b = _short_classifier_run(), _short_classifier_run()
    assert a == b  # exact on CPU: no non-deterministic kernels are involved at this size


def test_lesson_code_runs_with_the_network_blocked(no_network, one_thread, tmp_path):
    """Offline: in the cpu profile, set-up, loading shipped models, training and evaluation never open a socket."""
    import socket

    from transformers import Trainer

    from course_utils import evaluate, profiles, zoo
    from course_utils.classify import load_classifier, predict_proba
    from course_utils.data import load_sample
    from course_utils.config import training_args
    from course_utils.train import causal_collator, tokenize_texts
    from course_utils.world import make_world

    with pytest.raises(AssertionError, match="network access attempted"):  # the guard itself works
        socket.create_connection(("huggingface.co", 443), timeout=1)
    env = profiles.setup(profile="cpu", seed=0, quiet=True)
    assert env.offline and env.profile == "cpu"
    model, tok = zoo.load("llama")
    texts = [r["text"] for r in load_sample("pretrain_corpus.jsonl")[:32]]
    trainer = Trainer(model=model, args=training_args(str(tmp_path), max_steps=3, per_device_train_batch_size=8),
                      train_dataset=tokenize_texts(tok, texts, 48), data_collator=causal_collator(tok))
    trainer.train()
    assert trainer.state.global_step == 3
    assert evaluate.perplexity(model, tok, texts[:8]) > 1.0
    recall = evaluate.fact_recall(model, tok, make_world().seen[:4], attributes=["birth_city"])
    assert 0.0 <= recall["birth_city"] <= 1.0
    assert len(evaluate.generate(model, tok, ["Cassia Jessham was born in"], max_new_tokens=3)) == 1
    clf, ctok = load_classifier("qwen2")
    assert predict_proba(clf, ctok, [{"text": "The lamp works."}]).shape == (1, 2)


# ---------------------------------------------------------------------------------------------------- nothing silent
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
    from course_utils.config import TrainingSettingsError
    from course_utils.train import non_finite_weights

    trainer = _tiny_causal_trainer(tmp_path, float("inf"), steps, logging_steps)
    with pytest.raises(TrainingSettingsError, match=caught_by) as caught:
        trainer.train()
    assert "\n" not in str(caught.value) and "learning rate inf" in str(caught.value)
    assert non_finite_weights(trainer.model)  # what the guard refused to report on


def test_the_guard_changes_nothing_in_a_valid_run(one_thread, tmp_path):
    from course_utils.train import FiniteGuard

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


def test_a_classifier_whose_weights_break_stops(one_thread):
    from transformers import TrainerCallback

    from course_utils.classify import ClassifierConfig, load_classifier, train_classifier
    from course_utils.config import TrainingSettingsError
    from course_utils.data import load_sample

    class Poison(TrainerCallback):  # what an overflow would do to one weight
        def on_step_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")

    model, tok = load_classifier("gpt2")
    with pytest.raises(TrainingSettingsError, match="FiniteGuard"):
        train_classifier(model, tok, load_sample("reviews.jsonl", split="train")[:16],
                         ClassifierConfig(epochs=1, batch_size=16, max_length=32), callbacks=[Poison()])


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
