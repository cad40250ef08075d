"""Ground costs between point clouds."""

from __future__ import annotations

from typing import Callable

import torch

from ._checks import check_finite, check_pair_points

__all__ = ["cost_matrix", "COSTS"]


def _sqeuclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ||x||^2 + ||y||^2 - 2 <x, y>: one matrix product, clamped at 0 against round-off
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True).transpose(-1, -2)
    return (x2 + y2 - 2.0 * x @ y.transpose(-1, -2)).clamp_min(0.0)


def _euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # torch.cdist has a gradient of 0 (not NaN) where two points coincide
    return torch.cdist(x, y, p=2.0)


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    nx = x.norm(dim=-1, keepdim=True)
    ny = y.norm(dim=-1, keepdim=True)
    if bool((nx == 0).any()) or bool((ny == 0).any()):
        raise ValueError("the cosine cost is undefined for a zero vector in x or y")
    return 1.0 - (x / nx) @ (y / ny).transpose(-1, -2)


COSTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sqeuclidean": _sqeuclidean,
    "euclidean": _euclidean,
    "cosine": _cosine,
}


def cost_matrix(x, y, cost: str | Callable = "sqeuclidean") -> torch.Tensor:
    r"""Matrix of pairwise costs ``C[..., i, j] = c(x[..., i, :], y[..., j, :])``.

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d) or (n,)
        Source points (a 1-D input is read as ``n`` points on the line).
    y : Tensor or array, shape (..., m, d) or (m,)
        Target points; leading dimensions broadcast against those of ``x``.
    cost : {"sqeuclidean", "euclidean", "cosine"} or callable
        ``"sqeuclidean"`` is :math:`\|x - y\|^2` (no factor 1/2), ``"euclidean"`` is
        :math:`\|x - y\|`, ``"cosine"`` is :math:`1 - \cos(x, y)`. A callable takes the two
        point tensors and returns the ``(..., n, m)`` matrix.

    Returns
    -------
    Tensor, shape (..., n, m)
        On the inputs' device and dtype; differentiable in ``x`` and ``y``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.cost_matrix(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]]))
    tensor([[9.],
            [4.]])
    """
    x, y = check_pair_points(x, y)
    if callable(cost):
        C = cost(x, y)
        if not isinstance(C, torch.Tensor):
            raise TypeError(f"the cost callable must return a torch.Tensor, got {type(C).__name__}")
        return check_finite(C, "cost(x, y)")
    if not isinstance(cost, str):
        raise TypeError(f"cost must be a string or a callable, got {type(cost).__name__}")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {sorted(COSTS)} or a callable, got {cost!r}")
    return COSTS[cost](x, y)
