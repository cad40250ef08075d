"""Hostile and awkward inputs, one table across the public functions.

Every public function that takes point clouds and weights is called on a valid problem changed
one way at a time (a *class* of input). For each (function, class) pair the answer is either a
clear ``ValueError``/``TypeError`` whose message names what was wrong, or the right value: the
value of the unchanged problem (NumPy arrays, lists, non-contiguous tensors, inputs that require
gradients, raw-count weights), or of the same points in float64 (float32 data far from the
origin). Nothing returns NaN, crashes, or answers wrongly without a word.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import otbook as ob
from helpers import F64, cloud, gen, weights

N, M = 12, 10
LABELS_X = torch.arange(N) % 3
LABELS_Y = torch.arange(M) % 2


def _value(r):
    return r.value if hasattr(r, "value") else r


FUNCTIONS = {
    "cost_matrix": lambda x, y, a, b: ob.cost_matrix(x, y),
    "emd": lambda x, y, a, b: ob.emd(a, b, ob.cost_matrix(x, y)).value,
    "sinkhorn": lambda x, y, a, b: ob.sinkhorn(a, b, ob.cost_matrix(x, y), 1.0).value_linear,
    "sinkhorn online": lambda x, y, a, b: ob.sinkhorn(
        a, b, ob.PointCloud(x, y), 1.0, backend="online", memory_budget=400).value_linear,
    "sinkhorn_divergence": lambda x, y, a, b: ob.sinkhorn_divergence(x, y, 1.0, a=a, b=b),
    "sinkhorn_divergence online": lambda x, y, a, b: ob.sinkhorn_divergence(
        x, y, 1.0, a=a, b=b, backend="online", memory_budget=400),
    "wasserstein_1d": lambda x, y, a, b: ob.wasserstein_1d(_col(x), _col(y), a, b),
    "sliced_wasserstein": lambda x, y, a, b: ob.sliced_wasserstein(
        x, y, n_projections=8, a=a, b=b, generator=gen(0)),
    "mmd": lambda x, y, a, b: ob.mmd(x, y, a=a, b=b),
    "dataset_distance": lambda x, y, a, b: ob.dataset_distance(
        x, LABELS_X, y, LABELS_Y, eps=1.0, a=a, b=b).value,
    "gromov_wasserstein": lambda x, y, a, b: ob.gromov_wasserstein(
        ob.cost_matrix(x, x), ob.cost_matrix(y, y), a, b, eps=1.0).value,
    "minibatch_bounds": lambda x, y, a, b: ob.minibatch_bounds(
        x, y, a=a, b=b, batch_size=4, generator=gen(0)).upper,
}
# functions whose value is a linear function of the weights' scale (exact OT): raw counts
LINEAR_IN_MASS = {"emd", "wasserstein_1d", "sinkhorn", "sinkhorn online"}
# functions that take no weights
NO_WEIGHTS = {"cost_matrix"}


def _col(t):
    """The first coordinate of a cloud, whatever it was given as."""
    if isinstance(t, torch.Tensor):
        return t[:, 0]
    return np.asarray(t)[:, 0]


def _base():
    x, y = cloud(N, 2, 1), cloud(M, 2, 2, shift=0.5)
    return x, y, weights(N, 3), weights(M, 4)


def _nan_at(t, value):
    t = t.clone()
    t[0, 0] = value
    return t


# (name, transform of (x, y, a, b), expected): expected is ("same",), ("close", rtol),
# ("scaled", factor) or (exception, message regex)
CLASSES = [
    ("numpy", lambda x, y, a, b: (x.numpy(), y.numpy(), a.numpy(), b.numpy()), ("same",)),
    ("lists", lambda x, y, a, b: (x.tolist(), y.tolist(), a.tolist(), b.tolist()), ("same",)),
    ("non-contiguous", lambda x, y, a, b: (x.T.contiguous().T, y.T.contiguous().T,
                                            a[None].expand(2, -1)[0], b), ("same",)),
    ("requires_grad", lambda x, y, a, b: (x.clone().requires_grad_(), y, a, b), ("same",)),
    ("float32 far from the origin", lambda x, y, a, b: ((x + 1e4).float(), (y + 1e4).float(),
                                                        a.float(), b.float()), ("close", 2e-3)),
    ("raw counts", lambda x, y, a, b: (x, y, a * 1e9, b * 1e9), ("scaled", 1e9)),
    ("tiny masses", lambda x, y, a, b: (x, y, a * 1e-200, b * 1e-200), ("scaled", 1e-200)),
    ("float16", lambda x, y, a, b: (x.half(), y.half(), a, b), (TypeError, "float16")),
    ("bfloat16", lambda x, y, a, b: (x.bfloat16(), y, a, b), (TypeError, "bfloat16")),
    ("NaN", lambda x, y, a, b: (_nan_at(x, float("nan")), y, a, b), (ValueError, "NaN")),
    ("inf", lambda x, y, a, b: (x, _nan_at(y, float("inf")), a, b), (ValueError, "inf")),
    ("empty", lambda x, y, a, b: (x[:0], y, a[:0], b), (ValueError, "empty")),
    ("negative weight", lambda x, y, a, b: (x, y, a * torch.tensor([-1.0] + [1.0] * (N - 1),
                                                                   dtype=F64), b),
     (ValueError, "negative")),
    ("unequal masses", lambda x, y, a, b: (x, y, a, 2 * b), (ValueError, "same total mass")),
    ("weights of the wrong length", lambda x, y, a, b: (x, y, a[:-1], b),
     (ValueError, "weights but there are")),
    ("feature dimensions differ", lambda x, y, a, b: (x, torch.cat([y, y[:, :1]], 1), a, b),
     (ValueError, "feature dimension")),
    ("dtypes differ", lambda x, y, a, b: (x.float(), y, a, b), (TypeError, "dtype")),
    ("points too large", lambda x, y, a, b: (x * 1e200, y * 1e200, a, b),
     (ValueError, "rescale|overflow|too large|inf")),
]

SKIP = {
    # the 1-D distance only sees the first coordinate; dimension mismatches cannot arise
    ("wasserstein_1d", "feature dimensions differ"),
    # the maximum mean discrepancy accepts measures of different masses (its kernels, but the
    # energy distance's, are positive definite)
    ("mmd", "unequal masses"),
    # Gromov-Wasserstein compares spaces of different dimensions by design
    ("gromov_wasserstein", "feature dimensions differ"),
}


def _cases():
    for fname in FUNCTIONS:
        for cname, _, expected in CLASSES:
            weighted = cname in ("raw counts", "tiny masses", "negative weight",
                                 "unequal masses", "weights of the wrong length")
            if fname in NO_WEIGHTS and weighted:
                continue
            if cname in ("raw counts", "tiny masses") and fname not in LINEAR_IN_MASS:
                continue
            if (fname, cname) in SKIP:
                continue
            yield pytest.param(fname, cname, id=f"{fname}-{cname}")


@pytest.mark.parametrize("fname, cname", list(_cases()))
def test_hostile_input(fname, cname):
    fn = FUNCTIONS[fname]
    transform, expected = {c: (t, e) for c, t, e in CLASSES}[cname]
    x, y, a, b = _base()
    args = transform(x, y, a, b)
    if isinstance(expected[0], type):
        with pytest.raises(expected[0], match=expected[1]):
            fn(*args)
        return
    reference = fn(x, y, a, b)
    if expected[0] == "close":  # the same points, in float64
        xf, yf = (torch.as_tensor(args[0]).double(), torch.as_tensor(args[1]).double())
        reference = fn(xf, yf, a, b)
    got = torch.as_tensor(fn(*args))
    assert torch.isfinite(got).all()
    reference = torch.as_tensor(reference).to(got)
    if expected[0] == "same":
        torch.testing.assert_close(got, reference, atol=1e-9, rtol=1e-9)
    elif expected[0] == "close":
        torch.testing.assert_close(got, reference, atol=1e-6, rtol=expected[1])
    else:
        torch.testing.assert_close(got / expected[1], reference, atol=1e-9, rtol=1e-7)
    if cname == "requires_grad" and got.requires_grad:
        (grad,) = torch.autograd.grad(got.sum(), args[0], allow_unused=True)
        assert grad is not None and torch.isfinite(grad).all()
