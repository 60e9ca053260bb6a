"""`course report`: one HTML page with every lesson's measured table, the status of its checked findings, the
published figure it echoes, and its last measured runtime.

It reads only what the lessons saved (`runs/results/<lesson>.json`, see `results.py`) and what `course run`
measured (`runs/run-*/benchmark.json`), so every number on the page was computed by a notebook. An instructor can
open the page after a workshop run and see, lesson by lesson, what reproduced on that machine.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from course_utils.claims import SCOREBOARD_COLUMNS, scoreboard_rows
from course_utils.errors import CourseError
from course_utils.paths import NOTEBOOKS_DIR, RUNS_DIR
from course_utils.results import load_results, results_dir, saved_lessons
from course_utils.tools.runner import lesson_notebooks


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
.pass { color: #176b2c; font-weight: 600; } .fail { color: #a31515; font-weight: 600; }
.missing { color: #8a6d00; } .echo { color: #555; font-style: italic; }
.held { color: #176b2c; } .mixed { color: #8a6d00; } .notrep { color: #a31515; }
ul.problems { color: #a31515; }
"""


def scoreboard_html(records: dict[str, dict[str, Any]]) -> str:
    """The course-wide scoreboard, first on the page (`claims.scoreboard_rows`: test, threshold rule, control and
    its value, verdict, amendment per claim); lessons not yet on declared claims are listed below it."""
    rows = scoreboard_rows(records)
    legacy = [lesson for lesson, r in records.items() if not r.get("claims")]
    classes = {"held": "held", "mixed": "mixed", "undecided": "mixed", "not reproduced": "notrep",
               "cannot tell": "notrep"}
    shown = lambda v: "yes" if v is True else "NO" if v is False else str(v)  # noqa: E731 - 'as declared'

    def cell(column: str, value: Any) -> str:
        css = f"text {classes.get(value, '')}" if column == "verdict" else "text"
        return f'<td class="{css}">{html.escape(shown(value))}</td>'

    body = "".join("<tr>" + "".join(cell(k, r[k]) for k in SCOREBOARD_COLUMNS) + "</tr>" for r in rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in SCOREBOARD_COLUMNS)
    table = f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>No lesson has saved declared claims yet.</p>"
    note = (f"<p class=\"missing\">Lessons still on single-seed checks (not declared claims): "
            f"{html.escape(', '.join(legacy))}.</p>" if legacy else "")
    return f"<h2 id=\"scoreboard\">Scoreboard: every declared claim, over the seeds</h2>{table}{note}"


