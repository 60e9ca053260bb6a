"""The model zoo: tiny GPT-2, Qwen2 and Llama models, how they are built, and `load(family)` in either profile.

The three families differ in ways that matter for fine-tuning later:

| family | norm | positions | attention projections (LoRA targets) |
|---|---|---|---|
| GPT-2 | LayerNorm | learned absolute | one fused `c_attn` (q, k and v in one matrix) and `c_proj` |
| Qwen2 | RMSNorm | rotary (RoPE) | separate `q_proj`, `k_proj`, `v_proj` (with bias), `o_proj`; grouped KV heads |
| Llama | RMSNorm | rotary (RoPE) | separate `q_proj`, `k_proj`, `v_proj`, `o_proj` (no bias) |

In the `cpu` profile each family is a ~1 M-parameter model pretrained by `course build` on the world corpus and
shipped as safetensors in `data_samples/models/<family>/`; in the `gpu` profile it is a real hub checkpoint.
A local folder is checked before any model is built (`check_folder`): its config must be its folder's family and
agree with the shapes in the safetensors header, so a damaged or mismatched file is one line naming it.

Used in lessons: 00, 01, 02, 04, 05, 06, 08, 09
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from course_utils.errors import CourseError, check_model
from course_utils.paths import MODELS_DIR
from course_utils.profiles import choose_profile, place, seed_torch
from course_utils.text import ensure_chat_template


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
    """Unknown family; a missing, damaged or mismatched model folder; or a hub model that cannot be fetched."""


@dataclass(frozen=True)
class TinySpec:
    """Size of a tiny model: about 1 M parameters with a 1.7 k vocabulary."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_positions: int = 256


DEEP_SPEC = TinySpec(layers=8)
"""Lesson 04's deeper variant: the same width with twice the blocks, so that "upper versus lower layers" is a
question four blocks on each side can answer (`course build --family qwen2 --variant deep`)."""
VARIANTS = {"deep": DEEP_SPEC}


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
    from transformers import AutoModelForCausalLM

    seed_torch(seed)
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


def model_dir(family: str, models_dir: Path = MODELS_DIR, variant: str | None = None) -> Path:
    """Where a shipped model lives: `models/<family>`, or `models/<family>_<variant>` for a variant."""
    check_family(family)
    if variant is None:
        return Path(models_dir) / family
    if variant not in VARIANTS:
        raise ZooError(f"unknown model variant {variant!r}; choose one of {tuple(VARIANTS)}")
    return Path(models_dir) / f"{family}_{variant}"


QA_SUFFIX = "_qa"  # models/<family>_qa: the base after continued pretraining on Q/A text (`instruct.build_qa_base`)


def load_qa(family: str, models_dir: Path = MODELS_DIR):
    """(model, tokenizer): the shipped Q/A base of `family`, a base that can answer questions about the people it
    knows (lessons 06 and 08), loaded and checked like any shipped model."""
    folder = Path(models_dir) / f"{check_family(family)}{QA_SUFFIX}"
    if not folder.is_dir():
        raise ZooError(f"{folder}: missing; rebuild it with `python -m course_utils.instruct bases`")
    return load_local(folder)


def load_variant(family: str, variant: str, profile: str | None = None, models_dir: Path = MODELS_DIR):
    """The shipped `variant` of `family` (e.g. the 8-block 'deep' Qwen2) in the cpu profile. The gpu profile's hub
    checkpoints already have 12 to 32 blocks, so there the variant *is* the hub model (`load`)."""
    folder = model_dir(family, models_dir, variant)
    if choose_profile(profile) == "gpu":
        return load(family, profile)
    if not folder.is_dir():
        raise ZooError(f"{folder}: missing; build it with `course build --family {family} --variant {variant}`")
    return load_local(folder)


