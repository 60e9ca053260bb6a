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
import sys
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
    versions: dict[str, str] = field(default_factory=dict)
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None

    def report(self) -> str:
        lines = [f"profile   {self.profile}  (set COURSE_PROFILE=cpu|gpu to change)",
                 f"device    {self.device}" + (f"  ({self.gpu_name}, {self.gpu_memory_gb:.0f} GB)" if self.gpu_name else ""),
                 f"seed      {self.seed}",
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


def choose_profile(requested: str | None = None) -> str:
    """`requested`, else `COURSE_PROFILE`, else `gpu` when CUDA is present, else `cpu`."""
    if requested is not None and not isinstance(requested, str):
        raise ProfileError(f"unknown profile {requested!r} (a {type(requested).__name__}); choose one of {PROFILES}")
    profile = requested or os.environ.get("COURSE_PROFILE") or ("gpu" if cuda_available() else "cpu")
    profile = profile.strip().lower()
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r} (from COURSE_PROFILE or setup()); choose one of {PROFILES}")
    return profile


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on the same machine."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ProfileError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


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


def setup(profile: str | None = None, seed: int = 0, quiet: bool = False) -> Environment:
    """Choose the profile and device, seed everything, set offline mode in the cpu profile, print a report."""
    import torch
    from transformers.utils import logging as hf_logging

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ProfileError(f"setup: seed must be an integer in [0, 2**32), got {seed!r}")
    chosen = choose_profile(profile)
    gpu_name = gpu_mem = None
    if chosen == "gpu":
        gpu_name, gpu_mem = check_gpu_profile()
    set_offline(chosen == "cpu")
    seed_everything(seed)
    hf_logging.set_verbosity_error()  # keep notebooks readable: no config chatter, errors still raise
    hf_logging.disable_progress_bar()  # no "Loading weights" bars for a 1 M-parameter model
    env = Environment(profile=chosen, device="cuda" if chosen == "gpu" else "cpu", seed=seed,
                      offline=chosen == "cpu", threads=torch.get_num_threads(),
                      versions={name: package_version(name) for name in REPORTED_PACKAGES},
                      gpu_name=gpu_name, gpu_memory_gb=gpu_mem)
    if not quiet:
        print(env.report())
    return env


def in_colab() -> bool:
    return "google.colab" in sys.modules
