"""Catastrophic forgetting and four ways to limit it: a lower learning rate, rehearsal, EWC and LoRA.

Fine-tuning moves every weight toward the new data, and nothing in the loss says "keep what you knew". This module
holds the pieces lesson 02 needs to *measure* that loss and to fight it:

- `mix_rehearsal`: rehearsal (replay): old data mixed into the fine-tuning set at a given share;
- `fisher_diagonal`: how much each weight mattered for the old data (the diagonal of the Fisher information);
- `ewc_penalty` and `EWCTrainer`: Elastic Weight Consolidation (Kirkpatrick et al. 2017), a `Trainer` whose loss
  adds sum_i lambda/2 * F_i * (theta_i - theta*_i)^2, a spring pulling important weights back to their old value;
- `ForgettingMonitor` and `finetune`: a fine-tuning run that measures what was learned *and* what was lost every
  few steps, so each run draws its own learning-vs-forgetting curve;
- `value_at`: reads such a curve at a chosen amount of learning, to compare methods at matched learning
  (Biderman et al. 2024, "LoRA learns less and forgets less");
- `forgetting_data`, `ForgettingStudyConfig`, `run_study`: one seed's taught, validation and test people, a replay pool
  that never holds a probed person (`world.replay_texts`; `texts_naming` checks it by whole names), and every setting
  of the lesson run on them, with rehearsal's control: replay of the pool's texts that name no one;
- `choose_on_validation`, `run_values`, `matched_gain`, `at_its_learning`: a mitigation's strength chosen on
  validation people, and every method judged on test people at matched learning.

EWC and the Fisher are written by hand because neither `transformers`, `peft` nor `trl` provides them; everything
else (training loop, schedules, adapters) is the Hugging Face `Trainer` and `peft`.

Used in lessons: 02, 09
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers import Trainer

from course_utils.config import CourseConfig, Limit
from course_utils.errors import CourseError
from course_utils.evaluate import knowledge_probe
from course_utils.peft_methods import apply_lora
from course_utils.parallel import run_in_processes
from course_utils.profiles import dry_run, seed_torch
from course_utils.train import ForgettingMonitor, causal_lm_trainer, rehearsal_set, tokenize_texts
from course_utils.train import mix_rehearsal, rehearsal_count  # noqa: F401  (lesson 02 calls them as F.*)
from course_utils.world import World, heldout_bios, replay_texts, sample_world


LIBRARY_CALLS = {
    # EWCTrainer overrides compute_loss with this exact signature and calls the parent's with these keywords.
    "transformers:Trainer.compute_loss": ["model", "inputs", "return_outputs", "num_items_in_batch"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator", "callbacks"],
    "transformers:TrainerCallback.on_train_begin": ["args", "state", "control"],
    "transformers:TrainerCallback.on_step_end": ["args", "state", "control"],
    "transformers:Trainer.remove_callback": ["callback"],
    "transformers:TrainingArguments": ["max_steps", "learning_rate", "per_device_train_batch_size", "seed",
                                       "data_seed", "warmup_steps", "logging_steps", "weight_decay"],
}


class ForgettingError(CourseError):
    """Bad input to a forgetting helper: a ratio outside its range, empty data, a negative lambda."""


# ---------------------------------------------------------------------------------------------------------------
# Fisher information and the EWC penalty
# ---------------------------------------------------------------------------------------------------------------

FISHER_MODES = ("sampled", "empirical")


def _examples(examples) -> list[dict[str, list[int]]]:
    rows = [dict(r) for r in examples]  # a datasets.Dataset or a list of dicts with input_ids
    if not rows:
        raise ForgettingError("fisher_diagonal: no examples of the original data given")
    for i, r in enumerate(rows):
        if "input_ids" not in r or len(r["input_ids"]) < 2:
            raise ForgettingError(f"fisher_diagonal: example {i} needs 'input_ids' with at least 2 tokens")
    return rows


def fisher_diagonal(model, examples, n_samples: int | None = None, mode: str = "sampled",
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information F_i = E[(d log p(y|x) / d theta_i)^2] of a causal LM on the original data.

    One "data point" is one sequence: its log-likelihood is the sum of its next-token log-probabilities, and we
    square the gradient of that sum, sequence by sequence (squaring a *batch* gradient would underestimate F).
    - `mode="sampled"` (the true Fisher, as in Kirkpatrick et al. 2017): the next tokens y are drawn from the
      model's own predictions at each position (teacher forcing on the real text);
    - `mode="empirical"`: y are the real next tokens of the text. Cheaper to explain, biased where the model is
      unsure; on text a model knows well both are close.
    `n_samples` sequences (default: all) are used, the first n of `examples` (rows with `input_ids`, optionally
    `labels` with -100 on positions to skip). Returns {parameter name: F} for every trainable parameter.
    """
    if mode not in FISHER_MODES:
        raise ForgettingError(f"fisher_diagonal: unknown mode {mode!r}; choose one of {FISHER_MODES}")
    rows = _examples(examples)
    if n_samples is not None:
        if n_samples < 1:
            raise ForgettingError(f"fisher_diagonal: n_samples must be >= 1, got {n_samples}")
        rows = rows[:n_samples]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ForgettingError("fisher_diagonal: the model has no trainable parameters")
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    device = next(iter(params.values())).device
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()  # no dropout: the Fisher is a property of the model as it will be anchored
    # A hand-written loop of per-sequence backward passes: the clearest correct way to get squared per-example
    # gradients (torch.func could vectorise it, at the cost of readability; 100 short sequences take seconds).
    for row in rows:
        ids = torch.tensor(row["input_ids"], device=device)[None]
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1)
        if mode == "sampled":
            targets = torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen).squeeze(-1).to(device)
        else:
            targets = ids[0, 1:]
        keep = torch.ones_like(targets, dtype=torch.bool)
        if "labels" in row:
            keep = torch.tensor(row["labels"], device=device)[1:] != -100
        loglik = logp.gather(-1, targets[:, None]).squeeze(-1)[keep].sum()
        model.zero_grad(set_to_none=True)
        loglik.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / len(rows) for n, f in fisher.items()}


