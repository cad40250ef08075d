import numpy as np
import ot
import pytest
import scipy.optimize
import scipy.stats
import torch

import otbook as ob


def random_problem(n, m, seed, weighted=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(m, 2)) + 0.5
    a = rng.random(n) + 0.1 if weighted else np.ones(n)
    b = rng.random(m) + 0.1 if weighted else np.ones(m)
    return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(30, 30), (40, 25), (7, 90)])
def test_emd_matches_pot(seed, shape):
    x, y, a, b = random_problem(*shape, seed)
    C = ob.cost_matrix(x, y)
    res = ob.emd(a, b, C)
    ref = ot.emd2(a, b, ot.dist(x, y))
    assert res.converged
    assert abs(float(res.value) - ref) <= 1e-10 * abs(ref)
    # duals give the same value and are feasible
    dual = float((res.f * torch.as_tensor(a)).sum() + (res.g * torch.as_tensor(b)).sum())
    assert abs(dual - ref) <= 1e-10 * abs(ref)
    assert float((res.f[:, None] + res.g[None, :] - C).max()) <= 1e-10
    # marginals exact
    torch.testing.assert_close(res.plan.sum(1), torch.as_tensor(a), rtol=0, atol=1e-14)
    torch.testing.assert_close(res.plan.sum(0), torch.as_tensor(b), rtol=0, atol=1e-14)
    assert float(res.marginal_error) < 1e-13
    assert torch.equal(res.value, res.value_linear)


def test_emd_assignment_matches_linear_sum_assignment():
    rng = np.random.default_rng(3)
    C = rng.random((40, 40))
    res = ob.emd(None, None, C)
    rows, cols = scipy.optimize.linear_sum_assignment(C)
    assert abs(float(res.value) - C[rows, cols].mean()) < 1e-12
    P = res.plan.numpy() * 40
    assert np.allclose(P[rows, cols], 1.0)  # the LP finds a permutation here


def test_emd_dtype_device_and_numpy_inputs(device, dtype):
    x, y, a, b = random_problem(20, 30, 0)
    C = torch.as_tensor(ot.dist(x, y), dtype=dtype, device=device)
    res = ob.emd(a, b, C)
    assert res.plan.dtype == dtype and res.plan.device.type == device.type
    assert res.f.dtype == dtype and res.g.device.type == device.type


def test_emd_batched_equals_loop():
    Cs = torch.rand(3, 10, 12, dtype=torch.float64)
    res = ob.emd(None, None, Cs)
    assert res.value.shape == (3,)
    for k in range(3):
        assert torch.allclose(res.value[k], ob.emd(None, None, Cs[k]).value)
    assert bool(res.converged.all())


def test_emd_gradients_are_plan_and_potentials():
    x, y, a, b = random_problem(15, 20, 1)
    C = torch.as_tensor(ot.dist(x, y)).requires_grad_()
    at = torch.as_tensor(a).requires_grad_()
    res = ob.emd(at, b, C)
    res.value.backward()
    torch.testing.assert_close(C.grad, res.plan)
    torch.testing.assert_close(at.grad, res.f)


def test_emd_unconverged_is_reported():
    x, y, a, b = random_problem(60, 60, 2)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        res = ob.emd(a, b, ob.cost_matrix(x, y), max_iter=5)
    assert res.converged is False


def test_emd_zero_weights():
    x, y, a, b = random_problem(10, 10, 4)
    a[2] = 0.0
    a /= a.sum()
    res = ob.emd(a, b, ob.cost_matrix(x, y))
    assert abs(float(res.value) - ot.emd2(a, b, ot.dist(x, y))) < 1e-12
    assert float(res.plan[2].abs().sum()) == 0.0


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_1d_equals_lp(p, weighted):
    rng = np.random.default_rng(p)
    x, y = rng.normal(size=25), 2 * rng.normal(size=35) + 1
    a = rng.random(25) if weighted else np.ones(25)
    b = rng.random(35) if weighted else np.ones(35)
    a, b = a / a.sum(), b / b.sum()
    C = np.abs(x[:, None] - y[None, :]) ** p
    lp = ot.emd2(a, b, C)
    assert abs(float(ob.wasserstein_1d(x, y, a, b, p=p)) - lp) < 1e-10


def test_wasserstein_1d_against_scipy_and_translation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=70)
    assert abs(float(ob.wasserstein_1d(x, y, p=1)) - scipy.stats.wasserstein_distance(x, y)) < 1e-12
    xt = torch.as_tensor(x)
    assert abs(float(ob.wasserstein_1d(xt, xt + 1.0, p=2)) - 1.0) < 1e-12


def test_wasserstein_1d_batched_and_differentiable():
    x = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 20, dtype=torch.float64)
    w = ob.wasserstein_1d(x, y)
    assert w.shape == (4,)
    for k in range(4):
        assert torch.allclose(w[k], ob.wasserstein_1d(x[k], y[k]))
    w.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_wasserstein_1d_gaussian_closed_form():
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    y = 2.0 * torch.randn(n, generator=gen, dtype=torch.float64) + 1.0
    # W2^2(N(0,1), N(1,4)) = 1 + (1-2)^2 = 2
    assert abs(float(ob.wasserstein_1d(x, y)) - 2.0) < 0.02
