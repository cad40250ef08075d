r"""Entropic optimal transport: the Sinkhorn engine.

The problem solved everywhere in this module is

.. math::

    \min_{P \ge 0} \langle P, C \rangle + \varepsilon \operatorname{KL}(P \,|\, a \otimes b)
    + \rho_a \operatorname{KL}(P 1 \,|\, a) + \rho_b \operatorname{KL}(P^\top 1 \,|\, b),

with ``KL(p | q) = sum p log(p / q) - p + q`` and a marginal penalty replaced by the hard
constraint when its ``rho`` is ``None`` (balanced: both ``None``; semi-relaxed: one ``None``).

How it is computed (``sinkhorn``): the iterations run in the *kernel domain* — two
matrix-vector products with a stored kernel per iteration, the speed of the textbook algorithm —
but the kernel is built from *absorbed* log-domain potentials,
``K~ = exp((f + g - C) / eps)``, whose entries stay in floating-point range whatever ``eps``.
When the scalings ``u, v`` drift far from 1 (or a row underflows) they are absorbed back into
``f, g`` with one exact log-sum-exp step and the kernel is rebuilt (Schmitzer's stabilisation).
The result is as stable as a log-domain solver and, between absorptions, as fast as a plain one.
The updates are over-relaxed (``omega``, :class:`_Relax`): once the convergence rate is known,
each update moves the scalings further than Sinkhorn's own by the factor that is optimal for the
linearised iteration, with a safeguard; slow, block-structured problems need several times fewer
iterations.

For point clouds too large for an ``n x m`` matrix, :func:`sinkhorn_divergence` switches to an
*online* log-domain solver that recomputes the cost block by block and never stores it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ._checks import (
    check_clouds,
    check_cost,
    check_eps,
    check_pair_points,
    check_potential,
    check_positive,
    check_memory_budget,
    check_positive_int,
    check_relaxation,
    check_same_mass,
    check_weights,
)
from .costs import cost_matrix
from .result import OTResult

__all__ = ["sinkhorn", "sinkhorn_divergence", "eps_relative", "eps_schedule"]


# --------------------------------------------------------------------------------------------
# helpers


def eps_relative(C, rel: float = 0.05, stat: str = "mean") -> float:
    """An absolute ``eps`` set relative to the scale of a cost matrix.

    Parameters
    ----------
    C : Tensor or array, shape (..., n, m)
        Cost matrix.
    rel : float
        The fraction (``0.05`` gives 5 % of the scale).
    stat : {"mean", "max", "median"}
        Which statistic of ``C`` defines its scale.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.eps_relative(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), rel=0.1)
    0.1
    """
    C = check_cost(C, "C")
    rel = check_positive(rel, "rel")
    stats = {"mean": C.mean, "max": C.max, "median": C.median}
    if stat not in stats:
        raise ValueError(f"stat must be one of {sorted(stats)}, got {stat!r}")
    scale = float(stats[stat]())
    if scale <= 0:
        raise ValueError(f"the {stat} of C is {scale}, so no eps can be relative to it")
    return rel * scale


def eps_schedule(eps_start: float, eps_end: float, scaling: float = 0.5) -> list[float]:
    """Geometric ``eps``-scaling schedule from ``eps_start`` down to ``eps_end`` (both included).

    Examples
    --------
    >>> import otbook as ob
    >>> ob.eps_schedule(1.0, 0.1, scaling=0.5)
    [1.0, 0.5, 0.25, 0.125, 0.1]
    """
    eps_start = check_positive(eps_start, "eps_start")
    eps_end = check_positive(eps_end, "eps_end")
    scaling = check_positive(scaling, "scaling")
    if scaling >= 1:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    if eps_start <= eps_end:
        return [eps_end]
    n_steps = int(math.floor(math.log(eps_end / eps_start) / math.log(scaling) + 1e-9))
    levels = [eps_start * scaling**k for k in range(n_steps + 1)]
    if levels[-1] > eps_end * (1 + 1e-12):
        levels.append(eps_end)
    else:
        levels[-1] = eps_end
    return levels


def _check_rho(rho, name):
    return check_positive(rho, name, allow_none=True)


def _safe_log(w: torch.Tensor) -> torch.Tensor:
    return torch.log(w)  # zero weights give -inf, which log-sum-exp handles


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised KL(p | q) = sum p log(p/q) - p + q over the last dim (0 log 0 = 0)."""
    ratio = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return (ratio - p + q).sum(-1)


# --------------------------------------------------------------------------------------------
# dense engine


class _Dense:
    """Log-sum-exp updates on a stored cost (batched over the first dimension)."""

    def __init__(self, C, log_a, log_b):
        self.C, self.log_a, self.log_b = C, log_a, log_b

    def update_f(self, g, eps, lam):
        z = self.log_b[:, None, :] + (g[:, None, :] - self.C) / eps
        return -lam * eps * torch.logsumexp(z, dim=-1)

    def update_g(self, f, eps, lam):
        z = self.log_a[:, :, None] + (f[:, :, None] - self.C) / eps
        return -lam * eps * torch.logsumexp(z, dim=-2)

    def kernel(self, f, g, eps):
        # (f_i + g_j - C_ij) / eps in one allocating pass, the rest in place. Entries below e^lo
        # are negligible: clamping before exp keeps every result normal (an exp whose result is
        # subnormal is an order of magnitude slower on CPUs, and so is every product with it)
        K = torch.sub((f / eps)[:, :, None], self.C, alpha=1.0 / eps)
        if bool(g.any()):
            K.add_((g / eps)[:, None, :])
        return K.clamp_(min=_exp_floor(K.dtype)).exp_()


