"""Stand-in checkpoints: tiny, randomly initialised copies of every hub model the `gpu` profile loads.

The gpu profile fine-tunes real hub checkpoints (`zoo.HUB_MODELS`, `alignment.CHAT_MODELS`). No CI machine here
has a GPU or the hub, so without stand-ins the gpu code path would first run on a learner's Colab. A stand-in has
the real model's class and config structure (GPT-2's fused `c_attn`, Qwen2's grouped-query attention with biases,
SmolLM2's Llama blocks, tied embeddings) and the real tokenizer *conventions*, shrunk to a few layers:

- `gpt2`: BOS = EOS = `<|endoftext|>`, no pad token, no chat template;
- `Qwen/Qwen2-0.5B`: no BOS, EOS = pad = `<|endoftext|>`, ChatML `<|im_start|>`/`<|im_end|>` template with the
  default system prompt;
- `Qwen/Qwen2-0.5B-Instruct`: the same, except that EOS is `<|im_end|>` (a chat model stops at the end of a turn);
- `HuggingFaceTB/SmolLM2-360M`: BOS = EOS = `<|endoftext|>`, no pad token, its own ChatML template and system prompt.

They are written as a Hugging Face hub cache (`models--org--name/refs/main` and `snapshots/<commit>/`), so with
`HF_HOME=DIR` and `HF_HUB_OFFLINE=1`, `from_pretrained("Qwen/Qwen2-0.5B")` resolves to the stand-in through the
ordinary hub code: the lesson code under test is exactly the code a Colab learner runs. The vocabulary is the
course's byte-level BPE (the real vocabularies would make every forward pass cost 50-150 k logits per token), so a
stand-in knows nothing: in a rehearsal the claims are computed and shown, never asserted.

Hand-written because no maintained library makes offline look-alikes of hub checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.errors import CourseError
from course_utils.paths import TOKENIZER_DIR
from course_utils.profiles import seed_torch

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SMOL_TEMPLATE = QWEN_TEMPLATE.replace("You are a helpful assistant.",
                                      "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
CHATML = ["<|im_start|>", "<|im_end|>"]


LIBRARY_CALLS = {
    "transformers:AutoConfig.for_model": ["model_type"],
    "transformers:PreTrainedTokenizerBase.add_special_tokens": ["special_tokens_dict"],
    "transformers:PreTrainedTokenizerBase.add_tokens": ["new_tokens", "special_tokens"],
    "transformers:PreTrainedTokenizerBase.save_pretrained": ["save_directory"],
}


class StandInError(CourseError):
    """A stand-in cache that cannot be written or read."""


@dataclass(frozen=True)
class StandIn:
    """What a stand-in copies from its hub model: class, config structure (shrunk) and tokenizer conventions."""

    repo: str
    model_type: str                   # the transformers config class's model_type
    architecture: str                 # the model class named in config.json
    config: dict[str, Any]            # structural settings, shrunk (layer count, heads, widths)
    tokenizer_class: str              # as the hub's tokenizer_config.json names it
    bos: str | None
    eos: str
    pad: str | None
    extra: list[str] = field(default_factory=list)
    chat_template: str | None = None
    model_max_length: int = 1024
    generation_eos: list[str] = field(default_factory=list)


STANDINS: dict[str, StandIn] = {s.repo: s for s in (
    StandIn("gpt2", "gpt2", "GPT2LMHeadModel",
            dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024, n_ctx=1024, activation_function="gelu_new"),
            "GPT2Tokenizer", bos="<|endoftext|>", eos="<|endoftext|>", pad=None),
    StandIn("Qwen/Qwen2-0.5B", "qwen2", "Qwen2ForCausalLM",
            dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
                 use_sliding_window=False),
            "Qwen2Tokenizer", bos=None, eos="<|endoftext|>", pad="<|endoftext|>", extra=CHATML,
            chat_template=QWEN_TEMPLATE, model_max_length=32768),
    StandIn("Qwen/Qwen2-0.5B-Instruct", "qwen2", "Qwen2ForCausalLM",
            dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
                 use_sliding_window=False),
            "Qwen2Tokenizer", bos=None, eos="<|im_end|>", pad="<|endoftext|>", extra=CHATML,
            chat_template=QWEN_TEMPLATE, model_max_length=32768, generation_eos=["<|im_end|>", "<|endoftext|>"]),
    StandIn("HuggingFaceTB/SmolLM2-360M", "llama", "LlamaForCausalLM",
            dict(hidden_size=48, intermediate_size=128, num_hidden_layers=2, num_attention_heads=3,
                 num_key_value_heads=1, max_position_embeddings=8192, rope_theta=1e5, tie_word_embeddings=True),
            "GPT2Tokenizer", bos="<|endoftext|>", eos="<|endoftext|>", pad=None, extra=CHATML,
            chat_template=SMOL_TEMPLATE, model_max_length=8192),
)}


def cache_folder(cache_dir: str | Path, repo: str) -> Path:
    """Where the hub cache keeps `repo`: `<cache_dir>/hub/models--org--name` (`cache_dir` is what HF_HOME names)."""
    return Path(cache_dir) / "hub" / ("models--" + repo.replace("/", "--"))


def _commit(spec: StandIn) -> str:
    """A stable fake commit hash, so the same stand-in lands in the same snapshot folder every time."""
    return hashlib.sha1(json.dumps(spec.__dict__, sort_keys=True, default=str).encode()).hexdigest()


def standin_tokenizer(spec: StandIn):
    """The course's byte-level BPE, re-dressed with `spec`'s special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_DIR / "tokenizer.json"))
    tok.add_special_tokens({"additional_special_tokens": list(spec.extra)} if spec.extra else {})
    tok.add_tokens([t for t in (spec.eos, spec.bos, spec.pad) if t and t not in tok.get_vocab()], special_tokens=True)
    tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token = spec.bos, spec.eos, spec.pad, None
    tok.chat_template = spec.chat_template
    tok.model_max_length = spec.model_max_length
    return tok


