"""What fine-tuning costs: trainable parameters, peak memory of a training step, time per step, size on disk.

Training memory is roughly: weights + gradients (one per *trainable* weight) + optimizer state (AdamW keeps two
numbers per trainable weight) + activations (kept from the forward pass for the backward pass). Full fine-tuning
pays gradients and optimizer state for every weight; LoRA, prefix tuning and IA3 pay them only for their few
adapter weights, which is where their memory saving comes from (Hu et al. 2022 report ~3x less GPU memory for
GPT-3). Activations do not shrink: the backward pass still runs through the whole frozen network.

On a GPU, `torch.cuda.max_memory_allocated` measures a step's peak. On a CPU there is no such counter, and the
process RSS is too coarse for a 1 M-parameter model (the allocator keeps freed memory), so `TensorMemory` counts
the bytes of live tensors itself: every tensor an operation creates is added, and subtracted again when torch frees
it. That is the same quantity the CUDA counter reports, measured the same way on both devices.
"""

from __future__ import annotations

import math
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from course_utils import zoo
from course_utils.distill import DistillationTrainer, shrink_model
from course_utils.config import CourseConfig
from course_utils.errors import CourseError, check_rate
from course_utils.evaluate import continuation_logprobs, generate
from course_utils.peft_methods import apply_method
from course_utils.profiles import choose_profile
from course_utils.text import model_device
from course_utils.train import causal_collator, tokenize_prompt_completion, with_finite_guard
from course_utils.world import qa_pairs
from course_utils.zoo import count_parameters


LIBRARY_CALLS = {
    "torch.optim:AdamW": ["params", "lr", "weight_decay"],
    "transformers:PreTrainedModel.save_pretrained": ["save_directory"],  # transformers 5 always writes safetensors
    "peft:PeftModel.save_pretrained": ["save_directory", "safe_serialization"],
}

MB = 2 ** 20


class CostError(CourseError):
    """A measurement asked of something it cannot measure (no trainable parameters, an empty batch)."""


def parameter_counts(model) -> dict[str, float]:
    """Trainable and total parameters (tied weights counted once) and the trainable share in percent."""

    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    return {"trainable": trainable, "total": total, "trainable %": 100.0 * trainable / total if total else 0.0}


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of tensors created while active, and their peak: a CPU stand-in for CUDA's peak counter.

    Every torch operation passes through `__torch_dispatch__`; each new storage it returns is counted, and a
    weak reference subtracts it when torch frees it. Tensors that existed before (the weights) are not seen:
    pass their bytes as `baseline`. Hand-written because torch offers a peak counter only for CUDA."""

    def __init__(self, baseline: int = 0):
        super().__init__()
        self.baseline = baseline
        self.live = baseline
        self.peak = baseline
        self._tracked: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._tracked.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that share an input's memory (views like `weight.t()`, in-place ops) allocate nothing
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key = id(st)
            if key in self._tracked or st.nbytes() == 0 or st.data_ptr() in inputs:
                continue
            try:
                weakref.finalize(st, self._free, key)
            except TypeError:  # a storage without a Python object to follow: skip it
                continue
            self._tracked[key] = st.nbytes()
            self.live += st.nbytes()
        self.peak = max(self.peak, self.live)
        return out


def _batch_on(model, batch: dict) -> dict:
    device = model_device(model)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def peak_step_memory(model, batch: dict, lr: float = 1e-3) -> dict[str, float]:
    """Memory (MB) of one AdamW training step on `batch`, from a fresh optimizer; `model` is restored after.

    - `weights_mb`: parameters and buffers, there before the step;
    - `activations_mb`: what the forward pass keeps for the backward pass (live after forward, minus weights);
    - `state_mb`: gradients + AdamW's two moments, live after the optimizer step (3 numbers per trainable weight);
    - `peak_mb`: the highest total at any moment of forward, backward and step, weights included.
    Activations and optimizer state are not alive at the same time, so the peak is less than their sum."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CostError("peak_step_memory: the model has no trainable parameters")
    if not batch or "labels" not in batch:
        raise CostError("peak_step_memory: the batch needs input_ids and labels (the step computes a loss)")
    saved = [p.detach().clone() for p in params]
    weights = _storage_bytes(list(model.parameters()) + list(model.buffers()))
    batch = _batch_on(model, batch)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    optimizer.zero_grad(set_to_none=True)
    if params[0].device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        loss = model(**batch).loss
        after_forward = weights + torch.cuda.memory_allocated() - start
        loss.backward()
        del loss
        optimizer.step()
        torch.cuda.synchronize()
        after_step = weights + torch.cuda.memory_allocated() - start
        peak = weights + torch.cuda.max_memory_allocated() - start
    else:
        with TensorMemory(baseline=weights) as tracker:
            loss = model(**batch).loss
            after_forward = tracker.live
            loss.backward()
            del loss
            optimizer.step()
            after_step = tracker.live
        peak = tracker.peak
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # undo the measured step so the measurement does not change the model
        for p, old in zip(params, saved):
            p.copy_(old)
    del optimizer
    return {"weights_mb": weights / MB, "activations_mb": (after_forward - weights) / MB,
            "state_mb": (after_step - weights) / MB, "peak_mb": peak / MB}