def _exp_floor(dtype) -> float:
    """A log-value below which exp(.) counts as 0: e^floor is normal (not subnormal) but 1e-37
    or less relative to 1."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def _row_products(K):
    """``w -> K w`` over a batch, with the faster kernel for the shape: BLAS for one problem or
    large ones; for many small problems, a fused multiply-sum (batched BLAS handles
    matrix-vector products of small matrices poorly)."""
    B, n, m = K.shape
    if B > 1 and n * m <= 2**18:
        return lambda w: (K * w[:, None, :]).sum(-1)
    return lambda w: torch.bmm(K, w[:, :, None])[:, :, 0]


def _threshold(dtype):
    # how far the scalings may drift before they are absorbed into the potentials
    # (u v K~ stays far from overflow, and kernel entries that underflowed stay negligible)
    return 1e12 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e40


class _Relax:
    """Safeguarded, adaptive over-relaxation of Sinkhorn updates, one factor per problem.

    A relaxed update moves the log-scalings ``omega`` times as far as Sinkhorn's own update,
    ``log u <- (1 - omega) log u + omega log u_sinkhorn`` (``omega = 1``: plain Sinkhorn). Near
    the solution Sinkhorn behaves like a Gauss-Seidel sweep on a linear system, contracting by a
    rate ``r`` per iteration; by Young's theory of successive over-relaxation the best factor is
    ``omega* = 2 / (1 + sqrt(1 - r))``, with rate about ``omega* - 1`` (``r = 0.999`` gives
    ``omega* = 1.94`` and 16x fewer iterations). This is the analysis of Thibault et al. (2021)
    and Lehmann et al. (2022), who read ``r`` off the plain iterations at no cost.

    ``"auto"``: the iterations start plain; ``r`` is read off the decrease of the stopping
    criterion between two checks, and once two readings agree (the transient is over) the
    factor is set to ``min(omega*, 1.95)``. A fixed float is used from the start.
    Safeguard, either way: when a relaxed problem's criterion grows between two checks (or
    turns non-finite), the problem returns to its state at the previous check and its factor is
    halved towards 1; after three such returns it stays at 1 (plain Sinkhorn, which converges).
    """

    CAP = 1.98

    def __init__(self, omega, batch, like):
        # the controller's state lives on the host, in NumPy: a few numbers per problem, read
        # once per check (on a GPU, dozens of tiny device kernels per check would cost more
        # than the iterations they save on mid-sized problems)
        self.auto = omega == "auto"
        start = 1.0 if self.auto else float(omega)
        self.like = like
        self.w = np.full(batch, start)
        self.strikes = np.zeros(batch, dtype=int)
        self.stale = np.zeros(batch, dtype=int)
        self.n_steady = np.zeros(batch, dtype=int)
        self.prev_err = self.best = None
        self.prev_rate = np.full(batch, np.nan)
        self.w_safe = np.ones(batch)  # the factor before the last increase
        self.cap = np.full(batch, self.CAP)
        self.gate = np.full(batch, np.inf)  # a failed first switch: plain until below this
        self.err_switch = np.full(batch, np.inf)
        self.at_convergence = self.w.copy()  # the factors in use when problems converged
        self.converged = np.zeros(batch, dtype=bool)
        self._changed()

    def _changed(self):
        self.active = bool((self.w != 1.0).any())  # plain updates cost nothing extra
        self._w_dev = None

    def _factor(self, ndim):
        if self.w.size == 1:  # one problem: a Python number
            return float(self.w[0])
        if self._w_dev is None:
            self._w_dev = torch.as_tensor(self.w, dtype=self.like.dtype, device=self.like.device)
        return self._w_dev[:, None] if ndim > 1 else self._w_dev

    def mix(self, old, new):
        """The relaxed scaling ``new (old / new)^(1 - omega)`` (per problem, last axis)."""
        if not self.active:
            return new
        return new * (old / new).pow(1.0 - self._factor(old.dim()))

    def mix_log(self, old, new):
        """The same in the log domain: ``(1 - omega) old + omega new``."""
        if not self.active:
            return new
        return torch.lerp(old, new, self._factor(old.dim()))

    def settle(self, mask):
        """Plain updates from now on for the problems in ``mask`` (which converged)."""
        mask = np.asarray(mask, dtype=bool)
        self.at_convergence = np.where(mask, self.w, self.at_convergence)
        self.converged |= mask
        self.w = np.where(mask, 1.0, self.w)
        self._changed()

    def report(self):
        """The factor each problem ended with (at its convergence, when it converged)."""
        w = np.where(self.converged, self.at_convergence, self.w)
        return torch.as_tensor(w, dtype=self.like.dtype)

    def check(self, err, k, tol):
        """Take the criterion ``err`` (a NumPy array, one entry per problem) reached ``k``
        iterations after the previous check.

        Returns ``(back, improved)``, NumPy masks: the problems to return to their best state so
        far (``None`` when there is none), and those whose current state is their new best (to
        be saved)."""
        err = np.asarray(err, dtype=float)
        finite = np.isfinite(err)
        if self.best is None:
            self.best = np.where(finite, err, np.inf)
            self.prev_err = err
            return None, finite
        improved = finite & (err < self.best)
        self.stale = np.where(improved, 0, self.stale + 1)
        # A relaxed problem goes back when its criterion is non-finite, far above its best, or
        # has not improved on it for a while: over-relaxed iterations are not monotone (a new
        # factor can raise the error for a few dozen iterations before it falls faster), the
        # more so the closer omega is to 2, so the patience grows like 1 / (2 - omega)
        w = self.w
        patience = np.maximum(10.0 / (k * (2.0 - w)), 3.0)
        with np.errstate(invalid="ignore"):
            back = (w != 1.0) & ~(err <= tol) & (~finite | (err > 100.0 * self.best) | (self.stale >= patience))
        if back.any():
            self.strikes = self.strikes + back
            # A failed increase returns to the factor that worked before it, and later ones
            # stop halfway below the factor that failed. A failed first switch (typically too
            # early, far from the solution, where the iteration is not yet linear) returns to
            # plain updates until the criterion is 10x below where that switch happened. Three
            # failures: plain for good.
            raised = self.w_safe > 1.0
            out = self.strikes >= 3
            self.cap = np.where(back & raised, 0.5 * (w + self.w_safe), self.cap)
            self.gate = np.where(back & ~raised, 0.1 * self.err_switch, self.gate)
            self.gate = np.where(back & out, 0.0, self.gate)
            self.w = np.where(back, np.where(raised & ~out, self.w_safe, 1.0), w)
            self.w_safe = np.where(back, 1.0, self.w_safe)
            self.stale = np.where(back, 0, self.stale)
            self.n_steady = np.where(back, 0, self.n_steady)
            err = np.where(back, self.best, err)
        self.best = np.where(improved, err, self.best)
        if self.auto:
            prev, w = self.prev_err, self.w
            with np.errstate(all="ignore"):
                ok = improved & (err < prev) & (prev > 0)
                rate = np.where(ok, (err / prev) ** (1.0 / k), np.nan)
                steady = np.abs(rate - self.prev_rate) <= 0.1 * (1.0 - rate)
                self.n_steady = np.where(steady, self.n_steady + 1, 0)
                # plain Sinkhorn's rate r gives omega* = 2 / (1 + sqrt(1 - r)). A relaxed
                # iteration that settles on a rate lam well above omega - 1 is under-relaxed for
                # its slowest mode; Young's relation (lam + omega - 1)^2 = lam omega^2 r gives r
                r = np.where(w == 1.0, rate, (rate + w - 1.0) ** 2 / (rate * w * w))
                under = (w == 1.0) | (rate > 1.05 * (w - 1.0))
                target = 2.0 / (1.0 + np.sqrt(np.clip(1.0 - r, 0.0, None)))
                # from plain, straight to the target; later, at most halfway to 2 per step
                step = np.where(w == 1.0, target, np.minimum(target, w + 0.5 * (2.0 - w)))
                new = np.minimum(step, self.cap)
                go = (~self.converged & (self.n_steady >= 2) & (rate > 0.5) & under
                      & ((w != 1.0) | (err < self.gate)) & (new > w + 0.01))
            if go.any():
                self.w_safe = np.where(go, w, self.w_safe)
                self.err_switch = np.where(go & (w == 1.0), err, self.err_switch)
                self.w = np.where(go, new, w)
                self.n_steady = np.where(go, 0, self.n_steady)
            self.prev_rate = rate
        self.prev_err = err
        self._changed()
        return (back if back.any() else None), improved


def _sinkhorn_dense(C, a, b, eps_levels, lam_a_fn, lam_b_fn, tol, max_iter, check_every,
                    f, g, progress, omega=1.0):
    """Stabilised kernel-domain Sinkhorn on a batch ``C`` of shape (B, n, m).

    Returns the potentials (scalings folded in), the plan, the per-problem criterion, the
    per-problem convergence flags and iteration counts, the total iterations, the number of
    absorptions and the per-problem over-relaxation factors (see :class:`_Relax`).
    """
    B, n, m = C.shape
    eng = _Dense(C, _safe_log(a), _safe_log(b))
    balanced = lam_a_fn(1.0) == 1.0 and lam_b_fn(1.0) == 1.0
    thr = _threshold(C.dtype)
    # the range test runs with the convergence test (every check_every iterations): per
    # iteration it would cost as much as the matrix-vector products on small problems, and a
    # device sync on an accelerator. Scalings that overflowed in between are rolled back to the
    # last good ones before they are absorbed.
    range_every = check_every
    if g is None:
        g = C.new_zeros(B, m)
    n_absorb = 0
    total_iter = 0
    iters = torch.zeros(B, dtype=torch.long, device=C.device)
    err = torch.full((B,), float("inf"), dtype=C.dtype, device=C.device)
    done = torch.zeros(B, dtype=torch.bool, device=C.device)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="sinkhorn", leave=False)

    for level, eps in enumerate(eps_levels):
        lam_a, lam_b = lam_a_fn(eps), lam_b_fn(eps)
        if level < len(eps_levels) - 1:  # annealing: one exact log-domain step per level
            f = eng.update_f(g, eps, lam_a)
            g = eng.update_g(f, eps, lam_b)
            total_iter += 1
            continue
        # base potentials: f = c-transform of g, so every row of K~ has an entry equal to 1
        cold = not bool(g.any())
        f = C.amin(-1) if cold else (C - g[:, None, :]).amin(-1)
        if cold and balanced and len(eps_levels) == 1:
            # a cold balanced start: g = c-transform of f as well (every column has a 1 too). From
            # g = 0 the scalings would drift by up to exp(max C / eps) in the first iterations and
            # force an absorption, an n x m log-sum-exp that costs as much as dozens of iterations
            g = (C - f[:, :, None]).amin(-2)
        K = eng.kernel(f, g, eps)
        Kv = _row_products(K)
        u = C.new_ones(B, n)
        v = C.new_ones(B, m)
        v_good = v
        relax = _Relax(omega, B, C)
        saved = (u, v)
        t = None
        last_check = 0
        it = 0
        while it < max_iter:
            it += 1
            s = Kv(b * v)
            check = it % check_every == 0 or it == max_iter
            if check and balanced:
                # the L1 marginal violation of the plan (u, v): rows from s = K (b v), columns
                # from t = K^T (a u) of the previous iteration (exact without relaxation)
                err = (a * u * s - a).abs().sum(-1)
                if t is None:  # first iteration, or just after a return or an absorption
                    t = torch.bmm((a * u)[:, None, :], K)[:, 0, :]
                err = err + (b * v * t - b).abs().sum(-1)
            u_old = u
            u = 1.0 / s if lam_a == 1.0 else torch.exp((lam_a - 1.0) * f / eps) * s.pow(-lam_a)
            if it > 1:  # (the starting u = v = 1 are not iterates: the first update is plain)
                u = relax.mix(u_old, u)
            t = torch.bmm((a * u)[:, None, :], K)[:, 0, :]
            v_old = v
            v = 1.0 / t if lam_b == 1.0 else torch.exp((lam_b - 1.0) * g / eps) * t.pow(-lam_b)
            if it > 1:
                v = relax.mix(v_old, v)
            if check and not balanced:
                # sup-norm of the relative change of the plan, max_ij |d log u_i + d log v_j|:
                # blind to the shift (f + c, g - c), which leaves the plan unchanged
                du, dv = torch.log(u / u_old), torch.log(v / v_old)
                err = torch.maximum((du.amax(-1) + dv.amax(-1)).abs(), (du.amin(-1) + dv.amin(-1)).abs())
                err = torch.nan_to_num(err, nan=float("inf"))
            if check and (relax.auto or relax.active):
                # the state the criterion refers to: the plan at the start of this iteration
                # (balanced), or the new one (the change of the potentials)
                here = (u_old, v_old) if balanced else (u, v)
                back, improved = relax.check(err.cpu().numpy(), it - last_check, tol)
                last_check = it
                if back is not None:  # return to the best state (its criterion: the best)
                    bk = torch.as_tensor(back, device=C.device)[:, None]
                    u, v = torch.where(bk, saved[0], u), torch.where(bk, saved[1], v)
                    here = (torch.where(bk, saved[0], here[0]), torch.where(bk, saved[1], here[1]))
                    err = torch.as_tensor(relax.prev_err, dtype=C.dtype, device=C.device)
                    t = None
                if improved.all():
                    saved = here
                elif improved.any():
                    im = torch.as_tensor(improved, device=C.device)[:, None]
                    saved = (torch.where(im, here[0], saved[0]), torch.where(im, here[1], saved[1]))
            absorbed = False
            if it % range_every == 0 or check:
                lo, hi = torch.aminmax(torch.cat([u.flatten(), v.flatten()]))
                if not (hi < thr and lo > 1.0 / thr):
                    absorbed = True
                    # absorb: fold the last finite v into g, then one exact log-domain step
                    lv = torch.log(v)
                    lv = torch.where(torch.isfinite(lv), lv, torch.log(v_good))
                    g = g + eps * lv
                    f = eng.update_f(g, eps, lam_a)
                    g = eng.update_g(f, eps, lam_b)
                    K = eng.kernel(f, g, eps)
                    Kv = _row_products(K)
                    u = C.new_ones(B, n)
                    v = C.new_ones(B, m)
                    saved = (u, v)
                    t = None
                    n_absorb += 1
                    if check and not balanced:
                        err = torch.full_like(err, float("inf"))
                v_good = v
            if check:
                newly = (err <= tol) & ~done
                iters = torch.where(newly, torch.full_like(iters, total_iter + it), iters)
                done = done | (err <= tol)
                if relax.active and bool(newly.any()):
                    # a relaxed problem that converged keeps the state that was measured (a
                    # relaxed step need not lower the criterion) and goes on plain
                    if balanced and not absorbed:
                        u = torch.where(newly[:, None], here[0], u)
                        v = torch.where(newly[:, None], here[1], v)
                        t = None
                    relax.settle(newly.cpu().numpy())
                if bar is not None:
                    bar.update(check_every)
                    bar.set_postfix(err=f"{float(err.max()):.2e}")
                if bool(done.all()):
                    break
        total_iter += it
        iters = torch.where(done, iters, torch.full_like(iters, total_iter))
    if bar is not None:
        bar.close()
    if lam_a == 1.0 and lam_b != 1.0:
        # semi-relaxed with a hard source side: end on its update, so that P 1 = a exactly
        u = 1.0 / Kv(b * v)
    plan = K.mul_((a * u)[:, :, None]).mul_((b * v)[:, None, :])
    f = f + eps * torch.log(u)
    g = g + eps * torch.log(v)
    return f, g, plan, err, done, iters, total_iter, n_absorb, relax.report()


def _dual_terms(a, b, f, g, mass, eps, rho_a, rho_b):
    """The dual objective given the plan's total mass (all terms are O(n + m))."""
    value = -eps * (mass - a.sum(-1) * b.sum(-1))
    if rho_a is None:
        value = value + (a * f).sum(-1)
    else:
        value = value - rho_a * (a * torch.expm1(-f / rho_a)).sum(-1)
    if rho_b is None:
        value = value + (b * g).sum(-1)
    else:
        value = value - rho_b * (b * torch.expm1(-g / rho_b)).sum(-1)
    return value


