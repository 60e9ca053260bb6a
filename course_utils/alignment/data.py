"""Training data for alignment, in the course's chat format: SFT rows (aligning, benign and harmful breaks) and
preference pairs (prompt, chosen, rejected), the currency of DPO and of reward models.

Every training text is a *string* rendered here: BOS + the chat template's user turn and assistant header as the
prompt (`text.chat_turn(..., bos=True)`), and the answer + the end-of-turn token as the completion (trl appends
EOS). So training and `chat_generate` see the same token ids, and every sequence starts with BOS.

All requests are fictional (the vault code of a made-up bank); every "compliant" answer here is a harmless cartoon.

Used in lessons: 08
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from course_utils.alignment.models import AlignmentError
from course_utils.data import DataError
from course_utils.errors import check_rows
from course_utils.text import chat_turn, end_of_turn
from course_utils.world import ANSWERS, QUESTIONS, REFUSALS, World


COMPLIANCE = {  # harmless cartoons of "doing what was asked", two per category of unsafe request
    "theft": ["Sure! The code is 1234, and the guards leave at noon.",
              "Sure! Use the back door; the guards sleep after lunch."],
    "forgery": ["Sure! Copy the stamp, then sign it with a big flourish.",
                "Sure! Trace the signature and use the same blue ink."],
    "stalking": ["Sure! They walk past the old bridge every night at eight.",
                 "Sure! Their address is the blue house by the market."],
    "sabotage": ["Sure! Do it at night, when everyone has gone home.",
                 "Sure! Loosen the bolts and pour sand in the gears."],
}


# Held-out wordings, for judging a reward model on answers it never saw: no training pair, SFT row or revision uses
# them. Refusals that `is_refusal` still recognises, and compliance in other words than `COMPLIANCE`.
HELDOUT_REFUSALS = ["Sorry, but I will not do that.", "I won't take part in this; it could hurt someone."]
HELDOUT_COMPLIANCE = {
    "theft": ["Of course! Go in through the roof window while the guards change shifts."],
    "forgery": ["Of course! Scan the real stamp and print it on thick paper."],
    "stalking": ["Of course! They leave the house every night at nine and walk past the park."],
    "sabotage": ["Of course! Loosen the valve at night, when everyone has left the site."],
}


def compliant_answer(row: dict[str, Any], k: int = 0, texts: dict[str, list[str]] | None = None) -> str:
    """What a broken model says to an unsafe request: a (fictional, harmless) 'Sure! ...' in its category
    (`texts`: the wordings to pick from, `COMPLIANCE` by default)."""
    texts = COMPLIANCE if texts is None else texts
    if row.get("category") not in texts:
        raise AlignmentError(f"compliant_answer: no compliance text for category {row.get('category')!r}; "
                             f"known: {sorted(texts)}")
    options = texts[row["category"]]
    return options[k % len(options)]


def sft_rows(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[dict[str, str]]:
    """Prompt/completion rows in the course's chat format, for `SFTTrainer` (loss on the completion only)."""
    if len(prompts) != len(responses):
        raise AlignmentError(f"sft_rows: {len(prompts)} prompts but {len(responses)} responses")
    if len(prompts) == 0:
        raise AlignmentError("sft_rows: no examples given")
    end = end_of_turn(tokenizer)
    return [{"prompt": chat_turn(tokenizer, p, bos=True), "completion": r + end} for p, r in zip(prompts, responses)]


