"""`course site`: every lesson a page with its stored figures and Colab badge, search, and no broken link."""

import shutil
import subprocess

import pytest

from course_utils.tools.runner import lesson_notebooks
from course_utils.tools.site import broken_links, build_site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.mark.slow
def test_every_lesson_is_a_page_with_its_figures_and_badge(site):
    for nb in lesson_notebooks():
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"no page for {nb.name}"
        text = page.read_text()
        assert "colab.research.google.com" in text, f"{page.name}: no Colab badge"
        if '"image/png"' in nb.read_text():
            assert "data:image/png" in text, f"{page.name}: its stored plots are missing"
    for name in ("index.html", "docs/GLOSSARY.html", "docs/WORKSHOP.html", "scoreboard.html",
                 "search/search_index.json"):
        assert (site / name).is_file(), name


@pytest.mark.slow
def test_no_internal_link_or_image_is_broken(site):
    assert broken_links(site) == []


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="headless Chromium is not installed here (Debian: apt install chromium)")
def test_pages_render_in_headless_chromium(site):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    page = site / "notebooks" / f"{lesson_notebooks()[5].stem}.html"
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Lesson 05" in out.stdout
