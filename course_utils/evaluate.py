"""Measuring a model: fact recall per attribute, perplexity, and batched greedy generation.

`fast_fact_recall` gives `fact_recall`'s number in one forward pass per question, and `knowledge_probe` turns it
into what a fine-tuning run learned and kept (lessons 02 and 09, and `course launch`).

Everything runs under `torch.no_grad()`, in batches, deterministically (greedy decoding unless a temperature asks for
sampling under a seed), so a number in a notebook is the same every time the notebook runs on the same machine.

Used in lessons: 00, 01, 02, 04, 09
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Sequence

import torch

from course_utils.data import DataError
from course_utils.errors import check_count, check_vocab
from course_utils.text import chat_turn, check_texts, encode, encode_for, model_device, pad_batch, pad_id, stop_ids
from course_utils.world import ATTRIBUTES, Person, RECALL_PROMPTS, biography, generic_eval_text


@torch.no_grad()
def continuation_logprobs(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                          batch_size: int = 128) -> list[float]:
    """Sum of log-probabilities of each continuation given its prompt (prompt gets BOS, continuation does not).

    A prompt plus continuation longer than the model's positions is a one-line `DataError` naming the pair."""
    if len(prompts) != len(continuations):
        raise DataError(f"continuation_logprobs: {len(prompts)} prompts but {len(continuations)} continuations")
    check_texts(prompts, "continuation_logprobs", "prompt")
    check_texts(continuations, "continuation_logprobs", "continuation")
    check_vocab(model, tokenizer, "continuation_logprobs", error=DataError)
    model.eval()
    device = model_device(model)
    pad = pad_id(tokenizer)
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        seqs, spans = [], []
        for i in range(start, min(start + batch_size, len(prompts))):
            pi = encode_for(model, tokenizer, prompts[i], "continuation_logprobs", f"prompt {i}")
            ci = encode_for(model, tokenizer, continuations[i], "continuation_logprobs",
                            f"prompt {i} with its continuation", add_bos=False, reserve=len(pi))
            seqs.append(pi + ci)
            spans.append((len(pi), len(pi) + len(ci)))
        ids, mask = pad_batch(seqs, pad)
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for row, (a, b) in enumerate(spans):
            targets = ids[row, a:b].to(device)
            out.append(logp[row, a - 1:b - 1].gather(-1, targets[:, None]).sum().item())
    return out


def fact_recall(model, tokenizer, people: Sequence[Person], attributes: Sequence[str] | None = None,
                batch_size: int = 256) -> dict[str, float]:
    """Share of people whose true attribute value is the model's top choice among all values of that attribute.

    The probe is a prefix of a biography sentence ("Yara Holloway was born in"); each candidate value is scored
    by its log-probability as a continuation. With 12 values per attribute, a model that does not know the
    person scores about 1/12 = 0.083 (chance); a model that memorised the biographies scores near 1.
    """
    attributes = list(attributes or ATTRIBUTES)
    if not people:
        raise DataError("fact_recall: no people given")
    bad = [i for i, p in enumerate(people) if not isinstance(p, Person)]
    if bad:
        raise DataError(f"fact_recall: person {bad[0]} is {type(people[bad[0]]).__name__}, not a world.Person")
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise DataError(f"fact_recall: unknown attribute(s) {unknown}; known: {list(ATTRIBUTES)}")
    check_vocab(model, tokenizer, "fact_recall", error=DataError)
    result = {}
    for attr in attributes:
        values = ATTRIBUTES[attr]
        prompts = [RECALL_PROMPTS[attr].format(name=p.name) for p in people for _ in values]
        conts = [f" {v}" for _ in people for v in values]
        scores = torch.tensor(continuation_logprobs(model, tokenizer, prompts, conts, batch_size))
        picks = scores.view(len(people), len(values)).argmax(-1)
        truth = torch.tensor([values.index(getattr(p, attr)) for p in people])
        result[attr] = (picks == truth).float().mean().item()
    return result


# Lesson 02 measures the same recall prompts every 20 steps of every run: tokenising them again each time cost
# about a tenth of a seed's time. The ids of a text never change for a given tokenizer, so they are kept per
# tokenizer (a weak key: forgotten with the tokenizer).
_PROMPT_IDS: "weakref.WeakKeyDictionary[Any, dict[str, list[int]]]" = weakref.WeakKeyDictionary()


