"""otbook.generative: OT pairings, flow matching, semi-discrete OT and the WGAN-GP critic, against
POT, closed forms and loops."""

import math

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import otbook as ob
from tests.helpers import F64, cloud, gen


# --------------------------------------------------------------------------------------------
# ot_pairing


@pytest.mark.parametrize("seed", range(3))
def test_exact_pairing_is_the_optimal_assignment(seed):
    x0, x1 = cloud(25, seed=seed), cloud(25, seed=seed + 10, shift=1.0)
    i, j = ob.ot_pairing(x0, x1)
    C = ob.cost_matrix(x0, x1).numpy()
    rows, cols = linear_sum_assignment(C)
    assert i.tolist() == list(range(25))
    assert C[i, j].sum() == pytest.approx(C[rows, cols].sum(), rel=1e-12)
    assert sorted(j.tolist()) == list(range(25))          # a permutation
    assert C[i, j].mean() == pytest.approx(ot.emd2([], [], C), rel=1e-10)


def test_entropic_pairs_are_draws_from_the_sinkhorn_plan():
    x0, x1 = cloud(6, seed=1), cloud(5, seed=2)
    eps = 0.5
    i, j = ob.ot_pairing(x0, x1, eps, n_pairs=200_000, generator=gen(3), tol=1e-10)
    counts = np.zeros((6, 5))
    np.add.at(counts, (i.numpy(), j.numpy()), 1)
    C = ob.cost_matrix(x0, x1).numpy()
    plan = ot.sinkhorn(np.full(6, 1 / 6), np.full(5, 1 / 5), C, eps, stopThr=1e-12,
                       numItermax=100_000)
    np.testing.assert_allclose(counts / counts.sum(), plan, atol=4e-3)


def test_exact_pairing_of_unequal_batches_stays_on_the_plan():
    x0, x1 = cloud(8, seed=4), cloud(5, seed=5)
    i, j = ob.ot_pairing(x0, x1, generator=gen(0))
    plan = ob.emd(None, None, ob.cost_matrix(x0, x1)).plan
    assert i.shape == (8,) and bool((plan[i, j] > 0).all())


def test_pairing_batched_equals_looped():
    x0 = torch.randn(3, 10, 2, generator=gen(0), dtype=F64)
    x1 = torch.randn(3, 10, 2, generator=gen(1), dtype=F64) + 2
    i, j = ob.ot_pairing(x0, x1)
    for k in range(3):
        ik, jk = ob.ot_pairing(x0[k], x1[k])
        assert torch.equal(i[k], ik) and torch.equal(j[k], jk)


# --------------------------------------------------------------------------------------------
# flow matching loss, sampler, straightness


def test_flow_matching_loss_closed_forms():
    x0, x1 = cloud(50, seed=0), cloud(50, seed=1, shift=3.0)
    # the exact conditional velocity has zero loss
    d = x1 - x0
    t = torch.rand(50, generator=gen(2), dtype=F64)

    def cond_velocity(x, s):
        return d
    assert float(ob.flow_matching_loss(cond_velocity, x0, x1, t)) == pytest.approx(0, abs=1e-24)
    # the zero field pays the mean squared displacement
    zero = ob.flow_matching_loss(lambda x, s: torch.zeros_like(x), x0, x1)
    assert float(zero) == pytest.approx(float((d ** 2).sum(-1).mean()), rel=1e-12)
    # v(x, t) = x: the residual is x_t - d, computed by hand
    tt = t[:, None]
    ref = (((1 - tt) * x0 + tt * x1 - d) ** 2).sum(-1).mean()
    got = ob.flow_matching_loss(lambda x, s: x, x0, x1, t[:, None])
    assert float(got) == pytest.approx(float(ref), rel=1e-12)