def standin_model(spec: StandIn, vocab_size: int, token_ids: dict[str, int], seed: int = 0):
    """A randomly initialised model of `spec`'s class and (shrunk) structure."""
    from transformers import AutoConfig, AutoModelForCausalLM

    special = {"bos_token_id": token_ids.get(spec.bos) if spec.bos else token_ids[spec.eos],
               "eos_token_id": token_ids[spec.eos],
               "pad_token_id": token_ids.get(spec.pad) if spec.pad else None}
    config = AutoConfig.for_model(spec.model_type, vocab_size=vocab_size, architectures=[spec.architecture],
                                  **spec.config, **special)
    seed_torch(seed)
    return AutoModelForCausalLM.from_config(config)


def write_standin(spec: StandIn, cache_dir: str | Path) -> Path:
    """Write one stand-in into the hub cache under `cache_dir`; returns its snapshot folder."""
    tok = standin_tokenizer(spec)
    vocab_size = -(-len(tok) // 64) * 64  # round up, as real checkpoints pad their embedding tables
    ids = {t: tok.convert_tokens_to_ids(t) for t in {spec.bos, spec.eos, spec.pad, *spec.generation_eos} if t}
    model = standin_model(spec, vocab_size, ids)
    if spec.generation_eos:
        model.generation_config.eos_token_id = [ids[t] for t in spec.generation_eos]
    folder = cache_folder(cache_dir, spec.repo)
    commit = _commit(spec)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(snapshot, safe_serialization=True)
    tok.save_pretrained(snapshot)
    config_path = snapshot / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = spec.tokenizer_class
    config_path.write_text(json.dumps(config, indent=2))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def write_standins(cache_dir: str | Path, repos: list[str] | None = None) -> list[Path]:
    """Write a stand-in for each of `repos` (default: every hub id the course can load) under `cache_dir`.

    Use it with `HF_HOME=<cache_dir> HF_HUB_OFFLINE=1`; `rehearsal_env` gives the whole environment.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per stand-in
    repos = list(STANDINS) if repos is None else repos
    unknown = [r for r in repos if r not in STANDINS]
    if unknown:
        raise StandInError(f"no stand-in for {unknown[0]!r}; known: {sorted(STANDINS)}")
    try:
        return [write_standin(STANDINS[r], cache_dir) for r in repos]
    except OSError as err:
        raise StandInError(f"cannot write stand-ins under {Path(cache_dir).resolve()}: {err}") from None


def rehearsal_env(cache_dir: str | Path, device: str = "cpu") -> dict[str, str]:
    """Environment variables that run the gpu profile on the stand-ins: offline, claims shown but not asserted,
    models placed on `device` (`cpu` rehearses the gpu code path on a machine without CUDA)."""
    return {"COURSE_PROFILE": "gpu", "COURSE_DEVICE": device, "COURSE_REHEARSAL": "1",
            "HF_HOME": str(Path(cache_dir).resolve()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}
