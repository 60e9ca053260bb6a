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
from course_utils.paths import DATA_DIR


def build_data(out_dir: Path = DATA_DIR, config: W.WorldConfig = W.WorldConfig()) -> list[Path]:
    """Write every world data file (deterministic: same config, same bytes)."""
    return W.write_world(out_dir, config)


def build_tokenizer(out_dir: Path = DATA_DIR, config: W.WorldConfig = W.WorldConfig()):
    """Train the course tokenizer on everything the course will ever feed a tiny model, and save it."""
    from course_utils.tokenizer import train_tokenizer

    world = W.make_world(config)
    texts = [r["text"] for r in W.pretraining_corpus(world)]
    texts += [r["text"] for r in W.heldout_bios(world)] + [r["text"] for r in W.reviews(world)]
    texts += [r["question"] + " " + r["answer"] for r in W.qa_pairs(world)]
    texts += [r["prompt"] + " " + r["response"] for r in W.safety_requests(world)]
    tok = train_tokenizer(texts)
    tok.save_pretrained(Path(out_dir) / "tokenizer")
    return tok


def build_models(families: Sequence[str], out_dir: Path = DATA_DIR, smoke: bool = False,
                 config: W.WorldConfig = W.WorldConfig(), log: Callable[[str], None] = print) -> dict[str, dict]:
    """Pretrain each family on the world corpus and save it under `out_dir/models/<family>`."""
    import torch

    from course_utils import zoo
    from course_utils.profiles import package_version, seed_everything
    from course_utils.tokenizer import load_tokenizer

    out_dir = Path(out_dir)
    tok = load_tokenizer(out_dir / "tokenizer")
    world = W.make_world(config)
    corpus = [r["text"] for r in W.pretraining_corpus(world)]
    pre = zoo.PretrainConfig()
    if smoke:
        pre = replace(pre, max_steps=12, eval_every=6, batch_size=8)
    results = {}
    for family in families:
        seed_everything(pre.seed)
        model = zoo.build_model(family, tok, seed=pre.seed)
        log(f"== {family}: {zoo.count_parameters(model):,} parameters")
        info = zoo.pretrain(model, tok, corpus, world.seen, pre, log=log)
        info.update(family=family, parameters=zoo.count_parameters(model), world=asdict(config),
                    torch=torch.__version__, transformers=package_version("transformers"), smoke=smoke,
                    heldout_recall=_heldout_recall(model, tok, world))
        zoo.save(model, tok, zoo.model_dir(family, out_dir / "models"), info)
        results[family] = info
    return results


def _heldout_recall(model, tok, world: W.World) -> dict[str, float]:
    from course_utils.evaluate import fact_recall

    return fact_recall(model, tok, world.heldout)


def build_all(families: Sequence[str], out_dir: Path = DATA_DIR, smoke: bool = False, data_only: bool = False,
              log: Callable[[str], None] = print) -> dict:
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
    results = build_models(families, out_dir, smoke=smoke, log=log)
    summary = {f: {"steps": r["steps"], "seconds": r["seconds"], "recall": r["final_recall"]} for f, r in results.items()}
    log(json.dumps(summary, indent=2))
    return results

