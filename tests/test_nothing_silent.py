"""Issue 31, "Nothing silent, second round": each case the hostile probe found, as a test.

Every case here passed bad input through, followed a path out of its folder, left damage or broke the report
before the fix; each now ends in the intended result or a one-line `CourseError` that names what and where.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import claims, config, data, profiles, results, text, train, zoo
from course_utils.errors import CourseError
from course_utils.paths import MODELS_DIR, REPO_DIR
from course_utils.tools import cli, report

from bad_inputs import expect_clear_error

TRIED = {"n": 0}


def clear_error(fn, *args, match=None, **kwargs) -> str:
    return expect_clear_error(TRIED, fn, *args, match=match, **kwargs)


def good_record(tmp_path, lesson="01_demo"):
    return results.save_results(lesson, [{"a": 1, "b": 0.5}], checks={"ok": True}, profile="cpu", directory=tmp_path)


# ------------------------------------------------------------------------------ a finding reported as held


@pytest.mark.parametrize("spelling", ["false", "no", "off", "0", "", " OFF ", "False"])
def test_dry_run_off_spellings(monkeypatch, spelling):
    monkeypatch.setenv("COURSE_REHEARSAL", spelling)
    assert profiles.dry_run() is False


@pytest.mark.parametrize("spelling", ["1", "true", "yes", "on", "TRUE", " On "])
def test_dry_run_on_spellings(monkeypatch, spelling):
    monkeypatch.setenv("COURSE_REHEARSAL", spelling)
    assert profiles.dry_run() is True


@pytest.mark.parametrize("spelling", ["maybe", "2", "tru", "-1"])
def test_dry_run_unknown_spelling_names_the_variable(monkeypatch, spelling):
    monkeypatch.setenv("COURSE_REHEARSAL", spelling)
    clear_error(profiles.dry_run, match="COURSE_REHEARSAL")


def test_claims_are_asserted_when_the_dry_run_is_spelled_off(monkeypatch):
    monkeypatch.setenv("COURSE_REHEARSAL", "false")
    c = claims.Claim("c", "says", "", "m", ">", 1.0, rule="r", control="method off")
    table = claims.verdicts([c], {"c": {0: 0.0, 1: 0.0}}, {"c": 0.0})
    clear_error(claims.check, table, match="c")


@pytest.mark.parametrize("value", ["False", float("nan"), "yes", 1.0, None, [True]])
def test_check_values_must_be_real_booleans(tmp_path, value):
    clear_error(results.save_results, "01_demo", [{"a": 1}], checks={"finding": value}, profile="cpu",
                directory=tmp_path, match="finding")
    assert not (tmp_path / "01_demo.json").exists()


def test_numpy_booleans_are_saved_as_booleans(tmp_path):
    results.save_results("01_demo", [{"a": 1}], checks={"x": np.bool_(True), "y": False}, profile="cpu",
                         directory=tmp_path)
    assert results.load_results("01_demo", tmp_path)["checks"] == {"x": True, "y": False}


# ------------------------------------------------------------------------------ a model that loads wrong


def test_untied_config_over_tied_weights_is_refused(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(MODELS_DIR / "gpt2", folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg.get("tie_word_embeddings", True) is not False
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    clear_error(zoo.load_local, folder, match="lm_head")


# ------------------------------------------------------------------------------ one bad record breaks the report


@pytest.mark.parametrize("field", ["echoes", "notes"])
def test_save_refuses_none_for_text_fields(tmp_path, field):
    clear_error(results.save_results, "01_demo", [{"a": 1}], profile="cpu", directory=tmp_path,
                match=field, **{field: None})


@pytest.mark.parametrize("profile", [5, 1.5, ["cpu"], "tpu"])
def test_save_refuses_a_profile_that_is_not_one(tmp_path, profile):
    clear_error(results.save_results, "01_demo", [{"a": 1}], profile=profile, directory=tmp_path, match="profile")


BAD_RECORDS = {
    "checks as a list": lambda r: r.update(checks=["a"]),
    "table null": lambda r: r.update(table=None),
    "numeric profile": lambda r: r.update(profile=3),
    "echoes null": lambda r: r.update(echoes=None),
    "notes a number": lambda r: r.update(notes=4),
    "check not a boolean": lambda r: r.update(checks={"a": "False"}),
    "row not a dict": lambda r: r.update(table=[1]),
    "claims a dict": lambda r: r.update(claims={"a": 1}),
    "claim row not a dict": lambda r: r.update(claims=[3]),
    "lesson mismatch": lambda r: r.update(lesson="02_other"),
}


@pytest.mark.parametrize("damage", sorted(BAD_RECORDS))
def test_load_validates_what_save_validates(tmp_path, damage):
    path = good_record(tmp_path)
    record = json.loads(path.read_text())
    BAD_RECORDS[damage](record)
    path.write_text(json.dumps(record))
    clear_error(results.load_results, "01_demo", tmp_path, match="01_demo")


def _write_bad_lessons(tmp_path):
    folder = tmp_path / "results"
    good_record(folder, "01_good")
    for i, damage in enumerate(sorted(BAD_RECORDS)):
        path = good_record(folder, f"5{i}_bad")
        record = json.loads(path.read_text())
        BAD_RECORDS[damage](record)
        path.write_text(json.dumps(record))
    (folder / "60_garbage.json").write_text("{not json")
    runs = tmp_path / "runs"
    (runs / "run-1").mkdir(parents=True)
    (runs / "run-1" / "benchmark.json").write_text(json.dumps([{"lesson": "01_good"}, {"lesson": "5"}, 7]))
    (runs / "run-2").mkdir()
    (runs / "run-2" / "benchmark.json").write_text("[{")
    return folder, runs


def test_report_shows_every_good_record_and_names_each_bad_one(tmp_path):
    folder, runs = _write_bad_lessons(tmp_path)
    page = report.build_report(folder, runs, notebooks_dir=tmp_path / "none")
    assert 'id="01_good"' in page
    for i in range(len(BAD_RECORDS)):
        assert f"5{i}_bad.json" in page
    assert "60_garbage.json" in page and "run-1/benchmark.json" in page and "run-2/benchmark.json" in page
    problems = page.split('<ul class="problems">')[1].split("</ul>")[0]
    lines = problems.split("<li>")[1:]
    assert len(lines) == len(BAD_RECORDS) + 1 + 3 + 1  # the records, the garbage file, three rows, one file
    assert all("\n" not in line.strip() for line in lines)


def test_course_report_cli_with_bad_records_exits_cleanly(tmp_path, monkeypatch, capsys):
    folder, runs = _write_bad_lessons(tmp_path)
    out = tmp_path / "page.html"
    assert report.write_report(out, folder, runs).is_file()


# ------------------------------------------------------------------------------ bad arguments that train anyway


def test_a_bare_string_is_not_a_list_of_texts(tokenizer):
    clear_error(train.tokenize_texts, tokenizer, "hello world", match="tokenize_texts")
    clear_error(text.check_texts, "abc", "somewhere", match="somewhere")
    clear_error(text.check_texts, b"abc", "somewhere", match="somewhere")


@pytest.mark.parametrize("kwargs,name", [
    (dict(max_steps=0), "max_steps"), (dict(max_steps=-5), "max_steps"), (dict(max_steps=1.5), "max_steps"),
    (dict(weight_decay=float("nan")), "weight_decay"), (dict(weight_decay=-1.0), "weight_decay"),
    (dict(seed=-1), "seed"), (dict(seed=2**40), "seed"), (dict(data_seed=-3), "data_seed"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(warmup_steps=float("nan")), "warmup_steps"),
    (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    (dict(max_grad_norm=float("inf")), "max_grad_norm"), (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(num_train_epochs=-1), "num_train_epochs"), (dict(per_device_eval_batch_size=0), "per_device_eval"),
    (dict(logging_steps=0), "logging_steps"), (dict(save_steps=float("nan")), "save_steps"),
    (dict(seed="0"), "seed"), (dict(max_steps=True), "max_steps"),
])
def test_training_args_gate_every_number(kwargs, name):
    clear_error(config.training_args, match=name, **kwargs)


def test_training_args_keep_valid_numbers():
    args = config.training_args(max_steps=np.int64(7), weight_decay=0, seed=np.uint32(3), warmup_steps=0.1)
    assert (args.max_steps, args.weight_decay, args.seed, args.warmup_steps) == (7, 0, 3, 0.1)
    assert type(args.max_steps) is int and type(args.seed) is int


# ------------------------------------------------------------------------------ raw errors where one line is promised


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "0x2", "1e3"])
def test_course_threads_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("COURSE_THREADS", value)
    clear_error(profiles.configure_threads, match="COURSE_THREADS")


def test_course_threads_valid(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("COURSE_THREADS", " 1 ")
        assert profiles.configure_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["5,x", "1.5", "-1", "5,,5", "99999999999"])
def test_course_seeds_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("COURSE_SEEDS", value)
    clear_error(profiles.lesson_seeds, match="COURSE_SEEDS")


@pytest.mark.parametrize("line", ["[" * 100_000 + "]" * 100_000, '{"n": ' + "9" * 5000 + "}",
                                  '{"a": ' + "[" * 5000 + "]" * 5000 + "}"])
def test_read_jsonl_names_file_and_line_for_deep_or_huge_json(tmp_path, line):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"ok": 1}\n' + line + "\n")
    clear_error(data.read_jsonl, path, match="rows.jsonl line 2")


@pytest.mark.parametrize("cell", [np.zeros(3), torch.zeros(2), np.zeros((2, 2)), object(), {1, 2}, b"x"])
def test_a_table_cell_that_is_not_a_scalar_names_the_column(tmp_path, cell):
    clear_error(results.save_results, "01_demo", [{"a": 1}, {"a": 2, "weird": cell}], profile="cpu",
                directory=tmp_path, match="weird")


def test_zero_dimensional_arrays_are_unwrapped(tmp_path):
    results.save_results("01_demo", [{"a": np.float32(0.5), "b": torch.tensor(2)}], profile="cpu", directory=tmp_path)
    assert results.load_results("01_demo", tmp_path)["table"] == [{"a": 0.5, "b": 2}]


@pytest.mark.parametrize("lesson", ["a\x00b", "x" * 300, "", "  ", "..", ".", "a/b", "a\\b", "\n", "a\nb", 7, None,
                                    ".hidden"])
def test_lesson_names_are_checked_on_save_load_and_history(tmp_path, lesson):
    clear_error(results.save_results, lesson, [{"a": 1}], profile="cpu", directory=tmp_path, match="lesson")
    clear_error(results.load_results, lesson, tmp_path, match="lesson")
    clear_error(results.history, lesson, tmp_path, match="lesson")


def test_a_lone_surrogate_is_a_clear_error(tokenizer, tmp_path):
    clear_error(text.encode, tokenizer, "abc \ud800 def", match="encode")
    clear_error(text.check_texts, ["fine", "bad \udfff"], "here", match="here")
    clear_error(data.write_jsonl, tmp_path / "x.jsonl", [{"t": "ok"}, {"t": "\ud800"}], match="row 1")
    assert not (tmp_path / "x.jsonl").exists()
    clear_error(results.save_results, "01_demo", [{"a": "\ud800"}], profile="cpu", directory=tmp_path,
                match="01_demo")


def test_t_interval_of_nothing():
    clear_error(claims.t_interval, [], match="t_interval")
    clear_error(claims.t_interval, [1.0, float("nan")], match="t_interval")
    clear_error(claims.t_interval, "12", match="t_interval")


def test_numpy_threshold_is_accepted():
    c = claims.Claim("c", "says", "", "m", ">=", np.float32(0.5))
    assert c.threshold == 0.5 and type(c.threshold) is float
    assert claims.Claim("d", "s", "", "m", ">", np.int64(2)).threshold == 2
    clear_error(claims.Claim, "c", "s", "", "m", ">", np.float32("nan"), match="threshold")


# ------------------------------------------------------------------------------ files outside their folder


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../b"])
def test_load_results_stays_in_its_folder(tmp_path, name):
    inside = tmp_path / "results"
    inside.mkdir()
    good_record(tmp_path, "x")  # tmp_path/x.json: one folder up
    clear_error(results.load_results, name, inside, match="lesson")


def test_a_lock_that_is_a_symlink_is_not_followed(tmp_path):
    folder, target = tmp_path / "results", tmp_path / "elsewhere"
    folder.mkdir()
    target.write_text("precious")
    (folder / ".lock").symlink_to(target)
    clear_error(results.save_results, "01_demo", [{"a": 1}], profile="cpu", directory=folder, match=".lock")
    assert target.read_text() == "precious"


def test_a_history_folder_that_is_a_symlink_is_not_followed(tmp_path):
    folder, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    good_record(folder)
    elsewhere.mkdir()
    (folder / "history").symlink_to(elsewhere)
    clear_error(results.save_results, "01_demo", [{"a": 2}], profile="cpu", directory=folder, match="history")
    clear_error(results.history, "01_demo", folder, match="history")
    assert list(elsewhere.iterdir()) == []
    assert results.load_results("01_demo", folder)["table"] == [{"a": 1, "b": 0.5}]


def test_a_record_that_is_a_symlink_is_not_followed(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    outside = good_record(tmp_path, "x")
    (folder / "x.json").symlink_to(outside)
    clear_error(results.load_results, "x", folder, match="x.json")


@pytest.mark.parametrize("value", ["", "  "])
def test_blank_runs_dir_is_the_default_not_the_working_directory(tmp_path, value):
    env = {**os.environ, "COURSE_RUNS_DIR": value, "PYTHONPATH": str(REPO_DIR)}
    out = subprocess.run([sys.executable, "-c", "from course_utils.paths import RUNS_DIR; print(RUNS_DIR)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(REPO_DIR / "runs")


def test_history_of_a_lesson_is_only_that_lesson(tmp_path):
    for lesson in ("04_noise", "04_noise-v2", "04_noise_study"):
        good_record(tmp_path, lesson)
        good_record(tmp_path, lesson)
    assert [p.name.startswith("04_noise-2") for p in results.history("04_noise", tmp_path)] == [True]
    assert len(results.history("04_noise-v2", tmp_path)) == 1
    (tmp_path / "history" / "04_noise-garbage.json").write_text("{}")
    assert len(results.history("04_noise", tmp_path)) == 1


# ------------------------------------------------------------------------------ faults that leave damage


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from course_utils import results
folder = Path(sys.argv[1])
results.save_results("01_demo", [{"text": "x" * 20000}], profile="cpu", directory=folder)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY))
try:
    results.save_results("01_demo", [{"text": "y" * 20000}], profile="cpu", directory=folder)
except Exception as err:
    print(type(err).__name__, str(err).count(chr(10)))
"""


