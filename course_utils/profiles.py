"""`setup()`: the first call of every notebook. Profile, device, seeds, offline guard, environment report.

Two profiles share one code path. `cpu` (the default without a GPU, and what CI runs) uses the tiny shipped
models and never touches the network; `gpu` uses real hub checkpoints of the same families. The learner can force
either with the `COURSE_PROFILE` environment variable.
"""

from __future__ import annotations

import numbers
import os
import platform
import random
from dataclasses import dataclass, field
from importlib import metadata

from course_utils.errors import CourseError


PROFILES = ("cpu", "gpu")
# The libraries whose versions the course pins (pyproject.toml) and reports.
REPORTED_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "tokenizers", "nbval")


class ProfileError(CourseError):
    """An unknown profile, or a profile this machine cannot run."""


@dataclass
class Environment:
    """What `setup()` decided: print it to see the one-screen report."""

    profile: str
    device: str
    seed: int
    offline: bool
    threads: int
    seeds: tuple[int, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None

    def report(self) -> str:
        lines = [f"profile   {self.profile}  (set COURSE_PROFILE=cpu|gpu to change)",
                 f"device    {self.device}" + (f"  ({self.gpu_name}, {self.gpu_memory_gb:.0f} GB)" if self.gpu_name else ""),
                 f"seeds     {', '.join(map(str, self.seeds or (self.seed,)))}  (set COURSE_SEEDS=5,6,7 to change)",
                 f"network   {'off (HF_HUB_OFFLINE=1): shipped tiny models only' if self.offline else 'hub allowed'}",
                 f"threads   {self.threads} CPU threads for torch",
                 f"python    {platform.python_version()} on {platform.system()} {platform.machine()}"]
        lines += [f"{name:<9} {ver}" for name, ver in self.versions.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


DEVICES = ("cuda", "cpu")


def course_device(profile: str | None = None) -> str:
    """Where the course puts models and training: `cuda` in the gpu profile, `cpu` in the cpu profile.

    `COURSE_DEVICE=cpu` runs the gpu profile's code on the CPU: with stand-in checkpoints
    (`course standins`) that rehearses the exact code path a Colab learner runs, on a machine without CUDA.
    Every placement of a model goes through here (`place`), so no lesson hard-codes `"cuda"`.
    """
    forced = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if forced and forced not in DEVICES:
        raise ProfileError(f"COURSE_DEVICE must be one of {DEVICES}, got {forced!r}")
    if choose_profile(profile) == "cpu":
        return "cpu"
    return forced or "cuda"


def use_cpu(profile: str | None = None) -> bool:
    """True when training must stay on the CPU (the `use_cpu` of `TrainingArguments`)."""
    return course_device(profile) == "cpu"


def place(model, profile: str | None = None):
    """Move `model` to the course's device (see `course_device`) and return it."""
    return model.to(course_device(profile))


def choose_profile(requested: str | None = None) -> str:
    """`requested`, else `COURSE_PROFILE`, else `gpu` when CUDA is present, else `cpu`."""
    if requested is not None and not isinstance(requested, str):
        raise ProfileError(f"unknown profile {requested!r} (a {type(requested).__name__}); choose one of {PROFILES}")
    profile = requested or os.environ.get("COURSE_PROFILE") or ("gpu" if cuda_available() else "cpu")
    profile = profile.strip().lower()
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r} (from COURSE_PROFILE or setup()); choose one of {PROFILES}")
    return profile


DEFAULT_SEEDS = (0, 1, 2)


def check_seed(seed, where: str = "seed") -> int:
    """`seed` as a Python int in [0, 2**32) (numpy integers accepted), else a one-line `ProfileError`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ProfileError(f"{where}: seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def lesson_seeds(seeds=None) -> tuple[int, ...]:
    """The seeds a lesson runs over: `seeds`, else `COURSE_SEEDS` (e.g. "5,6,7"), else three by default."""
    if seeds is None:
        text = os.environ.get("COURSE_SEEDS", "").strip()
        if not text:
            return DEFAULT_SEEDS
        try:
            seeds = [int(part) for part in text.replace(" ", ",").split(",") if part]
        except ValueError:
            raise ProfileError(f"COURSE_SEEDS must be comma-separated integers like '5,6,7', got {text!r}") from None
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ProfileError(f"seeds must be a list of integers, got {seeds!r}")
    seeds = tuple(check_seed(s, "seeds") for s in seeds)
    if not seeds:
        raise ProfileError("seeds: at least one seed is needed (three or more for a verdict)")
    if len(set(seeds)) != len(seeds):
        raise ProfileError(f"seeds must differ from each other, got {list(seeds)}")
    return seeds


def busy_cores(seconds: float = 0.25) -> float:
    """How many cores other processes kept busy over a short sample (Linux `/proc/stat`; 0.0 elsewhere)."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        own0 = time.process_time()
        time.sleep(seconds)
        total1, idle1 = sample()
        own = time.process_time() - own0
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = os.cpu_count() or 1
    if total1 == total0:
        return 0.0
    busy_share = 1 - (idle1 - idle0) / (total1 - total0)
    return max(0.0, busy_share * cores - own / seconds)


def configure_threads(threads: int | None = None) -> int:
    """Give torch as many CPU threads as there are free cores (or `threads`, or `COURSE_THREADS`).

    torch's OpenMP workers spin while they wait for each other. On a quiet machine that is what makes two threads
    fast; on a shared one, where another program holds a core, a spinning thread steals it and every step waits
    for the slowest thread (measured here: a training loop 3.8x slower beside one busy process, against 1.0x with
    one thread). So the thread count is the cores left free when the lesson starts, at least one.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = threads or int(os.environ.get("COURSE_THREADS", "0") or 0)
    if not wanted:
        wanted = cores - int(busy_cores() + 0.5)
    n = max(1, min(int(wanted), cores))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on the same machine."""
    seed = check_seed(seed)
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def seed_torch(seed: int) -> None:
    """Seed torch's generator alone (CPU and CUDA), for a model's initial weights.

    Building a model draws its random weights from torch's generator; this fixes them without moving Python's or
    NumPy's generators, which a run already seeded by `seed_everything` goes on drawing from."""
    seed = check_seed(seed)
    import torch

    torch.manual_seed(seed)


def set_offline(offline: bool) -> None:
    """In the cpu profile, tell huggingface_hub, transformers and datasets never to reach the network."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if offline:
            os.environ[var] = "1"
        else:
            os.environ.pop(var, None)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:  # huggingface_hub reads the variable at import time; update its constant if it is already imported
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = offline
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        pass


def check_gpu_profile() -> tuple[str, float]:
    """The gpu profile needs a CUDA device; returns its name and memory in GB, or raises a one-line error."""
    import torch

    if not torch.cuda.is_available():
        raise ProfileError("profile 'gpu' needs a CUDA GPU, and torch sees none; "
                           "unset COURSE_PROFILE (or set it to 'cpu') to use the shipped tiny models")
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / 2**30


def setup(profile: str | None = None, seed: int | None = None, quiet: bool = False, seeds=None) -> Environment:
    """Choose the profile and device, pick the lesson's seeds, seed everything with the first, set offline mode
    in the cpu profile, keep torch's threads within the machine's cores, and print a report.

    `env.seeds` are the seeds the lesson runs over (three by default; `COURSE_SEEDS=5,6,7` overrides them for
    every lesson); `env.seed` is the first of them, or `seed` when given.
    """
    from transformers.utils import logging as hf_logging

    chosen_seeds = lesson_seeds(seeds)
    seed = check_seed(seed, "setup") if seed is not None else chosen_seeds[0]
    chosen = choose_profile(profile)
    gpu_name = gpu_mem = None
    device = course_device(chosen)
    if device == "cuda":
        gpu_name, gpu_mem = check_gpu_profile()
    if chosen == "cpu":  # the gpu profile leaves the hub settings as the learner has them (a rehearsal sets offline)
        set_offline(True)
    seed_everything(seed)
    hf_logging.set_verbosity_error()  # keep notebooks readable: no config chatter, errors still raise
    hf_logging.disable_progress_bar()  # no "Loading weights" bars for a 1 M-parameter model
    env = Environment(profile=chosen, device=device, seed=seed,
                      offline=chosen == "cpu" or os.environ.get("HF_HUB_OFFLINE", "") == "1", threads=configure_threads(), seeds=chosen_seeds,
                      versions={name: package_version(name) for name in REPORTED_PACKAGES},
                      gpu_name=gpu_name, gpu_memory_gb=gpu_mem)
    if not quiet:
        print(env.report())
    return env

