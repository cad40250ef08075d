r"""Wasserstein barycenters and displacement (McCann) interpolation.

* :func:`interpolate`: the McCann interpolant between two measures, from a plan or a map;
* :func:`barycenter`: the measure that minimises :math:`\sum_k w_k \mathrm{OT}(\cdot, \mu_k)`,
  on a fixed support (iterative Bregman projections, entropic, optionally debiased; or POT's
  linear program, exact) or with a free support (point clouds, alternating OT plans and
  barycentric updates).

The entropic fixed-support solver is a multi-marginal algorithm, not one Sinkhorn solve, so it
has its own short loop here; it applies its kernels in the log domain through the engine's
kernel operator (:class:`otbook.sinkhorn.kernel.DenseKernel`, batched over the ``K`` input
measures) or through the separable kernel of a 2-D grid (two small log-sum-exps per
application, the convolutional Wasserstein trick of Solomon et al. 2015), with the same
interface. Log-domain steps are exact for any ``eps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import (as_tensor, broadcast_shapes, check_callable, check_choice, check_eps,
                      check_finite, check_plan, check_points, check_positive,
                      check_positive_int, check_unit_interval, check_weights)
from ._runtime import progress as progress_bar
from ._runtime import warn as runtime_warn
from .costs import Cost, as_cost, cost_matrix, pad_clouds
from .exact import emd
from .maps import barycentric_projection
from .sinkhorn import sinkhorn
from .sinkhorn.kernel import DenseKernel

__all__ = ["Barycenter", "barycenter", "interpolate"]


@dataclass
class Barycenter:
    """A Wasserstein barycenter, and how it was found.

    Attributes
    ----------
    mass : Tensor
        The barycenter's weights: shape ``(..., n)`` on a fixed support (``(..., H, W)`` on a
        grid), ``(m,)`` on a free support (the weights of ``support``).
    support : Tensor or None
        The barycenter's points ``(m, d)`` (free support); ``None`` on a fixed support.
    value : Tensor or None
        Free support: :math:`\\sum_k w_k \\langle P_k, C_k\\rangle` at the returned support.
        ``None`` on a fixed support.
    n_iter : int
        Iterations run (the largest over a batch).
    converged : bool or Tensor of bool
        Whether the stopping criterion was met (per problem for a batch).
    plans : Tensor or None
        Free support: the plans from the barycenter to each measure, ``(K, m, n_max)`` (measures
        padded to a common size with weight-0 points).
    extra : dict
        Method, criterion history and solver-specific diagnostics.
    """

    mass: torch.Tensor
    support: torch.Tensor | None
    value: torch.Tensor | None
    n_iter: int
    converged: bool | torch.Tensor
    plans: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        where = "free" if self.support is not None else "fixed"
        return (f"Barycenter({where} support, mass shape {tuple(self.mass.shape)}, "
                f"n_iter={self.n_iter}, converged={self.converged})")


# -- McCann interpolation ----------------------------------------------------------------------


def interpolate(x, y=None, t: float = 0.5, *, plan=None, map=None, a=None):
    r"""The displacement (McCann) interpolant at time ``t`` between two measures.

    From a plan :math:`P` between :math:`x` and :math:`y`, the weighted point cloud

    .. math::

        \mu_t = \sum_{ij} P_{ij}\, \delta_{(1 - t) x_i + t y_j};

    from a map :math:`T` (``map``), :math:`\mu_t = \sum_i a_i \delta_{(1 - t) x_i + t T(x_i)}`.
    With an optimal plan (or map) for the squared Euclidean cost, :math:`t \mapsto \mu_t` is a
    constant-speed geodesic: :math:`W_2(\mu_s, \mu_t) = |t - s|\, W_2(\mu_0, \mu_1)`. It moves
    mass; the mixture :math:`(1 - t) \mu_0 + t \mu_1` fades it instead.

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d)
        Source points.
    y : Tensor or array, shape (..., m, d)
        Target points (with ``plan``; not used with ``map``).
    t : float in [0, 1]
        Time: ``0`` gives the source, ``1`` the target.
    plan : Tensor or array, shape (..., n, m), optional
        A coupling between ``x`` and ``y`` (from :func:`~otbook.emd` or
        :func:`~otbook.sinkhorn`).
    map : callable or Tensor, optional
        The map, as a function of points (:class:`~otbook.GaussianMap`, an
        :class:`~otbook.EntropicMap`, a network) or as the images :math:`T(x_i)`, ``(..., n, d)``.
    a : Tensor or array, shape (..., n), optional
        Source weights with ``map`` (default uniform).

    Returns
    -------
    points, weights : Tensor, Tensor
        With ``plan``: ``(..., n * m, d)`` and ``(..., n * m)``, one point per pair ``(i, j)``
        (row-major); for a single plan (no batch dimensions) the pairs with ``P_ij = 0`` are
        dropped, so an exact plan gives at most ``n + m - 1`` points. With ``map``: ``(..., n,
        d)`` and ``a``. Differentiable in the inputs.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    >>> y = x + torch.tensor([0.0, 2.0], dtype=torch.float64)
    >>> P = ob.emd(None, None, ob.cost_matrix(x, y)).plan
    >>> points, weights = ob.interpolate(x, y, 0.25, plan=P)
    >>> points
    tensor([[0.0000, 0.5000],
            [1.0000, 0.5000]], dtype=torch.float64)
    >>> weights
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    t = check_unit_interval(t, "t")
    if (plan is None) == (map is None):
        raise ValueError("give exactly one of plan and map")
    if map is not None:
        return _interpolate_map(x, y, t, map, a)
    if y is None:
        raise ValueError("y (the target points) is needed with plan")
    if a is not None:
        raise ValueError("a is only used with map (a plan carries its own weights)")
    x, y = _pair(x, y)
    P = check_plan(plan, "plan", like=x)
    n, m = x.shape[-2], y.shape[-2]
    if P.shape[-2:] != (n, m):
        raise ValueError(f"plan must have shape (n, m) = ({n}, {m}) for these points, got "
                         f"{tuple(P.shape)}")
    points = (1.0 - t) * x[..., :, None, :] + t * y[..., None, :, :]
    batch = broadcast_shapes(points.shape[:-3], P.shape[:-2],
                             what="batch dimensions of x, y and plan")
    points = points.expand(*batch, n, m, x.shape[-1]).reshape(*batch, n * m, x.shape[-1])
    weights = P.expand(*batch, n, m).reshape(*batch, n * m)
    if not batch:
        keep = weights > 0
        points, weights = points[keep], weights[keep]
    return points, weights


