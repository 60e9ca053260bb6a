"""Claims: what a lesson expects to find, declared before the experiment, with a control, and one verdict from the
interval over the seeds.

A lesson reads like a paper. Before any training it declares each finding it will test:

- what the claim says, and the published figure it echoes (with its citation);
- the per-seed test: one measured number per seed (`measure`) compared with a threshold (`op`, `threshold`: "the
  drop in accuracy is at least 0.10"), and the **rule** the threshold comes from (a fraction of the published
  effect, chance, the clean-rerun floor, a precondition), never fitted to a run;
- the expectation: `holds`, or `does not reproduce here`;
- the **control**, run in the same experiment: for a claim expected to hold, a *negative* control where the effect
  cannot be present (the method off, rate 0, the base model, shuffled pairings, the analytic null); for a claim
  expected not to reproduce, a *positive* control where the effect is present by construction. A control tells
  whether the test can see what it claims to see;
- any **amendment**: a declaration changed after seeing a run keeps its history (was, now, why, date).

After the experiment the lesson hands over the claim's value per seed and the control's value, and `verdicts`
returns one table. The verdict comes from the mean and its 95 % interval (Student's t over the seeds):

- `held` when the whole interval lies on the claim's side of the threshold;
- `not reproduced` when it lies wholly on the other side;
- `undecided` when it straddles the threshold (the claim is underpowered on these seeds);
- `cannot tell` when the control reaches the verdict it rules out: a negative control that is `held`, or a positive
  control that is `not reproduced`. The test cannot see what it claims to see, whatever the claim's own numbers.

A measure into which nothing random enters (memory from the shapes, an analytic null) is computed once and handed
over as one number: it is one measurement, not a finding over seeds, shown as such and judged by its value. `check` then fails the notebook:

- on the lesson's default seeds, when any verdict differs from its declaration (CI catches drift);
- on other seeds (`COURSE_SEEDS`), only when a claim reaches the *opposite* decided verdict; `undecided` there is a
  visible warning in the table, saved with the results;
- on any seeds, when a control misbehaves (`cannot tell`).

Lessons that have not yet been moved onto controls declare their claims with `pending=` naming the issue that moves
them; those claims are judged by the earlier rule (the test held in every seed: `held`, in none: `not reproduced`,
else `mixed`) and every table says so.

Used in lessons: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from course_utils.errors import CourseError, Limit, check_number
from course_utils.profiles import default_seeds_in_use, dry_run

EXPECTATIONS = ("holds", "does not reproduce here")
VERDICTS = {"holds": "held", "does not reproduce here": "not reproduced"}
OPPOSITE = {"held": "not reproduced", "not reproduced": "held"}
CONTROL_KINDS = {"holds": "negative", "does not reproduce here": "positive"}
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
# The other side of each test: the interval lies wholly there when every value in it fails the test.
FAILS = {">": operator.le, ">=": operator.lt, "<": operator.ge, "<=": operator.gt}
ONE_MEASUREMENT = "one measurement"  # the 'held in' text of a measure that does not vary with the seed
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ClaimError(CourseError, ValueError):
    """A malformed claim, missing or non-finite measurements, or a verdict that differs from its declaration."""


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ClaimError(f"{where}: {field} must be a non-empty string, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class Amendment:
    """A declaration changed after seeing a run: what the test was, what it is now, the evidence that moved it, and
    the date. Kept on the claim for ever, so every table shows that the claim was amended and how."""

    was: str
    now: str
    why: str
    date: str

    def __post_init__(self) -> None:
        for field in ("was", "now", "why", "date"):
            _text(getattr(self, field), "Amendment", field)
        if not _DATE.fullmatch(self.date):
            raise ClaimError(f"Amendment: date must be YYYY-MM-DD, got {self.date!r}")

    @property
    def text(self) -> str:
        """'2026-11-30: was <old test>; now <new test>; why: <evidence>'."""
        return f"{self.date}: was {self.was}; now {self.now}; why: {self.why}"


@dataclass(frozen=True)
class Claim:
    """One finding, declared before the experiment that tests it.

    `measure` names the number computed in each seed (e.g. "accuracy drop, clean - 40 % label noise"); the test
    is `value <op> threshold`, and `rule` says where the threshold comes from. `control` describes the setting, run
    in the same experiment, where the outcome is known in advance (negative for a claim that should hold, positive
    for one that should not reproduce). `pending` names the issue that will give a claim its control; until then
    the claim is judged by the earlier all-seeds rule and every table says so.
    """

    name: str
    says: str
    published: str
    measure: str
    op: str
    threshold: float
    expect: str = "holds"
    rule: str = ""
    control: str = ""
    amendments: tuple = ()
    pending: str = ""

    def __post_init__(self) -> None:
        for field in ("name", "says", "measure"):
            _text(getattr(self, field), "Claim", field)
        where = f"Claim {self.name!r}"
        for field in ("published", "rule", "control", "pending"):
            if not isinstance(getattr(self, field), str):
                raise ClaimError(f"{where}: {field} must be a string, got {type(getattr(self, field)).__name__}")
        if self.op not in OPS:
            raise ClaimError(f"{where}: op must be one of {sorted(OPS)}, got {self.op!r}")
        threshold = check_number(self.threshold, where, "threshold", float, error=ClaimError)
        if type(self.threshold) not in (int, float):  # numpy's numbers become the Python number they equal
            object.__setattr__(self, "threshold", threshold)
        if self.expect not in EXPECTATIONS:
            raise ClaimError(f"{where}: expect must be one of {EXPECTATIONS}, got {self.expect!r}")
        amendments = tuple(self.amendments) if isinstance(self.amendments, (list, tuple)) else None
        if amendments is None or not all(isinstance(a, Amendment) for a in amendments):
            raise ClaimError(f"{where}: amendments must be a list of Amendment records, got {self.amendments!r:.60}")
        object.__setattr__(self, "amendments", amendments)

    @property
    def test(self) -> str:
        """The per-seed test in words: '<measure> >= 0.1'."""
        return f"{self.measure} {self.op} {self.threshold:g}"

    @property
    def control_kind(self) -> str:
        """'negative' for a claim expected to hold (its control must not be held), 'positive' otherwise."""
        return CONTROL_KINDS[self.expect]

    @property
    def amended(self) -> str:
        """Every amendment, oldest first, as one line each ('' when the declaration is as first made)."""
        return "\n".join(a.text for a in self.amendments)

    def holds_in(self, value: float) -> bool:
        return bool(OPS[self.op](value, self.threshold))


AMENDMENTS_FILE = Path(__file__).with_name("claim_amendments.json")


def recorded_amendments(lesson: str) -> dict[str, tuple[Amendment, ...]]:
    """The course's record of every declaration changed after a run (`claim_amendments.json`), for one lesson
    ("04"): {claim name: its amendments, oldest first}. Appended to, never rewritten."""
    record = json.loads(AMENDMENTS_FILE.read_text(encoding="utf-8"))
    out: dict[str, tuple[Amendment, ...]] = {}
    for row in record["amended"].get(lesson, []):
        amendment = Amendment(row["was"], row["now"], f"{row['why']} ({row['commit']})", row["date"])
        out[row["claim"]] = out.get(row["claim"], ()) + (amendment,)
    return out


def declare(*claims: Claim, pending: str = "", lesson: str = "") -> list[Claim]:
    """The lesson's claims, checked; show `declaration_table(claims)` before the experiment.

    Each claim needs a threshold rule and a control. `lesson` ("04") attaches the amendments the course's record
    holds for its claims, so a changed declaration is shown as such wherever the claim is. `pending` (the issue
    that will add controls, e.g. "issue 35") is the transition for lessons not yet moved onto them: their claims
    are judged by the earlier all-seeds rule, and every table says so."""
    if not claims:
        raise ClaimError("declare: no claims given")
    for c in claims:
        if not isinstance(c, Claim):
            raise ClaimError(f"declare: expected Claim objects, got {type(c).__name__}")
    names = [c.name for c in claims]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ClaimError(f"declare: claim names must be unique, repeated: {dupes}")
    if not isinstance(pending, str):
        raise ClaimError(f"declare: pending must be a string naming an issue, got {type(pending).__name__}")
    history = recorded_amendments(lesson) if lesson else {}
    out = []
    for c in claims:
        if c.name in history:
            c = replace(c, amendments=history[c.name] + c.amendments)
        if pending.strip() and not c.pending and not (c.rule.strip() and c.control.strip()):
            c = replace(c, pending=pending.strip())
        if not c.pending:
            for field, what in (("rule", "the rule its threshold comes from"),
                                ("control", f"its {c.control_kind} control")):
                if not getattr(c, field).strip():
                    raise ClaimError(f"declare: claim {c.name!r} has no {field} ({what}); every claim needs one")
        out.append(c)
    return out


def control_text(claim: Claim) -> str:
    """'negative: <setting>', or the issue that will give a pending claim its control."""
    if claim.pending:
        return f"none yet ({claim.pending})"
    return f"{claim.control_kind}: {claim.control}"


def declaration_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """The hypotheses: what each claim says, the published figure, the per-seed test and the rule its threshold
    comes from, the control, the expectation, and any amendment."""
    return pd.DataFrame([{"claim": c.name, "says": c.says, "published": c.published, "per-seed test": c.test,
                          "threshold rule": c.rule or f"not stated yet ({c.pending})", "control": control_text(c),
                          "we expect": c.expect, "amended": c.amended} for c in claims]).set_index("claim")


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


def _number(value: Any, where: str) -> float | None:
    """A finite float, None for an undefined value in a dry run, else a one-line error."""
    if hasattr(value, "item") and not isinstance(value, numbers.Real):  # a one-element numpy or torch value
        try:
            value = value.item()
        except (ValueError, TypeError, RuntimeError):
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = " ".join(repr(value)[:60].split())
        raise ClaimError(f"verdicts: {where}: value {shown} is not a number")
    value = float(value)
    if not math.isfinite(value):
        if dry_run():  # stand-ins that learn nothing leave some measures undefined; shown, never asserted
            return None
        raise ClaimError(f"verdicts: {where}: value is {value} (not finite)")
    return value


def _values(name: str, given: Any, what: str = "") -> dict[Any, float] | float | None:
    """{seed: value} for a measure over seeds, or one float for a single measurement (a plain number given)."""
    if isinstance(given, numbers.Real) or (hasattr(given, "item") and not isinstance(given, Mapping)):
        return _number(given, f"claim {name!r}{what}")
    if not isinstance(given, Mapping) or not given:
        raise ClaimError(f"verdicts: claim {name!r}{what} needs a dict {{seed: value}} with at least one seed, "
                         "or one number")
    out = {}
    for seed, value in given.items():
        value = _number(value, f"claim {name!r}{what}, seed {seed}")
        if value is not None:
            out[seed] = value
    return out


def interval_verdict(op: str, threshold: float, low: float, high: float) -> str:
    """'held' when [low, high] lies wholly on the test's side of `threshold`, 'not reproduced' when wholly on the
    other side, 'undecided' when it straddles it (a boundary value counts on the side the operator puts it)."""
    if op not in OPS:
        raise ClaimError(f"interval_verdict: op must be one of {sorted(OPS)}, got {op!r}")
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    if OPS[op](low, threshold) and OPS[op](high, threshold):
        return "held"
    if FAILS[op](low, threshold) and FAILS[op](high, threshold):
        return "not reproduced"
    return "undecided"


def verdict_of(held: int, n: int) -> str:
    """The earlier all-seeds rule, kept for claims pending their controls: 'held' when the test held in every seed,
    'not reproduced' in none, 'mixed' otherwise ('not measured' when no seed gave a finite value)."""
    if n == 0:
        return "not measured"
    return "held" if held == n else "not reproduced" if held == 0 else "mixed"


@dataclass(frozen=True)
class Judged:
    """One measure judged against a claim's test: mean, interval, 'k of n' (or 'one measurement'), verdict."""

    values: dict
    mean: float
    low: float
    high: float
    held_in: str
    verdict: str


