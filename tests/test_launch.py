"""The course recipe runs as a script under `accelerate launch` with two data-parallel CPU processes, and a launch
that fails says which rank failed and shows that rank's own error."""

import json
import os
import subprocess
import sys

import pytest

from course_utils.errors import CourseError
from course_utils.tools.launch import LaunchConfig, launch_config, parse_args, rank_report
from course_utils.paths import REPO_DIR


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(CourseError, match="--steps"):
        parse_args(["--steps", "0"])


def test_training_arguments_come_from_the_config_with_the_values_the_tool_always_passed():
    from course_utils.config import training_args

    args = parse_args(["--steps", "12", "--batch-size", "3", "--lr", "0.002", "--seed", "5", "--people", "4"])
    config = launch_config(args)
    assert isinstance(config, LaunchConfig) and config.people == 4
    made = config.training_arguments(output_dir="out", logging_steps=3, ddp_backend=None)
    before = training_args(output_dir="out", max_steps=12, learning_rate=0.002, per_device_train_batch_size=3,
                           seed=5, data_seed=5, logging_steps=3, ddp_backend=None)
    assert made.to_dict() == before.to_dict()


def launch(tmp_path, script_args, timeout=300):
    """`accelerate launch` with the two-process CPU config, every rank's stdout and stderr kept under tmp/logs."""
    env = {**os.environ, "COURSE_PROFILE": "cpu", "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO_DIR / "configs" / "accelerate" / "cpu_2proc.yaml"), "--tee", "3", "--log_dir", str(logs),
           *script_args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return proc, logs


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path):
    proc, logs = launch(tmp_path, ["-m", "course_utils.tools.launch", "--steps", "4", "--batch-size", "4",
                                   "--out", str(tmp_path)])
    assert proc.returncode == 0, rank_report(proc.stderr, logs)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 8
    assert metrics["train_loss"] > 0 and 0 <= metrics["new_recall"] <= 1


FAILING_RANK = """
import os, sys, time
from course_utils.tools.launch import run_rank

def train(argv):
    if os.environ["RANK"] == "1":
        print("rank one's own last words", file=sys.stderr, flush=True)
        if os.environ["HOW"] == "abort":
            os.abort()
        raise RuntimeError("rank one broke on purpose")
    time.sleep(120)  # rank 0 would go on working; the launcher stops it when rank 1 fails
    return 0

sys.exit(run_rank(train))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "abort"])
def test_a_failing_rank_is_named_with_its_own_error(tmp_path, monkeypatch, how):
    (tmp_path / "failing_rank.py").write_text(FAILING_RANK)
    monkeypatch.setenv("HOW", how)
    proc, logs = launch(tmp_path, [str(tmp_path / "failing_rank.py")], timeout=120)
    assert proc.returncode != 0
    report = rank_report(proc.stderr, logs)
    assert "--- rank 1 " in report and "rank one's own last words" in report
    if how == "raise":
        assert "rank 1 error: RuntimeError: rank one broke on purpose" in report
        assert "rank one broke on purpose" in proc.stderr  # torchrun's own summary shows the recorded error
    else:
        assert "Fatal Python error: Aborted" in report  # faulthandler: the aborting rank's Python stack
