"""Every page of the built site, opened in a real browser (headless Chromium through Playwright).

Per page: it loads with no console error and no failed request; every formula is typeset by
the MathJax the site serves (no undefined macro, no TeX error); every image loads and says what
it shows (alt text or a caption, never a file path); the lesson pages' Colab link points at a
notebook that exists in the repository, and the executed notebook downloads; dark mode
renders; the previous/next links and the search work, all offline.

Needs Chromium: ``apt-get install chromium`` (Debian/Ubuntu; ``.ci/run`` installs it). Without
it these tests are skipped with that message.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_site import toc_lessons

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The only console message we accept: none. (The theme's "invalid theme mode" error is fixed in
# _config.yml by html_context.default_mode.)

pytestmark = [
    pytest.mark.site,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install it with `apt-get install chromium` (Debian/Ubuntu)"),
]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def server(site):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in requirements.txt)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def pages() -> list[str]:
    return ["intro.html", *[f"{lesson}.html" for lesson in toc_lessons()], "instructor_guide.html", "run_times.html",
            "notation.html", "references.html", "errata.html"]


class Visit:
    """A page opened in a fresh browser context, with what went wrong on the way recorded."""

    def __init__(self, browser, url: str, mode: str | None = None):
        self.context = browser.new_context()
        if mode:
            self.context.add_init_script(f"localStorage.setItem('mode', '{mode}'); localStorage.setItem('theme', '{mode}');")
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        self.page.goto(url, wait_until="load")
        if self.page.evaluate("() => !!window.MathJax"):
            self.page.wait_for_function("() => window.MathJax.startup && window.MathJax.startup.promise")
            self.page.evaluate("() => MathJax.startup.promise")

    def close(self):
        self.context.close()


MATH_AND_IMAGES = """() => {
  const math = [...document.querySelectorAll('.math')];
  // Images drawn inside a widget are the live copy of the static figure beside it (which has
  // its alt text); the widget manager gives them none, so they are not counted here.
  const images = [...document.querySelectorAll('main img, article img')].filter(i => !i.closest('.jupyter-widgets, .widget-output'));
  return {
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60)),
    errors: [...document.querySelectorAll('mjx-merror, mjx-container [style*="red"]')].map(e => e.textContent.slice(0, 40)),
    images: images.map(i => ({
      src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0, alt: i.getAttribute('alt') || '',
      caption: (i.closest('figure') && i.closest('figure').querySelector('figcaption')) ? i.closest('figure').querySelector('figcaption').textContent.trim() : '',
    })),
  };
}"""


@pytest.mark.parametrize("path", pages())
def test_page_in_a_browser(browser, server, path):
    visit = Visit(browser, server + path)
    try:
        info = visit.page.evaluate(MATH_AND_IMAGES)
        assert not visit.problems, f"{path}: {visit.problems}"
        assert not info["untypeset"], f"{path}: formulas not typeset: {info['untypeset'][:5]}"
        assert not info["errors"], f"{path}: TeX errors or undefined macros: {info['errors'][:5]}"
        if path.startswith("lessons/"):
            assert info["math"] > 0 and info["images"], f"{path}: a lesson has math and figures"
        for image in info["images"]:
            assert image["loaded"], f"{path}: image {image['src']} did not load"
            words = image["caption"] or image["alt"]
            assert words and not re.search(r"\.(png|svg|jpe?g)$", words) and "_images/" not in words, (
                f"{path}: image {image['src']} has no alt text or caption that says what it shows (alt={image['alt']!r})"
            )
    finally:
        visit.close()


@pytest.mark.parametrize("lesson", toc_lessons())
def test_lesson_links_colab_download_and_neighbours(browser, server, lesson):
    visit = Visit(browser, server + f"{lesson}.html")
    try:
        links = visit.page.evaluate("() => [...document.querySelectorAll('a')].map(a => a.href)")
        colab = [u for u in links if "colab.research.google.com" in u]
        assert len(set(colab)) == 1, f"{lesson}: Colab links {colab}"
        notebook = re.search(r"/blob/[^/]+/(notebooks/[^/]+\.ipynb)$", urlparse(colab[0]).path)
        assert notebook and (ROOT / notebook.group(1)).exists(), f"{lesson}: Colab link {colab[0]} names no notebook of the repository"
        downloads = [u for u in links if u.endswith(".ipynb") and u.startswith(server)]
        assert downloads, f"{lesson}: no .ipynb download"
        response = visit.page.request.get(downloads[0])
        assert response.ok, f"{lesson}: {downloads[0]} -> HTTP {response.status}"
        nb = json.loads(response.text())
        assert nb["nbformat"] == 4 and any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
        for selector in ("a.left-prev", "a.right-next"):
            href = visit.page.evaluate(f"() => (document.querySelector('{selector}') || {{}}).href || null")
            assert href, f"{lesson}: no {selector} link"
            assert visit.page.request.get(href).ok, f"{lesson}: {selector} -> {href} does not load"
    finally:
        visit.close()


def test_dark_mode_renders(browser, server):
    lesson = toc_lessons()[0]
    visit = Visit(browser, server + f"{lesson}.html", mode="dark")
    try:
        theme, background = visit.page.evaluate(
            "() => [document.documentElement.dataset.theme, getComputedStyle(document.body).backgroundColor]"
        )
        assert theme == "dark"
        rgb = [int(v) for v in re.findall(r"\d+", background)[:3]]
        assert max(rgb) < 80, f"dark mode background is {background}"
        assert not visit.problems, visit.problems
        assert visit.page.evaluate("() => [...document.images].every(i => i.naturalWidth > 0)")
    finally:
        visit.close()


def test_search_works_offline(browser, server):
    visit = Visit(browser, server + "search.html?q=likelihood")
    try:
        visit.page.wait_for_function("() => document.querySelectorAll('#search-results li').length > 0", timeout=15000)
        titles = visit.page.evaluate("() => [...document.querySelectorAll('#search-results li a')].map(a => a.textContent)")
        assert any("Maximum likelihood" in t or "likelihood" in t.lower() for t in titles), titles
        assert not visit.problems, visit.problems
    finally:
        visit.close()


def test_widgets_render_offline(browser, server, site):
    """A page with an embedded slider draws it from the site's own widget JavaScript (no CDN)."""
    pages_with_widgets = [
        p.relative_to(site).as_posix() for p in sorted(site.rglob("*.html"))
        if "application/vnd.jupyter.widget-view+json" in p.read_text(encoding="utf-8")
    ]
    assert pages_with_widgets, "no page embeds a widget: is COURSE_WIDGETS=1 set for the build?"
    for path in pages_with_widgets:
        visit = Visit(browser, server + path)
        try:
            visit.page.wait_for_selector(".widget-slider, .jupyter-widgets.widget-inline-hbox", timeout=15000)
            assert visit.page.is_visible(".widget-slider, .jupyter-widgets.widget-inline-hbox")
            assert not visit.problems, f"{path}: {visit.problems}"
            scripts = visit.page.evaluate("() => [...document.scripts].map(s => s.src).filter(Boolean)")
            assert not [s for s in scripts if "unpkg.com" in s or "cdn.jsdelivr" in s], scripts
            # the slider works with no kernel: moving it shows another pre-drawn frame
            shown = """() => [...document.querySelectorAll('.jupyter-widgets img')]
                         .filter(i => i.offsetParent !== null).map(i => i.src)"""
            before = visit.page.evaluate(shown)
            assert len(before) == 1, f"{path}: {len(before)} frames visible at once"
            visit.page.focus(".widget-slider .noUi-handle")
            visit.page.keyboard.press("End")
            visit.page.wait_for_timeout(300)
            after = visit.page.evaluate(shown)
            assert len(after) == 1 and after != before, f"{path}: moving the slider did not change the picture"
        finally:
            visit.close()


@pytest.mark.parametrize("lesson", toc_lessons())
def test_self_check_quiz_answers_itself(browser, server, lesson):
    """Each lesson's quiz renders offline, and a click on a choice shows that choice's feedback."""
    from course_lib import quiz

    number = Path(lesson).name[:2]
    expected = quiz.questions(number)
    visit = Visit(browser, server + f"{lesson}.html")
    try:
        visit.page.wait_for_selector(".Quiz .MCButton", timeout=15000)
        assert visit.page.locator(".Quiz").count() == len(expected), f"{lesson}: not every question is shown"
        # the first choice of the first question: its own feedback appears, in words
        visit.page.locator(".Quiz").first.locator(".MCButton").first.click()
        visit.page.wait_for_timeout(200)
        feedback = visit.page.locator(".Quiz").first.locator(".Feedback").inner_text().strip()
        assert feedback == expected[0]["answers"][0]["feedback"], f"{lesson}: feedback {feedback!r}"
        assert not visit.problems, f"{lesson}: {visit.problems}"
    finally:
        visit.close()
