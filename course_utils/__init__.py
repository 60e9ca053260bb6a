"""Helpers for the fine-tuning course: the notebooks tell the story, these modules do the work.

The package has four tiers. A module imports only from its own tier or the tiers above it in this list, and a
lesson module never imports another lesson module (what two lessons share lives one tier down); a test
(`tests/test_architecture.py`) keeps it that way.

**Ground**: no models, no training; everything else stands on it.
    errors     the course's error type and its one vocabulary of input checks (rates, counts, rows, models)
    paths      where the repository, shipped data, models and run outputs live
    data       JSONL files in and out, with errors that name the file and line
    profiles   `setup()`: cpu or gpu profile, the one device helper (`place`), seeds, offline guard, report
    parallel   independent runs side by side: one worker process per free core, one torch thread each
    results    each lesson's saved table, in one documented format
    tokenizer  the course's byte-level BPE tokenizer
    text       text to ids: BOS/EOS conventions, chat prompts, padding, device placement
    config     one validated base for every training config, and how it becomes `TrainingArguments`
    claims     findings declared before the experiment, and one verdict over the seeds
    source     where the code a lesson calls lives: the modules a notebook imports, their links, `look_inside`

**Machinery**: what trains and measures models, shared by the lessons.
    world         the synthetic world: people, facts, biographies, Q/A, reviews, safety requests
    zoo           the tiny GPT-2, Qwen2 and Llama models (cpu) or hub checkpoints (gpu), loaded one way
    pretrain      how the shipped base models were pretrained (`course build`), and lesson 00's recall curve
    train         datasets for causal LMs, collators, the shared `Trainer` set-up, rehearsal, resumable runs
    evaluate      fact recall, perplexity, greedy generation; what a run learned and kept (`knowledge_probe`)
    peft_methods  LoRA, prefix tuning, IA3 and freezing per family
    classify      a decoder model as a text classifier; out-of-fold probabilities
    distill       knowledge distillation into a smaller student
    gpu           the gpu profile's loading plan (full, LoRA or 4-bit QLoRA by memory)
    layers        layer-by-layer comparison of two models (CKA, weight change, attention)

**Lesson modules**: one concept each, used by one lesson.
    costs (01), forgetting (02), quality (03), noise (04), overfitting (05), instruct and shift (06),
    bias (07), alignment and safety_filter (08), capstone (09)

**Tools** (`course_utils.tools`, never imported by a notebook):
    cli (the `course` command), runner, report, glossary, build, launch, api_contract, coursemap (runtimes from the
    benchmark into README and guide), fork (badges and set-up cells at a fork), site (the course as a website),
    sourcelinks (each notebook's list of the modules it uses, each module's lessons), standins (offline look-alikes
    of the hub checkpoints for gpu rehearsals)

This map is read by `tests/test_architecture.py`: each tier's modules are the first word of its indented rows, or
the comma-separated names of its indented lines (parenthesised notes aside). A subpackage (a folder such as
`alignment/`) takes the tier of its name, and its files may import each other.
"""

import os as _os


def _cpu_profile_at_import() -> bool:
    """The cpu profile, decided without importing torch: COURSE_PROFILE=cpu, or unset on a machine with no GPU."""
    requested = _os.environ.get("COURSE_PROFILE", "").strip().lower()
    if requested:
        return requested == "cpu"
    return not any(_os.path.exists(f"/dev/nvidia{i}") for i in range(8))


if _cpu_profile_at_import():  # offline means offline, whether or not a script calls setup() first
    for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        _os.environ.setdefault(_var, "1")
