r"""Wasserstein gradient flows: particle flows, the JKO scheme, and JKO with input-convex networks.

A functional :math:`F` of a probability measure :math:`\rho` has a *Wasserstein gradient flow*,
the continuity equation

.. math::

    \partial_t \rho_t = \nabla \cdot \Big(\rho_t\, \nabla \frac{\delta F}{\delta \rho}(\rho_t)\Big),

in which mass moves with the velocity :math:`v_t = -\nabla \frac{\delta F}{\delta\rho}(\rho_t)`.
This module follows such flows three ways:

* :func:`particle_flow`: explicit Euler steps on particles. For
  :math:`\rho = \frac1n \sum_i \delta_{x_i}` the velocity at :math:`x_i` is
  :math:`-n\, \nabla_{x_i} F(x_1, \dots, x_n)`: autograd of the empirical functional gives the
  velocity divided by :math:`n` (each particle carries mass :math:`1/n`), so the step is scaled
  by :math:`n` and the time step keeps its meaning whatever the number of particles.
* :func:`jko_particles`: the implicit (JKO) step
  :math:`\rho_{k+1} = \arg\min_\rho F(\rho) + \frac{1}{2\tau} W_2^2(\rho, \rho_k)` over particle
  positions, with :math:`W_2^2` replaced by the debiased Sinkhorn divergence
  (:func:`otbook.sinkhorn_divergence`).
* :func:`jko_icnn`: the JKO step over maps :math:`\nabla\psi` with :math:`\psi` an input-convex
  network (:class:`otbook.ICNN`), after Alvarez-Melis, Schiff and Mroueh (2022). By Brenier's
  theorem :math:`W_2^2(\nabla\psi_\sharp\rho_k, \rho_k) = \E\|\nabla\psi(X) - X\|^2`, and the
  density of the pushed particles is known by the change of variables
  :math:`\log\rho_{k+1}(\nabla\psi(x)) = \log\rho_k(x) - \log\det\nabla^2\psi(x)`
  (:func:`hessian_logdet`), so internal energies need no density estimate.

The functionals are :class:`Energy` objects that add up: :func:`potential_energy`,
:func:`interaction_energy`, :func:`internal_energy` (entropy, porous-medium or any
:math:`\int f(\rho)`), :func:`mmd_energy` (MMD or energy distance to a target) and
:func:`sinkhorn_energy` (Sinkhorn divergence to a target). Any callable that maps particles
``(n, d)`` to a scalar tensor works as an energy too.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ._checks import (
    as_tensor,
    check_callable,
    check_choice,
    check_generator,
    check_module,
    check_nonnegative,
    check_points,
    check_positive,
    check_positive_int,
    check_potential,
)
from .costs import cost_matrix
from .exact import emd
from .kernels import mmd
from .maps import ICNN
from .sinkhorn import sinkhorn_divergence

__all__ = [
    "Energy",
    "potential_energy",
    "interaction_energy",
    "internal_energy",
    "mmd_energy",
    "sinkhorn_energy",
    "particle_flow",
    "jko_particles",
    "jko_icnn",
    "hessian_logdet",
    "FlowResult",
    "JKOResult",
]


# --------------------------------------------------------------------------------------------
# energies


class Energy:
    r"""A functional :math:`F(\rho)` of the particle measure :math:`\rho = \frac1n\sum_i\delta_{x_i}`.

    Call it on particles ``x`` of shape ``(n, d)``; it returns a scalar tensor, differentiable in
    ``x``. Energies add up and scale: ``potential_energy(V) + 0.5 * internal_energy("entropy")``.

    Internal energies (:func:`internal_energy`) need the density of :math:`\rho` at the
    particles: pass ``log_density`` (shape ``(n,)``, the log-density at each particle) when it is
    known, as :func:`jko_icnn` does; without it they estimate it with a Gaussian kernel density
    estimate. The other terms ignore ``log_density``.

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
    >>> F = ob.potential_energy(lambda x: (x ** 2).sum(-1) / 2) + ob.Energy(lambda x: x.mean(), "mean")
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
            other = _as_energy(other)
        return Energy._from_terms(self._terms + other._terms)

    def __radd__(self, other) -> "Energy":
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        if callable(other) and not isinstance(other, Energy):
            return _as_energy(other) + self
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


