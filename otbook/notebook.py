"""Notebook set-up shared by the chapters: quiet the known noise of third-party libraries."""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["setup_notebook", "glue"]

# Environment variables read by third-party libraries when they are imported.
QUIET_ENV = {
    "KEOPS_VERBOSE": "0",          # KeOps (GeomLoss): "Cuda libraries were not detected", compile logs
    "TF_CPP_MIN_LOG_LEVEL": "2",   # TensorFlow, where installed (Colab): C++ start-up logs
}
# Warnings that say nothing about the chapter's computation: (category, message regex).
QUIET_WARNINGS = [
    (Warning, r"IProgress not found"),   # tqdm.auto without ipywidgets: falls back to a text bar
]


def setup_notebook() -> None:
    """Silence the known noise of third-party libraries in a chapter, at its source.

    Every chapter calls it first, right after ``import otbook as ob``, so that no cell of the
    book shows messages a reader can do nothing about:

    * KeOps (used by GeomLoss) prints "Cuda libraries were not detected" and compilation logs on
      a CPU machine: ``KEOPS_VERBOSE=0`` (and ``pykeops.set_verbose(False)`` if already imported);
    * tqdm warns "IProgress not found" where ipywidgets is missing;
    * Matplotlib logs "building the font cache" the first time it runs on a machine: the cache is
      built here, quietly;
    * TensorFlow, where installed (as on Colab), logs C++ start-up messages.

    Nothing else is hidden. Warnings about the computation itself (a solver that did not
    converge, numerical errors, a deprecated call) stay visible, and the book's test runner
    fails a chapter that shows one: fix the cause, or catch the warning and print what it means.
    Calling it again does nothing more.

    Examples
    --------
    >>> import otbook as ob
    >>> ob.setup_notebook()
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    pykeops = sys.modules.get("pykeops")
    if pykeops is not None and hasattr(pykeops, "set_verbose"):
        pykeops.set_verbose(False)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if "matplotlib.font_manager" not in sys.modules:
        logger = logging.getLogger("matplotlib.font_manager")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            import matplotlib.font_manager  # noqa: F401  (builds the font cache on first use)
        finally:
            logger.setLevel(level)


def glue(name: str, value, display: bool = False):
    """Make a computed ``value`` available to the chapter's prose, and return it.

    In the book, the prose shows it with myst-nb's role, ``{glue:text}`name:.3g``` (a format
    spec after the colon), so that no number about a run is ever typed in: the page shows what
    the run computed. Where myst-nb is not installed (a notebook on Colab, a script) this only
    returns ``value``. Numbers are glued as Python floats or ints (tensors are converted).

    Examples
    --------
    >>> import otbook as ob
    >>> ob.glue("answer", 42)
    42
    """
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a 0-d tensor or NumPy scalar: a Python number for the format spec
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    myst_glue(name, value, display=display)
    return value
