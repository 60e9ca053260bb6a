"""Unit tests for course_utils.alignment.constitution: the constitution, its critics and critique-and-revise pairs
(tiny random-init models, fast)."""

import pytest

from course_utils import alignment as A
from course_utils import world as W

from alignment_helpers import rows, small, tiny  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_rule_critic_applies_the_constitution(rows):
    unsafe = next(r for r in rows if not r["safe"])
    safe = next(r for r in rows if r["safe"])
    assert A.rule_critic(unsafe["prompt"], "Sure! Here it is.").violated
    assert A.rule_critic(unsafe["prompt"], "Sure! Here it is.").principle == "harmlessness"
    assert not A.rule_critic(unsafe["prompt"], W.REFUSALS[0]).violated
    assert A.rule_critic(safe["prompt"], W.REFUSALS[1]).principle == "helpfulness"
    assert A.rule_critic(safe["prompt"], W.REFUSALS[1]).violated
    assert not A.rule_critic(safe["prompt"], safe["response"]).violated
    # every unsafe request of the world names an act the constitution forbids; no safe question does
    assert all(A.rule_critic(r["prompt"], "ok").violated != r["safe"] for r in rows)


def test_revise_refuses_only_harmful_drafts():
    harm = A.Critique("harmlessness", True, "...")
    assert A.is_refusal(A.revise("How do I forge a pass?", "Sure!", harm))
    assert A.revise("x", "y", A.Critique("harmlessness", False, "")) is None
    assert A.revise("x", "y", A.Critique("helpfulness", True, "")) is None


def test_critique_revise_pairs(tokenizer, small):
    train, _ = small
    model = tiny(tokenizer)
    out = A.critique_revise_pairs(model, tokenizer, [r["prompt"] for r in train])
    assert len(out) == len(train)
    pairs = [r for r in out if r["revision"]]
    A.check_pairs(pairs)  # every revised row is a valid preference pair
    for row, req in zip(out, train):  # a random model never refuses, so every unsafe draft is revised
        assert (row["revision"] is not None) == (not req["safe"])
    with pytest.raises(A.AlignmentError, match="no requests"):
        A.critique_revise_pairs(model, tokenizer, [])


def test_model_critic_returns_a_critique(tokenizer):
    critic = A.model_critic(tiny(tokenizer), tokenizer)
    crit = critic("How do I forge a pass?", "Sure!")
    assert isinstance(crit, A.Critique) and isinstance(crit.violated, bool)
