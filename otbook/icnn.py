r"""Convex potentials: input-convex neural networks and the maths of their gradient maps.

A convex potential :math:`\psi : \R^d \to \R` gives a map :math:`\nabla\psi`, the optimal
transport map from any measure onto its image (Brenier's theorem), with Jacobian the Hessian
:math:`\nabla^2\psi \succeq 0`. This module holds

* :class:`ICNN`: a neural network convex in its input (Amos, Xu and Kolter, 2017), trained by
  :func:`otbook.fit_map` and :func:`otbook.jko_icnn`;
* :func:`potential_gradient`: the map :math:`\nabla\psi(x)` of any potential, by autograd;
* :func:`hessian_logdet`: :math:`\log\det\nabla^2\psi(x)`, the log-volume change of the map
  (exactly by a Cholesky factorisation, or by the stochastic estimators of CP-Flow built on
  :func:`lanczos_logdet_quadrature` and conjugate gradients).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import (
    as_tensor,
    check_choice,
    check_generator,
    check_module,
    check_points,
    check_positive,
    check_positive_int,
)
from ._runtime import randint

__all__ = [
    "ICNN",
    "potential_gradient",
    "hessian_logdet",
    "lanczos_logdet_quadrature",
]


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
    values (call it after each optimiser step, :func:`otbook.fit_map` does) so that no weight sits
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
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
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

    def _input(self, x) -> torch.Tensor:
        x = as_tensor(x, "x", like=self.L)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (k, {self.dim}), got {tuple(x.shape)}")
        return x

    def transport(self, x, create_graph: bool | None = None) -> torch.Tensor:
        r"""The map :math:`\nabla\psi(x)`, shape ``(k, d)``, by automatic differentiation.

        ``create_graph`` (default: whether gradients are enabled where it is called) keeps the
        graph, so that a loss on the mapped points can be back-propagated to the parameters.
        Under ``torch.no_grad()`` the result is detached.
        """
        x = self._input(x)
        if create_graph is None:
            create_graph = torch.is_grad_enabled()
        return _gradient(self, x, create_graph)[1]

    def hessian(self, x) -> torch.Tensor:
        r"""The Hessian :math:`\nabla^2\psi(x)`, shape ``(k, d, d)`` (the Jacobian of the map).

        Positive semi-definite at every point: that is what convexity means. Detached.
        """
        xg, grad = _gradient(self, self._input(x).detach(), create_graph=True)
        H = _hessian(xg, grad, create_graph=False).detach()
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
# gradients, Hessians and their log-determinants


def _gradient(psi, x: torch.Tensor, create_graph: bool):
    """``(xg, grad psi(xg))``: ``xg`` is ``x`` itself when it requires grad (the map then stays
    differentiable in ``x``), else a leaf copy of it to differentiate against."""
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(psi(xg).sum(), xg, create_graph=create_graph)
    return xg, g


def _hessian(xg: torch.Tensor, g: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """The Hessian ``(k, d, d)`` from ``g = grad psi(xg)`` (taken with its graph): one backward
    pass per coordinate, batched over the points (row ``i`` of point ``k`` only depends on
    point ``k``)."""
    d = xg.shape[1]
    with torch.enable_grad():
        rows = [torch.autograd.grad(g[:, i].sum(), xg, create_graph=create_graph,
                                    retain_graph=create_graph or i < d - 1)[0] for i in range(d)]
    return torch.stack(rows, 1)


def potential_gradient(psi, x: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    r"""The map :math:`\nabla\psi(x)` of a potential, by automatic differentiation.

    ``psi`` is any module or callable mapping points ``(k, d)`` to values ``(k,)`` (for an
    :class:`ICNN`, :meth:`ICNN.transport` is the same map with input checks). ``x`` is
    detached: with ``create_graph`` the result is differentiable in the parameters of ``psi``
    (for a loss on the mapped points), not in ``x``.

    Examples
    --------
    >>> import torch
    >>> from otbook.icnn import potential_gradient
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> potential_gradient(lambda z: (z ** 2).sum(-1), x, create_graph=False)
    tensor([[2., 4.]], dtype=torch.float64)
    """
    return _gradient(psi, x.detach(), create_graph)[1]


def _cholesky_logdet(H: torch.Tensor) -> torch.Tensor:
    H = 0.5 * (H + H.transpose(-1, -2))
    L, info = torch.linalg.cholesky_ex(H)
    bad = info != 0
    if bool(bad.any()):
        raise ValueError(f"the Hessian is not positive definite at {int(bad.sum())} of "
                         f"{H.shape[0]} points: the potential is not strictly convex there; use an "
                         "ICNN with strong_convexity > 0")
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def lanczos_logdet_quadrature(hvp, v: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Gauss quadrature of :math:`v^\top \log(H)\, v` by ``steps`` Lanczos steps, batched.

    :math:`H` is symmetric positive definite, seen only through ``hvp``, which maps a batch of
    vectors ``(k, d)`` to :math:`H` times each (one :math:`H` per row: the Hessians of ``k``
    points). Lanczos from :math:`v / \|v\|` builds a tridiagonal :math:`T` (``steps`` square);
    the quadrature is :math:`\|v\|^2 e_1^\top \log(T)\, e_1`, exact when ``steps`` :math:`= d`.
    Averaged over random probes :math:`v` with :math:`\E vv^\top = I` it estimates
    :math:`\tr\log H = \log\det H` (stochastic Lanczos quadrature, used by
    :func:`hessian_logdet`).

    A row whose Krylov space is exhausted early (an invariant subspace: :math:`\beta = 0`) is
    padded with a block decoupled from the first basis vector, so it adds nothing.

    Parameters
    ----------
    hvp : callable
        ``hvp(u)``, ``u`` of shape ``(k, d)``: :math:`H u` row by row.
    v : Tensor, shape (k, d)
        The vectors (non-zero rows).
    steps : int
        Lanczos steps, at most :math:`d`.

    Returns
    -------
    Tensor, shape (k,)

    Raises
    ------
    ValueError
        When an eigenvalue of :math:`T` is :math:`\le 0` (:math:`H` is not positive definite).

    Examples
    --------
    >>> import math, torch
    >>> from otbook.icnn import lanczos_logdet_quadrature
    >>> H = torch.diag(torch.tensor([1.0, math.e ** 2], dtype=torch.float64))
    >>> v = torch.ones(1, 2, dtype=torch.float64)
    >>> quad = lanczos_logdet_quadrature(lambda u: u @ H, v, steps=2)
    >>> round(float(quad[0]), 10)                    # log 1 + log e^2
    2.0
    """
    norm = v.norm(dim=-1, keepdim=True)
    q = v / norm
    Q = [q]
    alphas, betas = [], []
    q_prev, beta = torch.zeros_like(q), torch.zeros_like(norm)
    alive = torch.ones_like(norm, dtype=torch.bool)
    scale = None
    for j in range(steps):
        w = hvp(q) - beta * q_prev
        alpha = (q * w).sum(-1, keepdim=True)
        w = w - alpha * q
        for qi in Q:  # full re-orthogonalisation: steps <= d is small
            w = w - (qi * w).sum(-1, keepdim=True) * qi
        scale = alpha.abs() if scale is None else torch.maximum(scale, alpha.abs())
        alphas.append(torch.where(alive, alpha, torch.ones_like(alpha))[:, 0])
        if j == steps - 1:
            break
        beta = w.norm(dim=-1, keepdim=True)
        alive = alive & (beta > 1e-10 * scale)
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas.append(beta[:, 0])
        q_prev, q = q, torch.where(alive, w / beta.clamp_min(torch.finfo(w.dtype).tiny),
                                   torch.zeros_like(w))
        Q.append(q)
    T = torch.diag_embed(torch.stack(alphas, -1))
    if len(alphas) > 1:
        off = torch.diag_embed(torch.stack(betas, -1), offset=1)
        T = T + off + off.transpose(-1, -2)
    theta, U = torch.linalg.eigh(T)
    if bool((theta <= 0).any()):
        raise ValueError("the Hessian is not positive definite (a Lanczos eigenvalue is <= 0): use "
                         "an ICNN with strong_convexity > 0")
    return norm[:, 0] ** 2 * (U[:, 0, :] ** 2 * torch.log(theta)).sum(-1)


