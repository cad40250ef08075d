r"""Gromov-Wasserstein: optimal transport between spaces that share no coordinates.

Given two metric-measure spaces, described only by their *internal* dissimilarity matrices
``Cx`` (n x n) and ``Cy`` (m x m) and weights ``a``, ``b``, the Gromov-Wasserstein (GW) problem
looks for the coupling that best preserves the pairwise dissimilarities,

.. math::

    \mathrm{GW}(P) = \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl})\, P_{ij} P_{kl},
    \qquad L(s, t) = (s - t)^2 \ \text{(square loss)},

a non-convex quadratic program over the couplings of ``a`` and ``b``. This module solves its
entropic version, :math:`\mathrm{GW}(P) + \varepsilon \operatorname{KL}(P \mid a \otimes b)`,
by mirror descent (Peyré, Cuturi and Solomon, 2016; Solomon et al., 2016): each step linearises
``GW`` at the current plan and solves one entropic OT problem on that linearised cost with the
Sinkhorn engine (:func:`otbook.sinkhorn`), warm-started from the previous potentials. The
fixed-point iteration is accelerated (Anderson mixing, and extrapolation while the iterates drift
away from a saddle point), with every extrapolated step checked against the objective.

The losses used here split as :math:`L(s, t) = f_1(s) + f_2(t) - h_1(s) h_2(t)`, so that the
linearised cost is

.. math::

    \nabla \mathrm{GW}(P) = 2\big(f_1(C^x) p \ones^\top + \ones q^\top f_2(C^y)
    - h_1(C^x) P h_2(C^y)\big), \qquad p = P\ones,\ q = P^\top \ones,

two matrix products, :math:`O(n^2 m + n m^2)` per step instead of the :math:`O(n^2 m^2)` of the
four-index tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._runtime import progress as progress_bar
from ._runtime import renamed_keywords, threads_for
from ._runtime import warn as warn_runtime
from ._checks import (
    broadcast_shapes,
    check_cost,
    check_eps,
    check_plan,
    check_positive,
    check_positive_int,
    check_same_mass,
    check_symmetric,
    check_unit_interval,
    check_weights,
)
from .result import OTResult
from .costs import CostMatrix
from .sinkhorn.engine import Options, solve
from .sinkhorn.objective import kl as kl_divergence

__all__ = ["gromov_wasserstein", "gromov_objective", "gromov_divergence", "LOSSES"]

LOSSES = ("square", "kl")


def _check_loss(loss):
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return loss


def _split(Cx, Cy, loss):
    """The four matrices of ``L(s, t) = f1(s) + f2(t) - h1(s) h2(t)``:
    f1(Cx), f2(Cy), h1(Cx), h2(Cy)."""
    if loss == "square":
        return Cx * Cx, Cy * Cy, Cx, 2.0 * Cy
    # kl: L(s, t) = s log(s / t) - s + t
    f1 = torch.where(Cx > 0, Cx * torch.log(Cx), torch.zeros_like(Cx)) - Cx
    return f1, Cy, Cx, torch.log(Cy)


def _check_kl_inputs(Cx, Cy, loss):
    if loss != "kl":
        return
    if bool((Cx < 0).any()):
        raise ValueError("Cx must be non-negative for loss='kl' (L(s, t) = s log(s/t) - s + t)")
    if bool((Cy <= 0).any()):
        raise ValueError(
            "Cy must be positive for loss='kl' (L(s, t) = s log(s/t) - s + t needs t > 0); "
            "use similarity matrices, or loss='square' for distance matrices"
        )


def _gw_from_product(F1, F2, HPH, P):
    """GW(P) from the product H1 P H2 (with the plan's own marginals: exact for any plan)."""
    p, q = P.sum(-1), P.sum(-2)
    t1 = (p * (F1 @ p[..., None])[..., 0]).sum(-1)
    t2 = (q * (F2 @ q[..., None])[..., 0]).sum(-1)
    return t1 + t2 - (HPH * P).sum((-2, -1))


def _objective_split(F1, F2, H1, H2, P, a, b, eps, M, alpha, HPH=None, kl=None):
    """(linear part, regularised objective) at plan P, from the split matrices of the loss."""
    if HPH is None:
        HPH = H1 @ P @ H2.transpose(-1, -2)
    lin = _gw_from_product(F1, F2, HPH, P)
    if M is not None:
        lin = alpha * lin + (1.0 - alpha) * (M * P).sum((-2, -1))
    if eps == 0:
        return lin, lin
    if kl is None:  # KL(P | a x b), with 0 log 0 = 0
        kl = kl_divergence(P.flatten(-2), (a[..., :, None] * b[..., None, :]).flatten(-2))
    return lin, lin + eps * kl


def _objective(Cx, Cy, P, a, b, eps, M, alpha, loss):
    """(linear part, regularised objective) at plan P; differentiable in Cx, Cy, M and P."""
    return _objective_split(*_split(Cx, Cy, loss), P, a, b, eps, M, alpha)


def _inputs(Cx, Cy, a, b, M, alpha, loss):
    Cx = check_symmetric(Cx, "Cx")
    Cy = check_symmetric(Cy, "Cy", like=None if isinstance(Cy, torch.Tensor) else Cx)
    if Cx.dtype != Cy.dtype:
        raise TypeError(f"Cx has dtype {Cx.dtype} but Cy has dtype {Cy.dtype}; use one dtype")
    if Cx.device != Cy.device:
        raise ValueError(f"Cx is on {Cx.device} but Cy is on {Cy.device}; use one device")
    loss = _check_loss(loss)
    _check_kl_inputs(Cx, Cy, loss)
    n, m = Cx.shape[-1], Cy.shape[-1]
    if M is not None:
        if isinstance(M, torch.Tensor) and M.device != Cx.device:
            raise ValueError(f"M is on {M.device} but Cx is on {Cx.device}; use one device")
        M = check_cost(M, "M", like=None if isinstance(M, torch.Tensor) else Cx).to(Cx.dtype)
        if M.shape[-2:] != (n, m):
            raise ValueError(f"M must have shape (n, m) = ({n}, {m}) to match Cx and Cy, got "
                             f"{tuple(M.shape)}")
        alpha = check_unit_interval(alpha, "alpha")
    batch = broadcast_shapes(Cx.shape[:-2], Cy.shape[:-2],
                                   M.shape[:-2] if M is not None else ())
    a = check_weights(a, n, "a", like=Cx, batch_shape=batch)
    b = check_weights(b, m, "b", like=Cx, batch_shape=batch)
    check_same_mass(a, b)
    full = broadcast_shapes(batch, a.shape[:-1], b.shape[:-1])
    return Cx, Cy, a.expand(*full, n), b.expand(*full, m), M, alpha, loss, full


def _start_plan(init, a, b, full, like):
    """The first input plan, ``a x b`` or ``init`` (checked; its leading dimensions may add a
    batch of starting plans), and the weights and batch shape expanded to match it."""
    n, m = a.shape[-1], b.shape[-1]
    if init is None:
        return a[..., :, None] * b[..., None, :], a, b, full
    if isinstance(init, torch.Tensor) and init.device != like.device:
        raise ValueError(f"init is on {init.device} but Cx is on {like.device}; use one device")
    z = check_plan(init, "init", like=None if isinstance(init, torch.Tensor) else like)
    z = z.to(like.dtype)
    if z.shape[-2:] != (n, m):
        raise ValueError(f"init must have shape (n, m) = ({n}, {m}), got {tuple(z.shape)}")
    full = broadcast_shapes(full, z.shape[:-2])
    return z.detach().expand(*full, n, m), a.expand(*full, n), b.expand(*full, m), full


class _Iterate(NamedTuple):
    """A plan the loop has computed, with what it needs of it (all per problem of a batch)."""

    plan: torch.Tensor   # P
    hplan: torch.Tensor  # H1 P H2^T, the part of the gradient at P that depends on P
    lin: torch.Tensor    # the unregularised objective E0(P) (GW, or fused GW)
    value: torch.Tensor  # the objective E(P) = E0(P) + eps KL(P | a x b)


def _keep(ok, new, old):
    """``new`` for the problems where ``ok``, ``old`` for the others."""
    okm = ok[..., None, None]
    return _Iterate(torch.where(okm, new.plan, old.plan), torch.where(okm, new.hplan, old.hplan),
                    torch.where(ok, new.lin, old.lin), torch.where(ok, new.value, old.value))


class _GWProblem:
    """What stays fixed along the mirror descent (detached tensors): the split loss, the
    separable part of the linearised cost, the weights, and the Sinkhorn settings."""

    def __init__(self, Cx, Cy, a, b, eps, M, alpha, loss, sinkhorn_max_iter):
        self.F1, self.F2, self.H1, self.H2 = _split(Cx, Cy, loss)
        self.H2t = self.H2.transpose(-1, -2)
        # the linearised cost uses the target marginals a, b (its separable part does not move
        # the Sinkhorn solution, only the potentials): 2 (f1(Cx) a 1^T + 1 b^T f2(Cy)^T)
        self.const = 2.0 * ((self.F1 @ a[..., None]) + (self.F2 @ b[..., None]).transpose(-1, -2))
        self.a, self.b, self.eps, self.M, self.alpha = a, b, eps, M, alpha
        # a convergence check costs a device sync on a GPU; on a CPU it is cheap, and checking at
        # every iteration lets a warm-started solve stop after a few
        self.opts = Options(max_iter=sinkhorn_max_iter,
                            check_every=1 if Cx.device.type == "cpu" else 10)

    def product(self, P):
        """``H1 P H2^T`` (linear in ``P``)."""
        return self.H1 @ P @ self.H2t

    def linear_step(self, hz, tol, warm):
        """One mirror-descent step from the input plan ``z``, given by ``hz = H1 z H2^T``: the
        Sinkhorn plan of the cost linearised at ``z``, to an L1 marginal error ``tol``, from the
        potentials ``warm`` (or cold, for ``None``). Returns the new iterate and the Sinkhorn
        step's potentials, iterations and convergence."""
        a, b, eps = self.a, self.b, self.eps
        grad = self.const - 2.0 * hz
        if self.M is not None:
            grad = self.alpha * grad + (1.0 - self.alpha) * self.M
        full, (n, m) = grad.shape[:-2], grad.shape[-2:]
        sol = solve(CostMatrix(grad.reshape(-1, n, m), checked=True),
                    a.expand(*full, n).reshape(-1, n), b.expand(*full, m).reshape(-1, m), eps,
                    self.opts.but(tol=tol), init_g=None if warm is None else warm[1].reshape(-1, m))
        P = sol.plan.reshape(grad.shape)
        f, g = sol.f.reshape(*full, n), sol.g.reshape(*full, m)
        hP = self.product(P)
        # KL of a Sinkhorn plan from its potentials (log(P / ab) = (f + g - grad) / eps):
        # no logarithm of the n x m plan
        pa, pb = P.sum(-1), P.sum(-2)
        kl = ((pa * f).sum(-1) + (pb * g).sum(-1) - (P * grad).sum((-2, -1))) / eps \
            - pa.sum(-1) + a.sum(-1) * b.sum(-1)
        lin, value = _objective_split(self.F1, self.F2, self.H1, self.H2, P, a, b, eps, self.M,
                                      self.alpha, hP, kl)
        done = sol.done.reshape(full)
        return _Iterate(P, hP, lin, value), _Step(f, g, sol.n_iter, done if full else bool(done))


class _Step(NamedTuple):
    """The Sinkhorn solve of a mirror-descent step: potentials, iterations, convergence."""

    f: torch.Tensor
    g: torch.Tensor
    n_iter: int
    converged: object


# Anderson acceleration of the mirror-descent fixed point: it starts after this many steps in a
# row that shrank the plan change (the iterates have left the saddle near a x b), and an
# extrapolated step is rolled back when it raises the objective by more than this (relative).
_ANDERSON_START = 3
_ANDERSON_RTOL = 1e-9
# While the plan change grows (the iterates leave a saddle point), steps are extrapolated along
# the last change by a factor that doubles after each successful step, up to this.
_DRIFT_MAX = 64.0
# The Anderson ``start`` of a problem that uses no history: later than the id of any entry.
_NO_HISTORY = 2**62


def _inner(u, v):
    """Frobenius inner products over the last two dims, one per problem: shape (problems,)."""
    return (u * v).sum((-2, -1)).reshape(-1)


def _anderson(hist, ids, start, gram):
    """Type-II Anderson mixing of the steps in ``hist``: [(y_i, H1 y_i H2^T, r_i = y_i - z_i)].

    ``gram[p, i, j] = <r_i, r_j>`` for problem ``p`` (kept up to date by the caller, one new row
    per step), so that only small matrices are formed here. Batched: one set of coefficients per
    problem, and for problem ``p`` only the entries whose id (``ids``) is at least ``start[p]``
    are used (its history since it last restarted). Returns the extrapolated input
    ``z = sum_j c_j y_j``, its product ``H1 z H2^T`` (linear in ``z``: mixed from the stored
    products, without a new matrix product), and whether ``z`` was extrapolated.
    """
    y, hy, r = hist[-1]
    k = len(hist) - 1
    start = start.reshape(-1)
    valid = torch.stack([start <= ids[i] for i in range(k)], -1).to(gram.dtype)  # (problems, k)
    D = torch.zeros(k + 1, k, dtype=gram.dtype, device=gram.device)  # differences r_{i+1} - r_i
    D[torch.arange(k), torch.arange(k)] = -1.0
    D[torch.arange(k) + 1, torch.arange(k)] = 1.0
    G = D.T @ gram @ D * valid[:, :, None] * valid[:, None, :]
    lam = 1e-10 * G.diagonal(dim1=-2, dim2=-1).sum(-1) / k + torch.finfo(G.dtype).tiny
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    G = G + (1.0 - valid)[:, :, None] * eye + lam[:, None, None] * eye
    rhs = (D.T @ gram[:, :, k:]) * valid[:, :, None]
    gamma = torch.linalg.solve(G, rhs)[..., 0]  # (problems, k)
    coef = -gamma @ D.T  # z = y_k - sum_i gamma_i (y_{i+1} - y_i) = sum_j coef_j y_j
    coef[:, k] += 1.0
    batch = r.shape[:-2]
    z = hz = 0.0
    for jj in range(k + 1):
        c = coef[:, jj].reshape(*batch, 1, 1)
        z = z + c * hist[jj][0]
        hz = hz + c * hist[jj][1]
    used = valid.sum(-1).reshape(batch) >= 1
    return z, hz, used


class _GWAccelerator:
    """Anderson mixing and drift extrapolation of the mirror-descent fixed point, with rollback.

    After each step, :meth:`next_input` turns the accepted plan into the next step's input:
    the plan itself, an Anderson mixture of the last steps (once the plan changes shrink), or
    an extrapolation along the last step (while they grow). :meth:`rejects` says which
    problems roll back a step: an extrapolated input whose output raised the objective.

    Each problem of a batch has its own state (tensors of the batch shape); the history is
    shared, and each problem mixes only the entries since it last (re)started. State map:

    * ``extrapolated``: the current input was extrapolated (so its output may be rolled back);
    * ``streak``, ``rise``: accepted steps in a row whose plan change shrank / did not;
    * ``last_err``: the plan change of the last accepted step;
    * ``beta``: the drift factor of the current input (0: no drift); ``beta_mem``: the factor
      a rolled-back drift resumes from;
    * ``start``: the id of the first history entry a problem mixes (:data:`_NO_HISTORY`: none);
    * ``hist``, ``ids``, ``gram``: the last ``memory + 1`` entries ``(y, H1 y H2^T, r)`` (an
      accepted plan, its product, the step's residual), their ids, and the Gram matrices of
      the residuals, ``gram[p, i, j] = <r_i, r_j>`` for problem ``p``; ``n_entries``: the id
      of the next entry.
    """

    def __init__(self, memory: int, shape, like: torch.Tensor):
        dev = like.device
        self.memory = memory
        self.extrapolated = torch.zeros(shape, dtype=torch.bool, device=dev)
        self.streak = torch.zeros(shape, dtype=torch.long, device=dev)
        self.rise = torch.zeros_like(self.streak)
        self.last_err = torch.full(shape, float("inf"), dtype=like.dtype, device=dev)
        self.beta = torch.zeros(shape, dtype=like.dtype, device=dev)
        self.beta_mem = torch.zeros_like(self.beta)
        self.start = torch.full(shape, _NO_HISTORY, dtype=torch.long, device=dev)
        self.hist, self.ids, self.gram, self.n_entries = [], [], None, 0

    def rejects(self, new_value, value):
        """Which problems roll back their step: those whose input was extrapolated and whose
        objective rose from ``value`` (the last accepted; ``None`` before the first step)."""
        if value is None:
            return torch.zeros_like(self.extrapolated)
        return self.extrapolated & (new_value > value + _ANDERSON_RTOL * value.abs())

    def next_input(self, y, r, hz, err, ok):
        """The next step's input ``(z, H1 z H2^T)`` after a step with input product ``hz``,
        accepted iterate ``y``, residual ``r`` (its output minus its input) and plan change
        ``err``; ``ok``: the problems that accepted the step (the others rolled it back)."""
        self._count(err, ok)
        if self.memory and bool((self.start < _NO_HISTORY).any()):  # a problem uses the history
            self._remember(y, r, ok)
        if len(self.hist) >= 2 and bool((self.start.reshape(-1) <= self.ids[-2]).any()):
            z, hz_next, mixed = _anderson(self.hist, self.ids, self.start, self.gram)
        else:
            z, hz_next, mixed = y.plan, y.hplan, torch.zeros_like(ok)
        drift = self._drift(mixed, ok)
        if bool(drift.any()):
            bb, d = self.beta[..., None, None], drift[..., None, None]
            z = torch.where(d, y.plan + bb * r, z)
            hz_next = torch.where(d, y.hplan + bb * (y.hplan - hz), hz_next)
        self.extrapolated = mixed | drift
        return z, hz_next

    def _count(self, err, ok):
        """Update the step counters, and (re)start or stop each problem's history."""
        uphill = ~ok
        shrank = ok & (err < self.last_err)
        zero = torch.zeros_like(self.streak)
        self.streak = torch.where(shrank, self.streak + 1, zero)
        self.rise = torch.where(ok & ~shrank, self.rise + 1, torch.where(uphill, self.rise, zero))
        # a rolled-back drift resumes, after one plain step, at a quarter of its reach
        self.beta_mem = torch.where(uphill, self.beta / 4, self.beta_mem)
        self.last_err = torch.where(ok, err, self.last_err)
        # Anderson (re)starts after _ANDERSON_START shrinking steps (the iterates have left the
        # saddle near a x b); a rolled-back problem stops using its history
        self.start = torch.where(uphill, torch.full_like(self.start, _NO_HISTORY), self.start)
        begin = (self.start == _NO_HISTORY) & (self.streak >= _ANDERSON_START)
        self.start = torch.where(begin, torch.full_like(self.start, self.n_entries), self.start)

    def _remember(self, y, r, ok):
        """Add the step to the history (a rolled-back problem's residual as zero) and its row to
        the Gram matrices; forget the oldest entry beyond ``memory + 1``."""
        if not bool(ok.all()):
            r = torch.where(ok[..., None, None], r, torch.zeros_like(r))
        row = torch.stack([_inner(r, h[2]) for h in self.hist] + [_inner(r, r)], -1)
        size = len(self.hist) + 1
        gram = row.new_zeros(row.shape[0], size, size)
        if self.hist:
            gram[:, :-1, :-1] = self.gram
        gram[:, -1, :], gram[:, :, -1] = row, row
        self.hist, self.ids = self.hist + [(y.plan, y.hplan, r)], self.ids + [self.n_entries]
        self.gram = gram
        if len(self.hist) > self.memory + 1:
            self.hist, self.ids, self.gram = self.hist[1:], self.ids[1:], self.gram[:, 1:, 1:]
        self.n_entries += 1

    def _drift(self, mixed, ok):
        """Which problems extrapolate along their last step (those not mixed whose steps have
        grown for _ANDERSON_START steps: the plan leaves a saddle point slowly), and by what
        factor (``beta``): twice as far after each step that was not rolled back."""
        drift = (self.memory > 0) & ~mixed & (self.rise >= _ANDERSON_START) & ok
        grown = torch.where(self.beta > 0, (2.0 * self.beta).clamp_max(_DRIFT_MAX),
                            self.beta_mem.clamp_min(1.0))
        self.beta = torch.where(drift, grown, torch.zeros_like(self.beta))
        self.beta_mem = torch.where(drift, torch.zeros_like(self.beta_mem), self.beta_mem)
        return drift


class _Run(NamedTuple):
    """What the mirror-descent loop hands to the result."""

    y: _Iterate              # the last accepted iterate
    err: torch.Tensor        # its plan change, per problem
    solve: OTResult          # the last Sinkhorn solve (potentials f, g; converged)
    n_iter: int              # steps, rolled-back ones included
    history: list            # the objective of the accepted iterate after each step
    inner_iterations: int    # Sinkhorn iterations, all steps together
    rejected: int            # steps rolled back (summed over the problems)


def _all(converged) -> bool:
    return bool(torch.as_tensor(converged).all())


def _mirror_descent(problem: _GWProblem, accel: _GWAccelerator, z, tol, sinkhorn_tol, max_iter,
                    bar) -> _Run:
    """The loop: a linearised solve from the input ``z``, rollback of a step that went uphill,
    the stopping test, and the next (accelerated) input."""
    # state map: z, hz = the step's input plan and H1 z H2^T; y = the last accepted iterate;
    # err = its plan change; res = the last Sinkhorn solve (its potentials warm-start the next
    # one, unless it used up its budget: they would pass on its error)
    hz = problem.product(z)
    err = torch.full_like(accel.last_err, float("inf"))
    y = res = None
    history, inner_iterations, rejected, n_iter = [], 0, 0, 0
    for n_iter in range(1, max_iter + 1):
        # inexact solves: the inner tolerance tightens with the plan change
        inner_tol = max(sinkhorn_tol, min(1e-3, 0.1 * float(err.max())))
        warm = None if res is None or not _all(res.converged) else (res.f, res.g)
        new, res = problem.linear_step(hz, inner_tol, warm)
        inner_iterations += res.n_iter
        # a step from an extrapolated input that raised the objective is rolled back: y stays
        uphill = accel.rejects(new.value, None if y is None else y.value)
        ok = ~uphill
        r = new.plan - z
        y = new if y is None or not bool(uphill.any()) else _keep(ok, new, y)
        err = torch.where(ok, torch.linalg.matrix_norm(r), err)
        history.append(y.value)
        rejected += int(uphill.sum())
        bar.update(1)
        bar.set_postfix(change=f"{float(err.max()):.2e}")
        if bool((err <= tol).all()):
            break
        z, hz = accel.next_input(y, r, hz, err, ok)
    return _Run(y, err, res, n_iter, history, inner_iterations, rejected)


def _warn_unconverged(run: _Run, marg, tol, max_iter, sinkhorn_max_iter):
    """Warn that the run stopped short, and which loop did: the outer one, the last solve."""
    reasons = []
    if not bool((run.err <= tol).all()):
        reasons.append(f"the plan still changed by {float(run.err.max()):.3g} > tol {tol:g} in "
                       f"its last step (of {max_iter})")
    if not _all(run.solve.converged):
        reasons.append(f"its last Sinkhorn solve stopped at a marginal error of "
                       f"{float(marg.max()):.2g} after {sinkhorn_max_iter} iterations")
    # frames up: gromov_wasserstein, its keyword-alias wrapper, the caller
    warn_runtime(f"gromov_wasserstein did not converge: {' and '.join(reasons)}; raise max_iter "
                  "(or sinkhorn_max_iter), or use a larger eps", stacklevel=4)


@renamed_keywords(inner_tol="sinkhorn_tol", inner_max_iter="sinkhorn_max_iter")
def gromov_wasserstein(Cx, Cy, a=None, b=None, *, eps, loss: str = "square", M=None,
                       alpha: float = 0.5, init=None, max_iter: int = 1000, tol: float = 1e-9,
                       anderson: int = 5, sinkhorn_tol: float = 1e-8,
                       sinkhorn_max_iter: int = 1000, warn: bool = True,
                       progress: bool = False) -> OTResult:
    r"""Entropic (fused) Gromov-Wasserstein by mirror descent, one Sinkhorn solve per step.

    Minimises, over couplings :math:`P` of ``a`` and ``b``,

    .. math::

        \mathcal E(P) = \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}
        + \varepsilon \operatorname{KL}(P \mid a \otimes b)

    (square loss :math:`L(s, t) = (s - t)^2`, or ``loss="kl"``:
    :math:`L(s, t) = s \log(s/t) - s + t`). With a feature cost ``M``, the fused GW objective
    :math:`(1 - \alpha)\langle M, P\rangle + \alpha\,\mathrm{GW}(P) + \varepsilon\operatorname{KL}`
    (POT's convention for ``alpha``). Each step solves
    :math:`P_{k+1} = \operatorname{Sinkhorn}(a, b, \nabla \mathcal{E}_0(P_k), \varepsilon)`
    (mirror descent with step :math:`1/\varepsilon`, the iteration of POT's
    ``entropic_gromov_wasserstein``; :math:`\mathcal E_0` is the unregularised part),
    warm-started from the previous potentials (or cold, after a solve that used up its budget:
    warm potentials inherit its error). The problem is not convex: the result is a stationary
    point that depends on ``init``.

    Two things make it faster than the textbook loop without changing its fixed points:

    * **Anderson acceleration** of the fixed-point map :math:`P \mapsto \operatorname{Sinkhorn}
      (\nabla\mathcal E_0(P))`, once the iterates have left the neighbourhood of the starting
      plan (``anderson`` previous steps are combined; the gradient is linear in :math:`P`, so a
      combination costs no extra matrix product). An extrapolated step that raises the objective
      is rolled back and the memory cleared, so the iterates keep descending and settle on the
      stationary point the plain iteration reaches (``anderson=0`` gives the plain iteration);
    * **inexact inner solves**: each Sinkhorn solve stops at an L1 marginal error of
      ``max(sinkhorn_tol, min(1e-3, 0.1 * last plan change))``, tight only near convergence.

    Parameters
    ----------
    Cx : Tensor or array, shape (..., n, n)
        Dissimilarities inside the source space: square and symmetric (checked).
    Cy : Tensor or array, shape (..., m, m)
        Dissimilarities inside the target space: square and symmetric.
    a, b : Tensor or array, shapes (..., n) and (..., m), optional
        Weights (default uniform), with the same total mass.
    eps : float
        Entropic regularisation, absolute (in units of ``L``), > 0.
    loss : {"square", "kl"}
        ``"kl"`` needs ``Cx >= 0`` and ``Cy > 0`` (similarity matrices).
    M : Tensor or array, shape (..., n, m), optional
        Feature cost between the two sides: fused Gromov-Wasserstein.
    alpha : float in [0, 1]
        Weight of the structure (GW) term in the fused objective; used only with ``M``.
    init : Tensor or array, shape (..., n, m), optional
        Starting plan (default :math:`a \otimes b`). Any non-negative matrix: it only enters
        through the first linearised cost. Leading dimensions are a batch: one problem per
        starting plan (for restarts from several initialisations in one call).
    max_iter : int
        Budget of mirror-descent steps (rolled-back steps included).
    tol : float
        Stop when the plan changes by at most ``tol`` in Frobenius norm in one step,
        :math:`\|P_{k+1} - P_k\|_F \le` ``tol`` (POT's criterion, checked here at every step;
        with acceleration, :math:`P_k` is the extrapolated input of the step).
    anderson : int
        Memory of the Anderson acceleration; ``0`` turns it off.
    sinkhorn_tol, sinkhorn_max_iter : float, int
        Final tolerance (L1 marginal error) and budget of each Sinkhorn solve. (POT's default,
        ``stopThr=1e-9`` on the L2 norm of one marginal's error, is of the same order for a few
        hundred points.) Plans close to a permutation, and near-isometric problems, make
        Sinkhorn slow: raise ``sinkhorn_max_iter`` or ``eps`` when the solve stops short. The
        old names ``inner_tol`` and ``inner_max_iter`` still work in this release, with a
        ``DeprecationWarning``.
    warn : bool
        Emit a ``RuntimeWarning`` when the outer loop, or the last Sinkhorn solve, did not converge.
    progress : bool
        Show a progress bar over the mirror-descent steps.

    Returns
    -------
    OTResult
        ``plan``; ``value_linear``, the (fused) GW loss of the plan,
        :math:`\sum_{ijkl} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}`; ``value``, the objective
        minimised, ``value_linear`` :math:`+ \varepsilon \operatorname{KL}(P \mid a\otimes b)`.
        Both are differentiable in ``Cx``, ``Cy`` and ``M`` with the plan held fixed (the envelope
        theorem at a stationary point; no gradient for ``a`` and ``b``). ``f``, ``g``: the
        potentials of the last Sinkhorn step (of the linearised problem). ``n_iter``: mirror
        descent steps. ``converged``: the outer criterion was met and the last Sinkhorn solve
        converged (a tensor of bools for a batch). ``extra``: ``"history"`` (the objective
        after each accepted step), ``"criterion"`` (the last plan change),
        ``"inner_iterations"`` (Sinkhorn iterations, all steps together), ``"rejected"``
        (extrapolated steps rolled back).

    Examples
    --------
    A 1-D cloud and its mirror image are isometric: GW is 0 and the plan is the anti-diagonal.

    >>> import torch, otbook as ob
    >>> x = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)[:, None] / 7
    >>> C = ob.cost_matrix(x, x, "euclidean")
    >>> res = ob.gromov_wasserstein(C, C.flip(0, 1), eps=1e-3)
    >>> res.converged, round(float(res.value_linear), 6)
    (True, 0.0)
    >>> (res.plan * 4).round().int()
    tensor([[0, 0, 0, 1],
            [0, 0, 1, 0],
            [0, 1, 0, 0],
            [1, 0, 0, 0]], dtype=torch.int32)
    """
    Cx, Cy, a, b, M, alpha, loss, full = _inputs(Cx, Cy, a, b, M, alpha, loss)
    eps = check_eps(eps)
    max_iter = check_positive_int(max_iter, "max_iter")
    sinkhorn_max_iter = check_positive_int(sinkhorn_max_iter, "sinkhorn_max_iter")
    anderson = check_positive_int(anderson, "anderson", minimum=0)
    tol = check_positive(tol, "tol")
    sinkhorn_tol = check_positive(sinkhorn_tol, "sinkhorn_tol")
    z, a, b, full = _start_plan(init, a, b, full, like=Cx)

    # small problems on one thread: the loop is many small products (see threads_for)
    with (torch.no_grad(), threads_for(z.numel(), Cx),
          progress_bar(progress, max_iter, "gromov_wasserstein") as bar):
        problem = _GWProblem(Cx.detach(), Cy.detach(), a, b, eps, None if M is None else M.detach(),
                             alpha, loss, sinkhorn_max_iter)
        accel = _GWAccelerator(anderson, full, like=Cx)
        run = _mirror_descent(problem, accel, z, tol, sinkhorn_tol, max_iter, bar)
        y = run.y.plan
        marg = (y.sum(-1) - a).abs().sum(-1) + (y.sum(-2) - b).abs().sum(-1)

    lin, value = run.y.lin, run.y.value
    if Cx.requires_grad or Cy.requires_grad or (M is not None and M.requires_grad):
        # envelope gradients: the objective of the plan held fixed
        lin, value = _objective(Cx, Cy, y, a.detach(), b.detach(), eps, M, alpha, loss)
    done = (run.err <= tol) & _all(run.solve.converged)
    all_ok = bool(done.all())
    if warn and not all_ok:
        _warn_unconverged(run, marg, tol, max_iter, sinkhorn_max_iter)
    extra = {"history": torch.stack(run.history, -1), "criterion": run.err,
             "inner_iterations": run.inner_iterations, "rejected": run.rejected, "eps": eps,
             "loss": loss}
    return OTResult(plan=y, value=value, value_linear=lin, f=run.solve.f, g=run.solve.g,
                    n_iter=run.n_iter, converged=all_ok if full == () else done,
                    marginal_error=marg, extra=extra)


def gromov_objective(Cx, Cy, plan, a=None, b=None, *, eps: float = 0.0, loss: str = "square",
                     M=None, alpha: float = 0.5) -> torch.Tensor:
    r"""The (fused, entropic) Gromov-Wasserstein objective of any plan.

    .. math::

        \sum_{i,j,k,l} L(C^x_{ik}, C^y_{jl}) P_{ij} P_{kl}
        \;\big[\times \alpha + (1 - \alpha)\langle M, P\rangle\big]
        \;+\; \varepsilon \operatorname{KL}(P \mid a \otimes b),

    computed in :math:`O(n^2 m + n m^2)` with the plan's own marginals (so it is exact for plans
    whose marginals are not exactly ``a`` and ``b``, such as a truncated solver's). Use it to
    compare plans from different solvers on one scale.

    Parameters
    ----------
    Cx, Cy : Tensor or array, shapes (..., n, n) and (..., m, m)
        Symmetric dissimilarity matrices.
    plan : Tensor or array, shape (..., n, m)
        Any non-negative matrix.
    a, b : Tensor or array, optional
        Reference weights of the KL term (default uniform); used only when ``eps > 0``.
    eps : float
        Weight of the KL term (``0``: the plain GW loss).
    loss, M, alpha
        As in :func:`gromov_wasserstein`.

    Returns
    -------
    Tensor, shape (...)
        Differentiable in ``Cx``, ``Cy``, ``M`` and ``plan``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> P = torch.full((2, 2), 0.25, dtype=torch.float64)   # the independent coupling
    >>> float(ob.gromov_objective(C, C, P))   # pairs (i,k), (j,l) mismatch half the time
    0.5
    """
    Cx, Cy, a, b, M, alpha, loss, full = _inputs(Cx, Cy, a, b, M, alpha, loss)
    if isinstance(plan, torch.Tensor) and plan.device != Cx.device:
        raise ValueError(f"plan is on {plan.device} but Cx is on {Cx.device}; use one device")
    P = check_plan(plan, "plan", like=None if isinstance(plan, torch.Tensor) else Cx).to(Cx.dtype)
    n, m = Cx.shape[-1], Cy.shape[-1]
    if P.shape[-2:] != (n, m):
        raise ValueError(f"plan must have shape (n, m) = ({n}, {m}), got {tuple(P.shape)}")
    if eps != 0:
        eps = check_eps(eps)
    return _objective(Cx, Cy, P, a, b, eps, M, alpha, loss)[1]


@renamed_keywords(inner_tol="sinkhorn_tol", inner_max_iter="sinkhorn_max_iter")
def gromov_divergence(Cx, Cy, a=None, b=None, *, eps, **kwargs) -> torch.Tensor:
    r"""A debiased entropic Gromov-Wasserstein loss, for generative models across spaces.

    .. math::

        \overline{\mathrm{GW}}_\varepsilon(X, Y) = \mathrm{GW}_\varepsilon(X, Y)
        - \tfrac12 \mathrm{GW}_\varepsilon(X, X) - \tfrac12 \mathrm{GW}_\varepsilon(Y, Y),

    with :math:`\mathrm{GW}_\varepsilon` the objective ``value`` of :func:`gromov_wasserstein`
    (the same convention as :func:`otbook.sinkhorn_divergence`; the normalised loss of Bunne et
    al., 2019, is twice this). The three problems start from the product coupling, and the solver
    commutes with relabelling the points, so the divergence vanishes (up to round-off) when
    ``Cy`` is ``Cx`` with its points relabelled. GW is not convex, so unlike the Sinkhorn
    divergence this quantity can be negative when the cross problem finds a better stationary
    point than a self-problem.

    Parameters
    ----------
    Cx, Cy : Tensor or array, shapes (n, n) and (m, m)
        Symmetric dissimilarity matrices (differentiable).
    a, b : Tensor or array, optional
        Weights (default uniform).
    eps : float
        Entropic regularisation, > 0.
    **kwargs
        Passed to :func:`gromov_wasserstein` (``loss``, ``max_iter``, ``tol``,
        ``sinkhorn_tol``, ``warn``, ...).

    Returns
    -------
    Tensor
        Scalar (or batch), differentiable in ``Cx`` and ``Cy`` (envelope gradients).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> C = ob.cost_matrix(x, x, "euclidean") / 5
    >>> perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    >>> abs(float(ob.gromov_divergence(C, C[perm][:, perm], eps=0.05))) < 1e-12
    True
    """
    for key in ("init", "M"):
        if key in kwargs:
            raise TypeError(f"gromov_divergence does not take {key!r}")
    xy = gromov_wasserstein(Cx, Cy, a, b, eps=eps, **kwargs).value
    xx = gromov_wasserstein(Cx, Cx, a, a, eps=eps, **kwargs).value
    yy = gromov_wasserstein(Cy, Cy, b, b, eps=eps, **kwargs).value
    return xy - 0.5 * (xx + yy)
