r"""Gromov-Wasserstein: optimal transport between spaces that share no coordinates.

Given two metric-measure spaces, described only by their *internal* dissimilarity matrices
``Cx`` (n x n) and ``Cy`` (m x m) and weights ``a``, ``b``, the Gromov-Wasserstein (GW) problem
looks for the coupling that best preserves the pairwise dissimilarities,

.. math::

    \mathrm{GW}(P) = \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl})\, P_{ij} P_{kl},
    \qquad L(s, t) = (s - t)^2 \ \text{(square loss)},

a non-convex quadratic program over the couplings of ``a`` and ``b``. This module solves its
entropic version, :math:`\mathrm{GW}(P) + \varepsilon \operatorname{KL}(P \mid a \otimes b)`,
by mirror descent (Peyré, Cuturi and Solomon, 2016; Solomon et al., 2016): each step linearises
``GW`` at the current plan and solves one entropic OT problem on that linearised cost with the
Sinkhorn engine (:func:`otbook.sinkhorn`), warm-started from the previous potentials. The
fixed-point iteration is accelerated (Anderson mixing, and extrapolation while the iterates drift
away from a saddle point), with every extrapolated step checked against the objective.

The losses used here split as :math:`L(s, t) = f_1(s) + f_2(t) - h_1(s) h_2(t)`, so that the
linearised cost is

.. math::

    \nabla \mathrm{GW}(P) = 2\big(f_1(C^x) p \ones^\top + \ones q^\top f_2(C^y)
    - h_1(C^x) P h_2(C^y)\big), \qquad p = P\ones,\ q = P^\top \ones,

two matrix products, :math:`O(n^2 m + n m^2)` per step instead of the :math:`O(n^2 m^2)` of the
four-index tensor.
"""

from __future__ import annotations

import warnings

import torch

from ._checks import (
    check_cost,
    check_eps,
    check_plan,
    check_positive,
    check_positive_int,
    check_same_mass,
    check_symmetric,
    check_unit_interval,
    check_weights,
)
from .result import OTResult
from .sinkhorn import sinkhorn

__all__ = ["gromov_wasserstein", "gromov_objective", "gromov_divergence", "LOSSES"]

LOSSES = ("square", "kl")


def _check_loss(loss):
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return loss


def _split(Cx, Cy, loss):
    """The four matrices of ``L(s, t) = f1(s) + f2(t) - h1(s) h2(t)``: f1(Cx), f2(Cy), h1(Cx), h2(Cy)."""
    if loss == "square":
        return Cx * Cx, Cy * Cy, Cx, 2.0 * Cy
    # kl: L(s, t) = s log(s / t) - s + t
    f1 = torch.where(Cx > 0, Cx * torch.log(Cx), torch.zeros_like(Cx)) - Cx
    return f1, Cy, Cx, torch.log(Cy)


def _check_kl_inputs(Cx, Cy, loss):
    if loss != "kl":
        return
    if bool((Cx < 0).any()):
        raise ValueError("Cx must be non-negative for loss='kl' (L(s, t) = s log(s/t) - s + t)")
    if bool((Cy <= 0).any()):
        raise ValueError(
            "Cy must be positive for loss='kl' (L(s, t) = s log(s/t) - s + t needs t > 0); "
            "use similarity matrices, or loss='square' for distance matrices"
        )


def _gw_from_product(F1, F2, HPH, P):
    """GW(P) from the product H1 P H2 (with the plan's own marginals: exact for any plan)."""
    p, q = P.sum(-1), P.sum(-2)
    t1 = (p * (F1 @ p[..., None])[..., 0]).sum(-1)
    t2 = (q * (F2 @ q[..., None])[..., 0]).sum(-1)
    return t1 + t2 - (HPH * P).sum((-2, -1))


def _kl_to_product(P, a, b):
    """KL(P | a x b) = sum P log(P / (a_i b_j)) - sum P + sum a sum b, with 0 log 0 = 0."""
    logab = torch.log(a)[..., :, None] + torch.log(b)[..., None, :]
    ent = torch.where(P > 0, P * (torch.log(P) - logab), torch.zeros_like(P)).sum((-2, -1))
    return ent - P.sum((-2, -1)) + a.sum(-1) * b.sum(-1)