def save(model, tokenizer, out_dir: Path, info: dict) -> Path:
    """Save weights as safetensors, the config, the tokenizer, and how the model was built (build_info.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_dir


def build_info(family: str, models_dir: Path = MODELS_DIR, variant: str | None = None) -> dict:
    """How a shipped model (or its `variant`) was built: steps, seconds, final recall, its pretraining config."""
    path = model_dir(family, models_dir, variant) / "build_info.json"
    if not path.is_file():
        raise ZooError(f"{path}: missing; rebuild the shipped models with `course build`")
    return json.loads(path.read_text())


# What a model folder holds; the small JSON files are read whole before loading (they are tiny).
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
SMALL_JSON = (CONFIG, "generation_config.json", "tokenizer_config.json")
LAYER_INDEX = {"gpt2": re.compile(r"(?:^|\.)h\.(\d+)\."), "qwen2": re.compile(r"(?:^|\.)layers\.(\d+)\."),
               "llama": re.compile(r"(?:^|\.)layers\.(\d+)\.")}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}  # model weights are floating point
REBUILD = "restore it or rebuild with `course build`"


def read_json_file(path: Path) -> dict:
    """A JSON object from `path`; a truncated or damaged file is a one-line `ZooError` naming it."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        why = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise ZooError(f"{path}: damaged or truncated JSON ({why}); {REBUILD}") from None
    if not isinstance(value, dict):
        raise ZooError(f"{path}: expected a JSON object, got {type(value).__name__}; {REBUILD}")
    return value


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header alone (an 8-byte length, then JSON); no weight is read.

    The header also says where each tensor's bytes lie, so a truncated or padded file is caught here too."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else 0
        if n < 2 or 8 + n > size:
            raise ZooError(f"{path}: truncated or not safetensors ({size} bytes, no complete header); {REBUILD}")
        header = f.read(n)
    try:
        meta = json.loads(header)
        meta.pop("__metadata__", None)
        tensors = {k: ([int(d) for d in v["shape"]], [int(o) for o in v["data_offsets"]], v["dtype"])
                   for k, v in meta.items()}
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError):
        raise ZooError(f"{path}: damaged safetensors header; {REBUILD}") from None
    promised = max((offsets[-1] for _, offsets, _ in tensors.values()), default=0)
    if promised != size - 8 - n:
        raise ZooError(f"{path}: truncated or damaged: its header describes {promised} bytes of weights, the file "
                       f"holds {size - 8 - n}; {REBUILD}")
    for name, (shape, offsets, dtype) in tensors.items():
        if len(offsets) != 2 or offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES.get(dtype, -1):
            raise ZooError(f"{path}: damaged header: tensor {name!r} {shape} {dtype} does not fit its bytes "
                           f"{offsets} (or is not floating point); {REBUILD}")
    return {name: shape for name, (shape, _, _) in tensors.items()}


def _config_of(raw: dict, path: Path, family: str | None):
    """The `transformers` config of a folder's config.json, once its `model_type` is checked against `family`."""
    from transformers import AutoConfig

    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise ZooError(f"{path}: model_type {model_type!r} is not a course family {FAMILIES}")
    if family is not None and model_type != family:
        raise ZooError(f"{path}: model_type {model_type!r} in the {family} folder; this config belongs to another "
                       f"model (building it would make a default-size {model_type}, not the tiny one)")
    try:
        return AutoConfig.for_model(**raw)
    except Exception as err:  # noqa: BLE001 - configs validate fields with huggingface_hub's own error types
        raise ZooError(f"{path}: invalid config ({str(err).splitlines()[0] if str(err) else type(err).__name__})") \
            from None


def _size(config, name: str, where, default=None) -> int:
    """A size field of the config as a positive integer, else a one-line `ZooError` naming the file and field."""
    value = getattr(config, name, None)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ZooError(f"{where}: {name} must be a positive integer, got {value!r}")
    return value


