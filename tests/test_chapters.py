"""The chapters' static checks, and the tests of the chapter runner's output check.

The chapters themselves are executed by pytest's nbval plugin, one test item per code cell
(``pytest chapters --nbval-lax``, part of ``make test``; see ``tools/chapter_check.py``). Here:

* every chapter starts with the Colab install cell (``tools.book.COLAB_CELL``) followed by a cell
  that calls ``ob.setup_notebook()``;
* no chapter types a run's numbers into its prose (``tools/prose.py``: they are glued);
* no code cell ends with a bare ``ob.glue(...)``, whose returned value Jupyter would print as a
  stray number under the cell;
* the output check flags what readers should not see, and only that.
"""

from __future__ import annotations

import ast
import sys

import jupytext
import pytest

from tools.book import ROOT, chapters, colab_cell
from tools.chapter_check import machine_paths, output_problems
from tools.prose import typed_numbers

CHAPTERS = chapters()
IDS = [str(p.relative_to(ROOT)) for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_starts_with_colab_and_setup_cells(path):
    code = [c.source.strip() for c in jupytext.read(path).cells if c.cell_type == "code"]
    assert code and code[0] == colab_cell().strip(), (
        f"{path.name}: the first code cell must be the Colab install cell (README, "
        f"'Writing a chapter'), exactly:\n\n{colab_cell()}")
    assert len(code) > 1 and "ob.setup_notebook()" in code[1], (
        f"{path.name}: the second code cell must call ob.setup_notebook() right after importing otbook")


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_prose_types_no_run_numbers(path):
    found = typed_numbers(path)
    assert not found, (
        f"{path.name}: numbers typed into the prose (glue them: README, 'Writing a chapter'; a "
        "paragraph that must type numbers gets a '% typed-numbers: <reason>' line):\n"
        + "\n".join(found))


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


def bare_glue_endings(path) -> list[str]:
    """Code cells whose last statement is a bare ``ob.glue(...)`` expression: Jupyter shows its
    return value as a stray output line. End such a cell with ``;`` or assign the value."""
    found = []
    for k, cell in enumerate(jupytext.read(path).cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        if not body or not isinstance(body[-1], ast.Expr):
            continue
        call = body[-1].value
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "glue" and not source.rstrip().endswith(";")):
            found.append(f"cell {k}: {ast.get_source_segment(source, body[-1])[:60]}")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_no_cell_prints_a_glued_value(path):
    found = bare_glue_endings(path)
    assert not found, f"{path.name}: a cell ends with ob.glue(...), end it with ';':\n" + \
        "\n".join(found)