def test_flow_matching_loss_batched_equals_looped():
    x0 = torch.randn(4, 20, 3, generator=gen(0), dtype=F64)
    x1 = torch.randn(4, 20, 3, generator=gen(1), dtype=F64)
    t = torch.rand(4, 20, generator=gen(2), dtype=F64)

    def v(x, s):
        return torch.sin(x) * s
    whole = ob.flow_matching_loss(v, x0, x1, t)
    parts = [ob.flow_matching_loss(v, x0[k], x1[k], t[k]) for k in range(4)]
    assert float(whole) == pytest.approx(float(torch.stack(parts).mean()), rel=1e-12)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sample_flow_on_a_linear_field(steps):
    A = torch.tensor([[0.0, -1.0], [1.0, -0.5]], dtype=F64)
    x0 = cloud(7, seed=3)
    I = torch.eye(2, dtype=F64)
    h = 1.0 / steps
    euler = ob.sample_flow(lambda x, t: x @ A.T, x0, steps)
    M = torch.linalg.matrix_power(I + h * A, steps)
    torch.testing.assert_close(euler, x0 @ M.T, rtol=1e-12, atol=1e-12)
    mid = ob.sample_flow(lambda x, t: x @ A.T, x0, steps, method="midpoint")
    M2 = torch.linalg.matrix_power(I + h * A + (h * A) @ (h * A) / 2, steps)
    torch.testing.assert_close(mid, x0 @ M2.T, rtol=1e-12, atol=1e-12)


def test_sample_flow_time_dependent_and_batched():
    # dx/dt = t: Euler with K steps moves by h^2 * sum_k k = (K - 1) / (2K); midpoint exactly 1/2
    x0 = torch.zeros(2, 3, 1, dtype=F64)
    out = ob.sample_flow(lambda x, t: t.expand_as(x), x0, 4)
    torch.testing.assert_close(out, torch.full_like(x0, 3 / 8))
    out = ob.sample_flow(lambda x, t: t.expand_as(x), x0, 4, method="midpoint")
    torch.testing.assert_close(out, torch.full_like(x0, 0.5))
    xb = torch.randn(2, 5, 2, generator=gen(0), dtype=F64)
    whole, path = ob.sample_flow(lambda x, t: torch.tanh(x) * (1 + t), xb, 5, return_path=True)
    assert path.shape == (6, 2, 5, 2)
    for k in range(2):
        torch.testing.assert_close(whole[k], ob.sample_flow(lambda x, t: torch.tanh(x) * (1 + t),
                                                            xb[k], 5))


def test_path_straightness_closed_forms():
    K = 2000
    s = torch.linspace(0, 1, K + 1, dtype=F64)
    line = (s[:, None, None] * torch.tensor([[3.0, 4.0]], dtype=F64))
    assert float(ob.path_straightness(line)) == pytest.approx(0, abs=1e-20)
    assert float(ob.path_straightness(line, "length_ratio")) == pytest.approx(1, rel=1e-12)
    # a quarter circle of radius 1 run at constant speed: length pi / 2, chord sqrt(2)
    arc = torch.stack([torch.cos(s * math.pi / 2), torch.sin(s * math.pi / 2)], -1)[:, None]
    ratio = float(ob.path_straightness(arc, "length_ratio"))
    assert ratio == pytest.approx(math.pi / 2 / math.sqrt(2), rel=1e-6)
    # deviation: mean over t of |chord - velocity|^2 = |chord|^2 + (pi/2)^2 - 2 chord . v
    # with mean of chord . v = chord . chord (v integrates to the chord)
    dev = float(ob.path_straightness(arc))
    assert dev == pytest.approx((math.pi / 2) ** 2 - 2, rel=1e-5)


def test_fit_flow_matching_learns_a_translation():
    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.zeros(2, dtype=F64))

        def forward(self, x, t):
            return self.b.expand_as(x)

    x1 = cloud(400, seed=0, shift=2.0)
    for pairing in ("independent", "exact", "entropic"):
        fit = ob.fit_flow_matching(Shift(), x1, pairing=pairing, eps=1.0, n_steps=300, lr=0.05,
                                   batch_size=64, generator=gen(1))
        torch.testing.assert_close(fit.model.b.detach(), torch.full((2,), 2.0, dtype=F64),
                                   atol=0.15, rtol=0)
        assert fit.losses.shape == (300,) and fit.pairing == pairing


