"""Partitions of a point cloud into batches of near-equal size: random, or balanced k-means."""

from __future__ import annotations

import math

import torch

from .._checks import (check_choice, check_generator, check_int_at_most, check_pair_points,
                       check_positive_int, check_weights)
from .._runtime import randperm
from ..costs import cost_matrix
from ..exact import emd
from ._common import PARTITIONS

__all__ = ["partition"]


def _chunk_sizes(n: int, batch_size: int) -> list[int]:
    """``ceil(n / batch_size)`` sizes that sum to ``n`` and differ by at most one."""
    k = math.ceil(n / batch_size)
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def partition(x, batch_size: int, *, method: str = "random", weights=None, generator=None,
              n_iter: int = 10) -> list[torch.Tensor]:
    r"""Split the points of ``x`` into ``k = ceil(n / batch_size)`` batches of near-equal size.

    The batch sizes are fixed first: ``k`` sizes that sum to ``n`` and differ by at most one (the
    first ``n mod k`` batches have one point more), all at most ``batch_size``. Then

    * ``"random"``: a random permutation of the points is cut into contiguous chunks of these
      sizes;
    * ``"kmeans"``: balanced k-means. Lloyd's iterations in which the assignment step is an exact
      OT problem (``ob.emd``) from the points, each of mass 1, to the ``k`` centres, with masses
      equal to the batch sizes; an optimal vertex of that transportation polytope is integral, so
      it is a hard assignment with exactly the prescribed sizes. Centres start at ``k`` random
      points and move to the (weighted) means of their batches.

    Parameters
    ----------
    x : Tensor or array, shape (n, d) or (n,)
        Points.
    batch_size : int
        Largest batch size, between 1 and ``n``.
    method : {"random", "kmeans"}
        Partition rule.
    weights : Tensor or array, shape (n,), optional
        Point weights, used for the k-means centres only (batches are balanced by count).
    generator : torch.Generator, optional
        Source of the random permutation (or of the initial centres).
    n_iter : int
        Lloyd iterations of ``"kmeans"``.

    Returns
    -------
    list of Tensor
        ``k`` sorted index tensors (``long``, on ``x``'s device) that partition ``range(n)``.

    Examples
    --------
    >>> import torch
    >>> from otbook.minibatch import partition
    >>> parts = partition(torch.randn(10, 2), 4, generator=torch.Generator().manual_seed(0))
    >>> [len(p) for p in parts]
    [4, 3, 3]
    """
    x, _ = check_pair_points(x, x)
    n = x.shape[0]
    batch_size = check_int_at_most(batch_size, "batch_size", n, "the number of points")
    method = check_choice(method, "partition", PARTITIONS)
    generator = check_generator(generator)
    n_iter = check_positive_int(n_iter, "n_iter")
    sizes = _chunk_sizes(n, batch_size)
    perm = randperm(n, x, generator)
    if method == "random" or len(sizes) == 1:
        return [chunk.sort().values for chunk in torch.split(perm, sizes)]
    w = check_weights(weights, n, "weights", like=x)
    return _balanced_kmeans(x, w, sizes, x[perm[:len(sizes)]].clone(), n_iter)


def _balanced_kmeans(x, w, sizes, centres, n_iter):
    """Lloyd's iterations with an exact-OT assignment to batches of the given ``sizes``."""
    k = len(sizes)
    counts = x.new_tensor(sizes, dtype=torch.float64)
    ones = counts.new_ones(x.shape[0])
    labels = None
    for _ in range(n_iter):
        plan = emd(ones, counts, cost_matrix(x, centres).double()).plan
        new = plan.argmax(1)  # an integral vertex: one 1 per row
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype) * w[:, None]
        # a batch whose points all weigh 0 has no weighted mean: the clamp puts its centre at
        # the origin instead of NaN
        centres = (onehot.T @ x) / onehot.sum(0).clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    return [torch.nonzero(labels == i).flatten() for i in range(k)]
