"""Training plumbing shared by every lesson: tokenisation, collators and `TrainingArguments` with course defaults.

Lessons train with the Hugging Face `Trainer` (or `trl` trainers built on it), so what a learner sees here is what
they will use on real models. This module only fixes the defaults that matter for a small, repeatable, offline run.
"""

from __future__ import annotations

import tempfile
from typing import Any, Sequence

from course_utils.data import DataError


def bos_id(tokenizer) -> int:
    """The id every sequence starts with: BOS where the tokenizer has one, else EOS (Qwen2 has no BOS).

    A fixed first token matters: without it, the first position's prediction is noise that dominates
    distribution-shift measurements (LIBRARY_NOTES: about 8 nats of KL).
    """
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has neither a BOS nor an EOS token")
    return tid


def encode(tokenizer, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
    """Token ids of `text` with the course's conventions: BOS first, optional EOS last, no other specials."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([bos_id(tokenizer)] if add_bos else []) + ids + ([tokenizer.eos_token_id] if add_eos else [])


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int = 128):
    """A `datasets.Dataset` of causal-LM examples, one per text (BOS + text + EOS, truncated to `max_length`)."""
    from datasets import Dataset

    if len(texts) == 0:
        raise DataError("tokenize_texts: no texts given")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"tokenize_texts: text {i} is {type(text).__name__}, not str")
        ids = encode(tokenizer, text, add_eos=True)[:max_length]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return Dataset.from_list(rows)


def tokenize_prompt_completion(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                               max_length: int = 128):
    """Examples whose loss covers only the completion (labels -100 on the prompt): 'answer-only' fine-tuning."""
    from datasets import Dataset

    if len(prompts) != len(completions):
        raise DataError(f"tokenize_prompt_completion: {len(prompts)} prompts but {len(completions)} completions")
    if len(prompts) == 0:
        raise DataError("tokenize_prompt_completion: no examples given")
    rows = []
    for prompt, completion in zip(prompts, completions):
        p = encode(tokenizer, prompt)
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[:max_length]
        labels = ([-100] * len(p) + c)[:max_length]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return Dataset.from_list(rows)


def causal_collator(tokenizer):
    """Pads a batch; labels are the inputs (or the given labels) with padding masked to -100."""
    from transformers import DataCollatorForSeq2Seq

    # DataCollatorForSeq2Seq pads `labels` with -100 and is happy with decoder-only examples that carry labels.
    def collate(features: list[dict[str, Any]]):
        feats = [dict(f, labels=f.get("labels", f["input_ids"])) for f in features]
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(feats)

    return collate


def training_args(output_dir: str | None = None, **overrides):
    """`TrainingArguments` with course defaults: no reporting, no checkpoints unless asked, CPU when no GPU.

    Pass any `TrainingArguments` keyword to override. The defaults keep a notebook's run short and quiet.
    """
    import torch
    from transformers import TrainingArguments

    defaults: dict[str, Any] = dict(
        output_dir=output_dir or tempfile.mkdtemp(prefix="course-run-"),
        report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=50,
        per_device_train_batch_size=16, learning_rate=5e-4, lr_scheduler_type="constant_with_warmup",
        warmup_steps=10, seed=0, data_seed=0, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    defaults.update(overrides)
    return TrainingArguments(**defaults)
