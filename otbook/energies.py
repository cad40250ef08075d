r"""Energies: functionals :math:`F(\rho)` of a particle measure, whose gradient flows
:mod:`otbook.flows` follows.

An :class:`Energy` maps particles ``(n, d)`` (the measure :math:`\rho = \frac1n\sum_i
\delta_{x_i}`) to a scalar tensor, differentiably; energies add up and scale. The factories:

* :func:`potential_energy`: :math:`\int V\, d\rho`;
* :func:`interaction_energy`: :math:`\frac12 \iint W(x - y)\, d\rho(x)\, d\rho(y)`;
* :func:`internal_energy`: :math:`\int f(\rho)` (entropy, porous medium, any :math:`f`), from the
  exact log-density when it is known, else from :func:`~otbook.energies.kde_log_density`;
* :func:`mmd_energy`: half the squared MMD (or energy distance) to a target;
* :func:`sinkhorn_energy`: half the Sinkhorn divergence to a target.

Any callable that maps particles to a scalar tensor works as an energy too (:func:`as_energy`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import (
    check_callable,
    check_choice,
    check_points,
    check_positive,
    check_positive_int,
    check_scaling,
)
from .costs import cost_matrix
from .kernels import mmd
from .sinkhorn.engine import Options, divergence_value

__all__ = [
    "Energy",
    "as_energy",
    "potential_energy",
    "interaction_energy",
    "internal_energy",
    "kde_log_density",
    "mmd_energy",
    "sinkhorn_energy",
]


class Energy:
    r"""A functional :math:`F(\rho)` of particles, :math:`\rho = \frac1n\sum_i\delta_{x_i}`.

    Call it on particles ``x`` of shape ``(n, d)``; it returns a scalar tensor, differentiable in
    ``x``. Energies add up and scale: ``potential_energy(V) + 0.5 * internal_energy("entropy")``.

    Internal energies (:func:`internal_energy`) need the density of :math:`\rho` at the
    particles: pass ``log_density`` (shape ``(n,)``, the log-density at each particle) when it is
    known, as :func:`otbook.jko_icnn` does; without it they estimate it with a Gaussian kernel
    density estimate. The other terms ignore ``log_density``.

    Parameters
    ----------
    fn : callable
        ``fn(x) -> scalar tensor``, or ``fn(x, log_density) -> scalar tensor`` when
        ``uses_density`` is true.
    name : str
        Shown in ``repr`` and as the key of :meth:`terms`.
    uses_density : bool
        Whether ``fn`` takes ``log_density`` (``None`` when unknown) as a second argument.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> V = ob.potential_energy(lambda x: (x ** 2).sum(-1) / 2)
    >>> F = V + ob.Energy(lambda x: x.mean(), "mean")
    >>> F
    Energy(potential + mean)
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> float(F(x)), {name: float(v) for name, v in F.terms(x).items()}
    (10.0, {'potential': 7.5, 'mean': 2.5})
    """

    def __init__(self, fn: Callable, name: str = "energy", *, uses_density: bool = False):
        check_callable(fn, "fn")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        self._terms = [(1.0, name, fn, bool(uses_density))]

    @classmethod
    def _from_terms(cls, terms) -> "Energy":
        out = cls.__new__(cls)
        out._terms = list(terms)
        return out

    @property
    def uses_density(self) -> bool:
        """Whether a term is an internal energy (it reads the density at the particles)."""
        return any(t[3] for t in self._terms)

    def _term_values(self, x, log_density):
        for weight, name, fn, uses_density in self._terms:
            value = fn(x, log_density) if uses_density else fn(x)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TypeError(f"the energy term {name!r} must return a scalar tensor, got "
                                f"{type(value).__name__}{tuple(getattr(value, 'shape', ()))}")
            yield name, weight * value.reshape(())

    def __call__(self, x, log_density=None) -> torch.Tensor:
        """The value :math:`F(\\rho)` (a scalar tensor)."""
        return sum(v for _, v in self._term_values(x, log_density))

    def terms(self, x, log_density=None) -> dict:
        """Each term's value (weighted), by name, detached: to see which part of :math:`F` moves."""
        out = {}
        for name, v in self._term_values(x, log_density):
            key, k = name, 2
            while key in out:
                key, k = f"{name} ({k})", k + 1
            out[key] = v.detach()
        return out

    def __add__(self, other) -> "Energy":
        if not isinstance(other, Energy):
            if not callable(other):
                return NotImplemented
            other = as_energy(other)
        return Energy._from_terms(self._terms + other._terms)

    def __radd__(self, other) -> "Energy":
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        if callable(other) and not isinstance(other, Energy):
            return as_energy(other) + self
        return NotImplemented

    def __mul__(self, c) -> "Energy":
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return NotImplemented
        c = float(c)
        if not math.isfinite(c):
            raise ValueError(f"an energy can only be scaled by a finite number, got {c}")
        return Energy._from_terms([(c * w, n, f, u) for w, n, f, u in self._terms])

    __rmul__ = __mul__

    def __repr__(self) -> str:
        parts = [n if w == 1.0 else f"{w:g} * {n}" for w, n, _, _ in self._terms]
        return "Energy(" + " + ".join(parts) + ")"


