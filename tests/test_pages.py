"""The book as readers see it: every page of the built HTML book, loaded in headless Chromium.

The book is built (HTML, ``-W``) into ``_build/pages`` with the outputs that the chapter runner
(``tests/test_chapters.py``, which runs first) stored in the execution cache; a chapter missing
from the cache is shown without outputs rather than executed a second time. The site is served on
127.0.0.1 and every page is checked by ``tools/pages.py`` with every other host unreachable:
equations typeset by the site's own MathJax, images loaded, internal links, anchors and references
resolved, launch and download buttons on chapter pages. Screenshots of every page go to
``_build/screenshots/``. One page of the student edition is checked too, and a hand-written
site with a broken equation, link, anchor and image shows that the checker catches them.
"""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from tools.book import ROOT, chapters, write_config
from tools.pages import check_site, find_chromium, summary

BUILD = ROOT / "_build" / "pages"
STUDENT = ROOT / "_build" / "pages-student"
SHOTS = ROOT / "_build" / "screenshots"
CACHE = ROOT / "_build" / ".jupyter_cache"
BUILD_TIMEOUT = 1800
CHAPTERS = [p.relative_to(ROOT).with_suffix("").as_posix() for p in chapters()]

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium: `make browser` installs Debian's chromium (make test does it first)",
)


def jupyter_book(*args, cwd=ROOT):
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", *map(str, args),
           "--builder", "html", "-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}",
                    pytrace=False)


def cached_chapters() -> set[str]:
    """The chapters whose current source has executed outputs in the book's execution cache."""
    if not CACHE.exists():
        return set()
    from jupyter_cache import get_cache

    cache, found = get_cache(str(CACHE)), set()
    for name in CHAPTERS:
        try:
            cache.match_cache_notebook(jupytext.read(ROOT / f"{name}.md"))
            found.add(name)
        except KeyError:
            pass
    return found


@pytest.fixture(scope="module")
def book():
    """Build the book from the execution cache; check every page. -> (reports, cached chapters)."""
    shutil.rmtree(BUILD, ignore_errors=True)
    shutil.rmtree(SHOTS / "book", ignore_errors=True)
    cached = cached_chapters()
    config = write_config(BUILD / "_config.yml", execute="cache", cache=CACHE,
                          exclude=[f"{c}.md" for c in CHAPTERS if c not in cached])
    jupyter_book(ROOT, "--config", config, "--path-output", BUILD)
    reports = check_site(BUILD / "_build" / "html", chapters=CHAPTERS, screenshots=SHOTS / "book")
    print(summary(reports))
    return reports, cached


@pytest.fixture(scope="module")
def student():
    """The student edition (execution off), and the check of its first chapter's page."""
    shutil.rmtree(STUDENT, ignore_errors=True)
    shutil.rmtree(SHOTS / "student", ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "student.py"), str(STUDENT / "src"),
                    "--execute", "off"], check=True, capture_output=True, timeout=120)
    jupyter_book(STUDENT / "src")
    page = f"{CHAPTERS[0]}.html"
    return check_site(STUDENT / "src" / "_build" / "html", pages=[page], chapters=CHAPTERS[:1],
                      screenshots=SHOTS / "student")[page]


def test_every_page_of_the_book_passes_in_the_browser(book):
    reports, _ = book
    assert len(reports) >= 1 + len(CHAPTERS)
    failing = {p: r for p, r in reports.items() if r.problems}
    assert not failing, "pages with problems:\n" + summary(failing)


def test_screenshots_of_the_intro_and_every_chapter(book):
    for name in ["intro", *CHAPTERS]:
        shot = SHOTS / "book" / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 1000, shot


def test_math_is_typeset_by_the_sites_own_mathjax(book):
    reports, _ = book
    html = BUILD / "_build" / "html"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    with_math = [r for r in reports.values() if r.equations]
    assert with_math, "no page has equations"
    for rep in with_math:
        assert rep.mathjax and rep.mathjax.startswith("3."), (rep.page, rep.mathjax)
    for page in html.rglob("*.html"):
        assert "cdn.jsdelivr.net/npm/mathjax" not in page.read_text(), page


