r"""Transport maps: from couplings to maps, entropic maps, input-convex networks, the Monge gap.

A coupling says how much mass goes from each ``x_i`` to each ``y_j``; a *map* says where each
point goes, and applies to points it has never seen. This module turns the first into the second
in four ways:

* :func:`barycentric_projection` (and :func:`soft_labels`): average the targets a plan sends a
  point to. In-sample only.
* :func:`entropic_map`: the out-of-sample extension of the entropic plan through its potential
  (Pooladian and Niles-Weed), a softmax-weighted average of the target points.
* :class:`ICNN`: a neural convex potential :math:`\psi` whose gradient is the map (Brenier's
  theorem), trained with :func:`fit_map`.
* :func:`monge_gap`: how far any map is from being optimal for the points it moves (Uscidda and
  Cuturi), a regulariser for maps that are not gradients of convex functions.

The Brenier map between Gaussians lives in :mod:`otbook.gaussian` (``ob.gaussian_map``).
Every entropic computation here runs on the Sinkhorn engine (:func:`otbook.sinkhorn`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import (
    as_tensor,
    check_eps,
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
from .costs import cost_matrix
from .result import OTResult
from .sinkhorn import eps_relative, sinkhorn, sinkhorn_divergence

__all__ = [
    "barycentric_projection",
    "soft_labels",
    "entropic_map",
    "EntropicMap",
    "ICNN",
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
    P = check_plan(plan, "plan")
    if P.ndim != 2:
        raise ValueError(f"plan must have shape (n, m) for soft_labels, got {tuple(P.shape)}")
    lab, k = check_labels(labels, P.shape[1], "labels", n_classes)
    onehot = torch.nn.functional.one_hot(lab.to(P.device), k).to(P.dtype)
    return barycentric_projection(P, onehot)


# --------------------------------------------------------------------------------------------
# the entropic map


def _block_size(n_cols: int, budget: int = 2**24) -> int:
    return max(1, budget // max(1, n_cols))


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
    """

    def __init__(self, y: torch.Tensor, b: torch.Tensor, g: torch.Tensor, eps: float,
                 result: OTResult):
        self.y, self.b, self.g, self.eps, self.result = y, b, g, eps, result
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

    def _check(self, x):
        x, _ = check_pair_points(x, self.y, names=("x", "y (the map's targets)"))
        if x.ndim != 2:
            raise ValueError(f"x must have shape (k, d), got {tuple(x.shape)}")
        return x

    def __call__(self, x) -> torch.Tensor:
        r"""Map points: :math:`T_\varepsilon(x) = \sum_j w_j(x)\, y_j`, with
        :math:`w(x) = \operatorname{softmax}_j\big(\log b_j + (g_j - \|x - y_j\|^2)/\varepsilon\big)`.

        Differentiable in ``x``. Computed in blocks of rows, so any number of points fits.
        """
        x = self._check(x)
        block = _block_size(self.y.shape[0])
        parts = [torch.softmax(self._logits(x[s:s + block]), dim=-1) @ self.y
                 for s in range(0, x.shape[0], block)]
        return torch.cat(parts, 0)

    def potential(self, x) -> torch.Tensor:
        r"""The source potential extended to any point,
        :math:`f_\varepsilon(x) = -\varepsilon \log \sum_j b_j e^{(g_j - \|x - y_j\|^2)/\varepsilon}`.

        For the cost :math:`\|x - y\|^2` the map is :math:`T_\varepsilon = \mathrm{id} -
        \tfrac12 \nabla f_\varepsilon`.
        """
        x = self._check(x)
        block = _block_size(self.y.shape[0])
        parts = [-self.eps * torch.logsumexp(self._logits(x[s:s + block]), dim=-1)
                 for s in range(0, x.shape[0], block)]
        return torch.cat(parts, 0)

    def __repr__(self) -> str:
        return (f"EntropicMap(m={self.y.shape[0]}, d={self.y.shape[1]}, eps={self.eps:.4g}, "
                f"converged={self.converged})")


