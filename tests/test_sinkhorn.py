import math
import warnings

import numpy as np
import ot
import pytest
import torch

import otbook as ob
import helpers
from helpers import F64



def problem(n, m, seed, d=2, dtype=F64, weighted=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(m, d, generator=g, dtype=dtype) * 0.7 + 0.5
    a = torch.rand(n, generator=g, dtype=dtype) + 0.1 if weighted else torch.ones(n, dtype=dtype)
    b = torch.rand(m, generator=g, dtype=dtype) + 0.1 if weighted else torch.ones(m, dtype=dtype)
    return x, y, a / a.sum(), b / b.sum()


# ---------------------------------------------------------------- agreement with POT


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
@pytest.mark.parametrize("shape", [(40, 40), (30, 55)])
def test_balanced_plan_matches_pot(eps, shape):
    x, y, a, b = problem(*shape, seed=shape[1])
    C = ob.cost_matrix(x, y)
    res = ob.sinkhorn(a, b, C, eps, tol=1e-11, max_iter=100_000)
    P = ot.sinkhorn(a.numpy(), b.numpy(), C.numpy(), eps, method="sinkhorn_log", stopThr=1e-13,
                    numItermax=200_000)
    assert res.converged
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10 * P.max() + 1e-14)
    assert abs(float(res.value_linear) - (P * C.numpy()).sum()) < 1e-9
    # primal objective (computed from the plan) equals the dual value at convergence
    assert abs(float(res.value) - float(res.extra["primal"])) < 1e-9
    assert float(res.marginal_error) < 1e-10


@pytest.mark.parametrize("rho", [0.1, 1.0, 10.0])
def test_unbalanced_plan_matches_pot(rho):
    x, y, a, b = problem(30, 45, seed=1)
    b = 1.7 * b  # unequal masses are fine here
    C = ob.cost_matrix(x, y)
    eps = 0.05
    res = ob.sinkhorn(a, b, C, eps, rho_a=rho, rho_b=rho, tol=1e-12, max_iter=100_000)
    P = ot.unbalanced.sinkhorn_unbalanced(a.numpy(), b.numpy(), C.numpy(), eps, rho, method="sinkhorn",
                                          reg_type="kl", stopThr=1e-14, numItermax=100_000)
    assert res.converged
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-9 * P.max())
    assert abs(float(res.value) - float(res.extra["primal"])) < 1e-9


def test_unbalanced_fixed_point_equations():
    x, y, a, b = problem(25, 35, seed=2)
    C = ob.cost_matrix(x, y)
    eps, rho_a, rho_b = 0.1, 0.5, 2.0
    res = ob.sinkhorn(a, b, C, eps, rho_a=rho_a, rho_b=rho_b, tol=1e-13, max_iter=100_000)
    lse_f = torch.logsumexp(torch.log(b)[None, :] + (res.g[None, :] - C) / eps, dim=1)
    lse_g = torch.logsumexp(torch.log(a)[:, None] + (res.f[:, None] - C) / eps, dim=0)
    torch.testing.assert_close(res.f, -rho_a / (rho_a + eps) * eps * lse_f, atol=1e-10, rtol=0)
    torch.testing.assert_close(res.g, -rho_b / (rho_b + eps) * eps * lse_g, atol=1e-10, rtol=0)
    # the plan is a b exp((f + g - C) / eps)
    P = a[:, None] * b[None, :] * torch.exp((res.f[:, None] + res.g[None, :] - C) / eps)
    torch.testing.assert_close(res.plan, P)


