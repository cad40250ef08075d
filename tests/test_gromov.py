"""Gromov-Wasserstein: closed cases, invariances, the decomposition, POT, gradients, bad input."""

import math
import warnings

import ot
import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, cloud, gen, weights


def dist(x):
    C = ob.cost_matrix(x, x, "euclidean")
    return C / C.max()


def brute_force_gw(Cx, Cy, P):
    """sum_ijkl (Cx_ik - Cy_jl)^2 P_ij P_kl with the four-index tensor."""
    L = (Cx[:, None, :, None] - Cy[None, :, None, :]) ** 2  # i, j, k, l
    return torch.einsum("ijkl,ij,kl->", L, P, P)


# ---------------------------------------------------------------- closed cases and invariances


def test_reversed_1d_cloud_gives_zero_and_the_anti_diagonal():
    g = gen(0)
    n = 10
    x = torch.cumsum(torch.rand(n, generator=g, dtype=F64) + 0.5, 0)[:, None]  # well separated
    C = dist(x)
    res = ob.gromov_wasserstein(C, C.flip(0, 1), eps=1e-3)
    anti = torch.eye(n, dtype=F64).flip(1) / n
    assert res.converged
    assert float(res.value_linear) < 1e-5
    torch.testing.assert_close(res.plan, anti, atol=1e-4, rtol=0)


def test_isometric_shuffled_copy_is_equivariant():
    x = cloud(30, 2, seed=1)
    th = 0.7
    c, s = math.cos(th), math.sin(th)
    R = torch.tensor([[c, s], [s, -c]], dtype=F64)  # a reflection
    perm = torch.randperm(30, generator=gen(2))
    y = (x @ R.T + torch.tensor([3.0, -1.0], dtype=F64))[perm]
    Cx, Cy = dist(x), dist(y)
    ref = ob.gromov_wasserstein(Cx, Cx, eps=0.02)
    res = ob.gromov_wasserstein(Cx, Cy, eps=0.02)
    assert ref.converged and res.converged
    # mirror descent from a x b commutes with relabelling the target points
    torch.testing.assert_close(res.plan, ref.plan[:, perm], atol=1e-8, rtol=0)
    assert abs(float(res.value) - float(ref.value)) < 1e-10


def test_marginals_with_weights():
    x, y = cloud(25, 2, seed=3), cloud(35, 3, seed=4)
    a, b = weights(25, 5), weights(35, 6)
    res = ob.gromov_wasserstein(dist(x), dist(y), a, b, eps=0.02)
    assert res.converged
    # within the default Sinkhorn tolerance, sinkhorn_tol = 1e-8 (L1)
    torch.testing.assert_close(res.plan.sum(1), a, atol=1e-8, rtol=0)
    torch.testing.assert_close(res.plan.sum(0), b, atol=1e-8, rtol=0)
    assert float(res.marginal_error) <= 1e-8


def test_decomposition_equals_four_index_sum_and_objective():
    x, y = cloud(6, 2, seed=7), cloud(7, 3, seed=8)
    Cx, Cy = dist(x), dist(y)
    a, b = weights(6, 9), weights(7, 10)
    P = torch.rand(6, 7, generator=gen(11), dtype=F64)  # any plan
    brute = brute_force_gw(Cx, Cy, P)
    assert abs(float(ob.gromov_objective(Cx, Cy, P)) - float(brute)) < 1e-12
    res = ob.gromov_wasserstein(Cx, Cy, a, b, eps=0.05)
    assert abs(float(res.value_linear) - float(brute_force_gw(Cx, Cy, res.plan))) < 1e-12
    kl = (res.plan * torch.log(res.plan / (a[:, None] * b[None, :]))).sum() - res.plan.sum() + 1.0
    assert abs(float(res.value) - float(res.value_linear + 0.05 * kl)) < 1e-12
    objective = ob.gromov_objective(Cx, Cy, res.plan, a, b, eps=0.05)
    assert abs(float(res.value) - float(objective)) < 1e-12
    # the history ends at the returned objective, below where it started
    h = res.extra["history"]
    assert abs(float(h[-1]) - float(res.value)) < 1e-12 and float(h[-1]) < float(h[0])


# ---------------------------------------------------------------- against POT


