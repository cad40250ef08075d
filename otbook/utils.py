"""Small helpers: devices and uniform weights."""

from __future__ import annotations

import torch

from ._checks import as_tensor, check_positive_int

__all__ = ["device", "uniform"]


def device() -> torch.device:
    """The device chapters should use: CUDA when available, else the CPU.

    The library itself never picks a device; only chapters and scripts call this.

    Examples
    --------
    >>> import otbook as ob
    >>> ob.device().type in {"cpu", "cuda"}
    True
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uniform(n: int, like=None) -> torch.Tensor:
    """Uniform weights ``(1/n, ..., 1/n)`` of shape ``(n,)``.

    Parameters
    ----------
    n : int
        Number of points, at least 1.
    like : Tensor or array, optional
        The weights take its dtype and device (default: torch's default dtype, on the CPU).

    Examples
    --------
    >>> import otbook as ob
    >>> ob.uniform(4)
    tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    n = check_positive_int(n, "n")
    if like is None:
        return torch.full((n,), 1.0 / n)
    ref = as_tensor(like, "like")
    return ref.new_full((n,), 1.0 / n)
