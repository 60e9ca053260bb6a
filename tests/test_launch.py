"""The course recipe runs as a script under `accelerate launch` with two data-parallel CPU processes."""

import json
import os
import subprocess
import sys

import pytest

from course_utils.errors import CourseError
from course_utils.tools.launch import parse_args
from course_utils.paths import REPO_DIR


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(CourseError, match="--steps"):
        parse_args(["--steps", "0"])


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path):
    env = {**os.environ, "COURSE_PROFILE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO_DIR / "configs" / "accelerate" / "cpu_2proc.yaml"), "-m", "course_utils.tools.launch",
           "--steps", "4", "--batch-size", "4", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 8
    assert metrics["train_loss"] > 0 and 0 <= metrics["new_recall"] <= 1