def test_a_full_disk_during_the_history_copy_leaves_no_truncated_history(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for path in results.history("01_demo", tmp_path):
        json.loads(path.read_text())  # every archived record is whole
    assert results.load_results("01_demo", tmp_path)["table"] == [{"text": "x" * 20000}]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "history").iterdir())
    assert out.stdout.startswith("ResultsError 0"), out.stdout


def test_a_stray_temporary_file_from_a_killed_save_is_cleaned(tmp_path):
    good_record(tmp_path)
    stray = tmp_path / ".01_demo.json.abc123.tmp"
    stray.write_text('{"half')
    old = time.time() - 3600
    os.utime(stray, (old, old))
    good_record(tmp_path)
    assert not stray.exists()


def _checkpoint(folder: Path, step: int, truncate: bool = False) -> None:
    from safetensors.torch import save_file

    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(ck / "model.safetensors"))
    (ck / "trainer_state.json").write_text("{}")
    if truncate:
        raw = (ck / "model.safetensors").read_bytes()
        (ck / "model.safetensors").write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("cut", ["half", "header", "empty"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, cut):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4, truncate=True)
    weights = tmp_path / "checkpoint-4" / "model.safetensors"
    if cut == "header":
        weights.write_bytes(weights.read_bytes()[:20])
    elif cut == "empty":
        weights.write_bytes(b"")
    assert train.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


# ------------------------------------------------------------------------------ the CLI


def test_report_out_a_directory_or_unwritable(tmp_path, capsys):
    folder = tmp_path / "results"
    good_record(folder)
    clear_error(report.write_report, tmp_path, folder, tmp_path, match=str(tmp_path))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere
            clear_error(report.write_report, locked / "r.html", folder, tmp_path, match="r.html")
    finally:
        locked.chmod(0o700)
    assert cli.main(["report", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_course_run_blank_selects_nothing(blank):
    from course_utils.tools.runner import lesson_notebooks

    clear_error(lesson_notebooks, [blank], match="lesson")


# ------------------------------------------------------------------------------ a promise not kept


def test_encode_with_max_tokens_costs_what_the_first_words_cost(tokenizer):
    huge = "x" * 2_000_000
    start = time.perf_counter()
    ids = text.encode(tokenizer, huge, max_tokens=16)
    assert time.perf_counter() - start < 1.0
    assert ids == text.encode(tokenizer, huge[:4000], max_tokens=16)
    for sample in ("ab" * 3000, "a,b;" * 2000, "héllo" * 1000, "12345" * 900):
        assert text.encode(tokenizer, sample, max_tokens=16) == text.encode(tokenizer, sample)[:16]
