"""Where things live: the repository, its shipped data and models, and the run outputs of a learner.

Used in lessons: 00
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
# Made absolute once: a relative path from the environment must mean the same folder in a kernel whose working
# directory is notebooks/ as in the shell that started it.
DATA_DIR = Path(os.environ.get("COURSE_DATA_DIR", REPO_DIR / "data_samples")).expanduser().resolve()
MODELS_DIR = DATA_DIR / "models"
TOKENIZER_DIR = DATA_DIR / "tokenizer"
# Each lesson's saved results from the maintainers' reference run: lesson 09 falls back on them, labelled as such,
# when a lesson was not run here (on Colab every notebook has its own runtime).
REFERENCE_RESULTS_DIR = DATA_DIR / "reference_results"
RUNS_DIR = Path(os.environ.get("COURSE_RUNS_DIR", REPO_DIR / "runs")).expanduser().resolve()
NOTEBOOKS_DIR = REPO_DIR / "notebooks"
REPO_URL = "https://github.com/finetuning-course/llm-finetuning-course"