def _as_energy(energy, name="energy") -> Energy:
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
    r"""The interaction energy :math:`\mathcal W(\rho) = \frac12 \iint W(x - y)\, d\rho(x)\, d\rho(y)`.

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
    >>> float(ob.flows.kde_log_density(x, bandwidth=1.0).exp()[0])   # N(0, 1) density at 0
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
    particles: the exact ``log_density`` when the caller knows it (:func:`jko_icnn` tracks it
    through each map), otherwise a Gaussian kernel density estimate
    (:func:`otbook.flows.kde_log_density`, the blob method). The estimate smooths the density
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
    r"""Half the debiased Sinkhorn divergence to a fixed target, :math:`\frac12 S_\varepsilon(\rho, \beta)`.

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

    def value(x):
        return 0.5 * sinkhorn_divergence(x, y, eps, tol=tol, max_iter=max_iter,
                                         eps_scaling=eps_scaling)

    return Energy(value, "Sinkhorn divergence")


# --------------------------------------------------------------------------------------------
# results


@dataclass
class FlowResult:
    """A gradient flow followed by :func:`particle_flow`, :func:`jko_particles` or :func:`jko_icnn`.

    Attributes
    ----------
    x : Tensor, shape (n, d)
        The particles at the end.
    trajectory : Tensor, shape (k, n, d)
        Snapshots of the particles (every ``record_every`` steps, the first and the last
        included), for plots and animations.
    times : Tensor, shape (k,)
        The flow time of each snapshot (steps times the time step).
    energies : Tensor, shape (n_iter + 1,)
        :math:`F(\\rho_k)` at every step, the start included.
    n_iter : int
        Steps taken.
    converged : bool
        :func:`particle_flow`: the particles came to rest (their RMS speed fell below ``tol``);
        the JKO schemes: every inner minimisation converged (see each function).
    log_density : Tensor, shape (n,), or None
        :func:`jko_icnn` only: the log-density of the flowed measure at each particle.
    extra : dict
        Diagnostics: ``"speed"`` (RMS particle speed per step, :func:`particle_flow`),
        ``"step"`` / ``"tau"``, ``"warnings"`` (energy evaluations that warned), and for the
        JKO schemes ``"inner_converged"`` and ``"inner_losses"``.
    """

    x: torch.Tensor
    trajectory: torch.Tensor
    times: torch.Tensor
    energies: torch.Tensor
    n_iter: int
    converged: bool
    log_density: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def decreasing(self, rtol: float = 1e-6) -> bool:
        """Whether the energy never rose from one step to the next, by more than ``rtol`` times
        the largest absolute energy seen (room for the round-off of the energy's evaluation)."""
        e = self.energies.double()
        if e.numel() < 2:
            return True
        slack = rtol * float(e.abs().max())
        return bool((e[1:] - e[:-1] <= slack).all())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={self.x.shape[0]}, d={self.x.shape[1]}, n_iter={self.n_iter}, "
                f"energy {float(self.energies[0]):.4g} -> {float(self.energies[-1]):.4g}, "
                f"converged={self.converged})")


@dataclass(repr=False)
class JKOResult(FlowResult):
    """The result of :func:`jko_icnn`: a :class:`FlowResult` plus the map of every JKO step.

    Attributes
    ----------
    maps : list of ICNN or None
        The potential :math:`\\psi_k` of each step (in evaluation mode); step ``k`` moved the
        particles by :math:`\\nabla\\psi_k`. ``None`` for a step that stayed put (see
        :func:`jko_icnn`).
    """

    maps: list = field(default_factory=list)

    def push(self, x, log_density=None, *, steps: int | None = None):
        """Carry new points (and optionally their log-density) through the steps' maps.

        Parameters
        ----------
        x : Tensor or array, shape (k, d)
            Points of the initial measure (any, not only the training particles).
        log_density : Tensor or array, shape (k,), optional
            The initial log-density at ``x``; it is carried along by the change of variables
            (exact log-determinants).
        steps : int, optional
            How many steps to apply (default all).

        Returns
        -------
        Tensor, or (Tensor, Tensor)
            The pushed points, and their log-density when ``log_density`` was given.
        """
        if not self.maps:
            raise ValueError("this result holds no maps to push points through")
        x = check_points(x, "x", like=self.x)
        if x.ndim != 2 or x.shape[1] != self.x.shape[1]:
            raise ValueError(f"x must have shape (k, {self.x.shape[1]}), got {tuple(x.shape)}")
        k = len(self.maps) if steps is None else check_positive_int(steps, "steps", minimum=0)
        if k > len(self.maps):
            raise ValueError(f"steps must be at most {len(self.maps)}, got {k}")
        lr = None if log_density is None else check_potential(log_density, x.shape[0], "log_density", like=x)
        for psi in self.maps[:k]:
            if psi is None:  # a step that stayed put
                continue
            if lr is not None:
                lr = lr - hessian_logdet(psi, x).detach()
            x = psi.transport(x, create_graph=False).detach()
        return x if lr is None else (x, lr)


