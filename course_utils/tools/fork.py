"""`course fork URL`: point the Colab badges and set-up cells at a fork of the course.

The repository's address lives in one place, `paths.REPO_URL`. The Colab badge of every notebook and the `git
clone` of every set-up cell are written from it (a test keeps them consistent). An instructor who forks the course
runs `course fork https://github.com/<owner>/<name>` in the fork and commits the result: paths.py, every notebook,
the README and the docs then name the fork, so a learner's Colab session clones the instructor's copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from course_utils.errors import CourseError
from course_utils.paths import PACKAGE_DIR, REPO_DIR, REPO_URL

GITHUB_URL = re.compile(r"^https://github\.com/([A-Za-z0-9][A-Za-z0-9-]{0,38})/([A-Za-z0-9._-]{1,100})$")


class ForkError(CourseError, ValueError):
    """An address that is not a GitHub repository URL."""


def slug(url: str) -> str:
    """`owner/name` of a GitHub repository URL, or a one-line `ForkError`."""
    m = GITHUB_URL.match(url.strip().removesuffix("/").removesuffix(".git"))
    if not m:
        raise ForkError(f"course fork: {url!r} is not a GitHub repository URL like https://github.com/owner/name")
    return f"{m.group(1)}/{m.group(2)}"


def files_naming_the_repository(repo_dir: Path = REPO_DIR) -> list[Path]:
    """paths.py, every notebook (solutions too), the README and the docs."""
    files = [repo_dir / PACKAGE_DIR.name / "paths.py", repo_dir / "README.md"]
    files += sorted((repo_dir / "notebooks").rglob("*.ipynb")) + sorted((repo_dir / "docs").glob("*.md"))
    return [f for f in files if f.is_file()]


def retarget(url: str, repo_dir: Path = REPO_DIR, current: str = REPO_URL) -> list[Path]:
    """Replace the current repository's `owner/name` by the fork's in every file that names it; returns them."""
    old, new = slug(current), slug(url)
    changed = []
    for path in files_naming_the_repository(repo_dir):
        text = path.read_text(encoding="utf-8")
        if old in text:
            path.write_text(text.replace(old, new), encoding="utf-8")
            changed.append(path)
    return changed