def expected_shapes(config, where=CONFIG) -> dict[str, list[int]]:
    """The shapes config.json promises for the tensors that fix a model's size (layer 0 stands for every layer):
    vocabulary x hidden size, positions (GPT-2), attention and MLP widths."""
    vocab, hidden, heads = (_size(config, n, where) for n in ("vocab_size", "hidden_size", "num_attention_heads"))
    if config.model_type == "gpt2":
        inner, positions = _size(config, "n_inner", where, 4 * hidden), _size(config, "n_positions", where)
        return {"wte.weight": [vocab, hidden], "wpe.weight": [positions, hidden],
                "h.0.attn.c_attn.weight": [hidden, 3 * hidden], "h.0.attn.c_proj.weight": [hidden, hidden],
                "h.0.mlp.c_fc.weight": [hidden, inner], "h.0.mlp.c_proj.weight": [inner, hidden]}
    inner, head_dim = _size(config, "intermediate_size", where), _size(config, "head_dim", where, hidden // heads)
    q, kv = heads * head_dim, _size(config, "num_key_value_heads", where, heads) * head_dim
    attn, mlp = "layers.0.self_attn.", "layers.0.mlp."
    return {"embed_tokens.weight": [vocab, hidden], attn + "q_proj.weight": [q, hidden],
            attn + "k_proj.weight": [kv, hidden], attn + "v_proj.weight": [kv, hidden],
            attn + "o_proj.weight": [hidden, q], mlp + "gate_proj.weight": [inner, hidden],
            mlp + "up_proj.weight": [inner, hidden], mlp + "down_proj.weight": [hidden, inner]}


def check_weights(shapes: dict[str, list[int]], config, path: Path, config_path=CONFIG) -> None:
    """The weights' shapes agree with the config (vocabulary, hidden size, widths, number of layers), so no model
    is built at a size the file does not hold, and no layer is silently dropped or left random."""
    for suffix, want in expected_shapes(config, config_path).items():
        got = [shape for name, shape in shapes.items() if name == suffix or name.endswith("." + suffix)]
        if got[:1] != [want]:
            raise ZooError(f"{path}: tensor {suffix!r} is {got[0] if got else 'missing'} but config.json says "
                           f"{want}; the config and the weights do not belong together")
    layers = sorted({int(m.group(1)) for name in shapes if (m := LAYER_INDEX[config.model_type].search(name))})
    if layers != list(range(_size(config, "num_hidden_layers", config_path))):
        raise ZooError(f"{path}: holds {len(layers)} layers but config.json says {config.num_hidden_layers}; "
                       f"layers would be dropped or left random")


def check_folder(path: Path, family: str | None = None):
    """Everything about a model folder that can be checked before a model is built; returns its config.

    The files are there, the small JSON files parse, `model_type` is the folder's family, and the safetensors
    header (read alone, no weights) agrees with config.json."""
    path = Path(path)
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        raise ZooError(f"{path}: no shipped model here (model.safetensors + config.json); "
                       f"rebuild it with `course build` (see README)")
    if not (path / TOKENIZER).is_file():
        raise ZooError(f"{path}: the model's tokenizer is missing (tokenizer.json); rebuild it with `course build`")
    raw = {name: read_json_file(path / name) for name in SMALL_JSON if (path / name).is_file()}
    config = _config_of(raw[CONFIG], path / CONFIG, family)
    check_weights(safetensors_shapes(path / WEIGHTS), config, path / WEIGHTS, path / CONFIG)
    return config


def _load_tokenizer(path: Path, vocab_rows: int):
    """The folder's tokenizer; a damaged tokenizer file, or one with more tokens than the embedding table has
    rows, is a one-line `ZooError` naming the file."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises bare `Exception`; name the file instead
        read_json_file(path / TOKENIZER)  # a damaged tokenizer.json names itself here
        raise ZooError(f"{path / TOKENIZER}: the tokenizer cannot be loaded ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}); restore it or rebuild") from None
    if len(tokenizer) > vocab_rows:
        raise ZooError(f"{path / TOKENIZER}: {len(tokenizer)} tokens but the model's embedding table has "
                       f"{vocab_rows} rows; this tokenizer belongs to another model")
    return tokenizer


def load_local(path: str | Path, model_class=None, **model_kwargs):
    """Model and tokenizer from a local folder, offline, safetensors only, never remote code.

    The folder is checked first (`check_folder`): a damaged file, a config of another family or size, or a
    tokenizer that does not fit is a one-line `ZooError` naming the file, before any model is built. A folder
    named after a family must hold that family. `model_kwargs` go to `from_pretrained` (e.g. `num_labels=2`
    with a sequence-classification class)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    config = check_folder(path, path.name if path.name in FAMILIES else None)
    tokenizer = _load_tokenizer(path, config.vocab_size)
    cls = model_class or AutoModelForCausalLM
    try:
        model, info = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                          trust_remote_code=False, output_loading_info=True,
                                          **{"ignore_mismatched_sizes": True, **model_kwargs})
    except (RuntimeError, ValueError, OSError) as err:
        raise ZooError(f"{path / WEIGHTS}: cannot be loaded as {cls.__name__} ({type(err).__name__}: "
                       f"{str(err).splitlines()[0]})") from None
    _check_loading_info(model, info, path / WEIGHTS)
    return model, tokenizer


def _output_head_names(model) -> set[str]:
    """Parameter names of a language model's own output head (`lm_head.weight`): listed only when it is not tied
    to the input embeddings (a tied head shares their tensor, so it has no name of its own)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return set()
    own = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in own}


def _check_loading_info(model, info: dict, path: Path) -> None:
    """No tensor of the base model was missing from the file, left unused or of the wrong shape, and a language
    model's output head was in the file unless it is tied to the input embeddings (a config that unties them over
    tied weights would leave a random head). A new head, such as a classifier's `score`, is expected to be
    missing: it is trained later."""
    base = getattr(model, "base_model_prefix", "") + "."
    head = _output_head_names(model)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(kind) or ())
        bad = [n for n in names if n.startswith(base) or (kind == "missing_keys" and n in head)]
        if bad:
            raise ZooError(f"{path}: {len(bad)} {kind.replace('_', ' ')} in the base model (first: {bad[0]}); "
                           f"the config and the weights do not belong together")


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
    ensure_chat_template(tokenizer)
    if "device_map" not in kwargs:  # a quantised load places itself; everything else goes to the course device
        model = place(model)
    return model, tokenizer


def load(family: str, profile: str | None = None, model_class=None, models_dir: Path = MODELS_DIR, **kwargs):
    """Model and tokenizer of `family`: the shipped tiny model (cpu profile) or the hub checkpoint (gpu profile).

    `model_class` picks a head, e.g. `AutoModelForSequenceClassification` for classification lessons; other
    keywords go to `from_pretrained` (`num_labels=2`, or `torch_dtype`/quantisation settings on a GPU).
    """

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