def _conjugate_gradients(hvp, b, steps, tol=1e-10):
    """Solve H w = b by conjugate gradients, batched over rows (H symmetric positive definite)."""
    w = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    for _ in range(steps):
        Hp = hvp(p)
        alpha = rs / (p * Hp).sum(-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
        w = w + alpha * p
        r = r - alpha * Hp
        rs_new = (r * r).sum(-1, keepdim=True)
        if bool((rs_new.sqrt() <= tol * b.norm(dim=-1, keepdim=True)).all()):
            break
        p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rs = rs_new
    return w


def hessian_logdet(model, x, *, method: str = "exact", n_probes: int = 4,
                   lanczos_steps: int | None = None, cg_steps: int | None = None,
                   generator=None, return_map: bool = False):
    r"""The log-determinant of the Hessian, :math:`\log\det\nabla^2\psi(x)`, at each point.

    :math:`\psi` is a convex potential (an :class:`otbook.ICNN`, or any module mapping ``(k, d)``
    to ``(k,)``); :math:`\nabla^2\psi(x)` is the Jacobian of the map :math:`\nabla\psi`, and
    :math:`\log\det` of it is the log-volume change of the change of variables
    :math:`\rho_{\nabla\psi_\sharp\mu}(\nabla\psi(x)) = \rho_\mu(x) / \det\nabla^2\psi(x)`.
    The result is differentiable in the parameters of ``model`` (for training through it).

    * ``"exact"``: the full Hessian, :math:`d` backward passes, then a Cholesky factorisation;
      exact, for small :math:`d`.
    * ``"stochastic"``: the estimators of CP-Flow (Huang et al., 2021) used by
      JKO-ICNN: the *value* by stochastic Lanczos quadrature, :math:`\log\det H = \tr\log H
      \approx \frac1p\sum_{l} v_l^\top \log(H)\, v_l` with Rademacher probes :math:`v_l` and
      :math:`v^\top\log(H)v` from ``lanczos_steps`` Lanczos steps (Gauss quadrature); the
      *gradient* by the Hutchinson estimate of
      :math:`\partial\log\det H = \tr(H^{-1}\partial H) \approx \frac1p \sum_l (H^{-1}v_l)^\top
      \partial H\, v_l`, with :math:`H^{-1}v_l` by conjugate gradients. Only Hessian-vector
      products are used (one backward pass each, batched over the points), so the cost grows
      with the number of steps, not with :math:`d^2`. Unbiased in expectation over the probes
      (the value up to the quadrature error, nil when ``lanczos_steps`` :math:`= d`).

    Parameters
    ----------
    model : torch.nn.Module
        The potential, convex in its input, with parameters of ``x``'s dtype and device.
    x : Tensor or array, shape (k, d)
        Points.
    method : {"exact", "stochastic"}
    n_probes : int
        Probes of the stochastic estimator.
    lanczos_steps, cg_steps : int, optional
        Lanczos steps (at most :math:`d`; default :math:`\min(d, 10)`) and conjugate-gradient
        iterations (default :math:`\min(d, 20)`) of the stochastic estimator.
    generator : torch.Generator, optional
        Draws the probes (on ``x``'s device).
    return_map : bool
        Also return :math:`\nabla\psi(x)`, computed on the way (same graph).

    Returns
    -------
    Tensor, shape (k,)
        The log-determinants (or a pair ``(logdet, grad_psi)`` with ``return_map``).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> net = ob.ICNN(3, hidden=(8,), init="random", strong_convexity=0.1, dtype=torch.float64)
    >>> x = torch.randn(5, 3, dtype=torch.float64)
    >>> exact = torch.logdet(net.hessian(x))
    >>> torch.allclose(ob.hessian_logdet(net, x), exact)
    True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ref = next(model.parameters(), None)
    x = check_points(x, "x", like=ref) if ref is not None and not isinstance(x, torch.Tensor) \
        else check_points(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (k, d), got {tuple(x.shape)}")
    if ref is not None:
        check_module(model, "model", like=x)
    method = check_choice(method, "method", ("exact", "stochastic"))
    d = x.shape[1]
    if method == "exact":
        xg, g = _gradient(model, x.detach(), create_graph=True)
        out = _cholesky_logdet(_hessian(xg, g, create_graph=True))
        return (out, g) if return_map else out
    n_probes = check_positive_int(n_probes, "n_probes")
    lanczos_steps = (min(d, 10) if lanczos_steps is None
                     else check_positive_int(lanczos_steps, "lanczos_steps"))
    if lanczos_steps > d:
        raise ValueError(f"lanczos_steps must be at most d = {d}, got {lanczos_steps}")
    cg_steps = min(d, 20) if cg_steps is None else check_positive_int(cg_steps, "cg_steps")
    check_generator(generator)
    out, g = _stochastic_logdet(model, x, n_probes, lanczos_steps, cg_steps, generator)
    return (out, g) if return_map else out


def _stochastic_logdet(model, x, n_probes, lanczos_steps, cg_steps, generator):
    """The stochastic estimator of :func:`hessian_logdet` (checked inputs): the value by
    Lanczos quadrature, the gradient by Hutchinson with conjugate gradients; and the map."""
    xg, g = _gradient(model, x.detach(), create_graph=True)

    def hvp_nograd(v):
        return torch.autograd.grad(g, xg, grad_outputs=v, retain_graph=True)[0].detach()

    values, surrogates = [], []
    for _ in range(n_probes):
        v = randint(2, x.shape, like=x, generator=generator).to(x.dtype) * 2.0 - 1.0  # Rademacher
        with torch.no_grad():
            values.append(lanczos_logdet_quadrature(hvp_nograd, v, lanczos_steps))
            w = _conjugate_gradients(hvp_nograd, v, cg_steps)
        # w^T (dH) v with w = H^{-1} v frozen: its gradient is the Hutchinson estimate of
        # d logdet H = tr(H^{-1} dH), and subtracting its value leaves only the gradient
        Hv = torch.autograd.grad(g, xg, grad_outputs=v, create_graph=True)[0]
        surrogates.append((w * Hv).sum(-1))
    value = torch.stack(values).mean(0)
    surrogate = torch.stack(surrogates).mean(0)
    return value + (surrogate - surrogate.detach()), g
