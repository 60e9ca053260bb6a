"""The model zoo: tiny GPT-2, Qwen2 and Llama models, how they are built, and `load(family)` in either profile.

The three families differ in ways that matter for fine-tuning later:

| family | norm | positions | attention projections (LoRA targets) |
|---|---|---|---|
| GPT-2 | LayerNorm | learned absolute | one fused `c_attn` (q, k and v in one matrix) and `c_proj` |
| Qwen2 | RMSNorm | rotary (RoPE) | separate `q_proj`, `k_proj`, `v_proj` (with bias), `o_proj`; grouped KV heads |
| Llama | RMSNorm | rotary (RoPE) | separate `q_proj`, `k_proj`, `v_proj`, `o_proj` (no bias) |

In the `cpu` profile each family is a ~1 M-parameter model pretrained by `course build` on the world corpus and
shipped as safetensors in `data_samples/models/<family>/`; in the `gpu` profile it is a real hub checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from course_utils.errors import CourseError, check_model
from course_utils.paths import MODELS_DIR

FAMILIES = ("gpt2", "qwen2", "llama")
# The gpu profile's checkpoints: ungated, same architectures. SmolLM2 is a Llama-architecture model that needs no
# licence acceptance (the gated Llama-2 checkpoints would block learners without a hub token).
HUB_MODELS = {"gpt2": "gpt2", "qwen2": "Qwen/Qwen2-0.5B", "llama": "HuggingFaceTB/SmolLM2-360M"}
ARCHITECTURE_NOTES = {
    "gpt2": {"norm": "LayerNorm", "positions": "learned absolute", "attention": "fused c_attn (q|k|v)",
             "lora_targets": "c_attn, c_proj (attention)"},
    "qwen2": {"norm": "RMSNorm", "positions": "rotary (RoPE)", "attention": "separate q/k/v/o, grouped KV heads",
              "lora_targets": "q_proj, k_proj, v_proj, o_proj"},
    "llama": {"norm": "RMSNorm", "positions": "rotary (RoPE)", "attention": "separate q/k/v/o",
              "lora_targets": "q_proj, k_proj, v_proj, o_proj"},
}


class ZooError(CourseError):
    """Unknown family, missing shipped model, or a hub model that cannot be fetched."""


@dataclass(frozen=True)
class TinySpec:
    """Size of a tiny model: about 1 M parameters with a 1.7 k vocabulary."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_positions: int = 256


def check_family(family: str) -> str:
    if not isinstance(family, str) or family not in FAMILIES:
        raise ZooError(f"unknown model family {family!r}; choose one of {FAMILIES}")
    return family


