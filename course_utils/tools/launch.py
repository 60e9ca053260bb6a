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

When a rank fails, its own words say why. Each rank records a Python error in torchrun's error file, so torchrun's
summary shows that rank's traceback; a native abort prints the rank's Python stack (faulthandler) to its stderr. Add
`--tee 3 --log_dir logs` after `accelerate launch` to keep every rank's stdout and stderr in `logs/`, and
`rank_report(stderr, "logs")` puts each rank's error and the tail of its stderr in one message.

Two local processes must not trip over each other or over another run: the configs ask for a free rendezvous port
(`main_process_port: 0`, not the fixed 29500); each rank uses its share of the cores; and every rank waits for the
others and tears the process group down before it exits. A rank that left while rank 0 was still measuring recall
used to die with SIGABRT ("terminate called without an active exception": gloo's threads were still running when the
process ended), which is what made the two-process test fail now and then.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from course_utils import world as W
from course_utils import zoo
from course_utils.config import CourseConfig, Limit
from course_utils.errors import CourseError
from course_utils.evaluate import fast_fact_recall
from course_utils.peft_methods import apply_lora
from course_utils.profiles import cpu_cores, env_text, setup
from course_utils.train import causal_collator, run_dir, tokenize_texts


LIBRARY_CALLS = {
    "transformers:TrainingArguments": ["ddp_backend", "max_steps", "learning_rate", "per_device_train_batch_size",
                                       "seed", "data_seed", "logging_steps"],
    "transformers:Trainer.__init__": ["model", "args", "train_dataset", "data_collator"],
    "torch.distributed.elastic.multiprocessing.errors:record": ["fn"],
}


@dataclass
class LaunchConfig(CourseConfig):
    """The launched run: which model and method, how many held-out people, and the shared training fields."""

    LIMITS = {"people": Limit(1, 10**6)}

    family: str = "gpt2"
    method: str = "full"
    people: int = 16
    steps: int = 80
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0


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


def launch_config(args: argparse.Namespace) -> LaunchConfig:
    """The command line as the run's validated config."""
    return LaunchConfig(family=args.family, method=args.method, people=args.people, steps=args.steps,
                        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)


def share_cores(local_world_size: int) -> None:
    """Give each of the processes on this machine its share of the cores (at least one thread).

    Without this every rank sizes torch's thread pool to the whole machine, and N ranks x all cores spinning
    threads make each step wait for a thread that has no core. `COURSE_THREADS`, when set, still wins.
    """
    if local_world_size > 1 and env_text("COURSE_THREADS") is None:
        os.environ["COURSE_THREADS"] = str(max(1, cpu_cores() // local_world_size))


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import Trainer

    args = parse_args(argv)
    config = launch_config(args)
    share_cores(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    env = setup(seed=config.seed, quiet=True)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = Path(args.out or run_dir("launch"))
    world = W.make_world()
    people = world.heldout[:config.people]
    names = {p.name for p in people}
    texts = [r["text"] for r in W.heldout_bios(world) if r["person"] in names]
    model, tok = zoo.load(config.family, profile=env.profile)
    if config.method == "lora":
        model = apply_lora(model)
    targs = config.training_arguments(
        output_dir=str(out), logging_steps=max(config.steps // 4, 1),
        ddp_backend="gloo" if not torch.cuda.is_available() and world_size > 1 else None)
    trainer = Trainer(model=model, args=targs, train_dataset=tokenize_texts(tok, texts, 96),
                      data_collator=causal_collator(tok))
    result = trainer.train()
    if rank == 0:
        recall = fast_fact_recall(trainer.model, tok, people)
        metrics = {"world_size": world_size, "family": config.family, "method": config.method, "steps": config.steps,
                   "global_batch": config.batch_size * world_size, "train_loss": result.training_loss,
                   "new_recall": sum(recall.values()) / len(recall)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics))
    return 0


def leave_together() -> None:
    """Wait for every rank, then tear the process group down: the one safe way for a rank to exit.

    A rank that exits while another still works (rank 0 measuring recall) ends its process with gloo's threads
    running, and the C++ runtime aborts it (SIGABRT, "terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def run_rank(train: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `train` as one rank of a launch, so that its failure says which rank and why.

    A Python error goes into torchrun's error file (`record`), so torchrun's summary shows this rank's traceback;
    a native abort prints this rank's Python stack (`faulthandler`); a `CourseError` is one line and exit code 2.
    The process group is torn down on every path out: after a barrier when the rank succeeds, at once when it fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import record

    faulthandler.enable()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    @record
    def rank_main() -> int:
        try:
            code = train(argv)
        except CourseError as err:
            drop_process_group()
            print(f"course_utils.tools.launch: error: {err}", file=sys.stderr)
            return 2
        except BaseException:
            drop_process_group()
            raise
        leave_together()
        return code

    return rank_main()


def drop_process_group() -> None:
    """Tear the process group down without waiting for the others (a failing rank must not wait on them)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_report(launcher_stderr: str, log_dir: str | Path, tail_lines: int = 40) -> str:
    """Why a launch failed, rank by rank: each rank's recorded error and the tail of its own stderr, then the end
    of the launcher's summary. `log_dir` is the `--log_dir` given to `accelerate launch --tee 3`."""
    parts = []
    for rank_dir in sorted(Path(log_dir).glob("*/attempt_*/[0-9]*"), key=lambda d: (str(d.parent), int(d.name))):
        lines = [f"--- rank {rank_dir.name} ({rank_dir.parent.name}) ---"]
        error_file = rank_dir / "error.json"
        if error_file.is_file():
            message = json.loads(error_file.read_text()).get("message", {})
            text = message.get("message", message) if isinstance(message, dict) else message
            lines.append(f"rank {rank_dir.name} error: {text}")
        stderr = rank_dir / "stderr.log"
        tail = stderr.read_text(errors="replace").splitlines()[-tail_lines:] if stderr.is_file() else []
        lines.append(f"rank {rank_dir.name} stderr (last {len(tail)} lines):")
        lines.extend(tail)
        parts.append("\n".join(lines))
    if not parts:
        parts.append(f"(no per-rank logs under {log_dir})")
    return "\n".join(parts) + "\n--- launcher ---\n" + launcher_stderr[-1500:]


if __name__ == "__main__":
    sys.exit(run_rank(main))
