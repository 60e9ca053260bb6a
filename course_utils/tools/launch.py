"""A course training recipe as a script, for one process or many: `python -m course_utils.tools.launch` runs it alone,
`accelerate launch ... -m course_utils.tools.launch` runs it data-parallel.

The recipe is the one the lessons use (teach a model the biographies of held-out people, full fine-tuning or
LoRA), trained by `Trainer`. `Trainer` reads the distributed environment that `accelerate launch` sets up, so the
same code runs as N processes, each on its share of every batch, with gradients averaged (DDP), or with the
weights sharded (FSDP) when the accelerate config says so. Configs in `configs/accelerate/`:

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m course_utils.tools.launch --steps 20
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m course_utils.tools.launch --family qwen2
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m course_utils.tools.launch --family llama

Rank 0 writes `metrics.json` (world size, steps, final loss, new-fact recall) into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from course_utils import world as W
from course_utils import zoo
from course_utils.config import training_args
from course_utils.errors import CourseError
from course_utils.evaluate import fast_fact_recall
from course_utils.peft_methods import apply_lora
from course_utils.profiles import setup
from course_utils.train import causal_collator, run_dir, tokenize_texts


LIBRARY_CALLS = {
    "transformers:TrainingArguments": ["ddp_backend", "max_steps", "learning_rate", "per_device_train_batch_size",
                                       "seed", "data_seed", "logging_steps"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m course_utils.tools.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="gpt2", help="gpt2, qwen2 or llama")
    p.add_argument("--method", default="full", choices=["full", "lora"])
    p.add_argument("--people", type=int, default=16, help="how many held-out people to teach")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8, help="per process; the global batch is this x processes")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: a new runs/checkpoints/launch/<time> folder)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.people < 1:
        raise CourseError("--steps, --batch-size and --people must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import Trainer


    args = parse_args(argv)
    env = setup(seed=args.seed, quiet=True)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = Path(args.out or run_dir("launch"))
    world = W.make_world()
    people = world.heldout[:args.people]
    names = {p.name for p in people}
    texts = [r["text"] for r in W.heldout_bios(world) if r["person"] in names]
    model, tok = zoo.load(args.family, profile=env.profile)
    if args.method == "lora":
        model = apply_lora(model)
    targs = training_args(output_dir=str(out), max_steps=args.steps, learning_rate=args.lr,
                          per_device_train_batch_size=args.batch_size, seed=args.seed, data_seed=args.seed,
                          logging_steps=max(args.steps // 4, 1),
                          ddp_backend="gloo" if not torch.cuda.is_available() and world_size > 1 else None)
    trainer = Trainer(model=model, args=targs, train_dataset=tokenize_texts(tok, texts, 96),
                      data_collator=causal_collator(tok))
    result = trainer.train()
    if rank == 0:
        recall = fast_fact_recall(trainer.model, tok, people)
        metrics = {"world_size": world_size, "family": args.family, "method": args.method, "steps": args.steps,
                   "global_batch": args.batch_size * world_size, "train_loss": result.training_loss,
                   "new_recall": sum(recall.values()) / len(recall)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CourseError as err:
        print(f"course_utils.tools.launch: error: {err}", file=sys.stderr)
        sys.exit(2)
