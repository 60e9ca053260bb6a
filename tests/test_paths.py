"""course_utils.paths: where the repository, the shipped data and models, and the run outputs live."""

import subprocess
import sys

from course_utils import paths


def test_the_shipped_folders_are_where_the_paths_say():
    assert (paths.REPO_DIR / "pyproject.toml").is_file() and paths.PACKAGE_DIR.name == "course_utils"
    for folder in (paths.DATA_DIR, paths.MODELS_DIR, paths.TOKENIZER_DIR, paths.NOTEBOOKS_DIR):
        assert folder.is_absolute() and folder.is_dir(), folder


def test_a_relative_data_folder_is_made_absolute_once(tmp_path):
    """A kernel in notebooks/ and the shell that started it must mean the same folder."""
    code = "from course_utils import paths; print(paths.DATA_DIR); print(paths.RUNS_DIR)"
    env = {"COURSE_DATA_DIR": "data_here", "COURSE_RUNS_DIR": "runs_here", "PYTHONPATH": str(paths.REPO_DIR),
           "COURSE_PROFILE": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str((tmp_path / "data_here").resolve()), str((tmp_path / "runs_here").resolve())]
