r"""The Sinkhorn loop: kernel-domain iterations with absorption and over-relaxation.

Every Sinkhorn solve of the library runs :func:`iterate`, whatever the cost (a matrix, point
clouds, a label-augmented cost, a batch of padded problems) and wherever it lives (a stored
kernel, or blocks recomputed on the fly: see :mod:`otbook.sinkhorn.kernel`). With the
stabilised kernel :math:`\tilde K` of base potentials :math:`f^0, g^0`, one iteration is

.. math::

    u \leftarrow \Big(\frac{1}{\tilde K (b \odot v)}\Big)^{\lambda_a}
        e^{(\lambda_a - 1) f^0 / \varepsilon},
    \qquad
    v \leftarrow \Big(\frac{1}{\tilde K^\top (a \odot u)}\Big)^{\lambda_b}
        e^{(\lambda_b - 1) g^0 / \varepsilon},

with :math:`\lambda = \rho / (\rho + \varepsilon)` for a KL-penalised marginal and
:math:`\lambda = 1` (the textbook update ``u = 1 / K v``) for a hard one. The potentials are
:math:`f = f^0 + \varepsilon \log u`, :math:`g = g^0 + \varepsilon \log v` and the plan
:math:`P = \operatorname{diag}(a u) \tilde K \operatorname{diag}(b v)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._runtime import progress
from .kernel import threshold
from .relax import Relax

__all__ = ["Marginals", "Scalings", "iterate", "symmetric"]


@dataclass
class Marginals:
    """How each side's marginal is enforced: ``lam = 1`` for a hard constraint (``rho`` is
    ``None``), ``rho / (rho + eps)`` for a KL penalty of strength ``rho``."""

    rho_a: float | None
    rho_b: float | None

    @property
    def balanced(self) -> bool:
        return self.rho_a is None and self.rho_b is None

    def lam(self, eps):
        return tuple(1.0 if r is None else r / (r + eps) for r in (self.rho_a, self.rho_b))


@dataclass
class Scalings:
    """The loop's state: the scalings ``u, v`` over the kernel's base potentials; ``t``, the
    last ``K~^T (a u)`` (``None`` when it must be recomputed); ``best``, the best state so far
    (for the over-relaxation's safeguard); ``v_good``, the last ``v`` known finite."""

    u: torch.Tensor
    v: torch.Tensor
    t: torch.Tensor | None = None
    best: tuple | None = None
    v_good: torch.Tensor | None = None

    @classmethod
    def ones(cls, K):
        u, v = K.a.new_ones(K.a.shape), K.b.new_ones(K.b.shape)
        return cls(u, v, None, (u, v), v)


def _scaling(s, lam, base, eps):
    """The update of one side from ``s = K~ w``: ``1 / s`` (hard), else the KL-penalised one."""
    if lam == 1.0:
        return 1.0 / s
    return torch.exp((lam - 1.0) * base / eps) * s.pow(-lam)


def _balanced_error(K, st, s):
    """The L1 marginal violation of the plan ``(u, v)``, relative to the total mass: rows from
    ``s = K~ (b v)``, columns from ``t = K~^T (a u)`` (exact without relaxation: then
    ``b v t = b``)."""
    err = (K.a * st.u * s - K.a).abs().sum(-1)
    if st.t is None:
        st.t = K.rmv(K.a * st.u)
    return (err + (K.b * st.v * st.t - K.b).abs().sum(-1)) / K.mass


def _change(u, u_old, v, v_old):
    """Sup-norm of the plan's relative change, ``max_ij |d log u_i + d log v_j|``: blind to the
    shift ``(f + c, g - c)``, which leaves the plan unchanged (the unbalanced criterion)."""
    du, dv = torch.log(u / u_old), torch.log(v / v_old)
    err = torch.maximum((du.amax(-1) + dv.amax(-1)).abs(), (du.amin(-1) + dv.amin(-1)).abs())
    return torch.nan_to_num(err, nan=float("inf"))


def _safeguard(relax, st, err, here, k, tol):
    """Over-relaxation's check: problems that went wrong return to their best state (and
    their criterion to the best one); problems that improved save their state. Returns the
    criterion and the measured state, both as they are after the returns."""
    back, improved = relax.check(err.cpu().numpy(), k, tol)
    if back is not None:
        bk = torch.as_tensor(back, device=err.device)[:, None]
        st.u, st.v = torch.where(bk, st.best[0], st.u), torch.where(bk, st.best[1], st.v)
        here = tuple(torch.where(bk, b, h) for b, h in zip(st.best, here))
        err = torch.as_tensor(relax.prev_err, dtype=err.dtype, device=err.device)
        st.t = None
    if improved.all():
        st.best = here
    elif improved.any():
        im = torch.as_tensor(improved, device=err.device)[:, None]
        st.best = tuple(torch.where(im, h, b) for h, b in zip(here, st.best))
    return err, here


def _absorb_if_drifted(K, st, lams):
    """When a scaling left ``[1 / thr, thr]`` (or a row underflowed), fold the scalings into
    the base potentials: from the last finite ``v``, one exact log-domain step."""
    lo, hi = torch.aminmax(torch.cat([st.u.flatten(), st.v.flatten()]))
    thr = threshold(st.u.dtype)
    if hi < thr and lo > 1.0 / thr:
        st.v_good = st.v
        return False
    log_v = torch.log(st.v)
    K.absorb(torch.where(torch.isfinite(log_v), log_v, torch.log(st.v_good)), *lams)
    fresh = Scalings.ones(K)
    st.u, st.v, st.t, st.best, st.v_good = fresh.u, fresh.v, None, fresh.best, fresh.v
    return True


def iterate(K, marg: Marginals, tol, max_iter, check_every, omega, bar=None):
    """Run Sinkhorn on the kernel ``K`` (with its base potentials set) until every problem of
    the batch meets ``tol`` or ``max_iter`` iterations have run; ``bar``: a progress bar.

    Returns the final ``Scalings`` and the report ``(err, done, iters, n_absorb, omegas,
    n_run)``: per problem the criterion, whether it converged, its iterations and the
    over-relaxation factor it ended with; for the batch, the absorptions and the iterations
    run."""
    bar = bar if bar is not None else progress(False)
    B = K.a.shape[0]
    lam_a, lam_b = marg.lam(K.eps)
    st, relax = Scalings.ones(K), Relax(omega, B, K.a)
    err = K.a.new_full((B,), float("inf"))
    done = torch.zeros(B, dtype=torch.bool, device=K.a.device)
    iters = torch.zeros(B, dtype=torch.long, device=K.a.device)
    n_absorb, last_check = 0, 0
    for it in range(1, max_iter + 1):
        check = it % check_every == 0 or it == max_iter
        s = K.mv(K.b * st.v)
        if check and marg.balanced:
            err = _balanced_error(K, st, s)
        u_old, v_old = st.u, st.v
        st.u = _scaling(s, lam_a, K.f0, K.eps)
        if it > 1:  # (the starting u = v = 1 are not iterates: the first update is plain)
            st.u = relax.mix(u_old, st.u)
        st.t = K.rmv(K.a * st.u)
        st.v = _scaling(st.t, lam_b, K.g0, K.eps)
        if it > 1:
            st.v = relax.mix(v_old, st.v)
        if not check:
            continue
        if not marg.balanced:
            err = _change(st.u, u_old, st.v, v_old)
        # the state the criterion measured: the plan at the start of this iteration (balanced),
        # or the new one (the change of the potentials)
        here = (u_old, v_old) if marg.balanced else (st.u, st.v)
        if relax.auto or relax.active:
            err, here = _safeguard(relax, st, err, here, it - last_check, tol)
            last_check = it
        absorbed = _absorb_if_drifted(K, st, (lam_a, lam_b))
        n_absorb += absorbed
        if absorbed and not marg.balanced:
            err = torch.full_like(err, float("inf"))
        newly = (err <= tol) & ~done
        iters = torch.where(newly, torch.full_like(iters, it), iters)
        done = done | newly
        if relax.active and bool(newly.any()):
            # a relaxed problem that converged keeps the state that was measured (a relaxed step
            # need not lower the criterion) and goes on plain
            if marg.balanced and not absorbed:
                st.u = torch.where(newly[:, None], here[0], st.u)
                st.v = torch.where(newly[:, None], here[1], st.v)
                st.t = None
            relax.settle(newly.cpu().numpy())
        bar.update(check_every)
        bar.set_postfix(err=f"{float(err.max()):.2e}")
        if bool(done.all()):
            break
    iters = torch.where(done, iters, torch.full_like(iters, it))
    return st, (err, done, iters, n_absorb, relax.report(), it)


def symmetric(K, tol, max_iter, check_every=5):
    r"""The potential of the symmetric problem :math:`\mathrm{OT}_\varepsilon(\alpha, \alpha)`
    (``K`` the kernel of a cloud against itself, with ``a`` its weights), by averaged updates.

    The averaged fixed-point iteration :math:`f \leftarrow (f + T f) / 2` converges in a few
    dozen steps where the alternating one crawls (the symmetric problem is Sinkhorn's slow
    case). With :math:`f = f^0 + \varepsilon \log u` it reads
    :math:`u \leftarrow \sqrt{u / \tilde K (a u)}`: one product per step. The first step is
    exact in the log domain (from :math:`f = 0`); when ``u`` drifts it is absorbed into the
    base. Criterion: the L1 marginal violation :math:`\sum_i a_i |u_i (\tilde K a u)_i - 1|`.
    Returns ``(f, err, done, iters, n_absorb)``, per problem of the batch (``n_absorb`` for
    all together).
    """
    a, eps = K.a, K.eps
    f = 0.5 * K.update_f(a.new_zeros(a.shape), eps)  # one averaged step from f = 0
    K.rebase(f, f)
    thr = threshold(a.dtype) ** 0.5
    u = torch.ones_like(a)
    B = a.shape[0]
    err = a.new_full((B,), float("inf"))
    done = np.zeros(B, dtype=bool)
    iters = np.full(B, max_iter)
    n_absorb = 0
    for it in range(1, max_iter + 1):
        s = K.mv(a * u)
        if it % check_every == 0 or it == max_iter:
            err = (a * (u * s - 1.0).abs()).sum(-1) / K.mass
            newly = (err <= tol).cpu().numpy() & ~done
            iters[newly], done = it, done | newly
            if done.all():
                break
            lo, hi = torch.aminmax(u)
            if not (hi < thr and lo > 1.0 / thr) or not bool(torch.isfinite(s).all()):
                f = K.f0 + eps * torch.log(u)
                K.rebase(f, f)
                u = torch.ones_like(a)
                n_absorb += 1
                continue
        # problems that converged keep their state (the update would not change it much, but
        # their criterion was measured here)
        u_new = torch.sqrt(u / s)
        if done.any():
            u_new = torch.where(torch.as_tensor(done, device=a.device)[:, None], u, u_new)
        u = u_new
    return (K.f0 + eps * torch.log(u), err, torch.as_tensor(done), torch.as_tensor(iters),
            n_absorb)