FISHER_GROUPS = {"embeddings": ("wte", "wpe", "embed"), "attention": ("attn",), "mlp": ("mlp",),
                 "norms": ("ln_", "norm")}


def fisher_share(fisher: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Share of the total Fisher mass in each kind of layer (embeddings, attention, MLP, norms): where EWC pulls."""
    total = sum(f.sum().item() for f in fisher.values())
    if total <= 0:
        raise ForgettingError("fisher_share: the Fisher is zero everywhere")
    share = {g: 0.0 for g in [*FISHER_GROUPS, "other"]}
    for name, f in fisher.items():
        g = next((g for g, keys in FISHER_GROUPS.items() if any(k in name for k in keys)), "other")
        share[g] += f.sum().item() / total
    return share


def anchor_weights(model) -> dict[str, torch.Tensor]:
    """A frozen copy of the trainable weights theta*: where EWC's springs are attached."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def ewc_penalty(model, fisher: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor],
                ewc_lambda: float) -> torch.Tensor:
    """sum_i lambda/2 * F_i * (theta_i - theta*_i)^2 over the parameters named in `fisher`: zero at the anchor."""
    if isinstance(ewc_lambda, bool) or not isinstance(ewc_lambda, (int, float)) or not ewc_lambda >= 0:
        raise ForgettingError(f"ewc_penalty: EWC lambda must be >= 0, got {ewc_lambda!r}")
    missing = [n for n in fisher if n not in anchor]
    if missing:
        raise ForgettingError(f"ewc_penalty: no anchor weights for {missing[:3]}")
    total = None
    for name, p in model.named_parameters():
        if name in fisher:
            term = (fisher[name] * (p - anchor[name]) ** 2).sum()
            total = term if total is None else total + term
    if total is None:
        raise ForgettingError("ewc_penalty: no parameter of the model is named in the Fisher dict")
    return 0.5 * ewc_lambda * total


