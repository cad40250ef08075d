"""Few-shot transfer experiments, batched: many small networks trained at once, and a test of a
dataset distance against transfer gains that respects the experiment's design.

A transfer experiment pretrains one network per source, then fine-tunes a copy of each on a few
labelled examples of each target, many times over (sources x draws of the shots). Trained one at
a time, thousands of tiny networks spend their time in Python; stored as batches of weight
matrices (:class:`BatchedMLP`) they train as one model, one batched matrix product per layer, and
since the loss is the sum of the networks' losses each receives exactly its own gradient.

The (source, target) pairs of such an experiment share their sources and their targets, so
they are not independent observations; :func:`source_permutation_test` tests a correlation
between distances and gains against permutations of the sources, which keeps that structure.
Used by the OTDD chapter.
"""

from __future__ import annotations

import math

import torch

from ._checks import (as_tensor, check_finite, check_generator, check_nonnegative, check_positive,
                      check_positive_int)
from ._runtime import rand

__all__ = ["BatchedMLP", "train_batched", "batched_accuracy", "source_permutation_test"]


class BatchedMLP(torch.nn.Module):
    """``n_networks`` independent multilayer perceptrons with ReLU activations, stored as batches
    of weight matrices: network ``k`` maps ``x[k]`` of shape ``(n, d_in)`` to logits
    ``(n, n_out)``.

    Parameters
    ----------
    n_networks : int
        Number of independent networks ``B``.
    d_in, n_out : int
        Input dimension and number of outputs (classes).
    hidden : tuple of int
        Widths of the hidden layers.
    generator : torch.Generator, optional
        Random draws of the initial weights: uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``
        for weights and biases, PyTorch's default for ``nn.Linear``.
    dtype : torch.dtype
        Floating dtype of the weights.
    device : torch.device or str, optional
        Device of the weights (CPU by default).

    Attributes
    ----------
    W, b : torch.nn.ParameterList
        The layers' weights ``(B, fan_in, fan_out)`` and biases ``(B, 1, fan_out)``; the last
        entry of each is the head.

    Examples
    --------
    >>> nets = BatchedMLP(3, d_in=4, n_out=2, hidden=(8,),
    ...                   generator=torch.Generator().manual_seed(0))
    >>> tuple(nets(torch.zeros(3, 5, 4)).shape)
    (3, 5, 2)
    """

    def __init__(self, n_networks: int, d_in: int, n_out: int, hidden=(128, 64), *,
                 generator: torch.Generator | None = None, dtype=torch.float32, device=None):
        super().__init__()
        self.n_networks = check_positive_int(n_networks, "n_networks")
        dims = (check_positive_int(d_in, "d_in"), *[check_positive_int(h, "hidden")
                                                     for h in hidden],
                check_positive_int(n_out, "n_out"))
        check_generator(generator)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
        like = torch.empty(0, dtype=dtype, device=device)
        self.W, self.b = torch.nn.ParameterList(), torch.nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(fan_in)
            for store, shape in [(self.W, (self.n_networks, fan_in, fan_out)),
                                 (self.b, (self.n_networks, 1, fan_out))]:
                store.append(torch.nn.Parameter((2 * rand(shape, like, generator) - 1) * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n, n_out)`` of inputs ``x`` of shape ``(B, n, d_in)``."""
        for W, b in zip(self.W[:-1], self.b[:-1]):
            x = torch.relu(torch.baddbmm(b, x, W))
        return torch.baddbmm(self.b[-1], x, self.W[-1])

    def head_parameters(self) -> list[torch.nn.Parameter]:
        """The last layer's weights and biases: what a linear probe trains."""
        return [self.W[-1], self.b[-1]]

    def copy_body_(self, source: "BatchedMLP", repeats: int = 1) -> "BatchedMLP":
        """Copy the hidden layers of ``source`` into these networks, each source network
        ``repeats`` times in a row (network ``k`` gets the body of ``k // repeats``); the head
        keeps its own initialisation. Returns ``self``.

        Examples
        --------
        >>> pre = BatchedMLP(2, 4, 10, hidden=(8,))
        >>> nets = BatchedMLP(6, 4, 3, hidden=(8,)).copy_body_(pre, repeats=3)
        >>> bool((nets.W[0][5] == pre.W[0][1]).all())
        True
        """
        if not isinstance(source, BatchedMLP):
            raise TypeError(f"source must be a BatchedMLP, got {type(source).__name__}")
        repeats = check_positive_int(repeats, "repeats")
        if source.n_networks * repeats != self.n_networks:
            raise ValueError(f"source has {source.n_networks} networks; repeated {repeats} times "
                             f"that is not the {self.n_networks} networks to fill")
        body = range(len(self.W) - 1)
        if len(source.W) != len(self.W) or any(
                self.W[k].shape[1:] != source.W[k].shape[1:] for k in body):
            raise ValueError("source must have the same input dimension and hidden widths")
        with torch.no_grad():
            for k in body:
                self.W[k].copy_(source.W[k].repeat_interleave(repeats, 0))
                self.b[k].copy_(source.b[k].repeat_interleave(repeats, 0))
        return self


def _batched_data(nets, x, y):
    """Checked inputs ``x (B, n, d_in)`` and labels ``y (B, n)`` for ``nets``."""
    if not isinstance(nets, BatchedMLP):
        raise TypeError(f"nets must be a BatchedMLP, got {type(nets).__name__}")
    x = check_finite(as_tensor(x, "x", like=nets.W[0]), "x").to(nets.W[0].dtype)
    B, d_in, n_out = nets.n_networks, nets.W[0].shape[1], nets.W[-1].shape[2]
    if x.ndim != 3 or x.shape[0] != B or x.shape[2] != d_in or x.shape[1] == 0:
        raise ValueError(f"x must have shape ({B}, n, {d_in}) with n >= 1, got {tuple(x.shape)}")
    y = torch.as_tensor(y, device=x.device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != x.shape[:2]:
        raise ValueError(f"y must have shape {tuple(x.shape[:2])}, got {tuple(y.shape)}")
    if bool((y < 0).any()) or bool((y >= n_out).any()):
        raise ValueError(f"y must hold classes 0 to {n_out - 1} (the networks' outputs)")
    return x, y.long()


def train_batched(nets: BatchedMLP, x, y, *, steps: int, lr: float, params=None,
                  batch_size: int | None = None, sizes=None, weight_decay: float = 1e-4,
                  generator: torch.Generator | None = None) -> BatchedMLP:
    """Train a batch of networks with Adam on the sum of their mean cross-entropies.

    Each network sees only its own data, ``x[k]`` and ``y[k]``; since the loss is a sum and Adam
    acts entry by entry, every network is trained exactly as if it were alone.

    Parameters
    ----------
    nets : BatchedMLP
        The networks (trained in place, and returned).
    x : (B, n, d_in) tensor
        Inputs of each network (converted to the networks' dtype); with ``sizes``, only the
        first ``sizes[k]`` rows of ``x[k]`` are data (the rest is padding, never used).
    y : (B, n) integer tensor
        Class labels in ``0 .. n_out - 1``.
    steps : int
        Optimiser steps.
    lr : float
        Adam's learning rate.
    params : iterable of parameters, optional
        What to train, e.g. ``nets.head_parameters()`` for a linear probe on frozen features;
        all parameters by default.
    batch_size : int, optional
        With it, each step uses a fresh mini-batch of ``batch_size`` rows drawn with replacement
        from each network's own data; without it, every step uses all the data (full batch).
    sizes : (B,) integer tensor, optional
        Rows of data per network (with ``batch_size``); all ``n`` by default.
    weight_decay : float
        Adam's L2 penalty.
    generator : torch.Generator, optional
        Random draws of the mini-batches.

    Returns
    -------
    BatchedMLP
        ``nets``, trained.

    Examples
    --------
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2, 20, 3, generator=gen)
    >>> y = (x[..., 0] > 0).long()  # the sign of the first coordinate
    >>> nets = train_batched(BatchedMLP(2, 3, 2, hidden=(16,), generator=gen), x, y,
    ...                      steps=200, lr=1e-2)
    >>> batched_accuracy(nets, x, y).tolist()
    [1.0, 1.0]
    """
    x, y = _batched_data(nets, x, y)
    steps = check_positive_int(steps, "steps")
    lr = check_positive(lr, "lr")
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    check_generator(generator)
    B, n = x.shape[:2]
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        sizes = torch.full((B,), n) if sizes is None else torch.as_tensor(sizes)
        if sizes.shape != (B,) or sizes.is_floating_point() or bool((sizes < 1).any()) \
                or bool((sizes > n).any()):
            raise ValueError(f"sizes must hold {B} integers between 1 and {n}")
        sizes = sizes.to(x)
    elif sizes is not None:
        raise ValueError("sizes is used only with batch_size (mini-batches of the real rows)")
    opt = torch.optim.Adam(nets.parameters() if params is None else params, lr=lr,
                           weight_decay=weight_decay)
    for _ in range(steps):
        xb, yb = x, y
        if batch_size is not None:
            idx = (rand((B, batch_size), x, generator) * sizes[:, None]).long()
            xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2]))
            yb = torch.gather(y, 1, idx)
        loss = torch.nn.functional.cross_entropy(nets(xb).flatten(0, 1), yb.flatten(),
                                                 reduction="none")
        opt.zero_grad()
        loss.view(B, -1).mean(1).sum().backward()
        opt.step()
    return nets


