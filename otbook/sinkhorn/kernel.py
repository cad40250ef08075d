r"""The stabilised Gibbs kernel of a cost, stored (dense) or recomputed block by block (online).

For base potentials :math:`f^0, g^0` the engine iterates with the kernel

.. math::

    \tilde K_{ij} = \exp\big((f^0_i + g^0_j - C_{ij}) / \varepsilon\big),

whose entries stay in floating-point range whatever ``eps`` (Schmitzer's absorption): the
scalings ``u, v`` of the kernel-domain iteration then stay close to 1, and when they drift they
are folded back into :math:`f^0, g^0` (:meth:`Kernel.absorb`). A kernel offers:

* ``mv(w)`` and ``rmv(w)``: :math:`\tilde K w` and :math:`\tilde K^\top w`, the two products of
  a Sinkhorn iteration;
* ``lse_rows(h, eps)`` / ``lse_cols(h, eps)``: exact log-sum-exps
  :math:`\log \sum_j e^{h_j - C_{ij}/\varepsilon}`, for the log-domain steps (eps-scaling,
  absorption, the first step of the symmetric solver);
* ``cmin_rows(g)`` / ``cmin_cols(f)``: c-transforms :math:`\min_j C_{ij} - g_j` (the base
  potentials of a cold start);
* the plan, as a matrix (:class:`DenseKernel`) or block by block.

:class:`DenseKernel` stores :math:`C` and :math:`\tilde K` (``n x m`` each); :class:`OnlineKernel`
stores neither and recomputes blocks of :math:`(f^0_i + g^0_j - C_{ij})/\varepsilon` from the
cost: for costs with a factored form (:meth:`~otbook.Cost.factors`) a block is one matrix
product of augmented factors, so that an online product costs one matrix product, one
exponential and one matrix-vector product per block. Every tensor has one batch dimension ``B``.
"""

from __future__ import annotations

import math

import torch

from .._runtime import block_rows

__all__ = ["exp_floor", "threshold", "Kernel", "DenseKernel", "OnlineKernel"]


