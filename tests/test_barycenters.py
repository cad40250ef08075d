"""Barycenters and McCann interpolation: against POT, closed forms, batches, bad inputs."""

import warnings

import numpy as np
import ot
import pytest
import torch

import otbook as ob
from helpers import F64, cloud, random_spd

GRID = torch.linspace(0, 1, 30, dtype=F64)[:, None]
C_GRID = ob.cost_matrix(GRID, GRID)


def bumps(centres, floor=1e-3):
    h = torch.stack([torch.exp(-(GRID[:, 0] - c) ** 2 / 0.005) + floor for c in centres])
    return h / h.sum(-1, keepdim=True)


W3 = torch.tensor([0.2, 0.3, 0.5], dtype=F64)


# -- interpolation ---------------------------------------------------------------------------


def test_interpolate_endpoints_and_constant_speed():
    x, y = cloud(12, seed=0), cloud(12, seed=1, shift=2.0)
    P = ob.emd(None, None, ob.cost_matrix(x, y)).plan
    w2 = float(ob.emd(None, None, ob.cost_matrix(x, y)).value) ** 0.5
    p0, a0 = ob.interpolate(x, y, 0.0, plan=P)
    p1, a1 = ob.interpolate(x, y, 1.0, plan=P)
    # a permutation plan: the endpoints are the clouds themselves
    assert torch.allclose(torch.sort(p0[:, 0]).values, torch.sort(x[:, 0]).values)
    assert torch.allclose(torch.sort(p1[:, 0]).values, torch.sort(y[:, 0]).values)
    for t in (0.25, 0.5, 0.8):
        pt, at = ob.interpolate(x, y, t, plan=P)
        d = float(ob.emd(None, at, ob.cost_matrix(x, pt)).value) ** 0.5
        assert abs(d - t * w2) < 1e-9 * w2


def test_interpolate_map_gaussian_and_batch():
    S0, S1 = random_spd(2, 0), random_spd(2, 1)
    m0, m1 = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    T = ob.gaussian_map(m0, S0, m1, S1)
    x = cloud(5, seed=3)
    pts, a = ob.interpolate(x, t=0.3, map=T)
    assert torch.allclose(pts, 0.7 * x + 0.3 * T(x))
    assert torch.allclose(a, torch.full((5,), 0.2, dtype=F64))
    pts2, _ = ob.interpolate(x, t=0.3, map=T(x))
    assert torch.allclose(pts, pts2)
    # batched plans keep every pair, in row-major order
    xb, yb = cloud(8, seed=4).reshape(2, 4, 2), cloud(6, seed=5).reshape(2, 3, 2)
    Pb = torch.full((2, 4, 3), 1 / 12, dtype=F64)
    pb, wb = ob.interpolate(xb, yb, 0.5, plan=Pb)
    assert pb.shape == (2, 12, 2) and wb.shape == (2, 12)
    for k in range(2):
        pk, wk = ob.interpolate(xb[k], yb[k], 0.5, plan=Pb[k])
        assert torch.allclose(pk, pb[k]) and torch.allclose(wk, wb[k])


# -- Gaussian barycenters --------------------------------------------------------------------


def test_gaussian_barycenter_against_pot_and_closed_forms():
    covs = torch.stack([random_spd(3, k) for k in range(4)])
    means = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    bar = ob.gaussian_barycenter(means, covs, w)
    assert bar.converged
    mb, Cb = ot.gaussian.bures_wasserstein_barycenter(means.numpy(), covs.numpy(), w.numpy(),
                                                      num_iter=2000, eps=1e-14)
    np.testing.assert_allclose(bar.mean.numpy(), mb, atol=1e-10)
    np.testing.assert_allclose(bar.cov.numpy(), Cb, atol=1e-7)
    # commuting covariances: the square roots average
    D = torch.diag_embed(torch.rand(3, 3, dtype=F64) + 0.1)
    wc = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    com = ob.gaussian_barycenter(torch.zeros(3, 3, dtype=F64), D, wc)
    root = (wc[:, None, None] * D.sqrt()).sum(0)
    torch.testing.assert_close(com.cov, root @ root)
    # 1-D: standard deviations average
    sig = torch.tensor([0.5, 2.0, 3.0], dtype=F64)
    one = ob.gaussian_barycenter(torch.zeros(3, 1, dtype=F64), sig[:, None, None] ** 2, wc)
    assert abs(float(one.cov.sqrt()) - float((wc * sig).sum())) < 1e-10


