"""The size of ``eps``: relative to a cost's scale, and geometric schedules (eps-scaling)."""

from __future__ import annotations

import math

from .._checks import check_cost, check_positive

__all__ = ["eps_relative", "eps_schedule"]

#: The longest eps-scaling schedule: a schedule is meant to take tens of levels, not millions.
MAX_LEVELS = 10_000


def eps_relative(C, rel: float = 0.05, stat: str = "mean") -> float:
    """An absolute ``eps`` set relative to the scale of a cost matrix.

    Parameters
    ----------
    C : Tensor or array, shape (..., n, m)
        Cost matrix.
    rel : float
        The fraction (``0.05`` gives 5 % of the scale).
    stat : {"mean", "max", "median"}
        Which statistic of ``C`` defines its scale.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.eps_relative(torch.tensor([[0.0, 2.0], [2.0, 0.0]]), rel=0.1)
    0.1
    """
    C = check_cost(C, "C")
    rel = check_positive(rel, "rel")
    stats = {"mean": C.mean, "max": C.max, "median": C.median}
    if stat not in stats:
        raise ValueError(f"stat must be one of {sorted(stats)}, got {stat!r}")
    scale = float(stats[stat]())
    if scale <= 0:
        raise ValueError(f"the {stat} of C is {scale}, so no eps can be relative to it")
    return rel * scale


def eps_schedule(eps_start: float, eps_end: float, scaling: float = 0.5, *,
                 name: str = "scaling") -> list[float]:
    """Geometric ``eps``-scaling schedule from ``eps_start`` down to ``eps_end`` (both included).

    ``name`` is how error messages call ``scaling`` (``sinkhorn`` passes ``"eps_scaling"``).

    Examples
    --------
    >>> import otbook as ob
    >>> ob.eps_schedule(1.0, 0.1, scaling=0.5)
    [1.0, 0.5, 0.25, 0.125, 0.1]
    """
    eps_start = check_positive(eps_start, "eps_start")
    eps_end = check_positive(eps_end, "eps_end")
    scaling = check_positive(scaling, name)
    if scaling >= 1:
        raise ValueError(f"{name} must be in (0, 1), got {scaling}")
    if eps_start <= eps_end:
        return [eps_end]
    n_steps = int(math.floor(math.log(eps_end / eps_start) / math.log(scaling) + 1e-9))
    if n_steps > MAX_LEVELS:
        raise ValueError(f"the schedule from eps_start={eps_start:g} to eps_end={eps_end:g} by "
                         f"scaling={scaling} has {n_steps} levels (at most {MAX_LEVELS}); use a "
                         "smaller scaling")
    levels = [eps_start * scaling**k for k in range(n_steps + 1)]
    if levels[-1] > eps_end * (1 + 1e-12):
        levels.append(eps_end)
    else:
        levels[-1] = eps_end
    return levels