# --------------------------------------------------------------------------------------------
# helpers shared by the flows


def _check_particles(x) -> torch.Tensor:
    x = check_points(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d) (particles), got {tuple(x.shape)}")
    if not x.is_floating_point():  # pragma: no cover - check_points casts
        x = x.to(torch.get_default_dtype())
    return x.detach().clone()


def _scalar(value, what, step) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"{what} must return a scalar tensor, got {type(value).__name__}"
                        f"{tuple(getattr(value, 'shape', ()))}")
    value = value.reshape(())
    if not bool(torch.isfinite(value)):
        raise ValueError(f"the energy is {float(value.detach())} at step {step}: the particles left the "
                         "region where it is finite (two particles met under a singular "
                         "interaction, or the step is too large and the flow blew up); lower "
                         "the step")
    return value


def _call(energy: Energy, x, log_density=None):
    return energy(x, log_density) if isinstance(energy, Energy) else energy(x)


class _Warnings:
    """Collect RuntimeWarnings raised inside the loop; re-issue one summary at the end."""

    def __init__(self):
        self.count, self.first = 0, None

    def run(self, fn, *args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(*args)
        hit = False
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                hit = True
                self.first = self.first or str(w.message)
            else:  # not ours to hide
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.count += hit
        return out

    def report(self, where, n, warn):
        if warn and self.count:
            warnings.warn(f"{where}: {self.count} evaluation(s) of the energy warned over {n} "
                          f"step(s); the first: {self.first}", RuntimeWarning, stacklevel=3)


def _bar(progress, total, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------
# particle flows


def _record(k, x, step, record_every, n_steps, snaps, times, bar, energy):
    """After step ``k``: keep a snapshot every ``record_every`` steps (and the last), and move
    the progress bar."""
    if (k + 1) % record_every == 0 or k + 1 == n_steps:
        snaps.append(x.clone())
        times.append((k + 1) * step)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(energy=f"{float(energy):.4g}")


def particle_flow(x, energy, *, step, n_steps: int, tol: float = 1e-6, record_every: int = 1,
                  warn: bool = True, progress: bool = False) -> FlowResult:
    r"""Follow the Wasserstein gradient flow of ``energy`` with particles (explicit Euler).

    The particles :math:`x_1, \dots, x_n` stand for :math:`\rho = \frac1n\sum_i\delta_{x_i}`.
    Each step moves them along the flow's velocity,

    .. math::

        x_i \leftarrow x_i - \tau\, n\, \nabla_{x_i} F(x_1, \dots, x_n),

    the gradient of the empirical energy times :math:`n`: each particle carries mass
    :math:`1/n`, so the autograd gradient is the Wasserstein gradient
    :math:`\nabla\frac{\delta F}{\delta\rho}(x_i)` divided by :math:`n`. With the factor, the time
    step :math:`\tau` means the same for 100 particles as for 100,000.

    Parameters
    ----------
    x : Tensor or array, shape (n, d)
        Initial particles (finite).
    energy : Energy or callable
        :math:`F`: maps particles ``(n, d)`` to a scalar tensor, differentiably. Internal
        energies use a kernel density estimate here.
    step : float
        Time step :math:`\tau > 0`. Explicit Euler is stable when :math:`\tau` is below about
        2 over the largest curvature of :math:`F` along the flow; a too-large step makes the
        energy rise (see :meth:`FlowResult.decreasing`) or blow up (a ``ValueError``).
    n_steps : int
        Most steps to take.
    tol : float
        Stop early when the particles come to rest: the RMS speed
        :math:`(\frac1n\sum_i\|v_i\|^2)^{1/2}` falls below ``tol`` (``0`` never stops early).
        ``converged`` says whether that happened: a stationary point, which need not be the
        minimum (the energy says how far it is).
    record_every : int
        Keep a snapshot in ``trajectory`` every so many steps (the last one always).
    warn : bool
        Re-issue, once, warnings raised while evaluating the energy (unconverged Sinkhorn solves).
    progress : bool
        A progress bar (tqdm) with the current energy.

    Returns
    -------
    FlowResult
        ``x``, ``trajectory``, ``times``, ``energies`` (one per step), ``converged``;
        ``extra["speed"]`` holds the RMS speed of every step.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> F = ob.potential_energy(lambda x: 0.5 * (x ** 2).sum(-1))    # dx/dt = -x
    >>> res = ob.particle_flow(x, F, step=0.01, n_steps=100)
    >>> res.x.flatten()                              # x (1 - 0.01)^100, about x e^{-1}
    tensor([0.3660, 0.7321], dtype=torch.float64)
    >>> res.decreasing()
    True
    """
    x = _check_particles(x)
    energy = _as_energy(energy)
    step = check_positive(step, "step")
    n_steps = check_positive_int(n_steps, "n_steps")
    tol = check_nonnegative(tol, "tol")
    record_every = check_positive_int(record_every, "record_every")
    n = x.shape[0]
    snaps, times, energies, speeds = [x.clone()], [0.0], [], []
    caught = _Warnings()
    bar = _bar(progress, n_steps, "particle flow")
    converged, k = False, 0
    for k in range(n_steps + 1):
        xg = x.requires_grad_(True)
        value = _scalar(caught.run(_call, energy, xg), "energy", k)
        grad = torch.autograd.grad(value, xg, allow_unused=True)[0] if value.requires_grad else None
        if grad is None:
            raise ValueError("the energy does not depend on the particles: its gradient is None")
        energies.append(value.detach())
        velocity = -n * grad
        speed = float(velocity.pow(2).sum(-1).mean().sqrt())
        if not math.isfinite(speed):
            raise ValueError(f"the particle velocity is not finite at step {k}; lower the step "
                             "or check the energy's gradient")
        speeds.append(speed)
        if speed < tol:
            converged = True
            break
        if k == n_steps:
            break
        x = (x.detach() + step * velocity).detach()
        _record(k, x, step, record_every, n_steps, snaps, times, bar, value.detach())
    if bar is not None:
        bar.close()
    x = x.detach()
    if times[-1] != k * step:  # stopped early between two snapshots
        snaps.append(x.clone())
        times.append(k * step)
    caught.report("particle_flow", k + 1, warn)
    return FlowResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                      energies=torch.stack(energies), n_iter=k, converged=converged,
                      extra={"speed": x.new_tensor(speeds), "step": step,
                             "warnings": caught.count})


# --------------------------------------------------------------------------------------------
# the JKO scheme on particles


def jko_particles(x, energy, *, tau, n_steps: int, eps=None, inner_steps: int = 50,
                  inner_tol: float = 1e-4, sinkhorn_tol: float = 1e-5, record_every: int = 1,
                  warn: bool = True, progress: bool = False) -> FlowResult:
    r"""The JKO scheme on particles: each step minimises the energy plus a transport term.

    Each step solves

    .. math::

        x^{k+1} = \arg\min_{y \in \R^{n \times d}}\ F(y) + \frac{1}{2\tau} D(y, x^k),

    the implicit (backward) Euler step of the flow: :math:`\rho_{k+1}` minimises the energy plus
    the squared transport distance from :math:`\rho_k`. The transport term :math:`D` is

    * ``eps=None``: :math:`W_2^2` exactly, by the network simplex (:func:`otbook.emd`; between two
      clouds of :math:`n` equal-weight points, an assignment), with its envelope gradient;
    * ``eps > 0``: the debiased Sinkhorn divergence :math:`S_\varepsilon`
      (:func:`otbook.sinkhorn_divergence`), smooth in the particles and close to :math:`W_2^2`
      for displacements that vary on scales above :math:`\sqrt\varepsilon`. Below that scale
      it does not hold the particles back: a cloud that shrinks to the size of
      :math:`\sqrt\varepsilon` feels only the pull on its mean. Sinkhorn also needs many
      iterations when :math:`\varepsilon` is small against the squared spacing of the
      particles, which is the case of a transport between two nearly equal clouds.

    The minimisation runs L-BFGS (strong Wolfe line search) from :math:`y = x^k`, so the
    objective never exceeds its starting value :math:`F(x^k)` and the energy decreases at every
    step however large :math:`\tau` is: the implicit scheme's stability, paid for with an
    inner optimisation. The objective does not change when the particles are relabelled, so
    after each step they are numbered by the optimal assignment from :math:`x^k` (particle
    :math:`i` keeps its identity along ``trajectory``).

    Parameters
    ----------
    x : Tensor or array, shape (n, d)
        Initial particles.
    energy : Energy or callable
        :math:`F` on particles (internal energies use a kernel density estimate).
    tau : float
        JKO time step, > 0.
    n_steps : int
        JKO steps.
    eps : float, optional
        ``None`` for exact :math:`W_2^2`; otherwise the entropic regularisation (absolute, > 0)
        of the Sinkhorn divergence.
    inner_steps : int
        L-BFGS iterations per step (at most).
    inner_tol : float
        An inner minimisation has converged when the RMS of the rescaled gradient
        :math:`n \nabla_y` of the objective is below ``inner_tol`` times
        :math:`\max(1, \text{RMS displacement} / \tau)`.
    sinkhorn_tol : float
        Tolerance of the Sinkhorn solves (``eps > 0``).
    record_every, warn, progress
        As in :func:`particle_flow`.

    Returns
    -------
    FlowResult
        ``converged``: every inner minimisation converged; ``extra["inner_converged"]`` (one per
        step), ``extra["inner_losses"]`` (the objective at the end of each step).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    >>> F = ob.potential_energy(lambda x: 10.0 * (x ** 2).sum(-1))   # stiff: curvature 20
    >>> res = ob.jko_particles(x, F, tau=0.5, n_steps=2)             # explicit Euler diverges here
    >>> torch.allclose(res.x, x / 11 ** 2), res.decreasing()         # x / (1 + 20 tau) per step
    (True, True)
    """
    x = _check_particles(x)
    energy = _as_energy(energy)
    tau = check_positive(tau, "tau")
    n_steps = check_positive_int(n_steps, "n_steps")
    eps = None if eps is None else check_positive(eps, "eps")
    inner_steps = check_positive_int(inner_steps, "inner_steps")
    inner_tol = check_positive(inner_tol, "inner_tol")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    record_every = check_positive_int(record_every, "record_every")
    n = x.shape[0]
    caught = _Warnings()
    first = _scalar(caught.run(_call, energy, x), "energy", 0).detach()
    snaps, times, energies = [x.clone()], [0.0], [first]
    inner_ok, inner_losses = [], []
    bar = _bar(progress, n_steps, "JKO (particles)")
    for k in range(n_steps):
        anchor = x.detach()
        y = anchor.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=inner_steps, history_size=20,
                                tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def objective():
            if eps is None:
                transport = emd(None, None, cost_matrix(y, anchor)).value
            else:
                transport = sinkhorn_divergence(y, anchor, eps, tol=sinkhorn_tol)
            value = _call(energy, y) + transport / (2.0 * tau)
            return _scalar(value, "the JKO objective", k + 1)

        def closure():
            opt.zero_grad(set_to_none=True)
            value = caught.run(objective)
            value.backward()
            return value

        caught.run(opt.step, closure)
        y.grad = None
        value = objective()
        (grad,) = torch.autograd.grad(value, y)
        # the minimiser is defined up to a permutation of the particles: number them so that
        # particle i of x^{k+1} is the one the optimal assignment sends particle i of x^k to
        with torch.no_grad():
            plan = emd(None, None, cost_matrix(y.detach(), anchor)).plan
        x = y.detach()[plan.argmax(0)].clone()
        moved = float((x - anchor).pow(2).sum(-1).mean().sqrt()) / tau
        residual = float((n * grad).pow(2).sum(-1).mean().sqrt())
        inner_ok.append(residual <= inner_tol * max(moved, 1.0))
        inner_losses.append(value.detach())
        energies.append(_scalar(caught.run(_call, energy, x), "energy", k + 1).detach())
        _record(k, x, tau, record_every, n_steps, snaps, times, bar, energies[-1])
    if bar is not None:
        bar.close()
    caught.report("jko_particles", n_steps, warn)
    converged = all(inner_ok)
    if warn and not converged:
        warnings.warn(f"jko_particles: the inner minimisation did not converge at "
                      f"{inner_ok.count(False)} of {n_steps} steps; raise inner_steps",
                      RuntimeWarning, stacklevel=2)
    return FlowResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                      energies=torch.stack(energies), n_iter=n_steps, converged=converged,
                      extra={"tau": tau, "inner_converged": inner_ok,
                             "inner_losses": torch.stack(inner_losses), "warnings": caught.count})


