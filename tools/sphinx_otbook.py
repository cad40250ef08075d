"""The book's own Sphinx extension, loaded through ``sphinx.local_extensions`` in ``_config.yml``.

It makes the launch and download buttons of a chapter open a real notebook:

* After an HTML build it writes every chapter as its executed notebook next to its page
  (``chapters/foundations/01_exact.ipynb`` beside ``01_exact.html``). The notebooks are build
  outputs, never committed: they are published with the site.
* Colab opens ``.ipynb`` files from GitHub only, and the chapters are MyST Markdown on the source
  branch, so the Colab button points at the executed notebook on the branch the built site is
  published from (``otbook_pages_branch``, default ``gh-pages``; e.g. ``ghp-import -n -p -f
  _build/html``). Binder keeps opening the source branch, where jupytext reads the ``.md``.

It also drops duplicated inline scripts from each page: with Sphinx 7.4, sphinx-thebe's
configuration script (``const THEBE_JS_URL = ...``) is emitted twice, and the second copy is a
JavaScript error on every page (``Identifier 'THEBE_JS_URL' has already been declared``).

The download button offers ``_sources/<chapter>.ipynb``, which sphinx-book-theme copies from
myst-nb's ``jupyter_execute/``; when the outputs came from the execution cache, that notebook has
none (myst-nb renders the cached outputs but writes the notebook without them), so both copies
are written here with the cached outputs merged back. The page check (``tools/pages.py``)
verifies that both notebooks exist and parse.
"""

from __future__ import annotations

import re
from pathlib import Path

COLAB_BLOB = re.compile(r"^(?P<head>.+/github/[^/]+/[^/]+/blob/)[^/]+/.+$")


def is_notebook(app, docname: str) -> bool:
    return "kernelspec" in app.env.metadata.get(docname, {})


def colab_url(url: str, branch: str, docname: str) -> str:
    """``.../github/ORG/REPO/blob/BRANCH/PATH.md`` -> ``.../blob/<branch>/<docname>.ipynb``."""
    m = COLAB_BLOB.match(url)
    return f"{m.group('head')}{branch}/{docname}.ipynb" if m else url


def point_colab_at_notebook(app, pagename, templatename, context, doctree):
    branch = app.config.otbook_pages_branch
    if not branch or not is_notebook(app, pagename):
        return
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if isinstance(group, dict) else []:
            if button.get("text") == "Colab" and button.get("url"):
                button["url"] = colab_url(button["url"], branch, pagename)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (str(getattr(js, "filename", js) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _executed(app, src: Path):
    """The notebook myst-nb wrote, with its outputs merged back from the execution cache.

    In ``cache`` mode, when a chapter's outputs come from the cache, myst-nb renders them in
    the page but writes the notebook to ``jupyter_execute/`` without them.
    """
    text = src.read_text(encoding="utf8")
    if getattr(app.config, "nb_execution_mode", None) != "cache":
        return text
    import nbformat
    from jupyter_cache import get_cache

    cache_dir = app.config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache"
    if not Path(cache_dir).exists():
        return text
    try:
        _, merged = get_cache(str(cache_dir)).merge_match_into_notebook(nbformat.reads(text, 4))
    except KeyError:  # not in the cache (excluded from execution): as written
        return text
    return nbformat.writes(merged)


def write_notebooks(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    for docname in sorted(app.env.found_docs):
        src = executed / f"{docname}.ipynb"
        if not (is_notebook(app, docname) and src.exists()):
            continue
        text = _executed(app, src)
        # next to the page (Colab) and in _sources/ (the theme's download button)
        for dest in (Path(app.outdir) / f"{docname}.ipynb", Path(app.outdir) / "_sources" / f"{docname}.ipynb"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf8")


def setup(app):
    app.add_config_value("otbook_pages_branch", "gh-pages", "html")
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", point_colab_at_notebook, priority=600)
    app.connect("html-page-context", drop_duplicate_scripts)
    app.connect("build-finished", write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