def as_energy(energy, name: str = "energy") -> Energy:
    """``energy`` as an :class:`Energy`: itself, or a callable ``f(x) -> scalar`` wrapped under
    its ``__name__`` (a ``TypeError`` naming ``name`` when it is not callable)."""
    if isinstance(energy, Energy):
        return energy
    check_callable(energy, name)
    return Energy(energy, getattr(energy, "__name__", "energy"))


def potential_energy(V: Callable) -> Energy:
    r"""The potential energy :math:`\mathcal V(\rho) = \int V\, d\rho = \frac1n \sum_i V(x_i)`.

    Its flow moves every particle down the potential, :math:`\dot x = -\nabla V(x)`, each on its
    own.

    Parameters
    ----------
    V : callable
        ``V(x)`` maps points ``(n, d)`` to values ``(n,)``, differentiably (torch operations).

    Returns
    -------
    Energy

    Examples
    --------
    >>> import torch, otbook as ob
    >>> F = ob.potential_energy(lambda x: 0.5 * (x ** 2).sum(-1))
    >>> float(F(torch.tensor([[0.0], [2.0]])))
    1.0
    """
    check_callable(V, "V")

    def value(x):
        v = V(x)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape[:1]:
            raise ValueError(f"V must map points of shape (n, d) to values of shape (n,), got "
                             f"{tuple(getattr(v, 'shape', ()))} for x of shape {tuple(x.shape)}")
        return v.mean()

    return Energy(value, "potential")


def interaction_energy(W: Callable) -> Energy:
    r"""The interaction energy, :math:`\frac12 \iint W(x - y)\, d\rho(x)\, d\rho(y)`.

    On particles it is the average over distinct pairs,
    :math:`\frac{1}{2n(n-1)} \sum_{i \ne j} W(x_i - x_j)`: the pairs :math:`i = j` are left out,
    so that kernels singular at 0 (:math:`-\log\|z\|`, Newtonian, Riesz) work, and the
    particle velocity :math:`-\frac{1}{n-1}\sum_{j\ne i} \nabla W(x_i - x_j)` is the unbiased
    estimate of :math:`-(\nabla W * \rho)(x_i)`. Memory grows as :math:`n^2 d`.

    Parameters
    ----------
    W : callable
        ``W(z)`` maps differences of shape ``(k, d)`` to values ``(k,)``; symmetric,
        :math:`W(-z) = W(z)`.

    Returns
    -------
    Energy

    Examples
    --------
    >>> import torch, otbook as ob
    >>> F = ob.interaction_energy(lambda z: (z ** 2).sum(-1))   # E|X - X'|^2 / 2 over pairs
    >>> float(F(torch.tensor([[0.0], [2.0]])))
    2.0
    """
    check_callable(W, "W")

    def value(x):
        n = x.shape[0]
        if n < 2:
            raise ValueError("the interaction energy needs at least 2 particles")
        off = ~torch.eye(n, dtype=torch.bool, device=x.device)
        z = (x[:, None, :] - x[None, :, :])[off]
        w = W(z)
        if not isinstance(w, torch.Tensor) or w.shape != z.shape[:1]:
            raise ValueError(f"W must map differences of shape (k, d) to values of shape (k,), "
                             f"got {tuple(getattr(w, 'shape', ()))} for shape {tuple(z.shape)}")
        return 0.5 * w.mean()

    return Energy(value, "interaction")