# --------------------------------------------------------------------------------------------
# Hessian log-determinants


def _grad_and_hessian(model, x):
    """The map grad psi(x) and the Hessian (k, d, d), both differentiable in the parameters."""
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=True)
    rows = [torch.autograd.grad(g[:, i].sum(), xg, create_graph=True)[0] for i in range(x.shape[1])]
    return g, torch.stack(rows, 1)


def _logdet_exact(H: torch.Tensor) -> torch.Tensor:
    H = 0.5 * (H + H.transpose(-1, -2))
    L, info = torch.linalg.cholesky_ex(H)
    bad = info != 0
    if bool(bad.any()):
        raise ValueError(f"the Hessian is not positive definite at {int(bad.sum())} of "
                         f"{H.shape[0]} points: the potential is not strictly convex there; use an "
                         "ICNN with strong_convexity > 0")
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def _lanczos_logquad(hvp, v, steps):
    """Gauss quadrature of v^T log(H) v by Lanczos, batched over the rows of v (k, d).

    A row whose Krylov space is exhausted early (an invariant subspace: beta = 0) is padded with a
    block that is decoupled from the first basis vector, so it adds nothing to the quadrature.
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


def _cg(hvp, b, steps, tol=1e-10):
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
    r"""Log-determinant of the Hessian :math:`\log\det\nabla^2\psi(x)` at each point, differentiably.

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
    k, d = x.shape
    if method == "exact":
        g, H = _grad_and_hessian(model, x)
        out = _logdet_exact(H)
        return (out, g) if return_map else out
    n_probes = check_positive_int(n_probes, "n_probes")
    lanczos_steps = min(d, 10) if lanczos_steps is None else check_positive_int(lanczos_steps, "lanczos_steps")
    if lanczos_steps > d:
        raise ValueError(f"lanczos_steps must be at most d = {d}, got {lanczos_steps}")
    cg_steps = min(d, 20) if cg_steps is None else check_positive_int(cg_steps, "cg_steps")
    check_generator(generator)
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=True)

    def hvp_nograd(v):
        return torch.autograd.grad(g, xg, grad_outputs=v, retain_graph=True)[0].detach()

    values, surrogates = [], []
    for _ in range(n_probes):
        gen_dev = generator.device if generator is not None else x.device
        v = (torch.randint(0, 2, (k, d), generator=generator, device=gen_dev).to(x.device, x.dtype)
             * 2.0 - 1.0)
        with torch.no_grad():
            values.append(_lanczos_logquad(hvp_nograd, v, lanczos_steps))
            w = _cg(hvp_nograd, v, cg_steps)
        Hv = torch.autograd.grad(g, xg, grad_outputs=v, create_graph=True)[0]
        surrogates.append((w * Hv).sum(-1))
    value = torch.stack(values).mean(0)
    surrogate = torch.stack(surrogates).mean(0)
    out = value + (surrogate - surrogate.detach())
    return (out, g) if return_map else out