def _pair(x, y):
    """Two point clouds of one dtype, device and dimension (batch dimensions allowed)."""
    x = check_points(x, "x")
    y = check_points(y, "y", like=x if not isinstance(y, torch.Tensor) else None)
    if (x.dtype, x.device) != (y.dtype, y.device):
        raise TypeError(f"x ({x.dtype}, {x.device}) and y ({y.dtype}, {y.device}) must have one "
                        "dtype and device")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[-1]} and "
                         f"{y.shape[-1]}")
    return x, y


def _interpolate_map(x, y, t, map, a):
    if y is not None:
        raise ValueError("y is not used with map (the map gives the targets); pass y=None")
    x = check_points(x, "x")
    if isinstance(map, (torch.Tensor, np.ndarray)):
        Tx = check_points(map, "map", like=x)
    else:
        Tx = check_callable(map, "map")(x)
        if not isinstance(Tx, torch.Tensor):
            raise TypeError(f"map must return a tensor, got {type(Tx).__name__}")
        check_finite(Tx, "map(x)")
    if Tx.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"map must give one image per point, shape {tuple(x.shape[-2:])}, got "
                         f"{tuple(Tx.shape)}")
    w = check_weights(a, x.shape[-2], "a", like=x, batch_shape=x.shape[:-2])
    return (1.0 - t) * x + t * Tx, w


# -- fixed support: iterative Bregman projections ----------------------------------------------