def judge(claim: Claim, values: dict[Any, float] | float | None, all_seeds_rule: bool = False) -> Judged:
    """The verdict of one measure under `claim`'s test: from the 95 % interval over the seeds, or from the value when
    it is one measurement (a number, not {seed: value}); `all_seeds_rule`: the earlier rule, for pending claims."""
    if values is None or (isinstance(values, dict) and not values):
        return Judged({}, math.nan, math.nan, math.nan, "0 of 0", "not measured")
    if isinstance(values, dict):
        seeds = {str(s): round(v, 4) for s, v in values.items()}
        numbers_ = list(values.values())
    else:
        seeds, numbers_ = {}, [values]
    held = sum(claim.holds_in(v) for v in numbers_)
    if all_seeds_rule:
        mean, low, high = t_interval(numbers_)
        return Judged(seeds, mean, low, high, f"{held} of {len(numbers_)}", verdict_of(held, len(numbers_)))
    if not isinstance(values, dict):
        value = numbers_[0]
        return Judged(seeds, value, math.nan, math.nan, ONE_MEASUREMENT,
                      "held" if claim.holds_in(value) else "not reproduced")
    mean, low, high = t_interval(numbers_)
    return Judged(seeds, mean, low, high, f"{held} of {len(numbers_)}",
                  interval_verdict(claim.op, claim.threshold, low, high))


