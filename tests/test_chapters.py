"""Execute every chapter listed in _toc.yml, top to bottom, afresh, and check what readers see.

Each chapter (a jupytext MyST notebook) is read with jupytext and run with nbclient in a
temporary working directory (chapters must not rely on relative paths). A chapter fails if

* a cell raises (its closing assertions included) or shows an error: no traceback in the book;
* a cell writes to stderr, unless the cell has the tag ``expect-stderr``: warnings and library
  noise are bugs of the chapter (``ob.setup_notebook()`` quiets the known third-party noise);
* an output shows a Python warning, a traceback, KeOps' log lines, or a path of this machine
  (the repository, the virtual environment, the home or temporary folder);
* it does not start with the Colab install cell (``tools.book.COLAB_CELL``) followed by a cell
  that calls ``ob.setup_notebook()``.

A chapter that passes is stored in the book's execution cache (``_build/.jupyter_cache``), so the
page check (``tests/test_pages.py``) and ``make book`` show these very outputs without running
the chapter again.
"""

from __future__ import annotations

import logging
import os
import re
import site
import sys
import tempfile
import time

import jupytext
import nbclient
import pytest

from tools import cache_key
from tools.book import ROOT, chapters, colab_cell

CHAPTERS = chapters()
IDS = [str(p.relative_to(ROOT)) for p in CHAPTERS]
CELL_TIMEOUT = 600
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


def output_problems(nb, paths) -> list[str]:
    """Everything a reader should not see in the executed notebook ``nb``, cell by cell."""
    problems = []
    n_code = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        n_code += 1
        where = f"code cell {n_code} ({cell.source.strip().splitlines()[0][:60] if cell.source.strip() else 'empty'})"
        stderr_ok = "expect-stderr" in cell.metadata.get("tags", [])
        for out in cell.get("outputs", []):
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


@pytest.fixture(scope="module")
def cache():
    """The book's execution cache, cleared first if the library changed (tools/cache_key.py)."""
    try:
        from jupyter_cache import get_cache
    except ImportError:  # the [book] extra is not installed: nothing to share with the build
        return None
    cache_key.main(CACHE)
    return get_cache(str(ROOT / CACHE))


@pytest.fixture(scope="module", autouse=True)
def font_cache():
    """Build Matplotlib's font cache quietly, once, before any kernel would log that it does."""
    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(logging.ERROR)
    import matplotlib.font_manager  # noqa: F401
    logger.setLevel(level)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_starts_with_colab_and_setup_cells(path):
    code = [c.source.strip() for c in jupytext.read(path).cells if c.cell_type == "code"]
    assert code and code[0] == colab_cell().strip(), (
        f"{path.name}: the first code cell must be the Colab install cell (README, "
        f"'Writing a chapter'), exactly:\n\n{colab_cell()}")
    assert len(code) > 1 and "ob.setup_notebook()" in code[1], (
        f"{path.name}: the second code cell must call ob.setup_notebook() right after importing otbook")


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_runs(path, tmp_path, cache):
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
        record_timing=False,  # no timestamps in the cells' metadata: the cache keys on it
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    elapsed = time.perf_counter() - start
    problems = output_problems(nb, machine_paths(tmp_path))
    if problems:
        pytest.fail(f"{path.name}: {len(problems)} problem(s) in its outputs:\n\n" + "\n\n".join(problems),
                    pytrace=False)
    if cache is not None:
        from jupyter_cache.base import CacheBundleIn

        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": elapsed}),
                                    check_validity=False, overwrite=True)
        cache.match_cache_notebook(jupytext.read(path))  # the book's build will find it (KeyError)
    print(f"{path.relative_to(ROOT)} ran in {elapsed:.1f} s")


def test_output_check_catches_what_readers_should_not_see(tmp_path):
    """The output check flags stderr, warnings, tracebacks and machine paths; not clean output."""
    import nbformat

    def cell(outputs, tags=()):
        c = nbformat.v4.new_code_cell("x = 1", metadata={"tags": list(tags)})
        c.outputs = [nbformat.from_dict(o) for o in outputs]
        return c

    def stream(name, text):
        return {"output_type": "stream", "name": name, "text": text}

    def plain(text):
        return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                "data": {"text/plain": text}}

    png = {"output_type": "display_data", "metadata": {},
           "data": {"image/png": "iVBORw0KGgo/tmp/", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    paths = machine_paths(tmp_path)
    clean = nbformat.v4.new_notebook(cells=[
        cell([stream("stdout", "converged: False | warning: stopped after max_iter\n"), plain("0.5"), png]),
        cell([stream("stderr", "100%|##########| 10/10\n")], tags=["expect-stderr"]),
    ])
    assert output_problems(clean, paths) == []
    bad = [
        [stream("stderr", "something\n")],
        [stream("stdout", "[KeOps] Warning : Cuda libraries were not detected on the system\n")],
        [stream("stdout", f"{sys.prefix}/lib/python3/site-packages/ot/bregman.py:505: UserWarning: "
                          "Numerical errors at iteration 0\n")],
        [plain(f"PosixPath('{tmp_path}/data.csv')")],
        [plain(f"'{ROOT}/otbook/exact.py'")],
        [{"output_type": "error", "ename": "ValueError", "evalue": "eps must be > 0", "traceback": []}],
        [stream("stdout", 'Traceback (most recent call last):\n  File "x.py", line 1\n')],
    ]
    for outputs in bad:
        nb = nbformat.v4.new_notebook(cells=[cell(outputs)])
        assert output_problems(nb, paths), outputs
