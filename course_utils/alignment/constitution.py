"""Constitutional AI at toy scale: a constitution of principles, a critic (rules, or a chat model on the gpu
profile), the revision a critique calls for, and preference pairs made from the model's own drafts.

Used in lessons: 08
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from course_utils.alignment.judge import is_refusal
from course_utils.alignment.models import AlignmentError, chat_generate
from course_utils.evaluate import continuation_logprobs
from course_utils.text import chat_turn, end_of_turn
from course_utils.world import REFUSALS


@dataclass(frozen=True)
class Principle:
    """One rule of the constitution, in words, with the acts it names (what the rule-based critic looks for)."""

    name: str
    text: str
    forbidden: tuple[str, ...] = ()


CONSTITUTION = (
    Principle("harmlessness",
              "Do not help anyone steal, rob, forge, counterfeit, spy on, track, follow or watch people, poison, "
              "set fires, wreck or break things to hurt people.",
              forbidden=("steal", "rob", "vault code", "forge", "counterfeit", "fake", "spy", "track", "follow",
                         "home address", "watch them", "poison", "fire", "wreck", "hurt")),
    Principle("helpfulness", "Answer harmless questions directly and do not refuse them."),
    Principle("brevity", "When you refuse, say so in one short, polite sentence."),
)


@dataclass
class Critique:
    principle: str
    violated: bool
    text: str


def rule_critic(request: str, draft: str, constitution: Sequence[Principle] = CONSTITUTION) -> Critique:
    """Critique `draft` against the constitution with rules (a 1 M-parameter model cannot critique anything).

    The request is harmful when it names an act a principle forbids; a harmful request answered without a refusal
    violates that principle, and a harmless request answered with a refusal violates helpfulness.
    """
    low = request.lower()
    for principle in constitution:
        acts = [a for a in principle.forbidden if a in low]
        if acts and not is_refusal(draft):
            return Critique(principle.name, True, f"The request asks to {acts[0]}; the draft goes along with it, "
                                                  f"which breaks '{principle.text}'")
        if acts:
            return Critique(principle.name, False, "The draft refuses a harmful request, as it should.")
    if is_refusal(draft):
        return Critique("helpfulness", True, "The request is harmless, yet the draft refuses it.")
    return Critique("helpfulness", False, "The draft answers a harmless request.")


def revise(request: str, draft: str, critique: Critique) -> str | None:
    """The revision a critique calls for: a short refusal for a harmful request; None when nothing needs fixing.

    (Revising an unhelpful refusal would need the right answer, which a rule cannot write: such drafts are left
    out, and helpfulness pairs come from the hand-made data, as Bai et al. took them from human labels.)
    """
    if not critique.violated or critique.principle == "helpfulness":
        return None
    return REFUSALS[sum(map(ord, request)) % len(REFUSALS)]


def critique_revise_pairs(model, tokenizer, requests: Sequence[str], critic=rule_critic) -> list[dict[str, Any]]:
    """Constitutional-AI style pairs: the model drafts, the critic critiques, the revision is 'chosen'.

    Returns one row per request with draft, critique, revision; rows with a revision carry prompt/chosen/rejected
    (use `[r for r in rows if r['revision']]` as preference pairs). The drafts are the model's *own* answers,
    so the rejected side is on-policy: exactly what the model would otherwise say.
    """
    if len(requests) == 0:
        raise AlignmentError("critique_revise_pairs: no requests given")
    drafts = chat_generate(model, tokenizer, list(requests))
    rows, end = [], end_of_turn(tokenizer)
    for request, draft in zip(requests, drafts):
        draft = draft or "..."
        crit = critic(request, draft)
        revision = revise(request, draft, crit)
        row = {"request": request, "draft": draft, "principle": crit.principle, "violated": crit.violated,
               "critique": crit.text, "revision": revision}
        if revision is not None and revision != draft:
            row.update(prompt=chat_turn(tokenizer, request, bos=True), chosen=revision + end, rejected=draft + end)
        else:
            row["revision"] = None
        rows.append(row)
    return rows


def model_critic(model, tokenizer, constitution: Sequence[Principle] = CONSTITUTION) -> Callable[[str, str], Critique]:
    """A critic that asks a chat model (the `gpu` profile's instruct model) whether a draft breaks a principle.

    It compares the model's log-probabilities of ' Yes' and ' No' after the question; a tiny model's answer is
    noise, so the `cpu` profile uses `rule_critic`.
    """

    def critic(request: str, draft: str) -> Critique:
        for principle in constitution:
            question = (f"Principle: {principle.text}\nRequest: {request}\nResponse: {draft}\n"
                        f"Does the response break the principle? Answer Yes or No.")
            text = chat_turn(tokenizer, question)
            yes, no = continuation_logprobs(model, tokenizer, [text, text], ["Yes", "No"])
            if yes > no:
                return Critique(principle.name, True, f"The critic model says the draft breaks: {principle.text}")
        return Critique("helpfulness", False, "The critic model finds no principle broken.")

    return critic
