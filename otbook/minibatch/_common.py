"""What the bounds, the estimator and the launcher share: the choices they accept, one exact
solve between two small clouds, and the short repr of their results."""

from __future__ import annotations

from dataclasses import fields

import torch

from .._runtime import WarningSummary
from ..costs import cost_matrix
from ..exact import emd

__all__ = ["METHODS", "BUDGETED", "PARTITIONS", "COSTS_WITH_MEAN_BOUND", "solve_pair", "ShortRepr"]

METHODS = ("paired", "all_pairs", "optimal", "random", "proxy", "adaptive")
BUDGETED = ("random", "proxy", "adaptive")
PARTITIONS = ("random", "kmeans")
# costs c for which c(mean(A), mean(B)) <= OT(A, B) (Jensen: c is jointly convex)
COSTS_WITH_MEAN_BOUND = ("sqeuclidean", "euclidean")


def solve_pair(xs, ys, ws, vs, cost, summary: WarningSummary):
    """Exact OT between two small weighted clouds: value, potentials, converged.

    Its warnings go to ``summary``: the caller reports one for all solves, from the
    ``converged`` flags that every rank agrees on."""
    with summary:
        res = emd(ws, vs, cost_matrix(xs, ys, cost))
    return res.value.detach(), res.f, res.g, bool(res.converged)


class ShortRepr:
    """A one-line repr for a result dataclass: numbers for scalar tensors, shapes for the rest,
    lengths for lists; ``extra`` left out."""

    def __repr__(self) -> str:
        def show(t):
            if isinstance(t, torch.Tensor):
                return f"{t.item():.6g}" if t.numel() == 1 else f"Tensor{tuple(t.shape)}"
            if isinstance(t, list):
                return f"[{len(t)} items]"
            return repr(t)

        parts = [f"{f.name}={show(getattr(self, f.name))}" for f in fields(self)
                 if f.name != "extra"]
        return f"{type(self).__name__}(" + ", ".join(parts) + ")"
