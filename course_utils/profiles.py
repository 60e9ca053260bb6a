"""`setup()`: the first call of every notebook. Profile, device, seeds, offline guard, environment report.

Two profiles share one code path. `cpu` (the default without a GPU, and what CI runs) uses the tiny shipped
models and never touches the network; `gpu` uses real hub checkpoints of the same families. The learner can force
either with the `COURSE_PROFILE` environment variable.

Used in lessons: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09
"""

from __future__ import annotations

import math
import os
import platform
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, TypeVar

from course_utils.errors import CourseError, Limit, check_number
from course_utils.errors import check_seed as _check_seed


PROFILES = ("cpu", "gpu")
# The libraries whose versions the course pins (pyproject.toml) and reports.
REPORTED_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "tokenizers", "nbval")


class ProfileError(CourseError):
    """An unknown profile, or a profile this machine cannot run, or a course environment variable that makes no
    sense (its own line names the variable)."""


# ------------------------------------------------------------------------------------ environment variables
# Every `COURSE_*` variable is read here, one way: surrounding blanks are ignored, an empty value means "not set",
# and a value that makes no sense is a one-line `ProfileError` that names the variable, never a silent default.
T = TypeVar("T")
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_text(name: str) -> str | None:
    """The variable `name` without surrounding blanks; None when it is unset or blank."""
    text = os.environ.get(name, "").strip()
    return text or None


def env_value(name: str, parse: Callable[[str], T], wants: str) -> T | None:
    """`parse(value)` of the variable `name` (None when unset or blank); a value `parse` refuses (ValueError or a
    CourseError) is one line: '<name> must be <wants>, got <value>'."""
    text = env_text(name)
    if text is None:
        return None
    try:
        return parse(text)
    except (ValueError, CourseError):
        raise ProfileError(f"{name} must be {wants}, got {text!r:.80}") from None


def env_flag(name: str) -> bool:
    """A switch: '1', 'true', 'yes', 'on' (any case) mean on; unset, '', '0', 'false', 'no', 'off' mean off."""
    def parse(text: str) -> bool:
        if text.lower() not in ON + OFF:
            raise ValueError(text)
        return text.lower() in ON

    return bool(env_value(name, parse, f"one of {'/'.join(ON)} (on) or {'/'.join(OFF)} or empty (off)"))


def env_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """One of `choices` (any case), or None when the variable is unset or blank."""
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(text)
        return text.lower()

    return env_value(name, parse, f"one of {choices}")


def env_int(name: str, limit: Limit, wants: str) -> int | None:
    """A whole number inside `limit` written in decimal digits (no '1.5', '1e3' or '0x2')."""
    def parse(text: str) -> int:
        if not text.lstrip("+-").isdigit() or not text.isascii():
            raise ValueError(text)
        return check_number(int(text), name, "value", int, limit, ProfileError)

    return env_value(name, parse, wants)


def env_ints(name: str, wants: str) -> list[int] | None:
    """Comma- or space-separated whole numbers (e.g. '5,6,7'); an empty item ('5,,6') is refused too."""
    def parse(text: str) -> list[int]:
        parts = [part for part in re.split(r"[\s,]+", text) if part]
        if not parts or any(not part.isdigit() or not part.isascii() for part in parts):
            raise ValueError(text)
        return [int(part) for part in parts]

    return env_value(name, parse, wants)


def env_path(name: str, default: Path) -> Path:
    """A folder named by the variable, made absolute once (a relative value means the same folder in a kernel
    started in notebooks/ as in the shell that started it); `default` when the variable is unset or blank, so
    `COURSE_RUNS_DIR=''` never means the working directory."""
    def parse(text: str) -> Path:
        return Path(text).expanduser().resolve()

    return env_value(name, parse, "a folder path") or Path(default).expanduser().resolve()


def dry_run() -> bool:
    """True when the course runs as a dry run on stand-in models that know nothing (`COURSE_REHEARSAL=1`, set by
    `course rehearse`): verdicts are computed and shown but not asserted. Spelled '0', 'false', 'no', 'off' or
    left empty it is off; anything else it does not understand is an error, never a silent 'on'."""
    return env_flag("COURSE_REHEARSAL")


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
    forced = env_choice("COURSE_DEVICE", DEVICES)
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
    profile = requested or env_text("COURSE_PROFILE") or ("gpu" if cuda_available() else "cpu")
    profile = profile.strip().lower()
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r} (from COURSE_PROFILE or setup()); choose one of {PROFILES}")
    return profile


DEFAULT_SEEDS = (0, 1, 2)