def _objective_split(F1, F2, H1, H2, P, a, b, eps, M, alpha, HPH=None, kl=None):
    """(linear part, regularised objective) at plan P, from the split matrices of the loss."""
    if HPH is None:
        HPH = H1 @ P @ H2.transpose(-1, -2)
    lin = _gw_from_product(F1, F2, HPH, P)
    if M is not None:
        lin = alpha * lin + (1.0 - alpha) * (M * P).sum((-2, -1))
    if eps == 0:
        return lin, lin
    return lin, lin + eps * (_kl_to_product(P, a, b) if kl is None else kl)


def _objective(Cx, Cy, P, a, b, eps, M, alpha, loss):
    """(linear part, regularised objective) at plan P; differentiable in Cx, Cy, M and P."""
    return _objective_split(*_split(Cx, Cy, loss), P, a, b, eps, M, alpha)


def _inputs(Cx, Cy, a, b, M, alpha, loss):
    Cx = check_symmetric(Cx, "Cx")
    Cy = check_symmetric(Cy, "Cy", like=None if isinstance(Cy, torch.Tensor) else Cx)
    if Cx.dtype != Cy.dtype:
        raise TypeError(f"Cx has dtype {Cx.dtype} but Cy has dtype {Cy.dtype}; use one dtype")
    if Cx.device != Cy.device:
        raise ValueError(f"Cx is on {Cx.device} but Cy is on {Cy.device}; use one device")
    loss = _check_loss(loss)
    _check_kl_inputs(Cx, Cy, loss)
    n, m = Cx.shape[-1], Cy.shape[-1]
    if M is not None:
        if isinstance(M, torch.Tensor) and M.device != Cx.device:
            raise ValueError(f"M is on {M.device} but Cx is on {Cx.device}; use one device")
        M = check_cost(M, "M", like=None if isinstance(M, torch.Tensor) else Cx).to(Cx.dtype)
        if M.shape[-2:] != (n, m):
            raise ValueError(f"M must have shape (n, m) = ({n}, {m}) to match Cx and Cy, got "
                             f"{tuple(M.shape)}")
        alpha = check_unit_interval(alpha, "alpha")
    batch = torch.broadcast_shapes(Cx.shape[:-2], Cy.shape[:-2],
                                   M.shape[:-2] if M is not None else ())
    a = check_weights(a, n, "a", like=Cx, batch_shape=batch)
    b = check_weights(b, m, "b", like=Cx, batch_shape=batch)
    check_same_mass(a, b)
    full = torch.broadcast_shapes(batch, a.shape[:-1], b.shape[:-1])
    return Cx, Cy, a.expand(*full, n), b.expand(*full, m), M, alpha, loss, full


# Anderson acceleration of the mirror-descent fixed point: it starts after this many steps in a
# row that shrank the plan change (the iterates have left the saddle near a x b), and an
# extrapolated step is rolled back when it raises the objective by more than this (relative).
_ANDERSON_START = 3
_ANDERSON_RTOL = 1e-9
# While the plan change grows (the iterates leave a saddle point), steps are extrapolated along
# the last change by a factor that doubles after each successful step, up to this.
_DRIFT_MAX = 64.0


def _inner(u, v):
    """Frobenius inner products over the last two dims, one per problem: shape (problems,)."""
    return (u * v).sum((-2, -1)).reshape(-1)


