"""Over-relaxation of the Sinkhorn updates: one safeguarded, adaptive factor per problem."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Relax"]


class Relax:
    """Safeguarded, adaptive over-relaxation of Sinkhorn updates, one factor per problem.

    A relaxed update moves the log-scalings ``omega`` times as far as Sinkhorn's own update,
    ``log u <- (1 - omega) log u + omega log u_sinkhorn`` (``omega = 1``: plain Sinkhorn). Near
    the solution Sinkhorn behaves like a Gauss-Seidel sweep on a linear system, contracting by a
    rate ``r`` per iteration; by Young's theory of successive over-relaxation the best factor is
    ``omega* = 2 / (1 + sqrt(1 - r))``, with rate about ``omega* - 1`` (``r = 0.999`` gives
    ``omega* = 1.94`` and 16x fewer iterations). This is the analysis of Thibault et al. (2021)
    and Lehmann et al. (2022), who read ``r`` off the plain iterations at no cost.

    ``"auto"``: the iterations start plain; ``r`` is read off the decrease of the stopping
    criterion between two checks, and once two readings agree (the transient is over) the
    factor is set to ``min(omega*, CAP)`` (``CAP = 1.98``). A relaxed run that then settles at a
    rate well above ``omega - 1`` is under-relaxed for its slowest mode: Young's relation gives
    that mode's ``r`` and the factor is raised towards its optimum (at most halfway to 2 per
    step). A fixed float is used from the start.

    Safeguard, either way: a relaxed problem whose criterion turns non-finite, grows 100x above
    its best, or stops improving for a patience of about ``1 / (2 - omega)`` checks returns to
    its best state so far, with the last factor that worked (a failed first switch goes plain
    until the criterion is 10x lower); after three such returns it stays plain (which
    converges).
    """

    CAP = 1.98

    def __init__(self, omega, batch, like):
        # the controller's state lives on the host, in NumPy: a few numbers per problem, read
        # once per check (on a GPU, dozens of tiny device kernels per check would cost more
        # than the iterations they save on mid-sized problems)
        self.auto = omega == "auto"
        start = 1.0 if self.auto else float(omega)
        self.like = like
        self.w = np.full(batch, start)
        self.strikes = np.zeros(batch, dtype=int)
        self.stale = np.zeros(batch, dtype=int)
        self.n_steady = np.zeros(batch, dtype=int)
        self.prev_err = self.best = None
        self.prev_rate = np.full(batch, np.nan)
        self.w_safe = np.ones(batch)  # the factor before the last increase
        self.cap = np.full(batch, self.CAP)
        self.cap_until = np.zeros(batch)  # a failed increase caps the factor until err < this
        self.gate = np.full(batch, np.inf)  # a failed first switch: plain until below this
        self.err_switch = np.full(batch, np.inf)
        self.at_convergence = self.w.copy()  # the factors in use when problems converged
        self.converged = np.zeros(batch, dtype=bool)
        self._changed()

    def _changed(self):
        self.active = bool((self.w != 1.0).any())  # plain updates cost nothing extra
        self._w_dev = None

    def _factor(self, ndim):
        if self.w.size == 1:  # one problem: a Python number
            return float(self.w[0])
        if self._w_dev is None:
            self._w_dev = torch.as_tensor(self.w, dtype=self.like.dtype, device=self.like.device)
        return self._w_dev[:, None] if ndim > 1 else self._w_dev

    def mix(self, old, new):
        """The relaxed scaling ``new (old / new)^(1 - omega)`` (per problem, last axis)."""
        if not self.active:
            return new
        return new * (old / new).pow(1.0 - self._factor(old.dim()))

    def mix_log(self, old, new):
        """The same in the log domain: ``(1 - omega) old + omega new``."""
        if not self.active:
            return new
        return torch.lerp(old, new, self._factor(old.dim()))

    def settle(self, mask):
        """Plain updates from now on for the problems in ``mask`` (which converged)."""
        mask = np.asarray(mask, dtype=bool)
        self.at_convergence = np.where(mask, self.w, self.at_convergence)
        self.converged |= mask
        self.w = np.where(mask, 1.0, self.w)
        self._changed()

    def report(self):
        """The factor each problem ended with (at its convergence, when it converged)."""
        w = np.where(self.converged, self.at_convergence, self.w)
        return torch.as_tensor(w, dtype=self.like.dtype)

    def check(self, err, k, tol):
        """Take the criterion ``err`` (a NumPy array, one entry per problem) reached ``k``
        iterations after the previous check.

        Returns ``(back, improved)``, NumPy masks: the problems to return to their best state so
        far (``None`` when there is none), and those whose current state is their new best (to
        be saved)."""
        err = np.asarray(err, dtype=float)
        finite = np.isfinite(err)
        if self.best is None:
            self.best = np.where(finite, err, np.inf)
            self.prev_err = err
            return None, finite
        improved = finite & (err < self.best)
        self.stale = np.where(improved, 0, self.stale + 1)
        # A relaxed problem goes back when its criterion is non-finite, far above its best, or
        # has not improved on it for a while: over-relaxed iterations are not monotone (a new
        # factor can raise the error for a few dozen iterations before it falls faster), the
        # more so the closer omega is to 2, so the patience grows like 1 / (2 - omega)
        w = self.w
        patience = np.maximum(10.0 / (k * (2.0 - w)), 3.0)
        with np.errstate(invalid="ignore"):
            back = ((w != 1.0) & ~(err <= tol)
                    & (~finite | (err > 100.0 * self.best) | (self.stale >= patience)))
        if back.any():
            self.strikes = self.strikes + back
            # A failed increase returns to the factor that worked before it, and later ones
            # stop halfway below the factor that failed. A failed first switch (typically too
            # early, far from the solution, where the iteration is not yet linear) returns to
            # plain updates until the criterion is 10x below where that switch happened. Three
            # failures: plain for good.
            raised = self.w_safe > 1.0
            out = self.strikes >= 3
            self.cap = np.where(back & raised, 0.5 * (w + self.w_safe), self.cap)
            self.cap_until = np.where(back & raised, 0.1 * self.best, self.cap_until)
            self.gate = np.where(back & ~raised, 0.1 * self.err_switch, self.gate)
            self.gate = np.where(back & out, 0.0, self.gate)
            self.w = np.where(back, np.where(raised & ~out, self.w_safe, 1.0), w)
            self.w_safe = np.where(back, 1.0, self.w_safe)
            self.stale = np.where(back, 0, self.stale)
            self.n_steady = np.where(back, 0, self.n_steady)
            err = np.where(back, self.best, err)
        self.best = np.where(improved, err, self.best)
        # a failed increase is often a transient (the criterion of a relaxed iteration is not
        # monotone): once the criterion is 10x below where it failed, the cap is lifted again
        lift = (self.cap < self.CAP) & (err < self.cap_until)
        self.cap = np.where(lift, self.CAP, self.cap)
        if self.auto:
            prev, w = self.prev_err, self.w
            with np.errstate(all="ignore"):
                ok = improved & (err < prev) & (prev > 0)
                rate = np.where(ok, (err / prev) ** (1.0 / k), np.nan)
                steady = np.abs(rate - self.prev_rate) <= 0.1 * (1.0 - rate)
                self.n_steady = np.where(steady, self.n_steady + 1, 0)
                # plain Sinkhorn's rate r gives omega* = 2 / (1 + sqrt(1 - r)). A relaxed
                # iteration that settles on a rate lam well above omega - 1 is under-relaxed for
                # its slowest mode; Young's relation (lam + omega - 1)^2 = lam omega^2 r gives r
                r = np.where(w == 1.0, rate, (rate + w - 1.0) ** 2 / (rate * w * w))
                under = (w == 1.0) | (rate > 1.05 * (w - 1.0))
                target = 2.0 / (1.0 + np.sqrt(np.clip(1.0 - r, 0.0, None)))
                # from plain, straight to the target; later, at most halfway to 2 per step
                step = np.where(w == 1.0, target, np.minimum(target, w + 0.5 * (2.0 - w)))
                new = np.minimum(step, self.cap)
                go = (~self.converged & (self.n_steady >= 2) & (rate > 0.5) & under
                      & ((w != 1.0) | (err < self.gate)) & (new > w + 0.01))
            if go.any():
                self.w_safe = np.where(go, w, self.w_safe)
                self.err_switch = np.where(go & (w == 1.0), err, self.err_switch)
                self.w = np.where(go, new, w)
                self.n_steady = np.where(go, 0, self.n_steady)
            self.prev_rate = rate
        self.prev_err = err
        self._changed()
        return (back if back.any() else None), improved