def entropic_map(x, y, eps, *, a=None, b=None, tol: float = 1e-6, max_iter: int = 10_000,
                 eps_scaling: float | None = None, warn: bool = True,
                 progress: bool = False) -> EntropicMap:
    r"""The entropic estimator of the optimal map from samples :math:`x \sim \mu` to :math:`y \sim \nu`.

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
    res = sinkhorn(a, b, cost_matrix(x, y), eps, tol=tol, max_iter=max_iter,
                   eps_scaling=eps_scaling, warn=False, progress=progress)
    if warn and not res.converged:
        warnings.warn(
            f"entropic_map: the Sinkhorn solve did not converge in {max_iter} iterations "
            f"(criterion {float(res.extra['criterion']):.3g} > tol {tol:g}); the map is built "
            "from unconverged potentials. Raise max_iter, or use a larger eps or eps_scaling",
            RuntimeWarning,
            stacklevel=2,
        )
    return EntropicMap(y, b, res.g.detach(), eps, res)


# --------------------------------------------------------------------------------------------
# input-convex neural networks


_ACTIVATIONS = {
    "softplus": nn.functional.softplus,
    "leaky_relu": lambda z: nn.functional.leaky_relu(z, 0.2),
    "celu": nn.functional.celu,
}


class ICNN(nn.Module):
    r"""An input-convex neural network :math:`\psi : \R^d \to \R` and its gradient map.

    .. math::

        z_1 = \sigma(A_0 x + c_0), \qquad z_{k+1} = \sigma(W_k z_k + A_k x + c_k),

        \psi(x) = w^\top z_K + \tfrac12 \|L x\|^2 + \tfrac{s}{2} \|x\|^2 + \ell^\top x,

    with :math:`W_k \ge 0`, :math:`w \ge 0` entrywise and :math:`\sigma` convex and
    non-decreasing, so :math:`\psi` is convex in :math:`x` (Amos, Xu and Kolter, 2017): a
    non-negative combination of convex functions, composed with a convex non-decreasing one, is
    convex. The non-negative weights are applied as ``clamp_min(0)`` in the forward pass, so
    :math:`\psi` is convex whatever the parameters hold; :meth:`project_` clips the stored
    values (call it after each optimiser step, :func:`fit_map` does) so that no weight sits
    below zero where it would receive no gradient.

    The quadratic :math:`\tfrac12\|Lx\|^2` carries the linear part of the map (a Gaussian-to-
    Gaussian Brenier map is exactly representable) and the hidden layers bend it. With
    ``init="identity"`` the map :math:`\nabla\psi` starts as the identity: :math:`L^\top L + sI =
    I` and the output weights start at zero (not one: zero keeps the identity exact; their
    gradients are the activations, so they move at once).

    Parameters
    ----------
    dim : int
        Input dimension :math:`d`.
    hidden : sequence of int
        Widths of the hidden layers (at least one).
    activation : {"celu", "softplus", "leaky_relu"}
        Convex non-decreasing activation. ``"celu"`` (default; :math:`z` for :math:`z > 0`,
        :math:`e^z - 1` below) bends sharply at the scale of the data from the first step, so
        training moves quickly, and keeps a continuous map; ``"softplus"`` is smooth everywhere
        but nearly linear at that scale until the weights grow; ``"leaky_relu"`` gives a
        piecewise-constant Jacobian.
    strong_convexity : float
        :math:`s \ge 0`: adds :math:`\tfrac s2 \|x\|^2`, making :math:`\psi` :math:`s`-strongly
        convex and its gradient map invertible with :math:`\|\nabla\psi(x) - \nabla\psi(x')\|
        \ge s \|x - x'\|`.
    init : {"identity", "random"}
        ``"identity"``: :math:`\nabla\psi = \mathrm{id}` at initialisation; ``"random"``: a
        random convex potential.
    device, dtype : optional
        Where the parameters are created (torch's defaults otherwise), as for ``nn.Linear``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> net = ob.ICNN(2, hidden=(16, 16), dtype=torch.float64)
    >>> x = torch.randn(5, 2, dtype=torch.float64)
    >>> torch.allclose(net.transport(x), x)   # identity at initialisation
    True
    >>> bool((torch.linalg.eigvalsh(net.hessian(x)) >= -1e-12).all())
    True
    """

    def __init__(self, dim: int, hidden=(64, 64), *, activation: str = "celu",
                 strong_convexity: float = 0.0, init: str = "identity", device=None, dtype=None):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        hidden = tuple(hidden) if not isinstance(hidden, int) else (hidden,)
        if not hidden:
            raise ValueError("hidden must list at least one layer width")
        hidden = tuple(check_positive_int(h, "hidden[...]") for h in hidden)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if strong_convexity != 0:
            strong_convexity = check_positive(strong_convexity, "strong_convexity")
        else:
            strong_convexity = 0.0
        if init not in ("identity", "random"):
            raise ValueError(f"init must be 'identity' or 'random', got {init!r}")
        kw = {"device": device, "dtype": dtype}
        self.dim, self.hidden, self.activation = dim, hidden, activation
        self.strong_convexity = strong_convexity
        self._sigma = _ACTIVATIONS[activation]
        # x-paths (unconstrained) and z-paths (non-negative)
        self.A = nn.ModuleList([nn.Linear(dim, h, **kw) for h in hidden])
        self.W = nn.ParameterList([nn.Parameter(torch.empty(h_out, h_in, **kw))
                                   for h_in, h_out in zip(hidden[:-1], hidden[1:])])
        self.w = nn.Parameter(torch.empty(hidden[-1], **kw))
        self.L = nn.Parameter(torch.empty(dim, dim, **kw))
        self.linear = nn.Parameter(torch.zeros(dim, **kw))
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "identity") -> None:
        """Re-initialise (``"identity"``: the gradient map is the identity)."""
        for lin in self.A:
            lin.reset_parameters()
        for W in self.W:  # non-negative, scaled so a layer roughly keeps its input's size
            W.uniform_(0.0, 2.0 / W.shape[1])
        self.linear.zero_()
        if init == "identity":
            self.w.zero_()
            scale = math.sqrt(max(1.0 - self.strong_convexity, 0.0))
            self.L.copy_(scale * torch.eye(self.dim, dtype=self.L.dtype, device=self.L.device))
        else:
            self.w.uniform_(0.0, 2.0 / self.w.shape[0])
            nn.init.normal_(self.L, std=1.0 / math.sqrt(self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The potential :math:`\\psi(x)`, shape ``(k,)`` for ``x`` of shape ``(k, d)``."""
        z = self._sigma(self.A[0](x))
        for A, W in zip(self.A[1:], self.W):
            z = self._sigma(z @ W.clamp_min(0.0).T + A(x))
        out = z @ self.w.clamp_min(0.0) + 0.5 * ((x @ self.L.T) ** 2).sum(-1) + x @ self.linear
        if self.strong_convexity:
            out = out + 0.5 * self.strong_convexity * (x * x).sum(-1)
        return out

    def transport(self, x, create_graph: bool | None = None) -> torch.Tensor:
        r"""The map :math:`\nabla\psi(x)`, shape ``(k, d)``, by automatic differentiation.

        ``create_graph`` (default: whether gradients are enabled where it is called) keeps the
        graph, so that a loss on the mapped points can be back-propagated to the parameters.
        Under ``torch.no_grad()`` the result is detached.
        """
        x = as_tensor(x, "x", like=self.L)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (k, {self.dim}), got {tuple(x.shape)}")
        if create_graph is None:
            create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(xg).sum(), xg, create_graph=create_graph)
        return grad

    def hessian(self, x) -> torch.Tensor:
        r"""The Hessian :math:`\nabla^2\psi(x)`, shape ``(k, d, d)`` (the Jacobian of the map).

        Positive semi-definite at every point: that is what convexity means.
        """
        x = as_tensor(x, "x", like=self.L)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            grad = self.transport(xg, create_graph=True)
            rows = [torch.autograd.grad(grad[:, i].sum(), xg, retain_graph=i < self.dim - 1)[0]
                    for i in range(self.dim)]
        H = torch.stack(rows, 1).detach()
        return 0.5 * (H + H.transpose(-1, -2))

    @torch.no_grad()
    def project_(self) -> "ICNN":
        """Clip the non-negative weights at zero, in place (after an optimiser step)."""
        for W in self.W:
            W.clamp_(min=0.0)
        self.w.clamp_(min=0.0)
        return self

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
                f"strong_convexity={self.strong_convexity}")


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
    res = sinkhorn(a, a, cost_matrix(x, y), eps, tol=tol, max_iter=max_iter,
                   eps_scaling=eps_scaling, warn=False)
    if warn and not res.converged:
        warnings.warn(
            f"monge_gap: the Sinkhorn solve did not converge in {max_iter} iterations; the gap "
            "is inexact. Raise max_iter, or use a larger eps or eps_scaling",
            RuntimeWarning,
            stacklevel=2,
        )
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


