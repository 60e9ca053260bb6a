"""Text to ids and back to the model: the course's one home for tokenisation conventions, chat prompts, padding
and device placement.

Every helper that feeds a model goes through these few functions, so one convention holds everywhere:
- a sequence starts with a fixed first token (`bos_id`: BOS, or EOS where the tokenizer has no BOS, as Qwen2);
- a chat prompt is the tokenizer's own chat template with the assistant turn opened (`chat_turn`), and a chat
  answer ends at the template's end-of-turn token or EOS (`stop_ids`);
- batches are padded with `pad_id` (the pad token, else EOS), left-padded for generation, right-padded otherwise;
- tensors go to the device the model's weights live on (`model_device`).

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from course_utils.data import DataError
from course_utils.errors import check_count, check_text
from course_utils.errors import check_texts as _check_texts


def bos_id(tokenizer) -> int:
    """The id every sequence starts with: BOS where the tokenizer has one, else EOS (Qwen2 has no BOS).

    A fixed first token matters: without it, the first position's prediction is noise that dominates
    distribution-shift measurements (LIBRARY_NOTES: about 8 nats of KL).
    """
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has neither a BOS nor an EOS token")
    return tid


def pad_id(tokenizer) -> int:
    """The id that fills a padded batch: the pad token where the tokenizer has one, else EOS (GPT-2 has none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode(tokenizer, text: str, add_bos: bool = True, add_eos: bool = False,
           max_tokens: int | None = None) -> list[int]:
    """Token ids of `text` with the course's conventions: BOS first, optional EOS last, no other specials.

    `max_tokens` keeps at most that many ids, `encode(...)[:max_tokens]`, without tokenising a huge text whole:
    only a prefix long enough to hold them is tokenised (a 20 MB text costs what its first words cost, with or
    without spaces).
    """
    check_text(text, "encode", error=DataError)
    head = [bos_id(tokenizer)] if add_bos else []
    tail = [tokenizer.eos_token_id] if add_eos else []
    if max_tokens is None:
        return head + tokenizer(text, add_special_tokens=False)["input_ids"] + tail
    max_tokens = check_count(max_tokens, "encode", "max_tokens", minimum=1, error=DataError)
    return (head + _leading_ids(tokenizer, text, max_tokens - len(head)) + tail)[:max_tokens]


# A space after a non-space: every tokenizer the course uses starts a new word there (GPT-2-style byte-level and
# SentencePiece pre-tokenizers alike), so the text before it tokenises to exactly the whole text's first ids.
_WORD_START = re.compile(r"(?<=\S) ")


def _leading_ids(tokenizer, text: str, n: int) -> list[int]:
    """At least the first `n` token ids of `text` (no specials added), all of them when the text is short.

    Tokenises a prefix that ends at a word start and holds about 8 characters per wanted token, doubling it until
    it holds `n` ids. Where no word start follows (a long run without spaces), prefixes of growing length are
    tokenised until two of them, one twice the other, agree on the first `n` ids (`_settled_ids`).
    """
    bound = 8 * max(n, 0) + 64
    while bound < len(text):
        cut = _WORD_START.search(text, bound)
        if cut is None:
            return _settled_ids(tokenizer, text, n, bound)
        ids = tokenizer(text[:cut.start()], add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            return ids
        bound = 2 * cut.start()
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _settled_ids(tokenizer, text: str, n: int, bound: int) -> list[int]:
    """The ids of a prefix of `text` whose first `n` no longer change when the prefix doubles: only the last few
    tokens of a cut text depend on where it was cut, so a 10 MB run without spaces costs what its start costs."""
    ids = tokenizer(text[:bound], add_special_tokens=False)["input_ids"]
    while bound < len(text):
        bound *= 2
        longer = tokenizer(text[:bound], add_special_tokens=False)["input_ids"]
        if len(ids) >= n and longer[:n] == ids[:n]:
            return longer
        ids = longer
    return ids


def position_limit(model) -> int | None:
    """How many positions the model can attend over (`max_position_embeddings`, GPT-2's `n_positions`), or None.

    GPT-2 learns one embedding per position, so position 257 of a 256-position model does not exist; rotary
    models (Qwen2, Llama) run past it but were never trained there. Either way, longer input is a mistake."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def encode_for(model, tokenizer, text: str, where: str, what: str, add_bos: bool = True, add_eos: bool = False,
               reserve: int = 0) -> list[int]:
    """`encode` for feeding `model`: ids that, with `reserve` more positions (new tokens, a prompt before them),
    fit the model's positions; else a one-line `DataError` naming `where` and `what`. Never tokenises far past
    the limit, so an over-long text fails fast instead of deep inside torch."""
    limit = position_limit(model)
    ids = encode(tokenizer, text, add_bos, add_eos, max_tokens=None if limit is None else max(limit - reserve + 1, 1))
    if limit is not None and len(ids) + reserve > limit:
        raise DataError(f"{where}: {what} needs at least {len(ids) + reserve} positions but the model has only "
                        f"{limit} (model.config.max_position_embeddings); shorten it")
    return ids


def check_texts(texts: Sequence[str], where: str, what: str = "text") -> list[str]:
    """`texts` is a list of strings (not one bare string, whose characters would be read as texts); else one
    `DataError` line naming the helper and the first bad item (`errors.check_texts`)."""
    return _check_texts(texts, where, what, DataError)


# For hub tokenizers that ship without a chat template (GPT-2): plain role lines, no new special tokens, so the
# embedding table needs no new rows; the assistant's turn ends with EOS, which is where generation stops.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def ensure_chat_template(tokenizer):
    """Give a tokenizer without a chat template (GPT-2's) the plain one above; leave every other one as it is."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return tokenizer


def chat_turn(tokenizer, message: str, bos: bool = False) -> str:
    """`message` as the user turn of the tokenizer's chat template, with the assistant turn opened: the one place a
    chat prompt is made.

    `bos=True` writes the sequence's first token (`bos_id`) in front, as text, for strings that are later tokenised
    without special tokens (trl's prompt rows); leave it False where `encode` adds that id itself. A template that
    already writes it (as Llama 3's writes `{{ bos_token }}`) does not get it twice: the tokenizer's own
    convention wins. None of the course's tokenizers adds BOS on its own (`tokenizer(text)` starts with the text).
    """
    if not isinstance(message, str) or not message.strip():
        raise DataError(f"chat_turn: empty message {message!r}")
    turn = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)
    first = tokenizer.convert_ids_to_tokens(bos_id(tokenizer))
    return first + turn if bos and not turn.startswith(first) else turn


END = "<|end|>"  # the course chat template's end-of-turn marker: generation must stop here as well as at EOS


def end_of_turn(tokenizer) -> str:
    """The token that closes an assistant turn: `<|end|>` for the course tokenizer, `<|im_end|>` for Qwen2's."""
    vocab = tokenizer.get_vocab()
    return next((t for t in (END, "<|im_end|>", "<|eot_id|>") if t in vocab), tokenizer.eos_token)


def stop_ids(tokenizer) -> list[int]:
    """Token ids that end a chat answer: EOS and the end-of-turn marker (`end_of_turn`)."""
    end = tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))
    return list(dict.fromkeys([tokenizer.eos_token_id, end]))


def model_device(model) -> torch.device:
    """The device the model's weights live on: inputs are moved there, whichever profile is running."""
    return next(model.parameters()).device


def pad_batch(seqs: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of variable-length sequences padded with `pad`: on the left for generation (so every
    prompt ends where the new tokens begin), on the right for scoring."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


LIBRARY_CALLS = {
    "transformers:PreTrainedTokenizerBase.apply_chat_template": ["conversation", "tokenize", "add_generation_prompt"],
}