def step_seconds(trainer) -> float:
    """Mean wall-clock seconds per optimizer step of a finished `Trainer` run (from its own timer)."""
    steps = trainer.state.global_step
    runtime = next((h["train_runtime"] for h in reversed(trainer.state.log_history) if "train_runtime" in h), None)
    if not steps or runtime is None:
        raise CostError("step_seconds: the trainer has not finished a training run")
    return runtime / steps


def time_steps(step_fn, n: int = 5, warmup: int = 1) -> float:
    """Median seconds of `step_fn()` over `n` calls after `warmup` untimed calls (the median resists noise)."""
    if n < 1:
        raise CostError(f"time_steps: n must be >= 1, got {n}")
    for _ in range(warmup):
        step_fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def directory_bytes(path: str | Path) -> int:
    """Total size of the files under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def saved_size(model, directory: str | Path | None = None) -> dict[str, float]:
    """What `save_pretrained` writes for `model`: the full checkpoint, or only the adapter for a peft model.

    Returns `weights_mb` (the .safetensors files) and `files_mb` (everything, configs included)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()   # no "Writing model shards" bar for a 4 MB file
    with tempfile.TemporaryDirectory(prefix="course-size-") as tmp:
        out = Path(directory) if directory is not None else Path(tmp)
        try:
            model.save_pretrained(out, safe_serialization=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        weights = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
        return {"weights_mb": weights / MB, "files_mb": directory_bytes(out) / MB}


def cost_row(family: str, method: str, model, batch: dict, trainer, quality: dict[str, float]) -> dict:
    """One row of lesson 01's table: what `model` (trained by `trainer`) cost and what it reached."""
    counts = parameter_counts(model)
    memory = peak_step_memory(model, batch)
    return {"family": family, "method": method, "trainable": int(counts["trainable"]), "total": int(counts["total"]),
            "trainable %": counts["trainable %"], "peak MB": memory["peak_mb"],
            "activations MB": memory["activations_mb"], "grads+optimizer MB": memory["state_mb"],
            "ms/step": 1000 * step_seconds(trainer), "saved MB": saved_size(model)["weights_mb"], **quality}


# ---- the task lesson 01 compares the methods on: answering questions about people the model knows ----

QA_FORMAT = "Question: {question}\nAnswer:"


@dataclass
class QATask:
    """Question/answer rows about *seen* people (facts the base model learned in pretraining), split by person:
    a method must teach the answer format well enough to answer for people it was not fine-tuned on."""

    train: list[dict]
    test: list[dict]

    @staticmethod
    def prompts(rows) -> list[str]:
        return [QA_FORMAT.format(question=r["question"]) for r in rows]

    @staticmethod
    def completions(rows) -> list[str]:
        return [" " + r["answer"] for r in rows]


def qa_task(world, test_share: float = 0.25, n_test: int = 128, seed: int = 0) -> QATask:
    """Split the seen people's Q/A pairs by person (`test_share` of people held out for testing)."""
    import random


    check_rate(test_share, "qa_task", "test_share", high_open=True, error=CostError)
    if test_share == 0.0:
        raise CostError(f"qa_task: test_share must be in (0, 1), got {test_share}")
    rows = [r for r in qa_pairs(world) if r["split"] == "seen"]
    names = sorted({r["person"] for r in rows})
    random.Random(seed).shuffle(names)
    test_names = set(names[: max(1, int(len(names) * test_share))])
    test = [r for r in rows if r["person"] in test_names]
    random.Random(seed + 1).shuffle(test)
    return QATask(train=[r for r in rows if r["person"] not in test_names], test=test[:n_test])


def labelled_subset(rows, n: int, seed: int = 0) -> list[dict]:
    """`n` rows drawn at random (seeded): a small labelled set, as when labels are expensive."""
    import random

    if not 1 <= n <= len(rows):
        raise CostError(f"labelled_subset: n must be in [1, {len(rows)}], got {n}")
    return random.Random(seed).sample(list(rows), n)


def example_batch(tokenizer, rows, size: int = 16) -> dict:
    """A padded training batch of the first `size` rows: the batch every memory measurement uses."""

    data = qa_dataset(tokenizer, rows[:size])
    return causal_collator(tokenizer)([data[i] for i in range(len(data))])


def qa_dataset(tokenizer, rows, max_length: int = 64):
    """Tokenised Q/A examples with the loss on the answer only."""

    return tokenize_prompt_completion(tokenizer, QATask.prompts(rows), QATask.completions(rows), max_length)


def answer_quality(model, tokenizer, rows, n_generate: int = 64) -> dict[str, float]:
    """How well `model` answers: `answer_ppl`, the perplexity of the reference answers (teacher-forced, lower is
    better, 1.0 is perfect), and `answer_acc`, the share of greedy answers (first `n_generate` rows) whose first
    sentence names the right value (a model that knows the format but not the fact scores about 1/12)."""

    if not rows:
        raise CostError("answer_quality: no rows given")
    prompts, answers = QATask.prompts(rows), QATask.completions(rows)
    logps = continuation_logprobs(model, tokenizer, prompts, answers)
    n_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    outs = generate(model, tokenizer, prompts[:n_generate], max_new_tokens=12)
    hits = [r["value"] in out.split(".")[0].split() for r, out in zip(rows, outs)]
    return {"answer_ppl": math.exp(-sum(logps) / n_tokens), "answer_acc": sum(hits) / len(hits)}


@dataclass
class CostConfig(CourseConfig):
    """The same training budget for every method: steps x batch size; learning rates per method (adapters,
    with few weights each, take larger steps; these are the usual rules of thumb, not tuned per family)."""

    steps: int = 40
    batch_size: int = 16
    seed: int = 0
    learning_rates: dict | None = None
    n_generate: int = 48      # greedy answers generated per run for `answer_acc`

    # tiny models from scratch-like pretraining take large steps; hub models are fine-tuned with the usual
    # 1e-5..1e-4 for full fine-tuning and about 10x that for adapters
    CPU_RATES = {"full": 2e-3, "freeze": 2e-3, "lora": 1e-2, "prefix": 1e-1, "ia3": 1e-1, "student": 2e-3}
    GPU_RATES = {"full": 5e-5, "freeze": 5e-5, "lora": 5e-4, "prefix": 1e-2, "ia3": 5e-3, "student": 5e-5}

    error = CostError

    def check(self) -> None:
        defaults = self.GPU_RATES if choose_profile() == "gpu" else self.CPU_RATES
        self.learning_rates = {**defaults, **(self.learning_rates or {})}

    def args(self, method: str, **overrides):
        if method not in self.learning_rates:
            raise CostError(f"CostConfig: no learning rate for method {method!r}; known: {sorted(self.learning_rates)}")
        return self.training_arguments(learning_rate=self.learning_rates[method], warmup_steps=5,
                                       logging_steps=10 ** 6, **overrides)


def _train_quietly(trainer) -> None:
    """Train without the Trainer printing its final metrics dict (the table shows what matters)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def run_method(family: str, method: str, task: QATask, budget: CostConfig, train_rows=None, **method_kwargs):
    """Load the `family` base model, prepare it for `method` (`method_kwargs` go to `apply_method`, e.g. `r=4`),
    fine-tune it on the task within `budget`, and measure it (memory on `example_batch` of the family's tokenizer).

    Returns (row of `cost_row`, trained model)."""
    from transformers import Trainer


    model, tok = zoo.load(family)
    model = apply_method(model, method, **method_kwargs)
    trainer = Trainer(model=model, args=budget.args(method), train_dataset=qa_dataset(tok, train_rows or task.train),
                      data_collator=causal_collator(tok), callbacks=with_finite_guard())
    _train_quietly(trainer)
    quality = answer_quality(model, tok, task.test, budget.n_generate)
    return cost_row(family, method, model, example_batch(tok, task.train), trainer, quality), model


def run_student(family: str, teacher, task: QATask, budget: CostConfig, train_rows, alpha: float,
                temperature: float = 2.0, name: str | None = None):
    """Distil `teacher` into a half-depth copy of the `family` base model (`distill.shrink_model`), trained on
    `train_rows`: `alpha=0` is hard labels only, `alpha>0` mixes in the teacher's soft targets."""

    base, tok = zoo.load(family)
    student = shrink_model(base)
    trainer = DistillationTrainer(model=student, args=budget.args("student"), train_dataset=qa_dataset(tok, train_rows),
                                  data_collator=causal_collator(tok), teacher_model=teacher, temperature=temperature,
                                  alpha=alpha, callbacks=with_finite_guard())
    _train_quietly(trainer)
    method = name or ("student: soft targets" if alpha > 0 else "student: hard labels")
    quality = answer_quality(student, tok, task.test, budget.n_generate)
    return cost_row(family, method, student, example_batch(tok, task.train), trainer, quality), student


def plot_quality_vs_trainable(rows, quality: str = "answer_ppl", quality_label: str = "answer perplexity",
                              lower_is_better: bool = True):
    """Quality against trainable parameters (log scale), one marker per method, one colour per family."""
    import matplotlib.pyplot as plt

    rows = rows.to_dict(orient="records") if hasattr(rows, "to_dict") else [dict(r) for r in rows]
    families = list(dict.fromkeys(r["family"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = dict(zip(methods, "osD^vP*Xh<>"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, family in enumerate(families):
        for r in (r for r in rows if r["family"] == family):
            ax.scatter(r["trainable"], r[quality], color=f"C{i}", marker=markers[r["method"]], s=50)
    for method in methods:
        ax.scatter([], [], color="grey", marker=markers[method], label=method)
    for i, family in enumerate(families):
        ax.scatter([], [], color=f"C{i}", marker="s", label=family)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(quality_label + (" (lower is better)" if lower_is_better else ""))
    ax.legend(fontsize=8, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
