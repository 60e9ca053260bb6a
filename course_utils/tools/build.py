"""`course build`: regenerate the world data, the tokenizer and the three tiny base models, reproducibly.

The full build pretrains each family until it recalls every attribute of the seen people (minutes per model on a
2-core CPU); it is run once by the maintainers and the results are committed. `--smoke` runs the same code path
for a handful of steps into a scratch folder, which is what CI does to keep the builder working.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from course_utils import world as W
from course_utils import zoo
from course_utils.evaluate import fact_recall
from course_utils.paths import DATA_DIR
from course_utils.pretrain import PRETRAIN_STAGES, pretrain
from course_utils.profiles import package_version, seed_everything
from course_utils.tokenizer import load_tokenizer, train_tokenizer


def build_data(out_dir: Path = DATA_DIR, config: W.WorldConfig = W.WorldConfig()) -> list[Path]:
    """Write every world data file (deterministic: same config, same bytes)."""
    return W.write_world(out_dir, config)


def build_tokenizer(out_dir: Path = DATA_DIR, config: W.WorldConfig = W.WorldConfig()):
    """Train the course tokenizer on everything the course will ever feed a tiny model, and save it."""

    world = W.make_world(config)
    texts = [r["text"] for r in W.pretraining_corpus(world)]
    texts += [r["text"] for r in W.heldout_bios(world)] + [r["text"] for r in W.reviews(world)]
    texts += [r["question"] + " " + r["answer"] for r in W.qa_pairs(world)]
    texts += [r["prompt"] + " " + r["response"] for r in W.safety_requests(world)]
    tok = train_tokenizer(texts)
    tok.save_pretrained(Path(out_dir) / "tokenizer")
    return tok


def build_models(families: Sequence[str], out_dir: Path = DATA_DIR, smoke: bool = False, resume: bool = False,
                 config: W.WorldConfig = W.WorldConfig(), log: Callable[[str], None] = print,
                 variant: str | None = None) -> dict[str, dict]:
    """Pretrain each family through `PRETRAIN_STAGES` and save it under `out_dir/models/<family>` (or, for a
    `variant` of `zoo.VARIANTS` such as 'deep', its size under `out_dir/models/<family>_<variant>`).

    After each stage the model is saved with its history, so an interrupted build loses at most one stage;
    `resume=True` continues from the saved model with the stages it has not finished yet.
    """
    import torch


    out_dir = Path(out_dir)
    tok = load_tokenizer(out_dir / "tokenizer")
    world = W.make_world(config)
    corpus = [r["text"] for r in W.pretraining_corpus(world)]
    stages = list(PRETRAIN_STAGES)
    if smoke:
        stages = [replace(st, steps=6, eval_every=3, batch_size=8) for st in stages]
    results = {}
    for family in families:
        folder = zoo.model_dir(family, out_dir / "models", variant)
        spec = zoo.VARIANTS[variant] if variant else zoo.TinySpec()
        info: dict = {"stages": []}
        if resume and (folder / "build_info.json").is_file():
            model, _ = zoo.load_local(folder)
            info = zoo.build_info(family, out_dir / "models", variant)
            info.setdefault("stages", [{"steps": info["steps"], "seconds": info["seconds"],
                                        "config": info["config"], "history": info["history"]}])
        else:
            seed_everything(stages[0].seed)
            model = zoo.build_model(family, tok, spec, seed=stages[0].seed)
        log(f"== {family}: {zoo.count_parameters(model):,} parameters, {len(info['stages'])} stage(s) done")
        for stage in stages[len(info["stages"]):]:
            seed_everything(stage.seed)
            done = pretrain(model, tok, corpus, world.seen, stage, log=log)
            offset = sum(st["steps"] for st in info["stages"])
            for h in done["history"]:
                h["step"] += offset
            info["stages"].append(done)
            info.update(family=family, parameters=zoo.count_parameters(model), world=asdict(config),
                        torch=torch.__version__, transformers=package_version("transformers"), smoke=smoke,
                        variant=variant, layers=spec.layers,
                        steps=offset + done["steps"], seconds=round(sum(st["seconds"] for st in info["stages"]), 1),
                        final_recall=done["final_recall"],
                        history=[h for st in info["stages"] for h in st["history"]],
                        config=[st["config"] for st in info["stages"]],
                        heldout_recall=_heldout_recall(model, tok, world))
            zoo.save(model, tok, folder, info)
            record_hashes(folder)
            if min(done["final_recall"].values()) >= stage.target_recall:
                break
        results[family] = info
    return results


HASH_KEY = "sha256"


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a model folder ships (weights, config, tokenizer files), by file name; build_info.json
    itself is left out, since it is where the hashes are kept. A changed byte anywhere changes its hash."""
    import hashlib

    hashes = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name != "build_info.json"):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        hashes[path.name] = digest.hexdigest()
    return hashes


def record_hashes(folder: Path) -> dict[str, str]:
    """Write the folder's file hashes into its build_info.json under "sha256", every other key unchanged;
    `course doctor` checks the shipped files against them."""
    info_path = Path(folder) / "build_info.json"
    info = json.loads(info_path.read_text())
    info[HASH_KEY] = file_hashes(folder)
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info[HASH_KEY]


def hash_problems(folder: Path) -> list[str]:
    """What differs between a model folder's files and the hashes its build_info.json recorded (empty: intact)."""
    info_path = Path(folder) / "build_info.json"
    try:
        recorded = json.loads(info_path.read_text()).get(HASH_KEY)
    except (OSError, ValueError, AttributeError):
        return [f"{info_path} is missing or damaged"]
    if not isinstance(recorded, dict) or not recorded:
        return [f"{info_path} records no {HASH_KEY} hashes (rebuild, or run build.record_hashes)"]
    actual = file_hashes(folder)
    return [f"{Path(folder) / name}: " + ("missing" if name not in actual else "changed since the build (sha256 "
                                          "differs; restore the file or rebuild)")
            for name, digest in sorted(recorded.items()) if actual.get(name) != digest]


def _heldout_recall(model, tok, world: W.World) -> dict[str, float]:
    return fact_recall(model, tok, world.heldout)


def build_all(families: Sequence[str], out_dir: Path = DATA_DIR, smoke: bool = False, data_only: bool = False,
              resume: bool = False, log: Callable[[str], None] = print, variant: str | None = None) -> dict:
    """Data, tokenizer, then models. The smoke build uses a fresh folder so the shipped files stay untouched."""
    out_dir = Path(out_dir)
    if smoke and out_dir.resolve() == DATA_DIR.resolve():
        raise ValueError("a smoke build would overwrite the shipped models; pass --out to a scratch folder")
    paths = build_data(out_dir)
    log(f"wrote {len(paths)} data files to {out_dir}")
    if data_only:
        return {}
    if not (out_dir / "tokenizer" / "tokenizer.json").is_file() or smoke:
        build_tokenizer(out_dir)
    results = build_models(families, out_dir, smoke=smoke, resume=resume, log=log, variant=variant)
    summary = {f: {"steps": r["steps"], "seconds": r["seconds"], "recall": r["final_recall"]} for f, r in results.items()}
    log(json.dumps(summary, indent=2))
    return results