# --------------------------------------------------------------------------------------------
# JKO with input-convex networks


def _flattened(losses: torch.Tensor, rtol: float) -> bool:
    """A loss curve has flattened: its mean over the last tenth fell, from the tenth before, by
    at most rtol times its total fall (from the first tenth)."""
    n = losses.numel()
    w = max(2, n // 10)
    if n < 2 * w:
        return False
    first, before, last = (float(losses[:w].mean()), float(losses[-2 * w:-w].mean()),
                           float(losses[-w:].mean()))
    return before - last <= rtol * max(first - last, 0.0) + 1e-12 * max(1.0, abs(first))


def jko_icnn_objective(psi, x, log_density, energy, tau, method="exact", n_probes=4,
                       generator=None):
    r"""The objective of one JKO-ICNN step, and the pushed particles and their log-density.

    .. math::

        \frac{1}{2\tau} \frac1n \sum_i \|\nabla\psi(x_i) - x_i\|^2
        + F\big(\{\nabla\psi(x_i)\}_i,\ \log\rho_k(x_i) - \log\det\nabla^2\psi(x_i)\big),

    differentiable in the parameters of ``psi``. When ``log_density`` (:math:`\log\rho_k` at the
    particles) is ``None`` no log-determinant is computed and the energy gets no density.
    Returns ``(objective, pushed particles, their log-density or None)``. Used by
    :func:`otbook.jko_icnn`, which checks the inputs.
    """
    if log_density is not None:
        logdet, y = hessian_logdet(psi, x, method=method, n_probes=n_probes, generator=generator,
                                   return_map=True)
        new_log = log_density - logdet
    else:
        xg = x.detach().requires_grad_(True)
        (y,) = torch.autograd.grad(psi(xg).sum(), xg, create_graph=True)
        new_log = None
    transport = (y - x).pow(2).sum(-1).mean()
    return transport / (2.0 * tau) + _call(energy, y, new_log), y, new_log


def jko_icnn(x, energy, *, tau, n_steps: int, log_density=None, model=None, hidden=(32, 32),
             activation: str = "softplus", strong_convexity: float = 1e-3, inner_steps: int = 200,
             lr: float = 1e-2, warm_start: bool = True, logdet: str = "auto", n_probes: int = 4,
             generator=None, rtol: float = 0.05, record_every: int = 1, warn: bool = True,
             progress: bool = False) -> JKOResult:
    r"""The JKO scheme with input-convex neural networks (JKO-ICNN).

    Each step trains a convex potential :math:`\psi` (an :class:`otbook.ICNN`) on

    .. math::

        \min_\psi\ \frac{1}{2\tau}\, \frac1n \sum_i \|\nabla\psi(x_i) - x_i\|^2
        + F\big((\nabla\psi)_\sharp \rho_k\big),

    then moves the particles, :math:`x_i \leftarrow \nabla\psi(x_i)` (Alvarez-Melis, Schiff and
    Mroueh, 2022). The first term is :math:`W_2^2(\nabla\psi_\sharp\rho_k, \rho_k) / (2\tau)`
    exactly, because the gradient of a convex function is the optimal map onto its image
    (Brenier). The energy is evaluated on the pushed particles; internal energies use the
    density of the pushed measure, known by the change of variables

    .. math::

        \log\rho_{k+1}(\nabla\psi(x_i)) = \log\rho_k(x_i) - \log\det\nabla^2\psi(x_i),

    with :func:`hessian_logdet` (exact, or the stochastic estimator for larger :math:`d`).
    The log-densities are carried along from step to step, so the flowed measure's density is
    known at every particle (``log_density`` of the result).

    Staying put (the identity map) scores :math:`F(\rho_k)`. A trained map that scores no better
    is not taken: the particles stay, the step is listed in ``extra["stayed"]`` and the next one
    starts again from ``model``'s initial state. So the energy never increases from one step to
    the next, as for exact JKO steps.

    Parameters
    ----------
    x : Tensor or array, shape (n, d)
        Particles of the initial measure :math:`\rho_0`.
    energy : Energy or callable
        :math:`F`. An :class:`Energy` with an internal-energy term receives the tracked
        ``log_density``.
    tau : float
        JKO time step, > 0.
    n_steps : int
        JKO steps.
    log_density : Tensor or array, shape (n,), or callable, optional
        :math:`\log\rho_0` at the particles (or a callable that computes it from ``x``).
        Required when the energy has an internal-energy term.
    model : ICNN, optional
        The network to train at the first step (copied, not modified); default
        ``ICNN(d, hidden, activation=activation, strong_convexity=strong_convexity)`` with the
        identity map at initialisation, on ``x``'s dtype and device. Its random initial weights
        come from torch's global generator: seed it (``torch.manual_seed``) for a reproducible
        run.
    hidden, activation, strong_convexity
        The default network: widths, activation (``"softplus"`` keeps the Hessian smooth, which
        the tracked densities need), and :math:`s > 0` so that :math:`\nabla^2\psi \succeq sI`
        and every map is invertible.
    inner_steps, lr : int, float
        Adam steps and learning rate of each JKO step (full batch).
    warm_start : bool
        Start each step from the previous step's network (successive maps are alike), rather
        than from ``model``'s initial state.
    logdet : {"auto", "exact", "stochastic"}
        How :func:`hessian_logdet` is computed: ``"auto"`` is exact up to :math:`d = 10`.
    n_probes : int
        Probes of the stochastic estimator.
    generator : torch.Generator, optional
        Draws the probes of the stochastic estimator.
    rtol : float
        An inner training has converged when its loss curve has flattened: the mean of the last
        tenth of the steps is below the mean of the tenth before by at most ``rtol`` times the
        total fall.
    record_every, warn, progress
        As in :func:`particle_flow`; ``warn`` warns when an inner training did not converge.

    Returns
    -------
    JKOResult
        A :class:`FlowResult` with ``log_density`` (when tracked) and ``maps``, the trained
        potentials; :meth:`JKOResult.push` carries new points through them.
        ``extra["inner_losses"]`` has shape ``(n_steps, inner_steps)``; ``extra["stayed"]``
        lists the steps that stayed put.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> _ = torch.manual_seed(0)                               # the network's initialisation
    >>> x = torch.linspace(-2, 2, 50, dtype=torch.float64)[:, None]
    >>> F = ob.potential_energy(lambda x: 0.5 * (x ** 2).sum(-1))
    >>> res = ob.jko_icnn(x, F, tau=0.5, n_steps=2, inner_steps=100, lr=0.05, warn=False)
    >>> torch.allclose(res.x, x / 1.5 ** 2, atol=1e-2)          # x / (1 + tau) per step
    True
    """
    x = _check_particles(x)
    n, d = x.shape
    energy = _as_energy(energy)
    tau = check_positive(tau, "tau")
    n_steps = check_positive_int(n_steps, "n_steps")
    inner_steps = check_positive_int(inner_steps, "inner_steps")
    lr = check_positive(lr, "lr")
    rtol = check_positive(rtol, "rtol")
    record_every = check_positive_int(record_every, "record_every")
    check_generator(generator)
    logdet = check_choice(logdet, "logdet", ("auto", "exact", "stochastic"))
    method = ("exact" if d <= 10 else "stochastic") if logdet == "auto" else logdet
    if callable(log_density):
        log_density = log_density(x)
    if log_density is not None:
        log_density = check_potential(log_density, n, "log_density", like=x).detach()
    if energy.uses_density and log_density is None:
        raise ValueError("the energy has an internal-energy term, which needs the initial "
                         "log-density at the particles: pass log_density (a tensor of shape (n,) "
                         "or a callable)")
    if model is None:
        model = ICNN(d, hidden, activation=activation, strong_convexity=strong_convexity,
                     init="identity", device=x.device, dtype=x.dtype)
    else:
        if not isinstance(model, ICNN):
            raise TypeError(f"model must be an otbook ICNN, got {type(model).__name__}")
        if model.dim != d:
            raise ValueError(f"model is an ICNN on R^{model.dim} but the particles are in R^{d}")
        check_module(model, "model", like=x)
        model = copy.deepcopy(model)
    initial_state = copy.deepcopy(model.state_dict())
    caught = _Warnings()
    first = _scalar(caught.run(_call, energy, x, log_density), "energy", 0).detach()
    snaps, times, energies, maps, curves, inner_ok = [x.clone()], [0.0], [first], [], [], []
    stayed = []
    bar = _bar(progress, n_steps, "JKO-ICNN")

    for k in range(n_steps):
        if not warm_start and k > 0:
            model.load_state_dict(initial_state)
        anchor = x.detach()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        model.train()
        for it in range(inner_steps):
            loss, _, _ = caught.run(jko_icnn_objective, model, anchor, log_density, energy, tau,
                                    method, n_probes, generator)
            loss = _scalar(loss, "the JKO-ICNN objective", k + 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.project_()
            losses.append(loss.detach())
        model.eval()
        curve = torch.stack(losses)
        curves.append(curve)
        inner_ok.append(_flattened(curve, rtol))
        with torch.enable_grad():
            value, y, new_log = jko_icnn_objective(model, anchor, log_density, energy, tau,
                                                   method, n_probes, generator)
        # staying put (the identity map) has objective F(rho_k): a trained map that does no
        # better is not a JKO step, and taking it could raise the energy
        current = float(energies[-1])
        if float(value.detach()) > current + 1e-12 * max(1.0, abs(current)):
            stayed.append(k)
            maps.append(None)
            model.load_state_dict(initial_state)
        else:
            x = y.detach()
            if new_log is not None:
                log_density = new_log.detach()
            maps.append(copy.deepcopy(model).requires_grad_(False))
        energies.append(_scalar(caught.run(_call, energy, x, log_density), "energy", k + 1).detach())
        _record(k, x, tau, record_every, n_steps, snaps, times, bar, energies[-1])
    if bar is not None:
        bar.close()
    caught.report("jko_icnn", n_steps, warn)
    converged = all(inner_ok)
    if warn and not converged:
        warnings.warn(f"jko_icnn: the inner training had not flattened at {inner_ok.count(False)} "
                      f"of {n_steps} steps; raise inner_steps or lr", RuntimeWarning, stacklevel=2)
    return JKOResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                     energies=torch.stack(energies), n_iter=n_steps, converged=converged,
                     log_density=log_density,
                     extra={"tau": tau, "inner_converged": inner_ok,
                            "inner_losses": torch.stack(curves), "logdet": method,
                            "stayed": stayed, "warnings": caught.count},
                     maps=maps)