def prompt_ids(tokenizer, text: str) -> list[int]:
    """`text.encode(tokenizer, text)`, remembered per tokenizer: a recall prompt is tokenised once per run, not at
    every evaluation. Returns a fresh list each time (callers may change it)."""
    try:
        known = _PROMPT_IDS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memory, same ids
        return encode(tokenizer, text)
    if text not in known:
        known[text] = encode(tokenizer, text)
    return list(known[text])


@torch.no_grad()
def fast_fact_recall(model, tokenizer, people: Sequence, attributes: Sequence[str] | None = None,
                     batch_size: int = 256) -> dict[str, float]:
    """The same number as `evaluate.fact_recall`, about 12x faster when every value is a single token.

    `fact_recall` scores each of the 12 candidate values as a separate continuation (12 forward passes per
    question, which works for any tokenizer). With the course tokenizer every value is one token, so one forward
    pass per question and a look at the 12 candidates' next-token logits gives the same ranking. That matters
    in lesson 02, which measures recall every few steps of every run. Falls back to `fact_recall` otherwise.
    """

    attributes = list(attributes or ATTRIBUTES)
    value_ids = {a: [tokenizer(f" {v}", add_special_tokens=False)["input_ids"] for v in ATTRIBUTES[a]]
                 for a in attributes if a in ATTRIBUTES}
    if not people or len(value_ids) < len(attributes) or any(len(i) != 1 for ids in value_ids.values() for i in ids):
        return fact_recall(model, tokenizer, people, attributes, batch_size)  # its own clear errors, or multi-token
    model.eval()
    device = model_device(model)
    pad = pad_id(tokenizer)
    result = {}
    for attr in attributes:
        candidates = torch.tensor([i[0] for i in value_ids[attr]], device=device)
        seqs = [prompt_ids(tokenizer, RECALL_PROMPTS[attr].format(name=p.name)) for p in people]
        picks = []
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            ids, mask = pad_batch(chunk, pad)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = torch.tensor([len(s) - 1 for s in chunk], device=device)
            picks.append(logits[torch.arange(len(chunk), device=device), last][:, candidates].argmax(-1).cpu())
        truth = torch.tensor([ATTRIBUTES[attr].index(getattr(p, attr)) for p in people])
        result[attr] = (torch.cat(picks) == truth).float().mean().item()
    return result


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 64) -> float:
    """exp(mean negative log-likelihood per token) over `texts` (each BOS + text + EOS). Lower is better.

    A text longer than the model's positions is a one-line `DataError` naming it (split long documents first)."""
    if len(texts) == 0:
        raise DataError("perplexity: no texts given")
    check_texts(texts, "perplexity")
    check_vocab(model, tokenizer, "perplexity", error=DataError)
    model.eval()
    device = model_device(model)
    pad = pad_id(tokenizer)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        seqs = [encode_for(model, tokenizer, texts[i], "perplexity", f"text {i} (with BOS and EOS)", add_eos=True)
                for i in range(start, min(start + batch_size, len(texts)))]
        ids, mask = pad_batch(seqs, pad)
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        keep = mask[:, 1:].bool()
        total_nll += nll[keep].sum().item()
        total_tokens += int(keep.sum().item())
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 32,
             chat: bool = False, stop_at_turn_end: bool = False, temperature: float | None = None) -> list[str]:
    """Greedy completions of `prompts` (left-padded batches), decoded without special tokens: the course's one
    generation loop.

    With `chat=True` each prompt is a user message wrapped by the tokenizer's chat template (`text.chat_turn`).
    Generation stops at EOS, and with `stop_at_turn_end=True` at the template's end-of-turn token too
    (`text.stop_ids`), so a chat model that closes its turn with `<|end|>` does not run on into an invented next
    turn. `temperature` samples instead of decoding greedily (plain sampling, no top-k cut, as GRPO samples; seed
    torch first to repeat it). A prompt that leaves no room for `max_new_tokens` within the model's positions is a
    one-line `DataError` naming it.
    """
    if len(prompts) == 0:
        raise DataError("generate: no prompts given")
    check_texts(prompts, "generate", "prompt")
    check_vocab(model, tokenizer, "generate", error=DataError)
    max_new_tokens = check_count(max_new_tokens, "generate", "max_new_tokens", minimum=1, error=DataError)
    model.eval()
    device = model_device(model)
    pad = pad_id(tokenizer)
    stop = stop_ids(tokenizer) if stop_at_turn_end else tokenizer.eos_token_id
    decoding = {"do_sample": False} if temperature is None else {"do_sample": True, "temperature": temperature,
                                                                  "top_k": 0}
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        if chat:
            texts = [chat_turn(tokenizer, p) for p in batch]
        else:
            texts = list(batch)
        seqs = [encode_for(model, tokenizer, t, "generate", f"prompt {start + j} with max_new_tokens={max_new_tokens}",
                           reserve=max_new_tokens) for j, t in enumerate(texts)]
        ids, mask = pad_batch(seqs, pad, left=True)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=stop, **decoding)
        outputs += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in outputs]


