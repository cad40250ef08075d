r"""Flow matching with independent or mini-batch OT pairs.

Conditional flow matching (Lipman et al. 2023) regresses a velocity field :math:`v(x, t)` on the
straight-line velocity :math:`x_1 - x_0` of pairs :math:`(x_0, x_1)` drawn from a coupling of the
source and the target, at the point :math:`x_t = (1 - t) x_0 + t x_1`. With independent pairs,
the paths of different pairs cross and the learned field averages their directions; pairing each
mini-batch by OT (:func:`ot_pairing`; Pooladian et al. 2023, Tong et al. 2024) makes the pairs
nearly non-crossing, and the learned flow straighter (:func:`path_straightness`), so that fewer
integration steps (:func:`sample_flow`) reach the same sample quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (as_tensor, check_callable, check_choice, check_finite, check_generator,
                       check_module, check_nonnegative, check_pair_points, check_paired,
                       check_points, check_positive, check_positive_int)
from .._runtime import progress as progress_bar
from .._runtime import rand, randint, randn
from .._training import optimizer_step
from ..costs import cost_matrix
from ..exact import emd
from ..sinkhorn import sinkhorn

__all__ = [
    "ot_pairing",
    "flow_matching_loss",
    "sample_flow",
    "path_straightness",
    "fit_flow_matching",
    "FlowMatchingFit",
]


def _sample_plan(plan: torch.Tensor, k: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` index pairs ``(i, j)`` drawn with replacement from each plan of a batch, by
    inverse-CDF sampling on the flattened plan."""
    *batch, n, m = plan.shape
    flat = plan.reshape(*batch, n * m)
    cdf = flat.cumsum(-1)
    u = rand((*batch, k), like=plan, generator=generator) * cdf[..., -1:]
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous()).clamp_max(n * m - 1)
    return idx // m, idx % m


def ot_pairing(x0, x1, eps=None, *, cost="sqeuclidean", n_pairs: int | None = None,
               generator=None, tol: float = 1e-6, max_iter: int = 10_000):
    r"""Pair two mini-batches by optimal transport: the couplings of OT flow matching.

    Solves OT between the uniform measures on ``x0`` and ``x1`` (exactly with :func:`~otbook.emd`
    when ``eps`` is ``None``, entropically with :func:`~otbook.sinkhorn` otherwise) and returns
    index pairs ``(i, j)``: ``x0[i]`` is paired with ``x1[j]``.

    Parameters
    ----------
    x0, x1 : Tensor or array, shapes (..., n, d) and (..., m, d)
        The two mini-batches (leading dimensions: a batch of independent pairings, solved as
        one batched problem).
    eps : float or None
        ``None`` for exact OT; else the absolute entropic regularisation.
    cost : str or callable
        Ground cost (see :func:`~otbook.cost_matrix`); squared Euclidean by default.
    n_pairs : int, optional
        How many pairs to draw from the plan (with replacement). By default: for exact OT
        between batches of equal size, the optimal permutation itself (``i = 0 .. n-1``, no
        randomness); otherwise ``n`` pairs drawn from the plan.
    generator : torch.Generator, optional
        Randomness of the draws from the plan.
    tol, max_iter : float, int
        Settings of the Sinkhorn solve (``eps`` given).

    Returns
    -------
    i, j : Tensor of long, shape (..., n_pairs)
        Indices into ``x0`` and ``x1``. The pairing carries no gradient.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x0 = torch.tensor([[0.0], [1.0], [2.0]])
    >>> x1 = torch.tensor([[2.1], [-0.1], [0.9]])
    >>> i, j = ob.ot_pairing(x0, x1)
    >>> i.tolist(), j.tolist()
    ([0, 1, 2], [1, 2, 0])
    """
    x0, x1 = check_pair_points(x0, x1, ("x0", "x1"))
    if x0.shape[:-2] != x1.shape[:-2]:
        raise ValueError(f"x0 and x1 must have the same batch dimensions, got "
                         f"{tuple(x0.shape[:-2])} and {tuple(x1.shape[:-2])}")
    check_generator(generator)
    n, m = x0.shape[-2], x1.shape[-2]
    C = cost_matrix(x0.detach(), x1.detach(), cost)
    if eps is None:
        plan = emd(None, None, C).plan
    else:
        eps = check_positive(eps, "eps")
        plan = sinkhorn(None, None, C, eps, tol=tol, max_iter=max_iter).plan
    if n_pairs is None and eps is None and n == m:
        j = plan.argmax(-1)
        i = torch.arange(n, device=x0.device).expand_as(j)
        return i, j
    k = n if n_pairs is None else check_positive_int(n_pairs, "n_pairs")
    return _sample_plan(plan.detach(), k, generator)