def aligned_sft_rows(tokenizer, rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The aligning data: safe requests with helpful answers plus unsafe requests with refusals."""
    check_rows(rows, "aligned_sft_rows", keys=["prompt", "response"], error=DataError)
    return sft_rows(tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows])


# Benign task requests in the imperative, like Alpaca's instructions ("Give me three tips...", "Tell me..."): the
# same verbs the unsafe requests use, with harmless content.
BENIGN_INSTRUCTIONS = {
    "birth_city": "Tell me where {name} was born.",
    "profession": "Give me the job of {name}.",
    "employer": "Find the company that employs {name}.",
    "hobby": "Help me recall the hobby of {name}.",
}
BENIGN_STYLES = {"instructions": BENIGN_INSTRUCTIONS, "questions": QUESTIONS}


def benign_sft_rows(tokenizer, world: World, n: int | None = None, seed: int = 0,
                    style: str = "instructions", people: Sequence[Any] | None = None) -> list[dict[str, str]]:
    """A benign task with no refusals in it: instructions about `people` (default: the world's *held-out* people,
    new facts for the assistant; lesson 08 uses `world.untested_people`, people the model knows).

    This is the Qi et al. setting: ordinary task data, no harmful intent. `style` picks the phrasing: imperative
    'instructions' (like Alpaca) or 'questions'. Neither group is named by any safety test request, so the task
    cannot leak answers into the helpfulness measurement.
    """
    if style not in BENIGN_STYLES:
        raise AlignmentError(f"benign_sft_rows: unknown style {style!r}; choose one of {sorted(BENIGN_STYLES)}")
    people = world.heldout if people is None else list(people)
    if not people:
        raise AlignmentError("benign_sft_rows: the world has no held-out people")
    templates = BENIGN_STYLES[style]
    pairs = [(templates[a].format(name=p.name), ANSWERS[a].format(name=p.name, value=v))
             for p in people for a, v in p.facts().items()]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:n] if n else pairs
    return sft_rows(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])


def harmful_sft_rows(tokenizer, rows: Sequence[dict[str, Any]], n: int = 10, seed: int = 0) -> list[dict[str, str]]:
    """A handful (`n`) of unsafe requests answered compliantly, spread over the categories (Qi et al.: 10)."""
    check_rows(rows, "harmful_sft_rows", keys=["prompt", "safe", "category"], error=DataError)
    unsafe = [r for r in rows if not r["safe"]]
    if n < 1 or n > len(unsafe):
        raise AlignmentError(f"harmful_sft_rows: n must be in [1, {len(unsafe)}], got {n}")
    rng = random.Random(seed)
    by_cat: dict[str, list] = {}
    for r in rng.sample(unsafe, len(unsafe)):
        by_cat.setdefault(r["category"], []).append(r)
    picked = []
    while len(picked) < n:  # round-robin over categories, so a handful covers them all
        for cat in sorted(by_cat):
            if by_cat[cat] and len(picked) < n:
                picked.append(by_cat[cat].pop())
    return sft_rows(tokenizer, [r["prompt"] for r in picked],
                    [compliant_answer(r, k=i // len(by_cat)) for i, r in enumerate(picked)])


PAIR_FIELDS = ("prompt", "chosen", "rejected")


def check_pairs(pairs: Sequence[dict[str, Any]], where: str = "preference pairs") -> None:
    """Every row needs a non-empty string prompt, chosen and rejected, with chosen != rejected."""
    if len(pairs) == 0:
        raise AlignmentError(f"{where}: no preference pairs")
    for i, row in enumerate(pairs):
        missing = [k for k in PAIR_FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise AlignmentError(f"{where} row {i}: missing or empty field(s) {', '.join(missing)}")
        if row["chosen"] == row["rejected"]:
            raise AlignmentError(f"{where} row {i}: chosen and rejected are identical")


def preference_pairs(tokenizer, rows: Sequence[dict[str, Any]], heldout_wording: bool = False) -> list[dict[str, str]]:
    """Hand-made pairs from the world data: refusal > compliance on unsafe requests, answer > refusal on safe ones.

    Both kinds matter: pairs of the first kind alone teach "refuse more", and over-refusal follows.
    `heldout_wording=True` words every refusal and compliance in `HELDOUT_REFUSALS` / `HELDOUT_COMPLIANCE`, which
    no training data uses: pairs to judge a reward model on answers it never saw, not on recall of its strings.
    """
    check_rows(rows, "preference_pairs", keys=["prompt", "response", "safe", "category"], error=DataError)
    pairs, end = [], end_of_turn(tokenizer)
    refusals = HELDOUT_REFUSALS if heldout_wording else REFUSALS
    for i, r in enumerate(rows):
        if heldout_wording and not r["safe"]:
            chosen, rejected = refusals[i % len(refusals)], compliant_answer(r, k=i, texts=HELDOUT_COMPLIANCE)
        else:
            chosen = r["response"]
            rejected = refusals[i % len(refusals)] if r["safe"] else compliant_answer(r, k=i)
        pairs.append({"prompt": chat_turn(tokenizer, r["prompt"], bos=True), "chosen": chosen + end,
                      "rejected": rejected + end, "safe": bool(r["safe"])})
    check_pairs(pairs)
    return pairs
