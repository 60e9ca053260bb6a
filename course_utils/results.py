"""Each lesson's measured table, saved in one documented format so the capstone and `course report` can read it.

Format (`runs/results/<lesson>.json`, one file per lesson, holding the latest run; nothing is overwritten silently:
the previous version is first moved to `runs/results/history/<lesson>-<UTC timestamp>.json`):

    {"lesson": "04_noise_study", "profile": "cpu",
     "table": [{...one row per measured configuration...}],
     "checks": {"label noise costs more than typos": true, ...},   # the lesson's asserted findings
     "claims": [{"claim": ..., "values": {seed: value}, "mean": ..., "verdict": "held", ...}],  # claims.records
     "echoes": "Li & Sen 2026 ...",                                  # the published figure it echoes
     "notes": "free text: what did not reproduce at toy scale"}

Saving is atomic and never loses a record: the new record is validated and serialised first (finite numbers,
string keys, real booleans), written to a temporary file beside the target and moved into place in one step; the
previous record is copied to history first, the same way; concurrent writers (two kernels) take turns through a lock
file. Reading validates a record with the same rules (`check_record`), so a damaged or hand-edited file is one line
naming the file and the field, never a wrong value or a traceback further on.

Every path is resolved and confined once (`record_path`, `history_dir`): a lesson name is a file stem, never a
path; a record, the history folder or the lock that is a symbolic link is refused rather than followed.

The table holds numbers the notebook computed; nothing in it is typed in.

Used in lessons: 00, 01, 02, 03, 04, 05, 06, 07, 08, 09
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

from course_utils.errors import CourseError, check_text
from course_utils.paths import RUNS_DIR
from course_utils.profiles import PROFILES, choose_profile


def results_dir() -> Path:
    return RUNS_DIR / "results"


class ResultsError(CourseError, ValueError):
    """A record that cannot be saved as JSON, or a saved record that is damaged (the message names the file)."""


# ------------------------------------------------------------------------------------------ names and paths
MAX_LESSON_NAME = 100  # with the history suffix (-<timestamp>-<n>.json) well inside any file system's 255 bytes
_NOT_IN_A_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_lesson(lesson: Any, where: str) -> str:
    """`lesson` as a notebook stem like '04_noise_study': a string of at most 100 characters, not blank, not
    starting with '.', without a path separator or a control character; else one line naming `where`."""
    wanted = f"{where}: lesson must be a notebook stem like '04_noise_study'"
    if not isinstance(lesson, str):
        raise CourseError(f"{wanted}, got {type(lesson).__name__} {lesson!r:.40}")
    check_text(lesson, where, "lesson name")
    if not lesson.strip() or lesson != lesson.strip() or lesson.startswith(".") or _NOT_IN_A_NAME.search(lesson) \
            or len(lesson) > MAX_LESSON_NAME:
        raise CourseError(f"{wanted} (no path, no control character, at most {MAX_LESSON_NAME} characters), "
                          f"got {lesson!r:.60}")
    return lesson


def folder_of(directory: Path | str | None) -> Path:
    """The results folder, resolved once (default `runs/results`)."""
    return Path(directory or results_dir()).expanduser().resolve()


def record_path(lesson: Any, directory: Path | str | None, where: str) -> Path:
    """`<folder>/<lesson>.json` for a checked lesson name; a record that is a symbolic link is refused."""
    path = folder_of(directory) / f"{check_lesson(lesson, where)}.json"
    if path.is_symlink():
        raise ResultsError(f"{path}: the record is a symbolic link; it is not followed (replace it by the file)")
    return path


def history_dir(folder: Path, create: bool = False) -> Path:
    """`<folder>/history`, refused when it is a symbolic link or not a folder (so no archive lands elsewhere)."""
    history = folder / "history"
    if history.is_symlink() or (history.exists() and not history.is_dir()):
        raise ResultsError(f"{history}: the history folder is a symbolic link or a file; it is not followed "
                           f"(move it away so the next save makes a real folder)")
    if create:
        history.mkdir(exist_ok=True)
    return history


# ------------------------------------------------------------------------------------------ one record's rules
def _clean(value: Any, where: str) -> Any:
    """`value` as plain JSON: numpy scalars unwrapped, NaN as null, string keys; anything else a one-line error."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, str):
        return check_text(value, where, "text", ResultsError)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ResultsError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if hasattr(key, "item"):
                key = key.item()
            if isinstance(key, bool) or not isinstance(key, (str, int, float)):
                raise ResultsError(f"{where}: key {key!r} is a {type(key).__name__}, not a string")
            out[check_text(str(key), where, "key", ResultsError)] = _clean(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
    shown = " ".join(repr(value)[:60].split())
    raise ResultsError(f"{where}: {type(value).__name__} {shown} cannot be saved as JSON (a cell holds one "
                       f"number, string, boolean or null)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _claim_problem(claim: Any) -> str | None:
    """Why a saved claim row cannot be shown (None when it can)."""
    if not isinstance(claim, dict):
        return f"is {type(claim).__name__}, not a dict"
    if not isinstance(claim.get("claim"), str):
        return "has no claim name"
    for key in ("mean", "95% low", "95% high"):
        if claim.get(key) is not None and not _is_number(claim[key]):
            return f"{key!r} is {claim[key]!r:.40}, not a number"
    for key in ("verdict", "held in", "published"):
        if key in claim and not isinstance(claim[key], str):
            return f"{key!r} is {type(claim[key]).__name__}, not a string"
    if "as declared" in claim and not isinstance(claim["as declared"], bool):
        return f"'as declared' is {claim['as declared']!r:.40}, not True or False"
    return None


def record_problem(record: Any, lesson: str) -> str | None:
    """Why `record` is not a valid record of `lesson` (None when it is): the rules a save enforces and a load
    checks again, so what one writes the other reads."""
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not an object"
    if record.get("lesson") != lesson:
        return f"'lesson' is {record.get('lesson')!r:.40}, not {lesson!r}"
    if record.get("profile") not in PROFILES:
        return f"'profile' is {record.get('profile')!r:.40}, not one of {PROFILES}"
    table = record.get("table")
    if not isinstance(table, list) or not table:
        return f"'table' is {table!r:.40}, not a non-empty list of rows"
    bad = next((i for i, row in enumerate(table) if not isinstance(row, dict)), None)
    if bad is not None:
        return f"table row {bad} is {type(table[bad]).__name__}, not a dict"
    checks = record.get("checks")
    if not isinstance(checks, dict):
        return f"'checks' is {type(checks).__name__}, not a dict {{finding: true/false}}"
    wrong = next((k for k, v in checks.items() if not isinstance(v, bool)), None)
    if wrong is not None:
        return f"check {wrong!r:.60} is {checks[wrong]!r:.40}, not True or False"
    for key in ("echoes", "notes"):
        if not isinstance(record.get(key), str):
            return f"{key!r} is {record.get(key)!r:.40}, not a string"
    claims = record.get("claims", [])
    if not isinstance(claims, list):
        return f"'claims' is {type(claims).__name__}, not a list"
    for i, claim in enumerate(claims):
        problem = _claim_problem(claim)
        if problem:
            return f"claim {i} {problem}"
    return None


def check_record(record: Any, lesson: str, where: str) -> dict[str, Any]:
    """`record` when it is a valid record of `lesson`, else a one-line `ResultsError` starting with `where`."""
    problem = record_problem(record, lesson)
    if problem:
        raise ResultsError(f"{where}: {problem}")
    return record


# ------------------------------------------------------------------------------------------ writing
@contextmanager
def _locked(directory: Path):
    """One writer at a time in `directory` (an advisory lock file, never followed if it is a symbolic link; a
    no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = directory / ".lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        raise ResultsError(f"{lock}: cannot take the lock ({os.strerror(err.errno) if err.errno else err}; "
                           f"a symbolic link is not followed)") from None
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write `text` to `path` so that a reader sees the old file or the whole new one, never half of either."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stray_temporaries(path: Path, older_than: float = 60.0) -> None:
    """Delete `.<name>.*.tmp` files a killed writer left beside `path` (call it holding the lock; a file younger
    than `older_than` seconds may belong to a writer that does not lock, so it stays)."""
    now = time.time()
    for stray in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            if not stray.is_symlink() and now - stray.stat().st_mtime > older_than:
                stray.unlink()
        except OSError:
            pass


def glob_escape(name: str) -> str:
    """`name` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _rows(table: Any, where: str) -> list[dict[str, Any]]:
    if hasattr(table, "reset_index") and hasattr(table, "to_dict"):  # a pandas DataFrame
        index_name = table.index.name
        table = table.reset_index() if index_name is not None else table
        table = table.to_dict(orient="records")
    rows = []
    for i, row in enumerate(table):
        if not isinstance(row, Mapping):
            raise CourseError(f"{where}: table row {i} is {type(row).__name__}, not a dict")
        rows.append(dict(row))
    return rows


def save_results(lesson: str, table: Any, checks: Mapping[str, bool] | None = None, echoes: str = "",
                 notes: str = "", profile: str | None = None, directory: Path | None = None,
                 claims: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write a lesson's measured table (a DataFrame or a list of dicts) and its checked findings.

    The latest record is `<directory>/<lesson>.json` (what the capstone and `course report` read). If that file
    already exists, it is archived first as `<directory>/history/<lesson>-<UTC timestamp>.json`, so re-running a
    lesson never silently destroys an earlier measurement. `checks` hold real booleans (numpy's too); the record
    passes `check_record` before anything is written.
    """
    out = record_path(lesson, directory, "save_results")
    where = f"save_results({lesson!r})"
    if isinstance(table, (str, bytes, Mapping)) or not hasattr(table, "__iter__"):
        raise CourseError(f"{where}: table must be a DataFrame or a list of dicts, got {type(table).__name__}")
    if checks is not None and not isinstance(checks, Mapping):
        raise CourseError(f"{where}: checks must be a dict {{finding: bool}}, got {type(checks).__name__}")
    if claims is not None and (isinstance(claims, (str, bytes, Mapping)) or not hasattr(claims, "__iter__")):
        raise CourseError(f"{where}: claims must be a list of claim rows (claims.records), got "
                          f"{type(claims).__name__}")
    rows = _rows(table, where)
    if not rows:
        raise CourseError(f"{where}: the measured table is empty")
    record = {"lesson": lesson, "profile": choose_profile(profile), "table": rows,
              "checks": {str(k): v for k, v in (checks or {}).items()}, "echoes": echoes, "notes": notes}
    if claims is not None:
        record["claims"] = list(claims)
    record = check_record(_clean(record, where), lesson, where)
    text = json.dumps(record, indent=2, allow_nan=False)  # keys in the lesson's order
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent):
        remove_stray_temporaries(out)
        try:
            if out.exists():
                archive(out)
            write_atomic(out, text)
        except OSError as err:
            raise ResultsError(f"{out}: could not be saved ({type(err).__name__}: "
                               f"{os.strerror(err.errno) if err.errno else err}); the previous record is kept") from None
    return out


def archive(path: Path) -> Path:
    """Copy a saved record to `history/<stem>-<UTC timestamp>.json` beside it; returns the archived path.

    A copy, not a move: until the new record replaces it, the old one stays where readers look. The copy is
    itself atomic, so a full disk leaves no half record in history."""
    from datetime import datetime, timezone

    history = history_dir(path.parent, create=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = history / f"{path.stem}-{stamp}.json"
    n = 1
    while target.exists():  # two saves within the same microsecond: keep both
        target, n = history / f"{path.stem}-{stamp}-{n}.json", n + 1
    remove_stray_temporaries(target)
    write_atomic(target, path.read_bytes())
    return target


_ARCHIVE_SUFFIX = re.compile(r"-\d{8}T\d{12}Z(-\d+)?\.json")


def history(lesson: str, directory: Path | None = None) -> list[Path]:
    """Archived earlier records of `lesson` (exactly that lesson, not one whose name starts with it), oldest
    first."""
    folder = folder_of(directory)
    check_lesson(lesson, "history")
    history = history_dir(folder)
    if not history.is_dir():
        return []
    return sorted(p for p in history.glob(f"{glob_escape(lesson)}-*.json")
                  if _ARCHIVE_SUFFIX.fullmatch(p.name[len(lesson):]) and p.is_file() and not p.is_symlink())


def load_results(lesson: str, directory: Path | None = None) -> dict[str, Any]:
    """A saved lesson record, checked with the rules a save enforces; a clear error naming the lesson to run if
    it is missing, or the file and the field if it is damaged."""
    path = record_path(lesson, directory, "load_results")
    if not path.is_file():
        raise CourseError(f"no saved results for lesson {lesson!r} ({path.name}); run that lesson first "
                          f"(`course run {lesson.split('_')[0]}`)")
    rerun = f"rerun that lesson (`course run {lesson.split('_')[0]}`)"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as err:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise ResultsError(f"{path}: the saved results of lesson {lesson!r} are damaged ({err.__class__.__name__}); "
                           f"{rerun}") from None
    problem = record_problem(record, lesson)
    if problem:
        raise ResultsError(f"{path}: not a valid record of lesson {lesson!r} ({problem}); {rerun}")
    return record


def saved_lessons(directory: Path | None = None) -> Sequence[str]:
    return sorted(p.stem for p in folder_of(directory).glob("*.json") if not p.name.startswith("."))