def tiny_config(family: str, tokenizer, spec: TinySpec = TinySpec()):
    """A `transformers` config of the given family at tiny size, with the course tokenizer's special ids."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    check_family(family)
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if family == "gpt2":
        return GPT2Config(n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads, n_inner=4 * spec.hidden,
                          n_positions=spec.max_positions, **ids)
    common = dict(hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                  intermediate_size=spec.intermediate, max_position_embeddings=spec.max_positions,
                  tie_word_embeddings=True, **ids)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=spec.heads // 2, **common)
    return LlamaConfig(num_key_value_heads=spec.heads, **common)


def build_model(family: str, tokenizer, spec: TinySpec = TinySpec(), seed: int = 0):
    """A freshly initialised tiny causal LM of `family` (random weights; `pretrain` teaches it the world)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, tokenizer, spec))


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters; tied embeddings are counted once."""
    if not hasattr(model, "parameters"):
        raise ZooError(f"count_parameters: expected a torch model, got {type(model).__name__}")
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@dataclass
class PretrainConfig:
    """How `course build` pretrains a tiny model: until every attribute of the seen people is recalled."""

    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_steps: int = 30
    max_steps: int = 3000
    decay_steps: int = 1000       # warmup-stable-decay's final cosine decay; 0 keeps the rate constant
    eval_every: int = 200
    target_recall: float = 0.95   # stop once every attribute's recall on the seen people reaches this
    seed: int = 0
    max_length: int = 96


def pretrain(model, tokenizer, texts: list[str], people, config: PretrainConfig = PretrainConfig(),
             log: Callable[[str], None] = print) -> dict:
    """Train `model` on `texts` with `Trainer` until fact recall on `people` reaches the target (or max_steps).

    Memorising a fact is a sudden jump, not a climb: the loss sits near 0.9 while templates are learned, then
    facts appear. So we stop on the *minimum* recall over attributes, checked every `eval_every` steps.
    """
    from transformers import Trainer, TrainerCallback

    from course_utils.evaluate import fact_recall
    from course_utils.train import causal_collator, tokenize_texts, training_args

    history: list[dict] = []

    class RecallStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % config.eval_every and state.global_step < config.max_steps:
                return control
            recall = fact_recall(kwargs["model"], tokenizer, people)
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), float("nan"))
            history.append({"step": state.global_step, "loss": loss, **recall})
            log(f"step {state.global_step:5d}  loss {loss:.3f}  " + "  ".join(f"{k} {v:.2f}" for k, v in recall.items()))
            kwargs["model"].train()
            if min(recall.values()) >= config.target_recall:
                control.should_training_stop = True
            return control

    args = training_args(per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                         warmup_steps=config.warmup_steps, max_steps=config.max_steps, seed=config.seed,
                         **_schedule(config),
                         data_seed=config.seed, logging_steps=50, weight_decay=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=tokenize_texts(tokenizer, texts, config.max_length),
                      data_collator=causal_collator(tokenizer), callbacks=[RecallStop()])
    start = time.perf_counter()
    trainer.train()
    return {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - start, 1),
            "final_recall": {k: v for k, v in history[-1].items() if k not in ("step", "loss")},
            "history": history, "config": asdict(config)}


def _schedule(config: PretrainConfig) -> dict:
    if config.decay_steps <= 0:
        return {"lr_scheduler_type": "constant_with_warmup"}
    return {"lr_scheduler_type": "warmup_stable_decay",
            "lr_scheduler_kwargs": {"num_decay_steps": min(config.decay_steps, config.max_steps // 2)}}


# The build's stages (one today). The build saves after each stage, and `course build --resume` runs only the
# stages a saved model has not finished, so a later curriculum (say, a small-batch polish) can be added here.
PRETRAIN_STAGES = (PretrainConfig(),)


def model_dir(family: str, models_dir: Path = MODELS_DIR) -> Path:
    return Path(models_dir) / check_family(family)


def save(model, tokenizer, out_dir: Path, info: dict) -> Path:
    """Save weights as safetensors, the config, the tokenizer, and how the model was built (build_info.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_dir


def build_info(family: str, models_dir: Path = MODELS_DIR) -> dict:
    """How a shipped model was built: steps, seconds, final recall, its pretraining config."""
    path = model_dir(family, models_dir) / "build_info.json"
    if not path.is_file():
        raise ZooError(f"{path}: missing; rebuild the shipped models with `course build`")
    return json.loads(path.read_text())


def load_local(path: str | Path, model_class=None, **model_kwargs):
    """Model and tokenizer from a local folder, offline, safetensors only, never remote code.

    `model_kwargs` go to `from_pretrained` (e.g. `num_labels=2` with a sequence-classification class)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise ZooError(f"{path}: no shipped model here (model.safetensors + config.json); "
                       f"rebuild it with `course build` (see README)")
    if not (path / "tokenizer.json").is_file():
        raise ZooError(f"{path}: the model's tokenizer is missing (tokenizer.json); rebuild it with `course build`")
    cls = model_class or AutoModelForCausalLM
    model = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False,
                                **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    return model, tokenizer


def load_hub(family: str, model_class=None, **kwargs):
    """The gpu profile's real checkpoint of `family`; a one-line error if the hub cannot be reached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo = HUB_MODELS[check_family(family)]
    cls = model_class or AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=False)
        model = cls.from_pretrained(repo, use_safetensors=True, trust_remote_code=False, **kwargs)
    except OSError as err:
        raise ZooError(f"could not fetch {repo!r} from the Hugging Face hub (no network, or offline mode?): "
                       f"{str(err).splitlines()[0]}; use the cpu profile for the shipped tiny models") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load(family: str, profile: str | None = None, model_class=None, models_dir: Path = MODELS_DIR, **kwargs):
    """Model and tokenizer of `family`: the shipped tiny model (cpu profile) or the hub checkpoint (gpu profile).

    `model_class` picks a head, e.g. `AutoModelForSequenceClassification` for classification lessons; other
    keywords go to `from_pretrained` (`num_labels=2`, or `torch_dtype`/quantisation settings on a GPU).
    """
    from course_utils.profiles import choose_profile

    check_family(family)
    if choose_profile(profile) == "gpu":
        return load_hub(family, model_class, **kwargs)
    return load_local(model_dir(family, models_dir), model_class, **kwargs)


def describe(model) -> dict[str, object]:
    """One row of architecture facts for the side-by-side table of lesson 00."""
    check_model(model, "describe", error=ZooError)
    cfg = model.config
    family = cfg.model_type
    # the weight matrices inside attention blocks: what LoRA will later target
    attn = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if "attn." in n and getattr(getattr(m, "weight", None), "dim", lambda: 0)() == 2})
    return {
        "family": family,
        "class": type(model).__name__,
        "parameters": count_parameters(model),
        "layers": cfg.num_hidden_layers,
        "hidden size": cfg.hidden_size,
        "heads (q / kv)": f"{cfg.num_attention_heads} / {getattr(cfg, 'num_key_value_heads', None) or cfg.num_attention_heads}",
        "norm": ARCHITECTURE_NOTES.get(family, {}).get("norm", "?"),
        "positions": ARCHITECTURE_NOTES.get(family, {}).get("positions", "?"),
        "attention matrices": ", ".join(attn),
        "tied embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
    }
