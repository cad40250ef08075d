"""Transport maps: barycentric projection, soft labels, the entropic map, the Monge gap, fit_map."""

import math

import numpy as np
import ot
import pytest
import torch
from torch import nn

import otbook as ob
from helpers import F64, bad_inputs, gen, raises_clearly


def gaussians(seed=0):
    m1 = torch.tensor([0.0, 0.0], dtype=F64)
    S1 = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
    m2 = torch.tensor([2.0, 1.0], dtype=F64)
    S2 = torch.tensor([[0.5, -0.3], [-0.3, 1.5]], dtype=F64)
    return m1, S1, m2, S2


def sample(m, S, n, g):
    return m + torch.randn(n, len(m), generator=g, dtype=m.dtype) @ torch.linalg.cholesky(S).T


def uvp(T_hat, T_star, x, var):
    """Unexplained variance (%) of the map error, relative to the target's variance."""
    return float(100 * ((T_hat - T_star(x)) ** 2).sum(1).mean() / var)


# ---------------------------------------------------------------- barycentric projection


def test_barycentric_projection_undoes_a_shuffle():
    g = gen(0)
    x = torch.randn(60, 3, generator=g, dtype=F64)
    perm = torch.randperm(60, generator=g)
    y = x[perm]
    plan = ob.emd(None, None, ob.cost_matrix(x, y)).plan
    assert torch.equal((plan > 0).sum(1), torch.ones(60, dtype=torch.long))  # a permutation
    torch.testing.assert_close(ob.barycentric_projection(plan, y), x, atol=1e-12, rtol=0)


def test_barycentric_projection_formula_batched_and_1d(device, dtype):
    g = gen(1)
    P = torch.rand(4, 7, 5, generator=g, dtype=F64).to(device, dtype)
    y = torch.randn(4, 5, 3, generator=g, dtype=F64).to(device, dtype)
    out = ob.barycentric_projection(P, y)
    assert out.shape == (4, 7, 3) and out.dtype == dtype and out.device.type == device.type
    for k in range(4):
        ref = (P[k] @ y[k]) / P[k].sum(1, keepdim=True)
        torch.testing.assert_close(out[k], ref)
    y1 = y[0, :, 0]
    torch.testing.assert_close(ob.barycentric_projection(P[0], y1), (P[0] @ y1) / P[0].sum(1))
    # NumPy inputs take float64, and mixed inputs take the tensor's dtype
    assert ob.barycentric_projection(P[0].cpu().numpy(), y[0].cpu().numpy()).dtype == (
        torch.float64 if dtype == torch.float64 else torch.float32)
    assert ob.barycentric_projection(P[0].cpu().numpy().astype(np.float64), y[0]).dtype == dtype


def test_barycentric_projection_shrinks_by_the_conditional_variance():
    """Law of total variance: Var(Y) = Var(E[Y | X]) + E[Var(Y | X)], for any plan."""
    g = gen(2)
    x = torch.randn(80, 2, generator=g, dtype=F64)
    y = torch.randn(90, 2, generator=g, dtype=F64) * 1.5 + 1.0
    C = ob.cost_matrix(x, y)
    spreads = []
    for eps in [0.1, 1.0, 10.0]:
        P = ob.sinkhorn(None, None, C, eps, tol=1e-12).plan
        a = P.sum(1)
        T = ob.barycentric_projection(P, y)
        mean = (a[:, None] * T).sum(0)
        var_T = (a * ((T - mean) ** 2).sum(1)).sum()
        var_y = (P.sum(0) * ((y - mean) ** 2).sum(1)).sum()
        cond = (P * ob.cost_matrix(T, y)).sum()  # sum_ij P_ij |y_j - T(x_i)|^2
        assert abs(float(var_y - var_T - cond)) < 1e-10
        spreads.append(float(var_T))
    assert spreads[0] > spreads[1] > spreads[2]  # more blur, more shrinkage


