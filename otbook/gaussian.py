"""Optimal transport between Gaussians in closed form (Bures-Wasserstein)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import (as_tensor, check_covariance, check_finite, check_gaussians,
                      check_positive, check_positive_int, check_weights)
from ._runtime import warn

__all__ = ["sqrtm_psd", "bures_wasserstein", "gaussian_map", "GaussianMap",
           "GaussianBarycenter", "gaussian_barycenter"]


class _SqrtmPSD(torch.autograd.Function):
    r"""The square root of a symmetric PSD matrix, with a gradient that exists at repeated
    eigenvalues (the identity, any isotropic covariance), where differentiating through ``eigh``
    divides by zero.

    With :math:`S = U \operatorname{diag}(\lambda) U^\top` and :math:`r = \sqrt\lambda`, the
    derivative of :math:`X = S^{1/2}` solves :math:`X\,dX + dX\,X = dS`, that is
    :math:`dX_{ij} = dS_{ij} / (r_i + r_j)` in the eigenbasis: no difference of eigenvalues."""

    @staticmethod
    def forward(ctx, S):
        evals, evecs = torch.linalg.eigh(S)
        root = evals.clamp_min(0.0).sqrt()
        ctx.save_for_backward(evecs, root)
        return (evecs * root[..., None, :]) @ evecs.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        U, r = ctx.saved_tensors
        Ut = U.transpose(-1, -2)
        G = Ut @ (0.5 * (grad + grad.transpose(-1, -2))) @ U
        denom = (r[..., :, None] + r[..., None, :]).clamp_min(torch.finfo(r.dtype).tiny)
        return U @ (G / denom) @ Ut


def sqrtm_psd(S: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Square root (or inverse square root) of a symmetric PSD matrix, batched, by ``eigh``
    (the square root's gradient is defined at repeated eigenvalues)."""
    if not inverse:
        return _SqrtmPSD.apply(S)
    evals, evecs = torch.linalg.eigh(S)
    evals = evals.clamp_min(0.0)
    if bool((evals <= torch.finfo(S.dtype).eps * evals.amax(-1, keepdim=True)).any()):
        raise ValueError("the covariance is singular, so it has no inverse square root")
    return (evecs * evals.rsqrt()[..., None, :]) @ evecs.transpose(-1, -2)


def bures_wasserstein(m1, S1, m2, S2) -> torch.Tensor:
    r"""Squared 2-Wasserstein distance between :math:`N(m_1, S_1)` and :math:`N(m_2, S_2)`.

    .. math::

        W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr} S_1 + \operatorname{tr} S_2
                - 2 \operatorname{tr}\big(S_1^{1/2} S_2 S_1^{1/2}\big)^{1/2}.

    Parameters
    ----------
    m1, m2 : Tensor or array, shape (..., d)
        Means.
    S1, S2 : Tensor or array, shape (..., d, d)
        Covariances, symmetric positive semi-definite (checked).

    Returns
    -------
    Tensor, shape (...)
        Batched over leading dimensions, clamped at 0 against round-off; differentiable,
        including at isotropic covariances. The computation runs in float64 whatever the
        inputs' dtype (d x d matrices: cheap), so float32 inputs lose no accuracy to the
        cancellation of the trace terms.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> float(ob.bures_wasserstein(torch.zeros(2), I, torch.ones(2), 4 * I))
    4.0
    """
    m1, S1, m2, S2 = check_gaussians(m1, S1, m2, S2)
    dtype = S1.dtype
    m1, S1, m2, S2 = (t.double() for t in (m1, S1, m2, S2))
    r1 = sqrtm_psd(S1)
    cross = torch.linalg.eigvalsh(r1 @ S2 @ r1).clamp_min(0.0).sqrt().sum(-1)
    tr = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    return (((m1 - m2) ** 2).sum(-1) + tr - 2.0 * cross).clamp_min(0.0).to(dtype)


class GaussianMap:
    r"""The Brenier (Monge) map between two Gaussians, :math:`T(x) = m_2 + A (x - m_1)`.

    ``A`` is symmetric positive definite, so :math:`T` is the gradient of a convex quadratic.
    """

    def __init__(self, A: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor):
        self.A, self.m1, self.m2 = A, m1, m2

    def __call__(self, x) -> torch.Tensor:
        x = as_tensor(x, "x", like=self.A)
        return self.m2 + (x - self.m1) @ self.A.transpose(-1, -2)

    def __repr__(self) -> str:
        return f"GaussianMap(d={self.A.shape[-1]})"


def gaussian_map(m1, S1, m2, S2) -> GaussianMap:
    r"""The optimal map from :math:`N(m_1, S_1)` to :math:`N(m_2, S_2)` for the squared cost.

    .. math::

        A = S_1^{-1/2} \big(S_1^{1/2} S_2 S_1^{1/2}\big)^{1/2} S_1^{-1/2},
        \qquad T(x) = m_2 + A (x - m_1).

    ``S1`` must be non-singular (a ``ValueError`` otherwise).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> T = ob.gaussian_map(torch.zeros(2), I, torch.ones(2), 4 * I)
    >>> T(torch.zeros(1, 2, dtype=torch.float64))
    tensor([[1., 1.]], dtype=torch.float64)
    """
    m1, S1, m2, S2 = check_gaussians(m1, S1, m2, S2)
    r1 = sqrtm_psd(S1)
    ir1 = sqrtm_psd(S1, inverse=True)
    A = ir1 @ sqrtm_psd(r1 @ S2 @ r1) @ ir1
    A = 0.5 * (A + A.transpose(-1, -2))
    return GaussianMap(A, m1, m2)