def _anderson(hist, ids, start, gram):
    """Type-II Anderson mixing of the steps in ``hist``: [(y_i, H1 y_i H2^T, r_i = y_i - z_i)].

    ``gram[p, i, j] = <r_i, r_j>`` for problem ``p`` (kept up to date by the caller, one new row
    per step), so that only small matrices are formed here. Batched: one set of coefficients per
    problem, and for problem ``p`` only the entries whose id (``ids``) is at least ``start[p]``
    are used (its history since it last restarted). Returns the extrapolated input
    ``z = sum_j c_j y_j``, its product ``H1 z H2^T`` (linear in ``z``: mixed from the stored
    products, without a new matrix product), and whether ``z`` was extrapolated.
    """
    y, hy, r = hist[-1]
    k = len(hist) - 1
    start = start.reshape(-1)
    valid = torch.stack([start <= ids[i] for i in range(k)], -1).to(gram.dtype)  # (problems, k)
    D = torch.zeros(k + 1, k, dtype=gram.dtype, device=gram.device)  # differences r_{i+1} - r_i
    D[torch.arange(k), torch.arange(k)] = -1.0
    D[torch.arange(k) + 1, torch.arange(k)] = 1.0
    G = D.T @ gram @ D * valid[:, :, None] * valid[:, None, :]
    lam = 1e-10 * G.diagonal(dim1=-2, dim2=-1).sum(-1) / k + torch.finfo(G.dtype).tiny
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    G = G + (1.0 - valid)[:, :, None] * eye + lam[:, None, None] * eye
    rhs = (D.T @ gram[:, :, k:]) * valid[:, :, None]
    gamma = torch.linalg.solve(G, rhs)[..., 0]  # (problems, k)
    coef = -gamma @ D.T  # z = y_k - sum_i gamma_i (y_{i+1} - y_i) = sum_j coef_j y_j
    coef[:, k] += 1.0
    batch = r.shape[:-2]
    z = hz = 0.0
    for jj in range(k + 1):
        c = coef[:, jj].reshape(*batch, 1, 1)
        z = z + c * hist[jj][0]
        hz = hz + c * hist[jj][1]
    used = valid.sum(-1).reshape(batch) >= 1
    return z, hz, used