class EWCTrainer(Trainer):
    """A `Trainer` whose training loss is the task loss plus the EWC penalty (Kirkpatrick et al. 2017).

    Build it like a `Trainer`, plus `fisher=`, `anchor=` and `ewc_lambda=`. With lambda = 0 it is plain
    fine-tuning. `last_penalty` holds the latest penalty value, to watch the spring tighten.
    """

    def __init__(self, *args, fisher: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor],
                 ewc_lambda: float, **kwargs):
        if ewc_lambda < 0:
            raise ForgettingError(f"EWC lambda must be >= 0, got {ewc_lambda}")
        super().__init__(*args, **kwargs)
        device = self.args.device
        self.fisher = {n: f.to(device) for n, f in fisher.items()}
        self.anchor = {n: a.to(device) for n, a in anchor.items()}
        self.ewc_lambda = float(ewc_lambda)
        self.last_penalty = 0.0

    # The signature of transformers 5.23's Trainer.compute_loss (declared in LIBRARY_CALLS, checked by
    # tests/test_api_drift.py).
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if model.training and self.ewc_lambda > 0:
            penalty = ewc_penalty(model, self.fisher, self.anchor, self.ewc_lambda)
            self.last_penalty = penalty.item()
            # When the task loss is already normalised over all gradient-accumulation micro-batches, the Trainer
            # will not divide by the accumulation steps, so the penalty (added once per micro-batch) must be.
            scaled = self.loss_is_scaled_for_ga
            if scaled is None:
                scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
                    or self.compute_loss_func is not None
            steps = getattr(self, "current_gradient_accumulation_steps", 1) or 1
            loss = loss + (penalty / steps if scaled else penalty)
        return (loss, outputs) if return_outputs else loss


@dataclass
class RunConfig(CourseConfig):
    """One fine-tuning run: `steps` optimizer steps of `batch_size`, constant lr after `warmup_steps`."""

    error = ForgettingError

    steps: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 16
    warmup_steps: int = 10
    eval_every: int = 25
    seed: int = 0
    max_length: int = 96


@dataclass
class ForgettingStudyConfig(CourseConfig):
    """Lesson 02's experiment, fixed before any run: every setting below runs on every seed.

    Full fine-tuning at `learning_rate` is the naive baseline; the mitigations are the same fine-tuning at
    `lower_learning_rate`, rehearsal at each of `ratios` (share of replayed text), EWC at each of `lambdas`, and
    LoRA of rank `lora_r` at `lora_learning_rate` on the attention matrices and on attention + MLP. Each run is
    `steps` steps of `batch_size`, measured every `eval_every` steps; methods are compared when their new-fact
    recall first reaches `target` (matched learning). The Fisher is estimated on `n_fisher` replayable texts.
    """

    error = ForgettingError
    LIMITS = {"lower_learning_rate": Limit(0, 1, low_open=True), "target": Limit(0, 1, low_open=True),
              "n_fisher": Limit(1, 10**5)}

    learning_rate: float = 3e-3
    lower_learning_rate: float = 1e-3
    lora_learning_rate: float = 1e-2
    lora_r: int = 8
    ratios: tuple = (0.25, 0.5, 0.75)
    lambdas: tuple = (1e3, 1e4, 1e5)
    n_fisher: int = 100
    target: float = 0.6
    steps: int = 60
    batch_size: int = 8
    warmup_steps: int = 10
    eval_every: int = 20

    def check(self) -> None:
        if not self.lower_learning_rate < self.learning_rate:
            raise ForgettingError(f"ForgettingStudyConfig: lower_learning_rate ({self.lower_learning_rate:g}) must be "
                                  f"below learning_rate ({self.learning_rate:g})")
        if not self.ratios or not all(isinstance(r, (int, float)) and 0 < r < 1 for r in self.ratios):
            raise ForgettingError(f"ForgettingStudyConfig: ratios must be shares in (0, 1), got {self.ratios!r}")
        if not self.lambdas or not all(isinstance(v, (int, float)) and v > 0 for v in self.lambdas):
            raise ForgettingError(f"ForgettingStudyConfig: lambdas must be positive, got {self.lambdas!r}")

    def run_config(self, learning_rate: float, seed: int) -> "RunConfig":
        """The `RunConfig` of one run of this study."""
        return RunConfig(steps=self.steps, learning_rate=learning_rate, batch_size=self.batch_size,
                         warmup_steps=self.warmup_steps, eval_every=self.eval_every, seed=seed)

    def settings(self, methods: Sequence[str] | None = None) -> list[tuple[str, float, dict[str, Any]]]:
        """Every run of one seed, in order: (method, learning rate, keyword arguments of `run_method`); only those of
        `methods` when given (a claim that needs more seeds runs just the methods it compares)."""
        runs = ([("naive", self.learning_rate, {}), ("lower lr", self.lower_learning_rate, {})]
                + [("rehearsal", self.learning_rate, {"ratio": r}) for r in self.ratios]
                + [("ewc", self.learning_rate, {"ewc_lambda": v}) for v in self.lambdas]
                + [("lora", self.lora_learning_rate, {"lora_r": self.lora_r, "lora_mlp": mlp}) for mlp in (False, True)])
        if methods is None:
            return runs
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ForgettingError(f"ForgettingStudyConfig.settings: unknown methods {unknown}; choose from {METHODS}")
        return [run for run in runs if run[0] in methods]