def test_gaussian_barycenter_batched_equals_looped():
    covs = torch.stack([torch.stack([random_spd(2, 3 * b + k) for k in range(3)])
                        for b in range(2)])
    means = torch.randn(2, 3, 2, dtype=F64)
    bar = ob.gaussian_barycenter(means, covs)
    assert bar.converged.all()
    for b in range(2):
        one = ob.gaussian_barycenter(means[b], covs[b])
        torch.testing.assert_close(bar.cov[b], one.cov)
        torch.testing.assert_close(bar.mean[b], one.mean)


# -- fixed support ---------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-2, 1e-3])
def test_bregman_against_pot(eps):
    b = bumps((0.2, 0.6, 0.8))
    bar = ob.barycenter(b, C_GRID, eps=eps, weights=W3, tol=1e-11, max_iter=20_000)
    assert bar.converged
    ref = ot.bregman.barycenter(b.T.numpy(), C_GRID.numpy(), eps, weights=W3.numpy(),
                                method="sinkhorn_log", stopThr=1e-13, numItermax=50_000)
    np.testing.assert_allclose(bar.mass.numpy(), ref, atol=1e-9)


def test_debiased_against_pot_same_iterations():
    b = bumps((0.2, 0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bar = ob.barycenter(b, C_GRID, eps=1e-2, tol=1e-15, max_iter=200, debias=True)
        ref = ot.bregman.barycenter_debiased(b.T.numpy(), C_GRID.numpy(), 1e-2,
                                             method="sinkhorn_log", stopThr=1e-30,
                                             numItermax=200)
    np.testing.assert_allclose(bar.mass.numpy(), ref, atol=1e-10)


def test_grid_against_pot_and_dense():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(3, 8, 8, dtype=F64, generator=g) ** 4 + 1e-4
    imgs = imgs / imgs.sum((-2, -1), keepdim=True)
    bar = ob.barycenter(imgs, "grid", eps=1e-2, tol=1e-11, max_iter=20_000)
    ref = ot.bregman.convolutional_barycenter2d(imgs.numpy(), 1e-2, method="sinkhorn_log",
                                                stopThr=1e-13, numItermax=50_000)
    np.testing.assert_allclose(bar.mass.numpy(), ref, atol=1e-9)
    # the separable kernel equals the dense one on the grid's points
    s = torch.linspace(0, 1, 8, dtype=F64)
    pts = torch.stack(torch.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2)
    dense = ob.barycenter(imgs.reshape(3, -1), ob.cost_matrix(pts, pts), eps=1e-2, tol=1e-11,
                          max_iter=20_000)
    torch.testing.assert_close(dense.mass.reshape(8, 8), bar.mass)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deb = ob.barycenter(imgs, "grid", eps=1e-2, tol=1e-15, max_iter=100, debias=True)
        refd = ot.bregman.convolutional_barycenter2d_debiased(
            imgs.numpy(), 1e-2, method="sinkhorn_log", stopThr=1e-30, numItermax=100)
    np.testing.assert_allclose(deb.mass.numpy(), refd, atol=1e-10)


def test_exact_fixed_support_and_1d_quantiles():
    b = bumps((0.2, 0.7), floor=0.0)
    ex = ob.barycenter(b, C_GRID)
    ref = ot.lp.barycenter(b.T.numpy(), C_GRID.numpy(), np.array([0.5, 0.5]))
    np.testing.assert_allclose(ex.mass.numpy(), ref, atol=1e-8)
    # 1-D: the barycenter's quantile function is the average of the quantile functions, so
    # its mean is the average of the means, up to the grid's resolution
    mean = float((ex.mass * GRID[:, 0]).sum())
    assert abs(mean - float((b * GRID[:, 0]).sum(-1).mean())) < float(GRID[1, 0]) / 2


def test_fixed_support_batched_equals_looped():
    b = torch.stack([bumps((0.2, 0.6, 0.8)), bumps((0.1, 0.5, 0.9))])
    w = torch.stack([W3, W3.flip(0)])
    bar = ob.barycenter(b, C_GRID, eps=1e-2, weights=w, tol=1e-11, max_iter=5000)
    assert bar.mass.shape == (2, 30) and bool(bar.converged.all())
    for k in range(2):
        one = ob.barycenter(b[k], C_GRID, eps=1e-2, weights=w[k], tol=1e-11, max_iter=5000)
        torch.testing.assert_close(one.mass, bar.mass[k])


# -- free support ----------------------------------------------------------------------------


def test_free_support_against_pot():
    clouds = [cloud(10, seed=k, shift=float(k)) for k in range(3)]
    X0 = cloud(10, seed=9)
    bar = ob.barycenter(clouds, weights=W3, support=X0, tol=1e-12, max_iter=100)
    assert bar.converged
    ref = ot.lp.free_support_barycenter([c.numpy() for c in clouds], [np.full(10, 0.1)] * 3,
                                        X0.numpy(), weights=W3.numpy(), numItermax=100,
                                        stopThr=1e-14)
    np.testing.assert_allclose(bar.support.numpy(), ref, atol=1e-10)
    # value: the weighted OT costs to the measures
    costs = [float(ob.emd(None, None, ob.cost_matrix(bar.support, c)).value) for c in clouds]
    assert abs(float(bar.value) - float((W3 * torch.tensor(costs, dtype=F64)).sum())) < 1e-10


def test_free_support_1d_is_quantile_averaging_and_unequal_sizes():
    g = torch.Generator().manual_seed(1)
    a = torch.sort(torch.randn(20, 1, dtype=F64, generator=g), 0).values
    b = torch.sort(3 + 2 * torch.rand(20, 1, dtype=F64, generator=g), 0).values
    bar = ob.barycenter([a, b], weights=[0.25, 0.75])
    torch.testing.assert_close(torch.sort(bar.support, 0).values, 0.25 * a + 0.75 * b)
    # clouds of different sizes are padded with weight-0 points
    c = b[::2]
    bar2 = ob.barycenter([a, c], support=a.clone(), max_iter=50)
    assert bar2.plans.shape == (2, 20, 20)
    assert float(bar2.plans[1, :, 10:].sum()) == 0.0


def test_free_support_sinkhorn_runs_batched():
    clouds = [cloud(10, seed=k, shift=float(k)) for k in range(2)]
    bar = ob.barycenter(clouds, eps=2.0, tol=1e-8, support=cloud(10, seed=9))
    assert bar.converged and bar.extra["method"] == "free-sinkhorn"
    assert torch.allclose(bar.plans.sum((-2, -1)), torch.ones(2, dtype=F64))


def test_dtype_is_kept():
    b = bumps((0.2, 0.6)).float()
    bar = ob.barycenter(b, C_GRID.float(), eps=1e-2, tol=1e-5)
    assert bar.mass.dtype == torch.float32 and bar.converged
    img = ob.barycenter(b.reshape(2, 5, 6), "grid", eps=1e-2, tol=1e-5)
    assert img.mass.dtype == torch.float32 and img.mass.shape == (5, 6)
    free = ob.barycenter([cloud(6, dtype=torch.float32), cloud(6, seed=1, dtype=torch.float32)])
    assert free.support.dtype == torch.float32


# -- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID, eps=0.01, weights=W3), "weights"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID, eps=0.0), "eps"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID, eps=-1.0), "eps"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID, eps=float("nan")), "eps"),
    (lambda: ob.barycenter([cloud(5), cloud(5)], support=torch.full((3, 2), float("nan"),
                                                                    dtype=F64)), "support"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID[:, :5], eps=0.01), "C"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)) * torch.tensor([[1.0], [2.0]], dtype=F64),
                           C_GRID, eps=0.01), "same total mass"),
    (lambda: ob.barycenter(torch.full((2, 30), float("nan"), dtype=F64), C_GRID, eps=0.01),
     "measures"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), C_GRID, eps=0.01, debias=True,
                           weights=[1.0, -1.0]), "weights"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), None, eps=0.01), "C"),
    (lambda: ob.barycenter(bumps((0.2, 0.6)), "grid", eps=0.01), "measures"),
    (lambda: ob.barycenter([cloud(5), cloud(5)], support=cloud(4, d=3)), "support"),
    (lambda: ob.barycenter([cloud(5), cloud(5, d=3)]), "measures\\[1\\]"),
    (lambda: ob.barycenter([cloud(5), cloud(5)], masses=[None]), "masses"),
    (lambda: ob.barycenter([], eps=0.1), "measures"),
    (lambda: ob.barycenter([cloud(5), cloud(5)], C_GRID), "C=None"),
    (lambda: ob.gaussian_barycenter(torch.zeros(2, 3), torch.eye(2).expand(2, 2, 2)),
     "means"),
    (lambda: ob.gaussian_barycenter(torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2),
                                    weights=[1.0, 1.0, 1.0]), "weights"),
    (lambda: ob.gaussian_barycenter(torch.zeros(2, 2), -torch.eye(2).expand(2, 2, 2)), "covs"),
    (lambda: ob.interpolate(cloud(3), cloud(4), 0.5, plan=torch.ones(3, 3)), "plan"),
    (lambda: ob.interpolate(cloud(3), cloud(3), 1.5, plan=torch.ones(3, 3)), "t"),
    (lambda: ob.interpolate(cloud(3), cloud(3), 0.5), "plan and map"),
    (lambda: ob.interpolate(cloud(3), t=0.5, map=cloud(4)), "map"),
])
def test_bad_inputs_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