def test_semi_relaxed_matches_pot_and_keeps_hard_marginal():
    x, y, a, b = problem(20, 30, seed=3)
    C = ob.cost_matrix(x, y)
    res = ob.sinkhorn(a, b, C, 0.05, rho_b=1.0, tol=1e-12)
    P = ot.unbalanced.sinkhorn_unbalanced(a.numpy(), b.numpy(), C.numpy(), 0.05, (float("inf"), 1.0),
                                          reg_type="kl", stopThr=1e-14, numItermax=100_000)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-10)
    torch.testing.assert_close(res.plan.sum(1), a, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- closed forms and bounds


@pytest.mark.parametrize("eps", [0.01, 0.1, 1.0])
def test_entropic_value_between_exact_bounds(eps):
    x, y, a, b = problem(50, 60, seed=4)
    C = ob.cost_matrix(x, y)
    ot0 = float(ob.emd(a, b, C).value)
    res = ob.sinkhorn(a, b, C, eps, tol=1e-10, max_iter=100_000)
    assert ot0 - 1e-9 <= float(res.value) <= ot0 + eps * math.log(50) + 1e-9
    assert float(res.value_linear) - ot0 <= eps * math.log(50) + 1e-9


def test_cost_linearity_and_marginal_exchange():
    x, y, a, b = problem(30, 30, seed=5)
    C = ob.cost_matrix(x, y)
    r1 = ob.sinkhorn(a, b, C, 0.1, tol=1e-12)
    r3 = ob.sinkhorn(a, b, 3 * C, 0.3, tol=1e-12)
    assert abs(3 * float(r1.value) - float(r3.value)) < 1e-9
    rt = ob.sinkhorn(b, a, C.T, 0.1, tol=1e-12)
    torch.testing.assert_close(rt.plan, r1.plan.T, atol=1e-12, rtol=0)


def test_entropic_gaussian_closed_form():
    # Janati et al. (2020): OT_eps between Gaussians, eps = 2 sigma^2, cost |x - y|^2
    from otbook.gaussian import sqrtm_psd

    d, n, eps = 2, 1500, 1.0
    A = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    B = torch.tensor([[0.7, -0.2], [-0.2, 1.2]], dtype=F64)
    m1, m2 = torch.zeros(d, dtype=F64), torch.tensor([1.0, 0.5], dtype=F64)
    s2 = eps / 2
    rA = sqrtm_psd(A)
    D = sqrtm_psd(4 * rA @ B @ rA + s2**2 * torch.eye(d, dtype=F64))
    closed = (((m1 - m2) ** 2).sum() + A.trace() + B.trace() - D.trace()
              + d * s2 * (1 - math.log(2 * s2)) + s2 * torch.logdet(D + s2 * torch.eye(d, dtype=F64)))

    def exact_moments(mean, cov, seed):  # samples whose mean and covariance are exact
        z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        z = z - z.mean(0)
        z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T
        return mean + z @ torch.linalg.cholesky(cov).T

    res = ob.sinkhorn(None, None, ob.cost_matrix(exact_moments(m1, A, 0), exact_moments(m2, B, 1)), eps,
                      tol=1e-9)
    assert abs(float(res.value) - float(closed)) < 0.02 * float(closed)


# ---------------------------------------------------------------- batching, gradients, reports


@pytest.mark.parametrize("rho", [None, 0.5])
def test_batched_equals_looped(rho):
    g = torch.Generator().manual_seed(6)
    C = torch.rand(4, 15, 20, generator=g, dtype=F64)
    C[1] *= 10.0  # problems of different difficulty converge at different iterations
    a = torch.rand(4, 15, generator=g, dtype=F64)
    a /= a.sum(-1, keepdim=True)
    res = ob.sinkhorn(a, None, C, 0.05, rho_a=rho, rho_b=rho, tol=1e-10, max_iter=50_000)
    assert res.plan.shape == (4, 15, 20) and res.value.shape == (4,) and res.converged.shape == (4,)
    assert bool(res.converged.all())
    for k in range(4):
        rk = ob.sinkhorn(a[k], None, C[k], 0.05, rho_a=rho, rho_b=rho, tol=1e-10, max_iter=50_000)
        torch.testing.assert_close(res.plan[k], rk.plan, atol=1e-9, rtol=0)
        torch.testing.assert_close(res.value[k], rk.value, atol=1e-9, rtol=0)
    per = res.extra["n_iter_per_problem"]
    assert per.shape == (4,) and int(per.max()) == res.n_iter


def test_gradcheck_cost_and_weights():
    x, y, a, b = problem(6, 7, seed=7)
    C = ob.cost_matrix(x, y).requires_grad_()

    def value_of_cost(Cm):
        return ob.sinkhorn(a, b, Cm, 0.3, tol=1e-13, max_iter=100_000).value

    assert torch.autograd.gradcheck(value_of_cost, (C,), eps=1e-6, atol=1e-6)

    def value_of_weights(wa, wb):  # balanced: perturbations must keep the masses equal
        return ob.sinkhorn(wa / wa.sum(), wb / wb.sum(), C.detach(), 0.3, tol=1e-13, max_iter=100_000).value

    wa, wb = a.clone().requires_grad_(), b.clone().requires_grad_()
    assert torch.autograd.gradcheck(value_of_weights, (wa, wb), eps=1e-6, atol=1e-6)

    def unbalanced(wa, wb, Cm):
        return ob.sinkhorn(wa, wb, Cm, 0.3, rho_a=0.7, rho_b=1.5, tol=1e-14, max_iter=100_000).value

    assert torch.autograd.gradcheck(unbalanced, (wa, wb, C), eps=1e-6, atol=1e-6)


def test_gradient_in_points_through_cost():
    x, y, a, b = problem(20, 25, seed=8)
    x.requires_grad_()
    res = ob.sinkhorn(a, b, ob.cost_matrix(x, y), 0.1, tol=1e-12)
    (gx,) = torch.autograd.grad(res.value, x)
    expected = 2 * (x * a[:, None] - res.plan @ y)  # sum_j P_ij 2 (x_i - y_j)
    torch.testing.assert_close(gx, expected.detach())


def test_unconverged_run_reports_it():
    x, y, a, b = problem(50, 50, seed=9)
    C = ob.cost_matrix(x, y)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = ob.sinkhorn(a, b, C, 1e-3, max_iter=20)
    assert res.converged is False and res.n_iter == 20
    assert float(res.marginal_error) > 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ob.sinkhorn(a, b, C, 1e-3, max_iter=20, warn=False)


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-4), (torch.float32, 1e-3)])
def test_stable_at_small_eps(dtype, rel):
    x, y, a, b = problem(120, 150, seed=10, dtype=dtype)
    C = ob.cost_matrix(x, y) * 10.0
    eps = rel * float(C.max())
    res = ob.sinkhorn(a, b, C, eps, tol=1e-4 if dtype == torch.float32 else 1e-6, max_iter=100_000,
                      eps_scaling=0.7)
    for t in (res.plan, res.f, res.g, res.value):
        assert torch.isfinite(t).all()
    assert res.converged and res.plan.dtype == dtype
    ot0 = float(ob.emd(a.double(), b.double(), C.double()).value)
    assert abs(float(res.value_linear) - ot0) < eps * math.log(120) + 1e-3 * ot0
    # an unconverged run at that eps is still finite
    short = ob.sinkhorn(a, b, C, eps, max_iter=30, warn=False)
    assert torch.isfinite(short.plan).all() and torch.isfinite(short.marginal_error).all()


