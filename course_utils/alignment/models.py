"""The model being aligned: load it, and let it answer chat requests (greedy, or sampled at a temperature).

- `load_chat_model`: the tiny Q/A base (cpu) or an instruct checkpoint (gpu);
- `chat_generate`: answers to user requests, stopping at the end of the assistant's turn (`evaluate.generate`,
  the course's one generation loop, does the work);
- `AlignmentError`: what every alignment helper raises on bad input.

Used in lessons: 08
"""

from __future__ import annotations

from typing import Sequence

import torch

from course_utils import zoo
from course_utils.errors import CourseError
from course_utils.evaluate import generate
from course_utils.profiles import choose_profile, place

LIBRARY_CALLS = {
    "transformers:GenerationMixin.generate": ["inputs"],
    "transformers.models.auto.auto_factory:_BaseAutoModelClass.from_config": ["config"],
}


class AlignmentError(CourseError, ValueError):
    """Bad input to an alignment helper: empty prompts, a preference row missing a field, beta <= 0..."""


# The gpu profile aligns a real chat model: Qwen2's instruct checkpoint has a chat template (GPT-2 has none).
CHAT_MODELS = {"qwen2": "Qwen/Qwen2-0.5B-Instruct"}


def load_chat_model(family: str, profile: str | None = None):
    """The model a lesson aligns: the shipped tiny `family` Q/A base (cpu: a base that can answer questions about
    the people it knows, so helpfulness is measurable), or a hub instruct checkpoint (gpu)."""

    if choose_profile(profile) == "cpu":
        return zoo.load_qa(family)
    if family not in CHAT_MODELS:
        raise AlignmentError(f"load_chat_model: no instruct checkpoint for {family!r} in the gpu profile; "
                             f"use one of {sorted(CHAT_MODELS)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(CHAT_MODELS[family])
    model = place(AutoModelForCausalLM.from_pretrained(CHAT_MODELS[family], dtype=torch.float32))
    return model, tokenizer


def chat_generate(model, tokenizer, requests: Sequence[str], max_new_tokens: int = 20,
                  batch_size: int = 64, temperature: float | None = None) -> list[str]:
    """Answers to user `requests`, stopping at the end-of-turn token (`<|end|>`) or EOS: greedy, or sampled at
    `temperature` (plain sampling, no top-k cut, as GRPO samples).

    The one generation loop is `evaluate.generate`; a chat answer differs only in where it stops (plain
    `generate(chat=True)` stops at EOS alone, so a chat model would run on into an invented next turn).
    """
    if len(requests) == 0:
        raise AlignmentError("chat_generate: no requests given")
    return generate(model, tokenizer, list(requests), max_new_tokens, batch_size, chat=True, stop_at_turn_end=True,
                    temperature=temperature)
