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
  (:func:`otbook.hessian_logdet`), so internal energies need no density estimate.

The functionals are :class:`~otbook.Energy` objects (:mod:`otbook.energies`): potential,
interaction and internal energies, MMD and Sinkhorn divergences to a target, and their sums. Any
callable that maps particles ``(n, d)`` to a scalar tensor works as an energy too. The convex
potentials and their log-determinants live in :mod:`otbook.icnn`.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field

import torch

from ._checks import (
    check_choice,
    check_generator,
    check_module,
    check_nonnegative,
    check_points,
    check_positive,
    check_positive_int,
    check_potential,
)
from ._runtime import WarningSummary
from ._runtime import progress as progress_bar
from ._runtime import warn as warn_runtime
from ._training import FULL_BATCH_WINDOW, loss_flattened, loss_window, optimizer_step
from .costs import cost_matrix
# kde_log_density: the book documents it as otbook.flows.kde_log_density too
from .energies import Energy, as_energy, kde_log_density  # noqa: F401
from .exact import emd
from .icnn import ICNN, hessian_logdet, potential_gradient
from .sinkhorn.engine import Options, divergence_value

__all__ = [
    "particle_flow",
    "jko_particles",
    "jko_icnn",
    "jko_icnn_objective",
    "FlowResult",
    "JKOResult",
]


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
        ``"step"`` / ``"tau"``, ``"warnings"`` (how many steps warned while evaluating the energy
        or the JKO objective, the evaluation at the start counted as step 0), and for the JKO
        schemes ``"inner_converged"`` and ``"inner_losses"``.
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
        first, last = float(self.energies[0]), float(self.energies[-1])
        return (f"{type(self).__name__}(n={self.x.shape[0]}, d={self.x.shape[1]}, "
                f"n_iter={self.n_iter}, energy {first:.4g} -> {last:.4g}, "
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
        lr = (None if log_density is None
              else check_potential(log_density, x.shape[0], "log_density", like=x))
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
    return x.detach().clone()


def _scalar(value, what, step) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"{what} must return a scalar tensor, got {type(value).__name__}"
                        f"{tuple(getattr(value, 'shape', ()))}")
    value = value.reshape(())
    if not bool(torch.isfinite(value)):
        raise ValueError(f"the energy is {float(value.detach())} at step {step}: the particles "
                         "left the region where it is finite (two particles met under a singular "
                         "interaction, or the step is too large and the flow blew up); lower "
                         "the step")
    return value


def _record(k, x, step, record_every, n_steps, snaps, times, bar, energy):
    """After step ``k``: keep a snapshot every ``record_every`` steps (and the last), and move
    the progress bar."""
    if (k + 1) % record_every == 0 or k + 1 == n_steps:
        snaps.append(x.clone())
        times.append((k + 1) * step)
    bar.update(1)
    bar.set_postfix(energy=f"{float(energy):.4g}")


# --------------------------------------------------------------------------------------------
# particle flows


def _check_not_blown_up(energies, k, name):
    """An explicit scheme whose energy grew far above its start is unstable: say so."""
    e0, e = float(energies[0]), float(energies[-1])
    if e > e0 + 1e3 * (abs(e0) + 1.0):
        raise ValueError(f"the energy grew from {e0:.4g} to {e:.4g} by step {k}: the explicit "
                         f"Euler scheme is unstable at this {name} (too large for the energy's "
                         f"curvature); lower the {name}")


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
    energy = as_energy(energy)
    step = check_positive(step, "step")
    n_steps = check_positive_int(n_steps, "n_steps")
    tol = check_nonnegative(tol, "tol")
    record_every = check_positive_int(record_every, "record_every")
    n = x.shape[0]
    snaps, times, energies, speeds = [x.clone()], [0.0], [], []
    caught = WarningSummary()  # RuntimeWarnings of the energy (Sinkhorn): one summary at the end
    bar = progress_bar(progress, n_steps, "particle flow")
    converged, k = False, 0
    for k in range(n_steps + 1):
        xg = x.requires_grad_(True)
        with caught:
            value = energy(xg)
        value = _scalar(value, "energy", k)
        grad = (torch.autograd.grad(value, xg, allow_unused=True)[0] if value.requires_grad
                else None)
        if grad is None:
            raise ValueError("the energy does not depend on the particles: its gradient is None")
        energies.append(value.detach())
        _check_not_blown_up(energies, k, "step")
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
    bar.close()
    x = x.detach()
    if times[-1] != k * step:  # stopped early between two snapshots
        snaps.append(x.clone())
        times.append(k * step)
    caught.report("particle_flow", k + 1, "step(s)", enabled=warn)
    return FlowResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                      energies=torch.stack(energies), n_iter=k, converged=converged,
                      extra={"speed": x.new_tensor(speeds), "step": step,
                             "warnings": caught.count})


