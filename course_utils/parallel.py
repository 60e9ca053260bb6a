"""Independent runs side by side: one worker process per free core, one torch thread each.

A tiny model's training step is too small to keep two torch threads busy (two threads on one run gave about 10 %
here), but two *runs* on two cores go nearly twice as fast. So a lesson whose seeds (or settings) are independent
hands them to `run_in_processes`, which runs each task in its own worker process with one torch thread. Every
task computes exactly what it would compute alone on one thread, so the numbers do not depend on how many cores
the machine has, or on which worker ran which task: each task must seed itself (the course's runs do, through
their `RunConfig` seed).

The standard library's `concurrent.futures.ProcessPoolExecutor` does the work; this module only decides how many
workers (the torch threads `profiles.setup()` gave the notebook, that is the cores free when it started; one on a
GPU, where the device is the bottleneck) and starts them with "spawn", which is safe beside an already threaded
torch and inside a Jupyter or Colab kernel.

Used in lessons: none (used by other modules and tools)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from course_utils.errors import CourseError, Limit, check_number
from course_utils.profiles import course_device


class ParallelError(CourseError):
    """A task list or worker count that makes no sense."""


def worker_count(workers: int | None = None) -> int:
    """How many worker processes `run_in_processes` starts: `workers` if given, else one per torch thread the
    notebook was given (`profiles.configure_threads`: the free cores), and always 1 when the course runs on a GPU."""
    import torch


    if workers is not None:
        return int(check_number(workers, "worker_count", "workers", int, Limit(1, 4096), ParallelError))
    if course_device() != "cpu":
        return 1
    return max(1, torch.get_num_threads())


def _one_thread() -> None:
    """Worker start-up: one torch thread, so two workers on two cores do not fight over them."""
    import torch

    os.environ["COURSE_THREADS"] = "1"
    torch.set_num_threads(1)


def _in_this_process(fn: Callable[..., Any], tasks: list[tuple], desc: str) -> list[Any]:
    """The tasks in a loop here; on the cpu at one torch thread, as a worker computes them, so that a number never
    depends on whether it was computed here or there (two threads sum in another order: the last digits move)."""
    import torch
    from tqdm.auto import tqdm


    threads = torch.get_num_threads()
    if course_device() == "cpu":
        torch.set_num_threads(1)
    try:
        return [fn(*task) for task in tqdm(tasks, desc=desc, leave=False)]
    finally:
        torch.set_num_threads(threads)


def run_in_processes(fn: Callable[..., Any], tasks: Sequence[tuple], workers: int | None = None,
                     desc: str = "runs") -> list[Any]:
    """`[fn(*task) for task in tasks]`, computed by `worker_count(workers)` processes side by side.

    `fn` must be importable (a function of a module, not one defined in a notebook cell) and its arguments and
    result picklable: they travel between processes. With one worker, or one task, it runs here, in order, on
    one torch thread (so a one-core machine or COURSE_THREADS=1 runs it the plain way, with the same numbers). An
    error in a task is raised here, as it would be in a loop.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    if not all(isinstance(t, tuple) for t in tasks):
        raise ParallelError("run_in_processes: each task is a tuple of fn's arguments")
    n = min(worker_count(workers), len(tasks))
    if n <= 1:
        return _in_this_process(fn, tasks, desc)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=context, initializer=_one_thread) as pool:
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        for future in tqdm(as_completed(futures), total=len(tasks), desc=f"{desc} on {n} cores", leave=False):
            results[futures[future]] = future.result()
    return results