def control_misbehaves(claim: Claim, control: Judged) -> bool:
    """A negative control the test calls `held`, or a positive control it calls `not reproduced`: either way the
    test cannot see what the claim says it sees."""
    ruled_out = "held" if claim.control_kind == "negative" else "not reproduced"
    return control.verdict == ruled_out


def verdicts(claims: Sequence[Claim], measured: Mapping[str, Any], controls: Mapping[str, Any] | None = None,
             default_seeds: bool | None = None) -> pd.DataFrame:
    """One row per claim: per-seed values, mean and 95 % interval, seeds held (k of n), the control's value and
    verdict, the claim's verdict, whether it is as declared, and any warning.

    `measured[name]` and `controls[name]` are {seed: value}, or one number for a single measurement (an analytic
    null, a control that does not vary with the seed). `default_seeds`: whether the lesson ran on its default
    seeds (read from `COURSE_SEEDS` when not given); it decides what `check` fails on."""
    controls = {} if controls is None else controls
    if not isinstance(measured, Mapping) or not isinstance(controls, Mapping):
        raise ClaimError("verdicts: measured and controls must be dicts {claim name: values}")
    default = default_seeds_in_use() if default_seeds is None else bool(default_seeds)
    rows = []
    for c in claims:
        if c.name not in measured:
            raise ClaimError(f"verdicts: no measurements for claim {c.name!r}")
        own = judge(c, _values(c.name, measured[c.name]), all_seeds_rule=bool(c.pending))
        verdict, control_shown = own.verdict, f"none yet ({c.pending})"
        if not c.pending:
            if c.name not in controls:
                raise ClaimError(f"verdicts: no control value for claim {c.name!r} (declared control: {c.control})")
            control = judge(c, _values(c.name, controls[c.name], " (control)"))
            shown = _row_interval({"mean": control.mean, "95% low": control.low, "95% high": control.high,
                                   "held in": control.held_in})
            control_shown = f"{shown}: {control.verdict}"
            if control_misbehaves(c, control) and verdict != "not measured":
                verdict = "cannot tell"
        expected = VERDICTS[c.expect]
        warning = ""
        if verdict == "cannot tell":
            warning = f"the {c.control_kind} control came out {control.verdict}: the test cannot see the effect"
        elif verdict == "undecided" and not default:
            warning = "undecided on these seeds: the interval straddles the threshold"
        rows.append({"claim": c.name, "per-seed test": c.test, "threshold rule": c.rule or "not stated yet",
                     "we expect": c.expect, "values": own.values, "mean": own.mean, "95% low": own.low,
                     "95% high": own.high, "held in": own.held_in, "control": control_text(c),
                     "control value": control_shown, "verdict": verdict, "as declared": verdict == expected,
                     "warning": warning, "amended": c.amended, "judged by": judged_by(c),
                     "published": c.published})
    table = pd.DataFrame(rows).set_index("claim")
    table.attrs["default seeds"] = default
    return table


