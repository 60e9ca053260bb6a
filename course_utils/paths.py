"""Where things live: the repository, its shipped data and models, and the run outputs of a learner.

Used in lessons: 00
"""

from __future__ import annotations

from pathlib import Path

from course_utils.profiles import env_path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
# Read by `profiles.env_path` (blank means unset) and made absolute once: a relative path from the environment must mean the same folder in a kernel whose working
# directory is notebooks/ as in the shell that started it.
DATA_DIR = env_path("COURSE_DATA_DIR", REPO_DIR / "data_samples")
MODELS_DIR = DATA_DIR / "models"
TOKENIZER_DIR = DATA_DIR / "tokenizer"
# Each lesson's saved results from the maintainers' reference run: lesson 09 falls back on them, labelled as such,
# when a lesson was not run here (on Colab every notebook has its own runtime).
REFERENCE_RESULTS_DIR = DATA_DIR / "reference_results"
RUNS_DIR = env_path("COURSE_RUNS_DIR", REPO_DIR / "runs")
NOTEBOOKS_DIR = REPO_DIR / "notebooks"
REPO_URL = "https://github.com/finetuning-course/llm-finetuning-course"