def run_study(base_model, tokenizer, data: ForgettingData, study: ForgettingStudyConfig, seed: int,
              probe_texts: Sequence[str] = (), methods: Sequence[str] | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, float], dict | None]:
    """Every setting of `study` on one seed's `data` (only `methods`' when given): returns (curves, the base model's
    measured row, the Fisher, None when EWC is not run).

    Old-fact recall is measured on the seed's validation and test people, new-fact recall on its taught people,
    perplexity on `probe_texts`. Rehearsal replays, and the Fisher is estimated on, `data.replay` only. When
    rehearsal runs, its control runs too: the same share of replay, at the share chosen on this seed's validation
    people, drawn from `data.unrelated` (text that names no person: `run_method("unrelated replay")`).
    """
    from tqdm.auto import tqdm

    measure = knowledge_probe(tokenizer, data.test_people, data.new_people, list(probe_texts),
                              val_people=data.val_people)
    base_row = measure(base_model)
    settings = study.settings(methods)
    fisher = None
    if any(method == "ewc" for method, _, _ in settings):
        fisher = fisher_diagonal(base_model, tokenize_texts(tokenizer, data.fisher_texts(study.n_fisher, seed)),
                                 mode="sampled", seed=seed)
    curves: list[dict[str, Any]] = []
    for method, lr, kwargs in tqdm(settings, desc=f"seed {seed}", leave=False):
        curves += run_method(base_model, tokenizer, method, data.new_texts, measure, study.run_config(lr, seed),
                             old_texts=data.replay, fisher=fisher, start=base_row, **kwargs)
    if any(method == "rehearsal" for method, _, _ in settings):
        chosen = choose_on_validation(summarise(curves, study.target, base_row["old_recall"]), "rehearsal")[seed]
        ratio = dict(zip((f"{r:.0%} old" for r in study.ratios), study.ratios))[chosen]
        curves += run_method(base_model, tokenizer, "unrelated replay", data.new_texts, measure,
                             study.run_config(study.learning_rate, seed), old_texts=data.unrelated, ratio=ratio,
                             start=base_row)
    return curves, base_row, fisher


# One seed's runs in two halves of about equal cost (6 and 5 runs): two cores share a seed, and each half seeds its
# own runs, so the numbers are the same however the halves are spread (`parallel.run_in_processes`).
STUDY_PARTS = (("naive", "lower lr", "rehearsal"), ("ewc", "lora"))


def run_studies(base_model, tokenizer, world: World, sizes: tuple[int, int, int], study: ForgettingStudyConfig,
                seeds: Sequence[int], probe_texts: Sequence[str] = (), workers: int | None = None
                ) -> tuple[list[dict[str, Any]], dict[int, dict[str, float]], dict[int, dict]]:
    """`run_study` for every seed, in `STUDY_PARTS`, side by side on the free cores; returns (every curve, the base
    model's measured row per seed, the Fisher per seed).

    `sizes` = (new, validation, test) people per seed, as `forgetting_data` takes them. Each seed's data is drawn
    here, once, so both halves of a seed see the same people.
    """
    tasks = [(base_model, tokenizer, forgetting_data(world, *sizes, seed=seed), study, seed, list(probe_texts), part)
             for seed in seeds for part in STUDY_PARTS]
    results = run_in_processes(run_study, tasks, workers, desc="seeds, two halves each")
    curves, base_rows, fishers = [], {}, {}
    for task, (part_curves, base_row, fisher) in zip(tasks, results):
        curves += part_curves
        base_rows[task[4]] = base_row
        if fisher is not None:
            fishers[task[4]] = fisher
    return curves, base_rows, fishers


