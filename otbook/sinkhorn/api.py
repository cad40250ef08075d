"""The public doors of the engine: :func:`sinkhorn` and :func:`sinkhorn_divergence`.

Each checks its inputs once, turns them into a flat :class:`~otbook.Cost` and weights, calls
the engine (:mod:`otbook.sinkhorn.engine`) and wraps what it found.
"""

from __future__ import annotations

import torch

from .._checks import (broadcast_shapes, check_choice, check_eps, check_pair_points,
                       check_positive, check_positive_int, check_potential, check_relaxation,
                       check_same_mass, check_scaling, check_weights)
from .._runtime import warn as _warn_runtime
from ..costs import as_cost, check_ground
from ..result import OTResult
from .engine import (BACKENDS, Options, cloud_divergence, solution_message, solve,
                     unconverged_message)
from .objective import linear_value, ot_value

__all__ = ["sinkhorn", "sinkhorn_divergence"]


def _options(tol, max_iter, check_every, omega, eps_scaling, backend, memory_budget, progress):
    """Check the solver settings shared by the public functions; return :class:`Options`."""
    eps_scaling = check_scaling(eps_scaling)
    if memory_budget is not None:
        memory_budget = check_positive(memory_budget, "memory_budget")
    return Options(tol=check_positive(tol, "tol"),
                   max_iter=check_positive_int(max_iter, "max_iter"),
                   check_every=check_positive_int(check_every, "check_every"),
                   omega=check_relaxation(omega), eps_scaling=eps_scaling,
                   backend=check_choice(backend, "backend", BACKENDS),
                   memory_budget=memory_budget, progress=bool(progress))


def _reference(cost) -> torch.Tensor:
    """An empty tensor with the cost's dtype and device (what new weights are made like)."""
    return torch.empty(0, dtype=cost.dtype, device=cost.device)


def _flat_weights(w, n, full):
    return w.expand(*full, n).reshape(-1, n)


def _check_finite_result(sol, eps, cost, *values):
    if bool(torch.isfinite(sol.f).all() and torch.isfinite(sol.g).all()
            and all(bool(torch.isfinite(v).all()) for v in values)):
        return
    info = torch.finfo(sol.f.dtype)
    mass = float(sol.a.sum(-1).max() * sol.b.sum(-1).max())
    if not mass < info.max / 1e6:
        raise ValueError(f"the weights' total masses are too large ({mass:.3g} for their product "
                         f"in {sol.f.dtype}): the entropic objective, which holds eps times that "
                         "product, overflows; normalise a and b")
    top = float(cost.reduce("max").abs().max())
    if eps < top * info.eps or top / eps > info.max / 1e3:
        raise ValueError(f"eps={eps:g} is below the resolution of costs as large as {top:.3g} "
                         f"in {sol.f.dtype} (C / eps loses every digit): use a larger eps (see "
                         "ob.eps_relative), or exact OT (ob.emd)")
    raise FloatingPointError("sinkhorn produced non-finite potentials; this is a bug, please "
                             "report it with the inputs")


