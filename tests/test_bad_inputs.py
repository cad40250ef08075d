"""Every bad-input class raises a clear ValueError / TypeError naming the argument."""

import numpy as np
import pytest
import torch

import otbook as ob

C = torch.rand(3, 4, dtype=torch.float64)
A = torch.full((3,), 1 / 3, dtype=torch.float64)
B = torch.full((4,), 1 / 4, dtype=torch.float64)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ob.emd(A, B[:3], C), ValueError, "b has 3 weights"),
        (lambda: ob.emd(-A, B, C), ValueError, "a has negative"),
        (lambda: ob.emd(torch.tensor([np.nan, 0.5, 0.5]), B, C), ValueError, "a contains NaN"),
        (lambda: ob.emd(torch.tensor([np.inf, 0.5, 0.5]), B, C), ValueError, "a contains inf"),
        (lambda: ob.emd(A, 2 * B, C), ValueError, "same total mass"),
        (lambda: ob.emd(A, B, C.masked_fill(C > 0.5, np.nan)), ValueError, "C contains NaN"),
        (lambda: ob.emd(A, B, torch.rand(3)), ValueError, "C must be a matrix"),
        (lambda: ob.emd(None, None, torch.zeros(0, 4)), ValueError, "C is empty"),
        (lambda: ob.emd(A, B, "C"), TypeError, "C must be"),
        (lambda: ob.emd(A, B, C, max_iter=0), ValueError, "max_iter"),
        (lambda: ob.emd(torch.zeros(3, dtype=torch.float64), B, C), ValueError, "a has zero total mass"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 3)), ValueError, "feature dimension"),
        (lambda: ob.cost_matrix(torch.rand(0, 2), torch.rand(4, 2)), ValueError, "x is empty"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.tensor([[np.nan, 1.0]])), ValueError, "y contains NaN"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 2, dtype=torch.float64)), TypeError, "dtype"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 2), cost="l7"), ValueError, "cost must be one of"),
        (lambda: ob.cost_matrix(torch.zeros(3, 2), torch.rand(4, 2), cost="cosine"), ValueError, "zero vector"),
        (lambda: ob.cost_matrix(["a"], torch.rand(4, 1)), TypeError, "x must hold numbers"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(4), p=0.5), ValueError, "p must be"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(0)), ValueError, "y is empty"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(4), b=torch.ones(4)), ValueError, "same total mass"),
        (lambda: ob.wasserstein_1d(torch.tensor([0.0, np.nan]), torch.rand(4)), ValueError, "x contains NaN"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "S1 must be positive semi-definite"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.tensor([[1.0, 2.0], [0.0, 1.0]])), ValueError, "S2 must be symmetric"),
        (lambda: ob.bures_wasserstein(torch.zeros(3), torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "m1 must be a vector of length 2"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3)), ValueError, "S2"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.ones(2, 3), torch.zeros(2), torch.eye(2)), ValueError, "S1 must be a square"),
        (lambda: ob.gaussian_map(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2), torch.eye(2)), ValueError, "singular"),
        (lambda: ob.uniform(0), ValueError, "n must be at least 1"),
        (lambda: ob.uniform(2.5), TypeError, "n must be an int"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- the hostile-input findings
# (each was a silent wrong answer, a hang, a crash or a cryptic error; now a clear error or the
# right value)

X2 = torch.rand(3, 2, dtype=torch.float64)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ob.eps_schedule(1.0, 1e-300, scaling=0.999999), ValueError, "levels"),
        (lambda: ob.sinkhorn_divergence(X2, X2 + 1, 0.5, backend="online", max_iter=0),
         ValueError, "max_iter"),
        (lambda: ob.sinkhorn_divergence(X2, X2 + 1, 0.5, backend="online", tol=-1),
         ValueError, "tol"),
        (lambda: ob.sinkhorn(A, B, C, 0.1, eps_scaling=2.0), ValueError, "eps_scaling must be"),
        (lambda: ob.sinkhorn(A, B, C, 1e-300), ValueError, "below the resolution"),
        (lambda: ob.wasserstein_1d(torch.rand(3, 1), torch.rand(3, 1)), ValueError,
         "one-point problems"),
        (lambda: ob.wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 5.0]), p=1e6),
         ValueError, "overflows"),
        (lambda: ob.cost_matrix(torch.rand(2, 3, 2), torch.rand(3, 4, 2)), ValueError,
         "batch dimensions of x and y"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 2), cost=lambda x, y: x.sum()),
         ValueError, "must return a matrix"),
        (lambda: ob.dataset_distance(X2, [0, 0, 1], X2, [0, 1, 1], eps=1.0, generator=3),
         TypeError, "generator"),
        (lambda: ob.dataset_distance(X2, [None] * 3, X2, [0, 1, 1], eps=1.0), TypeError,
         "class labels"),
        (lambda: ob.dataset_distance(X2, [0, 0, 1], X2, [0, 1, 1], eps=1.0, lambda_x="a"),
         TypeError, "lambda_x"),
        (lambda: ob.dataset_distance(X2, [0, 0, 1], X2, [0, 1, 1], eps=1.0,
                                     feature_map=lambda t: t.sum()), ValueError, "feature_map"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.eye(2).half(), torch.zeros(2),
                                      torch.eye(2)), TypeError, "float16"),
        (lambda: ob.sinkhorn(A.bfloat16(), B, C, 0.1), TypeError, "bfloat16"),
    ],
)
def test_hostile_input_findings(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_numpy_scalars_are_numbers():
    assert ob.uniform(np.int64(3)).shape == (3,)
    x = torch.rand(3, dtype=torch.float64)
    assert float(ob.wasserstein_1d(x, x + 1, p=np.float32(2))) == pytest.approx(1.0)


def test_emd_with_masses_that_used_to_crash_or_vanish():
    ref = ob.emd(A, B, C)
    for scale in (1e-300, 1e-200, 1e9, 1e12):  # 1e-300 killed the process in POT
        res = ob.emd(A * scale, B * scale, C)
        assert res.converged
        assert float(res.value) == pytest.approx(scale * float(ref.value), rel=1e-9)
        torch.testing.assert_close(res.f, ref.f)


def test_barycentric_projection_of_a_plan_of_denormals():
    y = torch.rand(4, 2, dtype=torch.float64)
    P = torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ob.barycentric_projection(P * 1e-310, y),
                               ob.barycentric_projection(P, y), rtol=1e-5, atol=1e-12)


def test_gromov_wasserstein_is_scale_invariant_with_eps_in_loss_units():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, dtype=torch.float64, generator=g)
    y = torch.randn(7, 2, dtype=torch.float64, generator=g)
    Cx, Cy = ob.cost_matrix(x, x), ob.cost_matrix(y, y)
    ref = ob.gromov_wasserstein(Cx, Cy, eps=1.0)
    for s in (1e-3, 1e6):  # the square loss scales like s^2: so does eps
        res = ob.gromov_wasserstein(s * Cx, s * Cy, eps=s * s)
        assert res.converged == ref.converged
        torch.testing.assert_close(res.plan, ref.plan, atol=1e-9, rtol=0)
        assert float(res.value) == pytest.approx(s * s * float(ref.value), rel=1e-9)


def test_dataset_distance_is_differentiable_in_the_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, dtype=torch.float64, generator=g).requires_grad_()
    y = torch.randn(10, 2, dtype=torch.float64, generator=g) + 0.5
    lx, ly = torch.arange(12) % 2, torch.arange(10) % 2

    def value(x):
        return ob.dataset_distance(x, lx, y, ly, eps=1.0, tol=1e-12).value

    assert torch.autograd.gradcheck(value, (x,), atol=1e-6, rtol=1e-4)