def finetune(model, tokenizer, texts: Sequence[str], measure: Callable[[Any], dict[str, float]],
             config: RunConfig = RunConfig(), ewc: Mapping[str, Any] | None = None,
             label: Mapping[str, Any] = (), start: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Fine-tune `model` in place on `texts` and return its measured curve: one row per evaluation step.

    `ewc=dict(fisher=..., anchor=..., ewc_lambda=...)` trains with `EWCTrainer`, else with a plain `Trainer`.
    Pass a LoRA-wrapped model (`peft_methods.apply_lora`) for LoRA. Each row: `label` + step + `measure(model)`;
    `start` (the base model's measured row) saves measuring the unchanged model again at step 0.
    """
    if len(texts) == 0:
        raise ForgettingError("finetune: no fine-tuning texts given")
    monitor = ForgettingMonitor(measure, config.eval_every, label, start)
    args = config.training_arguments(logging_steps=max(config.steps, 1), weight_decay=0.0)
    trainer = causal_lm_trainer(model, tokenizer, texts, args, [monitor], max_length=config.max_length,
                                trainer_class=EWCTrainer if ewc else None, **(ewc or {}))
    trainer.train()
    return monitor.history


def value_at(history: Sequence[Mapping[str, float]], x_key: str, x: float, y_key: str) -> float:
    """`y_key` on a measured curve where `x_key` first reaches `x`, by linear interpolation between evaluations.

    This is how we compare methods at *matched learning*: the old-fact recall of each run at the moment its
    new-fact recall first reached, say, 0.5. Returns NaN if the run never got there.
    """
    if not history:
        raise ForgettingError("value_at: empty curve")
    prev = None
    for row in history:
        if row[x_key] >= x:
            if prev is None or row[x_key] == prev[x_key]:
                return float(row[y_key])
            t = (x - prev[x_key]) / (row[x_key] - prev[x_key])
            return float(prev[y_key] + t * (row[y_key] - prev[y_key]))
        prev = row
    return float("nan")


METHODS = ("naive", "lower lr", "rehearsal", "ewc", "lora", "unrelated replay")


def run_method(base_model, tokenizer, method: str, new_texts: Sequence[str], measure: Callable[[Any], dict[str, float]],
               config: RunConfig, *, old_texts: Sequence[str] = (), ratio: float = 0.0,
               fisher: Mapping[str, torch.Tensor] | None = None, ewc_lambda: float = 0.0, lora_r: int = 8,
               lora_mlp: bool = False, start: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Fine-tune a *copy* of `base_model` on `new_texts` with one of the methods; return its measured curve.

    - "naive": plain full fine-tuning;
    - "lower lr": the same plain full fine-tuning, run at the lower learning rate in `config` (the cheapest
      mitigation: the label keeps it apart from the naive baseline in every table);
    - "rehearsal": full fine-tuning on `mix_rehearsal(new_texts, old_texts, ratio)` (enough epochs for the run);
      `old_texts` must not hold anything about the people you judge on (`world.replay_texts`);
    - "ewc": full fine-tuning with the EWC penalty (`fisher` from `fisher_diagonal`, anchored at the base weights);
    - "lora": a LoRA adapter of rank `lora_r` on the attention matrices, and on the MLP too with `lora_mlp=True`
      (`peft_methods.apply_lora`);
    - "unrelated replay": rehearsal's control, the same mixing with `old_texts` that hold no old fact (pass
      `ForgettingData.unrelated`): it spends the same share of every batch on replay, so it slows learning and
      dilutes the new data as rehearsal does, but it cannot remind the model of any fact.
    Every row carries method, setting, lr and seed, so curves of many runs concatenate into one table.
    """
    import copy

    if method not in METHODS:
        raise ForgettingError(f"unknown method {method!r}; choose one of {METHODS}")
    model, texts, ewc = copy.deepcopy(base_model), list(new_texts), None
    setting = ""
    if method in ("rehearsal", "unrelated replay"):
        texts = rehearsal_set(texts, old_texts, ratio, config.seed, config.steps, config.batch_size)
        setting = f"{ratio:.0%} old" if method == "rehearsal" else f"{ratio:.0%} unrelated"
    elif method == "ewc":
        if fisher is None:
            raise ForgettingError("run_method('ewc'): pass the Fisher of the original data (fisher_diagonal)")
        ewc = dict(fisher=fisher, anchor=anchor_weights(model), ewc_lambda=ewc_lambda)
        setting = f"lambda={ewc_lambda:g}"
    elif method == "lora":
        seed_torch(config.seed)  # LoRA's initial A matrices: the run's own seed, not whatever ran before it
        model = apply_lora(model, r=lora_r, mlp=lora_mlp)
        setting = f"{'attention + MLP' if lora_mlp else 'attention'}, r={lora_r}"
    label = {"method": method, "setting": setting, "lr": config.learning_rate, "seed": config.seed}
    return finetune(model, tokenizer, texts, measure, config, ewc=ewc, label=label, start=start)


def summarise(curves: Sequence[Mapping[str, Any]], target: float, base_old: float, x_key: str = "new_recall",
              y_keys: Sequence[str] = ("old_recall", "old_ppl", "val_old_recall")) -> "pd.DataFrame":
    """One row per run (method, setting, lr, seed): final numbers and the old-knowledge numbers at matched learning.

    `old_recall@target` is the old-fact recall (of the test people) when the run's new-fact recall first reached
    `target` (`value_at`); `forgot@target` = `base_old` minus it; `val_old_recall@target` is the same reading on the
    validation people, the only one `choose_on_validation` looks at. NaN means the run never learned that much.
    """
    import pandas as pd

    df = pd.DataFrame(list(curves))
    if df.empty:
        raise ForgettingError("summarise: no measured curves")
    rows = []
    for key, run in df.groupby(["method", "setting", "lr", "seed"], sort=False):
        hist = run.sort_values("step").to_dict("records")
        row = dict(zip(["method", "setting", "lr", "seed"], key))
        row.update({f"final_{x_key}": hist[-1][x_key], **{f"final_{y}": hist[-1][y] for y in y_keys if y in hist[-1]}})
        for y in y_keys:
            if y in hist[-1]:
                row[f"{y}@target"] = value_at(hist, x_key, target, y)
        row["forgot@target"] = base_old - row["old_recall@target"]
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class ForgettingData:
    """One seed's people and texts: who is taught, who is probed (validation and test), and what may be replayed.

    - `new_people`: held-out people the base model never saw; their biographies (`new_texts`) are fine-tuned on;
    - `val_people`: seen people whose old-fact recall chooses EWC's lambda and the rehearsal ratio;
    - `test_people`: other seen people whose old-fact recall judges every method; no choice looks at them;
    - `replay`: the pretraining texts a mitigation may train on (rehearsal) or estimate its Fisher on (EWC): generic
      text and biographies of seen people who are *not* probed (`world.replay_texts`). Replaying a probed
      person's biography would re-teach the very fact the test asks for.
    - `unrelated`: the texts of `replay` that name no person (generic text about towns and companies): what
      rehearsal's control replays. It holds no fact about anyone, so what it keeps is not remembering.
    """

    new_people: list
    val_people: list
    test_people: list
    new_texts: list[str]
    replay: list[str]
    unrelated: list[str] = field(default_factory=list)

    def fisher_texts(self, n: int, seed: int) -> list[str]:
        """A seeded sample of `n` replayable texts: what the EWC Fisher is estimated on."""
        if not 0 < n <= len(self.replay):
            raise ForgettingError(f"fisher_texts: n must be in [1, {len(self.replay)}] (the replay pool), got {n}")
        return random.Random(seed).sample(self.replay, n)


def texts_naming(texts: Sequence[str], people) -> list[str]:
    """The texts that name any of `people` (Person objects or full names), matched as whole names.

    A surname alone is not a person: two people of the world carry a city as their surname (Wren Dunmore, Celia
    Ashdale), and a sentence about the town of Dunmore says nothing about Wren. So the check looks for the full
    name as whole words ("Wren Dunmore", not "Dunmore", and not "Wren Dunmores").
    """
    import re

    names = sorted({p if isinstance(p, str) else p.name for p in people})
    if not names:
        return []
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
    return [t for t in texts if pattern.search(t)]


def forgetting_data(world: World, n_new: int, n_val: int, n_test: int, seed: int) -> ForgettingData:
    """Draw one seed's taught, validation and test people (disjoint, `world.sample_world`) and its replay pool."""
    if min(n_new, n_val, n_test) < 1:
        raise ForgettingError(f"forgetting_data: need at least one new, validation and test person, got "
                              f"{n_new}, {n_val}, {n_test}")
    sample = sample_world(world, n_seen=n_val + n_test, n_heldout=n_new, seed=seed)
    new_people, val_people, test_people = sample.heldout, sample.seen[:n_val], sample.seen[n_val:]
    taught = {p.name for p in new_people}
    new_texts = [r["text"] for r in heldout_bios(world) if r["person"] in taught]
    replay = replay_texts(world, val_people + test_people)
    people = list(world.seen) + list(world.heldout)
    named = set(texts_naming(replay, people))
    return ForgettingData(new_people, val_people, test_people, new_texts, replay,
                          [t for t in replay if t not in named])


def choose_on_validation(summary: "pd.DataFrame", method: str, key: str = "val_old_recall@target") -> dict[Any, str]:
    """Per seed, the setting of `method` (a lambda, a ratio) that kept the most old facts of the *validation*
    people at matched learning (`key`); settings that never reached the target are out. Ties go to the first
    setting in run order. The test people's numbers are never read here."""
    rows = summary[summary["method"] == method]
    if rows.empty:
        raise ForgettingError(f"choose_on_validation: no runs of method {method!r} in the summary")
    if key not in rows:
        raise ForgettingError(f"choose_on_validation: the summary has no column {key!r}; measure validation "
                              f"people (knowledge_probe(..., val_people=...))")
    chosen = {}
    for seed, runs in rows.groupby("seed", sort=False):
        feasible = runs.dropna(subset=[key])
        if feasible.empty and dry_run():  # stand-ins learn nothing: keep the code path, take the first setting
            chosen[seed] = runs["setting"].iloc[0]
            continue
        if feasible.empty:
            raise ForgettingError(f"choose_on_validation: no {method} setting reached the target in seed {seed}")
        chosen[seed] = feasible.loc[feasible[key].idxmax(), "setting"]
    return chosen


def at_edge(summary: "pd.DataFrame", method: str, chosen: Mapping[Any, str]) -> dict[Any, bool]:
    """Per seed, whether the chosen setting is the first or the last of `method`'s grid (in run order): then the
    best setting may lie outside the grid. A grid whose last setting never reached the target ends past the choice."""
    out = {}
    for seed, runs in summary[summary["method"] == method].groupby("seed", sort=False):
        settings = list(runs["setting"])
        out[seed] = settings.index(chosen[seed]) in (0, len(settings) - 1)
    return out


def run_values(summary: "pd.DataFrame", method: str, setting: Mapping[Any, str] | str | None = None,
               column: str = "forgot@target") -> dict[Any, float]:
    """Per seed, `column` of `method`'s run: the run with `setting` (one for all seeds, or per seed as chosen on
    validation), or the method's one run when `setting` is None (naive, lower lr). Seeds in the summary's order."""
    out = {}
    for seed in summary["seed"].unique():
        pick = setting if setting is None or isinstance(setting, str) else setting[seed]
        run = summary[(summary["method"] == method) & (summary["seed"] == seed)]
        if pick is not None:
            run = run[run["setting"] == pick]
        if len(run) != 1:
            raise ForgettingError(f"run_values: need one {method}{f' ({pick})' if pick is not None else ''} run in "
                                  f"seed {seed}, found {len(run)}")
        out[seed] = run[column].item()
    return out


def matched_gain(summary: "pd.DataFrame", method: str, setting_by_seed: Mapping[Any, str] | str,
                 baseline: str = "naive", column: str = "forgot@target") -> dict[Any, float]:
    """Per seed: `column` of the baseline run minus that of `method`'s run with the given setting (per seed, or
    one for all): how much less it forgot at matched learning (positive: the mitigation helped)."""
    base = run_values(summary, baseline, column=column)
    run = run_values(summary, method, setting_by_seed, column)
    return {seed: float(base[seed] - run[seed]) for seed in base}


def kept_more_at_common_learning(curves: Sequence[Mapping[str, Any]], method: str, setting: Mapping[Any, str] | str,
                                 reference: str, reference_setting: Mapping[Any, str] | str, target: float,
                                 x_key: str = "new_recall", y_key: str = "old_recall") -> dict[Any, float]:
    """Per seed: `method`'s old recall minus `reference`'s, both read where their new recall first reached the same
    level: `target`, or, when one of the two runs never got that far, the highest new recall both reached.

    When both reach `target` this is exactly forgot@target(reference) - forgot@target(method). A control that
    learns slower than the target allows still gets a value, read at a level both runs reached, instead of none.
    Settings are one for every seed, or per seed (as `choose_on_validation` returns them)."""
    import pandas as pd

    df = pd.DataFrame(list(curves))
    out = {}
    for seed in df["seed"].unique():
        runs = []
        for m, st in ((method, setting), (reference, reference_setting)):
            pick = st if isinstance(st, str) else st[seed]
            run = df[(df.method == m) & (df.setting == pick) & (df.seed == seed)].sort_values("step")
            if run.empty:
                raise ForgettingError(f"kept_more_at_common_learning: no {m} ({pick!r}) run in seed {seed}")
            runs.append(run.to_dict("records"))
        level = min(target, *(max(r[x_key] for r in run) for run in runs))
        mine, ref = (value_at(run, x_key, level, y_key) for run in runs)
        out[seed] = float(mine - ref)
    return out


def at_its_learning(curves: Sequence[Mapping[str, Any]], method: str, setting: Mapping[Any, str] | str,
                    reference: str = "naive",
                    x_key: str = "new_recall", y_key: str = "old_recall") -> "pd.DataFrame":
    """Matched learning the other way round, for a method that never reaches the target (LoRA here): per seed,
    where the run ended (its final `x_key`, its final `y_key`) and the `reference` run's `y_key` when it first
    reached that same `x_key` (`value_at`). `kept more` > 0: the method kept more old facts at equal learning.
    `setting` is one for every seed, or per seed (as `choose_on_validation` returns it)."""
    import pandas as pd

    df = pd.DataFrame(list(curves))
    rows = []
    for seed in df["seed"].unique():
        pick = setting if isinstance(setting, str) else setting[seed]
        run = df[(df.method == method) & (df.setting == pick) & (df.seed == seed)].sort_values("step")
        ref = df[(df.method == reference) & (df.seed == seed)].sort_values("step")
        if run.empty or ref.empty:
            raise ForgettingError(f"at_its_learning: no {method} ({pick}) or {reference} run in seed {seed}")
        end = run.iloc[-1]
        ref_y = value_at(ref.to_dict("records"), x_key, float(end[x_key]), y_key)
        rows.append({"seed": seed, f"final {x_key}": float(end[x_key]), f"final {y_key}": float(end[y_key]),
                     f"{reference} {y_key} there": ref_y, "kept more": float(end[y_key]) - ref_y})
    return pd.DataFrame(rows).set_index("seed")


def plot_curves(curves: Sequence[Mapping[str, Any]], title: str = "", base_old: float | None = None):
    """New-fact recall (learned) and old-fact recall (kept) against step, one colour per run."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(list(curves))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharex=True)
    for i, (key, run) in enumerate(df.groupby(["method", "setting", "lr", "seed"], sort=False)):
        name = _run_name(key)
        for ax, y in zip(axes, ("new_recall", "old_recall")):
            ax.plot(run["step"], run[y], marker=".", color=f"C{i % 10}", label=name)
    axes[0].set_ylabel("new facts recalled (learned)")
    axes[1].set_ylabel("old facts recalled (kept)")
    if base_old is not None:
        axes[1].axhline(base_old, color="grey", ls=":", lw=1, label="base model")
    for ax in axes:
        ax.set_xlabel("fine-tuning step")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _run_name(key) -> str:
    method, setting, lr, seed = key
    return f"{method}{' ' + setting if setting else ''}, lr {lr:g}, seed {seed}"


def plot_frontier(curves: Sequence[Mapping[str, Any]], target: float | None = None, base_old: float | None = None):
    """The learning-vs-forgetting frontier: every run's path in the (new recall, old recall) plane.

    Up and to the right is better: more learned, more kept. A method dominates another when its path lies above
    it at the same new recall; the dashed line marks the matched-learning level used in the table.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(list(curves))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles: dict[tuple, str] = {}  # one line style per (method, setting, lr); seeds share it, one legend entry
    for key, run in df.groupby(["method", "setting", "lr", "seed"], sort=False):
        variant = key[:3]
        first = variant not in styles
        if first:
            styles[variant] = ["-", "--", ":", "-."][sum(v[0] == key[0] for v in styles) % 4]
        ax.plot(run["new_recall"], run["old_recall"], styles[variant], marker=".", alpha=0.85,
                color=f"C{METHODS.index(key[0])}" if key[0] in METHODS else "k",
                label=f"{key[0]}{' ' + key[1] if key[1] else ''}, lr {key[2]:g}" if first else None)
    if target is not None:
        ax.axvline(target, color="grey", ls="--", lw=1)
    if base_old is not None:
        ax.axhline(base_old, color="grey", ls=":", lw=1)
    ax.set_xlabel("new facts recalled (learned)")
    ax.set_ylabel("old facts recalled (kept)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
