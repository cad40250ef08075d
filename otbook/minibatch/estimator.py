"""The usual mini-batch OT estimator: exact OT averaged over random batch pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import (check_choice, check_clouds, check_generator, check_int_at_most,
                       check_positive_int, check_same_mass, check_weights)
from .._runtime import WarningSummary, randperm, warn
from .._runtime import progress as progress_bar
from ._common import COSTS_WITH_MEAN_BOUND, ShortRepr, solve_pair
from ._distributed import all_reduce, broadcast, check_same_data, rank_and_world

__all__ = ["MinibatchOT", "minibatch_ot"]


@dataclass(repr=False)
class MinibatchOT(ShortRepr):
    """The usual mini-batch OT estimate (see :func:`minibatch_ot`).

    Attributes
    ----------
    value : Tensor, shape ()
        Mean of the per-pair exact OT costs.
    stderr : Tensor, shape ()
        Standard error of that mean (0 for a single pair).
    values : Tensor, shape (n_batches,)
        The exact OT cost of each random batch pair.
    n_solves : int
        Number of mini-batch OT problems solved.
    converged : bool
        Whether every solve reached optimality.
    """

    value: torch.Tensor
    stderr: torch.Tensor
    values: torch.Tensor
    n_solves: int
    converged: bool


def minibatch_ot(x, y, *, batch_size: int, n_batches: int = 1, a=None, b=None,
                 cost: str = "sqeuclidean", generator=None, distributed: bool | None = None,
                 progress: bool = False) -> MinibatchOT:
    r"""The usual mini-batch OT estimator: exact OT averaged over random batch pairs.

    Each of the ``n_batches`` pairs draws ``batch_size`` source and ``batch_size`` target points
    (without replacement for uniform weights; with replacement, with probabilities ``a`` and
    ``b``, for weighted ones), and solves exact OT between the two batches with uniform weights.
    The estimate is the mean of these costs. It is an *upper-biased* estimate of ``OT(a, b)``:
    its expectation is the all-pairs member of the bound family, and it is positive even
    between a dataset and itself, where ``OT = 0``.

    Parameters
    ----------
    x, y : Tensor or array, shapes (n, d) and (m, d)
        Source and target points.
    batch_size : int
        Points per batch, between 1 and ``min(n, m)``.
    n_batches : int
        Number of random batch pairs (at least 1).
    a, b : Tensor or array, optional
        Sampling weights (default uniform), non-negative, with equal total masses.
    cost : {"sqeuclidean", "euclidean"}
        Ground cost.
    generator : torch.Generator, optional
        Randomness of the draws (drawn on rank 0 under ``torch.distributed``).
    distributed : bool, optional
        Share the solves among the ranks of the initialised process group (``None``: when one
        is initialised).
    progress : bool
        Progress bar over the solves.

    Returns
    -------
    MinibatchOT
        ``value`` (the estimate), ``stderr``, the per-pair ``values``, ``n_solves``,
        ``converged``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, dtype=torch.float64, generator=gen)
    >>> est = ob.minibatch_ot(x, x, batch_size=20, n_batches=10, generator=gen)
    >>> est.n_solves, bool(est.value > 0)       # biased: OT(x, x) = 0
    (10, True)
    """
    x, y = check_clouds(x, y)
    n, m = x.shape[0], y.shape[0]
    batch_size = check_int_at_most(batch_size, "batch_size", min(n, m),
                                   "the number of points in the smaller of x and y")
    n_batches = check_positive_int(n_batches, "n_batches")
    weighted = a is not None or b is not None
    a = check_weights(a, n, "a", like=x)
    b = check_weights(b, m, "b", like=x)
    check_same_mass(a, b)
    cost = check_choice(cost, "cost", COSTS_WITH_MEAN_BOUND)
    generator = check_generator(generator)
    rank, world = rank_and_world(distributed)
    check_same_data(world, x=x, y=y, a=a, b=b)

    shape = (n_batches, batch_size)
    src_idx = broadcast(_draw(a, shape, weighted, x, generator).contiguous(), world)
    tgt_idx = broadcast(_draw(b, shape, weighted, x, generator).contiguous(), world)
    vals = x.new_zeros(n_batches)
    mine = range(rank, n_batches, world)
    summary = WarningSummary()  # reported below, from the flags every rank agrees on
    ok = 1.0
    for t in progress_bar(progress, total=len(mine), desc="mini-batch solves", iterable=mine):
        v, _, _, conv = solve_pair(x[src_idx[t]], y[tgt_idx[t]], None, None, cost, summary)
        vals[t] = v
        ok *= float(conv)
    vals = all_reduce(vals, world)
    converged = bool(all_reduce(x.new_tensor([ok]), world, "min").item() == 1.0)
    if not converged:
        warn("minibatch_ot: an exact solve stopped before optimality")
    vals = vals * a.sum()  # the batches carry the total mass of the measures
    stderr = vals.std() / math.sqrt(n_batches) if n_batches > 1 else vals.new_zeros(())
    return MinibatchOT(value=vals.mean(), stderr=stderr, values=vals, n_solves=n_batches,
                       converged=converged)


def _draw(w, shape, weighted, like, generator):
    """Indices of ``shape = (n_batches, batch_size)`` points: with replacement, with the
    probabilities ``w``, for weighted measures; else each batch without replacement."""
    n_batches, batch_size = shape
    if weighted:
        # torch.multinomial, with the generator on its own device (not in ``_runtime`` yet)
        p = (w / w.sum()).detach()
        if generator is None:
            idx = torch.multinomial(p, batch_size * n_batches, replacement=True)
        else:
            idx = torch.multinomial(p.to(generator.device), batch_size * n_batches,
                                    replacement=True, generator=generator).to(like.device)
        return idx.reshape(shape)
    return torch.stack([randperm(w.shape[0], like, generator)[:batch_size]
                        for _ in range(n_batches)])