def gromov_wasserstein(Cx, Cy, a=None, b=None, *, eps, loss: str = "square", M=None,
                       alpha: float = 0.5, init=None, max_iter: int = 1000, tol: float = 1e-9,
                       anderson: int = 5, inner_tol: float = 1e-8, inner_max_iter: int = 1000,
                       warn: bool = True, progress: bool = False) -> OTResult:
    r"""Entropic (fused) Gromov-Wasserstein by mirror descent, one Sinkhorn solve per step.

    Minimises, over couplings :math:`P` of ``a`` and ``b``,

    .. math::

        \mathcal E(P) = \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}
        + \varepsilon \operatorname{KL}(P \mid a \otimes b)

    (square loss :math:`L(s, t) = (s - t)^2`, or ``loss="kl"``:
    :math:`L(s, t) = s \log(s/t) - s + t`). With a feature cost ``M``, the fused GW objective
    :math:`(1 - \alpha)\langle M, P\rangle + \alpha\,\mathrm{GW}(P) + \varepsilon\operatorname{KL}`
    (POT's convention for ``alpha``). Each step solves
    :math:`P_{k+1} = \operatorname{Sinkhorn}(a, b, \nabla \mathcal{E}_0(P_k), \varepsilon)`
    (mirror descent with step :math:`1/\varepsilon`, the iteration of POT's
    ``entropic_gromov_wasserstein``; :math:`\mathcal E_0` is the unregularised part),
    warm-started from the previous potentials (or cold, after a solve that used up its budget:
    warm potentials inherit its error). The problem is not convex: the result is a stationary
    point that depends on ``init``.

    Two things make it faster than the textbook loop without changing its fixed points:

    * **Anderson acceleration** of the fixed-point map :math:`P \mapsto \operatorname{Sinkhorn}
      (\nabla\mathcal E_0(P))`, once the iterates have left the neighbourhood of the starting
      plan (``anderson`` previous steps are combined; the gradient is linear in :math:`P`, so a
      combination costs no extra matrix product). An extrapolated step that raises the objective
      is rolled back and the memory cleared, so the iterates keep descending and settle on the
      stationary point the plain iteration reaches (``anderson=0`` gives the plain iteration);
    * **inexact inner solves**: each Sinkhorn solve stops at an L1 marginal error of
      ``max(inner_tol, min(1e-3, 0.1 * last plan change))``, tight only near convergence.

    Parameters
    ----------
    Cx : Tensor or array, shape (..., n, n)
        Dissimilarities inside the source space: square and symmetric (checked).
    Cy : Tensor or array, shape (..., m, m)
        Dissimilarities inside the target space: square and symmetric.
    a, b : Tensor or array, shapes (..., n) and (..., m), optional
        Weights (default uniform), with the same total mass.
    eps : float
        Entropic regularisation, absolute (in units of ``L``), > 0.
    loss : {"square", "kl"}
        ``"kl"`` needs ``Cx >= 0`` and ``Cy > 0`` (similarity matrices).
    M : Tensor or array, shape (..., n, m), optional
        Feature cost between the two sides: fused Gromov-Wasserstein.
    alpha : float in [0, 1]
        Weight of the structure (GW) term in the fused objective; used only with ``M``.
    init : Tensor or array, shape (..., n, m), optional
        Starting plan (default :math:`a \otimes b`). Any non-negative matrix: it only enters
        through the first linearised cost. Leading dimensions are a batch: one problem per
        starting plan (for restarts from several initialisations in one call).
    max_iter : int
        Budget of mirror-descent steps (rolled-back steps included).
    tol : float
        Stop when the plan changes by at most ``tol`` in Frobenius norm in one step,
        :math:`\|P_{k+1} - P_k\|_F \le` ``tol`` (POT's criterion, checked here at every step;
        with acceleration, :math:`P_k` is the extrapolated input of the step).
    anderson : int
        Memory of the Anderson acceleration; ``0`` turns it off.
    inner_tol, inner_max_iter : float, int
        Final tolerance (L1 marginal error) and budget of each Sinkhorn solve. (POT's default,
        ``stopThr=1e-9`` on the L2 norm of one marginal's error, is of the same order for a few
        hundred points.) Plans close to a permutation, and near-isometric problems, make
        Sinkhorn slow: raise ``inner_max_iter`` or ``eps`` when the solve stops short.
    warn : bool
        Emit a ``RuntimeWarning`` when the outer loop, or the last Sinkhorn solve, did not converge.
    progress : bool
        Show a progress bar over the mirror-descent steps.

    Returns
    -------
    OTResult
        ``plan``; ``value_linear``, the (fused) GW loss of the plan,
        :math:`\sum_{ijkl} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}`; ``value``, the objective
        minimised, ``value_linear`` :math:`+ \varepsilon \operatorname{KL}(P \mid a\otimes b)`.
        Both are differentiable in ``Cx``, ``Cy`` and ``M`` with the plan held fixed (the envelope
        theorem at a stationary point; no gradient for ``a`` and ``b``). ``f``, ``g``: the
        potentials of the last Sinkhorn step (of the linearised problem). ``n_iter``: mirror
        descent steps. ``converged``: the outer criterion was met and the last Sinkhorn solve
        converged (a tensor of bools for a batch). ``extra``: ``"history"`` (the objective
        after each accepted step), ``"criterion"`` (the last plan change),
        ``"inner_iterations"`` (Sinkhorn iterations, all steps together), ``"rejected"``
        (extrapolated steps rolled back).

    Examples
    --------
    A 1-D cloud and its mirror image are isometric: GW is 0 and the plan is the anti-diagonal.

    >>> import torch, otbook as ob
    >>> x = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)[:, None] / 7
    >>> C = ob.cost_matrix(x, x, "euclidean")
    >>> res = ob.gromov_wasserstein(C, C.flip(0, 1), eps=1e-3)
    >>> res.converged, round(float(res.value_linear), 6)
    (True, 0.0)
    >>> (res.plan * 4).round().int()
    tensor([[0, 0, 0, 1],
            [0, 0, 1, 0],
            [0, 1, 0, 0],
            [1, 0, 0, 0]], dtype=torch.int32)
    """
    Cx, Cy, a, b, M, alpha, loss, full = _inputs(Cx, Cy, a, b, M, alpha, loss)
    eps = check_eps(eps)
    max_iter = check_positive_int(max_iter, "max_iter")
    inner_max_iter = check_positive_int(inner_max_iter, "inner_max_iter")
    anderson = check_positive_int(anderson, "anderson", minimum=0)
    tol = check_positive(tol, "tol")
    inner_tol = check_positive(inner_tol, "inner_tol")
    n, m = Cx.shape[-1], Cy.shape[-1]
    if init is None:
        z = a[..., :, None] * b[..., None, :]
    else:
        if isinstance(init, torch.Tensor) and init.device != Cx.device:
            raise ValueError(f"init is on {init.device} but Cx is on {Cx.device}; use one device")
        z = check_plan(init, "init", like=None if isinstance(init, torch.Tensor) else Cx).to(Cx.dtype)
        if z.shape[-2:] != (n, m):
            raise ValueError(f"init must have shape (n, m) = ({n}, {m}), got {tuple(z.shape)}")
        full = torch.broadcast_shapes(full, z.shape[:-2])  # a batch of starting plans
        a, b = a.expand(*full, n), b.expand(*full, m)
        z = z.detach().expand(*full, n, m)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="gromov_wasserstein", leave=False)
    with torch.no_grad():
        Cxd, Cyd = Cx.detach(), Cy.detach()
        Md = None if M is None else M.detach()
        F1, F2, H1, H2 = _split(Cxd, Cyd, loss)
        H2t = H2.transpose(-1, -2)
        # the linearised cost uses the target marginals a, b (its separable part does not move
        # the Sinkhorn solution, only the potentials): 2 (f1(Cx) a 1^T + 1 b^T f2(Cy)^T)
        const = 2.0 * ((F1 @ a[..., None]) + (F2 @ b[..., None]).transpose(-1, -2))
        check_every = 1 if Cx.device.type == "cpu" else 10
        hz = H1 @ z @ H2t
        f = g = None
        y = hy = lin = value = None
        err = torch.full(full, float("inf"), dtype=Cx.dtype, device=Cx.device)
        last_err = err.clone()
        # per-problem acceleration state (a batch holds independent problems)
        streak = torch.zeros(full, dtype=torch.long, device=Cx.device)  # steps in a row that shrank
        rise = torch.zeros_like(streak)                                  # ... that grew
        beta = torch.zeros(full, dtype=Cx.dtype, device=Cx.device)      # drift extrapolation
        beta_mem = torch.zeros_like(beta)
        start = torch.full(full, 2**62, dtype=torch.long, device=Cx.device)  # Anderson history start
        extrapolated = torch.zeros(full, dtype=torch.bool, device=Cx.device)
        history, hist, ids, gram = [], [], [], None
        inner_iterations = n_rejected = n_entries = 0
        inner_ok = True
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            inner = max(inner_tol, min(1e-3, 0.1 * float(err.max())))
            grad = const - 2.0 * hz
            if Md is not None:
                grad = alpha * grad + (1.0 - alpha) * Md
            res = sinkhorn(a, b, grad, eps, tol=inner, max_iter=inner_max_iter,
                           init=None if (f is None or not inner_ok) else (f, g),
                           check_every=check_every, warn=False)
            inner_iterations += res.n_iter
            inner_ok = bool(torch.as_tensor(res.converged).all())
            f, g = res.f, res.g
            y_new = res.plan
            hy_new = H1 @ y_new @ H2t
            # KL of a Sinkhorn plan from its potentials (log(P / ab) = (f + g - grad) / eps):
            # no logarithm of the n x m plan
            pa, pb = y_new.sum(-1), y_new.sum(-2)
            kl = ((pa * f).sum(-1) + (pb * g).sum(-1) - (y_new * grad).sum((-2, -1))) / eps \
                - pa.sum(-1) + a.sum(-1) * b.sum(-1)
            lin_new, value_new = _objective_split(F1, F2, H1, H2, y_new, a, b, eps, Md, alpha,
                                                  hy_new, kl)
            if bar is not None:
                bar.update(1)
            if value is None:
                uphill = torch.zeros(full, dtype=torch.bool, device=Cx.device)
            else:  # an extrapolated step that raised the objective is rolled back
                uphill = extrapolated & (value_new > value + _ANDERSON_RTOL * value.abs())
            ok = ~uphill
            okm = ok[..., None, None]
            r = y_new - z
            if value is None or not bool(uphill.any()):
                y, hy, lin, value = y_new, hy_new, lin_new, value_new
            else:
                y, hy = torch.where(okm, y_new, y), torch.where(okm, hy_new, hy)
                lin, value = torch.where(ok, lin_new, lin), torch.where(ok, value_new, value)
            err = torch.where(ok, torch.linalg.matrix_norm(r), err)
            history.append(value)
            n_rejected += int(uphill.sum())
            if bar is not None:
                bar.set_postfix(change=f"{float(err.max()):.2e}")
            if bool((err <= tol).all()):
                break
            shrank = ok & (err < last_err)
            streak = torch.where(shrank, streak + 1, torch.zeros_like(streak))
            rise = torch.where(ok & ~shrank, rise + 1, torch.where(uphill, rise, torch.zeros_like(rise)))
            # a rolled-back drift resumes, after one plain step, at a quarter of its reach
            beta_mem = torch.where(uphill, beta / 4, beta_mem)
            last_err = torch.where(ok, err, last_err)
            # Anderson: (re)start the history of a problem after _ANDERSON_START shrinking steps;
            # a rolled-back problem stops using it
            start = torch.where(uphill, torch.full_like(start, 2**62), start)
            begin = (start == 2**62) & (streak >= _ANDERSON_START)
            start = torch.where(begin, torch.full_like(start, n_entries), start)
            if anderson and bool((start < 2**62).any()):  # some problem uses the history
                r_ok = torch.where(okm, r, torch.zeros_like(r)) if bool(uphill.any()) else r
                row = torch.stack([_inner(r_ok, h[2]) for h in hist] + [_inner(r_ok, r_ok)], -1)
                size = len(hist) + 1
                new = row.new_zeros(row.shape[0], size, size)
                if hist:
                    new[:, :-1, :-1] = gram
                new[:, -1, :], new[:, :, -1] = row, row
                hist, ids = hist + [(y, hy, r_ok)], ids + [n_entries]
                gram = new
                if len(hist) > anderson + 1:
                    hist, ids, gram = hist[1:], ids[1:], gram[:, 1:, 1:]
                n_entries += 1
            hz_in = hz
            if len(hist) >= 2 and bool((start.reshape(-1) <= ids[-2]).any()):
                z, hz, mixed = _anderson(hist, ids, start, gram)
            else:
                z, hz, mixed = y, hy, torch.zeros_like(ok)
            # drift: while the steps grow (the plan leaves a saddle point slowly), extrapolate
            # along the last step, twice as far after each step that was not rolled back
            drift = bool(anderson) & ~mixed & (rise >= _ANDERSON_START) & ok
            beta = torch.where(drift, torch.where(beta > 0, (2.0 * beta).clamp_max(_DRIFT_MAX),
                                                  beta_mem.clamp_min(1.0)), torch.zeros_like(beta))
            beta_mem = torch.where(drift, torch.zeros_like(beta_mem), beta_mem)
            if bool(drift.any()):
                bb = beta[..., None, None]
                z = torch.where(drift[..., None, None], y + bb * r, z)
                hz = torch.where(drift[..., None, None], hy + bb * (hy - hz_in), hz)
            extrapolated = mixed | drift
        if bar is not None:
            bar.close()
        marg = (y.sum(-1) - a).abs().sum(-1) + (y.sum(-2) - b).abs().sum(-1)

    if Cx.requires_grad or Cy.requires_grad or (M is not None and M.requires_grad):
        lin, value = _objective(Cx, Cy, y, a.detach(), b.detach(), eps, M, alpha, loss)
    done = (err <= tol) & inner_ok
    all_ok = bool(done.all())
    if warn and not all_ok:
        reasons = []
        if not bool((err <= tol).all()):
            reasons.append(f"the plan still changed by {float(err.max()):.3g} > tol {tol:g} in its "
                           f"last step (of {max_iter})")
        if not inner_ok:
            reasons.append(f"its last Sinkhorn solve stopped at a marginal error of "
                           f"{float(marg.max()):.2g} after {inner_max_iter} iterations")
        why = " and ".join(reasons)
        warnings.warn(
            f"gromov_wasserstein did not converge: {why}; raise max_iter (or inner_max_iter), or "
            "use a larger eps",
            RuntimeWarning,
            stacklevel=2,
        )
    return OTResult(
        plan=y,
        value=value,
        value_linear=lin,
        f=f,
        g=g,
        n_iter=n_iter,
        converged=all_ok if full == () else done,
        marginal_error=marg,
        extra={
            "history": torch.stack(history, -1),
            "criterion": err,
            "inner_iterations": inner_iterations,
            "rejected": n_rejected,
            "eps": eps,
            "loss": loss,
        },
    )