def test_warm_start_and_eps_scaling_agree():
    x, y, a, b = problem(40, 40, seed=11)
    C = ob.cost_matrix(x, y)
    r0 = ob.sinkhorn(a, b, C, 0.01, tol=1e-10)
    r1 = ob.sinkhorn(a, b, C, 0.01, tol=1e-10, eps_scaling=0.5)
    r2 = ob.sinkhorn(a, b, C, 0.01, tol=1e-10, init=(r0.f, r0.g))
    torch.testing.assert_close(r1.plan, r0.plan, atol=1e-9, rtol=0)
    torch.testing.assert_close(r2.plan, r0.plan, atol=1e-9, rtol=0)
    assert r2.n_iter <= 20


def test_dtype_device_numpy(device, dtype):
    x, y, a, b = problem(30, 20, seed=12, dtype=dtype)
    C = ob.cost_matrix(x, y).to(device)
    res = ob.sinkhorn(a.numpy(), b.numpy(), C, 0.1, tol=1e-4)
    assert res.plan.dtype == dtype and res.plan.device.type == device.type
    assert res.f.device.type == device.type and res.converged


# ---------------------------------------------------------------- over-relaxation


def clusters(n, seed, dtype=F64):
    """Five well-separated clusters with different class proportions on each side: mass must
    cross between clusters, the slow, block-structured case of Sinkhorn."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0], [2.5, 9.0]], dtype=dtype)
    lx = torch.arange(n) % 5
    ly = torch.multinomial(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), n, replacement=True, generator=g)
    x = centres[lx] + 0.5 * torch.randn(n, 2, generator=g, dtype=dtype)
    y = centres[ly] + 0.5 * torch.randn(n, 2, generator=g, dtype=dtype)
    return x, y


@pytest.mark.parametrize("rel", [0.05, 0.01])
def test_overrelaxation_same_plan_in_fewer_iterations(rel):
    x, y = clusters(200, seed=30)
    C = ob.cost_matrix(x, y)
    eps = ob.eps_relative(C, rel)
    plain = ob.sinkhorn(None, None, C, eps, tol=1e-10, max_iter=50_000, omega=1.0)
    auto = ob.sinkhorn(None, None, C, eps, tol=1e-10, max_iter=50_000)  # the default
    fixed = ob.sinkhorn(None, None, C, eps, tol=1e-10, max_iter=50_000, omega=1.5)
    for r in (plain, auto, fixed):
        assert r.converged and float(r.marginal_error) <= 1e-10
        torch.testing.assert_close(r.plan, plain.plan, atol=1e-11, rtol=0)
    assert float(plain.extra["omega"]) == 1.0 and float(auto.extra["omega"]) > 1.5
    assert auto.n_iter <= 0.5 * plain.n_iter, (auto.n_iter, plain.n_iter)
    assert fixed.n_iter < plain.n_iter


def test_overrelaxation_safeguard_keeps_a_too_large_factor_honest():
    # a fixed factor of 1.99 from the first iteration: the safeguard may step back, but the
    # result converges to the same plan and reports its true marginal error
    x, y = clusters(150, seed=31)
    C = ob.cost_matrix(x, y)
    eps = ob.eps_relative(C, 0.01)
    ref = ob.sinkhorn(None, None, C, eps, tol=1e-9, max_iter=50_000, omega=1.0)
    for dtype, tol in ((F64, 1e-9), (torch.float32, 1e-5)):
        r = ob.sinkhorn(None, None, C.to(dtype), eps, tol=tol, max_iter=50_000, omega=1.99)
        assert torch.isfinite(r.plan).all() and r.converged
        assert float(r.marginal_error) <= tol * 1.01
        assert (r.plan.double() - ref.plan).abs().sum() < 10 * tol


def test_overrelaxation_per_problem_in_a_batch_and_unbalanced(device):
    x, y = clusters(120, seed=32)
    xg, yg, _, _ = problem(120, 120, seed=33)
    Cs = torch.stack([ob.cost_matrix(x, y), ob.cost_matrix(xg, yg)]).to(device)
    eps = 0.02 * float(Cs.mean())
    batch = ob.sinkhorn(None, None, Cs, eps, tol=1e-9, max_iter=50_000)
    assert bool(batch.converged.all()) and batch.extra["omega"].shape == (2,)
    for k in range(2):
        alone = ob.sinkhorn(None, None, Cs[k], eps, tol=1e-9, max_iter=50_000, omega=1.0)
        torch.testing.assert_close(batch.plan[k], alone.plan, atol=1e-10, rtol=0)
    # unbalanced: the stopping rule is the change of the potentials; same fixed point
    un = [ob.sinkhorn(None, None, Cs[0], eps, rho_a=1.0, rho_b=1.0, tol=1e-11, max_iter=50_000, omega=om)
          for om in (1.0, "auto", 1.5)]
    for r in un:
        assert r.converged
        torch.testing.assert_close(r.plan, un[0].plan, atol=1e-10, rtol=0)


def test_overrelaxation_online_backend():
    x, y = clusters(200, seed=34)
    eps = 0.01 * float(ob.cost_matrix(x, y).mean())
    runs = {om: ob.sinkhorn(None, None, ob.PointCloud(x, y), eps, tol=1e-9, max_iter=50_000,
                            omega=om, backend="online", memory_budget=2**16)
            for om in (1.0, "auto")}
    plain, auto = runs[1.0], runs["auto"]
    assert plain.plan is None and auto.extra["backend"] == "online"
    assert plain.converged and auto.converged and float(auto.marginal_error) <= 1e-9
    assert abs(float(plain.value) - float(auto.value)) < 1e-10
    assert auto.n_iter <= 0.5 * plain.n_iter, (auto.n_iter, plain.n_iter)
    dense = ob.sinkhorn(None, None, ob.cost_matrix(x, y), eps, tol=1e-11, max_iter=50_000)
    assert abs(float(auto.value) - float(dense.value)) < 1e-9


# ---------------------------------------------------------------- Sinkhorn divergence


def test_divergence_translation_identity_and_self_zero():
    x, _, a, _ = problem(60, 1, seed=13)
    t = torch.tensor([0.7, -1.2], dtype=F64)
    for eps in (0.5, 1.0, 10.0):
        s = ob.sinkhorn_divergence(x, x + t, eps, a=a, b=a, tol=1e-11, max_iter=100_000)
        assert abs(float(s) - float(t @ t)) < 1e-8
    # at small eps the self terms still converge fast (symmetric updates)
    assert abs(float(ob.sinkhorn_divergence(x, x, 0.1, a=a, b=a, tol=1e-9, max_iter=100_000))) < 1e-8


def test_divergence_symmetric_nonnegative_and_online_equals_dense():
    x, y, a, b = problem(200, 150, seed=14, d=3)
    dense = ob.sinkhorn_divergence(x, y, 0.1, a=a, b=b, backend="dense", tol=1e-9)
    online = ob.sinkhorn_divergence(x, y, 0.1, a=a, b=b, backend="online", tol=1e-9, memory_budget=2e5)
    swapped = ob.sinkhorn_divergence(y, x, 0.1, a=b, b=a, backend="dense", tol=1e-9)
    assert float(dense) > 0
    assert abs(float(dense) - float(online)) < 1e-8
    assert abs(float(dense) - float(swapped)) < 1e-8


def test_divergence_gradients_dense_and_online_agree():
    x, y, a, b = problem(80, 90, seed=15)
    grads = []
    for backend in ("dense", "online"):
        xr, ar = x.clone().requires_grad_(), a.clone().requires_grad_()
        s = ob.sinkhorn_divergence(xr, y, 0.2, a=ar, b=b, backend=backend, tol=1e-11, memory_budget=1e5)
        grads.append(torch.autograd.grad(s, (xr, ar)))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-8, rtol=0)
    # weight gradients agree up to a constant (balanced potentials are defined up to a shift)
    d = grads[0][1] - grads[1][1]
    assert float((d - d.mean()).abs().max()) < 1e-8


def test_divergence_large_eps_approaches_energy_distance_scale():
    # as eps grows, S_eps tends to an MMD with kernel -|x-y|^2 / 2: |mean(x) - mean(y)|^2
    x, y, a, b = problem(50, 60, seed=16)
    s = ob.sinkhorn_divergence(x, y, 1e4, a=a, b=b, tol=1e-12)
    mean_gap = ((a @ x - b @ y) ** 2).sum()
    assert abs(float(s) - float(mean_gap)) < 1e-3 * float(mean_gap)


def test_memory_budget_default_follows_the_device(device):
    from otbook._runtime import memory_budget as check_memory_budget

    x = torch.zeros(3, device=device)
    budget = check_memory_budget(None, x)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        assert 0 < budget <= free
    else:
        assert budget == 2e9
    assert check_memory_budget(1e6, x) == 1e6
    with pytest.raises(ValueError, match="memory_budget"):
        check_memory_budget(0, x)
    with pytest.raises(TypeError, match="memory_budget"):
        check_memory_budget("1GB", x)


# ---------------------------------------------------------------- helpers and bad input


def test_eps_helpers():
    C = torch.tensor([[0.0, 4.0], [2.0, 2.0]])
    assert ob.eps_relative(C, 0.5) == 1.0
    assert ob.eps_relative(C, 0.5, stat="max") == 2.0
    sched = ob.eps_schedule(8.0, 1.0, 0.5)
    assert sched == [8.0, 4.0, 2.0, 1.0]
    assert ob.eps_schedule(8.0, 3.0, 0.5) == [8.0, 4.0, 3.0]


C0 = torch.rand(3, 4, dtype=F64)
A0 = torch.full((3,), 1 / 3, dtype=F64)
B0 = torch.full((4,), 1 / 4, dtype=F64)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ob.sinkhorn(A0, B0, C0, 0.0), ValueError, "eps must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, -1.0), ValueError, "eps must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, float("nan")), ValueError, "eps must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, "0.1"), TypeError, "eps must be"),
        (lambda: ob.sinkhorn(-A0, B0, C0, 0.1), ValueError, "a has negative"),
        (lambda: ob.sinkhorn(A0, torch.tensor([np.nan, 0.5, 0.25, 0.25]), C0, 0.1), ValueError, "b contains NaN"),
        (lambda: ob.sinkhorn(A0, 2 * B0, C0, 0.1), ValueError, "same total mass"),
        (lambda: ob.sinkhorn(A0, B0, C0.masked_fill(C0 > 0.5, np.nan), 0.1), ValueError, "C contains NaN"),
        (lambda: ob.sinkhorn(A0, B0, C0.T, 0.1), ValueError, "a has 3 weights but there are 4"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, rho_a=0.0), ValueError, "rho_a must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, rho_b=-2.0), ValueError, "rho_b must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, tol=0), ValueError, "tol must be"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, max_iter=0), ValueError, "max_iter"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, eps_scaling=1.5), ValueError, "eps_scaling"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, init=(A0, A0)), ValueError, "init\\[1\\] must have length 4"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, init=A0), TypeError, "init must be a pair"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, omega=2.0), ValueError, "omega must be in"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, omega=0.0), ValueError, "omega must be in"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, omega="fast"), ValueError, "omega must be 'auto'"),
        (lambda: ob.sinkhorn(A0, B0, C0, 0.1, omega=True), TypeError, "omega must be"),
        (lambda: ob.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), 0.1, omega=3), ValueError, "omega"),
        (lambda: ob.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 3), 0.1), ValueError, "feature dimension"),
        (lambda: ob.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), 0.0), ValueError, "eps must be"),
        (lambda: ob.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), 0.1, a=torch.ones(3)), ValueError, "same total mass"),
        (lambda: ob.sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), 0.1, backend="gpu"), ValueError, "backend"),
        (lambda: ob.eps_relative(torch.zeros(2, 2)), ValueError, "no eps can be relative"),
        (lambda: ob.eps_schedule(1.0, 0.1, scaling=1.0), ValueError, "scaling must be in"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- numerical guards


def test_absorption_recovers_from_scalings_that_overflowed_between_checks():
    # omega = 1.99 from the first iteration with checks only every 100 iterations: the relaxed
    # scalings overflow before the range check sees them; the absorption must fold in the last
    # finite ones (not inf) and the solve still reach the plain solution
    x, _ = helpers.clusters(40, seed=1)
    y, _ = helpers.clusters(30, seed=2)
    C = ob.cost_matrix(x, y)
    eps = 0.01 * float(C.mean())
    plain = ob.sinkhorn(None, None, C, eps, tol=1e-8, omega=1.0, max_iter=50_000)
    wild = ob.sinkhorn(None, None, C, eps, tol=1e-8, omega=1.99, check_every=100,
                       max_iter=50_000)
    assert wild.converged and wild.extra["n_absorptions"] >= 1
    torch.testing.assert_close(wild.plan, plain.plan, atol=1e-8, rtol=0)


def test_symmetric_solver_absorbs_drifting_scalings():
    # a symmetric cost whose diagonal is not its minimum (|x_i + x_j|^2): the averaged
    # iteration drifts far from its first step, beyond float32's range without absorption
    from otbook.sinkhorn.engine import Options, solve_symmetric

    def plus(p, q):
        return ((p[..., :, None, :] + q[..., None, :, :]) ** 2).sum(-1)

    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    a = torch.full((1, 10), 1 / 10)
    C = plus(x, x).double()
    eps = 0.001 * float(C.mean())
    for backend in ("dense", "online"):
        sol = solve_symmetric(ob.PointCloud(x, x, plus).broadcast(()), a, eps,
                              Options(tol=1e-4, max_iter=50_000, backend=backend))
        assert sol.n_absorb >= 10 and bool(sol.done.all())
        # (f, f) with P 1 = a is the fixed point of the symmetric problem: its marginal error,
        # recomputed in float64 from f alone, says the potential is right
        f = sol.f[0].double()
        P = a[0, :, None] * a[0, None, :] * torch.exp((f[:, None] + f[None, :] - C) / eps)
        assert float((P.sum(1) - a[0]).abs().sum()) < 3e-4
