r"""The engine's entry points for library code: one Sinkhorn solve, one symmetric solve, one
debiased divergence, over any :class:`~otbook.Cost`, dense or online, batched.

Entry points take *checked* inputs (the public functions check once): a flat cost (one batch
dimension ``B``, see :meth:`~otbook.Cost.broadcast`), weights of shape ``(B, n)`` and
``(B, m)``, an ``eps > 0`` and :class:`Options`. Library modules that solve entropic problems
(Gromov-Wasserstein, maps, dataset distances, ...) call these instead of the public
:func:`~otbook.sinkhorn`, so nothing is checked twice inside a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .._runtime import dense_fits, memory_budget, progress, threads_for, warn
from ..costs import PointCloud
from .kernel import DenseKernel, OnlineKernel
from .loop import Marginals, iterate, symmetric
from .objective import ot_value, primal
from .schedule import eps_schedule

__all__ = ["Options", "Solution", "choose_backend", "solve", "solve_symmetric", "debiased",
           "Divergence", "cloud_divergence", "solution_message", "unconverged_message",
           "divergence_value"]

BACKENDS = ("auto", "dense", "online")


@dataclass(frozen=True)
class Options:
    """How a solve runs (the public functions' keyword arguments of the same names).

    ``tol`` and ``max_iter``: stopping rule; ``check_every``: how often the criterion is
    evaluated; ``omega``: over-relaxation (``"auto"`` or a factor in (0, 2)); ``eps_scaling``:
    anneal ``eps`` from the largest cost by this factor first; ``backend``: ``"dense"``,
    ``"online"`` or ``"auto"`` (dense when it fits in ``memory_budget`` bytes; ``None``: the
    device's default); ``progress``: a progress bar; ``symmetric_check_every``: the same for the
    averaged symmetric solver."""

    tol: float = 1e-6
    max_iter: int = 10_000
    check_every: int = 10
    omega: object = "auto"
    eps_scaling: float | None = None
    backend: str = "auto"
    memory_budget: float | None = None
    progress: bool = False
    symmetric_check_every: int = 5

    def but(self, **changes) -> "Options":
        """A copy with some settings changed."""
        return replace(self, **changes)


@dataclass
class Solution:
    """What the engine found for a flat batch of ``B`` problems.

    ``f, g``: potentials, ``(B, n)`` and ``(B, m)``; ``plan``: ``(B, n, m)`` (dense backend) or
    ``None`` (online: :meth:`plan_blocks` streams it); ``pa, pb``: the plan's marginals;
    ``row_density, col_density``: the same per unit of ``a`` and ``b``; ``err, done, iters``:
    criterion, convergence and iterations per problem; ``n_iter``: iterations run (annealing
    included); ``n_absorb``: absorptions; ``omega``: the over-relaxation factor each problem
    ended with; ``backend``; ``eps`` and ``levels`` (the eps schedule)."""

    a: torch.Tensor
    b: torch.Tensor
    eps: float
    rho_a: float | None
    rho_b: float | None
    f: torch.Tensor
    g: torch.Tensor
    plan: torch.Tensor | None
    pa: torch.Tensor
    pb: torch.Tensor
    row_density: torch.Tensor
    col_density: torch.Tensor
    err: torch.Tensor
    done: torch.Tensor
    iters: torch.Tensor
    n_iter: int
    n_absorb: int
    omega: torch.Tensor
    backend: str
    levels: list
    kernel: object = None
    scalings: tuple | None = None

    def plan_blocks(self, transpose: bool = False):
        """Yield ``(start, block)``: rows of the plan (or of its transpose)."""
        if self.plan is not None:
            P = self.plan.transpose(-1, -2) if transpose else self.plan
            yield 0, P
            return
        yield from self.kernel.plan_blocks(*self.scalings, transpose=transpose)

    @property
    def primal(self):
        return primal(self.a, self.b, self.f, self.g, self.eps, self.rho_a, self.rho_b,
                      self.pa, self.pb)

    @property
    def marginal_error(self):
        return (self.pa - self.a).abs().sum(-1) + (self.pb - self.b).abs().sum(-1)


def choose_backend(backend: str, entries, like: torch.Tensor, budget) -> str:
    """``"dense"`` or ``"online"``: as asked, or for ``"auto"``, dense when matrices of
    ``entries`` entries (problems solved one after the other) fit in the memory budget."""
    if backend != "auto":
        return backend
    return "dense" if dense_fits(entries, like.dtype, memory_budget(budget, like)) else "online"


def _kernel(cost, a, b, eps, backend, budget):
    if backend == "dense":
        return DenseKernel(cost.block(slice(0, cost.n)).detach(), a, b, eps)
    return OnlineKernel(cost.detach(), a, b, eps, memory_budget(budget, a))


def _levels(cost, eps, opts, warm):
    """The eps schedule: annealing from the largest cost (unless warm-started), ending at eps."""
    if opts.eps_scaling is None or warm:
        return [eps]
    top = float(cost.reduce("max").max())
    return eps_schedule(max(top, eps), eps, opts.eps_scaling, name="eps_scaling")


def solve(cost, a, b, eps: float, opts: Options, rho_a=None, rho_b=None, init_g=None) -> Solution:
    """Solve the entropic problem of the flat ``cost`` between ``a`` and ``b`` (checked, no
    gradient), optionally warm-started from the target potential ``init_g``."""
    marg = Marginals(rho_a, rho_b)
    a, b = a.detach(), b.detach()
    backend = choose_backend(opts.backend, [a.shape[0] * cost.n * cost.m], a, opts.memory_budget)
    with torch.no_grad(), threads_for(a.shape[0] * cost.n * cost.m, a):
        K = _kernel(cost, a, b, eps, backend, opts.memory_budget)
        levels = _levels(cost, eps, opts, init_g is not None)
        g = init_g
        for e in levels[:-1]:  # annealing: one exact log-domain update per level
            lam_a, lam_b = marg.lam(e)
            f = K.update_f(a.new_zeros(a.shape[0], cost.m) if g is None else g, e, lam_a)
            g = K.update_g(f, e, lam_b)
        # a cold balanced start takes both c-transforms as base potentials: from g = 0 the
        # scalings would drift by up to exp(max C / eps) at once and force an absorption
        K.start(g, both=g is None and marg.balanced)
        with progress(opts.progress, total=opts.max_iter, desc="sinkhorn") as bar:
            st, (err, done, iters, n_absorb, omegas, n_run) = iterate(
                K, marg, opts.tol, opts.max_iter, opts.check_every, opts.omega, bar)
        return _finish(K, st, marg, err, done, iters + len(levels) - 1, n_run + len(levels) - 1,
                       n_absorb, omegas, backend, levels)


def _finish(K, st, marg, err, done, iters, n_iter, n_absorb, omegas, backend, levels):
    lam_a, lam_b = marg.lam(K.eps)
    u, v = st.u, st.v
    s = K.mv(K.b * v)
    if lam_a == 1.0 and lam_b != 1.0:
        # semi-relaxed with a hard source side: end on its update, so that P 1 = a exactly
        u = 1.0 / s
        s = 1.0 / u
    t = K.rmv(K.a * u)
    f, g = K.potentials(u, v)
    rows, cols = u * s, v * t
    plan = K.plan(u, v) if backend == "dense" else None
    return Solution(a=K.a, b=K.b, eps=K.eps, rho_a=marg.rho_a, rho_b=marg.rho_b, f=f, g=g,
                    plan=plan, pa=K.a * rows, pb=K.b * cols, row_density=rows,
                    col_density=cols, err=err, done=done, iters=iters, n_iter=int(n_iter),
                    n_absorb=n_absorb, omega=omegas, backend=backend, levels=levels,
                    kernel=K if plan is None else None, scalings=(u, v) if plan is None else None)


def solve_symmetric(cost, a, eps: float, opts: Options, backend=None) -> Solution:
    """The symmetric problem ``OT_eps(alpha, alpha)`` of a flat cloud-against-itself ``cost``
    with weights ``a`` (averaged updates, see :func:`~otbook.sinkhorn.loop.symmetric`)."""
    a = a.detach()
    n = cost.n
    backend = backend or choose_backend(opts.backend, [a.shape[0] * n * n], a,
                                        opts.memory_budget)
    with torch.no_grad(), threads_for(a.shape[0] * n * n, a):
        K = _kernel(cost, a, a, eps, backend, opts.memory_budget)
        f, err, done, iters, n_absorb = symmetric(K, opts.tol, opts.max_iter,
                                                  opts.symmetric_check_every)
        K.rebase(f, f)
        one = torch.ones_like(a)
        s = K.mv(a)
        plan = K.plan(one, one) if backend == "dense" else None
    return Solution(a=a, b=a, eps=eps, rho_a=None, rho_b=None, f=f, g=f, plan=plan, pa=a * s,
                    pb=a * s, row_density=s, col_density=s, err=err, done=done.to(a.device),
                    iters=iters.to(a.device), n_iter=int(iters.max()), n_absorb=n_absorb,
                    omega=torch.ones(a.shape[0], dtype=a.dtype), backend=backend, levels=[eps],
                    kernel=K if plan is None else None,
                    scalings=(one, one) if plan is None else None)


@dataclass
class Divergence:
    r"""A debiased divergence :math:`\mathrm{OT}_\varepsilon(\alpha, \beta) - \frac12
    \mathrm{OT}_\varepsilon(\alpha, \alpha) - \frac12 \mathrm{OT}_\varepsilon(\beta, \beta)`:
    ``value`` (per problem, differentiable) and the three solutions."""

    value: torch.Tensor
    cross: Solution
    self_x: Solution
    self_y: Solution

    @property
    def converged(self) -> torch.Tensor:
        return self.cross.done & self.self_x.done & self.self_y.done


def debiased(cost_xy, cost_xx, cost_yy, a, b, eps: float, opts: Options, *,
             warm: bool = True) -> Divergence:
    """The debiased (Sinkhorn) divergence over three flat costs: the two symmetric problems
    first, then the cross problem warm-started from their potentials (with ``warm``: close
    datasets make a block-structured cross problem, which a cold start crawls through), and
    the value with envelope gradients in the costs' tensors and the weights. One backend for
    all three, chosen from the largest of the three matrices."""
    B, n, m = a.shape[0], cost_xy.n, cost_xy.m
    backend = choose_backend(opts.backend, [B * n * m, B * n * n, B * m * m], a,
                             opts.memory_budget)
    opts = opts.but(backend=backend)
    sx = solve_symmetric(cost_xx.detach(), a, eps, opts, backend)
    sy = solve_symmetric(cost_yy.detach(), b, eps, opts, backend)
    cross = solve(cost_xy.detach(), a, b, eps, opts, init_g=sy.g if warm else None)
    value = (ot_value(cross, cost_xy, a, b)
             - 0.5 * (ot_value(sx, cost_xx, a, a) + ot_value(sy, cost_yy, b, b)))
    return Divergence(value, cross, sx, sy)


def cloud_divergence(x, y, a, b, eps: float, opts: Options, cost="sqeuclidean") -> Divergence:
    """The Sinkhorn divergence between checked point clouds ``x (..., n, d)`` and
    ``y (..., m, d)`` with checked weights broadcast to the batch shape ``(..., n)`` and
    ``(..., m)``; ``value`` has that batch shape. The cross problem starts warm from the
    symmetric potentials, or, with ``opts.eps_scaling``, cold with annealing."""
    full = a.shape[:-1]
    n, m = x.shape[-2], y.shape[-2]
    xy = PointCloud(x, y, cost, checked=True)
    xx, yy = PointCloud(x, x, cost, checked=True), PointCloud(y, y, cost, checked=True)
    div = debiased(xy.broadcast(full), xx.broadcast(full), yy.broadcast(full),
                   a.reshape(-1, n), b.reshape(-1, m), eps, opts, warm=opts.eps_scaling is None)
    div.value = div.value.reshape(full)
    return div


def solution_message(what: str, sol: Solution, opts: Options) -> str:
    """The warning for a solution some of whose problems did not converge."""
    bad = int((~sol.done).sum())
    return (f"{what} did not converge for {bad} problem(s) in {opts.max_iter} iterations "
            f"(criterion {float(sol.err[~sol.done].max()):.3g} > tol {opts.tol:g}); raise "
            "max_iter, or use a larger eps or eps_scaling")


def unconverged_message(what: str, div: Divergence, opts: Options) -> str | None:
    """The warning for a divergence whose solves did not all converge (``None`` if they did)."""
    for part, sol in (("the cross problem", div.cross), ("a symmetric problem", div.self_x),
                      ("a symmetric problem", div.self_y)):
        if not bool(sol.done.all()):
            return solution_message(f"{what}: {part}", sol, opts)
    return None


def divergence_value(x, y, eps: float, opts: Options, what: str, a=None, b=None):
    """:math:`S_\\varepsilon` between checked clouds ``(n, d)`` and ``(m, d)`` (weights checked,
    or ``None`` for uniform), differentiable; a ``RuntimeWarning`` naming ``what`` when a solve
    did not converge (loops collect these with :class:`~otbook._runtime.WarningSummary`)."""
    a = x.new_full((x.shape[0],), 1.0 / x.shape[0]) if a is None else a
    b = y.new_full((y.shape[0],), 1.0 / y.shape[0]) if b is None else b
    div = cloud_divergence(x, y, a, b, eps, opts)
    message = unconverged_message(what, div, opts)
    if message:
        warn(message, stacklevel=3)
    return div.value