def check_seed(seed, where: str = "seed") -> int:
    """`seed` as a Python int in [0, 2**32) (numpy integers accepted), else a one-line `ProfileError`."""
    return _check_seed(seed, where, ProfileError)


def default_seeds_in_use() -> bool:
    """Whether the lesson runs on its default seeds (`COURSE_SEEDS` unset). On them every claim's verdict must
    equal its declaration; on other seeds only an opposite verdict fails (`claims.check`)."""
    return env_ints("COURSE_SEEDS", "comma-separated integers like '5,6,7'") is None


def more_seeds(seeds, n: int) -> tuple[int, ...]:
    """`seeds` followed by the next integers not already among them, until there are `n`: a claim whose experiment
    is cheap may ask for more seeds than the lesson's default (its interval narrows), and any other seed set
    (`COURSE_SEEDS=5,6,7`) extends the same way (5, 6, 7, 8, 9)."""
    seeds = _seed_tuple(seeds, "seeds")
    n = check_number(n, "more_seeds", "n", int, Limit(1, 1000), ProfileError)
    out, candidate = list(seeds), max(seeds) + 1
    while len(out) < n:
        if candidate not in out:
            out.append(candidate)
        candidate += 1
    return tuple(out[:max(n, len(seeds))])


def lesson_seeds(seeds=None) -> tuple[int, ...]:
    """The seeds a lesson runs over: `seeds`, else `COURSE_SEEDS` (e.g. "5,6,7"), else three by default."""
    if seeds is None:
        seeds = env_ints("COURSE_SEEDS", "comma-separated integers like '5,6,7'")
        if seeds is None:
            return DEFAULT_SEEDS
        return _seed_tuple(seeds, "COURSE_SEEDS")
    return _seed_tuple(seeds, "seeds")


def _seed_tuple(seeds, where: str) -> tuple[int, ...]:
    """Distinct seeds, at least one, each in [0, 2**32); errors name `where` (the argument or the variable)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ProfileError(f"seeds must be a list of integers, got {seeds!r}")
    seeds = tuple(check_seed(s, where) for s in seeds)
    if not seeds:
        raise ProfileError(f"{where}: at least one seed is needed (three or more for a verdict)")
    if len(set(seeds)) != len(seeds):
        raise ProfileError(f"{where}: seeds must differ from each other, got {list(seeds)}")
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


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Give torch as many CPU threads as there are free cores (or `threads`, or `COURSE_THREADS`).

    torch's OpenMP workers spin while they wait for each other. On a quiet machine that is what makes two threads
    fast; on a shared one, where another program holds a core, a spinning thread steals it and every step waits
    for the slowest thread (measured here: a training loop 3.8x slower beside one busy process, against 1.0x with
    one thread). So the thread count is the cores left free when the lesson starts, at least one.
    """
    import torch

    cores = cpu_cores()
    if threads is not None:
        threads = check_number(threads, "configure_threads", "threads", int, Limit(0, math.inf), ProfileError)
    wanted = threads or env_int("COURSE_THREADS", Limit(0, 4096),
                                "a whole number of threads (1 or more; 0 or empty: as many as are free)")
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


@contextmanager
def seeded(seed: int):
    """Run the block under `seed_everything(seed)`, then put every generator back as it was.

    For a measurement that samples (`alignment.sampled_refusal_rate`): it repeats under its own seed, and the run
    around it draws exactly what it would have drawn without it."""
    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
              os.environ.get("PYTHONHASHSEED"))
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        if states[4] is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = states[4]


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


# Lesson tables carry sentences (a claim's test with its threshold, a published figure, a control's verdict) and up
# to a few hundred rows (the capstone's scoreboard): pandas' defaults cut a cell at 50 characters with "..." and
# hide the middle rows past 60, which hides exactly the words a reader came for.
TABLE_ROWS_SHOWN = 500


def show_whole_tables() -> None:
    """Show every table whole: no cell cut to "...", every row up to `TABLE_ROWS_SHOWN`, long text wrapped."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", TABLE_ROWS_SHOWN)
    pd.set_option("display.min_rows", TABLE_ROWS_SHOWN)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 120)


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
    show_whole_tables()
    env = Environment(profile=chosen, device=device, seed=seed,
                      offline=chosen == "cpu" or env_text("HF_HUB_OFFLINE") == "1", threads=configure_threads(), seeds=chosen_seeds,
                      versions={name: package_version(name) for name in REPORTED_PACKAGES},
                      gpu_name=gpu_name, gpu_memory_gb=gpu_mem)
    if not quiet:
        print(env.report())
    return env

