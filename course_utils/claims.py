"""Claims: what a lesson expects to find, declared before the experiment, and one verdict over the seeds.

A lesson reads like a paper. Before any training it declares each finding it will test:

- what the claim says, and the published figure it echoes (with its citation);
- the per-seed test: one measured number per seed (`measure`) compared with a threshold chosen for the science
  (`op`, `threshold`: "the drop in accuracy is at least 0.10"), never fitted to a run;
- the expectation: `holds`, `does not reproduce here`, or `mixed`.

After the experiment the lesson hands over one value per seed for each claim, and `verdicts` returns one table:
the value in each seed, the mean with a 95 % interval (Student's t over the seeds), in how many seeds the test held,
and the verdict (`held` in every seed, `not reproduced` in none, `mixed` otherwise). `check` then fails the
notebook exactly when a verdict differs from its declaration, naming the claim and its per-seed numbers: a claim
declared as not reproducing that starts to reproduce fails too, so the prose gets updated.

Used in lessons: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from course_utils.errors import CourseError, Limit, check_number
from course_utils.profiles import dry_run

EXPECTATIONS = ("holds", "does not reproduce here", "mixed")
VERDICTS = {"holds": "held", "does not reproduce here": "not reproduced", "mixed": "mixed"}
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class ClaimError(CourseError, ValueError):
    """A malformed claim, missing or non-finite measurements, or a verdict that differs from its declaration."""


@dataclass(frozen=True)
class Claim:
    """One finding, declared before the experiment that tests it.

    `measure` names the number computed in each seed (e.g. "accuracy drop, clean - 40 % label noise"); the claim
    holds in a seed when `value <op> threshold`.
    """

    name: str
    says: str
    published: str
    measure: str
    op: str
    threshold: float
    expect: str = "holds"

    def __post_init__(self) -> None:
        for field in ("name", "says", "measure"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ClaimError(f"Claim: {field} must be a non-empty string, got {value!r}")
        if not isinstance(self.published, str):
            raise ClaimError(f"Claim {self.name!r}: published must be a string (the cited figure, or '')")
        if self.op not in OPS:
            raise ClaimError(f"Claim {self.name!r}: op must be one of {sorted(OPS)}, got {self.op!r}")
        threshold = check_number(self.threshold, f"Claim {self.name!r}", "threshold", float, error=ClaimError)
        if type(self.threshold) not in (int, float):  # numpy's numbers become the Python number they equal
            object.__setattr__(self, "threshold", threshold)
        if self.expect not in EXPECTATIONS:
            raise ClaimError(f"Claim {self.name!r}: expect must be one of {EXPECTATIONS}, got {self.expect!r}")

    @property
    def test(self) -> str:
        """The per-seed test in words: '<measure> >= 0.1'."""
        return f"{self.measure} {self.op} {self.threshold:g}"

    def holds_in(self, value: float) -> bool:
        return bool(OPS[self.op](value, self.threshold))


def declare(*claims: Claim) -> list[Claim]:
    """The lesson's claims, checked for unique names; show `declaration_table(claims)` before the experiment."""
    if not claims:
        raise ClaimError("declare: no claims given")
    names = [c.name for c in claims]
    for c in claims:
        if not isinstance(c, Claim):
            raise ClaimError(f"declare: expected Claim objects, got {type(c).__name__}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ClaimError(f"declare: claim names must be unique, repeated: {dupes}")
    return list(claims)


def declaration_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """What each claim says, the published figure, the per-seed test and the expectation: the hypotheses."""
    return pd.DataFrame([{"claim": c.name, "says": c.says, "published": c.published, "per-seed test": c.test,
                          "we expect": c.expect} for c in claims]).set_index("claim")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` with a two-sided Student-t interval over them (NaN width for n=1).
    A NaN value is refused, except in a dry run, where an undefined measure makes all three NaN."""
    from scipy import stats

    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ClaimError(f"t_interval: values must be a non-empty list of numbers, got {values!r:.60}")
    level = check_number(level, "t_interval", "level", float, Limit(0, 1, True, True), ClaimError)
    if dry_run() and any(isinstance(v, numbers.Real) and math.isnan(v) for v in values):
        return math.nan, math.nan, math.nan  # stand-ins leave some measures undefined: shown, never asserted
    values = [check_number(v, "t_interval", f"value {i}", float, error=ClaimError) for i, v in enumerate(values)]
    n = len(values)
    mean = float(sum(values) / n)
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _values(claim: Claim, measured: Mapping[str, Mapping[Any, float]]) -> dict[Any, float]:
    if claim.name not in measured:
        raise ClaimError(f"verdicts: no measurements for claim {claim.name!r}")
    per_seed = measured[claim.name]
    if not isinstance(per_seed, Mapping) or not per_seed:
        raise ClaimError(f"verdicts: claim {claim.name!r} needs a dict {{seed: value}} with at least one seed")
    out = {}
    for seed, value in per_seed.items():
        if hasattr(value, "item") and not isinstance(value, numbers.Real):  # a one-element numpy or torch value
            try:
                value = value.item()
            except (ValueError, TypeError, RuntimeError):
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            shown = " ".join(repr(value)[:60].split())
            raise ClaimError(f"verdicts: claim {claim.name!r}, seed {seed}: value {shown} is not a number")
        value = float(value)
        if not math.isfinite(value):
            if dry_run():  # stand-ins that learn nothing leave some measures undefined; shown, never asserted
                continue
            raise ClaimError(f"verdicts: claim {claim.name!r}, seed {seed}: value is {value} (not finite)")
        out[seed] = value
    return out


def verdict_of(held: int, n: int) -> str:
    """'held' when the test held in every seed, 'not reproduced' in none, 'mixed' otherwise ('not measured' when no
    seed gave a finite value, which only a dry run allows)."""
    if n == 0:
        return "not measured"
    return "held" if held == n else "not reproduced" if held == 0 else "mixed"


def verdicts(claims: Sequence[Claim], measured: Mapping[str, Mapping[Any, float]]) -> pd.DataFrame:
    """One row per claim: per-seed values, mean and 95 % interval, seeds held (k of n), verdict, declaration."""
    rows = []
    for c in claims:
        values = _values(c, measured)
        held = sum(c.holds_in(v) for v in values.values())
        mean, low, high = t_interval(list(values.values())) if values else (math.nan, math.nan, math.nan)
        rows.append({"claim": c.name, "per-seed test": c.test, "we expect": c.expect,
                     "values": {str(s): round(v, 4) for s, v in values.items()},
                     "mean": mean, "95% low": low, "95% high": high,
                     "held in": f"{held} of {len(values)}", "verdict": verdict_of(held, len(values)),
                     "as declared": verdict_of(held, len(values)) == VERDICTS[c.expect],
                     "published": c.published})
    return pd.DataFrame(rows).set_index("claim")


def check(table: pd.DataFrame) -> None:
    """Fail, naming each claim and its per-seed numbers, when a verdict differs from what was declared."""
    wrong = table[~table["as declared"]]
    if len(wrong) == 0 or dry_run():
        return
    lines = [f"{name}: declared '{row['we expect']}', verdict '{row['verdict']}' ({row['held in']}; "
             f"{row['per-seed test']}; per seed {row['values']})" for name, row in wrong.iterrows()]
    raise ClaimError("claims whose verdict differs from the declaration: " + " | ".join(lines))


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The verdict table as plain rows for `results.save_results(claims=...)` (and the course scoreboard)."""
    out = []
    for name, row in table.iterrows():
        rec = {"claim": name, **{k: row[k] for k in table.columns}}
        for key in ("mean", "95% low", "95% high"):
            rec[key] = None if rec[key] is None or (isinstance(rec[key], float) and math.isnan(rec[key])) \
                else round(float(rec[key]), 4)
        rec["as declared"] = bool(rec["as declared"])
        out.append(rec)
    return out


def interval_text(mean: float, low: float, high: float) -> str:
    """'0.412 [0.380, 0.444]': a mean and its 95 % interval, three decimals; the mean alone when the interval is
    undefined (one seed). Every interval the course prints is written by this one function."""
    return f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def mean_ci(values) -> str:
    """`interval_text` of the mean of `values` (a list, a Series, or one number when one seed ran) with its
    Student-t interval (`t_interval`)."""
    return interval_text(*t_interval(list(np.atleast_1d(values))))


def measured_table(table: pd.DataFrame) -> pd.DataFrame:
    """The 'what we measured' table a lesson ends with: claim, our mean and interval, seeds held, verdict."""
    def interval(row) -> str:
        return interval_text(row["mean"], row["95% low"], row["95% high"])

    return pd.DataFrame({"published": table["published"], "our mean [95% interval]": table.apply(interval, axis=1),
                         "held in": table["held in"], "verdict": table["verdict"]})


def measured_from_rows(rows: Iterable[Mapping[str, Any]], seed_key: str = "seed", **columns: str) -> dict[str, dict]:
    """The `measured` argument of `verdicts`, {claim name: {seed: value}}, from rows that each carry a seed and
    named columns: `measured_from_rows(rows, gap="label gap (gpt2)")` maps column `gap` of each row to that claim,
    keyed by the row's seed.
    """
    out: dict[str, dict] = {name: {} for name in columns.values()}
    for row in rows:
        for column, name in columns.items():
            out[name][row[seed_key]] = row[column]
    return out


__all__ = ["Claim", "ClaimError", "EXPECTATIONS", "check", "declaration_table", "declare", "interval_text", "mean_ci",
           "measured_from_rows", "measured_table", "records", "t_interval", "verdict_of", "verdicts"]
