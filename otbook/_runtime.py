"""The library's cross-cutting concerns, one home each.

* **Random draws** (:func:`randperm`, :func:`randn`, :func:`randint`, :func:`rand`): with an
  optional ``torch.Generator``; the draw happens on the generator's device (so a CPU generator
  gives the same numbers whatever the data's device) and the result moves to the data's device
  and dtype. Without a generator, torch's global generator of the data's device is used.
* **Memory** (:func:`memory_budget`, :func:`dense_fits`, :func:`block_rows`): how many bytes a
  dense computation may use (the *budget*, a user setting), whether a dense computation fits in
  it, and how many rows of an ``n x m`` block a streamed (online) computation takes at a time
  (the *block*, a performance setting: a few MB on a CPU, so a block stays in cache; larger on
  a GPU, so a block fills the device; never more than the budget).
* **Progress bars** (:func:`progress`): tqdm when asked for, a silent stand-in otherwise.
* **Warnings** (:func:`warn`, :class:`WarningSummary`): the library's warnings are
  ``RuntimeWarning``\\ s issued with one helper; a loop that calls solvers many times collects
  theirs and reports one summary.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import torch

from ._checks import check_generator, check_positive

__all__ = [
    "randperm",
    "randn",
    "randint",
    "rand",
    "memory_budget",
    "dense_fits",
    "block_rows",
    "BLOCK_BYTES_CPU",
    "BLOCK_BYTES_CUDA",
    "SMALL_WORK",
    "threads_for",
    "progress",
    "warn",
    "WarningSummary",
    "renamed_keywords",
]


# --------------------------------------------------------------------------------------------
# random draws


def _source(like: torch.Tensor, generator):
    """The device to draw on: the generator's (checked), else the data's."""
    generator = check_generator(generator)
    if generator is None:
        return like.device
    if generator.device.type == "meta":
        raise ValueError("generator is on the meta device, which holds no random state; use a "
                         "CPU or CUDA torch.Generator")
    return generator.device


def randperm(n: int, like: torch.Tensor, generator=None) -> torch.Tensor:
    """A random permutation of ``range(n)`` (long) on the device of ``like``."""
    dev = _source(like, generator)
    return torch.randperm(n, generator=generator, device=dev).to(like.device)


def randn(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal draws of ``shape`` with the dtype and device of ``like``."""
    dev = _source(like, generator)
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.randn(shape, generator=generator, device=dev, dtype=dtype).to(like.device)


