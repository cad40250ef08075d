r"""Objective values of a Sinkhorn solution, and their gradients by the envelope theorem.

At the solution of

.. math::

    \min_{P \ge 0} \langle P, C\rangle + \varepsilon \mathrm{KL}(P \mid a \otimes b)
    + \rho_a \mathrm{KL}(P 1 \mid a) + \rho_b \mathrm{KL}(P^\top 1 \mid b)

the optimal value is its dual objective at the returned potentials, and its gradient needs no
back-propagation through the iterations: for the cost it is the plan, for the weights the
derivative of the dual objective at fixed potentials. :func:`ot_value` builds that value as a
differentiable tensor; for an online solution the plan is never stored, and the cost's gradient
:math:`\sum_{ij} P_{ij} \nabla C_{ij}` is accumulated block by block (:class:`PlanPairing`).
"""

from __future__ import annotations

import torch

__all__ = ["kl", "dual_terms", "primal", "ot_value", "linear_value", "PlanPairing"]


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised ``KL(p | q) = sum p log(p / q) - p + q`` over the last dim(s) given by the
    shapes (``0 log 0 = 0``); reduces the last dimension."""
    ratio = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return (ratio - p + q).sum(-1)


def dual_terms(a, b, f, g, mass, eps, rho_a, rho_b):
    """The dual objective given the plan's total mass (all terms are O(n + m))."""
    value = -eps * (mass - a.sum(-1) * b.sum(-1))
    if rho_a is None:
        value = value + (a * f).sum(-1)
    else:
        value = value - rho_a * (a * torch.expm1(-f / rho_a)).sum(-1)
    if rho_b is None:
        value = value + (b * g).sum(-1)
    else:
        value = value - rho_b * (b * torch.expm1(-g / rho_b)).sum(-1)
    return value


def primal(a, b, f, g, eps, rho_a, rho_b, pa, pb):
    """The primal objective of the plan ``P = a b exp((f + g - C) / eps)``, in O(n + m) from its
    marginals ``pa, pb``, using ``eps sum P log(P / ab) = <P 1, f> + <P^T 1, g> - <P, C>``."""
    value = (pa * f).sum(-1) + (pb * g).sum(-1) - eps * (pa.sum(-1) - a.sum(-1) * b.sum(-1))
    if rho_a is not None:
        value = value + rho_a * kl(pa, a)
    if rho_b is not None:
        value = value + rho_b * kl(pb, b)
    return value


class PlanPairing(torch.autograd.Function):
    """``0`` in the forward pass; in the backward pass, the gradient of ``<P, C>`` with the plan
    ``P`` held fixed, for the tensors the cost is computed from, accumulated over blocks of rows
    of the plan (``plan_blocks()`` yields them): memory of one block, whatever ``n x m``."""

    @staticmethod
    def forward(ctx, plan_blocks, cost, batch, *tensors):
        ctx.plan_blocks, ctx.cost, ctx.batch = plan_blocks, cost, batch
        ctx.save_for_backward(*tensors)
        return tensors[0].new_zeros(torch.Size(batch).numel())

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        leaves = [t.detach().requires_grad_(nd) for t, nd in zip(saved, needs)]
        wanted = [t for t in leaves if t.requires_grad]
        total = [torch.zeros_like(t) for t in wanted]
        with torch.enable_grad():
            cost = ctx.cost.replace(leaves).broadcast(ctx.batch)
            for s, P in ctx.plan_blocks():
                Cb = cost.block(slice(s, s + P.shape[1]))
                parts = torch.autograd.grad(Cb, wanted, grad_outputs=P * grad[:, None, None],
                                            allow_unused=True)
                total = [t if p is None else t + p for t, p in zip(total, parts)]
        it = iter(total)
        return (None, None, None, *[next(it) if nd else None for nd in needs])


def ot_value(sol, cost, a, b):
    """The optimal value of the entropic problem solved in ``sol``, differentiable in the cost's
    tensors and in the weights ``a, b`` (flat, shape ``(B, n)`` and ``(B, m)``) by the envelope
    theorem. ``cost`` is the flat cost *with* its autograd history."""
    f, g = sol.f.detach(), sol.g.detach()
    # sum_j b_j E_ij and sum_i a_i E_ij, E = exp((f + g - C) / eps): the derivatives of the mass
    rows, cols = sol.row_density, sol.col_density
    mass = (sol.a * rows).sum(-1)  # = sum_ij a_i b_j E_ij
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        # mass is bilinear in (a, b): its linearisation at the solved weights is exact there
        mass = (a * rows).sum(-1) + (b * cols).sum(-1) - mass
    value = dual_terms(a, b, f, g, mass, sol.eps, sol.rho_a, sol.rho_b)
    if torch.is_grad_enabled() and cost.requires_grad:
        value = value + _pairing(sol, cost)
    return value


def linear_value(sol, cost):
    """``<P, C>`` per problem, differentiable in the cost's tensors with the plan held fixed
    (the convention of POT's ``sinkhorn2``)."""
    if sol.plan is not None:
        C = cost.block(slice(0, cost.n))
        P = sol.plan
        B, n, m = P.shape
        # a batched dot product: no n x m temporary
        value = torch.bmm(P.reshape(B, 1, n * m), C.detach().reshape(B, n * m, 1))[:, 0, 0]
        if torch.is_grad_enabled() and cost.requires_grad:
            value = value + (P * (C - C.detach())).sum((-2, -1))
        return value
    with torch.no_grad():
        flat = cost.detach()
        value = sol.a.new_zeros(sol.a.shape[0])
        for s, P in sol.plan_blocks():
            value += (P * flat.block(slice(s, s + P.shape[1]))).sum((-2, -1))
    if torch.is_grad_enabled() and cost.requires_grad:
        value = value + _pairing(sol, cost)
    return value


def _pairing(sol, cost):
    if sol.plan is not None:
        C = cost.block(slice(0, cost.n))
        return (sol.plan.detach() * (C - C.detach())).sum((-2, -1))
    return PlanPairing.apply(sol.plan_blocks, cost.detach(), cost.batch_shape, *cost.tensors())