def gromov_objective(Cx, Cy, plan, a=None, b=None, *, eps: float = 0.0, loss: str = "square",
                     M=None, alpha: float = 0.5) -> torch.Tensor:
    r"""The (fused, entropic) Gromov-Wasserstein objective of any plan.

    .. math::

        \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}
        \;\big[\times \alpha + (1 - \alpha)\langle M, P\rangle\big]
        \;+\; \varepsilon \operatorname{KL}(P \mid a \otimes b),

    computed in :math:`O(n^2 m + n m^2)` with the plan's own marginals (so it is exact for plans
    whose marginals are not exactly ``a`` and ``b``, such as a truncated solver's). Use it to
    compare plans from different solvers on one scale.

    Parameters
    ----------
    Cx, Cy : Tensor or array, shapes (..., n, n) and (..., m, m)
        Symmetric dissimilarity matrices.
    plan : Tensor or array, shape (..., n, m)
        Any non-negative matrix.
    a, b : Tensor or array, optional
        Reference weights of the KL term (default uniform); used only when ``eps > 0``.
    eps : float
        Weight of the KL term (``0``: the plain GW loss).
    loss, M, alpha
        As in :func:`gromov_wasserstein`.

    Returns
    -------
    Tensor, shape (...)
        Differentiable in ``Cx``, ``Cy``, ``M`` and ``plan``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> P = torch.full((2, 2), 0.25, dtype=torch.float64)   # the independent coupling
    >>> float(ob.gromov_objective(C, C, P))                 # pairs (i,k) and (j,l) mismatch half the time
    0.5
    """
    Cx, Cy, a, b, M, alpha, loss, full = _inputs(Cx, Cy, a, b, M, alpha, loss)
    if isinstance(plan, torch.Tensor) and plan.device != Cx.device:
        raise ValueError(f"plan is on {plan.device} but Cx is on {Cx.device}; use one device")
    P = check_plan(plan, "plan", like=None if isinstance(plan, torch.Tensor) else Cx).to(Cx.dtype)
    n, m = Cx.shape[-1], Cy.shape[-1]
    if P.shape[-2:] != (n, m):
        raise ValueError(f"plan must have shape (n, m) = ({n}, {m}), got {tuple(P.shape)}")
    if eps != 0:
        eps = check_eps(eps)
    return _objective(Cx, Cy, P, a, b, eps, M, alpha, loss)[1]