def test_barycentric_projection_is_differentiable():
    P = torch.rand(5, 4, dtype=F64, requires_grad=True)
    y = torch.randn(4, 2, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(ob.barycentric_projection, (P, y))


def test_soft_labels():
    g = gen(3)
    x = torch.randn(40, 2, generator=g, dtype=F64)
    perm = torch.randperm(40, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    P = ob.emd(None, None, ob.cost_matrix(x, x[perm])).plan
    S = ob.soft_labels(P, labels[perm])
    assert S.shape == (40, 3)
    torch.testing.assert_close(S, nn.functional.one_hot(labels, 3).to(F64))  # the shuffle undone
    Q = ob.sinkhorn(None, None, ob.cost_matrix(x, x[perm]), 1.0).plan
    S = ob.soft_labels(Q, labels[perm].numpy(), n_classes=5)
    assert S.shape == (40, 5) and torch.allclose(S.sum(1), torch.ones(40, dtype=F64))
    assert float(S[:, 3:].abs().max()) == 0.0 and float(S.min()) >= 0


# ---------------------------------------------------------------- the entropic map


def test_entropic_map_in_sample_is_the_barycentric_projection_of_pot_plan():
    g = gen(4)
    x = torch.randn(50, 2, generator=g, dtype=F64)
    y = torch.randn(70, 2, generator=g, dtype=F64) + 1.0
    a = torch.rand(50, generator=g, dtype=F64) + 0.1
    a = a / a.sum()
    eps = 0.2
    T = ob.entropic_map(x, y, eps, a=a, tol=1e-12)
    assert T.converged and T.n_iter > 0
    P = ot.sinkhorn(a.numpy(), np.full(70, 1 / 70), ob.cost_matrix(x, y).numpy(), eps,
                    method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
    ref = (P @ y.numpy()) / P.sum(1, keepdims=True)
    np.testing.assert_allclose(T(x).numpy(), ref, atol=1e-9)
    torch.testing.assert_close(T(x), ob.barycentric_projection(T.result.plan, y))


def test_entropic_map_is_identity_minus_half_gradient_of_potential():
    g = gen(5)
    x = torch.randn(30, 2, generator=g, dtype=F64)
    y = torch.randn(40, 2, generator=g, dtype=F64)
    T = ob.entropic_map(x, y, 0.3)
    z = torch.randn(10, 2, generator=g, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(T.potential(z).sum(), z)
    torch.testing.assert_close(T(z), z - 0.5 * grad)
    # on the training points the extended potential is Sinkhorn's f
    torch.testing.assert_close(T.potential(x), T.result.f, atol=1e-6, rtol=0)


def test_entropic_map_approaches_the_gaussian_map():
    m1, S1, m2, S2 = gaussians()
    g = gen(6)
    x, y = sample(m1, S1, 1000, g), sample(m2, S2, 1000, g)
    xt = sample(m1, S1, 2000, g)
    T_star = ob.gaussian_map(m1, S1, m2, S2)
    var = float(torch.trace(S2))
    errs = [uvp(ob.entropic_map(x, y, eps, eps_scaling=0.5)(xt), T_star, xt, var)
            for eps in [2.0, 0.5, 0.1]]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 3.0 and errs[0] > 4 * errs[2], errs


def test_entropic_map_dtype_device_blocks_and_warning(device):
    g = gen(7)
    x = torch.randn(20, 2, generator=g).to(device)
    y = torch.randn(30, 2, generator=g).to(device)
    T = ob.entropic_map(x, y, 0.5, tol=1e-4)
    out = T(torch.randn(5, 2).to(device))
    assert out.dtype == torch.float32 and out.device.type == device.type
    z = torch.randn(50, 2).to(device)
    full, pot = T(z), T.potential(z)
    T.block_rows = 7  # several blocks: the same answer
    torch.testing.assert_close(T(z), full)
    torch.testing.assert_close(T.potential(z), pot)
    T.block_rows = 0
    with pytest.raises(ValueError, match="block_rows must be at least 1"):
        T(z)
    with pytest.warns(RuntimeWarning, match="entropic_map: the Sinkhorn solve did not converge"):
        T = ob.entropic_map(x, y + 5, 1e-3, max_iter=3)
    assert T.converged is False
    assert "converged=False" in repr(T)


# ---------------------------------------------------------------- the Monge gap


def test_monge_gap_bounds_and_exact_gap():
    g = gen(9)
    x = torch.randn(60, 2, generator=g, dtype=F64)
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)  # SPD: a gradient of a convex function
    n = 60
    y = x @ A + 1.0
    eps = ob.eps_relative(ob.cost_matrix(x, y), 0.1)
    gap_opt = float(ob.monge_gap(x, y, eps, tol=1e-8))
    assert -eps * math.log(n) - 1e-9 <= gap_opt <= 1e-9
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    y = x @ R.T
    eps = ob.eps_relative(ob.cost_matrix(x, y), 0.1)
    gap = float(ob.monge_gap(x, y, eps, tol=1e-8))
    exact = float(((x - y) ** 2).sum(1).mean() - ob.emd(None, None, ob.cost_matrix(x, y)).value)
    assert exact > 0.5
    assert exact - eps * math.log(n) - 1e-9 <= gap <= exact + 1e-9


def test_monge_gap_gradient_points_to_optimal_maps():
    g = gen(10)
    x = torch.randn(40, 2, generator=g, dtype=F64)
    y = (x @ torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64).T).requires_grad_()
    opt = torch.optim.SGD([y], lr=0.5)
    gaps = []
    for _ in range(20):
        gap = ob.monge_gap(x, y, 0.3, tol=1e-4)
        opt.zero_grad()
        gap.backward()
        opt.step()
        gaps.append(float(gap.detach()))
    assert gaps[-1] < 0.2 * gaps[0]


# ---------------------------------------------------------------- training


def test_fit_map_icnn_recovers_the_gaussian_map():
    torch.manual_seed(0)
    m1, S1, m2, S2 = gaussians()
    g = gen(11)
    x, y = sample(m1, S1, 200, g), sample(m2, S2, 200, g)
    net = ob.ICNN(2, hidden=(16,), dtype=F64)
    fit = ob.fit_map(net, x, y, eps=0.2, n_steps=100, lr=0.05, generator=g, sinkhorn_tol=1e-2)
    assert fit.converged and fit.n_iter == 100
    assert set(fit.losses) == {"fit", "monge_gap", "total"} and fit.losses["fit"].shape == (100,)
    assert float(fit.losses["fit"][-10:].mean()) < 0.05 * float(fit.losses["fit"][0])
    xt = sample(m1, S1, 1000, g)
    err = uvp(fit(xt).detach(), ob.gaussian_map(m1, S1, m2, S2), xt, float(torch.trace(S2)))
    assert err < 5.0, err
    assert float(torch.linalg.eigvalsh(net.hessian(xt[:50])).min()) >= -1e-10


class Residual(nn.Module):
    def __init__(self, d=2, h=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, d))

    def forward(self, x):
        return x + self.net(x)


def test_fit_map_with_monge_gap_reports_curves_and_warns():
    torch.manual_seed(0)
    g = gen(12)
    x = torch.randn(64, 2, generator=g)
    y = torch.randn(64, 2, generator=g) + 2.0
    with pytest.warns(RuntimeWarning, match="still falling"):  # a slow, steady descent
        slow = ob.fit_map(ob.ICNN(2, hidden=(8,)), x, y, eps=0.2, n_steps=20, lr=1e-3, generator=g)
    assert slow.converged is False
    with pytest.warns(RuntimeWarning, match="too few to judge"):
        ob.fit_map(ob.ICNN(2, hidden=(8,)), x, y, eps=0.2, n_steps=5, generator=g)
    with pytest.warns(RuntimeWarning) as caught:
        short = ob.fit_map(ob.ICNN(2, hidden=(8,)), x, y, eps=0.01, n_steps=3, generator=g,
                           sinkhorn_max_iter=1)
    messages = [str(w.message) for w in caught]
    assert any("a Sinkhorn solve inside the loss did not converge at 3 of 3" in m for m in messages)
    assert any("too few to judge" in m for m in messages)
    assert short.extra["sinkhorn_unconverged"] == 3
    # a cosine schedule ends with a learning rate near zero
    net = ob.ICNN(2, hidden=(8,))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    ob.fit_map(net, x, y, eps=0.2, n_steps=10, optimizer=opt, lr_schedule="cosine", warn=False)
    assert abs(opt.param_groups[0]["lr"] - 0.1 * 0.5 * (1 + math.cos(math.pi * 0.9))) < 1e-12
    model = Residual()
    fit = ob.fit_map(model, x, y, eps=0.2, monge_gap_weight=1.0, n_steps=20, lr=1e-3,
                     generator=g, warn=False)
    assert bool((fit.losses["monge_gap"] != 0).all())
    torch.testing.assert_close(fit.losses["total"], fit.losses["fit"] + fit.losses["monge_gap"])
    assert "MapFit(model=Residual" in repr(fit) and fit(x).shape == (64, 2)
    # the same generator seed gives the same run
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        m = Residual()
        runs.append(ob.fit_map(m, x, y, eps=0.1, n_steps=5, generator=gen(3), warn=False).losses["total"])
    torch.testing.assert_close(runs[0], runs[1])


def test_fit_map_on_device(device):
    net = ob.ICNN(2, hidden=(8,)).to(device)
    x = torch.randn(32, 2, device=device)
    fit = ob.fit_map(net, x, x + 1, eps=0.1, n_steps=4, batch_size=16, warn=False,
                     generator=torch.Generator(device=device).manual_seed(0))
    assert fit.losses["total"].device.type == device.type and fit(x).device.type == device.type
    # without a generator the batches come from the global generator of the data's device
    fit = ob.fit_map(net, x, x + 1, eps=0.1, n_steps=2, batch_size=16, warn=False)
    assert fit.losses["total"].shape == (2,)


# ---------------------------------------------------------------- bad inputs


P3 = torch.full((3, 4), 1 / 12, dtype=F64)
Y4 = torch.randn(4, 2, dtype=F64)
X = torch.randn(10, 2, dtype=F64)
m1, S1, m2, S2 = gaussians()


@bad_inputs(
    [
        (lambda: ob.barycentric_projection(P3, torch.randn(5, 2, dtype=F64)), ValueError,
         "y has 5 points but plan has 4 columns"),
        (lambda: ob.barycentric_projection(P3.index_fill(0, torch.tensor([1]), 0.0), Y4), ValueError,
         "plan has 1 row\\(s\\) with zero mass \\(first: row 1\\)"),
        (lambda: ob.barycentric_projection(-P3, Y4), ValueError, "plan has negative entries"),
        (lambda: ob.barycentric_projection(P3.masked_fill(P3 > 0, np.nan), Y4), ValueError,
         "plan contains NaN"),
        (lambda: ob.barycentric_projection(P3[0], Y4), ValueError, "plan must be a matrix"),
        (lambda: ob.barycentric_projection(P3, torch.tensor(1.0, dtype=F64)), ValueError, "y must have shape"),
        (lambda: ob.barycentric_projection(P3, Y4.float()), TypeError, "plan has dtype torch.float64 but y"),
        (lambda: ob.barycentric_projection("P", Y4), TypeError, "plan must be"),
        (lambda: ob.soft_labels(P3, torch.tensor([0.0, 1.0, 1.0, 0.0])), TypeError, "integer class labels"),
        (lambda: ob.soft_labels(P3, torch.tensor([0, 1, 2])), ValueError, "labels must have shape \\(4,\\)"),
        (lambda: ob.soft_labels(P3, torch.tensor([0, 1, 2, -1])), ValueError, "labels has negative"),
        (lambda: ob.soft_labels(P3, torch.tensor([0, 1, 2, 3]), n_classes=3), ValueError, "n_classes is 3"),
        (lambda: ob.soft_labels(P3[None], torch.tensor([0, 1, 2, 3])), ValueError, r"plan must be a matrix \(n, m\)"),
        (lambda: ob.gaussian_map(m1, -S1, m2, S2), ValueError, "S1 must be positive semi-definite"),
        (lambda: ob.gaussian_map(m1, S1, m2, torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)), ValueError,
         "S2 must be positive semi-definite"),
        (lambda: ob.entropic_map(X, torch.randn(5, 3, dtype=F64), 0.1), ValueError, "same feature dimension"),
        (lambda: ob.entropic_map(X, X, 0.0), ValueError, "eps must be"),
        (lambda: ob.entropic_map(X, X, 0.1, a=torch.ones(10, dtype=F64)), ValueError, "same total mass"),
        (lambda: ob.entropic_map(X[None], X[None], 0.1), ValueError, "x must have shape \\(n, d\\)"),
        (lambda: ob.entropic_map(X, X, 0.1)(torch.randn(3, 5, dtype=F64)), ValueError, "same feature dimension"),
        (lambda: ob.entropic_map(X, X, 0.1)(torch.randn(3, 2)), TypeError, "dtype"),
        (lambda: ob.monge_gap(X, X[:5], 0.1), ValueError, "x has 10 points, y has 5"),
        (lambda: ob.monge_gap(X, X, -1.0), ValueError, "eps must be"),
        (lambda: ob.monge_gap(X, X[:, :1], 0.1), ValueError, "same feature dimension"),
        (lambda: ob.fit_map(ob.ICNN(2), X, X, eps=0.1), TypeError, "model has parameters of dtype torch.float32"),
        (lambda: ob.fit_map(ob.ICNN(3, dtype=F64), X, X, eps=0.1), ValueError, "ICNN on R\\^3"),
        (lambda: ob.fit_map(lambda z: z, X, X, eps=0.1), TypeError, "model must be a torch.nn.Module"),
        (lambda: ob.fit_map(nn.Linear(2, 3, dtype=F64), X, X, eps=0.1), ValueError, "model must map points"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.0), ValueError, "eps must be"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, n_steps=0), ValueError, "n_steps must be at least 1"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, batch_size=1), ValueError, "batch_size"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, monge_gap_weight=-1.0), ValueError,
         "monge_gap_weight"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, optimizer="adam"), TypeError, "optimizer"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, lr_schedule="step"), ValueError,
         "lr_schedule must be"),
        (lambda: ob.fit_map(ob.ICNN(2, dtype=F64), X, X, eps=0.1, generator=0), TypeError, "generator"),
    ],
)
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