def sinkhorn(a, b, C, eps, *, rho_a=None, rho_b=None, tol: float = 1e-6, max_iter: int = 10_000,
             eps_scaling: float | None = None, init=None, check_every: int = 10,
             omega="auto", backend: str = "auto", memory_budget: float | None = None,
             warn: bool = True, progress: bool = False) -> OTResult:
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
    C : Tensor, array or :class:`~otbook.Cost`, shape (..., n, m)
        The cost: a matrix, or a cost object (point clouds under a ground cost, a weighted sum
        of costs, ...), which can also be solved online without an ``n x m`` matrix. Leading
        dimensions are a batch of independent problems.
    eps : float
        Entropic regularisation, absolute (see :func:`eps_relative`); must be > 0.
    rho_a, rho_b : float or None
        Strengths of the KL marginal penalties (POT's ``reg_m`` with ``reg_type="kl"``);
        ``None`` (default) for a hard constraint.
    tol : float
        Stopping tolerance. Balanced problems stop when the L1 marginal violation
        :math:`\|P 1 - a\|_1 + \|P^\top 1 - b\|_1` is below ``tol`` times the total mass
        (for weights that sum to one, below ``tol``; weights may be raw counts); unbalanced and
        semi-relaxed problems when the potentials change by less than ``tol * eps`` between two
        iterations, measured on ``f_i + g_j`` (that is, the plan's relative change
        :math:`\max_{ij} |\Delta \log P_{ij}|`), which ignores the shift ``(f + c, g - c)``.
    max_iter : int
        Iteration budget (at the final ``eps``).
    eps_scaling : float in (0, 1), optional
        Anneal ``eps`` geometrically from ``max(C)`` down to ``eps`` by this factor, one
        iteration per level, before iterating to convergence.
    init : tuple of Tensors (f, g), optional
        Warm-start potentials (the iterations start from ``g`` and its c-transform).
    check_every : int
        How often the stopping criterion is evaluated.
    omega : "auto" or float in (0, 2)
        Over-relaxation: each update moves the log-scalings ``omega`` times as far as Sinkhorn's
        own (``1.0``: plain Sinkhorn). ``"auto"`` (default) starts plain, reads the convergence
        rate ``r`` off the criterion and then relaxes with ``min(2 / (1 + sqrt(1 - r)), 1.98)``,
        the optimum of the linearised iteration; slow problems (small ``eps``, well-separated
        clusters) then need several times fewer iterations. Safeguarded: a problem whose
        criterion grows or stalls goes back to its best state with a smaller factor.
    backend : {"auto", "dense", "online"}
        ``"dense"`` stores the ``n x m`` cost and kernel; ``"online"`` recomputes them block by
        block (memory linear in ``n + m``; the plan is not returned); ``"auto"`` goes online
        when the dense matrices would not fit in ``memory_budget``.
    memory_budget : float or None
        Bytes the dense backend may use; ``None``: half of the free memory of a CUDA device,
        2 GB on a CPU.
    warn : bool
        Emit a ``RuntimeWarning`` when a problem did not converge.
    progress : bool
        Show a progress bar.

    Returns
    -------
    OTResult
        ``plan`` (``None`` when the online backend ran); ``value``, the regularised objective
        (its dual form at the returned potentials), differentiable in the cost, ``a`` and ``b``
        by the envelope theorem (the gradient for ``C`` is the plan; no back-propagation through
        the iterations); ``value_linear`` :math:`= \langle P, C\rangle`, whose gradient in the
        cost is the plan held fixed (POT's ``sinkhorn2`` convention); potentials ``f`` and
        ``g``, with :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`; ``n_iter``;
        ``converged`` (a bool, or a tensor of bools for a batch); ``marginal_error``.
        ``extra`` holds the per-problem iteration counts, the primal objective, the final
        criterion value, the number of log-domain absorptions, the over-relaxation factor each
        problem ended with (``"omega"``) and the backend.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    >>> res = ob.sinkhorn(None, None, ob.cost_matrix(x, x + 0.5), eps=0.01)
    >>> res.converged, round(float(res.value_linear), 3)
    (True, 0.25)
    """
    cost = as_cost(C)
    eps = check_eps(eps)
    rho_a = check_positive(rho_a, "rho_a", allow_none=True)
    rho_b = check_positive(rho_b, "rho_b", allow_none=True)
    opts = _options(tol, max_iter, check_every, omega, eps_scaling, backend, memory_budget,
                    progress)
    n, m, batch = cost.n, cost.m, cost.batch_shape
    like = _reference(cost)
    a = check_weights(a, n, "a", like=like, batch_shape=batch)
    b = check_weights(b, m, "b", like=like, batch_shape=batch)
    if rho_a is None and rho_b is None:
        check_same_mass(a, b)
    full = broadcast_shapes(batch, a.shape[:-1], b.shape[:-1])
    flat = cost.broadcast(full)
    af, bf = _flat_weights(a, n, full), _flat_weights(b, m, full)
    g0 = None
    if init is not None:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise TypeError("init must be a pair (f, g) of potentials")
        check_potential(init[0], n, "init[0]", like)
        g0 = _flat_weights(check_potential(init[1], m, "init[1]", like).detach(), m, full)
    sol = solve(flat, af, bf, eps, opts, rho_a, rho_b, init_g=g0)
    value, value_linear = ot_value(sol, flat, af, bf), linear_value(sol, flat)
    _check_finite_result(sol, eps, flat, value, value_linear)
    converged = sol.done.reshape(full)
    if warn and not bool(converged.all()):
        _warn_runtime(solution_message("sinkhorn", sol, opts))
    plan = None if sol.plan is None else sol.plan.reshape(*full, n, m)
    return OTResult(
        plan=plan,
        value=value.reshape(full),
        value_linear=value_linear.reshape(full),
        f=sol.f.reshape(*full, n),
        g=sol.g.reshape(*full, m),
        n_iter=sol.n_iter,
        converged=bool(converged.all()) if full == () else converged,
        marginal_error=sol.marginal_error.reshape(full),
        extra={"n_iter_per_problem": sol.iters.reshape(full), "primal": sol.primal.reshape(full),
               "criterion": sol.err.reshape(full), "n_absorptions": sol.n_absorb,
               "omega": sol.omega.reshape(full), "eps": eps, "eps_levels": sol.levels,
               "backend": sol.backend},
    )


def sinkhorn_divergence(x, y, eps, *, a=None, b=None, cost="sqeuclidean", tol: float = 1e-6,
                        max_iter: int = 10_000, backend: str = "auto",
                        memory_budget: float | None = None, omega="auto", warn: bool = True,
                        eps_scaling: float | None = None):
    r"""The debiased Sinkhorn divergence between two weighted point clouds.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`\mathrm{OT}_\varepsilon` the balanced entropic problem of :func:`sinkhorn`. It is
    non-negative, zero when the measures coincide, and for the squared Euclidean cost
    :math:`S_\varepsilon(\alpha, \alpha(\cdot - t)) = \|t\|^2` exactly.

    The two symmetric problems are solved first (averaged updates, a few dozen steps); their
    potentials warm-start the cross problem, which a cold start crawls through when the
    clouds are close.

    Parameters
    ----------
    x, y : Tensor or array, shapes (..., n, d) and (..., m, d)
        The two point clouds (differentiable); leading dimensions are a batch.
    eps : float
        Entropic regularisation (absolute), > 0.
    a, b : Tensor or array, optional
        Weights (default uniform), same total mass.
    cost : str or callable
        Ground cost (see :func:`cost_matrix`).
    tol, max_iter, omega, warn
        As in :func:`sinkhorn`, for each of the three problems (``omega`` for the cross one;
        the symmetric problems run their own averaged iteration).
    backend : {"auto", "dense", "online"}
        ``"dense"`` stores the ``n x m`` cost matrices; ``"online"`` recomputes them block by
        block, with memory linear in ``n + m``; ``"auto"`` picks ``"online"`` when the dense
        matrices would exceed ``memory_budget`` bytes.
    memory_budget : float or None
        Bytes the dense backend may use. ``None`` (default): half of the free memory of a
        CUDA device, 2 GB on the CPU.
    eps_scaling : float in (0, 1), optional
        Solve the cross problem from a cold start, annealing ``eps`` from the largest cost by
        this factor, instead of warm-starting it from the symmetric problems.

    Returns
    -------
    Tensor
        :math:`S_\varepsilon`, of the batch shape (a scalar for two clouds), differentiable in
        ``x``, ``y``, ``a`` and ``b`` (envelope gradients from the potentials).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> s = ob.sinkhorn_divergence(x, x + torch.tensor([1.0, 0.0], dtype=torch.float64), eps=1.0)
    >>> round(float(s), 5)
    1.0
    """
    x, y = check_pair_points(x, y)
    eps = check_eps(eps)
    opts = _options(tol, max_iter, 10, omega, eps_scaling, backend, memory_budget, False)
    batch = broadcast_shapes(x.shape[:-2], y.shape[:-2])
    n, m = x.shape[-2], y.shape[-2]
    a = check_weights(a, n, "a", like=x, batch_shape=batch)
    b = check_weights(b, m, "b", like=x, batch_shape=batch)
    check_same_mass(a, b)
    full = broadcast_shapes(batch, a.shape[:-1], b.shape[:-1])
    check_ground(cost, x, y)
    af, bf = a.expand(*full, n), b.expand(*full, m)
    div = cloud_divergence(x, y, af, bf, eps, opts, cost)
    message = unconverged_message("sinkhorn_divergence", div, opts)
    if warn and message:
        _warn_runtime(message)
    return div.value