class _GridKernel:
    r"""The Gibbs kernel of the squared Euclidean cost on an ``H x W`` grid of ``[0, 1]^2``
    (POT's convention for images), applied in the log domain as two 1-D log-sum-exps: the cost
    is a sum :math:`(s_i - s_k)^2 + (t_j - t_l)^2`, so the kernel is a tensor product and an
    application costs :math:`O(HW(H + W))` instead of :math:`O(H^2W^2)`. Same interface as the
    engine's kernels (``lse_rows``, ``lse_cols`` on flattened ``(B, H W)`` tensors)."""

    def __init__(self, H, W, like):
        s = torch.linspace(0, 1, H, dtype=like.dtype, device=like.device)
        t = torch.linspace(0, 1, W, dtype=like.dtype, device=like.device)
        self.C1, self.C2 = (s[:, None] - s) ** 2, (t[:, None] - t) ** 2
        self.H, self.W = H, W
        self.n = self.m = H * W

    def lse_rows(self, h, eps):
        X = h.reshape(-1, self.H, self.W)
        A = torch.logsumexp(X[:, :, None, :] - self.C2 / eps, -1)            # over columns
        out = torch.logsumexp(A[:, None, :, :] - (self.C1 / eps)[:, :, None], 2)  # over rows
        return out.reshape(-1, self.n)

    lse_cols = lse_rows  # the cost is symmetric


def _dense_kernel(C, eps):
    """The engine's dense kernel of ``C`` (``(n, m)`` or ``(K, n, m)``), used through its
    log-domain operators (the weights it stores are not used here)."""
    Cf = C if C.ndim == 3 else C[None]
    ones = Cf.new_ones(1, 1)
    return DenseKernel(Cf, ones, ones, eps)


def _bregman_step(ker, alpha, log_b, w, eps):
    """One sweep: each plan's second marginal set to ``b_k``, then the barycenter as the
    geometric mean of the first marginals. Returns the new ``beta``, the log first marginals
    ``r`` and the barycenter's log-weights (before debiasing)."""
    B, K, n = alpha.shape
    m = log_b.shape[-1]
    beta = log_b - ker.lse_cols(alpha.reshape(B * K, n), eps).reshape(B, K, m)
    log_kv = ker.lse_rows(beta.reshape(B * K, m), eps).reshape(B, K, n)
    # the weighted log-mean of K v_k (not of the marginals alpha + log K v: the two agree
    # for the plain barycenter, where sum_k w_k alpha_k stays 0, not for the debiased one)
    return beta, alpha + log_kv, (w[..., None] * log_kv).sum(1)


def _bregman(ker, log_b, w, eps, n, opts, sym=None):
    r"""Iterative Bregman projections in the log domain, batched over ``B`` problems of ``K``
    measures: plans :math:`P_k = \exp(\alpha_{k,i} + \beta_{k,j} - C_{ij}/\varepsilon)`.
    With ``sym`` (the kernel of the barycenter's support against itself), the debiased variant
    (Janati et al. 2020): the barycenter is multiplied by :math:`e^c`, with :math:`c` the
    symmetric potential of the barycenter (a few averaged steps per sweep, as in POT).

    Returns ``(log_a, err, done, iters, n_run, history)``; the criterion is the weighted L1
    spread :math:`\sum_k w_k \|P_k 1 - a\|_1` of the first marginals around the barycenter."""
    tol, max_iter, check_every, bar = opts
    B, K, m = log_b.shape
    alpha = log_b.new_zeros(B, K, n)
    c = log_b.new_zeros(B, n)
    err = log_b.new_full((B,), float("inf"))
    done = torch.zeros(B, dtype=torch.bool, device=log_b.device)
    iters = torch.full((B,), max_iter, device=log_b.device)
    history = []
    for it in range(1, max_iter + 1):
        _, r, log_a = _bregman_step(ker, alpha, log_b, w, eps)
        if sym is not None:
            log_a = log_a + c
            for _ in range(10):
                c = 0.5 * (c + log_a - sym.lse_rows(c, eps))
        if it % check_every == 0 or it == max_iter:
            err = (w * (r.exp() - log_a.exp()[:, None]).abs().sum(-1)).sum(-1)
            history.append(float(err.max()))
            newly = (err <= tol) & ~done
            iters = torch.where(newly, torch.full_like(iters, it), iters)
            done = done | newly
            bar.update(check_every)
            if bool(done.all()) and (sym is None or it > 20):
                break
        alpha = alpha + torch.where(done[:, None, None], 0.0, log_a[:, None] - r)
    return log_a, err, done, iters, it, history