def judged_by(claim: Claim) -> str:
    """How the verdict was reached: the interval rule, or (pending claims) the earlier all-seeds rule."""
    return f"all-seeds rule, no control yet ({claim.pending})" if claim.pending else "95 % interval"


def problems(table: pd.DataFrame, default_seeds: bool | None = None) -> tuple[list[str], list[str]]:
    """(failures, warnings) of a verdict table: what `check` raises on and what it only shows."""
    default = table.attrs.get("default seeds", default_seeds_in_use()) if default_seeds is None else default_seeds
    failures, warnings_ = [], []
    for name, row in table.iterrows():
        said = (f"{name}: declared '{row['we expect']}', verdict '{row['verdict']}' ({row['held in']}; "
                f"{row['per-seed test']}; per seed {row['values']}; control {row['control value']})")
        pending = row.get("judged by", "").startswith("all-seeds")
        if row["verdict"] == "cannot tell":
            failures.append(said + ": the control shows the test cannot see the effect")
        elif pending or default:
            if not row["as declared"]:
                failures.append(said)
        elif OPPOSITE.get(row["verdict"]) == VERDICTS[row["we expect"]]:
            failures.append(said + ": the opposite verdict, on other seeds")
        elif row["verdict"] == "undecided":
            warnings_.append(said)
    return failures, warnings_


