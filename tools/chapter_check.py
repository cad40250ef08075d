"""Every chapter executed by pytest's nbval plugin, one test item per code cell, with the checks
of what readers see.

``pytest chapters --nbval-lax`` (what ``make test`` runs) collects each chapter of ``_toc.yml``
(a jupytext MyST notebook, read with jupytext: no ``.ipynb`` is written) as a notebook of nbval
items, runs it afresh in a kernel started in a temporary folder (chapters must not rely on
relative paths), and fails a cell

* that raises (the closing assertions included): nbval reports the traceback;
* that writes to stderr, unless the cell has the tag ``expect-stderr``;
* whose outputs show a Python warning, a traceback, KeOps' log lines, or a path of this machine
  (the repository, the virtual environment, the home or temporary folder).

Once a cell failed, the chapter's later cells are skipped (they would fail for its reason). A
chapter whose cells all pass is stored in the book's execution cache (``_build/.jupyter_cache``),
so that ``make book`` and the page check show these very outputs without running it again. The
run time of each chapter is printed at the end of the session.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import site
import sys
import tempfile
import time
from collections import defaultdict

import pytest

from tools import cache_key
from tools.book import ROOT, chapters

__all__ = ["machine_paths", "output_problems", "cell_problems", "collect_chapter",
           "report_timings", "CACHE"]

CACHE = "_build/.jupyter_cache"

# what no output may show (checked in every cell, tagged or not)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+", re.M)
WARNING = re.compile(r"\b[A-Z]\w*Warning: |\[KeOps\]")
BASE64 = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")
TEXT_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "application/javascript")


def machine_paths(*extra) -> list[str]:
    """Folders of this machine whose paths must not appear in any output."""
    home = os.path.expanduser("~")
    paths = {str(ROOT), sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
             os.path.join(home, ""), os.path.join(tempfile.gettempdir(), ""), *map(str, extra)}
    return sorted((p for p in paths if p and len(p.strip("/")) >= 3), key=len, reverse=True)


def cell_problems(outputs, stderr_ok: bool, paths, where: str = "the cell") -> list[str]:
    """What a reader should not see in the outputs of one code cell."""
    problems = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "error":
            problems.append(f"{where} raised {out.get('ename')}: {out.get('evalue')}")
            continue
        if kind == "stream":
            texts = [out.get("text", "")]
            if out.get("name") == "stderr" and not stderr_ok:
                problems.append(f"{where} wrote to stderr:\n{texts[0][:2000]}")
                continue
        else:
            data = out.get("data", {})
            texts = [data[m] if isinstance(data[m], str) else "".join(data[m])
                     for m in TEXT_MIME if m in data]
        for text in texts:
            text = BASE64.sub("", text)
            if TRACEBACK.search(text):
                problems.append(f"{where} shows a traceback:\n{text[:2000]}")
            if WARNING.search(text) and not (stderr_ok and out.get("name") == "stderr"):
                problems.append(f"{where} shows a warning:\n{text[:2000]}")
            for p in paths:
                if p in text:
                    problems.append(f"{where} shows a path of this machine ({p}):\n{text[:2000]}")
                    break
    return problems


def output_problems(nb, paths) -> list[str]:
    """Everything a reader should not see in the executed notebook ``nb``, cell by cell."""
    problems, n_code = [], 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n_code += 1
        first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else "empty"
        stderr_ok = "expect-stderr" in cell.metadata.get("tags", [])
        problems += cell_problems(cell.get("outputs", []), stderr_ok, paths,
                                  f"code cell {n_code} ({first})")
    return problems


# --------------------------------------------------------------------------------------------
# the nbval collector


_TIMINGS: dict[str, float] = {}


def _quiet_font_cache():
    """Build Matplotlib's font cache quietly, once, before any kernel would log that it does."""
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    import matplotlib.font_manager  # noqa: F401
    logger.setLevel(level)


@functools.lru_cache(maxsize=None)
def _nbval_classes():
    from nbval.kernel import RunningKernel
    from nbval.plugin import IPyNbCell, IPyNbFile, find_metadata_tags

    class ChapterCell(IPyNbCell):
        """One code cell of a chapter: nbval runs it; then its outputs are checked and kept."""

        def setup(self):
            super().setup()
            if self.parent.failed:
                pytest.skip("an earlier cell of this chapter failed")

        def runtest(self):
            try:
                super().runtest()
                stderr_ok = "expect-stderr" in self.cell.metadata.get("tags", [])
                problems = cell_problems(self.test_outputs, stderr_ok, self.parent.paths)
                if problems:
                    self.raise_cell_error("\n\n".join(problems))
            except BaseException:
                self.parent.failed = True
                raise
            finally:
                self.cell.outputs = list(self.test_outputs or [])
            self.cell.execution_count = self.cell_num + 1

    class ChapterNotebook(IPyNbFile):
        """A chapter (MyST markdown, read with jupytext) as a notebook of nbval cell items."""

        failed = False

        def collect(self):
            import jupytext

            self.nb = jupytext.read(self.path)
            code = [c for c in self.nb.cells if c.cell_type == "code"]
            for k, cell in enumerate(code):
                cell.execution_count, cell.outputs = None, []
                first = cell.source.strip().splitlines()[0][:50] if cell.source.strip() else ""
                options = defaultdict(bool, find_metadata_tags(cell.metadata), check=False)
                yield ChapterCell.from_parent(self, name=f"Cell {k}: {first}", cell_num=k,
                                              cell=cell, options=options)

        def setup(self):
            self.workdir = tempfile.mkdtemp(prefix="otbook-chapter-")
            self.paths = machine_paths(self.workdir)
            self.kernel = RunningKernel("python3", cwd=self.workdir,
                                        startup_timeout=self.config.option
                                        .nbval_kernel_startup_timeout)
            self.sanitize_patterns = {}
            self.start = time.perf_counter()

        def teardown(self):
            elapsed = time.perf_counter() - self.start
            super().teardown()
            name = str(self.path.relative_to(ROOT))
            _TIMINGS[name] = elapsed if not self.failed else float("nan")
            if not self.failed:
                _store_in_cache(self.nb, self.path, elapsed)

    return ChapterNotebook


def _store_in_cache(nb, path, elapsed):
    """Keep the executed chapter in the book's execution cache, for ``make book``."""
    try:
        import jupytext
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn
    except ImportError:  # the [book] extra is not installed: nothing to share with the build
        return
    cache = get_cache(str(ROOT / CACHE))
    cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": elapsed}),
                                check_validity=False, overwrite=True)
    cache.match_cache_notebook(jupytext.read(path))  # the book's build will find it (KeyError)


_STARTED = False


def collect_chapter(file_path, parent):
    """The ``pytest_collect_file`` hook: a chapter of ``_toc.yml`` becomes an nbval notebook."""
    global _STARTED
    if file_path.suffix != ".md" or file_path.resolve() not in set(chapters()):
        return None
    if not (parent.config.option.nbval or parent.config.option.nbval_lax):
        return None
    if not _STARTED:  # once per session: stale outputs out of the cache, a quiet font cache
        _STARTED = True
        cache_key.main(CACHE)
        _quiet_font_cache()
    return _nbval_classes().from_parent(parent, path=file_path)


def report_timings(terminalreporter):
    """The ``pytest_terminal_summary`` hook: each chapter's run time."""
    if not _TIMINGS:
        return
    terminalreporter.section("chapter run times")
    for name, seconds in _TIMINGS.items():
        shown = "failed" if seconds != seconds else f"{seconds:6.1f} s"
        terminalreporter.write_line(f"{shown:>9}  {name}")
