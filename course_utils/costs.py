"""What fine-tuning costs: trainable parameters, peak memory of a training step, time per step, size on disk.

Training memory is roughly: weights + gradients (one per *trainable* weight) + optimizer state (AdamW keeps two
numbers per trainable weight) + activations (kept from the forward pass for the backward pass). Full fine-tuning
pays gradients and optimizer state for every weight; LoRA, prefix tuning and IA3 pay them only for their few
adapter weights, which is where their memory saving comes from (Hu et al. 2022 report ~3x less GPU memory for
GPT-3). Activations do not shrink: the backward pass still runs through the whole frozen network.

On a GPU, `torch.cuda.max_memory_allocated` measures a step's peak. On a CPU there is no such counter, and the
process RSS is too coarse for a 1 M-parameter model (the allocator keeps freed memory), so `TensorMemory` counts
the bytes of live tensors itself: every tensor an operation creates is added, and subtracted again when torch frees
it. That is the quantity the CUDA counter reports; neither sees the allocator's cached blocks, and on the CPU the
count misses scratch memory inside an operation and everything outside torch tensors (`how_measured` says so in
the lesson's output). Step time is timed per optimizer step by `EqualBudget` while each method trains: CPU seconds of the
process on a CPU (a shared machine's waiting is not counted), synchronised wall-clock on a GPU. Comparing two
methods' step times needs more care (`paired_step_seconds`): their steps timed in turns on the same batch, on one
CPU thread, so that load and thread count, which change from run to run, hit both alike.

Used in lessons: 01
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from transformers import TrainerCallback

from course_utils import zoo
from course_utils.claims import interval_text, t_interval
from course_utils.distill import DistillationTrainer, shrink_model
from course_utils.config import CourseConfig
from course_utils.errors import CourseError, check_rate
from course_utils.evaluate import continuation_logprobs, generate
from course_utils.peft_methods import PEFT_METHODS, adapter_state_dict, apply_method
from course_utils.profiles import choose_profile, seed_everything
from course_utils.text import model_device
from course_utils.train import causal_collator, quiet, tokenize_prompt_completion, with_finite_guard
from course_utils.world import qa_pairs
from course_utils.zoo import count_parameters


LIBRARY_CALLS = {
    "torch.optim:AdamW": ["params", "lr", "weight_decay"],
    "transformers:PreTrainedModel.save_pretrained": ["save_directory"],  # transformers 5 always writes safetensors
    "peft:PeftModel.save_pretrained": ["save_directory", "safe_serialization"],
    "safetensors.torch:save_file": ["tensors", "filename"],
    "transformers:TrainerCallback.on_step_begin": ["args", "state", "control"],
    "transformers:TrainerCallback.on_step_end": ["args", "state", "control"],
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
    weights = _storage_bytes(list(model.parameters()) + list(model.buffers()))
    batch = _batch_on(model, batch)
    with weights_restored(model):   # undo the measured step so the measurement does not change the model
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
        del optimizer
    return {"weights_mb": weights / MB, "activations_mb": (after_forward - weights) / MB,
            "state_mb": (after_step - weights) / MB, "peak_mb": peak / MB}


def step_clock(device_type: str) -> float:
    """A clock for timing training steps: on a GPU wall-clock after `cuda.synchronize` (kernels run asynchronously);
    on a CPU the process's CPU time, so that time spent waiting for other programs on a shared machine is not
    counted (torch's own threads are included, so it is CPU seconds, not wall seconds, when torch uses several)."""
    if device_type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def how_measured(device_type: str) -> dict[str, str]:
    """How this run measures memory and time on `device_type`, and what each measure does not see."""
    if device_type == "cuda":
        return {"memory": "CUDA allocator statistics (torch.cuda.max_memory_allocated over one AdamW step): every "
                          "tensor torch allocates on the GPU; not seen: the allocator's cached but unused blocks, "
                          "the CUDA context and library workspaces (what nvidia-smi adds on top)",
                "time": "wall-clock seconds per optimizer step after torch.cuda.synchronize (median over the run); "
                        "for the step-time claim, the methods' steps timed in turns on the same batch"}
    return {"memory": "TensorMemory: the bytes of live tensors torch creates during one AdamW step, counted at "
                      "every operation (a stand-in for the CUDA counter); not seen: memory the CPU allocator keeps "
                      "after a free, scratch buffers inside an operation, Python objects, and the process (RSS)",
            "time": "CPU seconds of this process per optimizer step (median over the run), so that waiting for "
                    "other programs on a shared machine is not counted; not wall-clock time. For the step-time "
                    "claim, CPU seconds on one thread, the methods' steps timed in turns on the same batch"}


class EqualBudget(TrainerCallback):
    """Times every optimizer step and scores the model twice in one run: after `steps` steps (*equal steps*) and
    once the steps taken, at this method's median step time, add up to `seconds` (*equal time*: pass the time full
    fine-tuning took for `steps` steps). Training stops when both scores are taken (at most `max_steps` steps).

    `score(model)` returns a dict of quality numbers. The learning rate is constant after warm-up, so the model at
    step `steps` of a longer run is the model a `steps`-step run would have produced."""

    def __init__(self, score, steps: int, seconds: float | None = None):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CostError(f"EqualBudget: steps must be an integer >= 1, got {steps!r}")
        if seconds is not None and not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise CostError(f"EqualBudget: seconds must be a positive number or None, got {seconds!r}")
        self.score, self.steps, self.seconds = score, steps, seconds
        self.times: list[float] = []
        self.scores: dict[str, dict[str, float]] = {}
        self.steps_at_equal_time: int | None = None
        self._start = 0.0
        self._device = "cpu"

    @property
    def step_seconds(self) -> float:
        """The median time of one step so far (the median resists the first step's warm-up and other noise)."""
        if not self.times:
            raise CostError("EqualBudget: no step has been timed yet")
        return statistics.median_high(self.times)

    def _take(self, model) -> dict[str, float]:
        model.eval()
        try:
            return dict(self.score(model))
        finally:
            model.train()

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._device = model_device(model).type if model is not None else "cpu"
        self._start = step_clock(self._device)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.times.append(step_clock(self._device) - self._start)
        step = state.global_step
        last = step >= state.max_steps
        if step == self.steps or (last and "equal steps" not in self.scores):
            self.scores["equal steps"] = self._take(model)
        if "equal time" not in self.scores:
            done = step == self.steps if self.seconds is None else step * self.step_seconds >= self.seconds
            if done or last:
                self.scores["equal time"] = (self.scores["equal steps"] if step == self.steps and
                                             "equal steps" in self.scores else self._take(model))
                self.steps_at_equal_time = step
        if len(self.scores) == 2:
            control.should_training_stop = True
        return control


@contextmanager
def weights_restored(model):
    """Let a measurement train `model` and put every trainable weight back afterwards, so that measuring a step
    does not change the model that is then fine-tuned."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    try:
        yield params
    finally:
        with torch.no_grad():
            for p, old in zip(params, saved):
                p.copy_(old)


@contextmanager
def torch_threads(n: int | None):
    """Run the block on `n` CPU threads (None: leave the count alone), restoring torch's count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def paired_step_seconds(models: dict, batch: dict, rounds: int = 10, warmup: int = 2, threads: int | None = 1,
                        lr: float = 1e-3) -> dict[str, float]:
    """Median seconds of one AdamW step (forward, backward, update) for each of `models` on the same `batch`,
    timed in turns (a, b, a, b, ...): whatever else the machine does meanwhile slows every model alike, so their
    ratio is a fair comparison even when the absolute times drift. On a CPU the steps run on `threads` threads and
    the clock is CPU time (`step_clock`): on one thread that counts the arithmetic, not threads spinning while they
    wait for each other, which is why timing training itself (on however many cores were free) gives ratios that
    move with the machine's load. Every weight is restored after (`weights_restored`)."""
    if rounds < 1 or warmup < 0:
        raise CostError(f"paired_step_seconds: rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    if not models:
        raise CostError("paired_step_seconds: no models given")
    if not batch or "labels" not in batch:
        raise CostError("paired_step_seconds: the batch needs input_ids and labels (the step computes a loss)")
    times: dict[str, list[float]] = {name: [] for name in models}
    with ExitStack() as stack:
        stack.enter_context(torch_threads(threads if model_device(next(iter(models.values()))).type == "cpu"
                                          else None))
        steps = {}
        for name, model in models.items():
            params = stack.enter_context(weights_restored(model))
            if not params:
                raise CostError(f"paired_step_seconds: model {name!r} has no trainable parameters")
            steps[name] = _timed_step(model, _batch_on(model, batch),
                                      torch.optim.AdamW(params, lr=lr, weight_decay=0.0))
        for round_ in range(warmup + rounds):
            for name, step in steps.items():
                seconds = step()
                if round_ >= warmup:
                    times[name].append(seconds)
    return {name: statistics.median_high(t) for name, t in times.items()}


def _timed_step(model, batch: dict, optimizer):
    """A function that runs one training step of `model` on `batch` and returns its seconds on `step_clock`."""
    device = model_device(model).type

    def step() -> float:
        model.train()
        start = step_clock(device)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return step_clock(device) - start
    return step


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
            if getattr(model, "course_adapters", False):   # our bottleneck adapters: the adapter tensors alone
                from safetensors.torch import save_file

                out.mkdir(parents=True, exist_ok=True)
                save_file(adapter_state_dict(model), str(out / "adapter_model.safetensors"))
            else:
                model.save_pretrained(out, safe_serialization=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        weights = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
        return {"weights_mb": weights / MB, "files_mb": directory_bytes(out) / MB}


def cost_row(family: str, method: str, seed: int, model, memory: dict, memory_one: dict,
             budget: EqualBudget) -> dict:
    """One row of lesson 01's table: what `model` cost (parameters, memory of a step on a batch of 16 and of 1,
    median step time, size on disk) and the quality it reached at equal steps and at equal time."""
    counts = parameter_counts(model)
    at_steps, at_time = budget.scores["equal steps"], budget.scores["equal time"]
    return {"family": family, "method": method, "seed": seed, "trainable": int(counts["trainable"]),
            "total": int(counts["total"]), "trainable %": counts["trainable %"], "peak MB": memory["peak_mb"],
            "peak MB (batch 1)": memory_one["peak_mb"], "activations MB": memory["activations_mb"],
            "grads+optimizer MB": memory["state_mb"], "ms/step": 1000 * budget.step_seconds,
            "saved MB": saved_size(model)["weights_mb"], **at_steps,
            "steps @ equal time": budget.steps_at_equal_time, **{f"{k} @ equal time": v for k, v in at_time.items()}}


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
    max_steps_factor: int = 3  # a method may run up to this many times `steps` to match full FT's time

    # tiny models from scratch-like pretraining take large steps; hub models are fine-tuned with the usual
    # 1e-5..1e-4 for full fine-tuning and about 10x that for adapters (bottleneck adapters as LoRA)
    CPU_RATES = {"full": 2e-3, "freeze": 2e-3, "lora": 1e-2, "prefix": 1e-1, "ia3": 1e-1, "adapter": 1e-2,
                 "student": 2e-3}
    GPU_RATES = {"full": 5e-5, "freeze": 5e-5, "lora": 5e-4, "prefix": 1e-2, "ia3": 5e-3, "adapter": 5e-4,
                 "student": 5e-5}

    error = CostError

    def check(self) -> None:
        defaults = self.GPU_RATES if choose_profile() == "gpu" else self.CPU_RATES
        self.learning_rates = {**defaults, **(self.learning_rates or {})}
        if self.max_steps_factor < 1:
            raise CostError(f"CostConfig: max_steps_factor must be >= 1, got {self.max_steps_factor}")

    def args(self, method: str, **overrides):
        if method not in self.learning_rates:
            raise CostError(f"CostConfig: no learning rate for method {method!r}; known: {sorted(self.learning_rates)}")
        overrides.setdefault("max_steps", self.steps * self.max_steps_factor)
        return self.training_arguments(learning_rate=self.learning_rates[method], warmup_steps=5,
                                       logging_steps=10 ** 6, **overrides)


def _measured(family, method, seed, model, tok, task, budget, trainer_class, rows, seconds, **trainer_kwargs):
    """Memory of one step (batches of 16 and 1, before training), then training with an `EqualBudget`."""
    memory = peak_step_memory(model, example_batch(tok, task.train))
    memory_one = peak_step_memory(model, example_batch(tok, task.train, size=1))
    clock = EqualBudget(lambda m: answer_quality(m, tok, task.test, budget.n_generate), budget.steps, seconds)
    lr_key = "student" if method.startswith("student") else method
    trainer = trainer_class(model=model, args=budget.args(lr_key), train_dataset=qa_dataset(tok, rows),
                            data_collator=causal_collator(tok), callbacks=with_finite_guard([clock]), **trainer_kwargs)
    quiet(trainer).train()   # no printed metrics dict: the table shows what matters
    return cost_row(family, method, seed, model, memory, memory_one, clock)


def run_method(family: str, method: str, task: QATask, budget: CostConfig, train_rows=None,
               seconds: float | None = None, **method_kwargs):
    """Load the `family` base model, prepare it for `method` (`method_kwargs` go to `apply_method`, e.g. `r=4`),
    fine-tune it on the task with `budget`, and measure it (`cost_row`). `seconds`: the training time that
    counts as equal time (full fine-tuning's `steps` steps); None scores equal time at `budget.steps`.

    Returns (row, trained model)."""
    from transformers import Trainer

    seed_everything(budget.seed)   # the run starts here; adapter initialisation draws from the global generator
    model, tok = zoo.load(family)
    model = apply_method(model, method, **method_kwargs)
    row = _measured(family, method, budget.seed, model, tok, task, budget, Trainer, train_rows or task.train,
                    seconds)
    return row, model


def run_student(family: str, teacher, task: QATask, budget: CostConfig, train_rows, alpha: float,
                temperature: float = 2.0, name: str | None = None):
    """Distil `teacher` into a half-depth copy of the `family` base model (`distill.shrink_model`), trained on
    `train_rows`: `alpha=0` is hard labels only, `alpha>0` mixes in the teacher's soft targets."""
    seed_everything(budget.seed)   # the run starts here
    base, tok = zoo.load(family)
    student = shrink_model(base)
    method = name or ("student: soft targets" if alpha > 0 else "student: hard labels")
    row = _measured(family, method, budget.seed, student, tok, task, budget, DistillationTrainer, train_rows, None,
                    teacher_model=teacher, temperature=temperature, alpha=alpha)
    return row, student


def run_comparison(world, seeds, method_families=("llama",), families=zoo.FAMILIES, methods=PEFT_METHODS,
                   n_labels: int = 64, steps: int = 40, temperature: float = 2.0, alpha: float = 0.5):
    """Lesson 01's experiment, for every seed: a fresh split of the people (`qa_task(world, seed=seed)`), then

    - every method in `methods` on each of `method_families`, full fine-tuning first: its `steps` steps set the
      equal time the other methods get (`EqualBudget`);
    - full fine-tuning of each other family (the teachers);
    - in every family, two half-depth students on `n_labels` labelled rows: hard labels only, and hard labels
      mixed with the teacher's soft targets (`alpha`, `temperature`), with the same steps.
    Returns one row per run (`cost_row`, with the seed)."""
    from tqdm.auto import tqdm

    if "full" not in methods:
        raise CostError("run_comparison: the methods must include 'full' (the reference and the teacher)")
    methods = ["full", *[m for m in methods if m != "full"]]
    plan = [p for seed in seeds for p in
            [(seed, f, m) for f in method_families for m in methods]
            + [(seed, f, "full") for f in families if f not in method_families]
            + [(seed, f, s) for f in families for s in ("student: hard labels", "student: soft targets")]]
    rows, teachers, seconds = [], {}, {}
    for seed, family, method in tqdm(plan, desc="training runs"):
        task = qa_task(world, seed=seed)
        budget = CostConfig(steps=steps, seed=seed)
        if method.startswith("student"):
            few = labelled_subset(task.train, n_labels, seed=seed)
            row, _ = run_student(family, teachers[(seed, family)], task, budget, few,
                                 alpha=alpha if "soft" in method else 0.0, temperature=temperature, name=method)
        else:
            row, model = run_method(family, method, task, budget, seconds=seconds.get((seed, family)))
            if method == "full":
                teachers[(seed, family)] = model
                seconds[(seed, family)] = steps * row["ms/step"] / 1000
        rows.append(row)
    return rows


def step_time_comparison(world, seeds, family: str = "llama", methods=("full", "lora"), rounds: int = 10,
                         threads: int | None = 1) -> "pd.DataFrame":
    """Per seed, the median milliseconds of one AdamW step of each method on the same batch of 16 training rows
    (that seed's split), timed in turns on one CPU thread (`paired_step_seconds`). Fresh models: a step's time does
    not depend on what the weights have learned. One row per (seed, method)."""
    import pandas as pd

    rows = []
    for seed in seeds:
        task = qa_task(world, seed=seed)
        models = {}
        for method in methods:
            seed_everything(seed)
            model, tok = zoo.load(family)
            models[method] = apply_method(model, method)
        seconds = paired_step_seconds(models, example_batch(tok, task.train), rounds=rounds, threads=threads)
        rows += [{"family": family, "method": m, "seed": seed, "ms/step (paired)": 1000 * seconds[m]}
                 for m in methods]
    return pd.DataFrame(rows)


# ---- lesson 01's tables: facts, measurements relative to full fine-tuning, and the decision guide ----

def facts_table(families, methods=PEFT_METHODS) -> "pd.DataFrame":
    """What each method *is*, before any training: parameter counts, the trainable share, what `save_pretrained`
    writes, and the AdamW arithmetic (a gradient and two moments, 4 bytes each, per trainable weight). These are
    facts of the set-up, not findings: they follow from the shapes and cannot come out otherwise."""
    import pandas as pd

    rows = []
    for family in families:
        for method in methods:
            model = apply_method(zoo.load(family)[0], method)
            counts = parameter_counts(model)
            rows.append({"family": family, "method": method, "trainable": int(counts["trainable"]),
                         "total": int(counts["total"]), "trainable %": counts["trainable %"],
                         "checkpoint MB": saved_size(model)["weights_mb"],
                         "AdamW state MB (3 x 4 bytes x trainable)": 12 * counts["trainable"] / MB})
    return pd.DataFrame(rows).set_index(["family", "method"])


def versus(rows, column: str, reference: str = "full", how: str = "ratio") -> "pd.DataFrame":
    """`column` of every run relative to the `reference` method's run of the same family and seed: `ratio`
    (value / reference) or `difference` (value - reference). Index (family, method), one column per seed."""
    import pandas as pd

    if how not in ("ratio", "difference"):
        raise CostError(f"versus: how must be 'ratio' or 'difference', got {how!r}")
    frame = pd.DataFrame(list(rows.to_dict(orient="records") if hasattr(rows, "to_dict") else rows))
    missing = {"family", "method", "seed", column} - set(frame.columns)
    if missing:
        raise CostError(f"versus: the rows lack column(s) {sorted(missing)}")
    values = frame.pivot_table(index=["family", "method"], columns="seed", values=column, sort=False)
    out = {}
    for (family, method), row in values.iterrows():
        if method == reference:
            continue
        if (family, reference) not in values.index:
            raise CostError(f"versus: no {reference!r} run for family {family!r} to compare {method!r} with")
        ref = values.loc[(family, reference)]
        out[(family, method)] = row / ref if how == "ratio" else row - ref
    return pd.DataFrame(out).T.rename_axis(["family", "method"])


def with_intervals(per_seed: "pd.DataFrame") -> "pd.DataFrame":
    """Mean over the seed columns with a 95 % Student-t interval (`claims.t_interval`), one row per row."""
    import pandas as pd

    stats = [t_interval(list(row.dropna().values)) for _, row in per_seed.iterrows()]
    return pd.DataFrame(stats, index=per_seed.index, columns=["mean", "95% low", "95% high"])


def relative_summary(rows, reference: str = "full") -> "pd.DataFrame":
    """Every method against full fine-tuning, mean [95 % interval] over the seeds, one row per (family, method):
    peak memory (batch 16 and 1) and step time as ratios, answer perplexity as a ratio and answer accuracy as a
    difference, at equal steps and at equal time. Below 1 (or 0 for accuracy) the method used less, or did better
    (perplexity), or worse (accuracy)."""
    import pandas as pd

    measures = {"peak memory x (batch 16)": ("peak MB", "ratio"), "peak memory x (batch 1)": ("peak MB (batch 1)", "ratio"),
                "step time x": ("ms/step", "ratio"), "answer ppl x (equal steps)": ("answer_ppl", "ratio"),
                "answer ppl x (equal time)": ("answer_ppl @ equal time", "ratio"),
                "answer acc - full (equal steps)": ("answer_acc", "difference"),
                "answer acc - full (equal time)": ("answer_acc @ equal time", "difference")}
    parts = {}
    for name, (column, how) in measures.items():
        stats = with_intervals(versus(rows, column, reference, how))
        parts[name] = stats.apply(lambda r: interval_text(r["mean"], r["95% low"], r["95% high"]), axis=1)
    return pd.DataFrame(parts)


def decision_guide(rows, reference: str = "full", ppl_tolerance: float = 1.10, acc_tolerance: float = 0.05,
                   distillation: dict[str, float] | None = None) -> "pd.DataFrame":
    """The decision guide (full fine-tuning or PEFT, by resources, task complexity and data size), each line
    chosen from the measured runs `rows` (means over seeds and families) rather than from a rule of thumb:

    - memory-bound: the method with the smallest batch-1 peak memory among those whose answer perplexity stayed
      within `ppl_tolerance` x full fine-tuning's at equal steps ("quality kept");
    - time-bound: the method with the best answer perplexity at equal training time;
    - many tasks to store: the smallest checkpoint among the quality-kept methods;
    - complex task, quality first: full fine-tuning unless a method came within `acc_tolerance` of its accuracy;
    - few labels with a teacher at hand: distillation if the soft-target student had a lower answer perplexity than
      the hard-label student in every family (`distillation`: family -> mean soft/hard perplexity ratio).
    Returns one row per situation: what to choose and the measured numbers behind it."""
    import pandas as pd

    frame = pd.DataFrame(list(rows.to_dict(orient="records") if hasattr(rows, "to_dict") else rows))
    if reference not in set(frame.get("method", [])):
        raise CostError(f"decision_guide: the rows need the {reference!r} runs to compare with")
    means = {}
    for name, column, how in (("memory", "peak MB (batch 1)", "ratio"), ("time", "ms/step", "ratio"),
                              ("ppl", "answer_ppl", "ratio"), ("ppl @ time", "answer_ppl @ equal time", "ratio"),
                              ("acc", "answer_acc", "difference")):
        means[name] = versus(frame, column, reference, how).mean(axis=1).groupby(level="method", sort=False).mean()
    saved = frame.groupby("method", sort=False)["saved MB"].mean()
    table = pd.DataFrame(means)
    table.loc[reference] = {"memory": 1.0, "time": 1.0, "ppl": 1.0, "ppl @ time": 1.0, "acc": 0.0}
    table["saved MB"] = saved
    kept = table[table["ppl"] <= ppl_tolerance]
    guide = []

    def add(axis, situation, choice, because):
        guide.append({"axis": axis, "situation": situation, "choose": choice, "because (measured here)": because})

    lean = kept["memory"].idxmin()
    add("resources", "memory is the limit (the model and its optimizer state barely fit)", lean,
        f"peak step memory {table.loc[lean, 'memory']:.2f}x full FT's (one sequence per step) with answer "
        f"perplexity {table.loc[lean, 'ppl']:.2f}x; methods within {ppl_tolerance:.2f}x: {', '.join(kept.index)}")
    quick = table["ppl @ time"].idxmin()
    add("resources", "training time is the limit", quick,
        f"best answer perplexity at equal training time ({table.loc[quick, 'ppl @ time']:.2f}x full FT's); "
        f"step time {table.loc[quick, 'time']:.2f}x full FT's")
    small = kept["saved MB"].idxmin()
    add("resources", "many tasks to store and serve", small,
        f"{table.loc[small, 'saved MB']:.3f} MB per task against {table.loc[reference, 'saved MB']:.3f} MB for a "
        f"full checkpoint, answer perplexity {table.loc[small, 'ppl']:.2f}x")
    close = table.drop(index=reference)
    close = close[close["acc"] >= -acc_tolerance]
    best = close["acc"].idxmax() if len(close) else reference
    add("task complexity", "a hard task where answer quality comes first", best,
        f"answer accuracy {table.loc[best, 'acc']:+.3f} against full FT" if best != reference else
        f"no method came within {acc_tolerance:.2f} of full FT's answer accuracy (closest: "
        f"{table.drop(index=reference)['acc'].idxmax()}, {table.drop(index=reference)['acc'].max():+.3f})")
    if distillation:
        helps = all(v < 1.0 for v in distillation.values())
        add("data size", "few labels, a good teacher at hand", "distil (soft targets)" if helps else
            "train on the labels (distillation did not help in every family)",
            "soft/hard answer perplexity: " + ", ".join(f"{f} {v:.2f}x" for f, v in distillation.items()))
    return pd.DataFrame(guide).set_index(["axis", "situation"])


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