def rand(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """Uniform draws on [0, 1) of ``shape`` with the dtype and device of ``like``."""
    dev = _source(like, generator)
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.rand(shape, generator=generator, device=dev, dtype=dtype).to(like.device)


def randint(high: int, shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """Integers in ``[0, high)`` (long) of ``shape`` on the device of ``like``."""
    dev = _source(like, generator)
    return torch.randint(0, high, shape, generator=generator, device=dev).to(like.device)


# --------------------------------------------------------------------------------------------
# memory


#: Bytes of one streamed block: cache-sized on a CPU; on a GPU, large enough to fill the device.
BLOCK_BYTES_CPU = 8 * 2**20
BLOCK_BYTES_CUDA = 256 * 2**20
#: The dense budget on a CPU when the user gives none.
CPU_BUDGET = 2e9


def memory_budget(value, like: torch.Tensor) -> float:
    """Bytes a dense computation may use: ``value`` (a number > 0, checked), or for ``None`` the
    default of the device of ``like``: half of the free memory of a CUDA device, 2 GB elsewhere."""
    if value is not None:
        return check_positive(value, "memory_budget")
    if like.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(like.device)
        return 0.5 * float(free)
    return float(CPU_BUDGET)


def dense_fits(entries, dtype: torch.dtype, budget: float, copies: int = 3) -> bool:
    """Whether dense matrices of ``entries`` entries (an int, or a list: problems solved one
    after the other, so the largest counts) fit in ``budget`` bytes. A dense solve holds about
    ``copies`` matrices of its size at once (the cost, the kernel, a temporary)."""
    if not isinstance(entries, numbers.Integral):
        entries = max(entries)
    size = torch.finfo(dtype).bits // 8
    return copies * int(entries) * size <= budget


def block_rows(n_rows: int, n_cols: int, like: torch.Tensor, budget: float | None = None,
               batch: int = 1) -> int:
    """Rows of a ``(batch, rows, n_cols)`` block for a streamed computation.

    A block holds about :data:`BLOCK_BYTES_CPU` (8 MB: it stays in cache) on a CPU and
    :data:`BLOCK_BYTES_CUDA` (256 MB) on a GPU, and never more than ``budget`` bytes. At least
    one row, at most ``n_rows``.
    """
    size = torch.finfo(like.dtype).bits // 8 if like.is_floating_point() else 8
    cap = BLOCK_BYTES_CUDA if like.device.type == "cuda" else BLOCK_BYTES_CPU
    if budget is not None:
        cap = min(cap, budget)
    return int(max(1, min(n_rows, cap // max(1, n_cols * batch * size))))


# --------------------------------------------------------------------------------------------
# threads

#: Below this many entries per operation, splitting work over threads costs more than it saves
#: (and on a busy machine, threads that wait on each other cost a lot more).
SMALL_WORK = 2**20


class threads_for:
    """Run a CPU computation whose operations touch ``entries`` numbers each with one thread when
    they are small (below :data:`SMALL_WORK`), else with torch's setting; restores the setting
    after. Loops of small operations (a Sinkhorn solve on a small problem, a mirror-descent step)
    are then as fast on a quiet machine and several times faster on a busy one."""

    def __init__(self, entries: int, like: torch.Tensor):
        self.single = like.device.type == "cpu" and entries < SMALL_WORK
        self.before = None

    def __enter__(self):
        if self.single and torch.get_num_threads() > 1:
            self.before = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            torch.set_num_threads(self.before)
        return False


# --------------------------------------------------------------------------------------------
# progress bars


class _NoBar:
    """What :func:`progress` returns when no bar is wanted: every call does nothing."""

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(())


def progress(enabled: bool, total: int | None = None, desc: str = "", iterable=None):
    """A tqdm progress bar (``leave=False``) when ``enabled``, else a silent stand-in.

    With ``iterable``, returns something to loop over (the iterable itself when disabled).
    """
    if not enabled:
        return iterable if iterable is not None else _NoBar()
    from tqdm.auto import tqdm

    if iterable is not None:
        return tqdm(iterable, total=total, desc=desc, leave=False)
    return tqdm(total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------
# warnings


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue one of the library's warnings (a ``RuntimeWarning``: a solver did not converge, a
    result is less accurate than asked), pointing ``stacklevel`` frames up from the caller."""
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


class WarningSummary:
    """Collect the ``RuntimeWarning``\\ s of repeated solver calls; report one summary.

    ``with summary: ...`` records the RuntimeWarnings raised inside (other warnings pass
    through unchanged); :attr:`count` is how many ``with`` blocks warned, :attr:`first` the
    first message. :meth:`report` issues one warning for all of them.
    """

    def __init__(self):
        self.count, self.first = 0, None
        self._caught = None

    def __enter__(self):
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        caught = self._caught
        self._ctx.__exit__(*exc)
        hit = False
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                hit = True
                self.first = self.first or str(w.message)
            else:  # not ours to hide
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.count += hit
        return False

    def report(self, where: str, n: int, what: str = "step(s)", enabled: bool = True,
               stacklevel: int = 2) -> None:
        """One warning: ``where`` warned in :attr:`count` of ``n`` ``what``, and the first."""
        if enabled and self.count:
            warn(f"{where}: {self.count} of {n} {what} warned; the first: {self.first}",
                 stacklevel=stacklevel + 1)


def renamed_keywords(**renames):
    """Keep old keyword names working for one release: ``old=value`` is passed on as
    ``new=value`` with a ``DeprecationWarning`` (``renames`` maps old to new); giving both is a
    ``TypeError``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old!r} and {new!r}; {old!r} is the "
                                    f"deprecated name of {new!r}: pass only {new!r}")
                warnings.warn(f"{fn.__name__}: {old!r} is deprecated and will be removed in the "
                              f"next release; use {new!r}", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
