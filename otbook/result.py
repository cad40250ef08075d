"""The result object every OT solver returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

__all__ = ["OTResult"]


@dataclass
class OTResult:
    """What an OT solver found, and whether it can be trusted.

    Attributes
    ----------
    plan : Tensor, shape (..., n, m)
        The coupling (transport plan).
    value : Tensor, shape (...)
        The objective the solver minimised. For exact OT this equals ``value_linear``; for
        entropic problems it is ``<plan, C> + eps KL(plan | a x b)`` (plus the marginal
        penalties for unbalanced problems).
    value_linear : Tensor, shape (...)
        The transport cost ``<plan, C>`` (what POT's ``emd2`` and ``sinkhorn2`` return).
    f, g : Tensor, shapes (..., n) and (..., m)
        Dual potentials.
    n_iter : int
        Iterations the solver used (the largest over a batch).
    converged : bool or Tensor of bool
        Whether the stopping criterion was met (per problem for batched solves).
    marginal_error : Tensor, shape (...)
        ``||plan 1 - a||_1 + ||plan^T 1 - b||_1`` at the returned plan.
    extra : dict
        Solver-specific diagnostics.
    """

    plan: torch.Tensor
    value: torch.Tensor
    value_linear: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    n_iter: int
    converged: bool | torch.Tensor
    marginal_error: torch.Tensor
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short, readable in a notebook
        def show(t):
            if isinstance(t, torch.Tensor):
                if t.numel() == 1:
                    return f"{t.item():.6g}"
                return f"Tensor{tuple(t.shape)}"
            return repr(t)

        parts = [f"{f.name}={show(getattr(self, f.name))}" for f in fields(self) if f.name != "extra"]
        return "OTResult(" + ", ".join(parts) + ")"