def test_ot_pairs_give_a_lower_flow_matching_loss():
    """The conditional loss at the optimum is the pairs' conditional variance: OT pairs, almost
    a map, leave far less of it than independent ones (the gradient-variance claim of
    Pooladian et al.)."""
    torch.manual_seed(0)
    x1 = cloud(600, seed=0) * 0.3 + torch.tensor([4.0, 0.0], dtype=F64)
    x1[::2] *= -1
    losses = {}
    for pairing in ("independent", "exact"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(),
                                    torch.nn.Linear(32, 2)).double()
        fit = ob.fit_flow_matching(lambda_model(model), x1, pairing=pairing, n_steps=300,
                                   lr=5e-3, generator=gen(0))
        losses[pairing] = float(fit.losses[-50:].mean())
    assert losses["exact"] < 0.3 * losses["independent"]


def lambda_model(net):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(torch.cat([x, t], -1))
    return Wrap()


# --------------------------------------------------------------------------------------------
# semi-discrete OT


def test_semidiscrete_exact_against_pot_on_a_discrete_source():
    x = cloud(300, seed=0)
    y = cloud(6, seed=1)
    b = torch.tensor([0.1, 0.2, 0.15, 0.25, 0.2, 0.1], dtype=F64)
    res = ob.semidiscrete_ot(x, y, b, n_steps=4000, batch_size=100, lr=2.0, generator=gen(0))
    C = ob.cost_matrix(x, y).numpy()
    exact = ot.emd2(np.full(300, 1 / 300), b.numpy(), C)
    value = float(res.value(x))
    assert value <= exact + 1e-12                    # weak duality, on the same sample
    assert value == pytest.approx(exact, rel=2e-3)
    np.testing.assert_allclose(res.cell_masses(x).numpy(), b.numpy(), atol=0.03)


def test_semidiscrete_entropic_against_sinkhorn():
    x = cloud(200, seed=2)
    y = cloud(5, seed=3)
    eps = 0.5
    res = ob.semidiscrete_ot(x, y, eps=eps, n_steps=3000, batch_size=100, lr=2.0,
                             generator=gen(1))
    ref = ob.sinkhorn(None, None, ob.cost_matrix(x, y), eps, tol=1e-10)
    assert float(res.value(x)) <= float(ref.value) + 1e-10
    assert float(res.value(x)) == pytest.approx(float(ref.value), rel=2e-3)
    # the potentials agree up to a constant
    g_ref = ref.g - ref.g.mean()
    torch.testing.assert_close(res.g - res.g.mean(), g_ref, atol=0.05, rtol=0)


def test_semidiscrete_one_dimensional_wall():
    """Uniform on [0, 1] against sites 0 and 1 with weights 0.3, 0.7: the wall sits at 0.3."""
    def unif(n, generator):
        return torch.rand(n, 1, generator=generator, dtype=F64)
    y = torch.tensor([[0.0], [1.0]], dtype=F64)
    res = ob.semidiscrete_ot(unif, y, [0.3, 0.7], n_steps=5000, lr=0.5, generator=gen(0))
    wall = (1 + res.g[0] - res.g[1]) / 2
    assert float(wall) == pytest.approx(0.3, abs=0.01)
    assert res.history.shape == (500, 2)
    torch.testing.assert_close(res.history[-1], res.g)


def test_laguerre_with_zero_weights_is_voronoi_and_batched_equals_looped():
    x = torch.randn(3, 40, 2, generator=gen(0), dtype=F64)
    y = cloud(7, seed=1)
    cells = ob.laguerre_assign(x, y, torch.zeros(7, dtype=F64))
    torch.testing.assert_close(cells, torch.cdist(x, y).argmin(-1))
    g = torch.randn(7, generator=gen(2), dtype=F64)
    batched = ob.laguerre_assign(x, y, g)
    for k in range(3):
        assert torch.equal(batched[k], ob.laguerre_assign(x[k], y, g))


# --------------------------------------------------------------------------------------------
# the critic


