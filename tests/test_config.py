"""One numeric gate for every training config; seeds from setup(); results saved atomically and never lost."""

import dataclasses
import json
import math
import multiprocessing
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils import config, profiles, results
from course_utils.alignment import AlignConfig, RLConfig
from course_utils.classify import ClassifierConfig
from course_utils.costs import CostConfig
from course_utils.errors import CourseError
from course_utils.forgetting import RunConfig
from course_utils.instruct import TuneConfig
from course_utils.noise import NoiseStudyConfig
from course_utils.overfitting import OverfitConfig
from course_utils.pretrain import PretrainConfig

CONFIGS = [AlignConfig, RLConfig, ClassifierConfig, CostConfig, RunConfig, TuneConfig, NoiseStudyConfig, OverfitConfig,
           PretrainConfig]
NONSENSE = [float("nan"), float("inf"), -1, 0, 1e9, "3", True, None, [1]]


def test_every_config_derives_from_the_one_base():
    assert all(issubclass(c, config.CourseConfig) for c in CONFIGS)


SHARED = ("steps", "learning_rate", "batch_size", "epochs", "seed", "warmup_steps", "max_length")
CASES = [(cls, f.name, value) for cls in CONFIGS for f in dataclasses.fields(cls) if f.name in SHARED
         for value in NONSENSE
         if not (value == 0 and f.name in ("seed", "warmup_steps"))
         and not (value is None and getattr(cls(), f.name) is None)]


@pytest.mark.parametrize("cls, field, value", CASES)
def test_nonsense_is_refused_naming_the_field(cls, field, value):
    with pytest.raises(CourseError, match=f"{cls.__name__}: {field} must"):
        cls(**{field: value})


@pytest.mark.parametrize("cls", CONFIGS)
def test_defaults_are_valid_and_numpy_integers_are_accepted(cls):
    import dataclasses

    cfg = cls()
    ints = {f.name: np.int64(getattr(cfg, f.name)) for f in dataclasses.fields(cls)
            if type(getattr(cfg, f.name)) is int and f.name in ("batch_size", "seed", "steps")}
    again = cls(**ints)
    assert all(type(getattr(again, k)) is int for k in ints)


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12), st.booleans(),
                 st.text(max_size=4)))
def test_learning_rate_gate_accepts_exactly_finite_numbers_in_range(value):
    ok = (not isinstance(value, (bool, str)) and math.isfinite(value) and 0 < value <= 1)
    if ok:
        assert RunConfig(learning_rate=value).learning_rate == float(value)
    else:
        with pytest.raises(CourseError, match="RunConfig: learning_rate must"):
            RunConfig(learning_rate=value)


def test_training_arguments_come_from_the_shared_fields():
    args = RunConfig(steps=7, learning_rate=3e-3, batch_size=4, warmup_steps=2, seed=5).training_arguments()
    assert (args.max_steps, args.learning_rate, args.per_device_train_batch_size, args.warmup_steps) == (7, 3e-3, 4, 2)
    assert args.seed == 5 and args.data_seed == 5
    by_epochs = TuneConfig(epochs=2.0).training_arguments()
    assert by_epochs.num_train_epochs == 2.0 and by_epochs.max_steps == -1
    with pytest.raises(config.TrainingSettingsError, match="learning_rate must be a positive number"):
        config.training_args(learning_rate=float("inf"))


def test_relations_between_fields_are_checked():
    with pytest.raises(CourseError, match="divisible"):
        RLConfig(batch_size=6, num_generations=4)
    with pytest.raises(CourseError, match="method must be one of"):
        TuneConfig(method="adapter")


# ---------------------------------------------------------------------------------------------------- seeds
def test_seeds_default_to_three_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv("COURSE_SEEDS", raising=False)
    assert profiles.lesson_seeds() == (0, 1, 2)
    monkeypatch.setenv("COURSE_SEEDS", "5,6,7")
    assert profiles.lesson_seeds() == (5, 6, 7)
    env = profiles.setup(quiet=True)
    assert env.seeds == (5, 6, 7) and env.seed == 5
    assert profiles.setup(seed=np.int64(3), quiet=True).seed == 3


@pytest.mark.parametrize("text", ["a,b", "1,1", "-1", "1.5", " , "])
def test_bad_seed_lists_get_one_line_errors(monkeypatch, text):
    monkeypatch.setenv("COURSE_SEEDS", text)
    with pytest.raises(profiles.ProfileError, match="(?i)seed"):
        profiles.lesson_seeds()


def test_threads_never_exceed_the_cores_and_can_be_forced(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert 1 <= profiles.configure_threads() <= cores
    monkeypatch.setenv("COURSE_THREADS", "1")
    assert profiles.configure_threads() == 1
    monkeypatch.delenv("COURSE_THREADS")
    assert profiles.configure_threads(threads=64) == cores


# ---------------------------------------------------------------------------------------------------- results
def test_a_record_that_cannot_be_serialised_leaves_the_old_one_intact(tmp_path):
    results.save_results("99_x", [{"a": 1.0}], directory=tmp_path, profile="cpu")
    before = (tmp_path / "99_x.json").read_text()
    for bad in ([{"a": float("inf")}], [{(1, 2): 1}], [{"a": object()}]):
        with pytest.raises(results.ResultsError):
            results.save_results("99_x", bad, directory=tmp_path, profile="cpu")
    assert (tmp_path / "99_x.json").read_text() == before
    assert not list(tmp_path.glob(".99_x*.tmp"))


def test_saving_archives_a_copy_and_replaces_atomically(tmp_path):
    for i in range(3):
        results.save_results("99_x", [{"a": i, "nan": float("nan"), "np": np.float32(0.5)}], directory=tmp_path,
                             profile="cpu")
    assert results.load_results("99_x", tmp_path)["table"][0] == {"a": 2, "nan": None, "np": 0.5}
    assert len(results.history("99_x", tmp_path)) == 2


def test_a_damaged_record_is_a_one_line_error_naming_the_file(tmp_path):
    (tmp_path / "99_x.json").write_text('{"lesson": "99_x", "tab')
    with pytest.raises(results.ResultsError, match=r"99_x\.json.*damaged.*course run 99"):
        results.load_results("99_x", tmp_path)


def _writer(directory: str, worker: int, n: int) -> None:
    for i in range(n):
        results.save_results("99_x", [{"worker": worker, "i": i}], directory=directory, profile="cpu")


def test_two_concurrent_writers_lose_nothing(tmp_path):
    n = 40
    procs = [multiprocessing.get_context("fork").Process(target=_writer, args=(str(tmp_path), w, n)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    saved = [json.loads(p.read_text()) for p in results.history("99_x", tmp_path)]
    saved.append(results.load_results("99_x", tmp_path))
    assert len(saved) == 2 * n  # every save is either the current record or in history, all valid JSON