def _value(C, a, b, f, g, plan, eps, rho_a, rho_b):
    """Dual objective at the returned potentials, with envelope-theorem gradients.

    The gradient for C is the plan. For the weights, the dual objective is differentiated at
    fixed potentials (exact by the envelope theorem; for a balanced problem it equals f and g at
    convergence). Only the parts that need a gradient cost an n x m pass.
    """
    f, g, plan = f.detach(), g.detach(), plan.detach()
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        E = torch.exp((f[..., :, None] + g[..., None, :] - C.detach()) / eps)
        mass = (a[..., :, None] * b[..., None, :] * E).sum((-2, -1))
    else:
        mass = plan.sum((-2, -1))
    value = _dual_terms(a, b, f, g, mass, eps, rho_a, rho_b)
    if torch.is_grad_enabled() and C.requires_grad:
        value = value + (plan * (C - C.detach())).sum((-2, -1))
    return value


def _primal(plan, a, b, f, g, eps, rho_a, rho_b, marginals=None):
    """Primal objective of a plan P = a b exp((f + g - C)/eps), in O(n + m) from its marginals
    (given, or summed here).

    Uses eps sum P log(P / ab) = <P 1, f> + <P^T 1, g> - <P, C>.
    """
    pa, pb = marginals if marginals is not None else (plan.sum(-1), plan.sum(-2))
    value = (pa * f).sum(-1) + (pb * g).sum(-1) - eps * (pa.sum(-1) - a.sum(-1) * b.sum(-1))
    if rho_a is not None:
        value = value + rho_a * _kl(pa, a)
    if rho_b is not None:
        value = value + rho_b * _kl(pb, b)
    return value