@pytest.mark.parametrize("slope", [0.5, 1.0, 3.0])
def test_gradient_penalty_of_linear_critics(slope):
    x, y = cloud(20, seed=0), cloud(20, seed=1)
    w = torch.tensor([0.6, 0.8], dtype=F64) * slope
    gp = ob.gradient_penalty(lambda z: z @ w, x, y, generator=gen(0))
    assert float(gp) == pytest.approx((slope - 1) ** 2, abs=1e-12)


@pytest.mark.parametrize("penalty", [1.0, 10.0])
def test_fit_critic_overshoots_by_the_closed_form(penalty):
    """A linear critic between a sample and its translate by t: the penalised optimum has slope
    1 + |t| / (2 penalty), so the estimate is W1 + W1^2 / (2 penalty) with W1 = |t|."""
    x = cloud(300, seed=0)
    t = torch.tensor([1.2, -0.9], dtype=F64)
    W1 = float(t.norm())
    critic = torch.nn.Linear(2, 1).double()
    fit = ob.fit_critic(critic, x, x + t, penalty=penalty, n_steps=1500, lr=0.02,
                        generator=gen(0))
    assert float(fit.estimate) == pytest.approx(W1 + W1 ** 2 / (2 * penalty), rel=1e-3)
    assert float(fit.max_slope) == pytest.approx(1 + W1 / (2 * penalty), rel=1e-3)
    emd = ob.emd(None, None, ob.cost_matrix(x, x + t, "euclidean")).value
    assert float(emd) == pytest.approx(W1, rel=1e-10)
    assert float(fit.evaluate(x[:100], x[:100] + t)) == pytest.approx(float(fit.estimate),
                                                                      rel=1e-10)


# --------------------------------------------------------------------------------------------
# bad inputs


def _net(d=2, out=2, dtype=F64):
    return lambda_model(torch.nn.Linear(d + 1, out).to(dtype))


