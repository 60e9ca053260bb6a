"""`course run`: execute the lessons in order and measure each one (the course's notebook benchmark).

Each notebook runs in a fresh Jupyter kernel through `nbclient`, exactly as nbval and a learner's JupyterLab run
it. While it runs, a thread samples the resident memory of the kernel's process tree, so the table shows each
lesson's wall time and peak memory: the numbers the README's course map reports and the budgets are checked on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

from course_utils.errors import CourseError
from course_utils.paths import NOTEBOOKS_DIR, REFERENCE_RESULTS_DIR, REPO_DIR, RUNS_DIR
from course_utils.results import write_atomic


BUDGET_SECONDS = 150   # each lesson, with its seeds, on 2 quiet CPU cores ...
LONG_LESSONS = {"04_noise_study": 300}  # ... except the noise study's whole grid
BUDGET_MEMORY_MB = 4096
INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)


class NotebookError(CourseError):
    """A lesson file that cannot be read as a notebook (its own line names the file)."""


class RunInterrupted(SystemExit):
    """Ctrl-C during `course run`: exits with code 130 after one line; the finished lessons' results are kept.

    A `SystemExit`, so the `course` command ends with the shell's usual code for an interrupt and no traceback,
    while a caller in Python can still catch it and read `results` and `out_dir`.
    """

    def __init__(self, message: str, results: list["LessonResult"], out_dir: Path):
        super().__init__(INTERRUPTED_EXIT_CODE)
        self.message, self.results, self.out_dir = message, results, out_dir


@dataclass
class LessonResult:
    lesson: str
    seconds: float
    peak_memory_mb: float
    passed: bool
    error: str = ""
    cpu_seconds: float = 0.0
    gpu_peak_mb: float | None = None  # torch's peak allocated CUDA memory in the lesson's kernel, when it used CUDA

    @property
    def within_budget(self) -> bool:
        return self.seconds <= self.budget_seconds and self.peak_memory_mb <= BUDGET_MEMORY_MB

    @property
    def budget_seconds(self) -> int:
        return LONG_LESSONS.get(self.lesson, BUDGET_SECONDS)


def lesson_notebooks(selected: Sequence[str] = (), notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The lesson notebooks in order; `selected` picks lessons however people type them: a number ('4', '04'), a
    name or its start ('04_noise'), a topic word ('overfitting', 'noise'), a file name or a path
    ('notebooks/05_overfitting.ipynb'). Anything else is a one-line error with a "did you mean" and the list."""
    all_nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not selected:
        return all_nbs
    chosen = []
    for sel in selected:
        matches = match_lesson(str(sel), all_nbs)
        if not matches:
            raise CourseError(f"no lesson matches {sel!r}{did_you_mean(str(sel), all_nbs)}; lessons are: "
                              f"{', '.join(p.stem for p in all_nbs)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def match_lesson(text: str, lessons: Sequence[Path]) -> list[Path]:
    """The lessons `text` names: by number, by name prefix, by file name or path, or by a word of the title."""
    key = Path(text.strip()).name.removesuffix(".ipynb").lower()
    if not key:  # a blank selection names no lesson (it would otherwise be the start of every name)
        return []
    if key.isdigit():
        return [p for p in lessons if p.stem[:2] == key.zfill(2)]
    by_prefix = [p for p in lessons if p.stem.lower().startswith(key)]
    if by_prefix:
        return by_prefix
    return [p for p in lessons if key.replace("-", "_") in p.stem.lower().split("_", 1)[1]]


def did_you_mean(text: str, lessons: Sequence[Path]) -> str:
    """'; did you mean 05_overfitting?' for a near miss such as 'overfiting', else ''."""
    import difflib

    key = Path(text.strip()).name.removesuffix(".ipynb").lower()
    words = {w: p for p in lessons for w in [p.stem.lower(), *p.stem.lower().split("_")[1:]] if len(w) > 2}
    close = difflib.get_close_matches(key, list(words), n=1, cutoff=0.7)
    return f"; did you mean {words[close[0]].stem}?" if close else ""


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


def read_notebook(path: Path):
    """The notebook at `path`, checked against the notebook format; a `NotebookError` naming the file otherwise.

    A half-saved or hand-edited `.ipynb` is a JSON file like any other: the error says which lesson it is.
    """
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # not JSON, not a notebook, unreadable: all the same to the learner
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise NotebookError(f"{path.name}: cannot be read as a notebook ({type(err).__name__}: {detail})") from None
    return nb


def _absolute(path: str | os.PathLike) -> str:
    """`path` as an absolute path (`~` expanded, relative to the current folder), the same in any process."""
    return str(Path(path).expanduser().resolve())


def kernel_env(runs_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a lesson's kernel starts with: ours, with the course's folders made absolute.

    A kernel runs in `notebooks/`, so a relative `COURSE_RUNS_DIR` would send its results to `notebooks/runs`,
    where `course report` never looks: the kernel gets `runs_dir` (where this run's folder goes) and an absolute
    `COURSE_DATA_DIR`. `PYTHONWARNINGS` is dropped so a setting meant for this process (e.g. `error` in a test)
    does not turn a lesson's library warnings into failures.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("PYTHONWARNINGS", None)
    env["COURSE_RUNS_DIR"] = _absolute(runs_dir)
    if env.get("COURSE_DATA_DIR"):
        env["COURSE_DATA_DIR"] = _absolute(env["COURSE_DATA_DIR"])
    return env


def run_notebook(path: Path, timeout: int = 1200, env: Mapping[str, str] | None = None,
                 kernel_log: Path | None = None) -> tuple[LessonResult, object]:
    """Execute one notebook in a fresh kernel (cwd = its folder, environment `env`); returns its result and the
    executed notebook. Ctrl-C (here or in the kernel) comes out as `KeyboardInterrupt`, never as a failed lesson."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = read_notebook(path)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error, start, gpu_peak = "", time.perf_counter(), None
    with _PeakMemory() as mem, contextlib.ExitStack() as stack:
        try:
            # The kernel process's own stderr (ipykernel's start-up warnings) goes to a log beside the run, not
            # into the progress line; a lesson's errors and warnings still reach us through its cells' outputs.
            log = stack.enter_context(open(kernel_log or os.devnull, "a", encoding="utf-8"))
            with client.setup_kernel(stderr=log, **({"env": dict(env)} if env is not None else {})):
                mem.pid = client.km.provisioner.pid if client.km.provisioner else None
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
                gpu_peak = _kernel_gpu_peak_mb(client, len(nb.cells))
                client.set_widgets_metadata()  # progress bars and controls keep their final state on GitHub
        except CellExecutionError as err:
            if getattr(err, "ename", "") == "KeyboardInterrupt":  # Ctrl-C reached the kernel before us
                raise KeyboardInterrupt from None
            error = _failing_cell(nb, err)
        except Exception as err:  # a dead kernel or a timeout: still a lesson result, not a crash of the runner
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    seconds = time.perf_counter() - start
    result = LessonResult(path.stem, round(seconds, 1), round(mem.peak / 2**20, 1), not error, error,
                          round(mem.cpu, 1), gpu_peak)
    return result, nb


# Asked of the lesson's kernel after its last cell; the cell is not added to the notebook.
GPU_PEAK_PROBE = ("import sys, json\n"
                  "_t = sys.modules.get('torch')\n"
                  "print(json.dumps(_t.cuda.max_memory_allocated() / 2**20 "
                  "if _t is not None and _t.cuda.is_available() and _t.cuda.is_initialized() else None))")


def _kernel_gpu_peak_mb(client, index: int) -> float | None:
    """Peak CUDA memory torch allocated in the kernel (MB), or None when the lesson never used CUDA."""
    import nbformat

    probe = nbformat.v4.new_code_cell(GPU_PEAK_PROBE)
    client.nb.cells.append(probe)  # nbclient records outputs by index; the probe leaves with its answer
    try:
        client.execute_cell(probe, index)
    finally:
        client.nb.cells.pop()
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream").strip()
    try:
        value = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        return None
    return round(float(value), 1) if isinstance(value, (int, float)) else None


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _plain(html: str) -> str:
    import html as html_lib
    import re

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html or "")).replace("\u2007", " ")  # tqdm pads with U+2007


def widget_text(states: Mapping[str, dict], model_id: str, width: int = 10) -> str | None:
    """The final state of a widget as one line of text (a tqdm bar: `lessons: 100%|##########| 2/2 [...]`), read from
    the saved widget state; None for a widget this does not know how to draw."""
    state = (states.get(model_id) or {}).get("state", {})
    name = state.get("_model_name", "")
    if name in ("HTMLModel", "LabelModel", "TextModel"):
        return _plain(str(state.get("value", "")))
    if name in ("FloatProgressModel", "IntProgressModel"):
        low, high, value = state.get("min", 0) or 0, state.get("max", 1) or 1, state.get("value", 0) or 0
        filled = round(width * (value - low) / (high - low)) if high > low else width
        return "█" * filled + " " * (width - filled)
    if name in ("HBoxModel", "VBoxModel"):
        parts = [widget_text(states, str(c).removeprefix("IPY_MODEL_"), width) for c in state.get("children", [])]
        if any(p is None for p in parts):
            return None
        return ("|".join(parts) if name == "HBoxModel" else "\n".join(parts))
    return None


def widget_fallbacks(nb) -> None:
    """Give each widget output a text/plain of its final state, for readers without a kernel or widget manager
    (GitHub, nbviewer, HTML): otherwise a finished progress bar reads `0%| | 0/4`, its state at creation."""
    states = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view:
                text = widget_text(states, view.get("model_id", ""))
                if text is not None:
                    out["data"]["text/plain"] = text


def outputs_for_readers(nb):
    """The executed notebook as it is stored for readers (`course run --write`): tables, plots and printed results
    are kept; stderr streams (library warnings, which name files on the machine that ran them) are dropped, and the
    repository's absolute path in any output becomes relative (`/home/me/course/runs/x` -> `runs/x`)."""
    import copy

    import nbformat


    nb = copy.deepcopy(nb)
    prefix = json.dumps(str(REPO_DIR) + "/")[1:-1]  # as it appears inside JSON strings
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            kept = [o for o in cell.get("outputs", [])
                    if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
            cell.outputs = [nbformat.from_dict(json.loads(json.dumps(o).replace(prefix, ""))) for o in kept]
    widget_fallbacks(nb)
    return nb


def format_table(results: Sequence[LessonResult]) -> str:
    """A Markdown table of runtime, peak memory (and peak GPU memory, when a lesson used CUDA) and pass/fail."""
    gpu = any(r.gpu_peak_mb is not None for r in results)
    lines = ["| lesson | runtime (s) | CPU time (s) | peak memory (MB) |" + (" peak GPU memory (MB) |" if gpu else "")
             + " result |", "|---|---:|---:|---:|" + ("---:|" if gpu else "") + "---|"]
    for r in results:
        flag = "pass" if r.passed else f"FAIL: {r.error}"
        if r.passed and not r.within_budget:
            flag += f" (over budget: {r.budget_seconds} s / {BUDGET_MEMORY_MB} MB)"
        cuda = (f" {r.gpu_peak_mb:.0f} |" if r.gpu_peak_mb is not None else " - |") if gpu else ""
        lines.append(f"| {r.lesson} | {r.seconds:.0f} | {r.cpu_seconds:.0f} | {r.peak_memory_mb:.0f} |{cuda} {flag} |")
    return "\n".join(lines)


def _write_notebook(nb, path: Path) -> None:
    """`nbformat.write`, atomically."""
    import nbformat

    text = nbformat.writes(nb)
    write_atomic(path, text if text.endswith("\n") else text + "\n")


def _save_table(results: Sequence[LessonResult], out_dir: Path) -> None:
    """benchmark.json and benchmark.md of the lessons run so far (rewritten after each lesson)."""
    write_atomic(out_dir / "benchmark.json", json.dumps([asdict(r) for r in results], indent=2) + "\n")
    write_atomic(out_dir / "benchmark.md", format_table(results) + "\n")


def _stamp() -> str:
    """Now, to the microsecond: run folders sort by the time they started."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def new_run_dir(runs_dir: Path) -> Path:
    """A fresh, absolute `runs_dir/run-<stamp>` folder that no other run shares, even one started at the same time.

    `mkdir` without `exist_ok` either creates the folder or fails, so two runs cannot both claim it; the loser
    takes `run-<stamp>-2`, `-3`, ...
    """
    runs_dir = Path(_absolute(runs_dir))
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"run-{_stamp()}"
    for n in range(1, 1000):
        out_dir = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            out_dir.mkdir()
            return out_dir
        except FileExistsError:
            continue
    raise CourseError(f"new_run_dir: could not create a new run folder {base}-* in {runs_dir}")


def _interrupted(lesson: str, results: list[LessonResult], out_dir: Path) -> RunInterrupted:
    """The one line for Ctrl-C during `lesson` (printed to stderr) and the exit that carries it."""
    n = len(results)
    message = (f"interrupted during lesson {lesson}; kept the results of {n} finished "
               f"lesson{'' if n == 1 else 's'} in {out_dir}")
    print(message, file=sys.stderr)
    return RunInterrupted(message, results, out_dir)


def _run_one(path: Path, env: Mapping[str, str], kernel_log: Path | None = None) -> tuple[LessonResult, object]:
    """`run_notebook`, with an unreadable notebook turned into a failed lesson that names the file."""
    try:
        return run_notebook(path, env=env, kernel_log=kernel_log)
    except NotebookError as err:
        return LessonResult(path.stem, 0.0, 0.0, False, str(err)), None


def with_solutions(lessons: Sequence[Path]) -> list[Path]:
    """Each lesson followed by its solutions notebook (`notebooks/solutions/NN_solutions.ipynb`) where it has one:
    the order in which a solutions notebook finds the results its lesson saved."""
    out = []
    for path in lessons:
        solution = path.parent / "solutions" / f"{path.stem[:2]}_solutions.ipynb"
        out += [path, solution] if solution.is_file() else [path]
    return out


def is_solutions(lesson: str) -> bool:
    """Whether a benchmark row is a solutions notebook (not a lesson: no course-map runtime of its own)."""
    return lesson.endswith("_solutions")


def store_reference(lesson: str, runs_dir: Path, since: float, reference_dir: Path | None = None) -> bool:
    """With `course run --write`: the record a passing lesson saved in this run becomes its shipped reference record
    (`data_samples/reference_results/<lesson>.json`, which the capstone, `course report` and the site read on a
    fresh clone), so the stored notebooks and the reference run are always one run. Only lessons that ship a
    reference record (01-08) and only a record written after `since` (this run's, not an older one). True if
    copied."""
    reference_dir = Path(REFERENCE_RESULTS_DIR if reference_dir is None else reference_dir)
    record, target = Path(runs_dir) / "results" / f"{lesson}.json", reference_dir / f"{lesson}.json"
    if not target.exists() or not record.exists() or record.stat().st_mtime < since:
        return False
    write_atomic(target, record.read_text(encoding="utf-8"))
    return True


def run_lessons(selected: Sequence[str] = (), write: bool = False, runs_dir: Path | None = None,
                keep_going: bool = False, environ: Mapping[str, str] | None = None, solutions: bool = False
                ) -> tuple[list[LessonResult], Path]:
    """Run lessons in order with a progress bar; save executed copies and the table under runs/run-<timestamp>/.

    Stops at the first failing lesson (naming it and its cell) unless `keep_going`; a notebook that cannot be
    read is a failed lesson naming the file. With `write`, the executed notebooks replace the committed ones, so
    a reader on GitHub sees the cpu-profile tables and plots, and each lesson's saved record becomes its shipped
    reference record (`store_reference`): both from the same run. benchmark.json is rewritten after every lesson, so
    Ctrl-C loses only the lesson it interrupted: it ends in one line and `RunInterrupted` (exit code 130).
    `environ` adds variables to the kernels' environment (a gpu rehearsal's, for example). With `solutions`,
    each lesson's solutions notebook runs right after it (and is stored too, with `write`).
    """
    from tqdm.auto import tqdm

    runs_dir = Path(RUNS_DIR if runs_dir is None else runs_dir)
    notebooks = lesson_notebooks(selected)
    notebooks = with_solutions(notebooks) if solutions else notebooks
    out_dir = new_run_dir(runs_dir)
    (out_dir / "executed").mkdir()
    env = {**kernel_env(runs_dir), **(environ or {})}
    results: list[LessonResult] = []
    bar = tqdm(notebooks, desc="lessons", unit="lesson")
    current = notebooks[0].stem if notebooks else "(none)"
    try:
        for path in bar:
            current = path.stem
            bar.set_postfix_str(current)
            started = time.time()
            result, nb = _run_one(path, env, out_dir / "kernels.log")
            if nb is not None:
                _write_notebook(nb, out_dir / "executed" / path.name)
                if write and result.passed:
                    _write_notebook(outputs_for_readers(nb), path)
                    store_reference(path.stem, runs_dir, started)
            results.append(result)
            _save_table(results, out_dir)
            if not result.passed and not keep_going:
                break
    except KeyboardInterrupt:
        bar.close()
        raise _interrupted(current, results, out_dir) from None
    bar.close()
    _save_table(results, out_dir)
    return results, out_dir

