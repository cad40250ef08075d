r"""Sliced Wasserstein: optimal transport through one-dimensional projections.

.. math::

    \mathrm{SW}_p^p(\alpha, \beta) = \int_{\mathbb S^{d-1}} \W_p^p(\theta_\sharp\alpha,
    \theta_\sharp\beta)\, d\sigma(\theta),

with :math:`\sigma` the uniform measure on the sphere and :math:`\theta_\sharp\alpha` the law of
:math:`\langle \theta, X \rangle`. Each one-dimensional problem is solved in closed form by
sorting (:func:`otbook.wasserstein_1d`, batched over the directions), and the integral is a Monte
Carlo average over random directions: :math:`O(L (n + m)(d + \log(n + m)))` for ``L``
directions instead of the cubic cost of exact OT.
"""

from __future__ import annotations

import torch

from ._checks import (broadcast_shapes, check_pair_points, check_positive_int, check_same_mass,
                      check_weights)
from ._runtime import randn
from .exact import wasserstein_1d

__all__ = ["sliced_wasserstein", "random_directions"]


def random_directions(d: int, n_projections: int, *, like: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_projections`` directions drawn uniformly on the unit sphere of :math:`\\R^d`.

    Normalised Gaussian vectors, returned as the columns of a ``(d, n_projections)`` matrix with
    the dtype and device of ``like``. With a ``generator``, they are drawn on the generator's
    device, in float64, and then moved to the device and dtype of ``like`` (so a CPU generator
    gives the same directions on every device and in every dtype).

    Examples
    --------
    >>> import torch
    >>> from otbook.sliced import random_directions
    >>> th = random_directions(3, 5, like=torch.zeros(1), generator=torch.Generator().manual_seed(0))
    >>> th.shape, bool(torch.allclose(th.norm(dim=0), torch.ones(5)))
    (torch.Size([3, 5]), True)
    """
    d = check_positive_int(d, "d")
    n_projections = check_positive_int(n_projections, "n_projections")
    # drawn in float64 whatever the data's dtype: a generator gives the same directions for
    # float32 and float64 data
    z = randn((d, n_projections), like.new_empty(0, dtype=torch.float64), generator).to(like.dtype)
    return z / z.norm(dim=0, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)


def sliced_wasserstein(x, y, *, n_projections: int, p: float = 2, a=None, b=None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Sliced Wasserstein cost :math:`\mathrm{SW}_p^p` between two weighted point clouds.

    A Monte Carlo estimate over ``n_projections`` directions drawn uniformly on the sphere:
    :math:`\frac1L \sum_{l=1}^{L} \W_p^p(\theta_{l\sharp}\alpha, \theta_{l\sharp}\beta)`, each
    term computed exactly from the weighted quantile functions (:func:`otbook.wasserstein_1d`).

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d) or (n,)
        Source points (leading dimensions are a batch of problems).
    y : Tensor or array, shape (..., m, d) or (m,)
        Target points.
    n_projections : int
        Number of random directions ``L`` (at least 1). The Monte Carlo error decreases like
        :math:`L^{-1/2}`.
    p : float
        Exponent, at least 1.
    a, b : Tensor or array, shapes (..., n) and (..., m), optional
        Weights (default uniform), non-negative with the same total mass.
    generator : torch.Generator, optional
        Source of the directions (default: torch's global generator on the inputs' device).

    Returns
    -------
    Tensor, shape (...)
        :math:`\mathrm{SW}_p^p` (not its p-th root), differentiable in ``x`` and ``y``.

    Notes
    -----
    In one dimension the only directions are :math:`\pm 1`, so the result equals
    :func:`otbook.wasserstein_1d` exactly. For a translation,
    :math:`\mathrm{SW}_2^2(\alpha, \alpha(\cdot - t)) = \|t\|^2 / d` in expectation over the
    directions (and :math:`\W_2^2 = \|t\|^2`): slicing loses a factor of the dimension.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(100, 2, dtype=torch.float64)
    >>> gen = torch.Generator().manual_seed(0)
    >>> sw = ob.sliced_wasserstein(x, x + torch.tensor([3.0, 0.0], dtype=torch.float64),
    ...                            n_projections=2000, generator=gen)
    >>> abs(float(sw) - 9.0 / 2) < 0.3        # |t|^2 / d, up to Monte Carlo error
    True
    """
    x, y = check_pair_points(x, y)
    n_projections = check_positive_int(n_projections, "n_projections")
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    a = check_weights(a, x.shape[-2], "a", like=x, batch_shape=batch)
    b = check_weights(b, y.shape[-2], "b", like=x, batch_shape=batch)
    check_same_mass(a, b)
    theta = random_directions(x.shape[-1], n_projections, like=x, generator=generator)
    # centred jointly (SW is invariant to a common translation): the projections of float32
    # data far from the origin keep their digits
    c = 0.5 * (x.mean(-2, keepdim=True) + y.mean(-2, keepdim=True)).detach()
    xp = ((x - c) @ theta).transpose(-1, -2)  # (..., L, n): one 1-D problem per direction
    yp = ((y - c) @ theta).transpose(-1, -2)  # (..., L, m)
    return wasserstein_1d(xp, yp, a.unsqueeze(-2), b.unsqueeze(-2), p=p).mean(-1)