def sinkhorn(a, b, C, eps, *, rho_a=None, rho_b=None, tol: float = 1e-6, max_iter: int = 10_000,
             eps_scaling: float | None = None, init=None, check_every: int = 10,
             omega="auto", warn: bool = True, progress: bool = False) -> OTResult:
    r"""Entropic optimal transport (balanced, unbalanced or semi-relaxed) by Sinkhorn iterations.

    Solves

    .. math::

        \min_{P \ge 0}\ \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \mid a \otimes b)
        + \rho_a \mathrm{KL}(P 1 \mid a) + \rho_b \mathrm{KL}(P^\top 1 \mid b),

    where a ``None`` strength turns its penalty into the hard constraint (``P 1 = a``).

    Parameters
    ----------
    a : Tensor or array, shape (..., n), or None
        Source weights (``None``: uniform).
    b : Tensor or array, shape (..., m), or None
        Target weights (``None``: uniform). For a balanced problem, same total mass as ``a``.
    C : Tensor or array, shape (..., n, m)
        Cost matrix; leading dimensions are a batch of independent problems.
    eps : float
        Entropic regularisation, absolute (see :func:`eps_relative`); must be > 0.
    rho_a, rho_b : float or None
        Strengths of the KL marginal penalties (POT's ``reg_m`` with ``reg_type="kl"``);
        ``None`` (default) for a hard constraint.
    tol : float
        Stopping tolerance. Balanced problems stop when the L1 marginal violation
        :math:`\|P 1 - a\|_1 + \|P^\top 1 - b\|_1` is below ``tol``; unbalanced and
        semi-relaxed problems when the potentials change by less than ``tol * eps`` between two
        iterations, measured on ``f_i + g_j`` (that is, the plan's relative change
        :math:`\max_{ij} |\Delta \log P_{ij}|`), which ignores the shift ``(f + c, g - c)``.
    max_iter : int
        Iteration budget (at the final ``eps``).
    eps_scaling : float in (0, 1), optional
        Anneal ``eps`` geometrically from ``max(C)`` down to ``eps`` by this factor, one
        iteration per level, before iterating to convergence.
    init : tuple of Tensors (f, g), optional
        Warm-start potentials.
    check_every : int
        How often the stopping criterion is evaluated.
    omega : "auto" or float in (0, 2)
        Over-relaxation: each update moves the log-scalings ``omega`` times as far as Sinkhorn's
        own (``1.0``: plain Sinkhorn). ``"auto"`` (default) starts plain, reads the convergence
        rate ``r`` off the criterion and then relaxes with ``min(2 / (1 + sqrt(1 - r)), 1.95)``,
        the optimum of the linearised iteration; slow problems (small ``eps``, well-separated
        clusters) then need several times fewer iterations. Safeguarded: a problem whose
        criterion grows goes back to its last checked state with a smaller factor.
    warn : bool
        Emit a ``RuntimeWarning`` when a problem did not converge.
    progress : bool
        Show a progress bar.

    Returns
    -------
    OTResult
        ``plan``; ``value``, the regularised objective (its dual form at the returned
        potentials), differentiable in ``C``, ``a`` and ``b`` by the envelope theorem (the
        gradient for ``C`` is the plan; no back-propagation through the iterations);
        ``value_linear`` :math:`= \langle P, C\rangle`, whose gradient in ``C`` is the plan held
        fixed (POT's ``sinkhorn2`` convention); potentials ``f`` and ``g``, with
        :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`; ``n_iter``;
        ``converged`` (a bool, or a tensor of bools for a batch); ``marginal_error``.
        ``extra`` holds the per-problem iteration counts, the primal objective, the final
        criterion value, the number of log-domain absorptions and the over-relaxation factor
        each problem ended with (``"omega"``).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    >>> res = ob.sinkhorn(None, None, ob.cost_matrix(x, x + 0.5), eps=0.01)
    >>> res.converged, round(float(res.value_linear), 4)
    (True, 0.25)
    """
    C = check_cost(C, "C")
    eps = check_eps(eps)
    rho_a, rho_b = _check_rho(rho_a, "rho_a"), _check_rho(rho_b, "rho_b")
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    omega = check_relaxation(omega)
    if eps_scaling is not None:
        eps_scaling = check_positive(eps_scaling, "eps_scaling")
        if eps_scaling >= 1:
            raise ValueError(f"eps_scaling must be in (0, 1), got {eps_scaling}")
    n, m = C.shape[-2:]
    batch = C.shape[:-2]
    a = check_weights(a, n, "a", like=C, batch_shape=batch)
    b = check_weights(b, m, "b", like=C, batch_shape=batch)
    if rho_a is None and rho_b is None:
        check_same_mass(a, b)
    full = torch.broadcast_shapes(batch, a.shape[:-1], b.shape[:-1])
    Cb = C.detach().expand(*full, n, m).reshape(-1, n, m)
    ab = a.detach().expand(*full, n).reshape(-1, n)
    bb = b.detach().expand(*full, m).reshape(-1, m)
    f0 = g0 = None
    if init is not None:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise TypeError("init must be a pair (f, g) of potentials")
        f0 = check_potential(init[0], n, "init[0]", C).expand(*full, n).reshape(-1, n).clone()
        g0 = check_potential(init[1], m, "init[1]", C).expand(*full, m).reshape(-1, m).clone()

    def lam(rho):
        return (lambda e: 1.0) if rho is None else (lambda e: rho / (rho + e))

    levels = [eps]
    if eps_scaling is not None:
        levels = eps_schedule(max(float(Cb.max()), eps), eps, eps_scaling)

    with torch.no_grad():
        f, g, plan, err, done, iters, n_iter, n_absorb, omegas = _sinkhorn_dense(
            Cb, ab, bb, levels, lam(rho_a), lam(rho_b), tol, max_iter, check_every, f0, g0, progress,
            omega,
        )
        pa, pb = plan.sum(-1), plan.sum(-2)
        marg = (pa - ab).abs().sum(-1) + (pb - bb).abs().sum(-1)
        primal = _primal(plan, ab, bb, f, g, eps, rho_a, rho_b, marginals=(pa, pb))

    f = f.reshape(*full, n)
    g = g.reshape(*full, m)
    plan = plan.reshape(*full, n, m)
    value = _value(C, a, b, f, g, plan, eps, rho_a, rho_b)
    # <P, C> as a batched dot product: no n x m temporary
    Pd = plan.detach()
    value_linear = torch.matmul(Pd.reshape(*full, 1, n * m), C.reshape(*batch, n * m, 1))[..., 0, 0]
    if not (torch.isfinite(f).all() and torch.isfinite(g).all() and torch.isfinite(marg).all()):
        raise FloatingPointError(
            "sinkhorn produced non-finite values; this is a bug, please report it with the inputs"
        )
    converged = done.reshape(full)
    all_ok = bool(converged.all())
    if warn and not all_ok:
        bad = int((~converged).sum())
        warnings.warn(
            f"sinkhorn did not converge for {bad} problem(s) in {max_iter} iterations "
            f"(criterion {float(err.max()):.3g} > tol {tol:g}); raise max_iter, or use a larger "
            "eps or eps_scaling",
            RuntimeWarning,
            stacklevel=2,
        )
    return OTResult(
        plan=plan,
        value=value,
        value_linear=value_linear,
        f=f,
        g=g,
        n_iter=int(n_iter),
        converged=all_ok if full == () else converged,
        marginal_error=marg.reshape(full),
        extra={
            "n_iter_per_problem": iters.reshape(full),
            "primal": primal.reshape(full),
            "criterion": err.reshape(full),
            "n_absorptions": n_absorb,
            "omega": omegas.reshape(full),
            "eps": eps,
            "eps_levels": levels,
        },
    )