def _check_histograms(measures, C):
    """Histograms ``(..., K, m)`` (``(..., K, H, W)`` on a grid), finite, non-negative, each of
    the same positive mass; and the cost as a tensor ``(n, m)`` / ``(K, n, m)`` or ``"grid"``."""
    grid = isinstance(C, str)
    if grid:
        check_choice(C, "C", ("grid",))
    hist = as_tensor(measures, "measures")
    need = 3 if grid else 2
    if hist.ndim < need:
        shape = "(K, H, W) images" if grid else "(K, m) histograms"
        raise ValueError(f"measures must have shape {shape}, got {tuple(hist.shape)}")
    flat = hist.reshape(*hist.shape[:-2], -1) if grid else hist
    check_weights(flat, flat.shape[-1], "measures", like=flat)
    mass = flat.sum(-1)
    if bool(((mass - mass[..., :1]).abs() > 1e-6 * mass.amax(-1, keepdim=True)).any()):
        raise ValueError("measures must all have the same total mass (normalise them, e.g. "
                         "measures / measures.sum(-1, keepdim=True))")
    if grid:
        return flat, None
    cost = as_cost(C, "C")
    if isinstance(cost, Cost) and len(cost.batch_shape) > 1:
        raise ValueError(f"C must have shape (n, m) or (K, n, m), got {tuple(cost.shape)}")
    Cm = cost.matrix().to(hist.dtype)
    K, m = hist.shape[-2:]
    if Cm.shape[-1] != m or (Cm.ndim == 3 and Cm.shape[0] != K):
        raise ValueError(f"C must have shape (n, {m}) or ({K}, n, {m}) for {K} histograms of "
                         f"{m} bins, got {tuple(Cm.shape)}")
    return flat, Cm


def _check_lambdas(weights, K, like, batch):
    """The barycentric weights: ``K`` non-negative numbers (or ``(..., K)``), normalised."""
    if weights is not None:
        shape = as_tensor(weights, "weights").shape
        if len(shape) == 0 or shape[-1] != K:
            raise ValueError(f"weights must have one entry per measure ({K}), got shape "
                             f"{tuple(shape)}")
    w = check_weights(weights, K, "weights", like=like, batch_shape=batch)
    return w / w.sum(-1, keepdim=True)


def _fixed_entropic(hist, Cm, w, eps, debias, opts, grid_shape):
    """Batched iterative Bregman projections on histograms ``(*batch, K, m)``."""
    batch, (K, m) = hist.shape[:-2], hist.shape[-2:]
    if grid_shape is not None:
        ker = sym = _GridKernel(*grid_shape, hist)
    else:
        ker = _dense_kernel(Cm, eps)
        sym = None
        if debias:
            if Cm.ndim == 3 or Cm.shape[0] != m or not torch.allclose(Cm, Cm.T):
                raise ValueError("debias=True needs one symmetric cost (m, m) on the common "
                                 "support of the measures and the barycenter")
            sym = ker
    n = ker.n
    B = int(np.prod(batch)) if batch else 1
    log_b = torch.log(hist).reshape(B, K, m)
    wf = w.expand(*batch, K).reshape(B, K)
    log_a, err, done, iters, n_run, history = _bregman(ker, log_b, wf, eps, n, opts,
                                                      sym if debias else None)
    mass = log_a.exp().reshape(*batch, n)
    return mass, err.reshape(batch), done.reshape(batch), n_run, history