def check(table: pd.DataFrame, default_seeds: bool | None = None) -> None:
    """Fail, naming each claim and its numbers, when a verdict differs from its declaration on the default seeds,
    reaches the opposite verdict on other seeds, or a control misbehaves; print a warning for each claim undecided
    on other seeds. A dry run shows everything and asserts nothing."""
    failures, warnings_ = problems(table, default_seeds)
    for line in warnings_:
        print(f"WARNING, undecided on these seeds (not a failure off the default seeds): {line}")
    if failures and not dry_run():
        raise ClaimError("claims whose verdict differs from the declaration: " + " | ".join(failures))


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


def _row_interval(row: Mapping[str, Any]) -> str:
    """A verdict row's (or a judged control's) mean and interval as `interval_text` writes them, 'one measurement'
    where it is one, 'not measured' where there is no value."""
    mean, low, high = (row.get(k) for k in ("mean", "95% low", "95% high"))
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "not measured"
    nan = lambda v: math.nan if v is None else float(v)  # noqa: E731 - a saved record writes NaN as null
    text = interval_text(float(mean), nan(low), nan(high))
    return text + (f" ({ONE_MEASUREMENT})" if row.get("held in") == ONE_MEASUREMENT else "")


def measured_table(table: pd.DataFrame) -> pd.DataFrame:
    """The 'what we measured' table a lesson ends with: claim, our mean and interval, seeds held, the control's
    value, verdict, and whether the claim was amended."""
    return pd.DataFrame({"published": table["published"],
                         "our mean [95% interval]": table.apply(_row_interval, axis=1),
                         "held in": table["held in"], "control": table["control value"],
                         "verdict": table["verdict"],
                         "amended": table["amended"].map(lambda a: "yes: " + a.splitlines()[-1][:10] if a else "")})


SCOREBOARD_COLUMNS = ["lesson", "claim", "published", "per-seed test", "threshold rule", "control",
                      "control value", "our mean [95% interval]", "held in", "verdict", "as declared", "amended"]


def scoreboard_rows(records_by_lesson: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every saved claim of every lesson, one row each, in the columns of `SCOREBOARD_COLUMNS`: the test with its
    threshold rule, the control and its value, the verdict and any amendment (records saved before controls existed
    say 'not recorded'). The one scoreboard the capstone, `course report` and the site all show."""
    rows = []
    for lesson, record in records_by_lesson.items():
        for c in record.get("claims") or []:
            rows.append({"lesson": lesson.split("_")[0], "claim": c.get("claim", ""),
                         "published": c.get("published", ""), "per-seed test": c.get("per-seed test", ""),
                         "threshold rule": c.get("threshold rule", "not recorded"),
                         "control": c.get("control", "not recorded"),
                         "control value": c.get("control value", "not recorded"),
                         "our mean [95% interval]": _row_interval(c), "held in": c.get("held in", ""),
                         "verdict": c.get("verdict", ""), "as declared": c.get("as declared"),
                         "amended": c.get("amended", "")})
    return rows


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


__all__ = ["Amendment", "Claim", "ClaimError", "EXPECTATIONS", "Judged", "ONE_MEASUREMENT", "SCOREBOARD_COLUMNS",
           "check", "control_misbehaves", "control_text", "declaration_table", "declare", "interval_text",
           "interval_verdict", "judge", "judged_by", "mean_ci", "recorded_amendments", "measured_from_rows", "measured_table", "problems",
           "records", "scoreboard_rows", "t_interval", "verdict_of", "verdicts"]