_INTERNAL = ("entropy", "porous")


def _silverman(x: torch.Tensor) -> float:
    """Silverman's rule-of-thumb bandwidth for a Gaussian kernel in d dimensions."""
    n, d = x.shape
    sigma = float(x.detach().std(0, unbiased=True).mean()) if n > 1 else 1.0
    sigma = sigma if sigma > 0 else 1.0
    return sigma * (4.0 / ((d + 2) * n)) ** (1.0 / (d + 4))


def kde_log_density(x, bandwidth=None) -> torch.Tensor:
    r"""Log of the Gaussian kernel density estimate of the particles, at the particles.

    :math:`\log \hat\rho_h(x_i) = \log \frac1n \sum_j \varphi_h(x_i - x_j)`, with
    :math:`\varphi_h` the density of :math:`N(0, h^2 I_d)`; computed with a log-sum-exp. The
    self term :math:`j = i` is kept (the blob regularisation of Carrillo, Craig and Patacchini,
    2019), so the estimate is finite and smooth in the particles.

    Parameters
    ----------
    x : Tensor or array, shape (n, d)
        Particles.
    bandwidth : float, optional
        :math:`h > 0`; default Silverman's rule :math:`h = \sigma (4 / ((d + 2) n))^{1/(d+4)}`
        with :math:`\sigma` the mean standard deviation of the coordinates (computed without
        gradient).

    Returns
    -------
    Tensor, shape (n,)
        Differentiable in ``x``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.zeros(3, 1, dtype=torch.float64)
    >>> float(ob.energies.kde_log_density(x, bandwidth=1.0).exp()[0])   # N(0, 1) density at 0
    0.3989422804014327
    """
    x = check_points(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d), got {tuple(x.shape)}")
    n, d = x.shape
    h = _silverman(x) if bandwidth is None else check_positive(bandwidth, "bandwidth")
    C = cost_matrix(x, x)
    return (torch.logsumexp(-C / (2.0 * h * h), dim=1) - math.log(n)
            - 0.5 * d * math.log(2.0 * math.pi * h * h))


def internal_energy(kind="entropy", *, m: float = 2.0, bandwidth=None) -> Energy:
    r"""An internal energy :math:`\mathcal F(\rho) = \int f(\rho(x))\, dx`.

    * ``"entropy"``: :math:`f(s) = s \log s`, the negative entropy; its flow is the heat
      equation :math:`\partial_t\rho = \Delta\rho`.
    * ``"porous"``: :math:`f(s) = s^m / (m - 1)`; its flow is the porous-medium equation
      :math:`\partial_t\rho = \Delta \rho^m`.
    * a callable ``f``: any :math:`f` with :math:`f(0) = 0` (torch operations on a tensor of
      densities).

    It is evaluated as an expectation over the particles,
    :math:`\int f(\rho) = \E_{X\sim\rho}[f(\rho(X)) / \rho(X)]`, which needs the density at the
    particles: the exact ``log_density`` when the caller knows it (:func:`otbook.jko_icnn`
    tracks it through each map), otherwise a Gaussian kernel density estimate
    (:func:`~otbook.energies.kde_log_density`, the blob method). The estimate smooths the density
    over the bandwidth :math:`h`: it is what makes particle flows of internal energies possible,
    at the price of a bias that grows with :math:`h`.

    Parameters
    ----------
    kind : {"entropy", "porous"} or callable
    m : float
        Exponent of the porous-medium energy, :math:`m > 1`.
    bandwidth : float, optional
        Bandwidth of the density estimate (when no ``log_density`` is given); default Silverman's
        rule, recomputed at each call.

    Returns
    -------
    Energy

    Examples
    --------
    >>> import torch, otbook as ob
    >>> F = ob.internal_energy("entropy")
    >>> x = torch.zeros(4, 1, dtype=torch.float64)
    >>> log_rho = torch.full((4,), -1.0, dtype=torch.float64)   # a density e^{-1} everywhere
    >>> float(F(x, log_density=log_rho))                        # E log rho = -1
    -1.0
    """
    if callable(kind):
        f, name = kind, "internal"
    else:
        check_choice(kind, "kind", _INTERNAL)
        f, name = None, kind
    if kind == "porous":
        m = check_positive(m, "m")
        if m <= 1:
            raise ValueError(f"m must be > 1 for the porous-medium energy, got {m}")
    h = None if bandwidth is None else check_positive(bandwidth, "bandwidth")

    def value(x, log_density):
        if log_density is None:
            log_rho = kde_log_density(x, h)
        else:
            log_rho = log_density
            if log_rho.shape != x.shape[:1]:
                raise ValueError(f"log_density must have shape ({x.shape[0]},), got "
                                 f"{tuple(log_rho.shape)}")
        if kind == "entropy":
            return log_rho.mean()
        if kind == "porous":
            return torch.exp((m - 1.0) * log_rho).mean() / (m - 1.0)
        rho = torch.exp(log_rho)
        vals = f(rho)
        if not isinstance(vals, torch.Tensor) or vals.shape != rho.shape:
            raise ValueError("f must map a tensor of densities to a tensor of the same shape")
        return (vals / rho).mean()

    return Energy(value, name, uses_density=True)