def benchmark_problem(row: Any) -> str | None:
    """Why a `benchmark.json` row cannot be shown (None when it can): it needs a lesson name, `seconds` and
    `peak_memory_mb` as numbers and `passed` as true or false (`cpu_seconds`, when there, a number)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")

    if not isinstance(row, dict):
        return f"a row is {type(row).__name__}, not an object"
    if not isinstance(row.get("lesson"), str):
        return f"a row has no lesson name ({row.get('lesson')!r:.40})"
    for key in ("seconds", "peak_memory_mb"):
        if not number(row.get(key)):
            return f"lesson {row['lesson']!r:.60}: {key!r} is {row.get(key)!r:.40}, not a number"
    if "cpu_seconds" in row and not number(row["cpu_seconds"]):
        return f"lesson {row['lesson']!r:.60}: 'cpu_seconds' is {row['cpu_seconds']!r:.40}, not a number"
    if not isinstance(row.get("passed"), bool):
        return f"lesson {row['lesson']!r:.60}: 'passed' is {row.get('passed')!r:.40}, not true or false"
    return None


def latest_benchmarks(runs_dir: Path = RUNS_DIR, problems: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The most recent `course run` measurement of each lesson (runtime, CPU time, peak memory), by lesson name.

    A damaged file or row is one line: appended to `problems` (and skipped) when it is given, raised otherwise."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(runs_dir).glob("run-*/benchmark.json")):  # names sort by time: later ones win
        where = f"{path.parent.name}/benchmark.json"
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            found = [f"{where}: is a JSON {type(rows).__name__}, not a list of rows"] \
                if not isinstance(rows, list) else []
        except json.JSONDecodeError as err:
            rows, found = [], [f"{where} is not valid JSON (line {err.lineno})"]
        except (OSError, ValueError, RecursionError) as err:
            rows, found = [], [f"{where} cannot be read ({type(err).__name__})"]
        for row in rows if isinstance(rows, list) else []:
            problem = benchmark_problem(row)
            if problem:
                found.append(f"{where}: {problem}")
            else:
                latest[row["lesson"]] = row
        if found and problems is None:
            raise CourseError(found[0])
        if found:
            problems.extend(found)
    return latest


def lesson_title(notebook: Path) -> str:
    """The notebook's first Markdown heading ('Lesson 05: overfitting, and what to keep'), else its file name."""
    try:
        cells = json.loads(Path(notebook).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return Path(notebook).stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return Path(notebook).stem


def main_figure(notebook: Path) -> str | None:
    """The lesson's main figure as base64 PNG: the output of the cell tagged `main-figure`, else its first plot."""
    try:
        cells = json.loads(Path(notebook).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    images = [(("main-figure" in c.get("metadata", {}).get("tags", [])), o["data"]["image/png"])
              for c in cells if c.get("cell_type") == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    tagged = [img for is_main, img in images if is_main]
    chosen = (tagged or [img for _, img in images] or [None])[0]
    return "".join(chosen) if isinstance(chosen, list) else chosen


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text, cls = f"{value:.3g}", ""
    elif isinstance(value, (int, bool)) or value is None:
        text, cls = ("" if value is None else str(value)), ""
    else:
        text, cls = str(value), ' class="text"'
    return f"<td{cls}>{html.escape(text)}</td>"


def table_html(rows: Sequence[dict[str, Any]], max_rows: int = 40) -> str:
    """A list of dicts as an HTML table (the union of their keys as columns, first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in rows[:max_rows])
    more = f"<p>({len(rows) - max_rows} more rows in the JSON file)</p>" if len(rows) > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def lesson_section(record: dict[str, Any], bench: dict[str, Any] | None, notebook: Path | None = None,
                   link: str = "") -> str:
    """One lesson: its title linked to its notebook, checks, echoed figure, notes, runtime, main figure and table."""
    checks = record.get("checks", {})
    items = "".join(f'<li><span class="{"pass" if ok else "fail"}">{"held" if ok else "did NOT hold"}</span> '
                    f"{html.escape(name)}</li>" for name, ok in checks.items())
    run = (f"<p>Last <code>course run</code>: {bench['seconds']:.0f} s wall, {bench.get('cpu_seconds', 0):.0f} s "
           f"CPU, peak {bench['peak_memory_mb']:.0f} MB, {'passed' if bench['passed'] else 'FAILED'}.</p>"
           if bench else "<p class=\"missing\">No <code>course run</code> measurement yet.</p>")
    title = lesson_title(notebook) if notebook else record["lesson"]
    figure = main_figure(notebook) if notebook else None
    img = f'<p><img alt="{html.escape(title)}" style="max-width:100%" src="data:image/png;base64,{figure}"></p>' \
        if figure else ""
    heading = f'<a href="{html.escape(link)}">{html.escape(title)}</a>' if link else html.escape(title)
    return (f"<h2 id=\"{html.escape(record['lesson'])}\">{heading} "
            f"<small>({html.escape(record.get('profile', '?'))} profile)</small></h2>"
            f"<p class=\"echo\">Echoes: {html.escape(record.get('echoes', '') or '-')}</p>"
            f"<ul>{items or '<li>no checks recorded</li>'}</ul>"
            f"<p>{html.escape(record.get('notes', ''))}</p>{run}{img}{table_html(record['table'])}")


def build_report(results: Path | None = None, runs_dir: Path = RUNS_DIR,
                 notebooks_dir: Path = NOTEBOOKS_DIR, out_dir: Path | None = None) -> str:
    """The whole page as a string: a summary table of all lessons, then one section per lesson."""
    directory = Path(results or results_dir())
    lessons = [p.stem for p in lesson_notebooks(notebooks_dir=Path(notebooks_dir))]
    saved = set(saved_lessons(directory))
    if not saved:
        raise CourseError(f"no saved lesson results in {directory.name}/; run the lessons first (`course run`)")
    problems: list[str] = []
    bench = latest_benchmarks(runs_dir, problems)
    summary, sections, records = [], [], {}
    for lesson in sorted(set(lessons) | saved):
        name = html.escape(lesson)
        if lesson not in saved:
            summary.append(f'<tr><td class="text">{name}</td><td class="missing" colspan="3">not run yet</td></tr>')
            continue
        try:
            record = load_results(lesson, directory)
        except CourseError as err:  # one bad record is named on the page; every other lesson is still shown
            problems.append(str(err))
            summary.append(f'<tr><td class="text">{name}</td><td class="fail" colspan="3">record not readable '
                           f'(see the list above)</td></tr>')
            continue
        records[lesson] = record
        checks = record.get("checks", {})
        held = sum(bool(v) for v in checks.values())
        cls = "pass" if held == len(checks) else "fail"
        b = bench.get(lesson)
        runtime = f"{b['seconds']:.0f} s" if b else "-"
        notebook = Path(notebooks_dir) / f"{lesson}.ipynb"
        link = os.path.relpath(notebook, Path(out_dir or runs_dir).resolve()) if notebook.is_file() else ""
        summary.append(f'<tr><td class="text"><a href="#{name}">{html.escape(lesson_title(notebook))}</a></td>'
                       f'<td class="{cls}">{held}/{len(checks)}</td><td>{runtime}</td>'
                       f'<td class="text echo">{html.escape(record.get("echoes", ""))}</td></tr>')
        sections.append(lesson_section(record, b, notebook if notebook.is_file() else None, link))
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Course report</title>"
            f"<style>{_STYLE}</style></head><body><h1>What the course measured</h1>"
            f"<p>Generated {stamp} from the lessons' saved results; every number below was computed by a notebook.</p>"
            f"{problems_html(problems)}{scoreboard_html(records)}<h2>Lessons</h2>"
            f"<table><tr><th>lesson</th><th>checks held</th><th>runtime</th><th>echoes</th></tr>{''.join(summary)}"
            f"</table>{''.join(sections)}</body></html>\n")


def problems_html(problems: Sequence[str]) -> str:
    """The records and benchmark files that could not be read, one line each (empty when there are none)."""
    if not problems:
        return ""
    items = "".join(f"<li>{html.escape(' '.join(p.split()))}</li>" for p in problems)
    return (f"<h2 id=\"problems\">Records that could not be read ({len(problems)})</h2>"
            f'<ul class="problems">{items}</ul>')


def write_report(out: Path | None = None, results: Path | None = None, runs_dir: Path = RUNS_DIR) -> Path:
    """Render the report to `out` (default `runs/report.html`) and return the path; an `out` that is a folder or
    cannot be written is one line naming it."""
    out = Path(out or Path(runs_dir) / "report.html")
    if out.is_dir():
        raise CourseError(f"{out} is a folder; name the HTML file to write "
                          f"(e.g. {out / 'report.html'})")
    page = build_report(results, runs_dir, out_dir=out.parent.resolve())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise CourseError(f"cannot write the report to {out} ({os.strerror(err.errno) if err.errno else err})") \
            from None
    return out