def _fixed_exact(hist, Cm, w):
    """POT's linear program (``ot.lp.barycenter``), one problem at a time, on the CPU."""
    import ot

    if Cm.ndim == 3 or Cm.shape[0] != Cm.shape[1]:
        raise ValueError("exact fixed-support barycenters (eps=None) need one square cost "
                         "(m, m) on the common support")
    batch, (K, m) = hist.shape[:-2], hist.shape[-2:]
    H = hist.detach().reshape(-1, K, m).cpu().double().numpy()
    W = w.detach().expand(*batch, K).reshape(-1, K).cpu().double().numpy()
    M = Cm.detach().cpu().double().numpy()
    out = [ot.lp.barycenter(H[k].T, M, W[k]) for k in range(H.shape[0])]
    mass = torch.as_tensor(np.stack(out), dtype=hist.dtype, device=hist.device)
    return mass.reshape(*batch, m)


def barycenter(measures, C=None, *, weights=None, eps=None, debias: bool = False,
               support=None, masses=None, support_masses=None, tol: float = 1e-6,
               max_iter: int = 1000, check_every: int = 10, warn: bool = True,
               progress: bool = False) -> Barycenter:
    r"""The Wasserstein barycenter :math:`\arg\min_\mu \sum_k w_k \mathrm{OT}(\mu, \mu_k)`.

    Three problems, chosen by what ``measures`` is:

    * **fixed support** (``measures`` a tensor of histograms ``(..., K, m)`` and ``C`` a cost
      ``(n, m)`` between the barycenter's support and the measures', or ``(K, n, m)``, one per
      measure; a matrix or a :class:`~otbook.Cost`): with ``eps`` the entropic barycenter
      :math:`\min_a \sum_k w_k \mathrm{OT}_\varepsilon(a, b_k)` by iterative Bregman
      projections (Benamou et al. 2015) in the log domain, batched over the measures and the
      leading dimensions; entropy :math:`-\varepsilon H(P)` as in POT's
      ``ot.bregman.barycenter``. ``debias=True`` gives the debiased barycenter of Janati et al.
      (2020), which removes most of the entropic blur. ``eps=None``: the exact barycenter by
      POT's linear program (``ot.lp.barycenter``; small problems only).
    * **images** (``measures`` of shape ``(..., K, H, W)`` and ``C="grid"``): the same on the
      grid of :math:`[0, 1]^2` with the squared Euclidean cost, the kernel applied separably
      (convolutional Wasserstein distances, Solomon et al. 2015; POT's
      ``convolutional_barycenter2d``).
    * **free support** (``measures`` a list of point clouds ``(n_k, d)``, with ``masses``): the
      support points move; each iteration solves the OT problems from the current support to
      every cloud (exact with ``eps=None``, else Sinkhorn) and moves every point to the
      weighted average of its barycentric projections (squared Euclidean cost; Cuturi and
      Doucet 2014; POT's ``ot.lp.free_support_barycenter``).

    Parameters
    ----------
    measures : Tensor, array, or list of them
        Histograms ``(..., K, m)``, images ``(..., K, H, W)``, or a list of ``K`` point clouds.
        Histograms must all have the same total mass.
    C : Tensor, array, :class:`~otbook.Cost`, ``"grid"`` or None
        The cost (fixed support), ``"grid"`` (images), ``None`` (free support).
    weights : Tensor or array, shape (K,) or (..., K), optional
        Barycentric weights :math:`w_k \ge 0` (default uniform), normalised to sum to one.
    eps : float or None
        Entropic regularisation (absolute); ``None`` for the exact barycenter (fixed support
        through POT's linear program, free support through :func:`~otbook.emd`).
    debias : bool
        Debiased entropic barycenter (fixed support with one symmetric cost, or a grid).
    support : Tensor or array, shape (m, d), optional
        Free support: the starting points (default: the points of the first measure).
    masses : list of Tensors, optional
        Free support: the weights of each cloud (default uniform).
    support_masses : Tensor or array, shape (m,), optional
        Free support: the (fixed) weights of the barycenter's points (default uniform).
    tol : float
        Fixed support: the weighted L1 spread :math:`\sum_k w_k \|P_k 1 - a\|_1` of the plans'
        first marginals, relative to the mass; free support: the largest move of a support
        point, relative to the spread of the measures.
    max_iter : int
        Iteration budget.
    check_every : int
        Fixed support: how often the criterion is evaluated.
    warn : bool
        A ``RuntimeWarning`` when the solver did not converge.
    progress : bool
        A progress bar.

    Returns
    -------
    Barycenter
        ``mass`` (and ``support``, ``plans``, ``value`` for a free support), ``n_iter``,
        ``converged``; ``extra["history"]`` holds the criterion.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None]
    >>> C = ob.cost_matrix(x, x)
    >>> b = torch.stack([torch.exp(-(x[:, 0] - c) ** 2 / 0.005) for c in (0.2, 0.6)])
    >>> bar = ob.barycenter(b / b.sum(-1, keepdim=True), C, eps=1e-3)
    >>> bar.converged, round(float((bar.mass * x[:, 0]).sum()), 3)  # the mean is averaged
    (True, 0.4)
    """
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    if isinstance(measures, (list, tuple)):
        if C is not None:
            raise ValueError("free-support barycenters use the squared Euclidean cost; pass "
                             "C=None with a list of point clouds")
        if debias:
            raise ValueError("debias=True is for fixed-support (histogram) barycenters")
        return _free_support(measures, weights, eps, support, masses, support_masses, tol,
                             max_iter, warn, progress)
    if C is None:
        raise ValueError("C is needed for histograms: a cost matrix (n, m), a Cost, or "
                         "'grid' for images")
    for name, value in (("support", support), ("masses", masses),
                        ("support_masses", support_masses)):
        if value is not None:
            raise ValueError(f"{name} is only used for free-support barycenters (a list of "
                             "point clouds)")
    hist, Cm = _check_histograms(measures, C)
    K = hist.shape[-2]
    w = _check_lambdas(weights, K, hist, hist.shape[:-2])
    if eps is None:
        if debias:
            raise ValueError("debias=True needs an entropic barycenter (eps > 0)")
        if Cm is None:
            raise ValueError("exact barycenters on a grid are not available; give eps")
        mass = _fixed_exact(hist, Cm, w)
        return Barycenter(mass, None, None, 0, True, extra={"method": "pot.lp.barycenter"})
    eps = check_eps(eps)
    grid_shape = tuple(as_tensor(measures, "measures").shape[-2:]) if Cm is None else None
    return _fixed_result(hist, Cm, w, eps, debias, (tol, max_iter, check_every), grid_shape,
                         warn, progress)