def pot_plan(Cx, Cy, a, b, eps, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # POT's inner Sinkhorn must converge for a fair reference
        return torch.from_numpy(ot.gromov.entropic_gromov_wasserstein(
            Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(), epsilon=eps, tol=1e-12, max_iter=5000,
            stopThr=1e-13, numItermax=20000, **kw))


@pytest.mark.parametrize("anderson", [0, 5])
def test_square_loss_matches_pot(anderson):
    x, y = cloud(30, 2, seed=12), cloud(40, 3, seed=13)
    Cx, Cy = dist(x), dist(y)
    a, b = weights(30, 14), weights(40, 15)
    eps = 0.02
    res = ob.gromov_wasserstein(Cx, Cy, a, b, eps=eps, tol=1e-12, sinkhorn_tol=1e-12,
                                anderson=anderson)
    P = pot_plan(Cx, Cy, a, b, eps)
    assert res.converged
    torch.testing.assert_close(res.plan, P, atol=1e-9, rtol=0)
    gw_pot = ot.gromov.entropic_gromov_wasserstein2(Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(),
                                                    epsilon=eps, tol=1e-12, max_iter=5000,
                                                    stopThr=1e-13, numItermax=20000)
    assert abs(float(res.value_linear) - gw_pot) < 1e-9


def test_kl_loss_matches_pot():
    x, y = cloud(20, 2, seed=16), cloud(25, 2, seed=17)
    Kx = torch.exp(-ob.cost_matrix(x, x))  # positive similarity matrices
    Ky = torch.exp(-ob.cost_matrix(y, y))
    a, b = ob.uniform(20, like=x), ob.uniform(25, like=x)
    res = ob.gromov_wasserstein(Kx, Ky, eps=0.01, loss="kl", tol=1e-12, sinkhorn_tol=1e-12)
    P = pot_plan(Kx, Ky, a, b, 0.01, loss_fun="kl_loss")
    assert res.converged
    torch.testing.assert_close(res.plan, P, atol=1e-8, rtol=0)


def test_fused_matches_pot_and_interpolates():
    x, y = cloud(20, 2, seed=18), cloud(22, 2, seed=19)
    Cx, Cy = dist(x), dist(y)
    fx, fy = cloud(20, 1, seed=20), cloud(22, 1, seed=21)
    M = ob.cost_matrix(fx, fy)
    M = M / M.max()
    a, b = ob.uniform(20, like=x), ob.uniform(22, like=x)
    eps, alpha = 0.02, 0.4
    res = ob.gromov_wasserstein(Cx, Cy, eps=eps, M=M, alpha=alpha, tol=1e-12, sinkhorn_tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = torch.from_numpy(ot.gromov.entropic_fused_gromov_wasserstein(
            M.numpy(), Cx.numpy(), Cy.numpy(), a.numpy(), b.numpy(), epsilon=eps, alpha=alpha,
            tol=1e-12, max_iter=5000, stopThr=1e-13, numItermax=20000))
    torch.testing.assert_close(res.plan, P, atol=1e-9, rtol=0)
    expected = alpha * ob.gromov_objective(Cx, Cy, res.plan) + (1 - alpha) * (M * res.plan).sum()
    assert abs(float(res.value_linear) - float(expected)) < 1e-12
    # alpha = 0 is entropic OT on M
    lin = ob.gromov_wasserstein(Cx, Cy, eps=eps, M=M, alpha=0.0, tol=1e-12, sinkhorn_tol=1e-12)
    ot_plan = ob.sinkhorn(a, b, M, eps, tol=1e-12).plan
    torch.testing.assert_close(lin.plan, ot_plan, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- gradients, batches, reports


def test_envelope_gradients():
    x, y = cloud(8, 2, seed=22), cloud(9, 2, seed=23)
    Cx, Cy = dist(x).requires_grad_(), dist(y).requires_grad_()
    res = ob.gromov_wasserstein(Cx, Cy, eps=0.1, tol=1e-13, sinkhorn_tol=1e-13)
    gx, gy = torch.autograd.grad(res.value, (Cx, Cy))
    P = res.plan
    D = Cx.detach()[:, None, :, None] - Cy.detach()[None, :, None, :]
    torch.testing.assert_close(gx, 2 * torch.einsum("ijkl,ij,kl->ik", D, P, P))
    torch.testing.assert_close(gy, -2 * torch.einsum("ijkl,ij,kl->jl", D, P, P))
    # the envelope gradient is the derivative of the optimal value (symmetric perturbation)
    H = torch.rand(8, 8, generator=gen(24), dtype=F64)
    H = H + H.T
    h = 1e-5
    kw = dict(eps=0.1, tol=1e-13, sinkhorn_tol=1e-13)
    up = ob.gromov_wasserstein(Cx.detach() + h * H, Cy.detach(), **kw).value
    dn = ob.gromov_wasserstein(Cx.detach() - h * H, Cy.detach(), **kw).value
    assert abs(float((up - dn) / (2 * h)) - float((gx * H).sum())) < 1e-6


def test_batch_equals_loop():
    Cxs = torch.stack([dist(cloud(15, 2, seed=s)) for s in (25, 26, 27)])
    Cys = torch.stack([dist(cloud(18, 3, seed=s)) for s in (28, 29, 30)])
    batch = ob.gromov_wasserstein(Cxs, Cys, eps=0.03, tol=1e-11, sinkhorn_tol=1e-11)
    assert batch.plan.shape == (3, 15, 18) and batch.converged.shape == (3,)
    for k in range(3):
        one = ob.gromov_wasserstein(Cxs[k], Cys[k], eps=0.03, tol=1e-11, sinkhorn_tol=1e-11)
        torch.testing.assert_close(batch.plan[k], one.plan, atol=1e-8, rtol=0)
        assert abs(float(batch.value[k]) - float(one.value)) < 1e-10


def test_anderson_reaches_the_same_stationary_point_in_fewer_steps():
    x, y = cloud(120, 2, seed=31), cloud(120, 3, seed=32)
    Cx, Cy = dist(x), dist(y)
    plain = ob.gromov_wasserstein(Cx, Cy, eps=0.01, anderson=0)
    fast = ob.gromov_wasserstein(Cx, Cy, eps=0.01)
    assert plain.converged and fast.converged
    assert fast.n_iter < plain.n_iter
    assert abs(float(fast.value) - float(plain.value)) < 1e-9
    assert float((fast.plan - plain.plan).abs().sum()) < 1e-5


def test_unconverged_run_reports_it():
    Cx, Cy = dist(cloud(20, 2, seed=33)), dist(cloud(20, 2, seed=34))
    with pytest.warns(RuntimeWarning, match="gromov_wasserstein did not converge") as caught:
        res = ob.gromov_wasserstein(Cx, Cy, eps=0.01, max_iter=2)
    assert res.converged is False and res.n_iter == 2
    assert [w.filename for w in caught] == [__file__]  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ob.gromov_wasserstein(Cx, Cy, eps=0.01, max_iter=2, warn=False)


def test_old_names_of_the_sinkhorn_settings_still_work_with_a_deprecation_warning():
    Cx, Cy = dist(cloud(12, 2, seed=42)), dist(cloud(14, 2, seed=43))
    # a small Sinkhorn budget, so that ignoring it would show
    kw = dict(eps=0.05, max_iter=5, warn=False)
    new = ob.gromov_wasserstein(Cx, Cy, sinkhorn_tol=1e-12, sinkhorn_max_iter=3, **kw)
    with pytest.warns(DeprecationWarning) as caught:
        old = ob.gromov_wasserstein(Cx, Cy, inner_tol=1e-12, inner_max_iter=3, **kw)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "'inner_max_iter' is deprecated" in messages[0]
    assert "use 'sinkhorn_max_iter'" in messages[0]
    assert "'inner_tol' is deprecated" in messages[1] and "use 'sinkhorn_tol'" in messages[1]
    assert {w.filename for w in caught} == {__file__}  # the warning points at the caller
    assert old.extra["inner_iterations"] == new.extra["inner_iterations"] == 3 * 5
    assert torch.equal(old.plan, new.plan)
    # gromov_divergence passes them on: one warning, at the caller
    with pytest.warns(DeprecationWarning, match="gromov_divergence: 'inner_max_iter'") as caught:
        d_old = ob.gromov_divergence(Cx, Cy, inner_max_iter=3, **kw)
    assert [w.filename for w in caught] == [__file__]
    assert torch.equal(d_old, ob.gromov_divergence(Cx, Cy, sinkhorn_max_iter=3, **kw))
    with pytest.raises(TypeError, match="both 'inner_max_iter' and 'sinkhorn_max_iter'"):
        ob.gromov_divergence(Cx, Cy, inner_max_iter=3, sinkhorn_max_iter=3, **kw)


def test_divergence_zero_on_isometric_copies_positive_otherwise_and_differentiable():
    x = cloud(20, 2, seed=35)
    perm = torch.randperm(20, generator=gen(36))
    Cx = dist(x)
    assert abs(float(ob.gromov_divergence(Cx, Cx[perm][:, perm], eps=0.05))) < 1e-12
    y = cloud(25, 2, seed=37) ** 3  # a different shape
    Cy = dist(y).requires_grad_()
    d = ob.gromov_divergence(Cx, Cy, eps=0.05)
    assert float(d.detach()) > 1e-3
    (g,) = torch.autograd.grad(d, Cy)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_dtype_device_and_numpy(device, dtype):
    Cx = dist(cloud(12, 2, seed=38)).to(device=device, dtype=dtype)
    Cy = dist(cloud(14, 2, seed=39)).to(device=device, dtype=dtype)
    res = ob.gromov_wasserstein(Cx, Cy.cpu().numpy() if device.type == "cpu" else Cy, eps=0.05,
                                tol=1e-6, sinkhorn_tol=1e-6)
    assert res.plan.dtype == dtype and res.plan.device.type == device.type
    assert res.value.device.type == device.type and res.converged


# ---------------------------------------------------------------- bad input

S = dist(cloud(4, 2, seed=40))
T = dist(cloud(5, 2, seed=41))


GW = ob.gromov_wasserstein
E = dict(eps=0.1)
Z45 = torch.zeros(4, 5, dtype=F64)


@bad_inputs(
    [
        (lambda: GW(S[:, :3], T, **E), ValueError, "Cx must be a square matrix"),
        (lambda: GW(S, T + torch.triu(torch.ones(5, 5, dtype=F64), 1), **E), ValueError,
         "Cy must be symmetric"),
        (lambda: GW(S, T, -ob.uniform(4, like=S), **E), ValueError, "a has negative"),
        (lambda: GW(S, T, None, 2 * ob.uniform(5, like=S), **E), ValueError, "same total mass"),
        (lambda: GW(S, T, ob.uniform(5, like=S), **E), ValueError, "a has 5 weights"),
        (lambda: GW(S, T, eps=0.0), ValueError, "eps must be"),
        (lambda: GW(S, T, **E, loss="l1"), ValueError, "loss must be one of"),
        (lambda: GW(S, T, **E, loss="kl"), ValueError, "Cy must be positive"),
        (lambda: GW(S, T.masked_fill(T > 0.5, float("nan")), **E), ValueError, "Cy contains NaN"),
        (lambda: GW(S, T, **E, M=Z45.T), ValueError, "M must have shape"),
        (lambda: GW(S, T, **E, M=Z45, alpha=1.5), ValueError, "alpha must be in"),
        (lambda: GW(S, T, **E, init=Z45.T + 1), ValueError, "init must have shape"),
        (lambda: GW(S, T, **E, init=Z45 - 1), ValueError, "init has negative"),
        (lambda: GW(S, T, **E, anderson=-1), ValueError, "anderson must be at least 0"),
        (lambda: GW(S, T, **E, max_iter=0), ValueError, "max_iter must be at least 1"),
        (lambda: GW(S, T, **E, sinkhorn_max_iter=0), ValueError,
         "sinkhorn_max_iter must be at least 1"),
        (lambda: GW(S, T, **E, sinkhorn_tol=-1.0), ValueError, "sinkhorn_tol must be"),
        (lambda: GW(S, T.float(), **E), TypeError, "dtype"),
        (lambda: GW("S", T, **E), TypeError, "Cx must be"),
        (lambda: ob.gromov_objective(S, T, torch.ones(4, 4, dtype=F64)), ValueError,
         "plan must have shape"),
        (lambda: ob.gromov_divergence(S, T, **E, init=None), TypeError, "does not take 'init'"),
        (lambda: GW(S, T, **E, inner_tol=1e-8, sinkhorn_tol=1e-8), TypeError,
         "both 'inner_tol' and 'sinkhorn_tol'"),
    ]
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