def mmd_energy(target, *, kernel="gaussian", bandwidth=1.0) -> Energy:
    r"""Half the squared MMD to a fixed target, :math:`\frac12 \mathrm{MMD}_k^2(\rho, \beta)`.

    Computed by :func:`otbook.mmd` (V-statistic); ``kernel="energy"`` gives half the energy
    distance. Its flow is the MMD flow of Arbel et al. (2019): with a Gaussian kernel, particles
    far from the target (at many bandwidths) feel almost no pull and the flow can stall; the
    energy distance's pull does not fade with distance.

    Parameters
    ----------
    target : Tensor or array, shape (m, d)
        Target points (uniform weights).
    kernel, bandwidth
        As in :func:`otbook.mmd`.

    Returns
    -------
    Energy

    Examples
    --------
    >>> import torch, otbook as ob
    >>> y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> float(ob.mmd_energy(y, kernel="energy")(y + 1.0))   # half of ob.mmd's example
    0.5
    """
    y = check_points(target, "target")
    if y.ndim != 2:
        raise ValueError(f"target must have shape (m, d), got {tuple(y.shape)}")
    y = y.detach()
    mmd(y[:2], y[:2], kernel=kernel, bandwidth=bandwidth)  # checks kernel and bandwidth now

    def value(x):
        return 0.5 * mmd(x, y, kernel=kernel, bandwidth=bandwidth)

    return Energy(value, "MMD" if kernel != "energy" else "energy distance")


def sinkhorn_energy(target, *, eps, tol: float = 1e-6, max_iter: int = 10_000,
                    eps_scaling: float | None = None) -> Energy:
    r"""Half the Sinkhorn divergence to a target, :math:`\frac12 S_\varepsilon(\rho, \beta)`.

    Computed by :func:`otbook.sinkhorn_divergence` (squared Euclidean cost), with the envelope
    gradient. The factor :math:`\frac12` makes the particle velocity close to
    :math:`T_\varepsilon(x) - x` (towards the entropic map's image) for small :math:`\varepsilon`,
    so a time step of 1 nearly reaches the target, as for :math:`\frac12 W_2^2`
    (Feydy et al., 2019).

    Parameters
    ----------
    target : Tensor or array, shape (m, d)
        Target points (uniform weights).
    eps : float
        Entropic regularisation (absolute), > 0.
    tol, max_iter, eps_scaling
        As in :func:`otbook.sinkhorn_divergence`. A flow warns once, at its end, when solves did
        not converge.

    Returns
    -------
    Energy

    Examples
    --------
    >>> import torch, otbook as ob
    >>> y = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> F = ob.sinkhorn_energy(y, eps=1.0)
    >>> round(float(F(y + torch.tensor([1.0, 0.0], dtype=torch.float64))), 6)   # |t|^2 / 2
    0.5
    """
    y = check_points(target, "target")
    if y.ndim != 2:
        raise ValueError(f"target must have shape (m, d), got {tuple(y.shape)}")
    y = y.detach()
    eps = check_positive(eps, "eps")
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    opts = Options(tol=tol, max_iter=max_iter, eps_scaling=check_scaling(eps_scaling))

    def value(x):
        return 0.5 * divergence_value(x, y, eps, opts, "sinkhorn_energy")

    return Energy(value, "Sinkhorn divergence")

