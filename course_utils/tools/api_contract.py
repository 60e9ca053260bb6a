"""The library entry points and keywords `course_utils` calls: checked against the installed versions.

`trl` and `transformers` rename things between releases (`tokenizer=` became `processing_class=`,
`evaluation_strategy` became `eval_strategy`, `max_seq_length` became `max_length`). Every call `course_utils`
makes into those libraries is listed here; `check_contract()` looks each one up with `inspect.signature`, so an
upgrade that renames one fails loudly, with the name, in `tests/test_api_drift.py` and in `course doctor`.
When a module calls a new library function or keyword, declare it in that module's `LIBRARY_CALLS` dict
(same shape as `SIGNATURES` below); `check_contract()` collects them all.
"""

from __future__ import annotations

import importlib
import inspect

# "module:qualified.name" -> keywords course_utils passes to it.
SIGNATURES: dict[str, list[str]] = {
    "transformers:TrainingArguments": [
        "output_dir", "report_to", "save_strategy", "logging_strategy", "logging_steps",
        "per_device_train_batch_size", "learning_rate", "lr_scheduler_type", "warmup_steps", "seed", "data_seed",
        "use_cpu", "dataloader_num_workers", "disable_tqdm", "remove_unused_columns", "max_steps",
        "weight_decay", "lr_scheduler_kwargs"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator", "callbacks"],
    "transformers:TrainerCallback.on_step_end": ["args", "state", "control"],
    "transformers:DataCollatorForSeq2Seq": ["tokenizer", "padding", "label_pad_token_id"],
    "transformers.models.auto.auto_factory:_BaseAutoModelClass.from_config": ["config"],
    "transformers:PreTrainedModel.from_pretrained": ["pretrained_model_name_or_path"],
    "transformers:PreTrainedModel.save_pretrained": ["save_directory"],
    "transformers:PreTrainedTokenizerFast.__init__": [],
    "transformers:GenerationMixin.generate": ["inputs"],
    "tokenizers.trainers:BpeTrainer": ["vocab_size", "min_frequency", "show_progress", "special_tokens",
                                       "initial_alphabet"],
    "tokenizers.pre_tokenizers:ByteLevel": ["add_prefix_space"],
    "tokenizers.processors:ByteLevel": ["trim_offsets"],
    "datasets:Dataset.from_list": ["mapping"],
    "nbclient:NotebookClient.async_execute_cell": ["cell", "cell_index"],  # execute_cell wraps it,
}

# Keywords that reach a library through **kwargs (configs, from_pretrained, generate): checked by building the
# object and reading the attribute back, since a renamed keyword would be silently stored and ignored otherwise.
CONFIG_ATTRIBUTES: dict[str, dict[str, object]] = {
    "transformers:GPT2Config": {"n_embd": 64, "n_layer": 2, "n_head": 2, "n_inner": 128, "n_positions": 64,
                                "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1},
    "transformers:Qwen2Config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "num_key_value_heads": 1, "intermediate_size": 96, "max_position_embeddings": 64,
                                 "tie_word_embeddings": True, "vocab_size": 100, "pad_token_id": 1},
    "transformers:LlamaConfig": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "num_key_value_heads": 2, "intermediate_size": 96, "max_position_embeddings": 64,
                                 "tie_word_embeddings": True, "vocab_size": 100, "pad_token_id": 1},
    "transformers:GenerationConfig": {"do_sample": False, "max_new_tokens": 4, "pad_token_id": 1,
                                      "eos_token_id": 0},
}


def resolve(target: str):
    """'module:Qual.name' -> the object."""
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def all_signatures() -> dict[str, list[str]]:
    """This file's table plus every `LIBRARY_CALLS` table that a `course_utils` module declares for its own calls."""
    import pkgutil

    import course_utils

    table = {k: list(v) for k, v in SIGNATURES.items()}
    for info in pkgutil.walk_packages(course_utils.__path__, prefix="course_utils."):
        module = importlib.import_module(info.name)
        for target, keywords in getattr(module, "LIBRARY_CALLS", {}).items():
            table.setdefault(target, [])
            table[target] += [k for k in keywords if k not in table[target]]
    return table


def check_contract() -> list[str]:
    """Every broken entry as 'target: problem'; an empty list means the installed libraries fit the course."""
    problems = []
    for target, keywords in all_signatures().items():
        try:
            params = inspect.signature(resolve(target)).parameters
        except (ImportError, AttributeError) as err:
            problems.append(f"{target}: not found ({err})")
            continue
        missing = [k for k in keywords if k not in params]
        if missing:
            problems.append(f"{target}: no keyword(s) {', '.join(missing)}")
    for target, attrs in CONFIG_ATTRIBUTES.items():
        try:
            obj = resolve(target)(**attrs)
        except Exception as err:  # any failure to build is drift worth reporting by name
            problems.append(f"{target}: cannot be built with {sorted(attrs)} ({type(err).__name__}: {err})")
            continue
        wrong = [k for k, v in attrs.items() if getattr(obj, k, object()) != v]
        if wrong:
            problems.append(f"{target}: keyword(s) {', '.join(wrong)} no longer set the attribute")
    return problems
