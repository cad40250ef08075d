r"""Kernel discrepancies: the maximum mean discrepancy (MMD) and the energy distance.

For a kernel :math:`k`, the squared MMD between :math:`\alpha` and :math:`\beta` is the squared
distance between their mean embeddings in the kernel's feature space,

.. math::

    \mathrm{MMD}_k^2(\alpha, \beta) = \E\, k(X, X') + \E\, k(Y, Y') - 2\, \E\, k(X, Y),
    \qquad X, X' \sim \alpha,\ Y, Y' \sim \beta \text{ independent}.

With the distance kernel :math:`k(x, y) = -\|x - y\|` it is the energy distance of Székely and
Rizzo, :math:`2\E\|X - Y\| - \E\|X - X'\| - \E\|Y - Y'\|`.

Sums over kernel matrices are computed block by block (memory linear in the number of points
times the block size); under autograd each block is recomputed in the backward pass instead of
being stored (``torch.utils.checkpoint``).
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from ._checks import (broadcast_shapes, check_finite, check_gaussians, check_pair_points,
                      check_positive, check_same_mass, check_weights)
from ._runtime import block_rows
from ._runtime import memory_budget as runtime_memory_budget
from .costs import check_magnitude, pairwise

__all__ = ["mmd", "mmd_gaussians", "kernel_matrix", "KERNELS"]

KERNELS = ("gaussian", "laplacian", "imq", "energy")


def _bandwidths(bandwidth) -> list[float]:
    """One bandwidth or several (a multi-scale kernel), each a finite number > 0."""
    if isinstance(bandwidth, (list, tuple, np.ndarray, torch.Tensor)):
        values = (bandwidth.detach().cpu().flatten().tolist() if isinstance(bandwidth, torch.Tensor)
                  else np.asarray(bandwidth, dtype=object).flatten().tolist())
        if not values:
            raise ValueError("bandwidth must be a number > 0 or a non-empty list of them")
        return [check_positive(h.item() if isinstance(h, np.generic) else h, "bandwidth") for h in values]
    return [check_positive(bandwidth, "bandwidth")]


def _check_kernel(kernel):
    if callable(kernel):
        return kernel
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNELS)} or a callable, got {kernel!r}")
    return kernel


def _kernel(x: torch.Tensor, y: torch.Tensor, kernel, hs) -> torch.Tensor:
    """The kernel matrix between two blocks of points (a mean over the bandwidths ``hs``)."""
    if callable(kernel):
        K = kernel(x, y)
        if not isinstance(K, torch.Tensor):
            raise TypeError(f"the kernel callable must return a torch.Tensor, got {type(K).__name__}")
        if K.shape[-2:] != (x.shape[-2], y.shape[-2]):
            raise ValueError(f"the kernel callable must return a matrix of shape "
                             f"({x.shape[-2]}, {y.shape[-2]}), got {tuple(K.shape)}")
        return K
    if kernel == "energy":
        return -pairwise(x, y, "euclidean")
    if kernel == "laplacian":
        D = pairwise(x, y, "euclidean")
        return sum(torch.exp(-D / h) for h in hs) / len(hs)
    D2 = pairwise(x, y, "sqeuclidean")
    if kernel == "gaussian":
        return sum(torch.exp(D2 / (-2.0 * h * h)) for h in hs) / len(hs)
    return sum(torch.rsqrt(1.0 + D2 / (h * h)) for h in hs) / len(hs)  # imq


def kernel_matrix(x, y, *, kernel="gaussian", bandwidth=1.0) -> torch.Tensor:
    r"""The kernel matrix :math:`K_{ij} = k(x_i, y_j)` of one of :func:`mmd`'s kernels.

    Parameters
    ----------
    x, y : Tensor or array, shapes (..., n, d) and (..., m, d)
        Points.
    kernel, bandwidth
        As in :func:`mmd`.

    Returns
    -------
    Tensor, shape (..., n, m)

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> ob.kernel_matrix(x, x, kernel="energy")
    tensor([[-0., -1.],
            [-1., -0.]], dtype=torch.float64)
    """
    x, y = check_pair_points(x, y)
    return check_finite(_kernel(x, y, _check_kernel(kernel), _bandwidths(bandwidth)), "kernel(x, y)")


def _weighted_sum(x, y, wx, wy, kernel, hs, block, diagonal):
    """sum_ij wx_i K_ij wy_j (and, for x = y, sum_i wx_i wy_i K_ii), block by block over rows."""
    n = x.shape[-2]
    use_ckpt = torch.is_grad_enabled() and block < n and any(
        t.requires_grad for t in (x, y, wx, wy))

    def part(xs, wxs, start):
        K = _kernel(xs, y, kernel, hs)
        check_finite(K, "kernel(x, y)")
        total = (wxs[..., None, :] @ K @ wy[..., :, None])[..., 0, 0]
        if not diagonal:
            return total, torch.zeros_like(total)
        d = torch.diagonal(K[..., :, start:start + xs.shape[-2]], dim1=-2, dim2=-1)
        return total, (wxs * wy[..., start:start + xs.shape[-2]] * d).sum(-1)

    total = diag = 0.0
    for s in range(0, n, block):
        xs, wxs = x[..., s:s + block, :], wx[..., s:s + block]
        if use_ckpt:
            t, d = checkpoint(part, xs, wxs, s, use_reentrant=False)
        else:
            t, d = part(xs, wxs, s)
        total = total + t
        diag = diag + d
    return total, diag


def mmd(x, y, *, kernel: str | Callable = "gaussian", bandwidth=1.0, a=None, b=None,
        unbiased: bool = False, memory_budget: float | None = None) -> torch.Tensor:
    r"""Squared maximum mean discrepancy between two weighted point clouds.

    .. math::

        \mathrm{MMD}^2 = \sum_{i,i'} a_i a_{i'} k(x_i, x_{i'})
        + \sum_{j,j'} b_j b_{j'} k(y_j, y_{j'}) - 2 \sum_{i,j} a_i b_j k(x_i, y_j).

    The default is this **V-statistic**: the exact squared MMD between the two empirical
    measures, non-negative, but a biased estimate of the population value (by
    :math:`O(1/n + 1/m)`). ``unbiased=True`` gives the **U-statistic**, which drops the
    diagonal terms :math:`i = i'` and :math:`j = j'` from the self-sums (and rescales them):
    unbiased for independent samples, and it can be negative.

    Parameters
    ----------
    x, y : Tensor or array, shapes (..., n, d) and (..., m, d)
        Points (leading dimensions are a batch).
    kernel : {"gaussian", "laplacian", "imq", "energy"} or callable
        ``"gaussian"``: :math:`\exp(-\|x - y\|^2 / (2 h^2))`; ``"laplacian"``:
        :math:`\exp(-\|x - y\| / h)`; ``"imq"`` (inverse multiquadric):
        :math:`(1 + \|x - y\|^2 / h^2)^{-1/2}`; ``"energy"`` (the distance kernel):
        :math:`-\|x - y\|`, which makes :math:`\mathrm{MMD}^2` the energy distance (``bandwidth``
        is not used). A callable takes two point tensors ``(..., n, d)``, ``(..., m, d)`` and
        returns the ``(..., n, m)`` kernel matrix.
    bandwidth : float or sequence of floats
        :math:`h > 0`. A sequence averages the kernels over several bandwidths (a multi-scale
        kernel).
    a, b : Tensor or array, optional
        Non-negative weights (default uniform, each summing to 1). The energy kernel needs the
        same total mass (it is only conditionally positive definite).
    unbiased : bool
        Use the U-statistic (for weights, :math:`\frac{A^2}{A^2 - \sum_i a_i^2}
        \sum_{i \ne i'} a_i a_{i'} k(x_i, x_{i'})` with :math:`A = \sum_i a_i`).
    memory_budget : float or None
        Bytes a block of the kernel matrix and its temporaries may take (``None``: the device's
        default, see :func:`~otbook.sinkhorn`); the matrices are processed a block of rows at a
        time, recomputed in the backward pass rather than stored.

    Returns
    -------
    Tensor, shape (...)
        Differentiable in ``x``, ``y``, ``a`` and ``b`` (autograd). The V-statistic is clamped
        at 0 against round-off.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> float(ob.mmd(x, x + 1.0, kernel="energy"))    # 2 E|X-Y| - E|X-X'| - E|Y-Y'|
    1.0
    """
    x, y = check_pair_points(x, y)
    check_magnitude(x, y)
    kernel = _check_kernel(kernel)
    hs = _bandwidths(bandwidth)
    budget = runtime_memory_budget(memory_budget, x)
    if not isinstance(unbiased, (bool, numbers.Integral)):
        raise TypeError(f"unbiased must be a bool, got {type(unbiased).__name__}")
    n, m = x.shape[-2], y.shape[-2]
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    a = check_weights(a, n, "a", like=x, batch_shape=batch)
    b = check_weights(b, m, "b", like=x, batch_shape=batch)
    if kernel == "energy":
        check_same_mass(a, b)
    nb = int(torch.tensor(batch).prod()) if batch else 1
    terms = []
    for p, q, wp, wq, self_term in ((x, x, a, a, True), (y, y, b, b, True), (x, y, a, b, False)):
        # a block and about three temporaries of its size (distances, kernel, weighted kernel)
        block = block_rows(p.shape[-2], 4 * q.shape[-2], p, budget, batch=nb)
        total, diag = _weighted_sum(p, q, wp, wq, kernel, hs, block, self_term and unbiased)
        if self_term and unbiased:
            mass2 = wp.sum(-1) ** 2
            sq = (wp * wp).sum(-1)
            if bool((mass2 - sq <= 1e-12 * mass2).any()):
                raise ValueError("the unbiased estimator needs at least two points with positive "
                                 "weight on each side")
            total = (total - diag) * mass2 / (mass2 - sq)
        terms.append(total)
    value = terms[0] + terms[1] - 2.0 * terms[2]
    return value if unbiased else value.clamp_min(0.0)


def mmd_gaussians(m1, S1, m2, S2, *, bandwidth: float = 1.0) -> torch.Tensor:
    r"""Squared MMD between two Gaussians for the Gaussian kernel, in closed form.

    For :math:`Z \sim N(\mu, \Sigma)`,
    :math:`\E \exp(-\|Z\|^2 / (2h^2)) = \det(I + \Sigma / h^2)^{-1/2}
    \exp(-\tfrac12 \mu^\top (\Sigma + h^2 I)^{-1} \mu)`; apply it to :math:`X - X'`,
    :math:`Y - Y'` and :math:`X - Y` with :math:`X \sim N(m_1, S_1)`, :math:`Y \sim N(m_2, S_2)`:

    .. math::

        \mathrm{MMD}^2 = \det(I + 2S_1/h^2)^{-1/2} + \det(I + 2S_2/h^2)^{-1/2}
        - 2 \det(I + (S_1 + S_2)/h^2)^{-1/2}
        e^{-\frac12 (m_1 - m_2)^\top (S_1 + S_2 + h^2 I)^{-1} (m_1 - m_2)}.

    Parameters
    ----------
    m1, m2 : Tensor or array, shape (..., d)
    S1, S2 : Tensor or array, shape (..., d, d)
        Covariances, symmetric positive semi-definite (checked).
    bandwidth : float
        :math:`h > 0`, as in :func:`mmd` with ``kernel="gaussian"``.

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, otbook as ob
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> z = torch.zeros(2, dtype=torch.float64)
    >>> float(ob.mmd_gaussians(z, I, z, I))
    0.0
    """
    h = check_positive(bandwidth, "bandwidth")
    m1, S1, m2, S2 = check_gaussians(m1, S1, m2, S2)
    eye = torch.eye(S1.shape[-1], dtype=S1.dtype, device=S1.device)

    def expected_kernel(mu, S):
        quad = (mu[..., None, :] @ torch.linalg.solve(S + h * h * eye, mu[..., :, None]))[..., 0, 0]
        return torch.linalg.det(eye + S / (h * h)).rsqrt() * torch.exp(-0.5 * quad)

    zero = torch.zeros_like(m1)
    value = expected_kernel(zero, 2 * S1) + expected_kernel(zero, 2 * S2) - 2 * expected_kernel(m1 - m2, S1 + S2)
    return value.clamp_min(0.0)
