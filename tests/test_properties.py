"""Property tests (hypothesis): random problems against POT and closed forms, and gradients at
the edge points where naive formulas fail."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import otbook as ob
from helpers import F64

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def problems(draw, max_n=7):
    """A balanced problem: points in 2-D, positive weights (some tiny), and its cost."""
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    y = rng.normal(size=(m, 2)) * draw(st.sampled_from([1e-3, 1.0, 1e3])) + 0.5
    a = rng.random(n) ** 3 + 1e-9
    b = rng.random(m) ** 3 + 1e-9
    mass = draw(st.sampled_from([1.0, 1e-6, 1e6]))
    return mass * a / a.sum(), mass * b / b.sum(), x, y


@SETTINGS
@given(problems())
def test_emd_equals_pot(problem):
    a, b, x, y = problem
    C = ot.dist(x, y)
    res = ob.emd(a, b, C)
    ref = ot.emd2(a / a.sum(), b / b.sum(), C / C.max()) * a.sum() * C.max()
    assert res.converged
    assert abs(float(res.value) - ref) <= 1e-9 * max(abs(ref), a.sum() * C.max())
    np.testing.assert_allclose(res.plan.sum(-1).numpy(), a, rtol=1e-9, atol=1e-15 * a.sum())
    # the dual value equals the primal one
    dual = float(res.f @ torch.as_tensor(a) + res.g @ torch.as_tensor(b))
    assert abs(dual - float(res.value)) <= 1e-8 * max(abs(ref), a.sum() * C.max())


@SETTINGS
@given(problems(), st.sampled_from([0.05, 0.3, 1.0]))
def test_sinkhorn_plan_equals_pot(problem, rel):
    a, b, x, y = problem
    a, b = a / a.sum(), b / b.sum()
    C = ot.dist(x, y)
    eps = rel * max(C.mean(), 1e-12)
    res = ob.sinkhorn(a, b, C, eps, tol=1e-12, max_iter=100_000)
    P = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-14, numItermax=200_000)
    assert res.converged
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-8 * P.max() + 1e-15)


@SETTINGS
@given(problems(), st.sampled_from([1, 2, 3]))
def test_wasserstein_1d_equals_pot(problem, p):
    a, b, x, y = problem
    got = float(ob.wasserstein_1d(x[:, 0], y[:, 0], a, b, p=p))
    ref = ot.wasserstein_1d(x[:, 0], y[:, 0], a / a.sum(), b / b.sum(), p=p) * a.sum()
    assert abs(got - ref) <= 1e-9 * max(ref, 1e-300) + 1e-300


@SETTINGS
@given(problems(max_n=6), st.floats(-3, 3), st.floats(-3, 3), st.sampled_from([0.1, 0.3, 1.0]))
def test_divergence_translation_identity_symmetry_and_sign(problem, t1, t2, rel):
    a, _, x, y = problem
    a = a / a.sum()
    t = np.array([t1, t2])
    eps = rel * max(ot.dist(x, y).mean(), 1e-12)  # eps relative to the problem's scale
    s = ob.sinkhorn_divergence(x, x + t, eps, a=a, b=a, tol=1e-10, max_iter=100_000)
    assert abs(float(s) - float(t @ t)) < 1e-6 * (eps + t @ t)
    b = np.full(len(y), 1 / len(y))
    s_xy = ob.sinkhorn_divergence(x, y, eps, a=a, b=b, tol=1e-10, max_iter=100_000)
    s_yx = ob.sinkhorn_divergence(y, x, eps, a=b, b=a, tol=1e-10, max_iter=100_000)
    assert float(s_xy) >= -1e-9 * (1 + abs(float(s_xy)))
    assert abs(float(s_xy) - float(s_yx)) < 1e-7 * (1 + abs(float(s_xy)))


@SETTINGS
@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.sampled_from([1e-4, 1.0, 1e4]))
def test_bures_against_pot(d, seed, scale):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    S1, S2 = scale * (A @ A.T + 0.1 * np.eye(d)), scale * (B @ B.T + 0.1 * np.eye(d))
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    got = float(ob.bures_wasserstein(m1, S1, m2, S2))
    ref = float(ot.gaussian.bures_wasserstein_distance(m1, m2, S1, S2)) ** 2
    assert abs(got - ref) <= 1e-7 * (1 + ref)


# ---------------------------------------------------------------- gradients at the edge points


@pytest.mark.parametrize("S2", [np.eye(3), np.diag([1.0, 2.0, 2.0]), np.diag([0.5, 3.0, 3.0])])
def test_bures_gradient_at_isotropic_and_repeated_eigenvalues(S2):
    m1, m2 = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    S2 = torch.as_tensor(S2)

    def value(S1):
        return ob.bures_wasserstein(m1, 0.5 * (S1 + S1.T), m2, S2)

    for S1 in (torch.eye(3, dtype=F64), torch.diag(torch.tensor([1.0, 1.0, 4.0], dtype=F64))):
        assert torch.autograd.gradcheck(value, (S1.clone().requires_grad_(),))


def test_divergence_gradient_where_points_coincide():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64)
    for cost in ("sqeuclidean", "euclidean"):
        def value(p):
            return ob.sinkhorn_divergence(p, x, 0.5, cost=cost, tol=1e-13)

        assert torch.autograd.gradcheck(value, (x.clone().requires_grad_(),), atol=1e-6)


def test_emd_gradient_with_raw_count_weights():
    C = torch.rand(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = torch.tensor([2.0, 3.0, 5.0], dtype=F64, requires_grad=True)
    b = torch.tensor([1.0, 4.0, 4.0, 1.0], dtype=F64)
    res = ob.emd(a, b, C)
    (grad,) = torch.autograd.grad(res.value, a)
    torch.testing.assert_close(grad, res.f)  # the envelope gradient is the potential