def knowledge_audit(model, tokenizer, world, n_people: int | None = None) -> dict[str, float]:
    """What a model knows about the world, in one row of numbers.

    - `seen_recall_min` / `seen_recall_mean`: fact recall on people whose biographies were in pretraining;
    - `heldout_recall_max` / `heldout_recall_mean`: the same on held-out people (chance is 1/12 = 0.083);
    - `ppl_generic`: perplexity on fresh generic sentences (ordinary text in the world's style);
    - `ppl_seen_bios` / `ppl_heldout_bios`: perplexity on biographies of seen vs held-out people.
    Later lessons call this before and after fine-tuning to see what was learned and what was lost.
    """
    import random


    seen, held = world.seen[:n_people], world.heldout[:n_people]
    seen_r, held_r = fact_recall(model, tokenizer, seen), fact_recall(model, tokenizer, held)
    rng = random.Random(world.config.seed + 99)
    return {
        "seen_recall_min": min(seen_r.values()), "seen_recall_mean": sum(seen_r.values()) / len(seen_r),
        "heldout_recall_max": max(held_r.values()), "heldout_recall_mean": sum(held_r.values()) / len(held_r),
        "ppl_generic": perplexity(model, tokenizer, [r["text"] for r in generic_eval_text(world)]),
        "ppl_seen_bios": perplexity(model, tokenizer, [biography(p, rng) for p in seen]),
        "ppl_heldout_bios": perplexity(model, tokenizer, [biography(p, rng) for p in held]),
        **{f"seen_{k}": v for k, v in seen_r.items()},
        **{f"heldout_{k}": v for k, v in held_r.items()},
    }


def knowledge_probe(tokenizer, old_people: Sequence, new_people: Sequence, old_texts: Sequence[str] | None = None,
                    attributes: Sequence[str] | None = None,
                    val_people: Sequence | None = None) -> Callable[[Any], dict[str, float]]:
    """A function model -> {"new_recall", "old_recall", "old_ppl", "val_old_recall"}: learned (recall of the facts
    being taught), kept (recall of facts the base model knew, on the *test* people `old_people`), and, if given,
    perplexity on original-style `old_texts` and old-fact recall on `val_people`, the people settings are chosen on."""

    if not old_people or not new_people:
        raise DataError("knowledge_probe: need at least one old and one new person")
    if val_people is not None and {p.name for p in val_people} & {p.name for p in old_people}:
        raise DataError("knowledge_probe: validation and test people overlap; choose on people you do not judge on")

    def measure(model) -> dict[str, float]:
        new = fast_fact_recall(model, tokenizer, new_people, attributes)
        old = fast_fact_recall(model, tokenizer, old_people, attributes)
        out = {"new_recall": sum(new.values()) / len(new), "old_recall": sum(old.values()) / len(old)}
        if val_people:
            val = fast_fact_recall(model, tokenizer, val_people, attributes)
            out["val_old_recall"] = sum(val.values()) / len(val)
        if old_texts:
            out["old_ppl"] = perplexity(model, tokenizer, old_texts)
        return out

    return measure