def fit_map(model, x, y, *, eps, monge_gap_weight: float = 0.0, monge_gap_eps: float | None = None,
            n_steps: int = 500, batch_size: int = 256, lr: float = 1e-3, optimizer=None,
            lr_schedule: str = "constant", generator=None, rtol: float = 0.05, sinkhorn_tol: float = 1e-3,
            sinkhorn_max_iter: int = 2000, warn: bool = True, progress: bool = False) -> MapFit:
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
    check_module(model, "model", like=x)
    if isinstance(model, ICNN) and model.dim != x.shape[1]:
        raise ValueError(f"model is an ICNN on R^{model.dim} but the points are in R^{x.shape[1]}")
    eps = check_eps(eps)
    lam = 0.0 if monge_gap_weight == 0 else check_positive(monge_gap_weight, "monge_gap_weight")
    gap_eps = None if monge_gap_eps is None else check_positive(monge_gap_eps, "monge_gap_eps")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2)
    rtol = check_positive(rtol, "rtol")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    sinkhorn_max_iter = check_positive_int(sinkhorn_max_iter, "sinkhorn_max_iter")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if optimizer is None:
        lr = check_positive(lr, "lr")
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    x, y = x.detach(), y.detach()
    with torch.no_grad():
        probe = _apply(model, x[:2])
    if not isinstance(probe, torch.Tensor) or probe.shape != x[:2].shape:
        raise ValueError(f"model must map points of shape (k, {x.shape[1]}) to the same shape, "
                         f"got {tuple(getattr(probe, 'shape', ()))}")

    def batch(sample):
        k = sample.shape[0]
        if k <= batch_size:
            return sample
        dev = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(k, generator=generator, device=dev)[:batch_size]
        return sample[idx.to(sample.device)]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc="fit_map", leave=False)
    fits, gaps, totals = [], [], []
    unconverged = 0
    model.train()
    for step in range(n_steps):
        xb, yb = batch(x), batch(y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            mapped = _apply(model, xb)
            fit = sinkhorn_divergence(mapped, yb, eps, tol=sinkhorn_tol, max_iter=sinkhorn_max_iter)
            loss = fit
            gap = fit.new_zeros(())
            if lam:
                e = gap_eps if gap_eps is not None else eps_relative(
                    cost_matrix(xb, mapped.detach()), 0.05)
                gap = monge_gap(xb, mapped, e, tol=sinkhorn_tol, max_iter=sinkhorn_max_iter)
                loss = fit + lam * gap
        if any(issubclass(w.category, RuntimeWarning) for w in caught):
            unconverged += 1
        for w in caught:  # anything else is not ours to hide
            if not issubclass(w.category, RuntimeWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if lr_schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(model, ICNN):
            model.project_()
        fits.append(fit.detach())
        gaps.append(gap.detach())
        totals.append(loss.detach())
        if bar is not None and (step % 10 == 9 or step == n_steps - 1):
            bar.update(step + 1 - bar.n)
            bar.set_postfix(loss=f"{float(loss):.3g}")
    if bar is not None:
        bar.close()
    model.eval()
    losses = {"fit": torch.stack(fits), "monge_gap": torch.stack(gaps), "total": torch.stack(totals)}
    window = max(5, n_steps // 10)
    converged = False
    if n_steps >= 2 * window:
        first = float(losses["total"][:window].mean())
        last = float(losses["total"][-window:].mean())
        before = float(losses["total"][-2 * window:-window].mean())
        converged = before - last <= rtol * max(first - last, 0.0)
        reason = (f"the loss was still falling after {n_steps} steps (its mean over the last "
                  f"{window} steps fell by more than rtol={rtol:g} times its total fall so far)")
    else:
        reason = f"{n_steps} steps are too few to judge convergence (it takes {2 * window})"
    if warn and not converged:
        warnings.warn(f"fit_map: {reason}; train longer or raise the learning rate",
                      RuntimeWarning, stacklevel=2)
    if warn and unconverged:
        warnings.warn(
            f"fit_map: a Sinkhorn solve inside the loss did not converge at {unconverged} of "
            f"{n_steps} steps; raise sinkhorn_max_iter or eps",
            RuntimeWarning,
            stacklevel=2,
        )
    return MapFit(model=model, losses=losses, n_iter=n_steps, converged=converged,
                  extra={"sinkhorn_unconverged": unconverged, "window": window, "rtol": rtol})
