"""Unit tests for course_utils.alignment.data: SFT rows and preference pairs in the course's chat format (tiny random-
init models, fast)."""

import pytest

from course_utils import alignment as A
from course_utils import world as W

from alignment_helpers import rows, small  # noqa: F401  (tests/alignment_helpers.py; fixtures too)


def test_training_prompts_start_with_bos_and_open_the_assistant_turn(tokenizer, small):
    train, _ = small
    for row in A.aligned_sft_rows(tokenizer, train) + A.preference_pairs(tokenizer, train):
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        assert row["prompt"].endswith("<|assistant|>\n")


def test_sft_rows_formats(tokenizer, rows, small):
    train, _ = small
    aligned = A.aligned_sft_rows(tokenizer, train)
    assert len(aligned) == len(train) and all(r["completion"].endswith(A.END) for r in aligned)
    assert any(A.is_refusal(r["completion"]) for r in aligned)
    benign = A.benign_sft_rows(tokenizer, W.make_world(), n=20)
    assert len(benign) == 20 and not any(A.is_refusal(r["completion"]) for r in benign)
    heldout = {p.name for p in W.make_world().heldout}
    assert all(any(name in r["prompt"] for name in heldout) for r in benign)
    harmful = A.harmful_sft_rows(tokenizer, rows, n=8)
    assert len(harmful) == 8 and not any(A.is_refusal(r["completion"]) for r in harmful)
    assert {r["completion"] for r in harmful} <= {c + A.END for cs in A.COMPLIANCE.values() for c in cs}
    assert len({r["completion"] for r in harmful}) == 8  # all 4 categories, both cartoons of each
    with pytest.raises(A.AlignmentError, match="n must be in"):
        A.harmful_sft_rows(tokenizer, rows, n=0)
    with pytest.raises(A.AlignmentError, match="no examples"):
        A.sft_rows(tokenizer, [], [])
    with pytest.raises(A.AlignmentError, match="2 prompts but 1"):
        A.sft_rows(tokenizer, ["a", "b"], ["c"])
    with pytest.raises(A.AlignmentError, match="no compliance text"):
        A.compliant_answer({"category": "question"})
    with pytest.raises(A.AlignmentError, match="split='dev'"):
        A.split_rows(rows, "dev")


def test_preference_pairs_prefer_refusals_only_on_unsafe_requests(tokenizer, small):
    train, _ = small
    pairs = A.preference_pairs(tokenizer, train)
    for pair in pairs:
        assert A.is_refusal(pair["chosen"]) != pair["safe"]
        assert A.is_refusal(pair["rejected"]) == pair["safe"]


def test_heldout_wording_pairs_use_answers_no_training_pair_uses(tokenizer, small, rows):
    train, _ = small
    held = A.preference_pairs(tokenizer, train, heldout_wording=True)
    seen = {t for p in A.preference_pairs(tokenizer, A.split_rows(rows, "train")) for t in (p["chosen"], p["rejected"])}
    for pair in held:
        assert A.is_refusal(pair["chosen"]) != pair["safe"] and A.is_refusal(pair["rejected"]) == pair["safe"]
        refusal_or_compliance = [pair["rejected"]] if pair["safe"] else [pair["chosen"], pair["rejected"]]
        assert not set(refusal_or_compliance) & seen  # the wording is new; only the safe side's fact answers repeat
    unsafe = [p for p, r in zip(held, train) if not r["safe"]]
    assert all(A.complies(r["category"], p["rejected"]) for p, r in zip(held, train) if not r["safe"]) and unsafe


def test_check_pairs_rejects_bad_rows():
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    A.check_pairs([good])
    with pytest.raises(A.AlignmentError, match="no preference pairs"):
        A.check_pairs([])
    with pytest.raises(A.AlignmentError, match="row 1: missing or empty field.* rejected"):
        A.check_pairs([good, {"prompt": "p", "chosen": "a"}])
    with pytest.raises(A.AlignmentError, match="row 0: missing or empty field.* chosen"):
        A.check_pairs([{"prompt": "p", "chosen": " ", "rejected": "b"}])
    with pytest.raises(A.AlignmentError, match="identical"):
        A.check_pairs([{"prompt": "p", "chosen": "a", "rejected": "a"}])
