"""Exact optimal transport: POT's network simplex, and 1-D OT in closed form."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import torch

from ._checks import (as_tensor, broadcast_shapes, check_at_least, check_cost, check_finite,
                      check_positive_int, check_same_mass, check_weights)
from ._runtime import warn
from .result import OTResult

__all__ = ["emd", "wasserstein_1d"]


def _envelope_value(P, C, a, b, f, g):
    """``<P, C>`` with the envelope-theorem gradients: d/dC = P, d/da = f, d/db = g."""
    value = (P.detach() * C).sum((-2, -1))
    if a.requires_grad:
        value = value + (f.detach() * (a - a.detach())).sum(-1)
    if b.requires_grad:
        value = value + (g.detach() * (b - b.detach())).sum(-1)
    return value


def _network_simplex(a, b, C, max_iter):
    """POT's network simplex on a problem scaled to unit mass and unit cost (float64 NumPy):
    weights given as raw counts (1e9) or as tiny masses (1e-300) would otherwise give an empty
    plan, NaN potentials or a crash inside the solver. Returns ``(P, f, g, converged)``."""
    mass = a.sum()
    scale = float(np.abs(C).max()) or 1.0
    # identical masses for POT's own check: b rescaled to the exact mass of a
    a1, b1 = a / mass, b / b.sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P, log = ot.emd(a1, b1, C / scale, numItermax=int(max_iter), log=True)
    converged = log.get("result_code", 1) == 1 and not any(
        "numItermax" in str(w.message) or "infeasible" in str(w.message).lower() for w in caught
    )
    return P * mass, log["u"] * scale, log["v"] * scale, converged


def emd(a, b, C, *, max_iter: int = 10_000_000) -> OTResult:
    r"""Exact optimal transport by POT's network simplex.

    Solves :math:`\min_{P \geq 0,\, P 1 = a,\, P^\top 1 = b} \langle P, C \rangle` and its dual
    :math:`\max_{f_i + g_j \le C_{ij}} \langle f, a \rangle + \langle g, b \rangle`.

    Parameters
    ----------
    a : Tensor or array, shape (..., n), or None
        Source weights (``None``: uniform). Non-negative, same total mass as ``b``.
    b : Tensor or array, shape (..., m), or None
        Target weights (``None``: uniform). The total masses may differ by round-off (a relative
        1e-6); ``b`` is then rescaled to the mass of ``a``.
    C : Tensor or array, shape (..., n, m)
        Cost matrix. Leading dimensions (of ``C``, ``a`` and ``b``, broadcast together) are a
        batch, solved one problem at a time; results have the batch shape.
    max_iter : int
        Iteration budget of the network simplex.

    Returns
    -------
    OTResult
        ``plan``, ``value`` (= ``value_linear`` = :math:`\langle P, C\rangle`), the dual potentials
        ``f`` and ``g`` (centred as POT does), ``converged`` and ``marginal_error``.
        ``value`` is differentiable: its gradient is ``plan`` for ``C``, ``f`` for ``a`` and
        ``g`` for ``b`` (the envelope theorem; the plan itself carries no gradient).

    Notes
    -----
    The solve runs on the CPU in float64 (POT's C++ solver) whatever the inputs' device, on the
    problem scaled to unit mass and unit largest cost (so weights may be raw counts); the
    result is scaled back and returned on the inputs' device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> res = ob.emd(None, None, C)
    >>> res.plan
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    >>> float(res.value), res.converged
    (0.0, True)
    """
    C = check_cost(C, "C")
    n, m = C.shape[-2:]
    batch = C.shape[:-2]
    a = check_weights(a, n, "a", like=C, batch_shape=batch)
    b = check_weights(b, m, "b", like=C, batch_shape=batch)
    check_same_mass(a, b)
    max_iter = check_positive_int(max_iter, "max_iter")
    batch = broadcast_shapes(batch, a.shape[:-1], b.shape[:-1], what="batch dimensions of a, b, C")

    Cn = C.detach().expand(*batch, n, m).cpu().double().numpy().reshape(-1, n, m)
    an = a.detach().expand(*batch, n).cpu().double().numpy().reshape(-1, n)
    bn = b.detach().expand(*batch, m).cpu().double().numpy().reshape(-1, m)
    plans, fs, gs, ok = [], [], [], []
    for k in range(Cn.shape[0]):
        P, f, g, converged = _network_simplex(an[k], bn[k], Cn[k], max_iter)
        plans.append(P)
        fs.append(f)
        gs.append(g)
        ok.append(converged)

    def back(arrs, shape):
        return torch.as_tensor(np.stack(arrs).reshape(shape), dtype=C.dtype, device=C.device)

    P = back(plans, (*batch, n, m))
    f = back(fs, (*batch, n))
    g = back(gs, (*batch, m))
    value = _envelope_value(P, C, a.expand(*batch, n), b.expand(*batch, m), f, g)
    marg = (P.sum(-1) - a).abs().sum(-1) + (P.sum(-2) - b).abs().sum(-1)
    converged = all(ok) if batch == () else torch.tensor(ok, device=C.device).reshape(batch)
    if not all(ok):
        warn("emd: the network simplex stopped before optimality (raise max_iter); the result "
             "is not optimal")
    return OTResult(
        plan=P,
        value=value,
        value_linear=value,
        f=f,
        g=g,
        n_iter=0,
        converged=converged,
        marginal_error=marg.detach(),
        extra={"solver": "pot.emd"},
    )


def wasserstein_1d(x, y, a=None, b=None, p: float = 2) -> torch.Tensor:
    r"""The p-Wasserstein cost :math:`W_p^p` between two weighted measures on the line.

    Computed in closed form from the quantile functions,
    :math:`W_p^p = \int_0^M |F_x^{-1}(t) - F_y^{-1}(t)|^p \, dt`, by sorting
    (:math:`O((n + m) \log(n + m))`).

    Parameters
    ----------
    x : Tensor or array, shape (..., n)
        Source positions (leading dimensions are a batch of problems).
    y : Tensor or array, shape (..., m)
        Target positions.
    a, b : Tensor or array, shape (..., n) and (..., m), optional
        Weights (default uniform). Same total mass ``M``.
    p : float
        Exponent, at least 1.

    Returns
    -------
    Tensor, shape (...)
        :math:`W_p^p` (not its p-th root), differentiable in ``x`` and ``y``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([0.0, 1.0, 2.0])
    >>> float(ob.wasserstein_1d(x, x + 3.0, p=2))
    9.0
    """
    p = check_at_least(p, "p", 1.0)
    if isinstance(y, torch.Tensor) and not isinstance(x, torch.Tensor):
        y = as_tensor(y, "y")
        x = as_tensor(x, "x", like=y)
    else:
        x = as_tensor(x, "x")
        y = as_tensor(y, "y", like=x if not isinstance(y, torch.Tensor) else None)
    for t, name in ((x, "x"), (y, "y")):
        if t.ndim == 0:
            raise ValueError(f"{name} must have shape (..., n), got a scalar")
        if t.shape[-1] == 0:
            raise ValueError(f"{name} is empty")
        check_finite(t, name)
    if x.dtype != y.dtype:
        raise TypeError(f"x has dtype {x.dtype} but y has dtype {y.dtype}; use one dtype")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    n, m = x.shape[-1], y.shape[-1]
    if n == 1 and m == 1 and x.ndim > 1 and x.shape[-2] > 1:
        raise ValueError(f"x has shape {tuple(x.shape)}: positions run along the last axis, so "
                         "this is a batch of one-point problems; for one problem of "
                         f"{x.shape[-2]} points pass x[..., 0] (a column of positions)")
    batch = broadcast_shapes(x.shape[:-1], y.shape[:-1])
    a = check_weights(a, n, "a", like=x, batch_shape=batch)
    b = check_weights(b, m, "b", like=x, batch_shape=batch)
    check_same_mass(a, b)
    x = x.expand(*batch, n)
    y = y.expand(*batch, m)
    a = a.expand(*batch, n)
    b = b.expand(*batch, m)

    xs, ix = torch.sort(x, dim=-1)
    ys, iy = torch.sort(y, dim=-1)
    ca = torch.cumsum(torch.gather(a, -1, ix), -1)
    cb = torch.cumsum(torch.gather(b, -1, iy), -1)
    cb = cb * (ca[..., -1:] / cb[..., -1:])  # identical totals, so the last quantiles meet
    t, _ = torch.sort(torch.cat([ca, cb], -1), dim=-1)
    widths = torch.diff(t, dim=-1, prepend=torch.zeros_like(t[..., :1]))
    mid = (t - 0.5 * widths).contiguous()
    i = torch.searchsorted(ca.detach().contiguous(), mid.detach()).clamp_max(n - 1)
    j = torch.searchsorted(cb.detach().contiguous(), mid.detach()).clamp_max(m - 1)
    diff = (torch.gather(xs, -1, i) - torch.gather(ys, -1, j)).abs()
    value = (widths * diff.pow(p)).sum(-1)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"W_p^p overflows {value.dtype} for p={p:g} (distances up to "
                         f"{float(diff.max()):.3g}); use a smaller p, or rescale the points")
    return value