# --------------------------------------------------------------------------------------------
# the JKO scheme on particles


def jko_particles(x, energy, *, tau, n_steps: int, eps=None, inner_steps: int = 50,
                  inner_tol: float = 1e-4, sinkhorn_tol: float = 1e-5,
                  sinkhorn_max_iter: int = 10_000, record_every: int = 1, warn: bool = True,
                  progress: bool = False) -> FlowResult:
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
    sinkhorn_tol, sinkhorn_max_iter : float, int
        Tolerance and iteration budget of the Sinkhorn solves inside the objective
        (``eps > 0``).
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
    energy = as_energy(energy)
    tau = check_positive(tau, "tau")
    n_steps = check_positive_int(n_steps, "n_steps")
    eps = None if eps is None else check_positive(eps, "eps")
    inner_steps = check_positive_int(inner_steps, "inner_steps")
    inner_tol = check_positive(inner_tol, "inner_tol")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    sinkhorn_max_iter = check_positive_int(sinkhorn_max_iter, "sinkhorn_max_iter")
    record_every = check_positive_int(record_every, "record_every")
    if eps is None:
        def transport(y, anchor):
            return emd(None, None, cost_matrix(y, anchor)).value
    else:
        opts = Options(tol=sinkhorn_tol, max_iter=sinkhorn_max_iter)

        def transport(y, anchor):
            return divergence_value(y, anchor, eps, opts, "jko_particles")
    caught = WarningSummary()
    with caught:
        first = energy(x)
    snaps, times, energies = [x.clone()], [0.0], [_scalar(first, "energy", 0).detach()]
    inner_ok, inner_losses = [], []
    bar = progress_bar(progress, n_steps, "JKO (particles)")
    for k in range(n_steps):
        with caught:
            x, value, ok = _jko_particles_step(x, energy, transport, tau, inner_steps, inner_tol, k)
            after = energy(x)
        inner_ok.append(ok)
        inner_losses.append(value)
        energies.append(_scalar(after, "energy", k + 1).detach())
        _record(k, x, tau, record_every, n_steps, snaps, times, bar, energies[-1])
    bar.close()
    caught.report("jko_particles", n_steps + 1, "step(s)", enabled=warn)
    converged = all(inner_ok)
    if warn and not converged:
        warn_runtime(f"jko_particles: the inner minimisation did not converge at "
                      f"{inner_ok.count(False)} of {n_steps} steps; raise inner_steps")
    return FlowResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                      energies=torch.stack(energies), n_iter=n_steps, converged=converged,
                      extra={"tau": tau, "inner_converged": inner_ok,
                             "inner_losses": torch.stack(inner_losses),
                             "warnings": caught.count})


