"""The gpu profile, exercised: every lesson runs through the gpu code path on stand-in hub checkpoints, on the CPU.

Stand-ins know nothing, so the claims are computed and shown but not asserted (`COURSE_REHEARSAL=1`); what fails
here is the code: a LoRA target name that a real architecture does not have, a missing pad token or chat
template, a model left on the wrong device, a library the gpu path assumes. One seed keeps it within minutes.
"""

import pytest

from course_utils.tools.runner import format_table, lesson_notebooks, run_lessons
from course_utils.tools.standins import rehearsal_env, write_standins


@pytest.mark.slow
def test_every_lesson_runs_in_the_gpu_profile_on_standins(tmp_path):
    write_standins(tmp_path / "hf")
    environ = {**rehearsal_env(tmp_path / "hf", "cpu"), "COURSE_SEEDS": "0"}
    results, _ = run_lessons((), runs_dir=tmp_path / "runs", keep_going=True, environ=environ)
    assert len(results) == len(lesson_notebooks())
    failed = [r for r in results if not r.passed]
    assert not failed, "gpu rehearsal failed:\n" + format_table(failed)