def _fixed_result(hist, Cm, w, eps, debias, opts, grid_shape, warn, progress):
    tol, max_iter, check_every = opts
    bar = progress_bar(bool(progress), max_iter, "barycenter")
    # the criterion relative to the mass: tol on normalised histograms
    scale = hist.sum(-1)[..., 0]
    mass, err, done, n_run, history = _fixed_entropic(
        hist / scale[..., None, None], Cm, w, eps, debias, (tol, max_iter, check_every, bar),
        grid_shape)
    bar.close()
    mass = mass * scale[..., None]
    if grid_shape is not None:
        mass = mass.reshape(*mass.shape[:-1], *grid_shape)
    if not torch.isfinite(mass).all():
        raise ValueError(f"eps={eps:g} is too small for these costs in {hist.dtype} (the "
                         "barycenter underflowed); use a larger eps")
    if warn and not bool(done.all()):
        runtime_warn(f"barycenter: iterative Bregman projections did not converge in "
                     f"{max_iter} iterations (criterion {float(err.max()):.2e} > tol={tol:g}); "
                     "raise max_iter or eps")
    converged = bool(done.all()) if done.ndim == 0 else done
    method = "bregman-debiased" if debias else "bregman"
    return Barycenter(mass, None, None, n_run, converged,
                      extra={"method": method, "criterion": err, "history": history,
                             "eps": eps, "grid": grid_shape is not None})


# -- free support --------------------------------------------------------------------------------