def _jko_particles_step(anchor, energy, transport, tau, inner_steps, inner_tol, k):
    """One JKO step on particles, by L-BFGS from ``anchor``: the minimiser (numbered like the
    anchor), the objective there (detached), and whether the minimisation converged."""
    n = anchor.shape[0]
    y = anchor.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([y], lr=1.0, max_iter=inner_steps, history_size=20,
                            tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def objective():
        # the transport term first: the order of the two terms sets the order in which autograd
        # adds their gradients, so it fixes the round-off (and the runs the book shows)
        cost = transport(y, anchor)
        return _scalar(energy(y) + cost / (2.0 * tau), "the JKO objective", k + 1)

    def closure():
        opt.zero_grad(set_to_none=True)
        value = objective()
        value.backward()
        return value

    opt.step(closure)
    y.grad = None
    value = objective()
    (grad,) = torch.autograd.grad(value, y)
    # the minimiser is defined up to a permutation of the particles: number them so that
    # particle i of x^{k+1} is the one the optimal assignment sends particle i of x^k to
    with torch.no_grad():
        plan = emd(None, None, cost_matrix(y.detach(), anchor)).plan
    x = y.detach()[plan.argmax(0)].clone()
    # converged: the gradient (times n, a velocity) is small against the step's own speed
    moved = float((x - anchor).pow(2).sum(-1).mean().sqrt()) / tau
    residual = float((n * grad).pow(2).sum(-1).mean().sqrt())
    return x, value.detach(), residual <= inner_tol * max(moved, 1.0)


# --------------------------------------------------------------------------------------------
# JKO with input-convex networks


def jko_icnn_objective(psi, x, log_density, energy, tau, method="exact", n_probes=4,
                       generator=None, lanczos_steps=None, cg_steps=None):
    r"""The objective of one JKO-ICNN step, and the pushed particles and their log-density.

    .. math::

        \frac{1}{2\tau} \frac1n \sum_i \|\nabla\psi(x_i) - x_i\|^2
        + F\big(\{\nabla\psi(x_i)\}_i,\ \log\rho_k(x_i) - \log\det\nabla^2\psi(x_i)\big),

    differentiable in the parameters of ``psi``. When ``log_density`` (:math:`\log\rho_k` at the
    particles) is ``None`` no log-determinant is computed and the energy gets no density.
    ``method``, ``n_probes``, ``generator``, ``lanczos_steps`` and ``cg_steps`` are passed to
    :func:`otbook.hessian_logdet`. Returns ``(objective, pushed particles, their log-density or
    None)``. Used by :func:`otbook.jko_icnn`, which checks the inputs.
    """
    energy = as_energy(energy)
    if log_density is not None:
        steps = ({"lanczos_steps": lanczos_steps, "cg_steps": cg_steps}
                 if method == "stochastic" else {})
        logdet, y = hessian_logdet(psi, x, method=method, n_probes=n_probes, generator=generator,
                                   return_map=True, **steps)
        new_log = log_density - logdet
    else:
        y, new_log = potential_gradient(psi, x), None
    transport = (y - x).pow(2).sum(-1).mean()
    return transport / (2.0 * tau) + energy(y, new_log), y, new_log


def jko_icnn(x, energy, *, tau, n_steps: int, log_density=None, model=None, hidden=(32, 32),
             activation: str = "softplus", strong_convexity: float = 1e-3, inner_steps: int = 200,
             lr: float = 1e-2, warm_start: bool = True, logdet: str = "auto", n_probes: int = 4,
             lanczos_steps: int | None = None, cg_steps: int | None = None, generator=None,
             rtol: float = 0.05, record_every: int = 1, warn: bool = True,
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
        Adam steps and learning rate of the training inside each JKO step (full batch). With
        the stochastic log-determinant the gradient is noisy, and Adam's iterates would keep
        jittering at the scale of ``lr`` around the minimiser; the learning rate then decays
        linearly over the second half of the steps, to 2 % of ``lr`` (the usual schedule of a
        stochastic optimisation). With exact log-determinants it stays constant.
    warm_start : bool
        Start each step from the previous step's network (successive maps are alike), rather
        than from ``model``'s initial state.
    logdet : {"auto", "exact", "stochastic"}
        How :func:`hessian_logdet` is computed: ``"auto"`` is exact up to :math:`d = 10`.
    n_probes : int
        Probes of the stochastic estimator.
    lanczos_steps, cg_steps : int, optional
        Lanczos and conjugate-gradient steps of the stochastic estimator (defaults as in
        :func:`otbook.hessian_logdet`). The gradient uses only the conjugate gradients; a few
        steps of each suffice when the Hessians are well conditioned, as near the identity map.
    generator : torch.Generator, optional
        Draws the probes of the stochastic estimator.
    rtol : float
        An inner training has converged when its loss curve has flattened: the mean of the last
        tenth of the steps (at least 2) is below the mean of the tenth before by at most
        ``rtol`` times the total fall.
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
    energy = as_energy(energy)
    tau = check_positive(tau, "tau")
    n_steps = check_positive_int(n_steps, "n_steps")
    inner_steps = check_positive_int(inner_steps, "inner_steps")
    lr = check_positive(lr, "lr")
    rtol = check_positive(rtol, "rtol")
    record_every = check_positive_int(record_every, "record_every")
    check_generator(generator)
    logdet = check_choice(logdet, "logdet", ("auto", "exact", "stochastic"))
    method = ("exact" if x.shape[1] <= 10 else "stochastic") if logdet == "auto" else logdet
    log_density = _initial_log_density(log_density, x, energy)
    model = _initial_model(model, x, hidden, activation, strong_convexity)
    initial_state = copy.deepcopy(model.state_dict())
    n_probes = check_positive_int(n_probes, "n_probes")
    if lanczos_steps is not None:
        lanczos_steps = check_positive_int(lanczos_steps, "lanczos_steps")
    if cg_steps is not None:
        cg_steps = check_positive_int(cg_steps, "cg_steps")
    objective = functools.partial(jko_icnn_objective, energy=energy, tau=tau, method=method,
                                  n_probes=n_probes, generator=generator,
                                  lanczos_steps=lanczos_steps, cg_steps=cg_steps)
    decay = method == "stochastic" and log_density is not None
    window = loss_window(inner_steps, FULL_BATCH_WINDOW)
    caught = WarningSummary()
    with caught:
        first = energy(x, log_density)
    snaps, times, energies = [x.clone()], [0.0], [_scalar(first, "energy", 0).detach()]
    maps, curves, inner_ok, stayed = [], [], [], []
    bar = progress_bar(progress, n_steps, "JKO-ICNN")
    for k in range(n_steps):
        if not warm_start and k > 0:
            model.load_state_dict(initial_state)
        with caught:
            curve = _train_potential(model, x, log_density, objective, inner_steps, lr, k,
                                     decay)
            x, log_density, psi = _take_or_stay(model, x, log_density, objective, energies[-1])
            after = energy(x, log_density)
        if psi is None:  # stayed put: the next step starts again from the initial network
            stayed.append(k)
            model.load_state_dict(initial_state)
        maps.append(psi)
        curves.append(curve)
        inner_ok.append(loss_flattened(curve, rtol, window))
        energies.append(_scalar(after, "energy", k + 1).detach())
        _record(k, x, tau, record_every, n_steps, snaps, times, bar, energies[-1])
    bar.close()
    caught.report("jko_icnn", n_steps + 1, "step(s)", enabled=warn)
    converged = all(inner_ok)
    if warn and not converged:
        warn_runtime(f"jko_icnn: the inner training had not flattened at "
                      f"{inner_ok.count(False)} of {n_steps} steps; raise inner_steps or lr")
    return JKOResult(x=x, trajectory=torch.stack(snaps), times=x.new_tensor(times),
                     energies=torch.stack(energies), n_iter=n_steps, converged=converged,
                     log_density=log_density,
                     extra={"tau": tau, "inner_converged": inner_ok,
                            "inner_losses": torch.stack(curves), "logdet": method,
                            "stayed": stayed, "warnings": caught.count},
                     maps=maps)


def _initial_log_density(log_density, x, energy: Energy):
    """The checked, detached log-density at the particles (from a tensor, or a callable of
    them), or ``None`` when none is given and the energy needs none."""
    if callable(log_density):
        log_density = log_density(x)
    if log_density is not None:
        return check_potential(log_density, x.shape[0], "log_density", like=x).detach()
    if energy.uses_density:
        raise ValueError("the energy has an internal-energy term, which needs the initial "
                         "log-density at the particles: pass log_density (a tensor of shape "
                         "(n,) or a callable)")
    return None


def _initial_model(model, x, hidden, activation, strong_convexity) -> ICNN:
    """The network of the first step: a copy of ``model``, or a new ICNN (identity map)."""
    d = x.shape[1]
    if model is None:
        return ICNN(d, hidden, activation=activation, strong_convexity=strong_convexity,
                    init="identity", device=x.device, dtype=x.dtype)
    if not isinstance(model, ICNN):
        raise TypeError(f"model must be an otbook ICNN, got {type(model).__name__}")
    if model.dim != d:
        raise ValueError(f"model is an ICNN on R^{model.dim} but the particles are in R^{d}")
    check_module(model, "model", like=x)
    return copy.deepcopy(model)


def _train_potential(model, anchor, log_density, objective, inner_steps, lr, k,
                     decay=False) -> torch.Tensor:
    """Adam on one JKO-ICNN step's objective, full batch, from the model's current state; the
    loss curve, shape ``(inner_steps,)``. With ``decay`` (a stochastic objective) the learning
    rate falls linearly over the second half of the steps, to 2 % of ``lr``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    half = inner_steps // 2
    losses = []
    model.train()
    for i in range(inner_steps):
        if decay and i >= half:
            for group in opt.param_groups:
                group["lr"] = lr * max(0.02, 1.0 - (i - half) / max(inner_steps - half, 1))
        loss, _, _ = objective(model, anchor, log_density)
        loss = _scalar(loss, "the JKO-ICNN objective", k + 1)
        optimizer_step(model, opt, loss)
        losses.append(loss.detach())
    model.eval()
    return torch.stack(losses)


def _take_or_stay(model, anchor, log_density, objective, current):
    """Move the particles (and their log-density) by the trained map, or stay put: returns the
    particles, their log-density and a frozen copy of the map (``None`` when staying)."""
    with torch.enable_grad():
        value, y, new_log = objective(model, anchor, log_density)
    # staying put (the identity map) has objective F(rho_k): a trained map that does no
    # better is not a JKO step, and taking it could raise the energy
    current = float(current)
    if float(value.detach()) > current + 1e-12 * max(1.0, abs(current)):
        return anchor, log_density, None
    new_log = None if new_log is None else new_log.detach()
    return y.detach(), new_log, copy.deepcopy(model).requires_grad_(False)