def test_chapters_show_the_outputs_of_the_chapter_runner(book):
    """The page build reuses the executed notebooks of tests/test_chapters.py (the cache)."""
    reports, cached = book
    if not cached:
        pytest.skip("no chapter in the execution cache: tests/test_chapters.py runs first in `make test`")
    for name in sorted(cached):
        assert reports[f"{name}.html"].counts["outputs"] > 0, f"{name}: cached, but no output on its page"
        for notebook in [f"{name}.ipynb", f"_sources/{name}.ipynb"]:  # Colab's and the download's
            nb = json.loads((BUILD / "_build" / "html" / notebook).read_text())
            assert any(c.get("outputs") for c in nb["cells"]), f"{notebook} has no outputs"


def test_student_edition_hides_the_solutions(book, student):
    reports, _ = book
    assert not student.problems, summary({student.page: student})
    assert student.counts["exercises"] > 0 and student.counts["solutions"] == 0
    assert reports[student.page].counts["solutions"] > 0  # the selector does find solutions
    assert student.screenshot and student.screenshot.exists()


# -- the checker catches what it should ------------------------------------------------------
MATHJAX_CONFIG = """<script>window.MathJax = {"tex": {"packages": {"[-]": ["noundefined"]}},
 "options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}</script>"""
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/"
                       "PchI7wAAAABJRU5ErkJggg==")


def page(body: str, mathjax: str = "_static/mathjax/tex-chtml.js") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title>{MATHJAX_CONFIG}"
            f"<script defer src='{mathjax}'></script></head><body>{body}</body></html>")


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    offline = Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent
    shutil.copytree(offline / "static" / "mathjax", site / "_static" / "mathjax")
    (site / "img.png").write_bytes(PNG)
    (site / "good.html").write_text(page(
        "<h1 id='top'>Good</h1><p>Inline <span class='math notranslate nohighlight'>\\(x^2 + "
        "\\frac{1}{2}\\)</span> and display:</p><div class='math notranslate nohighlight'>"
        "\\[\\int_0^1 f(x)\\, dx\\]</div><img src='img.png' alt='a figure'>"
        "<a href='good.html#top'>anchor</a> <a href='bad.html'>other page</a>"
        "<pre>print('\\\\alpha $$ is fine in code')</pre>"))
    (site / "bad.html").write_text(page(
        "<h1 id='top'>Bad</h1>"
        "<p><span class='math notranslate nohighlight'>\\(\\frac{1}{\\)</span></p>"
        "<p><span class='math notranslate nohighlight'>\\(x^^2\\)</span></p>"
        "<p><span class='math notranslate nohighlight'>\\(\\undefinedmacro x\\)</span></p>"
        "<p>Left as TeX: with \\W_p(\\alpha, \\beta) the distance.</p>"
        "<img src='missing.png' alt='a figure'>"
        "<a href='missing.html'>a missing page</a> <a href='good.html#nowhere'>a missing anchor</a>"
        "<span class='xref std std-ref'>sec-missing</span>"))
    (site / "cdn.html").write_text(page(
        "<p><span class='math notranslate nohighlight'>\\(x^2\\)</span></p>",
        mathjax="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"))
    return check_site(site, chapters=["bad"], screenshots=site / "shots", timeout=30)


def test_checker_passes_a_good_page(broken_site):
    good = broken_site["good.html"]
    assert good.problems == [], good.problems
    assert good.equations == 2 and good.images == 1 and good.mathjax.startswith("3.")
    assert good.screenshot.exists()


@pytest.mark.parametrize("expected", [
    "equation not typeset: \\(\\frac{1}{\\)",
    "equation not typeset (Missing open brace for superscript)",
    "equation not typeset (Undefined control sequence \\undefinedmacro)",
    "raw TeX in the text",
    "image not loaded: missing.png",
    "failed to load /missing.png: HTTP 404",
    "broken link: missing.html",
    "broken anchor: good.html#nowhere",
    "unresolved reference: sec-missing",
    "no Binder launch button",
    "no Colab launch button",
    "no .ipynb download button",
])
def test_checker_reports_a_broken_page(broken_site, expected):
    problems = broken_site["bad.html"].problems
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


def test_checker_reports_math_from_a_cdn_offline(broken_site):
    problems = broken_site["cdn.html"].problems
    assert any(p.startswith("MathJax did not load") for p in problems), problems
    assert any("from the network" in p for p in problems), problems
