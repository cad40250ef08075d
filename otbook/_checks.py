"""Every input check of the library, in one place.

Each helper converts what it is given to a ``torch.Tensor`` (NumPy arrays, lists and scalars are
accepted) and raises a ``ValueError`` or ``TypeError`` whose message names the offending argument.
Solvers call these first, so that a bad input never turns into a NaN or a silently wrong answer.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "check_points",
    "check_pair_points",
    "check_paired",
    "check_clouds",
    "check_weights",
    "check_cost",
    "check_eps",
    "check_positive",
    "check_same_mass",
    "check_finite",
    "check_covariance",
    "check_potential",
    "check_positive_int",
    "check_plan",
    "check_labels",
    "check_module",
    "check_symmetric",
    "check_unit_interval",
    "check_generator",
    "check_gaussians",
    "check_int_at_most",
    "check_choice",
    "check_callable",
    "check_nonnegative",
    "check_relaxation",
    "check_codes",
    "broadcast_shapes",
    "check_scaling",
    "check_at_least",
    "check_latlon",
    "check_simplex",
]


def _describe(x) -> str:
    return type(x).__name__


def as_tensor(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` as a floating-point tensor.

    Torch tensors keep their dtype and device (integer tensors become the default float dtype).
    NumPy arrays, lists and scalars take the dtype and device of ``like`` when given, else
    float64 for NumPy float64 data and the default dtype otherwise.
    """
    if isinstance(x, torch.Tensor):
        t = x
        if like is not None and t.device != like.device:
            raise ValueError(
                f"{name} is on device {t.device} but the other inputs are on {like.device}; "
                "move them to one device first"
            )
    elif isinstance(x, (np.ndarray, list, tuple, numbers.Number, np.generic)):
        arr = np.asarray(x)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise TypeError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
        if like is not None:
            return torch.as_tensor(arr, dtype=like.dtype, device=like.device)
        t = torch.as_tensor(arr)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a NumPy array, got {_describe(x)}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if t.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} has dtype {t.dtype}: otbook computes in float32 or float64 (half "
                        "precision loses the digits that Sinkhorn's exponentials and the "
                        f"eigensolvers need); convert it first, e.g. {name}.float()")
    if not t.is_floating_point():
        t = t.to(like.dtype if like is not None else torch.get_default_dtype())
    return t


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise a ``ValueError`` if ``t`` holds NaN or inf."""
    # fast path: one reduction; only a non-finite sum (NaN, inf, or overflow) needs a full look
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {bad} values")
    return t


def check_points(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Point cloud of shape ``(..., n, d)``; a 1-D input ``(n,)`` is read as ``n`` points in 1-D."""
    t = as_tensor(x, name, like)
    if t.ndim == 0:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got a scalar")
    if t.ndim == 1:
        t = t[:, None]
    if t.shape[-2] == 0:
        raise ValueError(f"{name} is empty: it has no points")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} has points of dimension 0")
    return check_finite(t, name)


