r"""Transport maps: from couplings to maps, entropic maps, input-convex networks, the Monge gap.

A coupling says how much mass goes from each ``x_i`` to each ``y_j``; a *map* says where each
point goes, and applies to points it has never seen. This module turns the first into the second
in four ways:

* :func:`barycentric_projection` (and :func:`soft_labels`): average the targets a plan sends a
  point to. In-sample only.
* :func:`entropic_map`: the out-of-sample extension of the entropic plan through its potential
  (Pooladian and Niles-Weed), a softmax-weighted average of the target points.
* :func:`fit_map`: train a network to push one sample onto another, for instance an
  :class:`~otbook.ICNN` (:mod:`otbook.icnn`), a neural convex potential :math:`\psi` whose
  gradient is the map (Brenier's theorem).
* :func:`monge_gap`: how far any map is from being optimal for the points it moves (Uscidda and
  Cuturi), a regulariser for maps that are not gradients of convex functions.

The Brenier map between Gaussians lives in :mod:`otbook.gaussian` (``ob.gaussian_map``).
Every entropic computation here runs on the Sinkhorn engine (:func:`otbook.sinkhorn`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import (
    as_tensor,
    check_choice,
    check_eps,
    check_generator,
    check_labels,
    check_module,
    check_clouds,
    check_pair_points,
    check_plan,
    check_positive,
    check_positive_int,
    check_same_mass,
    check_weights,
)
from ._runtime import WarningSummary, block_rows, randperm
from ._runtime import progress as progress_bar
from ._runtime import warn as warn_runtime
from ._training import MINI_BATCH_WINDOW, loss_flattened, loss_window, optimizer_step
from .costs import PointCloud, cost_matrix
from .icnn import ICNN  # also importable as otbook.maps.ICNN, where it used to live
from .result import OTResult
from .sinkhorn import eps_relative, sinkhorn
from .sinkhorn.engine import Options, divergence_value

__all__ = [
    "barycentric_projection",
    "soft_labels",
    "entropic_map",
    "EntropicMap",
    "monge_gap",
    "fit_map",
    "MapFit",
]


# --------------------------------------------------------------------------------------------
# couplings to maps


def _plan_and_values(plan, values, name):
    """The plan and the per-target values, on one dtype and device."""
    if isinstance(values, torch.Tensor) and not isinstance(plan, torch.Tensor):
        v = as_tensor(values, name)
        P = check_plan(plan, "plan", like=v)
    else:
        P = check_plan(plan, "plan")
        v = as_tensor(values, name, like=None if isinstance(values, torch.Tensor) else P)
    if v.dtype != P.dtype:
        raise TypeError(f"plan has dtype {P.dtype} but {name} has dtype {v.dtype}; use one dtype")
    if v.device != P.device:
        raise ValueError(f"plan is on {P.device} but {name} is on {v.device}; use one device")
    return P, v


def _row_masses(P: torch.Tensor) -> torch.Tensor:
    rows = P.sum(-1)
    empty = rows <= 0
    if bool(empty.any()):
        first = int(torch.nonzero(empty.reshape(-1))[0, 0]) % rows.shape[-1]
        raise ValueError(
            f"plan has {int(empty.sum())} row(s) with zero mass (first: row {first}); the "
            "barycentric projection of a point that sends no mass is undefined. Drop those "
            "source points, or use a plan with positive rows (an entropic plan)"
        )
    return rows


def barycentric_projection(plan, y) -> torch.Tensor:
    r"""Send each source point to the average of the targets the plan moves it to.

    .. math::

        T(x_i) = \frac{\sum_j P_{ij}\, y_j}{\sum_j P_{ij}},

    the conditional mean :math:`\mathbb E_{(X, Y) \sim P}[Y \mid X = x_i]`. When the plan is
    induced by a map (a permutation, or any plan with one non-zero per row) it returns that map;
    otherwise it *shrinks*: the spread of the projected points is that of the targets minus the
    average conditional variance (law of total variance).

    Parameters
    ----------
    plan : Tensor or array, shape (..., n, m)
        A coupling: non-negative, finite, every row with positive mass.
    y : Tensor or array, shape (..., m, d) or (m,)
        What each target carries: its position, or any per-target vector (one-hot labels give
        soft labels, see :func:`soft_labels`). A 1-D ``y`` gives a 1-D result.

    Returns
    -------
    Tensor, shape (..., n, d) or (n,)
        Differentiable in ``plan`` and ``y``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> P = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    >>> ob.barycentric_projection(P, torch.tensor([[1.0, 0.0], [2.0, 3.0]], dtype=torch.float64))
    tensor([[2., 3.],
            [1., 0.]], dtype=torch.float64)
    """
    P, v = _plan_and_values(plan, y, "y")
    flat = v.ndim == 1
    if v.ndim == 0:
        raise ValueError("y must have shape (m, d) or (m,), got a scalar")
    if flat:
        v = v[:, None]
    if v.shape[-2] != P.shape[-1]:
        raise ValueError(
            f"y has {v.shape[-2]} points but plan has {P.shape[-1]} columns (one per target point)"
        )
    # each row scaled by its largest entry: the result is the same, and a plan of denormal (or
    # huge) entries keeps its digits
    P = P / P.detach().amax(-1, keepdim=True).clamp_min(torch.finfo(P.dtype).tiny)
    rows = _row_masses(P)
    out = (P @ v) / rows[..., None]
    return out[..., 0] if flat else out


def soft_labels(plan, labels, n_classes: int | None = None) -> torch.Tensor:
    r"""Carry class labels of the targets back through a plan: one distribution per source point.

    Row ``i`` is :math:`\sum_j P_{ij} e_{\ell_j} / \sum_j P_{ij}`, the barycentric projection of
    the one-hot labels (as used to label interpolated datasets). Each row sums to 1.

    Parameters
    ----------
    plan : Tensor or array, shape (n, m)
        A coupling with positive rows.
    labels : Tensor or array of int, shape (m,)
        Class of each target point, in ``0 .. n_classes - 1``.
    n_classes : int, optional
        Number of classes (default ``labels.max() + 1``).

    Returns
    -------
    Tensor, shape (n, n_classes)
        On the plan's device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> P = torch.tensor([[0.25, 0.25, 0.0], [0.0, 0.0, 0.5]])
    >>> ob.soft_labels(P, torch.tensor([0, 1, 1]))
    tensor([[0.5000, 0.5000],
            [0.0000, 1.0000]])
    """
    P = check_plan(plan, "plan", matrix=True)
    lab, k = check_labels(labels, P.shape[1], "labels", n_classes)
    onehot = torch.nn.functional.one_hot(lab.to(P.device), k).to(P.dtype)
    return barycentric_projection(P, onehot)


# --------------------------------------------------------------------------------------------
# the entropic map


class EntropicMap:
    r"""The entropic map :math:`T_\varepsilon`, fitted by :func:`entropic_map`; call it on points.

    Attributes
    ----------
    y : Tensor, shape (m, d)
        Target points.
    b : Tensor, shape (m,)
        Target weights.
    g : Tensor, shape (m,)
        Target potential of the entropic problem.
    eps : float
        The entropic regularisation.
    result : OTResult
        The Sinkhorn solve on the training points (``converged``, ``n_iter``, plan, ...).
    block_rows : int or None
        How many points a call maps at a time (each block of points holds a matrix of
        ``block_rows x m`` entries). ``None`` (the default) sizes the blocks to the device: a
        few MB on a CPU, so a block stays in cache, more on a GPU. Set it to bound the memory
        of a call.
    """

    def __init__(self, y: torch.Tensor, b: torch.Tensor, g: torch.Tensor, eps: float,
                 result: OTResult, *, block_rows: int | None = None):
        self.y, self.b, self.g, self.eps, self.result = y, b, g, eps, result
        self.block_rows = (None if block_rows is None
                           else check_positive_int(block_rows, "block_rows"))
        self._log_b = torch.log(b)

    @property
    def converged(self):
        """Whether the Sinkhorn solve behind the map converged."""
        return self.result.converged

    @property
    def n_iter(self) -> int:
        """Sinkhorn iterations used."""
        return self.result.n_iter

    def _logits(self, x):
        return self._log_b + (self.g - cost_matrix(x, self.y)) / self.eps

    def _blocks(self, x):
        """The checked points ``x``, in blocks of rows (see :attr:`block_rows`)."""
        x, _ = check_pair_points(x, self.y, names=("x", "y (the map's targets)"))
        if x.ndim != 2:
            raise ValueError(f"x must have shape (k, d), got {tuple(x.shape)}")
        rows = self.block_rows
        if rows is None:
            rows = block_rows(x.shape[0], self.y.shape[0], x)
        else:
            rows = check_positive_int(rows, "block_rows")
        return [x[s:s + rows] for s in range(0, x.shape[0], rows)]

    def __call__(self, x) -> torch.Tensor:
        r"""Map points: :math:`T_\varepsilon(x) = \sum_j w_j(x)\, y_j`, with weights
        :math:`w(x) = \operatorname{softmax}_j\big(\log b_j
        + (g_j - \|x - y_j\|^2)/\varepsilon\big)`.

        Differentiable in ``x``. Computed in blocks of rows, so any number of points fits.
        """
        parts = [torch.softmax(self._logits(xb), dim=-1) @ self.y for xb in self._blocks(x)]
        return torch.cat(parts, 0)

    def potential(self, x) -> torch.Tensor:
        r"""The source potential extended to any point, :math:`f_\varepsilon(x) =
        -\varepsilon \log \sum_j b_j e^{(g_j - \|x - y_j\|^2)/\varepsilon}`.

        For the cost :math:`\|x - y\|^2` the map is :math:`T_\varepsilon = \mathrm{id} -
        \tfrac12 \nabla f_\varepsilon`.
        """
        parts = [-self.eps * torch.logsumexp(self._logits(xb), dim=-1) for xb in self._blocks(x)]
        return torch.cat(parts, 0)

    def __repr__(self) -> str:
        return (f"EntropicMap(m={self.y.shape[0]}, d={self.y.shape[1]}, eps={self.eps:.4g}, "
                f"converged={self.converged})")


def entropic_map(x, y, eps, *, a=None, b=None, tol: float = 1e-6, max_iter: int = 10_000,
                 eps_scaling: float | None = None, warn: bool = True,
                 progress: bool = False) -> EntropicMap:
    r"""The entropic estimator of the optimal map between the samples ``x`` and ``y``.

    Solves the entropic problem between the two weighted clouds (squared Euclidean cost, with
    :func:`otbook.sinkhorn`) and returns the map

    .. math::

        T_\varepsilon(x) = \frac{\sum_j b_j\, e^{(g_j - \|x - y_j\|^2)/\varepsilon}\, y_j}
                                {\sum_j b_j\, e^{(g_j - \|x - y_j\|^2)/\varepsilon}},

    with :math:`g` the target potential. On the training points it equals the barycentric
    projection of the entropic plan; elsewhere it extends it smoothly (out-of-sample). As
    :math:`\varepsilon \to 0` and the samples grow, it converges to the Brenier map
    (Pooladian and Niles-Weed, 2021).

    Parameters
    ----------
    x, y : Tensor or array, shapes (n, d) and (m, d)
        Source and target samples.
    eps : float
        Entropic regularisation, absolute (see :func:`otbook.eps_relative`); > 0.
    a, b : Tensor or array, optional
        Weights (default uniform), same total mass.
    tol, max_iter, eps_scaling, warn, progress
        Passed to :func:`otbook.sinkhorn` (it warns with a ``RuntimeWarning`` when it does not
        converge).

    Returns
    -------
    EntropicMap
        Callable on any ``(k, d)`` points; ``.converged``, ``.n_iter`` and ``.result`` report the
        Sinkhorn solve; ``.potential(x)`` is the extended source potential.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    >>> T = ob.entropic_map(x, 2 * x + 1, eps=0.01)
    >>> T.converged, T(torch.tensor([[0.0]], dtype=torch.float64)).round(decimals=2)
    (True, tensor([[1.]], dtype=torch.float64))
    """
    x, y = check_clouds(x, y)
    eps = check_eps(eps)
    a = check_weights(a, x.shape[0], "a", like=x)
    b = check_weights(b, y.shape[0], "b", like=x)
    check_same_mass(a, b)
    x, y, a, b = x.detach(), y.detach(), a.detach(), b.detach()
    res = sinkhorn(a, b, PointCloud(x, y, checked=True), eps, tol=tol, max_iter=max_iter,
                   eps_scaling=eps_scaling, warn=False, progress=progress)
    if warn and not res.converged:
        warn_runtime(
            f"entropic_map: the Sinkhorn solve did not converge in {max_iter} iterations "
            f"(criterion {float(res.extra['criterion']):.3g} > tol {tol:g}); the map is built "
            "from unconverged potentials. Raise max_iter, or use a larger eps or eps_scaling")
    return EntropicMap(y, b, res.g.detach(), eps, res)


# --------------------------------------------------------------------------------------------
# the Monge gap


def monge_gap(x, y, eps, *, a=None, tol: float = 1e-6, max_iter: int = 10_000,
              eps_scaling: float | None = None, warn: bool = True) -> torch.Tensor:
    r"""The (entropic) Monge gap of the map that sent each ``x[i]`` to ``y[i]``.

    .. math::

        \mathcal M_\varepsilon(T) = \sum_i a_i \|x_i - T(x_i)\|^2
        - \OT_\varepsilon\Big(\sum_i a_i \delta_{x_i}, \sum_i a_i \delta_{T(x_i)}\Big),

    the cost the map pays minus the least cost at which its own pushforward could be reached
    (Uscidda and Cuturi, 2023). With :math:`\varepsilon = 0` it is non-negative and zero exactly
    when :math:`T` is an optimal map from the points to their images, so it regularises any map
    towards optimality. Here :math:`\OT_\varepsilon` is the objective of :func:`otbook.sinkhorn`
    (entropy as KL to the product of the marginals), which lies between :math:`\OT_0` and
    :math:`\OT_0 + \varepsilon \log n`, so

    .. math::

        \mathcal M_0(T) - \varepsilon \log n \le \mathcal M_\varepsilon(T) \le \mathcal M_0(T).

    Parameters
    ----------
    x : Tensor or array, shape (n, d)
        Reference points.
    y : Tensor or array, shape (n, d)
        Their images, ``y[i] = T(x[i])``.
    eps : float
        Entropic regularisation (absolute), > 0.
    a : Tensor or array, optional
        Weights of the reference points (default uniform).
    tol, max_iter, eps_scaling, warn
        Passed to :func:`otbook.sinkhorn` (a ``RuntimeWarning`` when it does not converge).

    Returns
    -------
    Tensor
        A scalar, differentiable in ``x`` and ``y`` (envelope gradient for the OT term: the plan).

    Notes
    -----
    When :math:`T` is close to optimal, the plan between the points and their images is close
    to the identity permutation, the slow case of Sinkhorn: with ``eps`` small against the
    costs it can take tens of thousands of iterations. An ``eps`` of a few percent of the mean
    cost (:func:`otbook.eps_relative`) keeps it to a few hundred; :func:`fit_map` does that by
    default.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> bool(ob.monge_gap(x, 2 * x, eps=2.0) <= 0)        # a gradient of a convex function
    True
    >>> R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> bool(ob.monge_gap(x, x @ R.T, eps=2.0) > 0.5)     # a rotation by 90 degrees is not
    True
    """
    x, y = check_clouds(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y must hold the image of each point of x: x has {x.shape[0]} points, "
                         f"y has {y.shape[0]}")
    eps = check_eps(eps)
    a = check_weights(a, x.shape[0], "a", like=x)
    a = a / a.sum()
    displacement = (a * ((x - y) ** 2).sum(-1)).sum()
    res = sinkhorn(a, a, PointCloud(x, y, checked=True), eps, tol=tol, max_iter=max_iter,
                   eps_scaling=eps_scaling, warn=False)
    if warn and not res.converged:
        warn_runtime(
            f"monge_gap: the Sinkhorn solve did not converge in {max_iter} iterations; the gap "
            "is inexact. Raise max_iter, or use a larger eps or eps_scaling")
    return displacement - res.value


# --------------------------------------------------------------------------------------------
# training a map


@dataclass
class MapFit:
    """A map trained by :func:`fit_map`, with its loss curves and convergence report.

    Attributes
    ----------
    model : nn.Module
        The trained network (an :class:`ICNN`, or the map itself).
    losses : dict of str to Tensor
        One value per step: ``"fit"`` (Sinkhorn divergence between the mapped batch and the
        target batch), ``"monge_gap"`` (zero when not used) and ``"total"``.
    n_iter : int
        Optimiser steps taken.
    converged : bool
        Whether the loss curve has flattened (see :func:`fit_map`).
    extra : dict
        ``"sinkhorn_unconverged"``: steps where a Sinkhorn solve inside the loss did not
        converge; ``"window"``, ``"rtol"``: the convergence test.
    """

    model: nn.Module
    losses: dict
    n_iter: int
    converged: bool
    extra: dict = field(default_factory=dict)

    def __call__(self, x) -> torch.Tensor:
        """Map points (the gradient of the potential for an :class:`ICNN`)."""
        return _apply(self.model, x)

    def __repr__(self) -> str:
        final = float(self.losses["total"][-1]) if len(self.losses["total"]) else float("nan")
        return (f"MapFit(model={type(self.model).__name__}, n_iter={self.n_iter}, "
                f"final_loss={final:.4g}, converged={self.converged})")


def _apply(model, x):
    if isinstance(model, ICNN):
        return model.transport(x)
    if not isinstance(x, torch.Tensor):  # NumPy points take the model's dtype and device
        ref = next(model.parameters(), None)
        x = as_tensor(x, "x", like=ref)
    return model(x)


def fit_map(model, x, y, *, eps, monge_gap_weight: float = 0.0,
            monge_gap_eps: float | None = None, n_steps: int = 500, batch_size: int = 256,
            lr: float = 1e-3, optimizer=None, lr_schedule: str = "constant", generator=None,
            rtol: float = 0.05, sinkhorn_tol: float = 1e-3, sinkhorn_max_iter: int = 2000,
            warn: bool = True, progress: bool = False) -> MapFit:
    r"""Train a map :math:`T` that pushes the samples ``x`` onto the samples ``y``.

    Each step draws a batch from each sample and takes one optimiser step on

    .. math::

        S_\varepsilon(T_\sharp \hat\mu_B, \hat\nu_B) + \lambda\, \mathcal M_{\varepsilon'}(T),

    the debiased Sinkhorn divergence (:func:`otbook.sinkhorn_divergence`) between the mapped
    batch and the target batch, plus, when ``monge_gap_weight`` :math:`\lambda > 0`, the Monge
    gap (:func:`monge_gap`) of :math:`T` on the source batch.

    For an :class:`ICNN` the map is :math:`T = \nabla\psi`. The fitting term alone then gives an
    optimal map: by Brenier's theorem the gradient of a convex function is the optimal map from
    :math:`\mu` onto whatever it pushes :math:`\mu` to, so once :math:`\nabla\psi_\sharp\mu =
    \nu` it is *the* optimal map. This replaces the min-max dual of Makkuva et al. (2020) by a
    plain minimisation: no adversary, no inner loop, a loss that is a distance to the target.
    For any other network (``nn.Module`` mapping ``(k, d)`` to ``(k, d)``) the fitting term only
    asks for *a* map onto the target, and the Monge gap is what pushes it to the optimal one.

    Parameters
    ----------
    model : nn.Module
        An :class:`ICNN` or a map network; its parameters must have the dtype and device of
        ``x``. Trained in place.
    x, y : Tensor or array, shapes (n, d) and (m, d)
        Source and target samples.
    eps : float
        Entropic regularisation of the fitting divergence (absolute), > 0.
    monge_gap_weight : float
        :math:`\lambda \ge 0`.
    monge_gap_eps : float, optional
        :math:`\varepsilon'` of the Monge gap, absolute. Default: 5 % of the mean cost between
        the batch and its image, recomputed at each step (:func:`otbook.eps_relative`), so that
        the gap's Sinkhorn solve stays well conditioned as the map moves.
    n_steps, batch_size, lr : int, int, float
        Optimiser steps, batch size (the whole sample when it is smaller), Adam's learning rate.
    optimizer : torch.optim.Optimizer, optional
        Used instead of ``Adam(model.parameters(), lr)``.
    lr_schedule : {"constant", "cosine"}
        ``"cosine"`` decays the optimiser's learning rates to zero over the ``n_steps`` along a
        half cosine, which averages out the noise of the batches at the end of training (the
        loss curve then flattens partly because the steps shrink: the convergence test below
        says less, so compare with a longer run).
    generator : torch.Generator, optional
        Draws the batches (reproducible runs).
    rtol : float
        Convergence test: the loss curve has flattened, that is its mean over the last tenth of
        the steps (at least 5 steps) is below the mean over the tenth before by less than
        ``rtol`` times its total fall (from the mean over the first tenth). A ``RuntimeWarning``
        says when it has not (the loss is still falling: train longer), and when Sinkhorn solves
        inside the loss did not converge.
    sinkhorn_tol, sinkhorn_max_iter : float, int
        Tolerance (L1 marginal error) and budget of each Sinkhorn solve inside the loss; a
        gradient step needs no more than ``1e-3``.
    warn, progress : bool
        Warnings on non-convergence; a progress bar (tqdm) with the running loss.

    Returns
    -------
    MapFit
        Callable as the map; ``losses`` (the curves), ``n_iter``, ``converged``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    >>> y = 0.5 * torch.randn(200, 2, generator=g, dtype=torch.float64) + 2.0
    >>> net = ob.ICNN(2, hidden=(16,), dtype=torch.float64)
    >>> fit = ob.fit_map(net, x, y, eps=0.2, n_steps=100, lr=0.05, generator=g, warn=False)
    >>> bool(fit.losses["fit"][-10:].mean() < 0.05 * fit.losses["fit"][0])
    True
    """
    x, y = check_clouds(x, y)
    _check_model(model, x)
    eps = check_eps(eps)
    lam = 0.0 if monge_gap_weight == 0 else check_positive(monge_gap_weight, "monge_gap_weight")
    gap_eps = None if monge_gap_eps is None else check_positive(monge_gap_eps, "monge_gap_eps")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2)
    rtol = check_positive(rtol, "rtol")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    sinkhorn_max_iter = check_positive_int(sinkhorn_max_iter, "sinkhorn_max_iter")
    check_generator(generator)
    optimizer = _optimizer(model, optimizer, lr)
    lr_schedule = check_choice(lr_schedule, "lr_schedule", ("constant", "cosine"))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    x, y = x.detach(), y.detach()
    loss_fn = functools.partial(_map_loss, eps=eps, lam=lam, gap_eps=gap_eps, tol=sinkhorn_tol,
                                max_iter=sinkhorn_max_iter)
    caught = WarningSummary()  # unconverged Sinkhorn solves inside the loss: counted, reported once
    curves = {"fit": [], "monge_gap": [], "total": []}
    bar = progress_bar(progress, n_steps, "fit_map")
    model.train()
    for step in range(n_steps):
        xb, yb = _batch(x, batch_size, generator), _batch(y, batch_size, generator)
        with caught:
            fit, gap, loss = loss_fn(model, xb, yb)
        if lr_schedule == "cosine":
            _cosine_lr(optimizer, base_lrs, step, n_steps)
        optimizer_step(model, optimizer, loss)
        for curve, value in zip(curves.values(), (fit, gap, loss)):
            curve.append(value.detach())
        bar.update(1)
        if progress and (step % 10 == 9 or step == n_steps - 1):  # float() waits for the device
            bar.set_postfix(loss=f"{float(loss):.3g}")
    bar.close()
    model.eval()
    losses = {name: torch.stack(curve) for name, curve in curves.items()}
    window = loss_window(n_steps, MINI_BATCH_WINDOW)
    converged = loss_flattened(losses["total"], rtol, window)
    if warn:
        _report_fit(converged, n_steps, window, rtol, caught)
    return MapFit(model=model, losses=losses, n_iter=n_steps, converged=converged,
                  extra={"sinkhorn_unconverged": caught.count, "window": window, "rtol": rtol})


def _check_model(model, x):
    """``model`` is a module on ``x``'s dtype and device that maps ``(k, d)`` to ``(k, d)``."""
    check_module(model, "model", like=x)
    if isinstance(model, ICNN) and model.dim != x.shape[1]:
        raise ValueError(f"model is an ICNN on R^{model.dim} but the points are in "
                         f"R^{x.shape[1]}")
    with torch.no_grad():
        probe = _apply(model, x[:2].detach())
    if not isinstance(probe, torch.Tensor) or probe.shape != x[:2].shape:
        raise ValueError(f"model must map points of shape (k, {x.shape[1]}) to the same shape, "
                         f"got {tuple(getattr(probe, 'shape', ()))}")


def _optimizer(model, optimizer, lr) -> torch.optim.Optimizer:
    """The optimiser given, or Adam on the model's parameters."""
    if optimizer is None:
        return torch.optim.Adam(model.parameters(), lr=check_positive(lr, "lr"))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return optimizer


def _batch(sample: torch.Tensor, batch_size: int, generator) -> torch.Tensor:
    """``batch_size`` points drawn without replacement (the whole sample when it is smaller)."""
    k = sample.shape[0]
    if k <= batch_size:
        return sample
    return sample[randperm(k, like=sample, generator=generator)[:batch_size]]


def _map_loss(model, xb, yb, *, eps, lam, gap_eps, tol, max_iter):
    """:func:`fit_map`'s loss on one pair of batches: ``(fit, Monge gap, total)``, the gap zero
    when its weight ``lam`` is."""
    mapped = _apply(model, xb)
    fit = divergence_value(mapped, yb, eps, Options(tol=tol, max_iter=max_iter), "fit_map")
    if not lam:
        return fit, fit.new_zeros(()), fit
    # by default the gap's eps follows the map (5 % of the current mean cost), so that its
    # Sinkhorn solve stays well conditioned as the map moves
    e = gap_eps if gap_eps is not None else eps_relative(cost_matrix(xb, mapped.detach()), 0.05)
    gap = monge_gap(xb, mapped, e, tol=tol, max_iter=max_iter)
    return fit, gap, fit + lam * gap


def _cosine_lr(optimizer, base_lrs, step: int, n_steps: int) -> None:
    """Set the learning rates of ``step`` on a half cosine from ``base_lrs`` down to zero."""
    factor = 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


def _report_fit(converged, n_steps, window, rtol, caught: WarningSummary) -> None:
    """:func:`fit_map`'s warnings: the loss had not flattened, Sinkhorn solves did not converge
    (pointing at the caller of :func:`fit_map`)."""
    if not converged:
        if n_steps >= 2 * window:
            reason = (f"the loss was still falling after {n_steps} steps (its mean over the last "
                      f"{window} steps fell by more than rtol={rtol:g} times its total fall so "
                      "far)")
        else:
            reason = f"{n_steps} steps are too few to judge convergence (it takes {2 * window})"
        warn_runtime(f"fit_map: {reason}; train longer or raise the learning rate",
                      stacklevel=3)
    if caught.count:
        warn_runtime(f"fit_map: a Sinkhorn solve inside the loss did not converge at "
                      f"{caught.count} of {n_steps} steps; raise sinkhorn_max_iter or eps (the "
                      f"first: {caught.first})", stacklevel=3)
