"""Optimal transport between Gaussians in closed form (Bures-Wasserstein)."""

from __future__ import annotations

import torch

from ._checks import as_tensor, check_gaussians

__all__ = ["sqrtm_psd", "bures_wasserstein", "gaussian_map", "GaussianMap"]


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
