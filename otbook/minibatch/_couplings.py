"""The problem on the ``k_x x k_y`` table of batches: couplings of the batch masses (the
north-west corner, the optimum over the evaluated pairs) and the cheap lower proxy of the table
that guides which pairs to evaluate."""

from __future__ import annotations

import numpy as np
import torch

from .._runtime import WarningSummary
from ..costs import cost_matrix
from ..exact import emd

__all__ = ["north_west", "support", "restricted_coupling", "mean_bound"]


def north_west(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The north-west-corner coupling of two mass vectors (a spanning-tree support): fill the
    table from the top left, each entry taking as much mass as its row and column have left.

    >>> north_west(np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.6]))
    array([[0.4, 0.1],
           [0. , 0.3],
           [0. , 0.2]])
    """
    G = np.zeros((len(alpha), len(beta)))
    ra, rb = alpha.astype(float).copy(), beta.astype(float).copy()
    tol = 1e-12 * max(alpha.sum(), beta.sum())
    i = j = 0
    while i < len(alpha) and j < len(beta):
        t = min(ra[i], rb[j])
        G[i, j] = t
        ra[i] -= t
        rb[j] -= t
        if ra[i] <= tol:
            i += 1
        if rb[j] <= tol:
            j += 1
    return G


def support(plan: torch.Tensor, rel: float = 1e-14) -> torch.Tensor:
    """Where ``plan`` carries mass (relative round-off counts as none)."""
    return plan > rel * float(plan.sum())


def restricted_coupling(alpha, beta, M, evaluated, summary: WarningSummary):
    """Optimal coupling of the batches using evaluated pairs only, its duals ``(u, v)``, and
    whether the solve converged.

    Pairs not evaluated get a prohibitive cost; the support holds a feasible coupling, so the
    optimum puts no mass on them (checked, with a larger penalty if ever needed).
    """
    Mn = M.detach().cpu().double()
    known = Mn[evaluated]
    scale = float(known.abs().max()) + 1.0
    for factor in (1e6, 1e10, 1e14):
        table = torch.where(evaluated, Mn, torch.full_like(Mn, factor * scale))
        with summary:
            res = emd(alpha.detach().cpu().double(), beta.detach().cpu().double(), table)
        leak = float(res.plan[~evaluated].sum()) if bool((~evaluated).any()) else 0.0
        if leak <= 1e-12 * float(alpha.sum()):
            plan = torch.where(evaluated, res.plan, torch.zeros_like(res.plan))
            return plan, res.f, res.g, bool(res.converged)
    raise RuntimeError("the evaluated batch pairs hold no coupling of the batch masses")


def mean_bound(x, y, a, b, src, tgt, alpha, beta, cost):
    """``c(mean A_i, mean B_j) <= M_ij`` (Jensen, for jointly convex costs): a free proxy."""
    tiny = torch.finfo(x.dtype).tiny
    mx = torch.stack([(a[A, None] * x[A]).sum(0) / max(float(alpha[i]), tiny)
                      for i, A in enumerate(src)])
    my = torch.stack([(b[B, None] * y[B]).sum(0) / max(float(beta[j]), tiny)
                      for j, B in enumerate(tgt)])
    return cost_matrix(mx, my, cost).detach().cpu().double()