@dataclass
class GaussianBarycenter:
    """The Wasserstein barycenter of Gaussians, :math:`N(m, S)`, and how it was found.

    Attributes
    ----------
    mean : Tensor, shape (..., d)
    cov : Tensor, shape (..., d, d)
    n_iter : int
        Fixed-point iterations run (the largest over a batch).
    converged : bool or Tensor of bool
        Whether the relative change of ``cov`` fell below ``tol`` (per problem for a batch).
    """

    mean: torch.Tensor
    cov: torch.Tensor
    n_iter: int
    converged: bool | torch.Tensor

    def __repr__(self) -> str:
        return (f"GaussianBarycenter(d={self.cov.shape[-1]}, n_iter={self.n_iter}, "
                f"converged={self.converged})")


def _check_family(means, covs, weights):
    """Means ``(..., K, d)``, covariances ``(..., K, d, d)`` and weights ``(..., K)`` summing
    to one (``None``: uniform)."""
    covs = check_covariance(covs, "covs")
    if covs.ndim < 3:
        raise ValueError(f"covs must have shape (K, d, d) (one covariance per Gaussian), got "
                         f"{tuple(covs.shape)}")
    K, d = covs.shape[-3], covs.shape[-1]
    means = check_finite(as_tensor(means, "means", like=covs), "means").to(covs.dtype)
    if means.ndim < 2 or means.shape[-2:] != (K, d):
        raise ValueError(f"means must have shape (K, d) = ({K}, {d}) to match covs, got "
                         f"{tuple(means.shape)}")
    if weights is not None and as_tensor(weights, "weights").shape[-1:] != (K,):
        raise ValueError(f"weights must have one entry per Gaussian ({K}), got shape "
                         f"{tuple(as_tensor(weights, 'weights').shape)}")
    w = check_weights(weights, K, "weights", like=covs)
    return means, covs, w / w.sum(-1, keepdim=True)


def gaussian_barycenter(means, covs, weights=None, *, tol: float = 1e-10,
                        max_iter: int = 1000) -> GaussianBarycenter:
    r"""The 2-Wasserstein barycenter of Gaussians :math:`N(m_k, S_k)` with weights :math:`w_k`.

    The barycenter of Gaussians is the Gaussian :math:`N(\bar m, S)` with
    :math:`\bar m = \sum_k w_k m_k` and :math:`S` the fixed point of

    .. math::

        S \leftarrow S^{-1/2} \Big(\sum_k w_k \big(S^{1/2} S_k S^{1/2}\big)^{1/2}\Big)^2
        S^{-1/2}

    (Álvarez-Esteban et al. 2016), iterated from :math:`\sum_k w_k S_k` until the relative
    change of :math:`S` (Frobenius norm) is below ``tol``. When the covariances commute the
    answer is :math:`S^{1/2} = \sum_k w_k S_k^{1/2}`; in 1-D, :math:`\sigma = \sum_k w_k
    \sigma_k`.

    Parameters
    ----------
    means : Tensor or array, shape (..., K, d)
        The means; leading dimensions are a batch of problems.
    covs : Tensor or array, shape (..., K, d, d)
        The covariances, symmetric positive semi-definite (checked); at least one of each
        problem positive definite.
    weights : Tensor or array, shape (..., K), optional
        Non-negative barycentric weights (default uniform), normalised to sum to one.
    tol : float
        Stopping tolerance on the relative change of the covariance.
    max_iter : int
        Iteration budget (a ``RuntimeWarning`` when it runs out).

    Returns
    -------
    GaussianBarycenter
        ``mean``, ``cov``, ``n_iter``, ``converged``. Computed in float64, returned in the
        inputs' dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> covs = torch.stack([torch.eye(2), 9 * torch.eye(2)]).double()
    >>> bar = ob.gaussian_barycenter(torch.zeros(2, 2), covs)
    >>> bar.cov, bar.converged
    (tensor([[4., 0.],
            [0., 4.]], dtype=torch.float64), True)
    """
    means, covs, w = _check_family(means, covs, weights)
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    dtype = covs.dtype
    covs, w = covs.double(), w.double()
    mean = (w[..., None] * means.double()).sum(-2)
    S = (w[..., None, None] * covs).sum(-3)
    done = torch.zeros(S.shape[:-2], dtype=torch.bool, device=S.device)
    for it in range(1, max_iter + 1):
        root, inv = sqrtm_psd(S), sqrtm_psd(S, inverse=True)
        T = (w[..., None, None] * sqrtm_psd(root[..., None, :, :] @ covs
                                            @ root[..., None, :, :])).sum(-3)
        new = inv @ T @ T @ inv
        new = 0.5 * (new + new.transpose(-1, -2))
        change = torch.linalg.matrix_norm(new - S) / torch.linalg.matrix_norm(S)
        S = torch.where(done[..., None, None], S, new)
        done = done | (change <= tol)
        if bool(done.all()):
            break
    if not bool(done.all()):
        warn(f"gaussian_barycenter did not converge in {max_iter} iterations (relative change "
             f"{float(change.max()):.2e} > tol={tol:g}); raise max_iter")
    converged = bool(done.all()) if done.ndim == 0 else done
    return GaussianBarycenter(mean.to(dtype), S.to(dtype), it, converged)