def _times(t, like: torch.Tensor, generator) -> torch.Tensor:
    """Times of shape ``(..., n, 1)``: drawn uniformly on [0, 1], or ``t`` checked."""
    shape = (*like.shape[:-1], 1)
    if t is None:
        return rand(shape, like=like, generator=generator)
    t = check_finite(as_tensor(t, "t", like=like if not isinstance(t, torch.Tensor) else None),
                     "t").to(like.dtype)
    if t.ndim == like.ndim - 1:
        t = t[..., None]
    if t.shape != shape:
        raise ValueError(f"t must have shape {tuple(shape[:-1])} or {tuple(shape)} (one time per "
                         f"pair), got {tuple(t.shape)}")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1]")
    return t


def flow_matching_loss(velocity, x0, x1, t=None, *, sigma: float = 0.0, generator=None):
    r"""The conditional flow-matching loss of a velocity field on pairs ``(x0[k], x1[k])``.

    .. math::

        \mathcal L(v) = \mathbb E_{t, k}\,
        \big\| v(x_t, t) - (x_{1,k} - x_{0,k}) \big\|^2,
        \qquad x_t = (1 - t)\, x_{0,k} + t\, x_{1,k} + \sigma \xi,

    with :math:`t \sim U[0, 1]` and :math:`\xi` standard normal (``sigma = 0``: no noise). The
    pairs are whatever coupling the caller drew: independent (rows in the order given) or
    reordered by :func:`ot_pairing`.

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t)`` with ``x`` of shape (..., n, d) and ``t`` of shape (..., n, 1),
        returning (..., n, d) (a ``torch.nn.Module`` or a function).
    x0, x1 : Tensor or array, shape (..., n, d)
        Paired source and target points (row ``k`` with row ``k``).
    t : Tensor, shape (..., n) or (..., n, 1), optional
        Times in [0, 1]; drawn uniformly when ``None``.
    sigma : float
        Standard deviation of the Gaussian noise around the straight path (Tong et al.'s
        :math:`\sigma`; 0 by default).
    generator : torch.Generator, optional
        Randomness of ``t`` and of the noise.

    Returns
    -------
    Tensor, scalar
        The mean over pairs of the squared error (summed over coordinates); differentiable in
        the parameters of ``velocity``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    >>> float(ob.flow_matching_loss(lambda x, t: torch.ones_like(x), x0, x1))
    0.0
    """
    check_callable(velocity, "velocity")
    x0, x1 = check_paired(x0, x1, ("x0", "x1"))
    sigma = check_nonnegative(sigma, "sigma")
    t = _times(t, x0, generator)
    xt = (1 - t) * x0 + t * x1
    if sigma > 0:
        xt = xt + sigma * randn(x0.shape, like=x0, generator=generator)
    v = velocity(xt, t)
    if not isinstance(v, torch.Tensor) or v.shape != x0.shape:
        raise ValueError(f"velocity must return a tensor of shape {tuple(x0.shape)}, got "
                         f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    return ((v - (x1 - x0)) ** 2).sum(-1).mean()


def sample_flow(velocity, x0, steps: int, *, method: str = "euler", return_path: bool = False):
    r"""Push points along a velocity field from :math:`t = 0` to :math:`t = 1`.

    Integrates :math:`\dot x = v(x, t)` with ``steps`` equal steps of the explicit Euler method
    (``steps`` velocity evaluations) or the midpoint method (two per step), without gradients.

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t)``, as in :func:`flow_matching_loss`.
    x0 : Tensor or array, shape (..., n, d)
        Starting points (samples of the source).
    steps : int
        Number of integration steps.
    method : {"euler", "midpoint"}
        The integrator.
    return_path : bool
        Also return the points after every step.

    Returns
    -------
    Tensor, shape (..., n, d)
        The points at :math:`t = 1`; with ``return_path``, also the path, shape
        (steps + 1, ..., n, d), starting with ``x0``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x1, path = ob.sample_flow(lambda x, t: -x, torch.ones(1, 1), 2, return_path=True)
    >>> x1, path.shape
    (tensor([[0.2500]]), torch.Size([3, 1, 1]))
    """
    check_callable(velocity, "velocity")
    x = check_points(x0, "x0")
    steps = check_positive_int(steps, "steps")
    method = check_choice(method, "method", ("euler", "midpoint"))
    h = 1.0 / steps
    path = [x]

    def v(y, s):
        out = velocity(y, y.new_full((*y.shape[:-1], 1), s))
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            raise ValueError(f"velocity must return a tensor of shape {tuple(y.shape)}")
        return out

    with torch.no_grad():
        for k in range(steps):
            s = k * h
            if method == "euler":
                x = x + h * v(x, s)
            else:
                x = x + h * v(x + 0.5 * h * v(x, s), s + 0.5 * h)
            if return_path:
                path.append(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the flow blew up (non-finite points): velocity is unstable or too "
                         "large for this number of steps")
    return (x, torch.stack(path)) if return_path else x


def path_straightness(path, kind: str = "deviation") -> torch.Tensor:
    r"""How far the paths of a flow are from straight lines.

    For a path :math:`x_0, \dots, x_K` of each point (from :func:`sample_flow` with
    ``return_path=True``):

    * ``"deviation"``: the straightness of Liu et al. (2023),
      :math:`\frac1K \sum_k \mathbb E \| (x_K - x_0) - K (x_{k+1} - x_k) \|^2`, the mean squared
      deviation of the step velocities from the end-to-end velocity (0 for straight paths run
      at constant speed);
    * ``"length_ratio"``: the mean over points of the path length over the end-to-end distance,
      :math:`\sum_k \|x_{k+1} - x_k\| / \|x_K - x_0\|` (1 for straight paths; at least 1).

    Parameters
    ----------
    path : Tensor or array, shape (K + 1, ..., n, d)
        Positions after each step (``K >= 1``).
    kind : {"deviation", "length_ratio"}

    Returns
    -------
    Tensor, scalar

    Examples
    --------
    >>> import torch, otbook as ob
    >>> line = torch.linspace(0, 1, 5)[:, None, None] * torch.ones(5, 1, 2)
    >>> float(ob.path_straightness(line)), float(ob.path_straightness(line, "length_ratio"))
    (0.0, 1.0)
    """
    kind = check_choice(kind, "kind", ("deviation", "length_ratio"))
    p = check_finite(as_tensor(path, "path"), "path")
    if p.ndim < 3 or p.shape[0] < 2:
        raise ValueError(f"path must have shape (K + 1, ..., n, d) with K >= 1, got "
                         f"{tuple(p.shape)}")
    steps = p[1:] - p[:-1]
    chord = p[-1] - p[0]
    if kind == "deviation":
        K = steps.shape[0]
        return ((chord - K * steps) ** 2).sum(-1).mean()
    length = steps.norm(dim=-1).sum(0)
    tiny = torch.finfo(p.dtype).tiny
    return (length / chord.norm(dim=-1).clamp_min(tiny)).mean()


@dataclass
class FlowMatchingFit:
    """What :func:`fit_flow_matching` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained velocity field (the same object as given, trained in place).
    losses : Tensor, shape (n_steps,)
        The flow-matching loss of every step (on that step's pairs).
    pairing : str
        ``"independent"``, ``"exact"`` or ``"entropic"``.
    """

    model: torch.nn.Module
    losses: torch.Tensor
    pairing: str


def _pairs(x0, x1, pairing, eps, generator, tol, max_iter):
    if pairing == "independent":
        return x0, x1
    i, j = ot_pairing(x0, x1, None if pairing == "exact" else eps, generator=generator, tol=tol,
                      max_iter=max_iter)
    return x0[i], x1[j]


def fit_flow_matching(model, x1, *, x0=None, pairing: str = "independent", eps=None,
                      n_steps: int = 1000, batch_size: int = 128, lr: float = 1e-3,
                      sigma: float = 0.0, sinkhorn_tol: float = 1e-4,
                      sinkhorn_max_iter: int = 10_000, generator=None, progress: bool = False
                      ) -> FlowMatchingFit:
    r"""Train a velocity field by conditional flow matching, with independent or OT pairs.

    Each step draws ``batch_size`` target points from ``x1`` (uniformly, with replacement) and as
    many source points (fresh standard normal draws, or rows of ``x0``), pairs them
    (``"independent"``: as drawn; ``"exact"`` or ``"entropic"``: by :func:`ot_pairing`), and
    takes an Adam step on :func:`flow_matching_loss`.

    Parameters
    ----------
    model : torch.nn.Module
        The velocity field ``model(x, t)`` (``x``: (n, d), ``t``: (n, 1)), with the dtype and
        device of ``x1``; trained in place.
    x1 : Tensor or array, shape (N, d)
        Target sample (the data).
    x0 : Tensor or array, shape (N0, d), optional
        Source sample; ``None``: the standard normal distribution, sampled afresh each step.
    pairing : {"independent", "exact", "entropic"}
        The coupling of each mini-batch.
    eps : float, optional
        Absolute entropic regularisation for ``pairing="entropic"`` (required there).
    n_steps, batch_size : int
        Number of optimiser steps, and pairs per step.
    lr : float
        Adam's learning rate.
    sigma : float
        Noise around the straight paths (see :func:`flow_matching_loss`).
    sinkhorn_tol, sinkhorn_max_iter : float, int
        Settings of the entropic pairing's Sinkhorn solves (a pairing needs no more accuracy
        than the sampling noise of a mini-batch: 1e-4 by default).
    generator : torch.Generator, optional
        Randomness of the batches, pairings and times (the model's initialisation is the
        caller's).
    progress : bool
        Show a progress bar.

    Returns
    -------
    FlowMatchingFit

    Examples
    --------
    >>> import torch, otbook as ob
    >>> class Shift(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.b = torch.nn.Parameter(torch.zeros(2))
    ...     def forward(self, x, t):
    ...         return self.b.expand_as(x)
    >>> x1 = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) + 3.0
    >>> fit = ob.fit_flow_matching(Shift(), x1, n_steps=300, lr=0.05,
    ...                            generator=torch.Generator().manual_seed(1))
    >>> fit.model.b.detach().round()   # the mean displacement
    tensor([3., 3.])
    """
    x1 = check_points(x1, "x1")
    if x1.ndim != 2:
        raise ValueError(f"x1 must have shape (N, d), got {tuple(x1.shape)}")
    if x0 is not None:
        x0, x1 = check_pair_points(x0, x1, ("x0", "x1"))
        if x0.ndim != 2:
            raise ValueError(f"x0 must have shape (N0, d), got {tuple(x0.shape)}")
    check_module(model, "model", x1)
    pairing = check_choice(pairing, "pairing", ("independent", "exact", "entropic"))
    if pairing == "entropic":
        if eps is None:
            raise ValueError("eps is required for pairing='entropic'")
        eps = check_positive(eps, "eps")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    sinkhorn_max_iter = check_positive_int(sinkhorn_max_iter, "sinkhorn_max_iter")
    check_generator(generator)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = x1.new_empty(n_steps)
    for step in progress_bar(progress, n_steps, "flow matching", iterable=range(n_steps)):
        b1 = x1[randint(x1.shape[0], (batch_size,), like=x1, generator=generator)]
        if x0 is None:
            b0 = randn(b1.shape, like=x1, generator=generator)
        else:
            b0 = x0[randint(x0.shape[0], (batch_size,), like=x0, generator=generator)]
        b0, b1 = _pairs(b0, b1, pairing, eps, generator, sinkhorn_tol, sinkhorn_max_iter)
        loss = flow_matching_loss(model, b0, b1, sigma=sigma, generator=generator)
        optimizer_step(model, opt, loss)
        losses[step] = loss.detach()
    return FlowMatchingFit(model=model, losses=losses, pairing=pairing)
