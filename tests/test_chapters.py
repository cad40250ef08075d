"""Execute every chapter listed in _toc.yml, top to bottom, afresh.

Each chapter (a jupytext MyST notebook) is read with jupytext and run with nbclient in a
temporary working directory (chapters must not rely on relative paths). A chapter fails if a cell
raises (its closing assertions included) or if a cell writes to stderr without the tag
``expect-stderr``: warnings and library noise are bugs of the chapter.
"""

from __future__ import annotations

import time

import jupytext
import nbclient
import pytest

from tools.book import ROOT, chapters

CHAPTERS = chapters()
CELL_TIMEOUT = 600


def _stderr_outputs(nb):
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "expect-stderr" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                yield i, out.get("text", "")


@pytest.mark.parametrize("path", CHAPTERS, ids=[str(p.relative_to(ROOT)) for p in CHAPTERS])
def test_chapter_runs(path, tmp_path):
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    elapsed = time.perf_counter() - start
    noisy = list(_stderr_outputs(nb))
    if noisy:
        i, text = noisy[0]
        pytest.fail(f"{path.name}: cell {i} wrote to stderr:\n{text[:2000]}", pytrace=False)
    print(f"{path.relative_to(ROOT)} ran in {elapsed:.1f} s")
