"""What the library's training loops share: one optimiser step on a network, and the rule that
says a loss curve has flattened (the loops' convergence test).

Used by :func:`otbook.fit_map` (mini-batch training of a map) and :func:`otbook.jko_icnn` (the
full-batch training inside each JKO step).
"""

from __future__ import annotations

import torch

from .icnn import ICNN

__all__ = [
    "optimizer_step",
    "loss_window",
    "loss_flattened",
    "FULL_BATCH_WINDOW",
    "MINI_BATCH_WINDOW",
]


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   loss: torch.Tensor) -> None:
    """Back-propagate ``loss`` and take one optimiser step. An :class:`~otbook.ICNN` then has its
    non-negative weights clipped at zero (:meth:`~otbook.ICNN.project_`), so no weight sits below
    zero where the forward pass's clamp would give it no gradient."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if isinstance(model, ICNN):
        model.project_()


#: The flattening test compares means over windows of a tenth of the curve, and at least:
#: 2 steps for a full-batch training (:func:`otbook.jko_icnn`: its loss is smooth, and an inner
#: training may be short), 5 for a mini-batch one (:func:`otbook.fit_map`: each step sees new
#: batches, and a mean over fewer steps mostly measures the batches' noise).
FULL_BATCH_WINDOW = 2
MINI_BATCH_WINDOW = 5


def loss_window(n_steps: int, minimum: int) -> int:
    """The window of the flattening test for a curve of ``n_steps`` losses: a tenth of it, and
    at least ``minimum`` steps (:data:`FULL_BATCH_WINDOW` or :data:`MINI_BATCH_WINDOW`)."""
    return max(minimum, n_steps // 10)


def loss_flattened(losses: torch.Tensor, rtol: float, window: int) -> bool:
    """Whether a loss curve has flattened.

    With ``first``, ``before`` and ``last`` the means of the first ``window`` losses, of the
    ``window`` before the last ones and of the last ``window``: the curve has flattened when its
    last window fell from the one before by at most ``rtol`` times its total fall,
    ``before - last <= rtol * max(first - last, 0)`` (plus 1e-12 relative, room for round-off
    when a curve is exactly flat). A curve shorter than two windows has not (too short to tell).
    """
    n = losses.numel()
    if n < 2 * window:
        return False
    first = float(losses[:window].mean())
    before = float(losses[-2 * window:-window].mean())
    last = float(losses[-window:].mean())
    return before - last <= rtol * max(first - last, 0.0) + 1e-12 * max(1.0, abs(first))
