"""Kernel discrepancies (MMD, energy distance): closed forms, hand computations, GeomLoss, blocks,
the large-eps limit of the Sinkhorn divergence, bad input."""

import math
import os

import numpy as np
import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, gaussian_sample, gen, raises_clearly


def test_gaussian_mmd_closed_form():
    m1, S1 = torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    m2, S2 = torch.tensor([0.8, -0.4], dtype=F64), torch.tensor([[0.6, -0.2], [-0.2, 0.9]], dtype=F64)
    closed = ob.mmd_gaussians(m1, S1, m2, S2, bandwidth=1.2)
    x, y = gaussian_sample(m1, S1, 3000, seed=19), gaussian_sample(m2, S2, 3000, seed=20)
    est = ob.mmd(x, y, bandwidth=1.2, unbiased=True)  # unbiased: only sampling noise is left
    assert abs(float(est) - float(closed)) < 0.05 * float(closed)
    assert float(ob.mmd_gaussians(m1, S1, m1, S1)) == 0.0
    # the closed form agrees with a direct quadrature in 1-D
    s = torch.linspace(-12, 12, 4001, dtype=F64)
    def dens(m, v):
        return torch.exp(-(s - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)
    w = (s[1] - s[0]) * (dens(0.0, 1.0) - dens(1.0, 0.25))
    K = torch.exp(-(s[:, None] - s[None, :]) ** 2 / 2)
    quad = w @ K @ w
    one_d = ob.mmd_gaussians(torch.zeros(1, dtype=F64), torch.ones(1, 1, dtype=F64), torch.ones(1, dtype=F64),
                             0.25 * torch.ones(1, 1, dtype=F64))
    assert abs(float(quad) - float(one_d)) < 1e-10


def test_energy_distance_and_v_statistic_by_hand():
    x = torch.randn(30, 2, generator=gen(21), dtype=F64)
    y = torch.randn(20, 2, generator=gen(22), dtype=F64) + 0.5
    # exact differences (the matrix-product expansion loses digits near 0)
    D = lambda p, q: torch.cdist(p, q, compute_mode="donot_use_mm_for_euclid_dist")  # noqa: E731
    energy = 2 * D(x, y).mean() - D(x, x).mean() - D(y, y).mean()
    assert abs(float(ob.mmd(x, y, kernel="energy")) - float(energy)) < 1e-12
    K = lambda p, q: torch.exp(-D(p, q) ** 2 / (2 * 0.7**2))  # noqa: E731
    v = K(x, x).mean() + K(y, y).mean() - 2 * K(x, y).mean()
    assert abs(float(ob.mmd(x, y, bandwidth=0.7)) - float(v)) < 1e-12
    n, m = 30, 20
    u = ((K(x, x).sum() - n) / (n * (n - 1)) + (K(y, y).sum() - m) / (m * (m - 1)) - 2 * K(x, y).mean())
    assert abs(float(ob.mmd(x, y, bandwidth=0.7, unbiased=True)) - float(u)) < 1e-12
    # symmetric, zero on identical clouds, and a list of bandwidths averages the kernels
    assert abs(float(ob.mmd(x, y)) - float(ob.mmd(y, x))) < 1e-14
    assert float(ob.mmd(x, x)) == 0.0
    multi = ob.mmd(x, y, bandwidth=[0.5, 2.0])
    assert abs(float(multi) - 0.5 * float(ob.mmd(x, y, bandwidth=0.5) + ob.mmd(x, y, bandwidth=2.0))) < 1e-12


def test_kernels_imq_laplacian_and_callable():
    x = torch.randn(15, 3, generator=gen(23), dtype=F64)
    y = torch.randn(12, 3, generator=gen(24), dtype=F64)
    d2 = torch.cdist(x, y) ** 2
    torch.testing.assert_close(ob.kernel_matrix(x, y, kernel="imq", bandwidth=2.0), (1 + d2 / 4) ** -0.5)
    torch.testing.assert_close(ob.kernel_matrix(x, y, kernel="laplacian", bandwidth=2.0), torch.exp(-d2.sqrt() / 2))
    lin = ob.mmd(x, y, kernel=lambda p, q: p @ q.transpose(-1, -2))  # linear kernel: |mean x - mean y|^2
    assert abs(float(lin) - float(((x.mean(0) - y.mean(0)) ** 2).sum())) < 1e-12


def test_weighted_and_unbiased_weighted():
    x = torch.randn(25, 2, generator=gen(25), dtype=F64)
    y = torch.randn(25, 2, generator=gen(26), dtype=F64)
    a = torch.rand(25, generator=gen(27), dtype=F64) + 0.1
    a = a / a.sum()
    # duplicating points with half the weight changes nothing for the V-statistic
    xx = torch.cat([x, x])
    aa = torch.cat([a, a]) / 2
    assert abs(float(ob.mmd(x, y, a=a)) - float(ob.mmd(xx, y, a=aa))) < 1e-12
    # uniform weights given explicitly = default, for both estimators
    u = ob.uniform(25, like=x)
    for unbiased in (False, True):
        assert abs(float(ob.mmd(x, y, a=u, b=u, unbiased=unbiased)) - float(ob.mmd(x, y, unbiased=unbiased))) < 1e-12


def test_blockwise_equals_dense_with_gradients():
    x = torch.randn(120, 3, generator=gen(28), dtype=F64).requires_grad_()
    y = torch.randn(80, 3, generator=gen(29), dtype=F64)
    out = []
    for budget in (1e9, 1e5):  # the second forces blocks of a few dozen rows
        for kernel in ("gaussian", "energy"):
            v = ob.mmd(x, y, kernel=kernel, memory_budget=budget, unbiased=kernel == "gaussian")
            (g,) = torch.autograd.grad(v, x)
            out.append((v.detach(), g))
    for (v1, g1), (v2, g2) in zip(out[:2], out[2:]):
        assert abs(float(v1) - float(v2)) < 1e-9 * abs(float(v1))  # cdist rounds per block
        torch.testing.assert_close(g1, g2, atol=1e-9, rtol=1e-7)


def test_matches_geomloss():
    os.environ.setdefault("KEOPS_VERBOSE", "0")
    geomloss = pytest.importorskip("geomloss")
    x = torch.randn(50, 3, generator=gen(30), dtype=F64)
    y = torch.randn(40, 3, generator=gen(31), dtype=F64) + 0.5
    # GeomLoss's kernel losses are half the squared MMD
    gl = geomloss.SamplesLoss("gaussian", blur=0.8, backend="tensorized")(x, y)
    assert abs(float(ob.mmd(x, y, bandwidth=0.8)) - 2 * float(gl)) < 1e-12
    gl = geomloss.SamplesLoss("energy", backend="tensorized")(x, y)
    assert abs(float(ob.mmd(x, y, kernel="energy")) - 2 * float(gl)) < 1e-4 * float(gl)


def test_sinkhorn_divergence_tends_to_half_the_energy_distance():
    # S_eps with cost |x - y| tends to (1/2) MMD^2 with kernel -|x - y|: half the energy distance
    x = torch.randn(40, 2, generator=gen(32), dtype=F64)
    y = torch.randn(30, 2, generator=gen(33), dtype=F64) * 0.6 + 0.4
    half_energy = 0.5 * float(ob.mmd(x, y, kernel="energy"))
    gaps = []
    for eps in (1e2, 1e3, 1e4):
        s = ob.sinkhorn_divergence(x, y, eps, cost="euclidean", tol=1e-12)
        gaps.append(float(s) - half_energy)
    assert abs(gaps[-1]) < 1e-4 * half_energy
    assert abs(gaps[1] / gaps[2] - 10) < 0.5 and abs(gaps[0] / gaps[1] - 10) < 0.5  # an O(1/eps) gap


X = torch.rand(5, 2, dtype=F64)
Y = torch.rand(6, 2, dtype=F64)


@bad_inputs([
    (lambda: ob.mmd(X, Y, bandwidth=0.0), ValueError, "bandwidth must be a finite number > 0"),
    (lambda: ob.mmd(X, Y, bandwidth=-1.0), ValueError, "bandwidth must be"),
    (lambda: ob.mmd(X, Y, bandwidth=[1.0, 0.0]), ValueError, "bandwidth must be"),
    (lambda: ob.mmd(X, Y, kernel="cauchy"), ValueError, "kernel must be one of"),
    (lambda: ob.mmd(X, Y, a=-torch.ones(5, dtype=F64)), ValueError, "a has negative"),
    (lambda: ob.mmd(X, Y, kernel="energy", b=2 * torch.ones(6, dtype=F64) / 6), ValueError, "same total mass"),
    (lambda: ob.mmd(X[:1], Y, unbiased=True), ValueError, "at least two points"),
    (lambda: ob.mmd(X, torch.tensor([[np.nan, 0.0]])), ValueError, "y contains NaN"),
    (lambda: ob.mmd(X, Y, kernel=lambda p, q: (p @ q.T)[:, :1]), ValueError, "kernel callable must return"),
    (lambda: ob.mmd_gaussians(torch.zeros(2), torch.eye(2), torch.zeros(2), -torch.eye(2)), ValueError, "S2 must be positive"),
    (lambda: ob.mmd_gaussians(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2), bandwidth=0), ValueError, "bandwidth"),
])
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