def batched_accuracy(nets: BatchedMLP, x, y) -> torch.Tensor:
    """Accuracy ``(B,)`` of each network on its own inputs ``x (B, n, d_in)`` and labels
    ``y (B, n)``.

    Examples
    --------
    >>> nets = BatchedMLP(2, 1, 2, hidden=(4,))
    >>> acc = batched_accuracy(nets, torch.zeros(2, 6, 1), torch.zeros(2, 6, dtype=torch.long))
    >>> bool(((acc == 0) | (acc == 1)).all())  # a constant input: all right or all wrong
    True
    """
    x, y = _batched_data(nets, x, y)
    with torch.no_grad():
        return (nets(x).argmax(-1) == y).to(x.dtype).mean(-1)


def _average_ranks(M: torch.Tensor) -> torch.Tensor:
    """Ranks 1..S within each column of ``M (S, T)``, ties given their average rank (as
    ``scipy.stats.rankdata``)."""
    below = (M[None, :, :] < M[:, None, :]).sum(1)
    equal = (M[None, :, :] == M[:, None, :]).sum(1)
    return below.to(M.dtype) + (equal.to(M.dtype) + 1) / 2


def _pooled_r(D: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Pearson's r between ``D (..., S, T)`` and ``G (S, T)`` over all entries."""
    d, g = D.flatten(-2), G.flatten()
    d, g = d - d.mean(-1, keepdim=True), g - g.mean()
    return (d @ g) / ((d**2).sum(-1) * (g @ g)).sqrt()


def _mean_rank_r(RD: torch.Tensor, RG: torch.Tensor) -> torch.Tensor:
    """Pearson's r between the columns of ranks ``RD (..., S, T)`` and ``RG (S, T)`` (Spearman's
    r_s within each column), averaged over the columns."""
    a, b = RD - RD.mean(-2, keepdim=True), RG - RG.mean(0)
    return ((a * b).sum(-2) / ((a**2).sum(-2) * (b**2).sum(0)).sqrt()).mean(-1)


def source_permutation_test(distances, gains, *, n_permutations: int = 20_000,
                            generator: torch.Generator | None = None) -> dict:
    """Test a negative association between dataset distances and transfer gains, against
    permutations of the sources.

    ``distances[i, j]`` and ``gains[i, j]`` belong to source ``i`` and target ``j``. The pairs
    share sources and targets, so they are not independent and the usual p-values do not hold.
    Under the null hypothesis that a source's distances say nothing about its gains, the rows of
    ``distances`` (one source's distances to all targets, moved together) are exchangeable; the
    test recomputes each statistic for random permutations of the rows, which keeps each
    source's profile and each target's scale. Two statistics:

    * ``"r"``: Pearson's correlation over all pooled pairs;
    * ``"r_s"``: Spearman's rank correlation within each target (column), averaged over the
      targets, which removes the differences between targets.

    Both p-values are one-sided (a *negative* association): the fraction of permutations, the
    observed one included, whose statistic is at most the observed value.

    Parameters
    ----------
    distances, gains : (S, T) tensors or arrays
        Finite values; at least 3 sources, and in every column at least two different values of
        each (a correlation needs variation).
    n_permutations : int
        Random permutations of the sources.
    generator : torch.Generator, optional
        Random draws of the permutations.

    Returns
    -------
    dict
        ``{"r": (value, p_value), "r_s": (value, p_value)}``, Python floats.

    Examples
    --------
    >>> d = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [4.0, 3.0], [5.0, 6.0]])
    >>> test = source_permutation_test(d, -d, generator=torch.Generator().manual_seed(0))
    >>> round(test["r"][0], 6), round(test["r_s"][0], 6), test["r_s"][1] < 0.05
    (-1.0, -1.0, True)
    """
    D = check_finite(as_tensor(distances, "distances"), "distances").double()
    G = check_finite(as_tensor(gains, "gains", like=D), "gains").double()
    if D.ndim != 2 or D.shape[0] < 3 or D.shape[1] < 1:
        raise ValueError(f"distances must have shape (sources, targets) with at least 3 "
                         f"sources, got {tuple(D.shape)}")
    if G.shape != D.shape:
        raise ValueError(f"gains must have the shape of distances {tuple(D.shape)}, "
                         f"got {tuple(G.shape)}")
    for name, M in [("distances", D), ("gains", G)]:
        if bool((M.amax(0) == M.amin(0)).any()):
            raise ValueError(f"{name} is constant in some column (target): no correlation")
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    perms = rand((n_permutations, D.shape[0]), D, check_generator(generator)).argsort(1)
    out = {}
    for name, stat, A, B in [("r", _pooled_r, D, G),
                             ("r_s", _mean_rank_r, _average_ranks(D), _average_ranks(G))]:
        observed, null = stat(A, B), stat(A[perms], B)
        p = (1 + (null <= observed + 1e-12).sum()) / (1 + n_permutations)
        out[name] = (float(observed), float(p))
    return out
