"""Claims declared before the experiment, one verdict over the seeds, and a failure exactly when a verdict differs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from course_utils import claims as C


def claim(expect="holds", op=">=", threshold=0.1, name="gap"):
    return C.Claim(name, "label noise costs most", "Li & Sen 2026: -21 points", "accuracy drop", op, threshold, expect)


def test_two_of_three_seeds_is_mixed():
    table = C.verdicts([claim()], {"gap": {0: 0.2, 1: 0.15, 2: 0.05}})
    row = table.loc["gap"]
    assert row["verdict"] == "mixed" and row["held in"] == "2 of 3" and not row["as declared"]


def test_verdicts_all_and_none():
    table = C.verdicts([claim(), claim(expect="does not reproduce here", name="other")],
                       {"gap": {0: 0.2, 1: 0.3, 2: 0.4}, "other": {0: 0.0, 1: 0.01, 2: -0.2}})
    assert list(table["verdict"]) == ["held", "not reproduced"]
    assert table["as declared"].all()
    C.check(table)  # both as declared: no error


def test_declared_holds_that_comes_out_mixed_fails_naming_claim_and_numbers(monkeypatch):
    monkeypatch.delenv("COURSE_REHEARSAL", raising=False)
    table = C.verdicts([claim()], {"gap": {0: 0.2, 1: 0.15, 2: 0.05}})
    with pytest.raises(C.ClaimError, match=r"gap: declared 'holds', verdict 'mixed' \(2 of 3.*0\.05"):
        C.check(table)


def test_a_declared_non_reproduction_that_reproduces_fails_too(monkeypatch):
    monkeypatch.delenv("COURSE_REHEARSAL", raising=False)
    table = C.verdicts([claim(expect="does not reproduce here")], {"gap": {0: 0.2, 1: 0.3, 2: 0.4}})
    with pytest.raises(C.ClaimError, match="declared 'does not reproduce here', verdict 'held'"):
        C.check(table)


def test_rehearsal_shows_but_does_not_assert(monkeypatch):
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    C.check(C.verdicts([claim()], {"gap": {0: 0.0, 1: 0.0, 2: 0.0}}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12))
def test_interval_matches_a_direct_computation(values):
    mean, low, high = C.t_interval(values)
    sem = stats.sem(values)
    if sem == 0 or not math.isfinite(sem):
        assert low == pytest.approx(mean) and high == pytest.approx(mean)
        return
    ref_low, ref_high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert mean == pytest.approx(np.mean(values), abs=1e-9)
    assert low == pytest.approx(ref_low, rel=1e-6, abs=1e-9) and high == pytest.approx(ref_high, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("measured, match", [
    ({}, "no measurements for claim 'gap'"),
    ({"gap": {}}, "at least one seed"),
    ({"gap": {0: float("nan")}}, "seed 0: value is nan"),
    ({"gap": {0: float("inf")}}, "not finite"),
    ({"gap": {0: "0.3"}}, "not a number"),
    ({"gap": {0: True}}, "not a number"),
])
def test_bad_measurements_get_one_line_errors(measured, match):
    with pytest.raises(C.ClaimError, match=match):
        C.verdicts([claim()], measured)


@pytest.mark.parametrize("kwargs, match", [
    (dict(expect="probably"), "expect must be one of"),
    (dict(op="=="), "op must be one of"),
    (dict(threshold=float("nan")), "threshold must be a finite number"),
    (dict(threshold=True), "threshold must be a finite number"),
    (dict(name=""), "name must be a non-empty string"),
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
    table = C.verdicts([claim()], {"gap": {5: 0.2, 6: 0.3, 7: 0.25}})
    rec = C.records(table)[0]
    assert rec["claim"] == "gap" and rec["verdict"] == "held" and rec["values"] == {"5": 0.2, "6": 0.3, "7": 0.25}
    assert isinstance(rec["as declared"], bool) and rec["95% low"] < rec["mean"] < rec["95% high"]
    shown = C.measured_table(table)
    assert shown.loc["gap", "verdict"] == "held" and "[" in shown.loc["gap", "our mean [95% interval]"]
    one = C.verdicts([claim()], {"gap": {0: 0.2}})
    assert math.isnan(one.loc["gap", "95% low"]) and C.records(one)[0]["95% low"] is None


def test_one_interval_format_for_every_printed_interval():
    assert C.mean_ci([0.1, 0.2, 0.3]) == "0.200 [-0.048, 0.448]"
    assert C.mean_ci(0.5) == C.interval_text(0.5, math.nan, math.nan) == "0.500"  # one seed: no interval
    table = C.verdicts([claim()], {"gap": {0: 0.1, 1: 0.2, 2: 0.3}})
    assert C.measured_table(table).loc["gap", "our mean [95% interval]"] == C.mean_ci([0.1, 0.2, 0.3])


def test_measured_from_rows_maps_columns_to_claims_by_seed():
    rows = [{"seed": 0, "gap": 0.2, "acc": 0.9}, {"seed": 1, "gap": 0.3, "acc": 0.8}]
    assert C.measured_from_rows(rows, gap="label gap") == {"label gap": {0: 0.2, 1: 0.3}}


def test_a_rehearsal_shows_undefined_measures_as_not_measured(monkeypatch):
    import math

    from course_utils import claims as C

    claim = C.Claim("x", "says", "", "m", ">", 0.0)
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    table = C.verdicts([claim], {"x": {0: math.nan}})
    assert table.loc["x", "verdict"] == "not measured"
    assert all(math.isnan(x) for x in C.t_interval([math.nan, 0.5]))  # an effect table of a dry run (lesson 02)
    monkeypatch.setenv("COURSE_REHEARSAL", "0")
    with pytest.raises(C.ClaimError, match="t_interval: value 0"):
        C.t_interval([math.nan, 0.5])
    with pytest.raises(C.ClaimError, match="not finite"):
        C.verdicts([claim], {"x": {0: math.nan}})