def exp_floor(dtype) -> float:
    """A log-value below which ``exp`` counts as 0: ``e^floor`` is normal (not subnormal) but at
    most 1e-37 relative to 1. Exponents are clamped at it: a subnormal result is an order of
    magnitude slower on CPUs, and so is every product with it."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def threshold(dtype) -> float:
    """How far the scalings may drift from 1 before they are absorbed into the potentials
    (``u v K~`` stays far from overflow, and kernel entries that underflowed stay negligible)."""
    return 1e12 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e40


class Kernel:
    """The parts of :class:`DenseKernel` and :class:`OnlineKernel` written once."""

    def __init__(self, a, b, eps):
        self.a, self.b, self.eps = a, b, eps
        self.log_a, self.log_b = torch.log(a), torch.log(b)  # zero weights: -inf, harmless
        self.mass = a.sum(-1)  # criteria are relative to it (weights may be raw counts)
        self.f0 = self.g0 = None

    def update_f(self, g, eps, lam=1.0):
        """The exact (log-domain) update ``f = lam T(g)``, with
        ``T(g) = -eps log sum_j b_j exp((g_j - C_ij) / eps)``."""
        return -lam * eps * self.lse_rows(self.log_b + g / eps, eps)

    def update_g(self, f, eps, lam=1.0):
        return -lam * eps * self.lse_cols(self.log_a + f / eps, eps)

    def start(self, g=None, both: bool = False):
        """Base potentials for a start from ``g`` (``None``: 0): ``f0`` its c-transform, so that
        every row of the kernel has an entry equal to 1, and with ``both`` also ``g0`` the
        c-transform of ``f0`` (every column too)."""
        g = self.a.new_zeros(self.a.shape[0], self.m) if g is None else g
        f = self.cmin_rows(g)
        if both:
            g = self.cmin_cols(f)
        self.rebase(f, g)

    def absorb(self, log_v, lam_a, lam_b):
        """Fold the scalings into the potentials: ``g0 + eps log v``, then one exact log-domain
        step (``f`` from ``g``, ``g`` from ``f``), and rebuild the kernel at the new base."""
        g = self.g0 + self.eps * log_v
        f = self.update_f(g, self.eps, lam_a)
        g = self.update_g(f, self.eps, lam_b)
        self.rebase(f, g)

    def potentials(self, u, v):
        """The full potentials ``f0 + eps log u`` and ``g0 + eps log v``."""
        return self.f0 + self.eps * torch.log(u), self.g0 + self.eps * torch.log(v)


class DenseKernel(Kernel):
    """The kernel of a stored cost ``C`` of shape ``(B, n, m)``."""

    def __init__(self, C, a, b, eps):
        super().__init__(a, b, eps)
        self.C = C
        self.n, self.m = C.shape[-2:]
        self.K = None

    def rebase(self, f0, g0):
        # (f_i + g_j - C_ij) / eps in one allocating pass, the rest in place, clamped at the
        # floor before exp (see exp_floor); the old kernel is freed first
        self.f0, self.g0, self.K = f0, g0, None
        K = torch.sub((f0 / self.eps)[:, :, None], self.C, alpha=1.0 / self.eps)
        if bool(g0.any()):
            K.add_((g0 / self.eps)[:, None, :])
        self.K = K.clamp_(min=exp_floor(K.dtype)).exp_()
        B, n, m = K.shape
        # BLAS for one problem or large ones; for many small problems a fused multiply-sum
        # (batched BLAS handles matrix-vector products of small matrices poorly)
        self._small = B > 1 and n * m <= 2**18

    def mv(self, w):
        if self._small:
            return (self.K * w[:, None, :]).sum(-1)
        return torch.bmm(self.K, w[:, :, None])[:, :, 0]

    def rmv(self, w):
        return torch.bmm(w[:, None, :], self.K)[:, 0, :]

    def lse_rows(self, h, eps):
        return torch.logsumexp(h[:, None, :] - self.C / eps, dim=-1)

    def lse_cols(self, h, eps):
        return torch.logsumexp(h[:, :, None] - self.C / eps, dim=-2)

    def cmin_rows(self, g):
        return self.C.amin(-1) if not bool(g.any()) else (self.C - g[:, None, :]).amin(-1)

    def cmin_cols(self, f):
        return (self.C - f[:, :, None]).amin(-2)

    def plan(self, u, v):
        """The plan ``diag(a u) K~ diag(b v)``, written over the kernel (its last use)."""
        P = self.K.mul_((self.a * u)[:, :, None]).mul_((self.b * v)[:, None, :])
        self.K = None
        return P


class OnlineKernel(Kernel):
    """The kernel of a flat :class:`~otbook.Cost`, recomputed block by block; memory linear in
    ``n + m`` besides one block of about ``budget`` bytes at most (see
    :func:`otbook._runtime.block_rows`)."""

    def __init__(self, cost, a, b, eps, budget=None):
        super().__init__(a, b, eps)
        self.cost = cost
        self.n, self.m = cost.n, cost.m
        B = a.shape[0]
        self.rows = block_rows(self.n, self.m, a, budget, batch=B)
        self.cols = block_rows(self.m, self.n, a, budget, batch=B)
        fac = cost.factors()
        self.factored = fac is not None
        if self.factored:
            p, q, r, s = fac
            self._p, self._q, self._r, self._s = p, q, r, s

    # -- blocks of r_i + c_j - C_ij / eps ------------------------------------------------------

    def _augmented(self, r, c, eps):
        """Factors of ``r_i + c_j - C_ij / eps`` as one product ``P @ Q^T``:
        ``P_i = [-p_i / eps, r_i - r0_i / eps, 1]`` and ``Q_j = [q_j, 1, c_j - s0_j / eps]``."""
        P = torch.cat([self._p * (-1.0 / eps), (r - self._r / eps)[:, :, None],
                       torch.ones_like(r)[:, :, None]], -1)
        Q = torch.cat([self._q, torch.ones_like(c)[:, :, None], (c - self._s / eps)[:, :, None]],
                      -1)
        return P, Q

    def _exponents(self, r, c, eps, transpose=False):
        """Yield ``(start, Z)``: blocks of rows of ``Z_ij = r_i + c_j - C_ij / eps`` (or of
        ``Z^T``), each a fresh tensor the caller may overwrite."""
        if self.factored:
            P, Q = self._augmented(r, c, eps)
            if transpose:
                P, Q = Q, P
            Qt = Q.transpose(-1, -2).contiguous()
            step = self.cols if transpose else self.rows
            for s in range(0, P.shape[1], step):
                yield s, torch.bmm(P[:, s:s + step], Qt)
            return
        rr, cc = (c, r) if transpose else (r, c)
        for s, Cb in self.cost.blocks(self.cols if transpose else self.rows, transpose):
            k = Cb.shape[1]
            yield s, (rr[:, s:s + k, None] + cc[:, None, :]).sub_(Cb, alpha=1.0 / eps)

    def _reduce(self, r, c, eps, transpose, fn):
        out = r.new_empty(r.shape[0], self.m if transpose else self.n)
        for s, Z in self._exponents(r, c, eps, transpose):
            out[:, s:s + Z.shape[1]] = fn(Z)
        return out

    # -- the kernel's interface ----------------------------------------------------------------

    def rebase(self, f0, g0):
        self.f0, self.g0 = f0, g0
        self._fr, self._gc = f0 / self.eps, g0 / self.eps
        if self.factored:  # the augmented factors of the base, kept until the next absorption
            self._P, self._Q = self._augmented(self._fr, self._gc, self.eps)
            self._Qt = self._Q.transpose(-1, -2).contiguous()
            self._Pt = self._P.transpose(-1, -2).contiguous()

    def _products(self, w, transpose):
        lo = exp_floor(w.dtype)
        out = w.new_empty(w.shape[0], self.m if transpose else self.n)
        if self.factored:
            P, Qt, step = (self._Q, self._Pt, self.cols) if transpose else (self._P, self._Qt,
                                                                             self.rows)
            for s in range(0, P.shape[1], step):
                E = torch.bmm(P[:, s:s + step], Qt).clamp_(min=lo).exp_()
                out[:, s:s + E.shape[1]] = torch.bmm(E, w[:, :, None])[:, :, 0]
            return out
        for s, Z in self._exponents(self._fr, self._gc, self.eps, transpose):
            out[:, s:s + Z.shape[1]] = torch.bmm(Z.clamp_(min=lo).exp_(), w[:, :, None])[:, :, 0]
        return out

    def mv(self, w):
        return self._products(w, False)

    def rmv(self, w):
        return self._products(w, True)

    def lse_rows(self, h, eps):
        zero = h.new_zeros(h.shape[0], self.n)
        return self._reduce(zero, h, eps, False, lambda Z: torch.logsumexp(Z, -1))

    def lse_cols(self, h, eps):
        zero = h.new_zeros(h.shape[0], self.m)
        return self._reduce(h, zero, eps, True, lambda Z: torch.logsumexp(Z, -1))

    def cmin_rows(self, g):
        zero = g.new_zeros(g.shape[0], self.n)
        return -self._reduce(zero, g, 1.0, False, lambda Z: Z.amax(-1))

    def cmin_cols(self, f):
        zero = f.new_zeros(f.shape[0], self.m)
        return -self._reduce(f, zero, 1.0, True, lambda Z: Z.amax(-1))

    def plan_blocks(self, u, v, transpose=False):
        """Yield ``(start, block)``: rows of the plan ``diag(a u) K~ diag(b v)`` (or of its
        transpose), never stored whole. Entries at the exponent floor are set to 0."""
        f, g = self.potentials(u, v)
        r, c = torch.log(self.a) + f / self.eps, torch.log(self.b) + g / self.eps
        lo = exp_floor(self.a.dtype)
        for s, Z in self._exponents(r, c, self.eps, transpose):
            P = Z.clamp_(min=lo).exp_()
            yield s, P.masked_fill_(P < 1.5 * math.exp(lo), 0.0)