# --------------------------------------------------------------------------------------------
# online (blockwise) engine for point clouds


def _block_rows(n_rows: int, n_cols: int, dtype, budget_bytes: int) -> int:
    """Rows per block: a block of ``rows x n_cols`` stays within a few MB (cache-friendly)
    and within ``budget_bytes``."""
    size = torch.finfo(dtype).bits // 8
    cap = min(budget_bytes, 8 * 2**20)
    return max(1, min(n_rows, cap // max(1, n_cols * size)))


class _Online:
    """Log-sum-exp over ``j`` of ``h_j - |x_i - y_j|^2 / eps`` without an ``n x m`` matrix.

    With ``|x - y|^2 = |x|^2 + |y|^2 - 2 <x, y>`` the row term leaves the sum and the rest is one
    fused matrix product per block, ``2/eps x_i . y_j + (h_j - |y_j|^2 / eps)``, followed by an
    in-place exponential: the cost is recomputed, never stored. The points are centred first
    (the cost is translation invariant), which keeps the expansion accurate in float32.
    """

    def __init__(self, x, y, budget, xe=None, ye=None):
        c = 0.5 * (x.mean(0) + y.mean(0))
        self.x, self.y = x - c, y - c
        self.x2, self.y2 = (self.x**2).sum(1), (self.y**2).sum(1)
        if xe is None:
            # row and column forms of the points: the plain points
            self.xr = self.xk = self.x
            self.yr = self.yk = self.y
        else:
            # cost |x_i - y_j|^2 + <xe_i, ye_j> (a term that factors, e.g. a table lookup
            # T[c_i, c_j] = <T[c_i, :], onehot(c_j)>): as a row, a point carries -extra / 2, as a
            # column +extra, so -2 <row, column> adds the extra term inside the same product.
            self.xr, self.xk = torch.cat([self.x, -0.5 * xe], 1), torch.cat([self.x, xe], 1)
            self.yr, self.yk = torch.cat([self.y, -0.5 * ye], 1), torch.cat([self.y, ye], 1)
        self.bx = _block_rows(x.shape[0], y.shape[0], x.dtype, budget)
        self.by = _block_rows(y.shape[0], x.shape[0], x.dtype, budget)

    @staticmethod
    def _lse(p, q, q2, h, eps, block, shift=None):
        """``log sum_j exp(h_j - (|q_j|^2 - 2 p_i . q_j) / eps)`` for every row ``i``.

        (The row term ``|p_i|^2 / eps`` is left to the caller.) Without ``shift``, each block
        subtracts its row maxima before exponentiating. With ``shift`` (an estimate of the
        result, e.g. from the previous iteration) the shift is folded into the matrix product
        through two extra coordinates, ``[2 p_i / eps, 1, -shift_i] . [q_j, w_j, 1]``, so a
        block costs one product, one in-place ``exp`` and one sum; rows whose estimate was too
        far off (overflow or underflow) are recomputed exactly.
        """
        w = h - q2 / eps
        out = p.new_empty(p.shape[0])
        # exponents are clamped at ``lo`` (see _exp_floor): subnormal results are slow
        lo = _exp_floor(p.dtype)
        if shift is not None:
            pa = torch.cat([p * (2.0 / eps), p.new_ones(p.shape[0], 1), -shift[:, None]], 1)
            qa = torch.cat([q, w[:, None], q.new_ones(q.shape[0], 1)], 1).T.contiguous()
            for s in range(0, p.shape[0], block):
                z = pa[s:s + block] @ qa
                out[s:s + block] = z.clamp_(min=lo).exp_().sum(1).log_()
            # a row whose sum is near the floor (every term clamped: the guess was far too high)
            # or overflowed (far too low) is recomputed exactly
            bad = ~torch.isfinite(out) | (out < lo + math.log(q.shape[0]) + 20.0)
            out += shift
            if bool(bad.any()):
                rows = bad.nonzero()[:, 0]
                out[rows] = _Online._lse(p[rows], q, q2, h, eps, block)
            return out
        qt = q.T.contiguous()
        for s in range(0, p.shape[0], block):
            z = torch.addmm(w[None, :], p[s:s + block], qt, alpha=2.0 / eps)
            mx = z.amax(1, keepdim=True)
            out[s:s + block] = mx[:, 0] + z.sub_(mx).clamp_(min=lo).exp_().sum(1).log_()
        return out

    def update_f(self, log_b, g, eps, f_prev=None):
        """f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps); ``f_prev``, a guess, saves a pass."""
        shift = None if f_prev is None else (self.x2 - f_prev) / eps
        return self.x2 - eps * self._lse(self.xr, self.yk, self.y2, log_b + g / eps, eps, self.bx, shift)

    def update_g(self, log_a, f, eps, g_prev=None):
        shift = None if g_prev is None else (self.y2 - g_prev) / eps
        return self.y2 - eps * self._lse(self.yr, self.xk, self.x2, log_a + f / eps, eps, self.by, shift)

    def self_lse(self, h, eps, guess=None):
        """``log sum_j exp(h_j - C_ij / eps)`` for the symmetric problem (``x`` is ``y``)."""
        shift = None if guess is None else guess + self.x2 / eps
        return self._lse(self.xr, self.yk, self.x2, h, eps, self.bx, shift) - self.x2 / eps

    def self_lse_fn(self, eps):
        """The ``lse_fn(h, guess)`` that :func:`_symmetric` expects."""
        return lambda h, guess: self.self_lse(h, eps, guess)

    def plan_blocks(self, a, b, f, g, eps, transpose=False):
        """Blocks of rows of the plan ``P = a b^T exp((f + g - C) / eps)`` (or of ``P^T``):
        yields ``(start, block)``; the plan itself is never stored."""
        p, q, p2, q2, wp, wq, fp, gq, block = (
            (self.xr, self.yk, self.x2, self.y2, a, b, f, g, self.bx) if not transpose
            else (self.yr, self.xk, self.y2, self.x2, b, a, g, f, self.by)
        )
        w = torch.log(wq) + (gq - q2) / eps
        r = torch.log(wp) + (fp - p2) / eps
        qt = q.T.contiguous()
        for s in range(0, p.shape[0], block):
            z = torch.addmm(w[None, :], p[s:s + block], qt, alpha=2.0 / eps)
            P = z.add_(r[s:s + block, None]).clamp_(min=_exp_floor(z.dtype)).exp_()
            yield s, P.masked_fill_(P < 1.5 * math.exp(_exp_floor(z.dtype)), 0.0)

    def plan_products(self, a, b, f, g, eps, transpose=False):
        """Row sums of P and P @ y (or, transposed, column sums and P^T @ x), block by block."""
        p, q = (self.x, self.y) if not transpose else (self.y, self.x)
        rows = p.new_empty(p.shape[0])
        Pq = p.new_empty(p.shape)
        for s, P in self.plan_blocks(a, b, f, g, eps, transpose):
            rows[s:s + P.shape[0]] = P.sum(1)
            Pq[s:s + P.shape[0]] = P @ q
        return rows, Pq, p


def _sinkhorn_online(x, y, a, b, eps, tol, max_iter, eps_scaling, budget_bytes, xe=None, ye=None,
                     span=None, g_init=None, omega=1.0, check_every: int = 10):
    """Balanced log-domain Sinkhorn for the squared Euclidean cost (plus a factored extra term
    ``<xe_i, ye_j>``, see :class:`_Online`) without an n x m matrix.

    The stopping test is free: the row marginal of the plan (f, g) is read off the next
    f-update, ``P 1 = a exp((f - T_f(g)) / eps)``, and its column marginal off the g-update,
    ``P^T 1 = b exp((g - T_g(f)) / eps)`` (exact, ``b``, without relaxation). ``span``
    (optional) is the largest cost, where eps-scaling starts. ``g_init`` (optional) is a warm
    start for ``g`` (then no eps-scaling). ``omega``: over-relaxation (see :class:`_Relax`),
    whose safeguard looks at the criterion every ``check_every`` iterations.
    """
    eng = _Online(x, y, budget_bytes, xe, ye)
    log_a, log_b = torch.log(a), torch.log(b)
    g = y.new_zeros(y.shape[0]) if g_init is None else g_init.clone()
    levels = [eps]
    if eps_scaling is not None and g_init is None:
        if span is None:
            box = torch.cat([eng.x, eng.y]).amax(0) - torch.cat([eng.x, eng.y]).amin(0)
            span = float((box**2).sum())
        levels = eps_schedule(max(span, eps), eps, eps_scaling)
    for e in levels[:-1]:  # annealing: one update per level
        f = eng.update_f(log_b, g, e)
        g = eng.update_g(log_a, f, e)
    f = eng.update_f(log_b, g, eps)
    n_iter, err, converged = len(levels) - 1, float("inf"), False
    relax = _Relax(omega, 1, x)
    saved, Tg = None, None
    for it in range(1, max_iter + 1):
        Tg = eng.update_g(log_a, f, eps, Tg)
        g = relax.mix_log(g, Tg)
        n_iter += 1
        Tf = eng.update_f(log_b, g, eps, f)
        # the L1 marginal violation of the plan (f, g): rows, and columns (0 without relaxation)
        e = (a * torch.expm1((f - Tf) / eps).abs()).sum() + (b * torch.expm1((g - Tg) / eps).abs()).sum()
        err = float(e)
        if err <= tol:
            converged = True
            break
        if (relax.auto or relax.active) and it % check_every == 0:
            back, improved = relax.check([err], check_every, tol)
            if back is not None:  # return to the best state, recompute its T_f(g)
                f, g = saved
                Tf = eng.update_f(log_b, g, eps, f)
                err = float(relax.prev_err[0])
            elif improved[0]:
                saved = (f, g)
        f = relax.mix_log(f, Tf)
    return f, g, n_iter, err, converged, eng


def _symmetric(lse_fn, a, eps, tol, max_iter):
    """Potential of the symmetric problem OT_eps(alpha, alpha), by averaged updates.

    ``lse_fn(h, guess)`` returns ``log sum_j exp(h_j - C_ij / eps)`` (``guess``: an estimate of
    it, or None). The averaged fixed-point
    iteration f <- (f + T(f)) / 2 converges in a few dozen steps where the alternating one
    crawls (the symmetric problem is the slow case of Sinkhorn). The criterion is the L1
    marginal violation of the plan a a^T exp((f + f - C)/eps), read off T(f) for free.
    """
    log_a = torch.log(a)
    f = a.new_zeros(a.shape)
    err = float("inf")
    Tf = None
    for it in range(1, max_iter + 1):
        Tf = -eps * lse_fn(log_a + f / eps, None if Tf is None else -Tf / eps)
        err = float((a * torch.expm1((f - Tf) / eps).abs()).sum())
        if err <= tol:
            return f, it, err, True
        f = 0.5 * (f + Tf)
    return f, max_iter, err, False


def _symmetric_dense(C, a, eps, tol, max_iter, check_every: int = 5):
    """:func:`_symmetric` on a stored cost, at the speed of the kernel domain.

    With a base potential ``f0`` and ``f = f0 + eps log u``, the averaged update
    ``f <- (f + T f) / 2`` reads ``u <- sqrt(u / (K~ (a u)))`` with the stabilised kernel
    ``K~ = exp((f0_i + f0_j - C_ij) / eps)``: one matrix-vector product per step instead of an
    ``n x n`` log-sum-exp. One log-domain step gives the first base; when ``u`` drifts far from 1
    it is absorbed into ``f0`` and the kernel rebuilt (as in :func:`sinkhorn`). The criterion is
    the same, ``sum_i a_i |u_i (K~ a u)_i - 1|``.
    """
    M = C / -eps
    log_a = torch.log(a)
    f = 0.5 * -eps * torch.logsumexp(M + log_a[None, :], dim=1)  # one averaged step from f = 0
    lo = _exp_floor(C.dtype)
    thr = _threshold(C.dtype) ** 0.5

    def kernel(f0):
        K = M + f0[:, None] / eps
        K.add_(f0[None, :] / eps).clamp_(min=lo).exp_()
        return K.masked_fill_(K < 1.5 * math.exp(lo), 0.0)

    K = kernel(f)
    u = torch.ones_like(a)
    err = float("inf")
    for it in range(1, max_iter + 1):
        s = K @ (a * u)
        if it % check_every == 0 or it == max_iter:
            err = float((a * (u * s - 1.0).abs()).sum())
            if err <= tol:
                return f + eps * torch.log(u), it, err, True
            lo_u, hi_u = torch.aminmax(u)
            if not (hi_u < thr and lo_u > 1.0 / thr) or not bool(torch.isfinite(s).all()):
                f = f + eps * torch.log(u)
                K = kernel(f)
                u = torch.ones_like(a)
                continue
        u = torch.sqrt(u / s)
    return f + eps * torch.log(u), max_iter, err, False


class _OnlineOTValue(torch.autograd.Function):
    """<a, f> + <b, g> at converged potentials, with envelope gradients in x, y, a, b.

    d/dx_i = sum_j P_ij 2 (x_i - y_j), computed block by block from the potentials.
    """

    @staticmethod
    def forward(ctx, x, y, a, b, f, g, eps, eng):
        ctx.save_for_backward(a, b, f, g)
        ctx.eps, ctx.eng = eps, eng
        return (a * f).sum() + (b * g).sum()

    @staticmethod
    def backward(ctx, grad):
        a, b, f, g = ctx.saved_tensors
        eps, eng = ctx.eps, ctx.eng
        gx = gy = None
        if ctx.needs_input_grad[0]:
            rows, Py, xc = eng.plan_products(a, b, f, g, eps)
            gx = grad * 2.0 * (xc * rows[:, None] - Py)
        if ctx.needs_input_grad[1]:
            cols, Px, yc = eng.plan_products(a, b, f, g, eps, transpose=True)
            gy = grad * 2.0 * (yc * cols[:, None] - Px)
        ga = grad * f if ctx.needs_input_grad[2] else None
        gb = grad * g if ctx.needs_input_grad[3] else None
        return gx, gy, ga, gb, None, None, None, None


def sinkhorn_divergence(x, y, eps, *, a=None, b=None, cost="sqeuclidean", tol: float = 1e-6,
                        max_iter: int = 10_000, eps_scaling: float | None = None,
                        backend: str = "auto", memory_budget: float | None = None, omega="auto",
                        warn: bool = True):
    r"""The debiased Sinkhorn divergence between two weighted point clouds.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`\mathrm{OT}_\varepsilon` the balanced entropic problem of :func:`sinkhorn`. It is
    non-negative, zero when the measures coincide, and for the squared Euclidean cost
    :math:`S_\varepsilon(\alpha, \alpha(\cdot - t)) = \|t\|^2` exactly.

    Parameters
    ----------
    x, y : Tensor or array, shapes (n, d) and (m, d)
        The two point clouds (differentiable).
    eps : float
        Entropic regularisation (absolute), > 0.
    a, b : Tensor or array, optional
        Weights (default uniform), same total mass.
    cost : str or callable
        Ground cost (see :func:`cost_matrix`). The online backend supports ``"sqeuclidean"``.
    tol, max_iter, eps_scaling, omega, warn
        As in :func:`sinkhorn`, for each of the three problems (``omega`` for the cross one;
        the two symmetric problems run their own averaged iteration).
    backend : {"auto", "dense", "online"}
        ``"dense"`` stores the ``n x m`` cost matrices; ``"online"`` recomputes the cost block by
        block in log-domain, with memory linear in ``n + m``; ``"auto"`` picks ``"online"`` when
        the dense matrices would exceed ``memory_budget`` bytes.
    memory_budget : float or None
        Bytes the dense backend may use (and the block size of the online backend). ``None``
        (default): half of the free memory of a CUDA device, 2 GB on the CPU.

    Returns
    -------
    Tensor
        :math:`S_\varepsilon`, a scalar, differentiable in ``x``, ``y``, ``a`` and ``b`` (envelope
        gradients from the potentials).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(50, 2, dtype=torch.float64)
    >>> s = ob.sinkhorn_divergence(x, x + torch.tensor([1.0, 0.0], dtype=torch.float64), eps=0.1)
    >>> round(float(s), 5)
    1.0
    """
    x, y = check_clouds(x, y)
    eps = check_eps(eps)
    a = check_weights(a, x.shape[0], "a", like=x)
    b = check_weights(b, y.shape[0], "b", like=x)
    check_same_mass(a, b)
    budget = check_memory_budget(memory_budget, x)
    omega = check_relaxation(omega)
    if backend not in ("auto", "dense", "online"):
        raise ValueError(f"backend must be 'auto', 'dense' or 'online', got {backend!r}")
    n, m = x.shape[0], y.shape[0]
    size = torch.finfo(x.dtype).bits // 8
    dense_bytes = 3 * (n * m + n * n + m * m) * size
    if backend == "auto":
        backend = "dense" if dense_bytes <= budget else "online"
    if backend == "online":
        if cost != "sqeuclidean":
            raise ValueError("the online backend supports cost='sqeuclidean' only")
        return _divergence_online(x, y, a, b, eps, tol, max_iter, eps_scaling, int(budget), warn,
                                  omega)

    ot_xy = sinkhorn(a, b, cost_matrix(x, y, cost), eps, tol=tol, max_iter=max_iter,
                     eps_scaling=eps_scaling, omega=omega, warn=warn).value
    self_terms = []
    for p, w in ((x, a), (y, b)):
        Cpp = cost_matrix(p, p, cost)
        Cd = Cpp.detach()
        f, n_iter, err, ok = _symmetric_dense(Cd, w.detach(), eps, tol, max_iter)
        _warn_symmetric(warn, ok, n_iter, err, tol)
        with torch.no_grad():
            plan = w[:, None] * w[None, :] * torch.exp((f[:, None] + f[None, :] - Cd) / eps)
        self_terms.append(_value(Cpp, w, w, f, f, plan, eps, None, None))
    return ot_xy - 0.5 * (self_terms[0] + self_terms[1])


def _warn_symmetric(warn, ok, n_iter, err, tol):
    if warn and not ok:
        warnings.warn(
            f"sinkhorn_divergence: a symmetric problem did not converge in {n_iter} iterations "
            f"(marginal error {err:.3g} > tol {tol:g})",
            RuntimeWarning,
            stacklevel=3,
        )


def _divergence_online(x, y, a, b, eps, tol, max_iter, eps_scaling, budget, warn, omega):
    with torch.no_grad():
        f, g, n_iter, err, ok, eng = _sinkhorn_online(
            x.detach(), y.detach(), a.detach(), b.detach(), eps, tol, max_iter, eps_scaling, budget,
            omega=omega,
        )
    if warn and not ok:
        warnings.warn(
            f"sinkhorn_divergence (online): the problem did not converge in {n_iter} iterations "
            f"(marginal error {err:.3g} > tol {tol:g})",
            RuntimeWarning,
            stacklevel=3,
        )
    values = [_OnlineOTValue.apply(x, y, a, b, f, g, eps, eng)]
    for p, w in ((x, a), (y, b)):
        with torch.no_grad():
            eng_p = _Online(p.detach(), p.detach(), budget)
            f, n_iter, err, ok = _symmetric(eng_p.self_lse_fn(eps), w.detach(), eps, tol, max_iter)
        _warn_symmetric(warn, ok, n_iter, err, tol)
        values.append(_OnlineOTValue.apply(p, p, w, w, f, f, eps, eng_p))
    return values[0] - 0.5 * (values[1] + values[2])