def _check_clouds(measures, masses, support, support_masses):
    """The clouds as one padded batch ``(K, n_max, d)`` with weights ``(K, n_max)`` (each
    summing to one), and the starting support ``(m, d)`` with its weights ``(m,)``."""
    if len(measures) == 0:
        raise ValueError("measures is empty: give at least one point cloud")
    clouds = [check_points(c, f"measures[{k}]") for k, c in enumerate(measures)]
    first = clouds[0]
    for k, c in enumerate(clouds):
        if c.ndim != 2:
            raise ValueError(f"measures[{k}] must have shape (n, d), got {tuple(c.shape)}")
        if (c.dtype, c.device) != (first.dtype, first.device):
            raise TypeError(f"measures[{k}] has dtype {c.dtype} on {c.device} but measures[0] "
                            f"has {first.dtype} on {first.device}; use one dtype and device")
        if c.shape[-1] != first.shape[-1]:
            raise ValueError(f"measures[{k}] has dimension {c.shape[-1]} but measures[0] has "
                             f"{first.shape[-1]}")
    if masses is not None and len(masses) != len(clouds):
        raise ValueError(f"masses has {len(masses)} entries but there are {len(clouds)} "
                         "measures")
    ws = [check_weights(None if masses is None else masses[k], c.shape[0], f"masses[{k}]",
                        like=c) for k, c in enumerate(clouds)]
    ws = [wk / wk.sum() for wk in ws]
    Y, b = pad_clouds(clouds, ws)
    X = first if support is None else check_points(support, "support", like=first)
    if X.ndim != 2 or X.shape[-1] != first.shape[-1]:
        raise ValueError(f"support must have shape (m, {first.shape[-1]}) (the measures' "
                         f"dimension), got {tuple(X.shape)}")
    a = check_weights(support_masses, X.shape[0], "support_masses", like=first)
    return Y, b, X, a / a.sum()


def _plans(a, b, X, Y, eps):
    """OT plans ``(K, m, n)`` from the support ``X`` to every cloud of ``Y`` (one batched
    solve), their costs ``(K,)`` and whether they converged."""
    C = cost_matrix(X.expand(Y.shape[0], *X.shape), Y)
    if eps is None:
        res = emd(a.expand(Y.shape[0], -1), b, C)
    else:
        res = sinkhorn(a.expand(Y.shape[0], -1), b, C, eps, warn=False)
    return res.plan, res.value_linear, bool(torch.as_tensor(res.converged).all())


def _free_support(measures, weights, eps, support, masses, support_masses, tol, max_iter,
                  warn, progress):
    Y, b, X, a = _check_clouds(measures, masses, support, support_masses)
    if eps is not None:
        eps = check_eps(eps)
    w = _check_lambdas(weights, Y.shape[0], X, ())
    # moves are measured against the spread of the measures
    spread = float(((Y - (b[..., None] * Y).sum(1, keepdim=True)) ** 2).sum(-1).mul(b).sum()
                   .sqrt().clamp_min(torch.finfo(Y.dtype).tiny))
    history, done, solved = [], False, True
    bar = progress_bar(bool(progress), max_iter, "barycenter")
    for it in range(1, max_iter + 1):
        P, _, ok = _plans(a, b, X, Y, eps)
        solved = solved and ok
        new = (w[:, None, None] * barycentric_projection(P, Y)).sum(0)
        move = float((new - X).norm(dim=-1).max()) / spread
        X = new
        history.append(move)
        bar.update(1)
        if move <= tol:
            done = True
            break
    bar.close()
    P, costs, ok = _plans(a, b, X, Y, eps)
    if warn and not done:
        runtime_warn(f"barycenter: the free support still moved by {move:.2e} (relative) after "
                     f"{max_iter} iterations (tol={tol:g}); raise max_iter")
    if warn and not (solved and ok):
        runtime_warn("barycenter: some of the inner OT solves did not converge")
    return Barycenter(a, X, (w * costs).sum(), it, done, plans=P,
                      extra={"method": "free-exact" if eps is None else "free-sinkhorn",
                             "history": history, "inner_converged": solved and ok})