def check_pair_points(x, y, names=("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two point clouds with the same dtype, device and feature dimension."""
    nx, ny = names
    if isinstance(y, torch.Tensor) and not isinstance(x, torch.Tensor):
        y = check_points(y, ny)
        x = check_points(x, nx, like=y)
    else:
        x = check_points(x, nx)
        y = check_points(y, ny, like=x if not isinstance(y, torch.Tensor) else None)
    if x.dtype != y.dtype:
        raise TypeError(f"{nx} has dtype {x.dtype} but {ny} has dtype {y.dtype}; use one dtype")
    if x.device != y.device:
        raise ValueError(f"{nx} is on {x.device} but {ny} is on {y.device}; use one device")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{nx} and {ny} must have the same feature dimension, got {x.shape[-1]} and {y.shape[-1]}"
        )
    return x, y


def check_paired(x, y, names=("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two point clouds paired row by row: :func:`check_pair_points` and the same shape."""
    x, y = check_pair_points(x, y, names)
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (one row per pair), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def check_clouds(x, y, names=("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two point clouds of shapes ``(n, d)`` and ``(m, d)``: no batch dimensions."""
    x, y = check_pair_points(x, y, names)
    for t, name in zip((x, y), names):
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (n, d), got {tuple(t.shape)}")
    return x, y


def check_weights(w, n: int, name: str, like: torch.Tensor, batch_shape=()) -> torch.Tensor:
    """Non-negative, finite weights of length ``n`` (``None`` means uniform), cast like ``like``.

    ``w`` may carry leading batch dimensions that broadcast against ``batch_shape``.
    """
    if w is None:
        return like.new_full((*batch_shape, n), 1.0 / n)
    if isinstance(w, torch.Tensor):
        if w.device != like.device:
            raise ValueError(f"{name} is on {w.device} but the other inputs are on {like.device}")
        t = as_tensor(w, name).to(like.dtype)
    else:
        t = as_tensor(w, name, like=like)
    if t.ndim == 0:
        raise ValueError(f"{name} must be a vector of {n} weights, got a scalar")
    if t.shape[-1] != n:
        raise ValueError(f"{name} has {t.shape[-1]} weights but there are {n} points")
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ValueError(f"{name} has negative weights")
    if bool((t.sum(-1) <= 0).any()):
        raise ValueError(f"{name} has zero total mass")
    return t


def check_cost(C, name: str = "C", like: torch.Tensor | None = None) -> torch.Tensor:
    """Cost matrix of shape ``(..., n, m)`` without NaN or inf."""
    t = as_tensor(C, name, like)
    if t.ndim < 2:
        raise ValueError(f"{name} must be a matrix of shape (n, m), got shape {tuple(t.shape)}")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    return check_finite(t, name)


def check_positive(value, name: str, allow_none: bool = False):
    """A finite real number > 0 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {_describe(value)}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_at_least(value, name: str, minimum: float) -> float:
    """A finite real number (NumPy scalars and one-element tensors included) ``>= minimum``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number >= {minimum:g}, got {_describe(value)}")
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value}")
    return float(value)


def check_eps(eps) -> float:
    """Entropic regularisation strength: a finite number > 0."""
    return check_positive(eps, "eps")


def check_same_mass(a: torch.Tensor, b: torch.Tensor, names=("a", "b"), rtol: float = 1e-6):
    """Balanced problems need ``a.sum() == b.sum()``, to ``rtol``: a relative difference below
    1e-6 (float32's round-off on a sum) is taken for round-off, in every dtype (float32 data
    often reaches a float64 solver), and the solvers then make the masses equal exactly."""
    sa, sb = a.sum(-1), b.sum(-1)
    tol = rtol * torch.maximum(sa.abs(), sb.abs()) + 10 * torch.finfo(a.dtype).eps
    if bool(((sa - sb).abs() > tol).any()):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same total mass for a balanced problem, "
            f"got {float(sa.flatten()[0]):.6g} and {float(sb.flatten()[0]):.6g}; normalise them "
            "or use an unbalanced solver"
        )


def check_covariance(S, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric positive semi-definite matrix (batched over leading dims)."""
    t = as_tensor(S, name, like)
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(t.shape)}")
    check_finite(t, name)
    scale = t.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    if bool(((t - t.transpose(-1, -2)).abs() > 1e-6 * scale).any()):
        raise ValueError(f"{name} must be symmetric")
    evals = torch.linalg.eigvalsh(t)
    tol = 1e-7 if t.dtype == torch.float64 else 1e-5
    if bool((evals < -tol * scale[..., 0]).any()):
        raise ValueError(
            f"{name} must be positive semi-definite; its smallest eigenvalue is {float(evals.min()):.3g}"
        )
    return t


def check_gaussians(m1, S1, m2, S2):
    """Two Gaussians ``N(m1, S1)``, ``N(m2, S2)``: means and covariances of one dimension and
    dtype (batched over leading dims)."""
    S1 = check_covariance(S1, "S1")
    m1 = check_finite(as_tensor(m1, "m1", like=S1), "m1")
    m2 = check_finite(as_tensor(m2, "m2", like=S1), "m2")
    S2 = check_covariance(S2, "S2", like=S1)
    if S1.dtype != S2.dtype:
        raise TypeError(f"S1 has dtype {S1.dtype} but S2 has dtype {S2.dtype}")
    d = S1.shape[-1]
    for name, t in (("m1", m1), ("m2", m2)):
        if t.ndim == 0 or t.shape[-1] != d:
            raise ValueError(f"{name} must be a vector of length {d} (the covariances are {d} x {d})")
    if S2.shape[-1] != d:
        raise ValueError(f"S1 is {d} x {d} but S2 is {S2.shape[-1]} x {S2.shape[-1]}")
    return m1.to(S1.dtype), S1, m2.to(S1.dtype), S2.to(S1.dtype)


def check_potential(t, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A dual potential of length ``n`` (finite), cast to the dtype and device of ``like``."""
    if isinstance(t, torch.Tensor) and t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {like.device}")
    t = as_tensor(t, name, like=None if isinstance(t, torch.Tensor) else like).to(like.dtype)
    if t.ndim == 0 or t.shape[-1] != n:
        raise ValueError(f"{name} must have length {n}, got shape {tuple(t.shape)}")
    return check_finite(t, name)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An integer (not a bool) at least ``minimum``: step counts, batch sizes, layer widths."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_plan(P, name: str = "plan", like: torch.Tensor | None = None,
               matrix: bool = False) -> torch.Tensor:
    """A coupling of shape ``(..., n, m)`` (``(n, m)`` when ``matrix``): finite, non-negative,
    not empty."""
    t = check_cost(P, name, like)  # shape, emptiness and finiteness, with the same messages
    if matrix and t.ndim != 2:
        raise ValueError(f"{name} must be a matrix (n, m), got shape {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise ValueError(f"{name} has negative entries; a transport plan is non-negative")
    return t


def check_labels(labels, n: int, name: str = "labels", n_classes: int | None = None):
    """Integer class labels of length ``n`` in ``0 .. n_classes - 1``, as a ``long`` tensor.

    Returns the labels and the number of classes (``max + 1`` when ``n_classes`` is ``None``).
    """
    if isinstance(labels, torch.Tensor):
        t = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must hold integers, got an array of dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class labels, got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if n and bool((t < 0).any()):
        raise ValueError(f"{name} has negative entries; classes are numbered 0, 1, ...")
    top = int(t.max()) + 1 if n else 0
    if n_classes is None:
        n_classes = top
    n_classes = check_positive_int(n_classes, "n_classes")
    if top > n_classes:
        raise ValueError(f"{name} has class {top - 1} but n_classes is {n_classes}")
    return t.long(), n_classes


def check_module(model, name: str, like: torch.Tensor) -> None:
    """A torch module whose parameters have the dtype and device of ``like``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {_describe(model)}")
    for p in model.parameters():
        if p.device != like.device:
            raise ValueError(f"{name} has parameters on {p.device} but the data is on {like.device}; "
                             f"move one of them (for instance {name}.to(x.device))")
        if p.dtype != like.dtype:
            raise TypeError(f"{name} has parameters of dtype {p.dtype} but the data has dtype "
                            f"{like.dtype}; use one dtype (for instance {name}.to(x.dtype))")


def check_symmetric(C, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A square, symmetric, finite matrix of shape ``(..., n, n)`` (a distance or similarity matrix).

    Symmetry is checked to a relative tolerance (1e-6 of the largest entry, 1e-4 in float32 and
    lower precisions).
    """
    t = check_cost(C, name, like)
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be a square matrix (n, n), got shape {tuple(t.shape)}")
    rtol = 1e-6 if t.dtype == torch.float64 else 1e-4
    scale = t.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    if bool(((t - t.transpose(-1, -2)).abs() > rtol * scale).any()):
        raise ValueError(f"{name} must be symmetric ({name}[i, k] == {name}[k, i])")
    return t


def check_unit_interval(value, name: str) -> float:
    """A real number in ``[0, 1]`` (a mixing weight)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {_describe(value)}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def check_generator(generator, name: str = "generator"):
    """``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {_describe(generator)}")
    return generator


def check_int_at_most(value, name: str, maximum: int, why: str, minimum: int = 1) -> int:
    """An integer in ``[minimum, maximum]``; ``why`` says what the maximum is (a data size)."""
    value = check_positive_int(value, name, minimum)
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum} ({why}), got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """One of the strings in ``choices`` (a method or strategy name)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(choices)}, got {_describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_callable(fn, name: str):
    """A callable (a function, a module, an energy)."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {_describe(fn)}")
    return fn


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0 (a tolerance where 0 switches a test off)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {_describe(value)}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_relaxation(omega, name: str = "omega"):
    """An over-relaxation factor: ``"auto"`` or a real number in (0, 2)."""
    if isinstance(omega, str):
        if omega != "auto":
            raise ValueError(f"{name} must be 'auto' or a number in (0, 2), got {omega!r}")
        return omega
    if isinstance(omega, torch.Tensor) and omega.numel() == 1:
        omega = omega.item()
    if isinstance(omega, bool) or not isinstance(omega, numbers.Real):
        raise TypeError(f"{name} must be 'auto' or a number in (0, 2), got {_describe(omega)}")
    if not (np.isfinite(omega) and 0.0 < float(omega) < 2.0):
        raise ValueError(f"{name} must be in (0, 2) (Sinkhorn diverges outside), got {omega}")
    return float(omega)


def check_codes(codes, name: str):
    """Integer codes (class labels, table indices) as a tensor: tensors pass through, lists and
    arrays are converted; floating-point values are an error."""
    t = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer codes, got dtype {t.dtype}")
    return t


def broadcast_shapes(*shapes, what: str = "batch dimensions") -> torch.Size:
    """The broadcast of ``shapes`` (NumPy's rule), or a ``ValueError`` naming ``what`` failed.

    Pure Python: ``torch.broadcast_shapes`` imports sympy on its first non-trivial call (half a
    second, on the first solve of a process)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for k, d in enumerate(s, start=ndim - len(s)):
            if d != 1:
                if out[k] not in (1, d):
                    raise ValueError(f"the {what} {[tuple(s) for s in shapes]} do not broadcast "
                                     "against each other")
                out[k] = d
    return torch.Size(out)


def check_scaling(value, name: str = "eps_scaling"):
    """An eps-scaling factor: ``None`` (no annealing) or a number in (0, 1)."""
    if value is None:
        return None
    value = check_positive(value, name)
    if value >= 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def check_simplex(weights, name: str, size: int, atol: float = 1e-6) -> list[float]:
    """``size`` non-negative finite numbers summing to 1 (to ``atol``): a point of the simplex,
    such as the weights of a convex combination of costs."""
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().tolist()
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"{name} must be a sequence of {size} numbers, got {_describe(weights)}")
    if len(weights) != size:
        raise ValueError(f"{name} must have {size} entries, got {len(weights)}")
    values = [check_nonnegative(w, f"{name}[{k}]") for k, w in enumerate(weights)]
    if abs(sum(values) - 1.0) > atol:
        raise ValueError(f"{name} must lie on the simplex (sum to 1), got sum {sum(values):.6g}")
    return values


def check_latlon(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """(latitude, longitude) pairs in degrees, shape ``(..., n, 2)``, latitudes in [-90, 90]."""
    t = check_points(x, name, like)
    if t.shape[-1] != 2:
        raise ValueError(f"{name} must hold (latitude, longitude) pairs in degrees, shape (n, 2); "
                         f"got shape {tuple(t.shape)}")
    worst = float(t[..., 0].abs().max())
    if worst > 90:
        raise ValueError(f"{name} has latitudes outside [-90, 90] degrees (up to {worst:.6g} in "
                         "absolute value); the columns are (latitude, longitude)")
    return t
