"""The capstone: choose a fine-tuning recipe from what lessons 01-08 *measured*, and fill the course's
problems-and-mitigations table from their saved results.

Nothing here holds a result. Each number is read from a lesson's saved table (`runs/results/<lesson>.json`,
see `results.py`) through a `Metric`: "the mean of column C over the rows where method == M". The decision
rules of `choose_recipe` compare such measured numbers, so a learner who reruns a lesson on a GPU with real
models (where, say, LoRA does learn new facts) gets a recipe that follows *their* measurements.

Used in lessons: 09
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from transformers import EarlyStoppingCallback

from course_utils.claims import SCOREBOARD_COLUMNS, scoreboard_rows
from course_utils.config import CourseConfig, Limit
from course_utils.errors import CourseError
from course_utils.gpu import fits, fitting_method, needed_gb
from course_utils.peft_methods import apply_lora
from course_utils.profiles import dry_run
from course_utils.paths import REFERENCE_RESULTS_DIR
from course_utils.results import ResultsError, load_results
from course_utils.train import ForgettingMonitor, causal_lm_trainer, rehearsal_set


LIBRARY_CALLS = {
    "transformers:EarlyStoppingCallback.__init__": ["early_stopping_patience"],
    "transformers:TrainingArguments": ["eval_strategy", "eval_steps", "save_strategy", "save_steps",
                                       "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
                                       "save_total_limit"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "eval_dataset", "data_collator", "callbacks"],
}


class CapstoneError(CourseError, ValueError):
    """A resource or task description the recipe cannot use, or a saved table without the expected column."""


@dataclass(frozen=True)
class Metric:
    """A measured number: `agg` ('mean', 'min' or 'max') of `column` in `lesson`'s table over the matching rows.

    `where` maps a column to the value it must equal; `contains` maps a column to a substring it must contain.
    """

    lesson: str
    column: str
    where: Mapping[str, Any] = field(default_factory=dict)
    contains: Mapping[str, str] = field(default_factory=dict)
    agg: str = "mean"

    def rows(self, table: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [r for r in table
                if all(r.get(k) == v for k, v in self.where.items())
                and all(str(s) in str(r.get(k, "")) for k, s in self.contains.items())]

    def read(self, records: Mapping[str, Mapping[str, Any]]) -> float:
        """The number, from `records` (lesson -> saved record); NaN if that lesson has not been run."""
        if self.lesson not in records:
            return float("nan")
        rows = self.rows(records[self.lesson]["table"])
        values = [float(r[self.column]) for r in rows if r.get(self.column) is not None]
        if not values and dry_run() and rows:  # stand-ins leave matched-learning measures undefined
            return float("nan")
        if not values:
            raise CapstoneError(f"{self.lesson}: no rows with a value in column {self.column!r} matching "
                                f"{dict(self.where) or ''}{dict(self.contains) or ''}; has the lesson's table changed?")
        if self.agg not in ("mean", "min", "max"):
            raise CapstoneError(f"Metric.agg must be 'mean', 'min' or 'max', got {self.agg!r}")
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}[self.agg]


def load_records(lessons: Sequence[str], directory: Path | None = None,
                 reference: Path | None = REFERENCE_RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """The saved record of each lesson: from this machine's runs where the lesson was run, else from the shipped
    reference run (`reference`, None to use only this machine's). Each record says which in `source`; a lesson
    found in neither is simply absent. A record that is there but damaged is a one-line `ResultsError`, never
    passed over for the reference run's numbers without a word."""
    records = {}
    for lesson in lessons:
        for where, source in ((directory, "this run"), (reference, "reference run (shipped)")):
            if source.startswith("reference") and reference is None:
                continue
            try:
                records[lesson] = {**load_results(lesson, where), "source": source}
                break
            except ResultsError:
                raise
            except CourseError:  # not saved there: try the next place
                continue
    return records


def record_sources(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """lesson -> where its numbers come from ('this run' or 'reference run (shipped)')."""
    return {lesson: record.get("source", "this run") for lesson, record in records.items()}


@dataclass(frozen=True)
class Problem:
    """One row of the course table: a problem, the number that showed it, a mitigation and the number it reached,
    and the lesson's declared claim that decides whether the mitigation helped.

    `claim` names the lesson's claim that says the mitigation works (a negative or positive control beside it);
    its verdict, not the two numbers, fills the "improved?" column. Where the lesson makes no such claim,
    `unclaimed` says why (a tautology, a comparison that is not a mitigation, a finding without a fix), and the row
    says so instead of "yes".
    """

    problem: str
    symptom: str
    symptom_metric: Metric
    mitigation: str
    mitigation_metric: Metric
    better: str = "lower"  # "lower" or "higher": which way the measure improves
    claim: str = ""
    unclaimed: str = ""

    def __post_init__(self):
        if bool(self.claim) == bool(self.unclaimed):
            raise CapstoneError(f"Problem {self.mitigation!r}: name the lesson's claim about the mitigation, or say "
                                "why there is none (unclaimed=...), not both")


L01, L02, L03, L04 = "01_compute_full_vs_peft", "02_catastrophic_forgetting", "03_data_quality", "04_noise_study"
L05, L06, L07, L08 = "05_overfitting", "06_what_finetuning_changes", "07_bias_and_debiasing", "08_alignment_break_and_restore"

PENDING = "lesson {} is being moved onto claims with controls; its claim is named here when it lands"
PROBLEMS: tuple[Problem, ...] = (
    Problem("compute cost", "full FT: gradient + optimizer memory (MB, mean over families)",
            Metric(L01, "grads+optimizer MB", {"method": "full"}),
            "LoRA: gradient + optimizer memory (MB)", Metric(L01, "grads+optimizer MB", {"method": "lora"}),
            unclaimed=PENDING.format("01")),
    Problem("catastrophic forgetting", "naive FT: old-fact recall lost at matched learning",
            Metric(L02, "forgot@target", {"method": "naive"}),
            "a lower learning rate (half): old-fact recall lost", Metric(L02, "forgot@target", {"method": "lower lr"}),
            claim="a lower learning rate forgets less"),
    Problem("catastrophic forgetting", "naive FT: old-fact recall lost at matched learning",
            Metric(L02, "forgot@target", {"method": "naive"}),
            "rehearsal (share chosen on validation): old-fact recall lost",
            Metric(L02, "forgot@target", {"method": "rehearsal", "chosen on validation": True}),
            claim="rehearsal forgets less"),
    Problem("catastrophic forgetting", "naive FT: old-fact recall lost at matched learning",
            Metric(L02, "forgot@target", {"method": "naive"}),
            "EWC (lambda chosen on validation): old-fact recall lost",
            Metric(L02, "forgot@target", {"method": "ewc", "chosen on validation": True}), claim="EWC forgets less"),
    Problem("data quality", "accuracy after training on the corrupted set",
            Metric(L03, "accuracy", {"training set": "corrupted"}),
            "accuracy after the cleaning pipeline", Metric(L03, "accuracy", {"training set": "cleaned (all steps)"}),
            better="higher", claim="cleaning beats training on the corrupted set"),
    Problem("data quality (label errors)", "precision of a random flagger of the same size",
            Metric(L03, "precision", {"training set": "detector: random flagger (expected)"}),
            "precision of confident learning (cleanlab)",
            Metric(L03, "precision", {"training set": "detector: confident learning (cleanlab)"}), better="higher",
            claim="confident learning beats a random flagger"),
    Problem("noisy labels", "40 % label noise: QA F1 lost against clean training",
            Metric(L04, "drop", {"noise": "label", "rate": 0.4}),
            "(no mitigation: lesson 04 measures which noise costs most) 40 % typo noise: QA F1 lost",
            Metric(L04, "drop", {"noise": "typo", "rate": 0.4}),
            unclaimed="not a mitigation: typo noise is another kind of damage, shown for comparison"),
    Problem("overfitting", "no mitigation: rise of validation loss above its minimum",
            Metric(L05, "rise", {"setting": "no mitigation"}),
            "early stopping: rise of the kept checkpoint's validation loss",
            Metric(L05, "rise", {"setting": "early stopping"}),
            unclaimed="a tautology: early stopping keeps the validation minimum, so its rise is 0 by construction "
                      "(lesson 05 uses it as the overfitting claim's negative control)"),
    Problem("overfitting", "no mitigation: train/validation loss gap", Metric(L05, "gap", {"setting": "no mitigation"}),
            "dropout 0.3: train/validation loss gap", Metric(L05, "gap", {"setting": "dropout 0.3"}),
            claim="dropout narrows the gap beyond under-training"),
    Problem("overfitting", "no mitigation: biography accuracy on test people",
            Metric(L05, "biography accuracy", {"setting": "no mitigation"}),
            "dropout 0.3: biography accuracy on test people",
            Metric(L05, "biography accuracy", {"setting": "dropout 0.3"}), better="higher",
            claim="dropout improves the task"),
    Problem("new knowledge", "LoRA: new-fact recall on held-out wordings after instruction tuning (same steps)",
            Metric(L06, "new-fact recall (held out)", {"method": "lora"}),
            "full fine-tuning: new-fact recall on held-out wordings",
            Metric(L06, "new-fact recall (held out)", {"method": "full"}),
            better="higher", claim="new facts: full FT learns, LoRA does not"),
    Problem("bias", "skewed data: held-out counterfactual gap", Metric(L07, "gap", {"method": "skewed (no fix)"}),
            "counterfactual augmentation: held-out counterfactual gap",
            Metric(L07, "gap", {"method": "counterfactual augmentation"}),
            claim="counterfactual augmentation removes the held-out gap"),
    Problem("bias", "skewed data: held-out counterfactual gap", Metric(L07, "gap", {"method": "skewed (no fix)"}),
            "balancing the labels per company: held-out counterfactual gap", Metric(L07, "gap", {"method": "balanced"}),
            claim="balancing removes the held-out gap"),
    Problem("alignment", "benign fine-tuning: refusal rate on unsafe requests",
            Metric(L08, "refusal", {"stage": "benign"}),
            "plain DPO on the broken model (at its own validated rate): refusal rate",
            Metric(L08, "refusal", {"stage": "DPO"}), better="higher", claim="plain DPO restores refusals"),
    Problem("alignment", "benign fine-tuning: refusal rate on unsafe requests",
            Metric(L08, "refusal", {"stage": "benign"}),
            "DPO + NLL on the chosen answers: refusal rate", Metric(L08, "refusal", {"stage": "DPO + NLL"}),
            better="higher", claim="DPO + NLL restores refusals"),
    Problem("alignment", "benign fine-tuning: refusal rate on unsafe requests",
            Metric(L08, "refusal", {"stage": "benign"}),
            "DPO on Constitutional-AI pairs (a rule critic's revisions): refusal rate",
            Metric(L08, "refusal", {"stage": "CAI-DPO"}), better="higher",
            claim="Constitutional-AI pairs restore refusals"),
    Problem("alignment", "benign fine-tuning: refusal rate on unsafe requests",
            Metric(L08, "refusal", {"stage": "benign"}),
            "GRPO against a reward model: refusal rate", Metric(L08, "refusal", {"stage": "RLHF"}), better="higher",
            claim="GRPO restores refusals"),
)


def problems_table(records: Mapping[str, Mapping[str, Any]], problems: Sequence[Problem] = PROBLEMS):
    """The course's problems-and-mitigations table (a DataFrame), every number read from a lesson's saved results.

    A lesson that has not been run yet shows as NaN with its name in the `lesson` column, never as a made-up value.
    """
    import pandas as pd

    rows = []
    for p in problems:
        record = records.get(p.mitigation_metric.lesson)
        rows.append({"problem": p.problem, "lesson": p.symptom_metric.lesson.split("_")[0],
                     "what it looked like here": p.symptom, "measured": p.symptom_metric.read(records),
                     "mitigation": p.mitigation, "mitigated": p.mitigation_metric.read(records),
                     "improved?": improved(p, record), "the lesson's evidence": evidence(record)})
    return pd.DataFrame(rows)


def claim_record(record: Mapping[str, Any] | None, claim: str) -> Mapping[str, Any] | None:
    """The saved verdict row of the lesson's claim called `claim`, None if the record has no such claim."""
    return next((c for c in (record or {}).get("claims") or [] if c.get("claim") == claim), None)


IMPROVED = {"held": "yes", "not reproduced": "no"}   # a claim that the mitigation works, and its verdict


def improved(problem: Problem, record: Mapping[str, Any] | None) -> str:
    """Did the mitigation help? "yes" only when the lesson's declared claim that it works held over the seeds, with
    its control beside it; "no" when that claim did not reproduce; the verdict itself when undecided or the
    control could not tell; and, where the lesson makes no claim about it, "not claimed" and why. Two numbers
    moving the right way are never enough: one seed's noise, a tautology or a mitigation that loses the task can
    all do that."""
    if record is None:
        return "not run yet"
    if not problem.claim:
        return f"not claimed: {problem.unclaimed}"
    row = claim_record(record, problem.claim)
    if row is None:
        return f"not in this record: the lesson's claim {problem.claim!r} (rerun the lesson)"
    verdict = str(row.get("verdict", ""))
    return f"{IMPROVED.get(verdict, verdict)} ('{problem.claim}': {verdict})"


def evidence(record: Mapping[str, Any] | None) -> str:
    """How a lesson's findings stand: its declared claims' verdicts over the seeds, or its older single-seed checks."""
    if record is None:
        return "not run yet"
    claims = record.get("claims") or []
    if claims:
        counts = {v: sum(c.get("verdict") == v for c in claims)
                  for v in ("held", "not reproduced", "undecided", "cannot tell", "mixed")}
        return ", ".join(f"{n} {v}" for v, n in counts.items() if n) + " (declared claims over the seeds)"
    checks = record.get("checks") or {}
    return f"{sum(map(bool, checks.values()))} of {len(checks)} single-seed checks held"


def scoreboard(records: Mapping[str, Mapping[str, Any]]):
    """Every declared claim of the lessons run so far (negative verdicts included), one row each: the test and the
    rule its threshold comes from, the control and its value, the verdict and any amendment (`claims.scoreboard_rows`,
    the one scoreboard `course report` and the site show too)."""
    import pandas as pd

    return pd.DataFrame(scoreboard_rows(records), columns=SCOREBOARD_COLUMNS)


# ---------------------------------------------------------------------------------------------------------------
# Choosing a recipe
# ---------------------------------------------------------------------------------------------------------------

GOALS = ("new_facts", "format", "classification")


@dataclass(frozen=True)
class Resources:
    """What the learner has: `gpu_gb` of GPU memory (0: CPU only, then `cpu_ram_gb` of RAM) and the model size."""

    gpu_gb: float = 0.0
    model_params: float = 1e6
    cpu_ram_gb: float = 8.0

    def __post_init__(self):
        for name in ("gpu_gb", "cpu_ram_gb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise CapstoneError(f"Resources.{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.model_params, (int, float)) or not self.model_params > 0:
            raise CapstoneError(f"Resources.model_params must be > 0, got {self.model_params!r}")

    @property
    def memory_gb(self) -> float:
        return self.gpu_gb if self.gpu_gb > 0 else self.cpu_ram_gb


@dataclass(frozen=True)
class TaskSpec:
    """What the learner wants: a goal (`GOALS`), how many training examples, and what must be kept."""

    goal: str = "new_facts"
    n_examples: int = 64
    keep_old_knowledge: bool = True
    needs_safety: bool = False

    def __post_init__(self):
        if self.goal not in GOALS:
            raise CapstoneError(f"TaskSpec.goal must be one of {GOALS}, got {self.goal!r}")
        if self.n_examples < 1:
            raise CapstoneError(f"TaskSpec.n_examples must be >= 1, got {self.n_examples}")


RECIPE_METHODS = ("full", "lora", "qlora")   # what `choose_recipe` can pick (qlora: LoRA over a 4-bit base)


@dataclass
class Recipe:
    method: str                       # one of RECIPE_METHODS
    rehearsal_ratio: float = 0.0      # share of old data mixed in (0 = none)
    early_stopping: bool = False
    dpo_afterwards: bool = False
    reasons: list[str] = field(default_factory=list)


def choose_recipe(resources: Resources, task: TaskSpec, records: Mapping[str, Mapping[str, Any]],
                  small_data: int = 500) -> Recipe:
    """Pick a method from the measured evidence; each choice appends the reason and the numbers behind it."""
    reasons = []
    full_state = Metric(L01, "grads+optimizer MB", {"method": "full", "family": "llama"}).read(records)
    lora_state = Metric(L01, "grads+optimizer MB", {"method": "lora", "family": "llama"}).read(records)
    ratio = lora_state / full_state if full_state and not math.isnan(full_state) else 0.05
    naive_new = Metric(L02, "final_new_recall", {"method": "naive"}).read(records)
    lora_new = Metric(L02, "final_new_recall", {"method": "lora"}).read(records)
    full_gb = needed_gb(resources.model_params, "full")
    fits_full = fits(full_gb, resources.memory_gb)  # gpu's rule: leave room for activations
    reasons.append(f"full FT needs about {full_gb:.3g} GB for weights and optimizer (16 bytes/parameter) of "
                   f"{resources.memory_gb:g} GB; LoRA's optimizer state was {ratio:.1%} of full FT's in lesson 01")
    if task.goal == "new_facts" and fits_full:
        method = "full"
        reasons.append(f"new facts: LoRA reached new-fact recall {lora_new:.2f} vs full FT {naive_new:.2f} "
                       f"(lesson 02), so full fine-tuning")
    elif not fits_full:
        method = "lora"
    else:
        method = "lora"
        full_ppl = Metric(L01, "answer_ppl", {"method": "full", "family": "llama"}).read(records)
        lora_ppl = Metric(L01, "answer_ppl", {"method": "lora", "family": "llama"}).read(records)
        reasons.append(f"{task.goal}: LoRA needs far less memory; its answer perplexity was {lora_ppl:.3g} against "
                       f"{full_ppl:.3g} for full FT at equal steps (lesson 01, Llama, mean over the seeds)")
    if method == "lora":
        lora_gb = needed_gb(resources.model_params, "lora", ratio)
        if not fits_full:
            reasons.append(f"full FT does not fit; LoRA needs about {lora_gb:.3g} GB of "
                           f"{resources.memory_gb:g} GB")
        method = fitting_method(resources.model_params, resources.memory_gb, "lora", ratio)  # LoRA, else QLoRA
        if method == "qlora" and resources.gpu_gb <= 0:
            raise CapstoneError(f"no method this machine can run fits: LoRA needs about {lora_gb:.3g} GB of "
                                f"{resources.memory_gb:g} GB of RAM, and QLoRA's 4-bit base needs a CUDA GPU "
                                "(bitsandbytes); use a smaller model, more memory or a GPU")
        if method != "lora":
            qlora_gb = needed_gb(resources.model_params, "qlora")
            if method is None:
                raise CapstoneError(f"no method fits: even a 4-bit base (QLoRA) needs about {qlora_gb:.3g} GB of "
                                    f"{resources.memory_gb:g} GB; use a smaller model or more memory")
            reasons.append(f"LoRA over a 16-bit base needs about {lora_gb:.3g} GB, more than fits: QLoRA (a 4-bit "
                           f"base) needs about {qlora_gb:.3g} GB")
    rehearsal = 0.0
    if task.keep_old_knowledge and method == "full":
        rehearsal, why = replay_share(records)
        reasons.append(why)
    early = False
    if task.n_examples < small_data:
        rise = Metric(L05, "rise", {"setting": "no mitigation"}).read(records)
        stopped = Metric(L05, "biography accuracy", {"setting": "early stopping"}).read(records)
        to_end = Metric(L05, "biography accuracy", {"setting": "no mitigation"}).read(records)
        early = rise > 0 and stopped >= to_end
        reasons.append(f"{task.n_examples} examples is small, and validation loss rose {rise:.3f} above its minimum "
                       f"(lesson 05); but the early-stopped model scored {stopped:.2f} on the task against {to_end:.2f} "
                       f"trained to the end, so {'stop early' if early else 'no early stopping on validation loss'}")
    if task.needs_safety:
        aligned = Metric(L08, "refusal", {"stage": "aligned"}).read(records)
        benign = Metric(L08, "refusal", {"stage": "benign"}).read(records)
        dpo = Metric(L08, "refusal", {"stage": "DPO"}).read(records)
        rpo = Metric(L08, "refusal", {"stage": "DPO + NLL"}).read(records)
        reasons.append(f"safety matters: benign fine-tuning moved the refusal rate {aligned:.2f} -> {benign:.2f} "
                       f"(lesson 08); afterwards plain DPO reached {dpo:.2f} and DPO + NLL {rpo:.2f}, so re-check "
                       f"and restore with {'DPO + NLL' if rpo > dpo else 'DPO'}")
    return Recipe(method, rehearsal, early, task.needs_safety, reasons)


def replay_share(records: Mapping[str, Mapping[str, Any]]) -> tuple[float, str]:
    """The replay share the recipe uses, read from lesson 02: the share its validation people chose most often over
    the seeds, used only if its claim "rehearsal forgets less" held there (with its control); else none. Returns
    (share, the reason with the numbers behind it)."""
    from collections import Counter

    claim = claim_record(records.get(L02), "rehearsal forgets less")
    table = (records.get(L02) or {}).get("table") or []
    chosen = [r["setting"] for r in table if r.get("method") == "rehearsal" and r.get("chosen on validation")]
    if claim is None or not chosen:
        return 0.0, "keep old knowledge: lesson 02's record has no validated replay share, so no rehearsal"
    if claim.get("verdict") != "held":
        return 0.0, f"keep old knowledge: lesson 02's claim 'rehearsal forgets less' was {claim.get('verdict')}, " \
                    "so no rehearsal"
    setting, times = Counter(chosen).most_common(1)[0]
    share = float(setting.split("%")[0]) / 100
    naive = Metric(L02, "forgot@target", {"method": "naive"}).read(records)
    kept = Metric(L02, "forgot@target", {"method": "rehearsal", "chosen on validation": True}).read(records)
    return share, (f"keep old knowledge: lesson 02's claim 'rehearsal forgets less' held; its validation people "
                   f"chose a replay share of {share:.0%} in {times} of {len(chosen)} seeds (old recall lost at the "
                   f"chosen shares {kept:.3f} vs {naive:.3f} naive), so rehearsal at {share:.0%}")


@dataclass
class RecipeConfig(CourseConfig):
    """How `run_recipe` trains: `steps` of `batch_size` at `learning_rate` (constant after `warmup_steps`), new- and
    old-fact recall measured every `eval_every` steps, early stopping (when the recipe asks for it) after
    `patience` evaluations without a lower validation loss; `seed` fixes the rehearsal mix and the data order."""

    LIMITS = {"patience": Limit(1, 10**4)}
    error = CapstoneError

    steps: int = 120
    learning_rate: float = 3e-3
    batch_size: int = 8
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_every: int = 10
    patience: int = 2
    seed: int = 0


def early_stopping_arguments(config: RecipeConfig) -> dict[str, Any]:
    """The `TrainingArguments` keywords early stopping needs: evaluate and save every `eval_every` steps and load
    the checkpoint with the lowest validation loss at the end (enough checkpoints kept for `patience`)."""
    return dict(eval_strategy="steps", eval_steps=config.eval_every, save_strategy="steps",
                save_steps=config.eval_every, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                greater_is_better=False, save_total_limit=config.patience + 2)


def recipe_model(recipe: Recipe, base_model):
    """The model `recipe` trains: a copy of `base_model`, whole for full fine-tuning, with a LoRA adapter for LoRA.

    A QLoRA recipe is refused: it needs the base loaded in 4 bits on a GPU (`gpu.plan(...).from_pretrained_kwargs()`),
    and training this 16-bit copy instead would silently change what the recipe measures."""
    if recipe.method not in RECIPE_METHODS:
        raise CapstoneError(f"run_recipe: unknown method {recipe.method!r}; a recipe picks one of {RECIPE_METHODS}")
    if recipe.method == "qlora":
        raise CapstoneError("run_recipe: a QLoRA recipe needs the base loaded in 4 bits on a GPU "
                            "(gpu.plan(...).from_pretrained_kwargs() with bitsandbytes); run_recipe trains a copy of "
                            "the model it is given, so load that and train it with peft_methods.apply_lora, or use 'lora'")
    model = copy.deepcopy(base_model)
    return apply_lora(model) if recipe.method == "lora" else model


def run_recipe(recipe: Recipe, base_model, tokenizer, new_texts: Sequence[str], val_texts: Sequence[str],
               old_texts: Sequence[str], measure, config: RecipeConfig = RecipeConfig()):
    """Train a copy of `base_model` as `recipe` says, with forgetting monitored; return (model, history, trainer).

    - method: full fine-tuning or LoRA (`recipe_model`; a QLoRA recipe is refused with the reason);
    - rehearsal: `old_texts` mixed into `new_texts` at `recipe.rehearsal_ratio` (`train.rehearsal_set`);
    - LoRA: an adapter on the attention matrices (`peft_methods.apply_lora`);
    - early stopping: `EarlyStoppingCallback` on the loss over `val_texts` (the new facts in a phrasing the
      training set does not use), keeping the best checkpoint (`load_best_model_at_end`);
    - forgetting: `train.ForgettingMonitor` calls `measure(model)` (old and new recall) every `config.eval_every`
      steps. The training settings are `config`'s (`RecipeConfig`).
    """
    if not new_texts:
        raise CapstoneError("run_recipe: no training texts")
    if recipe.early_stopping and not val_texts:
        raise CapstoneError("run_recipe: early stopping needs validation texts")
    model = recipe_model(recipe, base_model)
    texts = list(new_texts)
    if recipe.rehearsal_ratio > 0:
        texts = rehearsal_set(texts, old_texts, recipe.rehearsal_ratio, config.seed, config.steps, config.batch_size)
    monitor = ForgettingMonitor(measure, config.eval_every, {"method": recipe.method})
    extra: dict[str, Any] = {}
    callbacks: list[Any] = [monitor]
    if recipe.early_stopping:
        extra = early_stopping_arguments(config)
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    args = config.training_arguments(output_dir=tempfile.mkdtemp(prefix="course-capstone-"),
                                     logging_steps=config.steps, **extra)
    trainer = causal_lm_trainer(model, tokenizer, texts, args, callbacks,
                                eval_texts=val_texts if recipe.early_stopping else None)
    trainer.train()
    return trainer.model, monitor.history, trainer


def recipe_row(recipe: Recipe) -> dict[str, Any]:
    """A recipe as one table row (method, rehearsal, early stopping, DPO, and the first reason)."""
    return {"method": recipe.method, "rehearsal": f"{recipe.rehearsal_ratio:.0%}",
            "early stopping": recipe.early_stopping, "DPO afterwards": recipe.dpo_afterwards,
            "why (first reason)": recipe.reasons[1] if len(recipe.reasons) > 1 else ""}


def recipe_widget(records: Mapping[str, Mapping[str, Any]]) -> None:
    """ipywidgets controls (GPU memory, model size, goal, data size, keep/safety) that re-run `choose_recipe`."""
    import ipywidgets as w
    from IPython.display import display

    gpu = w.FloatSlider(value=0, min=0, max=80, step=4, description="GPU GB")
    size = w.Dropdown(options=[("1 M (tiny)", 1e6), ("124 M", 1.24e8), ("0.5 B", 5e8), ("7 B", 7e9)],
                      value=1e6, description="model")
    goal = w.Dropdown(options=GOALS, value="new_facts", description="goal")
    n = w.IntText(value=64, description="examples")
    keep, safety = w.Checkbox(value=True, description="keep old knowledge"), w.Checkbox(description="safety")
    out = w.Output()

    def update(*_):
        out.clear_output()
        with out:
            try:
                recipe = choose_recipe(Resources(gpu.value, size.value), TaskSpec(goal.value, max(n.value, 1),
                                                                                    keep.value, safety.value), records)
                print(f"{recipe.method}, rehearsal {recipe.rehearsal_ratio:.0%}, early stopping "
                      f"{recipe.early_stopping}, DPO afterwards {recipe.dpo_afterwards}")
                for reason in recipe.reasons:
                    print(" -", reason)
            except CourseError as err:
                print(err)

    for control in (gpu, size, goal, n, keep, safety):
        control.observe(update, names="value")
    update()
    display(w.VBox([w.HBox([gpu, size, goal]), w.HBox([n, keep, safety]), out]))


def plot_run(curves, base_old: float | None = None):
    """New-fact and old-fact recall against step, one line per run (recipe vs naive)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharex=True)
    for run, df in curves.groupby("run"):
        df = df.sort_values("step")
        axes[0].plot(df["step"], df["new_recall"], marker="o", label=run)
        axes[1].plot(df["step"], df["old_recall"], marker="o", label=run)
    if base_old is not None:
        axes[1].axhline(base_old, color="grey", ls="--", lw=1, label="base model")
    axes[0].set(title="learned: new-fact recall", xlabel="step", ylabel="recall")
    axes[1].set(title="kept: old-fact recall", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    return fig