@pytest.mark.parametrize("call, exc, name", [
    (lambda: ob.ot_pairing(cloud(4), cloud(4, d=3)), ValueError, "x0 and x1"),
    (lambda: ob.ot_pairing(cloud(4), cloud(4), eps=0), ValueError, "eps"),
    (lambda: ob.ot_pairing(cloud(4), cloud(4), n_pairs=0), ValueError, "n_pairs"),
    (lambda: ob.ot_pairing(torch.randn(2, 4, 2), torch.randn(3, 4, 2)), ValueError, "batch"),
    (lambda: ob.ot_pairing(cloud(4), cloud(4), generator=1), TypeError, "generator"),
    (lambda: ob.flow_matching_loss(3, cloud(4), cloud(4)), TypeError, "velocity"),
    (lambda: ob.flow_matching_loss(lambda x, t: x, cloud(4), cloud(5)), ValueError, "x0 and x1"),
    (lambda: ob.flow_matching_loss(lambda x, t: x, cloud(4), cloud(4), torch.full((4,), 2.0,
                                   dtype=F64)), ValueError, "t must lie"),
    (lambda: ob.flow_matching_loss(lambda x, t: x, cloud(4), cloud(4), torch.ones(3)),
     ValueError, "t must have shape"),
    (lambda: ob.flow_matching_loss(lambda x, t: x[:, :1], cloud(4), cloud(4)), ValueError,
     "velocity must return"),
    (lambda: ob.flow_matching_loss(lambda x, t: x, cloud(4), cloud(4), sigma=-1), ValueError,
     "sigma"),
    (lambda: ob.sample_flow(lambda x, t: x, cloud(4), 0), ValueError, "steps"),
    (lambda: ob.sample_flow(lambda x, t: x, cloud(4), 2, method="rk4"), ValueError, "method"),
    (lambda: ob.sample_flow(lambda x, t: x * 1e300, cloud(4), 4), ValueError, "blew up"),
    (lambda: ob.sample_flow(lambda x, t: x, torch.empty(0, 2), 2), ValueError, "x0"),
    (lambda: ob.path_straightness(torch.zeros(1, 3, 2)), ValueError, "path"),
    (lambda: ob.path_straightness(torch.zeros(3, 3, 2), kind="curv"), ValueError, "kind"),
    (lambda: ob.fit_flow_matching(_net(), cloud(10), pairing="sinkhorn"), ValueError, "pairing"),
    (lambda: ob.fit_flow_matching(_net(), cloud(10), pairing="entropic"), ValueError, "eps"),
    (lambda: ob.fit_flow_matching(_net(dtype=torch.float32), cloud(10)), TypeError, "model"),
    (lambda: ob.fit_flow_matching(_net(), cloud(10), x0=cloud(10, d=3)), ValueError, "x0"),
    (lambda: ob.fit_flow_matching(_net(), cloud(10), batch_size=0), ValueError, "batch_size"),
    (lambda: ob.fit_flow_matching(_net(), cloud(10), lr=-1.0), ValueError, "lr"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3, d=3)), ValueError, "source and y"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3), [1.0, -1.0, 1.0]), ValueError, "b"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3), [1.0, 1.0]), ValueError, "b"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3), eps=-0.1), ValueError, "eps"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3), [1.0, 0.0, 1.0], eps=0.1), ValueError,
     "b has zero"),
    (lambda: ob.semidiscrete_ot(cloud(10), cloud(3), lr=0), ValueError, "lr"),
    (lambda: ob.semidiscrete_ot(lambda n, g: torch.zeros(n, 3, dtype=F64), cloud(3),
                                n_steps=1), ValueError, "source"),
    (lambda: ob.semidiscrete_ot("x", cloud(3)), TypeError, "source"),
    (lambda: ob.laguerre_assign(cloud(4), cloud(3), torch.zeros(2)), ValueError, "g"),
    (lambda: ob.laguerre_assign(cloud(4), torch.randn(2, 3, 2, dtype=F64), torch.zeros(3)),
     ValueError, "y"),
    (lambda: ob.gradient_penalty(lambda z: z, cloud(4), cloud(4)), ValueError, "critic"),
    (lambda: ob.gradient_penalty(lambda z: z[:, 0], cloud(4), cloud(5)), ValueError, "x and y"),
    (lambda: ob.fit_critic(torch.nn.Linear(2, 1).double(), cloud(4), cloud(4), penalty=-1),
     ValueError, "penalty"),
    (lambda: ob.fit_critic(torch.nn.Linear(2, 1), cloud(4), cloud(4)), TypeError, "critic"),
    (lambda: ob.fit_critic(torch.nn.Linear(2, 1).double(), cloud(4), cloud(4), n_steps=0),
     ValueError, "n_steps"),
])
def test_bad_inputs(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# --------------------------------------------------------------------------------------------
# devices and dtypes


def test_outputs_follow_the_inputs_dtype():
    x0, x1 = cloud(12, dtype=torch.float32), cloud(12, seed=1, dtype=torch.float32)
    i, j = ob.ot_pairing(x0, x1, 0.5, generator=gen(0))
    assert i.dtype == torch.long
    net = _net(dtype=torch.float32)
    assert ob.flow_matching_loss(net, x0, x1).dtype == torch.float32
    assert ob.sample_flow(net, x0, 3).dtype == torch.float32
    res = ob.semidiscrete_ot(x0, x1[:4], n_steps=20)
    assert res.g.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    dev = torch.device("cuda")
    x0, x1 = cloud(64, device=dev), cloud(64, seed=1, device=dev)
    i, j = ob.ot_pairing(x0, x1, 0.5, generator=gen(0, dev))
    assert i.device.type == "cuda"
    net = _net().to(dev)
    fit = ob.fit_flow_matching(net, x1, pairing="exact", n_steps=5, generator=gen(0, dev))
    assert fit.losses.device.type == "cuda"
    assert ob.sample_flow(net, x0, 3).device.type == "cuda"
    res = ob.semidiscrete_ot(x0, x1[:5], n_steps=20, generator=gen(0, dev))
    assert res.g.device.type == "cuda" and res.assign(x0).device.type == "cuda"
    crit = torch.nn.Linear(2, 1).double().to(dev)
    assert ob.fit_critic(crit, x0, x1, n_steps=3).estimate.device.type == "cuda"