def gromov_divergence(Cx, Cy, a=None, b=None, *, eps, **kwargs) -> torch.Tensor:
    r"""A debiased entropic Gromov-Wasserstein loss, for generative models across spaces.

    .. math::

        \overline{\mathrm{GW}}_\varepsilon(X, Y) = \mathrm{GW}_\varepsilon(X, Y)
        - \tfrac12 \mathrm{GW}_\varepsilon(X, X) - \tfrac12 \mathrm{GW}_\varepsilon(Y, Y),

    with :math:`\mathrm{GW}_\varepsilon` the objective ``value`` of :func:`gromov_wasserstein`
    (the same convention as :func:`otbook.sinkhorn_divergence`; the normalised loss of Bunne et
    al., 2019, is twice this). The three problems start from the product coupling, and the solver
    commutes with relabelling the points, so the divergence vanishes (up to round-off) when
    ``Cy`` is ``Cx`` with its points relabelled. GW is not convex, so unlike the Sinkhorn
    divergence this quantity can be negative when the cross problem finds a better stationary
    point than a self-problem.

    Parameters
    ----------
    Cx, Cy : Tensor or array, shapes (n, n) and (m, m)
        Symmetric dissimilarity matrices (differentiable).
    a, b : Tensor or array, optional
        Weights (default uniform).
    eps : float
        Entropic regularisation, > 0.
    **kwargs
        Passed to :func:`gromov_wasserstein` (``loss``, ``max_iter``, ``tol``, ``warn``, ...).

    Returns
    -------
    Tensor
        Scalar (or batch), differentiable in ``Cx`` and ``Cy`` (envelope gradients).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> C = ob.cost_matrix(x, x, "euclidean") / 5
    >>> perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    >>> abs(float(ob.gromov_divergence(C, C[perm][:, perm], eps=0.05))) < 1e-12
    True
    """
    for key in ("init", "M"):
        if key in kwargs:
            raise TypeError(f"gromov_divergence does not take {key!r}")
    xy = gromov_wasserstein(Cx, Cy, a, b, eps=eps, **kwargs).value
    xx = gromov_wasserstein(Cx, Cx, a, a, eps=eps, **kwargs).value
    yy = gromov_wasserstein(Cy, Cy, b, b, eps=eps, **kwargs).value
    return xy - 0.5 * (xx + yy)
