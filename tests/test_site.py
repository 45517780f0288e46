"""Build the book (every lesson executed under the smoke profile) and check what a reader gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_lessons() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return [f for f in files if f.startswith("lessons/")]


@pytest.mark.site
def test_every_lesson_is_on_the_toc_and_on_disk():
    lessons = toc_lessons()
    assert lessons and lessons[0] == "lessons/01_four_paradigm_map"
    on_disk = sorted(f"lessons/{p.stem}" for p in (ROOT / "lessons").glob("[0-9][0-9]_*.md"))
    assert sorted(lessons) == on_disk
    assert not list((ROOT / "lessons").glob("*.ipynb")), "lessons/ holds only MyST sources"


@pytest.mark.site
def test_site_pages(site):
    assert (site / "index.html").exists() and (site / "intro.html").exists()
    for lesson in toc_lessons():
        page = site / f"{lesson}.html"
        assert page.exists(), f"{page} missing"
        html = page.read_text(encoding="utf-8")
        # figures from the run, present on disk
        images = re.findall(r'<img[^>]+src="([^"]+)"', html)
        figures = [src for src in images if src.startswith("../_images/")]
        assert figures, f"{lesson}: no figure"
        for src in figures:
            assert (page.parent / src).resolve().exists(), f"{lesson}: {src} missing"
        # no error output or traceback anywhere on the page
        for bad in ("Traceback (most recent call last)", 'class="output traceback"', "output error",
                    "NotImplementedError", "Error in callback"):
            assert bad not in html, f"{lesson}: {bad!r} on the page"
        # math, the Colab link, the common lesson shape
        assert 'class="math' in html, f"{lesson}: no math"
        assert "_static/mathjax/tex-mml-chtml.js" in html, f"{lesson}: MathJax not served by the site"
        assert "colab.research.google.com/github/" in html, f"{lesson}: no Colab link"
        for heading in ("Common pitfalls", "What you should remember", "Exercises", "References"):
            assert heading in html, f"{lesson}: no {heading!r} section"
        assert "Learning objectives" in html and "Time to run" in html


@pytest.mark.site
def test_hidden_checks_stay_hidden(site):
    html = (site / "lessons" / "01_four_paradigm_map.html").read_text(encoding="utf-8")
    assert "Checks of what the lesson claims" not in html
    assert "Colab: install course_lib" in html  # shown, folded (hide-input)


@pytest.mark.site
def test_bibliography_resolves(site):
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    html = (site / "references.html").read_text(encoding="utf-8")
    assert "denoising diffusion probabilistic models" in html.lower()


@pytest.mark.site
def test_executed_notebooks_print_each_line_once(site):
    """The executed notebooks offered for download hold each printed line once (see _ext/site_fixes.py)."""
    executed = sorted((site.parent / "jupyter_execute" / "lessons").glob("*.ipynb"))
    assert len(executed) == len(toc_lessons())
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            streams = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
            for i, later in enumerate(streams):
                for earlier in streams[:i]:
                    text = later["text"].strip()
                    assert not (text and earlier["name"] == later["name"] and text in earlier["text"]), (
                        f"{path.name} cell {index}: {text[:60]!r} printed twice"
                    )


@pytest.mark.site
def test_notation_page_is_linked(site):
    html = (site / "notation.html").read_text(encoding="utf-8")
    assert "grey levels" in html and "temperature" in html
    assert "notation.html" in (site / "intro.html").read_text(encoding="utf-8")


@pytest.mark.site
def test_widget_scripts_only_where_widgets_are(site):
    """The widget manager's scripts load on pages with a widget, in order, and nowhere else."""
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        has_widget = "application/vnd.jupyter.widget-view+json" in html
        if not has_widget:
            assert "wjs/embed-amd.js" not in html, f"{page.name}: widget scripts on a page without widgets"
        else:
            assert html.index("wjs/require.js") < html.index("wjs/embed-amd.js"), f"{page.name}: require.js must come first"
