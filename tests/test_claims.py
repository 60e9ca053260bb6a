"""Claims declared before the experiment with a threshold rule and a control, verdicts from the 95 % interval, and
a failure exactly when a verdict contradicts its declaration (or a control shows the test is blind)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from course_utils import claims as C

RULE = "half the published gap"


def claim(expect="holds", op=">=", threshold=0.1, name="gap", **kw):
    return C.Claim(name, "label noise costs most", "Li & Sen 2026: -21 points", "accuracy drop", op, threshold,
                   expect, **{"rule": RULE, "control": "noise rate 0", **kw})


def legacy(expect="holds", name="gap"):
    """A claim of a lesson not yet moved onto controls: judged by the all-seeds rule."""
    return C.declare(C.Claim(name, "s", "", "accuracy drop", ">=", 0.1, expect), pending="issue 35")[0]


@pytest.fixture(autouse=True)
def _asserting(monkeypatch):
    monkeypatch.delenv("COURSE_REHEARSAL", raising=False)
    monkeypatch.delenv("COURSE_SEEDS", raising=False)


NULL = {0: 0.0, 1: 0.01, 2: -0.01}  # a negative control: no effect


# -- verdicts from the interval ---------------------------------------------------------------------------------

def test_verdict_is_held_only_when_the_whole_interval_is_on_the_claims_side():
    table = C.verdicts([claim(), claim(name="low"), claim(name="straddles")],
                       {"gap": {0: 0.2, 1: 0.3, 2: 0.25}, "low": {0: 0.0, 1: 0.02, 2: 0.01},
                        "straddles": {0: 0.2, 1: 0.15, 2: 0.05}}, {"gap": NULL, "low": NULL, "straddles": NULL})
    assert list(table["verdict"]) == ["held", "not reproduced", "undecided"]
    assert table.loc["straddles", "held in"] == "2 of 3"  # k of n stays in the table
    assert list(table["as declared"]) == [True, False, False]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=8), st.floats(-10, 10),
       st.sampled_from([">", ">=", "<", "<="]))
def test_interval_verdict_boundaries_agree_with_scipy(values, threshold, op):
    mean, sem = np.mean(values), stats.sem(values)
    if not sem > 0:
        return
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    if min(abs(low - threshold), abs(high - threshold)) < 1e-6:
        return  # on the boundary within float error: the operator decides, tested below
    c = C.Claim("x", "s", "", "m", op, threshold, rule="r", control="c")
    verdict = C.judge(c, dict(enumerate(values))).verdict
    side = {">": low > threshold, ">=": low > threshold, "<": high < threshold, "<=": high < threshold}[op]
    other = {">": high < threshold, ">=": high < threshold, "<": low > threshold, "<=": low > threshold}[op]
    assert verdict == ("held" if side else "not reproduced" if other else "undecided")


def test_a_boundary_value_counts_on_the_side_its_operator_puts_it():
    assert C.interval_verdict(">=", 1.0, 1.0, 2.0) == "held"
    assert C.interval_verdict(">", 1.0, 1.0, 2.0) == "undecided"
    assert C.interval_verdict(">", 1.0, 0.0, 1.0) == "not reproduced"
    assert C.interval_verdict(">=", 1.0, 0.0, 1.0) == "undecided"
    assert C.interval_verdict("<=", 1.0, 0.0, 1.0) == "held"
    assert C.interval_verdict("<", 1.0, 1.0, 3.0) == "not reproduced"
    assert C.interval_verdict("<", 1.0, math.nan, math.nan) == "undecided"  # one seed: no interval


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12))
def test_interval_matches_scipy(values):
    mean, low, high = C.t_interval(values)
    sem = stats.sem(values)
    if sem == 0 or not math.isfinite(sem):
        assert low == pytest.approx(mean) and high == pytest.approx(mean)
        return
    ref_low, ref_high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert mean == pytest.approx(np.mean(values), abs=1e-9)
    assert low == pytest.approx(ref_low, rel=1e-6, abs=1e-9) and high == pytest.approx(ref_high, rel=1e-6, abs=1e-9)


# -- controls ---------------------------------------------------------------------------------------------------

def test_a_negative_control_that_passes_a_holds_test_makes_cannot_tell_and_fails_on_any_seeds(monkeypatch):
    measured = {"gap": {0: 0.2, 1: 0.3, 2: 0.25}}
    blind = C.verdicts([claim()], measured, {"gap": {0: 0.2, 1: 0.22, 2: 0.21}})
    assert blind.loc["gap", "verdict"] == "cannot tell" and "control" in blind.loc["gap", "warning"]
    with pytest.raises(C.ClaimError, match="gap: .*cannot see the effect"):
        C.check(blind)
    monkeypatch.setenv("COURSE_SEEDS", "7,8,9")
    with pytest.raises(C.ClaimError, match="cannot see the effect"):
        C.check(C.verdicts([claim()], measured, {"gap": {0: 0.2, 1: 0.22, 2: 0.21}}))


def test_a_positive_control_that_fails_a_does_not_reproduce_test_makes_cannot_tell():
    c = claim(expect="does not reproduce here", control="label noise 100 %")
    table = C.verdicts([c], {"gap": NULL}, {"gap": {0: 0.01, 1: 0.0, 2: 0.02}})
    assert table.loc["gap", "verdict"] == "cannot tell"
    with pytest.raises(C.ClaimError, match="cannot see the effect"):
        C.check(table)
    good = C.verdicts([c], {"gap": NULL}, {"gap": {0: 0.4, 1: 0.5, 2: 0.45}})
    assert good.loc["gap", "verdict"] == "not reproduced" and good.loc["gap", "as declared"]
    assert "held" in good.loc["gap", "control value"] and good.loc["gap", "control"].startswith("positive: ")
    C.check(good)


def test_an_undecided_negative_control_is_fine_the_test_simply_does_not_call_it_held():
    table = C.verdicts([claim()], {"gap": {0: 0.2, 1: 0.3, 2: 0.25}}, {"gap": {0: 0.0, 1: 0.2, 2: 0.1}})
    assert table.loc["gap", "verdict"] == "held"


def test_every_claim_needs_a_rule_and_a_control_unless_pending():
    bare = C.Claim("x", "s", "", "m", ">", 0.0)
    with pytest.raises(C.ClaimError, match="claim 'x' has no rule"):
        C.declare(bare)
    with pytest.raises(C.ClaimError, match="claim 'x' has no control \\(its negative control\\)"):
        C.declare(C.Claim("x", "s", "", "m", ">", 0.0, rule="chance"))
    with pytest.raises(C.ClaimError, match="no control value for claim 'gap'"):
        C.verdicts([claim()], {"gap": NULL})
    pending = C.declare(bare, pending="issue 35")[0]
    assert pending.pending == "issue 35"
    assert C.declaration_table([pending]).loc["x", "control"] == "none yet (issue 35)"


# -- what fails, on which seeds ---------------------------------------------------------------------------------

def test_on_default_seeds_any_verdict_other_than_the_declared_one_fails():
    table = C.verdicts([claim()], {"gap": {0: 0.2, 1: 0.15, 2: 0.05}}, {"gap": NULL})
    with pytest.raises(C.ClaimError, match=r"gap: declared 'holds', verdict 'undecided' \(2 of 3.*0\.05"):
        C.check(table)
    reproduces = C.verdicts([claim(expect="does not reproduce here")], {"gap": {0: 0.3, 1: 0.35, 2: 0.4}},
                            {"gap": {0: 0.5, 1: 0.4, 2: 0.45}})
    with pytest.raises(C.ClaimError, match="declared 'does not reproduce here', verdict 'held'"):
        C.check(reproduces)


def test_on_other_seeds_an_opposite_verdict_fails_and_undecided_warns(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_SEEDS", "11,12,13")
    undecided = C.verdicts([claim()], {"gap": {11: 0.2, 12: 0.15, 13: 0.05}}, {"gap": NULL})
    assert "undecided on these seeds" in undecided.loc["gap", "warning"]
    C.check(undecided)
    assert "WARNING, undecided" in capsys.readouterr().out
    assert C.records(undecided)[0]["warning"]  # saved with the results
    opposite = C.verdicts([claim()], {"gap": {11: 0.0, 12: 0.01, 13: 0.02}}, {"gap": NULL})
    with pytest.raises(C.ClaimError, match="opposite verdict, on other seeds"):
        C.check(opposite)
    assert C.verdicts([claim()], {"gap": NULL}, {"gap": NULL}, default_seeds=True).attrs["default seeds"]


def test_a_dry_run_shows_but_does_not_assert(monkeypatch):
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    C.check(C.verdicts([claim()], {"gap": {0: 0.0, 1: 0.0, 2: 0.0}}, {"gap": {0: 0.5, 1: 0.5, 2: 0.5}}))


def test_pending_claims_keep_the_all_seeds_rule_and_say_so():
    table = C.verdicts([legacy()], {"gap": {0: 0.2, 1: 0.15, 2: 0.05}})
    row = table.loc["gap"]
    assert row["verdict"] == "mixed" and row["held in"] == "2 of 3" and "issue 35" in row["judged by"]
    with pytest.raises(C.ClaimError, match="declared 'holds', verdict 'mixed'"):
        C.check(table)
    C.check(C.verdicts([legacy()], {"gap": {0: 0.2, 1: 0.3, 2: 0.4}}))


# -- one measurement, amendments --------------------------------------------------------------------------------

def test_a_seed_independent_measure_is_one_measurement():
    c = claim(op="<=", threshold=2.0, name="memory")
    table = C.verdicts([c], {"memory": 1.203}, {"memory": 3.0})
    row = table.loc["memory"]
    assert row["held in"] == C.ONE_MEASUREMENT and row["verdict"] == "held" and row["values"] == {}
    assert "one measurement" in C.measured_table(table).loc["memory", "our mean [95% interval]"]
    assert "one measurement" in row["control value"] and "not reproduced" in row["control value"]


def test_an_amendment_is_shown_in_every_table():
    amendment = C.Amendment(was="step time <= 0.8, does not reproduce here", now="step time < 1.0, holds",
                            why="noisy timing replaced by paired timing", date="2026-11-20")
    c = claim(amendments=[amendment])
    assert "2026-11-20: was step time <= 0.8" in C.declaration_table([c]).loc["gap", "amended"]
    table = C.verdicts([c], {"gap": {0: 0.2, 1: 0.3, 2: 0.25}}, {"gap": NULL})
    assert "why: noisy timing" in table.loc["gap", "amended"]
    assert C.measured_table(table).loc["gap", "amended"] == "yes: 2026-11-20"
    row = C.scoreboard_rows({"04_noise_study": {"claims": C.records(table)}})[0]
    assert row["lesson"] == "04" and row["amended"].startswith("2026-11-20") and row["threshold rule"] == RULE
    with pytest.raises(C.ClaimError, match="date must be YYYY-MM-DD"):
        C.Amendment("a", "b", "c", "last week")
    with pytest.raises(C.ClaimError, match="amendments must be a list of Amendment"):
        claim(amendments=["changed it"])


def test_the_scoreboard_reads_records_saved_before_controls_existed():
    old = {"claim": "x", "published": "", "mean": 0.5, "95% low": 0.4, "95% high": 0.6, "held in": "3 of 3",
           "verdict": "held", "as declared": True}
    row = C.scoreboard_rows({"02_catastrophic_forgetting": {"claims": [old]}})[0]
    assert row["control"] == "not recorded" and row["our mean [95% interval]"] == "0.500 [0.400, 0.600]"
    assert list(row) == C.SCOREBOARD_COLUMNS


# -- input errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("measured, match", [
    ({}, "no measurements for claim 'gap'"),
    ({"gap": {}}, "at least one seed"),
    ({"gap": {0: float("nan")}}, "seed 0: value is nan"),
    ({"gap": {0: float("inf")}}, "not finite"),
    ({"gap": {0: "0.3"}}, "not a number"),
    ({"gap": {0: True}}, "not a number"),
    ({"gap": "0.3"}, "needs a dict"),
])
def test_bad_measurements_get_one_line_errors(measured, match):
    with pytest.raises(C.ClaimError, match=match):
        C.verdicts([claim()], measured, {"gap": NULL})


def test_a_bad_control_value_gets_a_one_line_error():
    with pytest.raises(C.ClaimError, match=r"claim 'gap' \(control\), seed 1: value is nan"):
        C.verdicts([claim()], {"gap": NULL}, {"gap": {0: 0.1, 1: float("nan")}})


@pytest.mark.parametrize("kwargs, match", [
    (dict(expect="probably"), "expect must be one of"),
    (dict(expect="mixed"), "expect must be one of"),
    (dict(op="=="), "op must be one of"),
    (dict(threshold=float("nan")), "threshold must be a finite number"),
    (dict(threshold=True), "threshold must be a finite number"),
    (dict(name=""), "name must be a non-empty string"),
    (dict(rule=3), "rule must be a string"),
])
def test_bad_declarations_get_one_line_errors(kwargs, match):
    base = dict(name="gap", says="s", published="", measure="m", op=">=", threshold=0.1)
    with pytest.raises(C.ClaimError, match=match):
        C.Claim(**{**base, **kwargs})
    with pytest.raises(C.ClaimError, match="no claims"):
        C.declare()
    with pytest.raises(C.ClaimError, match="unique"):
        C.declare(claim(), claim())


def test_records_and_measured_table_are_plain_and_readable():
    table = C.verdicts([claim()], {"gap": {5: 0.2, 6: 0.3, 7: 0.25}}, {"gap": NULL})
    rec = C.records(table)[0]
    assert rec["claim"] == "gap" and rec["verdict"] == "held" and rec["values"] == {"5": 0.2, "6": 0.3, "7": 0.25}
    assert isinstance(rec["as declared"], bool) and rec["95% low"] < rec["mean"] < rec["95% high"]
    assert rec["threshold rule"] == RULE and rec["control"] == "negative: noise rate 0"
    shown = C.measured_table(table)
    assert shown.loc["gap", "verdict"] == "held" and "[" in shown.loc["gap", "our mean [95% interval]"]
    one = C.verdicts([claim()], {"gap": {0: 0.2}}, {"gap": NULL})
    assert one.loc["gap", "verdict"] == "undecided"  # one seed has no interval
    assert math.isnan(one.loc["gap", "95% low"]) and C.records(one)[0]["95% low"] is None


def test_one_interval_format_for_every_printed_interval():
    assert C.mean_ci([0.1, 0.2, 0.3]) == "0.200 [-0.048, 0.448]"
    assert C.mean_ci(0.5) == C.interval_text(0.5, math.nan, math.nan) == "0.500"  # one seed: no interval
    table = C.verdicts([claim()], {"gap": {0: 0.1, 1: 0.2, 2: 0.3}}, {"gap": NULL})
    assert C.measured_table(table).loc["gap", "our mean [95% interval]"] == C.mean_ci([0.1, 0.2, 0.3])


def test_measured_from_rows_maps_columns_to_claims_by_seed():
    rows = [{"seed": 0, "gap": 0.2, "acc": 0.9}, {"seed": 1, "gap": 0.3, "acc": 0.8}]
    assert C.measured_from_rows(rows, gap="label gap") == {"label gap": {0: 0.2, 1: 0.3}}


def test_a_rehearsal_shows_undefined_measures_as_not_measured(monkeypatch):
    x = C.Claim("x", "says", "", "m", ">", 0.0, rule="r", control="c")
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    table = C.verdicts([x], {"x": {0: math.nan}}, {"x": {0: math.nan}})
    assert table.loc["x", "verdict"] == "not measured"
    assert all(math.isnan(v) for v in C.t_interval([math.nan, 0.5]))  # an effect table of a dry run (lesson 02)
    monkeypatch.setenv("COURSE_REHEARSAL", "0")
    with pytest.raises(C.ClaimError, match="t_interval: value 0"):
        C.t_interval([math.nan, 0.5])
    with pytest.raises(C.ClaimError, match="not finite"):
        C.verdicts([x], {"x": {0: math.nan}}, {"x": 0.0})


def test_the_amendment_record_names_only_claims_its_lessons_declare():
    """Every recorded amendment attaches to a claim its lesson's notebook declares (declare(lesson=...))."""
    import json

    from course_utils.paths import NOTEBOOKS_DIR

    record = json.loads(C.AMENDMENTS_FILE.read_text(encoding="utf-8"))
    for lesson, rows in record["amended"].items():
        notebook = next(NOTEBOOKS_DIR.glob(f"{lesson}_*.ipynb"))
        text = "".join("".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"])
        assert f'lesson="{lesson}"' in text, f"{notebook.name}: declare(..., lesson={lesson!r})"
        for row in rows:
            name = row["claim"].replace("(gpt2)", "({family})").replace("(qwen2)", "({family})").replace(
                "(llama)", "({family})")
            assert name in text, f"{notebook.name}: no claim {row['claim']!r}"
            C.Amendment(row["was"], row["now"], row["why"], row["date"])  # each one well formed
        amended = C.recorded_amendments(lesson)
        assert sum(len(a) for a in amended.values()) == len(rows)
