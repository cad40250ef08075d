"""pytest configuration shared by the unit tests (``tests/``) and the docstring examples
(``--doctest-modules otbook``)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Unit tests and docstring examples solve small problems: one thread avoids the cost of
    splitting every small operation (on a loaded 2-core machine, two threads can be ten times
    slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collect_file(file_path, parent):
    """The chapters of ``_toc.yml`` run as nbval notebooks (``pytest chapters --nbval-lax``)."""
    from tools.chapter_check import collect_chapter

    return collect_chapter(file_path, parent)


def pytest_terminal_summary(terminalreporter):
    from tools.chapter_check import report_timings

    report_timings(terminalreporter)
