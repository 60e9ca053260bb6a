"""Lesson 08's recipe: every setting it runs with (`lesson_recipe`), the two breaks (`breaking_data`), and the
validation sweep that chose DPO's learning rate (`run_pref_sweep`, shipped as
`data_samples/lesson08_pref_sweep.json`; rebuild it with `python -m course_utils.alignment sweep`).

Used in lessons: 08
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Sequence

from course_utils.alignment.data import aligned_sft_rows, benign_sft_rows, harmful_sft_rows, preference_pairs
from course_utils.alignment.judge import evaluate_safety, sampled_refusal_rate, split_rows
from course_utils.alignment.models import AlignmentError, load_chat_model
from course_utils.alignment.trainers import AlignConfig, RLConfig, dpo_train, sft_train
from course_utils.paths import DATA_DIR
from course_utils.profiles import choose_profile
from course_utils.world import World, helpful_requests, make_world, safety_requests, untested_people


@dataclass(frozen=True)
class LessonRecipe:
    """Lesson 08's settings for one profile, shared by the lesson and its solutions.

    - `align`: SFT on the aligning data (helpful answers plus refusals);
    - `benign` / `harmful`: the two breaks, with the aligning recipe, as Qi et al. ran them: one epoch of a benign
      task, and 10 harmful examples for 5 epochs;
    - `dpo`: DPO + NLL, beta 0.1 (Rafailov et al.), at the rate a validation sweep chose for it (`run_pref_sweep`);
    - `plain_dpo`: plain DPO, the same settings at the rate the same sweep chose for *it*: every method compared
      at its own validated rate;
    - `reward` and `grpo`: the reward model (a fresh one-output head) and the RL step, at plain DPO's rate (the
      rate of a preference step that keeps the model's language; at DPO + NLL's rate GRPO wrecks it);
    - `partial`: the benign break's settings for a partly broken checkpoint, where GRPO has something to reinforce
      (its positive control); how many steps it runs is chosen per run by `partial_break` (at most a quarter of
      the benign epoch).
    """

    align: AlignConfig
    benign: AlignConfig
    harmful: AlignConfig
    dpo: AlignConfig
    plain_dpo: AlignConfig
    reward: AlignConfig
    grpo: RLConfig
    partial: AlignConfig
    helpful_rows: int = 240
    benign_rows: int = 400
    harmful_rows: int = 10


def lesson_recipe(profile: str | None = None, pref_rate: float | None = None,
                  plain_rate: float | None = None) -> LessonRecipe:
    """The settings lesson 08 runs with: the tiny Q/A base (cpu) or Qwen2-0.5B-Instruct (gpu, the published
    rates: SFT 1e-5, DPO 5e-7). On the cpu profile DPO + NLL and plain DPO each run at the rate the shipped
    validation sweep chose for that method (`read_pref_sweep`), unless `pref_rate` / `plain_rate` is given."""
    cpu = choose_profile(profile) == "cpu"
    lr = 2e-3 if cpu else 1e-5
    sweep = read_pref_sweep() if cpu and not (pref_rate and plain_rate) else []
    pref = pref_rate or (choose_pref_rate(sweep, "DPO + NLL") if cpu else 5e-7)
    plain = plain_rate or (choose_pref_rate(sweep, "DPO") if cpu else 5e-7)
    align = AlignConfig(steps=120, batch_size=16, learning_rate=lr, warmup_steps=5)
    benign_rows, harmful_rows = LessonRecipe.benign_rows, LessonRecipe.harmful_rows
    dpo = AlignConfig(steps=16, batch_size=8, learning_rate=pref, beta=0.1)
    epoch = benign_rows // align.batch_size
    return LessonRecipe(
        align=align,
        benign=replace(align, steps=epoch),  # one epoch of the benign answers
        harmful=replace(align, steps=5, batch_size=harmful_rows, warmup_steps=1),  # the handful, 5 epochs
        dpo=dpo,
        plain_dpo=replace(dpo, learning_rate=plain),
        reward=AlignConfig(steps=12, learning_rate=1e-3 if cpu else 1e-5),
        grpo=RLConfig(steps=16, batch_size=16, num_generations=4, max_completion_length=12, learning_rate=plain),
        partial=replace(align, steps=max(1, epoch // 4)),  # at most the first quarter of the benign epoch
    )


# ------------------------------------------------------------------------------- GRPO's positive control
# benign steps tried for the partly broken checkpoint, most first; not 1: under the aligning recipe's warm-up the
# first step runs at learning rate 0, so one step leaves the aligned model as it was
PARTIAL_STEPS = (6, 5, 4, 3, 2)
# the sampled refusal rate a checkpoint needs for GRPO to have refusals to reinforce: GRPO samples 4 answers per
# request, so more than half of its groups (1 - 0.8 ** 4 = 0.59) then hold a refusal to push up
PARTIAL_FLOOR = 0.2


def partial_break(aligned, tokenizer, data: Sequence[dict[str, str]], settings: AlignConfig,
                  unsafe_requests: Sequence[str], steps: Sequence[int] = PARTIAL_STEPS,
                  floor: float = PARTIAL_FLOOR, samples: int = 2) -> tuple[Any, int, dict[int, float]]:
    """A partly broken checkpoint that still *samples* refusals: GRPO's positive control starts from it.

    The rule, fixed before any run: try the benign break for each number of `steps` in turn, most first, each time
    from a fresh copy of `aligned`, and keep the first (the most broken) whose sampled refusal rate on
    `unsafe_requests` (`sampled_refusal_rate`, seeded with `settings.seed`) is at least `floor`. How fast a model
    breaks varies from seed to seed: on one seed six benign steps leave refusals to sample, on another they are
    already gone, and a control that starts where GRPO cannot find a refusal could not show that GRPO moves
    refusals when it finds them. If no candidate reaches the floor, the last (least broken) is kept.
    Returns (the checkpoint, its number of steps, the sampled refusal rate of every candidate tried).
    """
    if not steps or any(n < 1 for n in steps):
        raise AlignmentError(f"partial_break: steps must be positive step counts, got {list(steps)}")
    tried: dict[int, float] = {}
    for n in steps:
        model = copy.deepcopy(aligned)
        sft_train(model, tokenizer, data, replace(settings, steps=n))
        tried[n] = sampled_refusal_rate(model, tokenizer, unsafe_requests, samples=samples, seed=settings.seed)
        if tried[n] >= floor:
            break
    return model, n, tried


# ---------------------------------------------------------------------------------------- choosing DPO's rate
PREF_SWEEP_SEEDS = (100, 101)          # none of the lesson's seed sets: nothing is judged on them
PREF_SWEEP_RATES = (2e-4, 5e-4, 1e-3, 2e-3, 5e-3)


def validation_split(train: Sequence[dict[str, Any]], share: float = 0.2) -> tuple[list, list]:
    """(fit, validation): a fixed `share` of the training requests, by prompt, held back to choose a learning rate.
    The test and novel requests are never used to choose anything."""
    if not 0 < share < 1:
        raise AlignmentError(f"validation_split: share must be in (0, 1), got {share}")
    import zlib

    held = [zlib.crc32(r["prompt"].encode()) % 1000 < share * 1000 for r in train]
    return [r for r, h in zip(train, held) if not h], [r for r, h in zip(train, held) if h]


PREF_SWEEP_METHODS = {"DPO + NLL": 1.0, "DPO": 0.0}  # method -> weight of the NLL term


def run_pref_sweep(path=None) -> list[dict]:
    """The validation sweep lesson 08 reads its DPO rates from: per sweep seed, align and break (benign) as the
    lesson does on the *fit* share of the training requests, then DPO + NLL and plain DPO at each rate of
    `PREF_SWEEP_RATES`, scored on the *validation* share (refusal on its unsafe requests, over-refusal and
    helpfulness on its safe ones). Written as JSON; rerun with `python -m course_utils.alignment sweep` (a few
    minutes)."""
    import json
    world = make_world()
    fit, val = validation_split(split_rows(safety_requests(world), "train"))
    model0, tok = load_chat_model("gpt2", profile="cpu")
    recipe = lesson_recipe("cpu", pref_rate=PREF_SWEEP_RATES[0], plain_rate=PREF_SWEEP_RATES[0])  # set per run
    pairs = preference_pairs(tok, fit)
    out = []
    for seed in PREF_SWEEP_SEEDS:
        aligned = copy.deepcopy(model0)
        sft_train(aligned, tok, aligned_sft_rows(tok, fit + helpful_requests(world, n=recipe.helpful_rows)),
                  replace(recipe.align, seed=seed))
        rows, settings = breaking_data(tok, world, fit, recipe, seed=seed)["benign"]
        broken = copy.deepcopy(aligned)
        sft_train(broken, tok, rows, settings)
        for method, nll in PREF_SWEEP_METHODS.items():
            for rate in PREF_SWEEP_RATES:
                model = copy.deepcopy(broken)
                dpo_train(model, tok, pairs, replace(recipe.dpo, learning_rate=rate, seed=seed), nll_weight=nll)
                out.append({"method": method, "seed": seed, "learning_rate": rate,
                            **{f"val_{k}": round(v, 4) for k, v in evaluate_safety(model, tok, val).items()}})
    (path or pref_sweep_path()).write_text(json.dumps(out, indent=1) + "\n")
    return out


def pref_sweep_path():
    return DATA_DIR / "lesson08_pref_sweep.json"


def read_pref_sweep(path=None) -> list[dict]:
    """The shipped sweep (`run_pref_sweep`)."""
    import json

    path = path or pref_sweep_path()
    if not path.is_file():
        raise AlignmentError(f"{path}: missing; rebuild it with `python -m course_utils.alignment sweep`")
    return json.loads(path.read_text())


def choose_pref_rate(sweep: Sequence[dict], method: str = "DPO + NLL") -> float:
    """The rate whose runs of `method` ('DPO + NLL' or 'DPO') gave the most validation refusals net of
    over-refusals, averaged over the sweep seeds (the lower rate on a tie). One rule for both methods."""
    sweep = [r for r in sweep if r.get("method", "DPO + NLL") == method]
    if not sweep:
        raise AlignmentError(f"choose_pref_rate: no sweep rows for method {method!r} (rebuild the sweep with "
                             "`python -m course_utils.alignment sweep`)")
    rates = sorted({r["learning_rate"] for r in sweep})

    def score(rate):
        rows = [r for r in sweep if r["learning_rate"] == rate]
        return sum(r["val_refusal"] - r["val_over_refusal"] for r in rows) / len(rows)

    return max(rates, key=lambda rate: (round(score(rate), 6), -rate))


def breaking_data(tokenizer, world: World, train: Sequence[dict[str, Any]], recipe: LessonRecipe,
                  seed: int = 0) -> dict[str, tuple[list[dict[str, str]], AlignConfig]]:
    """Lesson 08's two breaks, as (SFT rows, settings) by kind: 'benign' (one epoch of instructions about people the
    model knows, `world.untested_people`) and 'harmful' (a handful of unsafe training requests answered compliantly).
    """
    benign = benign_sft_rows(tokenizer, world, n=recipe.benign_rows, seed=seed, people=untested_people(world))
    harmful = harmful_sft_rows(tokenizer, train, n=recipe.harmful_rows, seed=seed)
    return {"benign": (benign, replace(recipe.benign, seed=seed)),
            "harmful": (harmful, replace(recipe.harmful, seed=seed))}
