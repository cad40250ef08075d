"""Shared test helpers: seeded generators, standard point clouds and problems, bad-input tables.

Test files import from here (``from helpers import gen, cloud, F64``); ``conftest.py`` puts this
folder on the path.
"""

from __future__ import annotations

import pytest
import torch

import otbook as ob

F64 = torch.float64
F32 = torch.float32


def gen(seed: int = 0, device="cpu") -> torch.Generator:
    """A seeded ``torch.Generator``."""
    return torch.Generator(device=device).manual_seed(seed)


def cloud(n: int, d: int = 2, seed: int = 0, dtype=F64, device="cpu", shift=0.0, scale=1.0):
    """``n`` standard normal points in ``d`` dimensions, scaled and shifted."""
    x = torch.randn(n, d, generator=gen(seed), dtype=dtype)
    return (scale * x + shift).to(device)


def clusters(n: int, k: int = 5, d: int = 2, seed: int = 0, spread: float = 0.15, dtype=F64):
    """``n`` points in ``k`` well-separated clusters (a slow, block-structured OT problem), with
    unequal cluster weights."""
    g = gen(seed)
    centres = 3.0 * torch.randn(k, d, generator=g, dtype=dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g, dtype=dtype), labels


def weights(n: int, seed: int = 0, dtype=F64, device="cpu"):
    """Random positive weights summing to one."""
    w = torch.rand(n, generator=gen(seed), dtype=dtype) + 0.1
    return (w / w.sum()).to(device)


def problem(n: int = 20, m: int = 30, d: int = 2, seed: int = 0, dtype=F64, device="cpu",
            weighted: bool = True):
    """A balanced problem ``(a, b, C, x, y)``: two clouds (the second shifted), weights summing
    to one, and their squared Euclidean cost."""
    x = cloud(n, d, seed, dtype, device)
    y = cloud(m, d, seed + 1, dtype, device, shift=0.5)
    if weighted:
        a, b = weights(n, seed + 2, dtype, device), weights(m, seed + 3, dtype, device)
    else:
        a, b = ob.uniform(n, like=x), ob.uniform(m, like=x)
    return a, b, ob.cost_matrix(x, y), x, y


def bad_inputs(cases):
    """A ``pytest.mark.parametrize`` over ``(call, exception, match)`` rows, with readable ids:
    each row is a bad input that must raise ``exception`` with a message matching ``match``."""
    ids = [match or exc.__name__ for _, exc, match in cases]
    return pytest.mark.parametrize("call, exc, match", cases, ids=ids)


def raises_clearly(call, exc, match):
    """Assert that ``call()`` raises ``exc`` (a ValueError or TypeError) matching ``match``."""
    with pytest.raises(exc, match=match):
        call()


def gaussian_sample(mean, cov, n, seed, exact_moments=False):
    """``n`` draws of N(mean, cov) in float64; with ``exact_moments``, whitened so that the
    sample mean and covariance are exactly ``(mean, cov)``."""
    z = torch.randn(n, len(mean), generator=gen(seed), dtype=F64)
    if exact_moments:
        z = z - z.mean(0)
        z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=F64))
    return torch.as_tensor(mean, dtype=F64) + z @ chol.T


def random_spd(d, seed):
    """A random symmetric positive definite d x d matrix (float64)."""
    A = torch.randn(d, d, generator=gen(seed), dtype=F64)
    return A @ A.T + 0.1 * torch.eye(d, dtype=F64)
