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
