"""`course run`: execute the lessons in order and measure each one (the course's notebook benchmark).

Each notebook runs in a fresh Jupyter kernel through `nbclient`, exactly as nbval and a learner's JupyterLab run
it. While it runs, a thread samples the resident memory of the kernel's process tree, so the table shows each
lesson's wall time and peak memory: the numbers the README's course map reports and the budgets are checked on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from course_utils.errors import CourseError
from course_utils.paths import NOTEBOOKS_DIR, RUNS_DIR

BUDGET_SECONDS = 120   # each lesson should run in under 2 minutes on 2 CPU cores
BUDGET_MEMORY_MB = 4096


@dataclass
class LessonResult:
    lesson: str
    seconds: float
    peak_memory_mb: float
    passed: bool
    error: str = ""
    cpu_seconds: float = 0.0

    @property
    def within_budget(self) -> bool:
        return self.seconds <= BUDGET_SECONDS and self.peak_memory_mb <= BUDGET_MEMORY_MB


def lesson_notebooks(selected: Sequence[str] = (), notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The lesson notebooks in order; `selected` filters by number or name prefix ('00', '04_noise')."""
    all_nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not selected:
        return all_nbs
    chosen = []
    for sel in selected:
        matches = [p for p in all_nbs if p.stem.startswith(str(sel).zfill(2) if str(sel).isdigit() else sel)]
        if not matches:
            raise CourseError(f"no lesson matches {sel!r}; lessons are: {', '.join(p.stem for p in all_nbs)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


class _PeakMemory:
    """Samples the RSS of a process and its children every `interval` seconds, keeping the peak, and their CPU time.

    CPU seconds matter on a shared machine: wall time grows with whatever else runs, CPU time much less.
    """

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self.pid, self.cpu = interval, 0, None, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            if self.pid is not None:
                try:
                    proc = psutil.Process(self.pid)
                    procs = [proc, *proc.children(recursive=True)]
                    self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
                    self.cpu = max(self.cpu, sum(sum(p.cpu_times()[:2]) for p in procs))
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _failing_cell(nb, err) -> str:
    """'cell N' of the first cell whose outputs hold an error, for a one-line message."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} ({out.get('ename')}: {str(out.get('evalue'))[:160]})"
    return str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__


def run_notebook(path: Path, timeout: int = 1200) -> tuple[LessonResult, object]:
    """Execute one notebook in a fresh kernel (cwd = its folder); returns its result and the executed notebook."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error, start = "", time.perf_counter()
    with _PeakMemory() as mem:
        try:
            with client.setup_kernel():
                mem.pid = client.km.provisioner.pid if client.km.provisioner else None
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
        except CellExecutionError as err:
            error = _failing_cell(nb, err)
        except Exception as err:  # a dead kernel or a timeout: still a lesson result, not a crash of the runner
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    seconds = time.perf_counter() - start
    result = LessonResult(path.stem, round(seconds, 1), round(mem.peak / 2**20, 1), not error, error,
                          round(mem.cpu, 1))
    return result, nb


def outputs_for_readers(nb):
    """The executed notebook as it is stored for readers (`course run --write`): tables, plots and printed results
    are kept; stderr streams (library warnings, which name files on the machine that ran them) are dropped, and the
    repository's absolute path in any output becomes relative (`/home/me/course/runs/x` -> `runs/x`)."""
    import copy

    import nbformat

    from course_utils.paths import REPO_DIR

    nb = copy.deepcopy(nb)
    prefix = json.dumps(str(REPO_DIR) + "/")[1:-1]  # as it appears inside JSON strings
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            kept = [o for o in cell.get("outputs", [])
                    if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
            cell.outputs = [nbformat.from_dict(json.loads(json.dumps(o).replace(prefix, ""))) for o in kept]
    return nb


def format_table(results: Sequence[LessonResult]) -> str:
    """A Markdown table of runtime, peak memory and pass/fail per lesson."""
    lines = ["| lesson | runtime (s) | CPU time (s) | peak memory (MB) | result |", "|---|---:|---:|---:|---|"]
    for r in results:
        flag = "pass" if r.passed else f"FAIL: {r.error}"
        if r.passed and not r.within_budget:
            flag += f" (over budget: {BUDGET_SECONDS} s / {BUDGET_MEMORY_MB} MB)"
        lines.append(f"| {r.lesson} | {r.seconds:.0f} | {r.cpu_seconds:.0f} | {r.peak_memory_mb:.0f} | {flag} |")
    return "\n".join(lines)


def run_lessons(selected: Sequence[str] = (), write: bool = False, runs_dir: Path = RUNS_DIR,
                keep_going: bool = False) -> tuple[list[LessonResult], Path]:
    """Run lessons in order with a progress bar; save executed copies and the table under runs/<timestamp>/.

    Stops at the first failing lesson (naming it and its cell) unless `keep_going`. With `write`, the executed
    notebooks replace the committed ones, so a reader on GitHub sees the cpu-profile tables and plots.
    """
    import nbformat
    from tqdm.auto import tqdm

    notebooks = lesson_notebooks(selected)
    out_dir = Path(runs_dir) / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    (out_dir / "executed").mkdir(parents=True, exist_ok=True)
    results: list[LessonResult] = []
    bar = tqdm(notebooks, desc="lessons", unit="lesson")
    for path in bar:
        bar.set_postfix_str(path.stem)
        result, nb = run_notebook(path)
        results.append(result)
        nbformat.write(nb, out_dir / "executed" / path.name)
        if write and result.passed:
            nbformat.write(outputs_for_readers(nb), path)
        if not result.passed and not keep_going:
            break
    (out_dir / "benchmark.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    (out_dir / "benchmark.md").write_text(format_table(results) + "\n")
    return results, out_dir
