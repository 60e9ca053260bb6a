"""Generated hostile input for every public function that takes user data (issue 31).

Each test draws values of the wrong type, size, encoding or sign, paths and names that leave their folder, and
non-finite numbers, and requires one of two endings: the intended result, or a `CourseError` whose message is one
line naming what and where. Records are never lost: after a refused save the previous record is still there, whole.
The functions driven here are cheap (no model is trained); `CASES` counts every generated input and the last test
prints the total (run with `-s`).
"""

import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import make_dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_utils import bias, claims, config, data, errors, profiles, results, text
from course_utils.errors import CourseError
from course_utils.tools import runner

CASES = {"n": 0}
bias.is_interactive()  # its first call imports IPython, which raises the recursion limit: not inside hypothesis


def cheap(n: int):
    """Settings for `n` generated cases of a cheap function: no deadline, the same cases on every run."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def outcome(fn, *args, **kwargs):
    """`("ok", result)` or `("error", message)` for a one-line CourseError; anything else fails the test."""
    CASES["n"] += 1
    try:
        return "ok", fn(*args, **kwargs)
    except CourseError as err:
        msg = str(err).strip()
        assert msg and "\n" not in msg, f"{getattr(fn, '__name__', fn)}: not one line: {msg!r:.300}"
        return "error", msg
    except Exception as err:  # noqa: BLE001 - the point is to catch every other kind
        raise AssertionError(f"{getattr(fn, '__name__', fn)}: raised {type(err).__name__}: {err!s:.200} instead "
                             f"of a one-line CourseError") from err


@contextmanager
def env(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ------------------------------------------------------------------------------------------------ strategies
weird_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # lone surrogates
    st.text(alphabet="\x00\n\t\r /\\.", min_size=1, max_size=6),
    st.text(alphabet="ab", min_size=90, max_size=400),  # long
    st.sampled_from(["..", ".", "../x", "/etc/passwd", "a/../../b", "", " ", "04_noise", "04_noise-v2", "x*", "[a]"]),
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])
numbers = st.one_of(st.integers(), st.floats(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), non_finite,
                    st.sampled_from([np.int64(3), np.int8(-1), np.uint32(7), np.float32(0.5), np.float16(2.0)]))
anything = st.one_of(numbers, weird_text, st.none(), st.booleans(), st.binary(max_size=6),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                     st.just(np.zeros(3)), st.just(object()), st.just(np.bool_(True)))
cell = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60), st.floats(), weird_text,
                 st.just(np.zeros(2)), st.just(np.float32(1.5)), st.binary(max_size=3), st.lists(st.integers(), max_size=2))
rows = st.lists(st.dictionaries(st.one_of(st.text(max_size=5), st.integers(-3, 3), st.none()), cell, max_size=3),
                min_size=0, max_size=4)
tables = st.one_of(rows, anything, st.lists(anything, max_size=3))


# ------------------------------------------------------------------------------------------------ the number vocabulary
@cheap(500)
@given(value=anything, kind=st.sampled_from([int, float]),
       low=st.sampled_from([-math.inf, 0, 1]), high=st.sampled_from([1, 10**6, math.inf]),
       low_open=st.booleans(), high_open=st.booleans())
def test_check_number_is_the_intended_number_or_one_line(value, kind, low, high, low_open, high_open):
    limit = errors.Limit(low, high, low_open, high_open)
    ending, got = outcome(errors.check_number, value, "somewhere", "field", kind, limit)
    if ending == "ok":
        assert type(got) is kind and math.isfinite(got) and limit.admits(got) and got == value
        assert not isinstance(value, bool)
    else:
        assert got.startswith("somewhere: field must be")


@cheap(250)
@given(value=anything)
def test_named_number_checks(value):
    for fn, args in ((errors.check_rate, ("r", "rate")), (errors.check_count, ("c", "n")),
                     (errors.check_positive, ("p", "x")), (errors.check_seed, ("s",)), (profiles.check_seed, ("s",))):
        ending, got = outcome(fn, value, *args)
        if ending == "error":
            assert got.startswith(args[0] + ":")


@cheap(250)
@given(texts=st.one_of(weird_text, st.lists(st.one_of(weird_text, anything), max_size=4), anything,
                       st.binary(max_size=5), st.tuples(weird_text, weird_text)))
def test_check_texts(texts):
    ending, got = outcome(text.check_texts, texts, "helper")
    if ending == "ok":
        assert isinstance(got, list) and all(isinstance(t, str) for t in got)
        assert all(t.encode("utf-8") is not None for t in got)
        assert not isinstance(texts, (str, bytes))
    else:
        assert got.startswith("helper:")


# ------------------------------------------------------------------------------------------------ trainer arguments
TRAINER_KEYS = sorted(config.TRAINER_NUMBERS)


@cheap(250)
@given(key=st.sampled_from(TRAINER_KEYS), value=st.one_of(numbers, anything))
def test_every_trainer_number_is_gated(key, value):
    ending, got = outcome(config.training_args, **{key: value})
    if ending == "ok":
        kind, limit, _ = config.TRAINER_NUMBERS[key]
        read = getattr(got, key)
        assert (value is None and read is None) or (not isinstance(value, bool) and limit.admits(float(read))
                                                    and read == value)
    else:
        assert key in got


# a config with the shared fields, each with a valid default
Probe = make_dataclass("Probe", [("steps", int, 10), ("epochs", float | None, None), ("learning_rate", float, 1e-3),
                                 ("batch_size", int, 4), ("warmup_steps", int, 0), ("seed", int, 0),
                                 ("weight_decay", float, 0.0), ("max_length", int, 32)], bases=(config.CourseConfig,))


@cheap(200)
@given(field=st.sampled_from(["steps", "epochs", "learning_rate", "batch_size", "warmup_steps", "seed",
                              "weight_decay", "max_length"]), value=anything)
def test_config_fields_are_gated(field, value):
    ending, got = outcome(Probe, **{field: value})
    if ending == "error":
        assert f"Probe: {field}" in got


# ------------------------------------------------------------------------------------------------ environment variables
env_text = st.one_of(st.text(max_size=8), st.sampled_from(["1", "0", "true", "off", " yes ", "2", "-1", "1.5", "abc",
                                                         "5,6,7", "5,,6", "0x2", "1e3", "٣", "cpu", "GPU", "cuda"]))


@cheap(400)
@given(name=st.sampled_from(["COURSE_REHEARSAL", "COURSE_THREADS", "COURSE_SEEDS", "COURSE_DEVICE",
                             "COURSE_PROFILE", "COURSE_REVIEW"]), value=env_text)
def test_every_course_variable_is_read_or_named(name, value):
    if "\x00" in value:
        return  # the OS refuses such a variable before Python sees it
    read = {"COURSE_REHEARSAL": profiles.dry_run,
            "COURSE_THREADS": lambda: profiles.env_int("COURSE_THREADS", errors.Limit(0, 4096), "threads"),
            "COURSE_SEEDS": profiles.lesson_seeds, "COURSE_DEVICE": lambda: profiles.course_device("gpu"),
            "COURSE_PROFILE": profiles.choose_profile, "COURSE_REVIEW": bias.is_interactive}[name]
    with env(name, value):
        ending, got = outcome(read)
    if ending == "error":
        assert name in got or (name == "COURSE_PROFILE" and "profile" in got)
    elif name == "COURSE_REHEARSAL":
        assert got is (value.strip().lower() in profiles.ON)


# ------------------------------------------------------------------------------------------------ data files
@cheap(300)
@given(lines=st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
                                st.sampled_from(['{"a": 1}', '{"a": NaN}', '{"a": 1, "a": 2}', "[" * 3000,
                                                 '{"n": ' + "9" * 5000 + "}", '{"t": "\\ud800"}', "1e999"])),
                      min_size=0, max_size=4), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_read_jsonl_reads_rows_or_names_file_and_line(lines, encoding):
    folder = Path(tempfile.mkdtemp(dir=SCRATCH))
    path = folder / "rows.jsonl"
    path.write_bytes("\n".join(lines).encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else
                                             "replace"))
    ending, got = outcome(data.read_jsonl, path)
    if ending == "ok":
        assert got and all(isinstance(r, dict) for r in got)
    else:
        assert "rows.jsonl" in got


@cheap(250)
@given(rows=st.lists(st.one_of(st.dictionaries(st.text(max_size=4), cell, max_size=3), anything), max_size=3))
def test_write_jsonl_writes_all_or_nothing(rows):
    folder = Path(tempfile.mkdtemp(dir=SCRATCH))
    path = folder / "out.jsonl"
    ending, got = outcome(data.write_jsonl, path, rows)
    if ending == "ok" and rows:  # what is written reads back as the same rows
        assert data.read_jsonl(path) == json.loads(json.dumps(rows))
    elif ending == "error":
        assert "out.jsonl" in got and not path.exists()


# ------------------------------------------------------------------------------------------------ saved results
def _same(saved, given_table):
    return len(saved["table"]) == len(given_table)


@cheap(350)
@given(lesson=st.one_of(weird_text, st.sampled_from(["01_demo"] * 4)), table=tables,
       checks=st.one_of(st.none(), st.dictionaries(st.text(max_size=4), anything, max_size=2), anything),
       echoes=st.one_of(st.just(""), anything), notes=st.one_of(st.just(""), anything),
       profile=st.one_of(st.sampled_from(["cpu", None]), anything))
def test_save_results_saves_whole_or_keeps_the_old_record(lesson, table, checks, echoes, notes, profile):
    folder = SCRATCH / "records"
    before = {p.name: p.read_bytes() for p in folder.glob("*.json")} if folder.is_dir() else {}
    ending, got = outcome(results.save_results, lesson, table, checks=checks, echoes=echoes, notes=notes,
                          profile=profile, directory=folder)
    after = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    if ending == "ok":
        record = results.load_results(lesson, folder)  # what a save writes, a load reads back
        assert got.parent == folder.resolve() and _same(record, list(table) if not hasattr(table, "to_dict") else table)
        assert {k: v for k, v in after.items() if k != got.name} == {k: v for k, v in before.items() if k != got.name}
        if got.name in before:  # the old record went to history, whole
            archived = results.history(lesson, folder)[-1]
            assert archived.read_bytes() == before[got.name]
    else:
        assert after == before  # nothing lost, nothing half-written
        assert not any(p.name.endswith(".tmp") for p in folder.iterdir()) if folder.is_dir() else True


good = {"lesson": "01_demo", "profile": "cpu", "table": [{"a": 1}], "checks": {"x": True}, "echoes": "", "notes": ""}


@cheap(400)
@given(key=st.sampled_from(sorted(good) + ["claims"]), value=st.one_of(anything, st.lists(anything, max_size=2),
                                                                      st.lists(st.dictionaries(
                                                                          st.sampled_from(["claim", "mean", "verdict",
                                                                                           "as declared", "95% low"]),
                                                                          anything, max_size=3), max_size=2)),
       raw=st.one_of(st.none(), st.binary(max_size=30), st.sampled_from([b"[" * 100_000, b"{}", b"null",
                                                                          b'{"table": ' + b"9" * 5000 + b"}"])))
def test_load_results_returns_a_valid_record_or_names_the_file(key, value, raw):
    folder = Path(tempfile.mkdtemp(dir=SCRATCH))
    path = folder / "01_demo.json"
    if raw is None:
        try:
            path.write_text(json.dumps({**good, key: value}, default=str), encoding="utf-8")
        except (ValueError, UnicodeEncodeError):
            return
    else:
        path.write_bytes(raw)
    ending, got = outcome(results.load_results, "01_demo", folder)
    if ending == "ok":
        assert results.record_problem(got, "01_demo") is None
    else:
        assert "01_demo" in got


@cheap(300)
@given(lesson=weird_text)
def test_names_never_leave_the_results_folder(lesson):
    folder = SCRATCH / "names"
    for fn in (results.load_results, results.history):
        ending, got = outcome(fn, lesson, folder)
        if ending == "ok" and fn is results.history:
            assert all(p.parent == folder.resolve() / "history" for p in got)
    ending, got = outcome(results.record_path, lesson, folder, "here")
    if ending == "ok":
        assert got.parent == folder.resolve() and got.name == f"{lesson}.json"


# ------------------------------------------------------------------------------------------------ claims
@cheap(250)
@given(threshold=anything, op=st.one_of(st.sampled_from([">", ">=", "<", "<="]), weird_text),
       name=st.one_of(weird_text, anything))
def test_claims_are_declared_or_refused(threshold, op, name):
    ending, got = outcome(claims.Claim, name, "says", "", "measure", op, threshold)
    if ending == "ok":
        assert type(got.threshold) in (int, float) and math.isfinite(got.threshold)


@cheap(250)
@given(values=st.one_of(st.lists(st.one_of(st.floats(-1e6, 1e6), numbers), max_size=5), anything),
       level=st.one_of(st.just(0.95), anything))
def test_t_interval(values, level):
    ending, got = outcome(claims.t_interval, values, level)
    if ending == "ok":
        mean, low, high = got
        assert math.isfinite(mean) and (len(values) < 2 or low <= mean <= high)
    else:
        assert got.startswith("t_interval")


@cheap(200)
@given(per_seed=st.dictionaries(st.integers(0, 5), anything, max_size=4))
def test_verdicts_on_hostile_measurements(per_seed):
    c = claims.Claim("c", "says", "", "m", ">", 0.5, rule="r", control="method off")
    with env("COURSE_REHEARSAL", None):
        ending, got = outcome(claims.verdicts, [c], {"c": per_seed}, {"c": per_seed})
    if ending == "error":
        assert "'c'" in got


# ------------------------------------------------------------------------------------------------ text and selection
@cheap(200)
@given(value=st.one_of(weird_text, anything, st.text(alphabet="xy ,", max_size=300)),
       max_tokens=st.one_of(st.none(), st.integers(1, 40), anything))
def test_encode(tokenizer, value, max_tokens):
    ending, got = outcome(text.encode, tokenizer, value, max_tokens=max_tokens)
    if ending == "ok":
        whole = text.encode(tokenizer, value)
        assert got == (whole if max_tokens is None else whole[:max_tokens])
    else:
        assert got.startswith("encode")


@cheap(200)
@given(selection=st.lists(weird_text, min_size=1, max_size=2))
def test_lesson_selection(selection):
    ending, got = outcome(runner.lesson_notebooks, selection)
    if ending == "ok":
        assert got and all(s.strip() for s in selection)


# ------------------------------------------------------------------------------------------------ bookkeeping
SCRATCH = Path(tempfile.mkdtemp(prefix="course-hostile-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


@pytest.fixture(scope="session")
def tokenizer():
    from course_utils.paths import TOKENIZER_DIR
    from course_utils.tokenizer import load_tokenizer

    return load_tokenizer(TOKENIZER_DIR)


def test_zz_report_how_many_cases_were_generated():
    print(f"\n{CASES['n']} generated hostile inputs, each a valid result or a one-line CourseError")
    assert CASES["n"] >= 3000
