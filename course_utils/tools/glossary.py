"""The course glossary (`docs/GLOSSARY.md`) and its links from the lessons.

Each `### Term` heading of the glossary is one entry. `link_first_uses` turns the first mention of each term in
the lessons (in lesson order, in markdown cells) into a link to its entry, so a learner meets every term once
with its definition a click away. Run it again after adding a lesson or a term: links already there are kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from course_utils.paths import REPO_DIR, REPO_URL
from course_utils.tools.runner import lesson_notebooks


GLOSSARY = REPO_DIR / "docs" / "GLOSSARY.md"
# Absolute, so the link resolves on Colab (where ../docs does not exist) and on GitHub; `course fork` rewrites it
# with the other addresses, and `course site` points it at the site's own glossary page.
LINK_PREFIX = f"{REPO_URL}/blob/main/docs/GLOSSARY.md#"
# Phrases where a term's words mean something else ("centred kernel alignment" is CKA, not model alignment).
NOT_A_MENTION = {"Alignment": ("kernel alignment",)}


def terms(path: Path = GLOSSARY) -> list[str]:
    """The glossary's terms, in order (its `### ` headings)."""
    return [line[4:].strip() for line in Path(path).read_text().splitlines() if line.startswith("### ")]


def anchor(term: str) -> str:
    """The anchor GitHub and JupyterLab give the heading `### term`."""
    text = re.sub(r"[^\w\- ]", "", term.strip().lower())
    return text.replace(" ", "-")


def match_text(term: str) -> str:
    """What to look for in a lesson: the heading up to its first ' (' or ',' ('Token shift (…)' -> 'Token shift')."""
    return re.split(r" \(|,", term)[0].strip()


def _linkable(line: str, start: int) -> bool:
    """True if position `start` of a markdown line is plain text: not a heading, code span or existing link."""
    before = line[:start]
    in_link_target = before.rfind("](") > before.rfind(")")
    return (not line.lstrip().startswith("#") and before.count("`") % 2 == 0
            and before.count("[") == before.count("]") and not in_link_target)


def link_first_uses(notebooks: Sequence[Path] | None = None, glossary: Path = GLOSSARY, write: bool = False) -> dict[str, str]:
    """Link each term's first plain mention in the lessons' markdown; returns {term: notebook it was linked in}.

    Terms already linked somewhere are left as they are. With `write=False` nothing is changed on disk.
    """
    import nbformat

    paths = list(notebooks) if notebooks is not None else lesson_notebooks()
    books = [(p, nbformat.read(p, as_version=4)) for p in paths]
    done: dict[str, str] = {}
    for term in terms(glossary):
        target = LINK_PREFIX + anchor(term)
        if any(target in c.source for _, nb in books for c in nb.cells if c.cell_type == "markdown"):
            continue
        # "Constitutional-AI" is a mention of "Constitutional AI", and "near duplicates" of "Near-duplicate"
        words = re.sub(r"\\[ \-]", lambda _: r"[\s\-]", re.escape(match_text(term)))
        pattern = re.compile(rf"(?<![\w\-\[]){words}(?:s|es)?(?![\w\-])", re.IGNORECASE)
        for path, nb in books:
            for cell in nb.cells:
                if cell.cell_type != "markdown" or term in done:
                    continue
                lines = cell.source.split("\n")
                for i, line in enumerate(lines):
                    m = next((m for m in pattern.finditer(line) if _linkable(line, m.start())
                              and not line[:m.end()].lower().endswith(NOT_A_MENTION.get(term, ()))), None)
                    if m:
                        lines[i] = f"{line[:m.start()]}[{m.group(0)}]({target}){line[m.end():]}"
                        cell.source = "\n".join(lines)
                        done[term] = path.name
                        break
            if term in done:
                break
    if write:
        for path, nb in books:
            nbformat.write(nb, path)
    return done


def linked_terms(notebooks: Sequence[Path] | None = None, glossary: Path = GLOSSARY) -> dict[str, bool]:
    """For each glossary term: is it linked from at least one lesson?"""
    import nbformat

    paths = list(notebooks) if notebooks is not None else lesson_notebooks()
    text = "\n".join(c.source for p in paths for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown")
    return {t: (LINK_PREFIX + anchor(t)) in text for t in terms(glossary)}
