"""The course tokenizer: a byte-level BPE trained on the world corpus, saved as a `transformers` fast tokenizer.

The world has a closed vocabulary, so BPE stops at about 2 k tokens and every surname and attribute value
becomes a single token. Byte-level means *any* text still encodes (typos, foreign characters, encoding debris),
which the noise and data-quality lessons need. The chat template is the same shape as real chat models'.

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from course_utils.errors import CourseError, check_texts


BOS_EOS = "<|endoftext|>"
PAD = "<|pad|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# A minimal chat format: role marker, content, end marker. `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """Train a byte-level BPE on `texts` and wrap it as a `PreTrainedTokenizerFast` with pad/eos and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast


    texts = check_texts(texts, "train_tokenizer")
    if not texts:
        raise CourseError("train_tokenizer: no texts given")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[BOS_EOS, PAD, *CHAT_TOKENS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS_EOS, eos_token=BOS_EOS, unk_token=None, pad_token=PAD,
        additional_special_tokens=CHAT_TOKENS, model_max_length=256)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def load_tokenizer(path: str | Path):
    """Load a saved course tokenizer (or any fast tokenizer folder) without touching the network."""
    from transformers import AutoTokenizer


    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise CourseError(f"{path}: no tokenizer.json here; rebuild the shipped models with `course build`")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
