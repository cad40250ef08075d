"""Wasserstein gradient flows: particle flows, the JKO scheme on particles, JKO-ICNN."""

import math
import warnings

import numpy as np
import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, gen, raises_clearly


def quadratic(lam=1.0):
    return ob.potential_energy(lambda x: 0.5 * lam * (x ** 2).sum(-1))


M0 = torch.tensor([2.0, -1.0], dtype=F64)
S0 = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
I2 = torch.eye(2, dtype=F64)


def gaussian_sample(n, seed=0):
    return M0 + torch.randn(n, 2, generator=gen(seed), dtype=F64) @ torch.linalg.cholesky(S0).T


def moments(x):
    return x.mean(0), torch.cov(x.T, correction=0)


def ou_closed_form(m, S, t):
    """Ornstein-Uhlenbeck (Fokker-Planck with V = |x|^2 / 2) from N(m, S): N(m e^-t, S e^-2t + (1 - e^-2t) I)."""
    return m * math.exp(-t), S * math.exp(-2 * t) + (1 - math.exp(-2 * t)) * torch.eye(len(m), dtype=m.dtype)


def ou_jko_step(m, S, tau):
    """One exact JKO step of the same flow between Gaussians (eigenvalue by eigenvalue)."""
    ev, U = torch.linalg.eigh(S)
    s = ev.sqrt()
    s_new = (s + (s ** 2 + 4 * tau * (1 + tau)).sqrt()) / (2 * (1 + tau))
    return m / (1 + tau), U @ torch.diag(s_new ** 2) @ U.T


# ---------------------------------------------------------------- particle flows: closed forms


def test_potential_flow_is_explicit_euler_of_the_ode():
    x = torch.randn(7, 3, generator=gen(0), dtype=F64)
    lam, step, k = 2.0, 0.05, 30
    res = ob.particle_flow(x, quadratic(lam), step=step, n_steps=k, tol=0)
    torch.testing.assert_close(res.x, x * (1 - step * lam) ** k, rtol=1e-12, atol=1e-14)
    assert res.n_iter == k and res.energies.shape == (k + 1,) and res.trajectory.shape == (k + 1, 7, 3)
    torch.testing.assert_close(res.times, step * torch.arange(k + 1, dtype=F64))
    # first order in the step: within O(step) of the exact flow x e^{-lam t}
    assert float((res.x - x * math.exp(-lam * step * k)).abs().max()) < 0.05 * float(x.abs().max())
    assert res.decreasing() and not res.converged


def test_step_is_scaled_by_the_number_of_particles():
    """W(z) = |z|^2 / 2: each particle moves towards the mean at rate n / (n - 1), whatever n."""
    for n in (5, 50):
        x = torch.randn(n, 2, generator=gen(n), dtype=F64)
        W = ob.interaction_energy(lambda z: 0.5 * (z ** 2).sum(-1))
        step, k = 0.02, 25
        res = ob.particle_flow(x, W, step=step, n_steps=k, tol=0)
        mean = x.mean(0)
        expected = mean + (x - mean) * (1 - step * n / (n - 1)) ** k
        torch.testing.assert_close(res.x, expected, rtol=1e-10, atol=1e-12)


def test_ou_particle_flow_matches_the_closed_form_gaussian():
    """Fokker-Planck with V = |x|^2 / 2 (entropy by the blob method) from a Gaussian."""
    x0 = gaussian_sample(300)
    F = quadratic() + ob.internal_energy("entropy")
    res = ob.particle_flow(x0, F, step=0.02, n_steps=50, record_every=25)
    m0, s0 = moments(x0)
    for t, x in zip(res.times[1:], res.trajectory[1:]):
        m, S = moments(x)
        mt, St = ou_closed_form(m0, s0, float(t))
        assert float((m - mt).norm()) < 0.02, (float(t), m, mt)       # Euler, first order
        assert float((S - St).norm() / St.norm()) < 0.05, (float(t), S, St)
    assert res.decreasing()


def test_heat_flow_spreads_like_the_heat_kernel():
    """The entropy alone: variance grows as s0^2 + 2 t in 1-D."""
    q = (torch.arange(300, dtype=F64) + 0.5) / 300
    x = (0.5 * math.sqrt(2) * torch.erfinv(2 * q - 1))[:, None]   # quantiles of N(0, 0.25)
    res = ob.particle_flow(x, ob.internal_energy("entropy"), step=0.005, n_steps=100)
    var = float(res.x.var(unbiased=False))
    assert abs(var - (0.25 + 2 * 0.5)) < 0.05 * 1.25, var
    assert abs(float(res.x.mean())) < 1e-10 and res.decreasing()


def test_ou_flow_matches_closed_form_on_the_gpu_too(device):
    x0 = gaussian_sample(200).to(device, torch.float32)
    F = quadratic() + ob.internal_energy("entropy")
    res = ob.particle_flow(x0, F, step=0.05, n_steps=20)
    assert res.x.device.type == device.type and res.x.dtype == torch.float32
    m0, s0 = moments(x0.double().cpu())
    mt, St = ou_closed_form(m0, s0, 1.0)
    m, S = moments(res.x.double().cpu())
    assert float((m - mt).norm()) < 0.05 and float((S - St).norm() / St.norm()) < 0.08


# ---------------------------------------------------------------- energies decrease


def moons_like(n, seed):
    g = gen(seed)
    t = torch.rand(n, generator=g, dtype=F64) * math.pi
    return torch.stack([torch.cos(t), torch.sin(t)], 1) + 0.05 * torch.randn(n, 2, generator=g, dtype=F64)


@pytest.mark.parametrize("name, step", [("mmd", 1.0), ("energy", 0.3), ("sinkhorn", 0.5),
                                        ("interaction", 0.01), ("porous", 0.002)])
def test_energy_decreases_along_the_flow(name, step):
    y = moons_like(60, 1)
    x = 0.3 * torch.randn(60, 2, generator=gen(2), dtype=F64) + torch.tensor([-1.0, 1.0], dtype=F64)
    F = {
        "mmd": ob.mmd_energy(y, bandwidth=0.5),
        "energy": ob.mmd_energy(y, kernel="energy"),
        "sinkhorn": ob.sinkhorn_energy(y, eps=0.05, tol=1e-5),
        "interaction": ob.interaction_energy(lambda z: 0.5 * (z ** 2).sum(-1) - torch.log(z.norm(dim=-1)))
        + quadratic(),
        "porous": ob.internal_energy("porous", m=2.0, bandwidth=0.2) + quadratic(),
    }[name]
    res = ob.particle_flow(x, F, step=step, n_steps=25)
    assert res.decreasing(), res.energies
    assert float(res.energies[-1]) < float(res.energies[0])
    if name in ("energy", "sinkhorn"):   # these reach the target
        assert float(res.energies[-1]) < 0.02 * float(res.energies[0]), res.energies


def test_gaussian_mmd_flow_stalls_far_from_the_target_and_energy_distance_does_not():
    y = moons_like(80, 3)
    x = 0.2 * torch.randn(80, 2, generator=gen(4), dtype=F64) + torch.tensor([-4.0, 3.0], dtype=F64)
    mmd = ob.particle_flow(x, ob.mmd_energy(y, bandwidth=0.3), step=3.0, n_steps=40)
    ed = ob.particle_flow(x, ob.mmd_energy(y, kernel="energy"), step=1.0, n_steps=40)
    dist = lambda z: float(ob.emd(None, None, ob.cost_matrix(z, y)).value)
    assert dist(mmd.x) > 0.5 * dist(x)        # the Gaussian-kernel flow barely moved
    assert dist(ed.x) < 0.05 * dist(x)        # the energy distance brought the particles in


def test_flow_stops_when_the_particles_are_at_rest():
    x = torch.zeros(5, 2, dtype=F64)
    res = ob.particle_flow(x, quadratic(), step=0.1, n_steps=10)
    assert res.converged and res.n_iter == 0 and res.trajectory.shape[0] == 1
    x = torch.randn(5, 2, generator=gen(0), dtype=F64)
    res = ob.particle_flow(x, quadratic(), step=0.5, n_steps=200, tol=1e-8, record_every=7)
    assert res.converged and res.n_iter < 200
    assert float(res.times[-1]) == pytest.approx(0.5 * res.n_iter)
    torch.testing.assert_close(res.trajectory[-1], res.x)


def test_sinkhorn_flow_towards_a_translated_copy_translates():
    x = torch.randn(40, 2, generator=gen(5), dtype=F64)
    t = torch.tensor([1.0, -0.5], dtype=F64)
    res = ob.particle_flow(x, ob.sinkhorn_energy(x + t, eps=1.0), step=1.0, n_steps=1, tol=0)
    # the debiased divergence of a translate is |t|^2: one step of size 1 on half of it is the translate
    torch.testing.assert_close(res.x, x + t, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- the JKO scheme on particles


def test_jko_particles_is_implicit_euler_and_stable_where_explicit_euler_is_not():
    x = torch.randn(30, 2, generator=gen(6), dtype=F64)
    lam, tau = 20.0, 0.15                      # tau * lam = 3 > 2: explicit Euler diverges
    F = quadratic(lam)
    jko = ob.jko_particles(x, F, tau=tau, n_steps=3)
    for k in range(4):  # the particles keep their identity along the trajectory
        torch.testing.assert_close(jko.trajectory[k], x / (1 + tau * lam) ** k, atol=1e-6, rtol=0)
    assert jko.decreasing() and jko.converged
    explicit = ob.particle_flow(x, F, step=tau, n_steps=3, tol=0)
    assert not explicit.decreasing()


def test_jko_particles_with_sinkhorn_moves_a_cloud_down_a_linear_potential():
    """V = <c, x>: the exact JKO step is the translate x - tau c, and S_eps of a translate is |t|^2."""
    x = torch.randn(30, 2, generator=gen(7), dtype=F64)
    c = torch.tensor([1.0, 2.0], dtype=F64)
    F = ob.potential_energy(lambda z: z @ c)
    res = ob.jko_particles(x, F, tau=0.3, n_steps=2, eps=0.5)
    torch.testing.assert_close(res.x, x - 0.6 * c, atol=2e-3, rtol=0)
    assert res.decreasing()


def test_jko_particles_passes_its_sinkhorn_budget_and_summarises_the_warnings():
    x = torch.randn(10, 2, generator=gen(10), dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ob.jko_particles(x, quadratic(), tau=1.0, n_steps=2, eps=1e-2, inner_steps=3,
                               sinkhorn_max_iter=2)
    messages = [str(w.message) for w in caught]
    assert all(m.startswith("jko_particles") for m in messages), messages   # no solve's own
    assert any("2 of 3 step(s) warned" in m and "did not converge" in m for m in messages)
    assert res.extra["warnings"] == 2   # the steps, not the start (no Sinkhorn solve there)


# ---------------------------------------------------------------- JKO-ICNN


def test_jko_icnn_matches_the_exact_gaussian_jko_recursion():
    """Fokker-Planck (OU) from a Gaussian: each JKO step between Gaussians is known exactly."""
    torch.manual_seed(0)
    x0 = gaussian_sample(150, seed=3)
    ld0 = torch.distributions.MultivariateNormal(M0, S0).log_prob(x0)
    F = quadratic() + ob.internal_energy("entropy")
    tau = 0.25
    res = ob.jko_icnn(x0, F, tau=tau, n_steps=3, log_density=ld0, inner_steps=100, lr=1e-2,
                      warn=False)
    m, S = moments(x0)
    for k in range(1, 4):
        m, S = ou_jko_step(m, S, tau)
        mk, Sk = moments(res.trajectory[k])
        assert float(ob.bures_wasserstein(mk, Sk, m, S)) ** 0.5 < 0.01, k
    # the continuous-time flow is O(tau) away: the check above is sharper than that gap
    mt, St = ou_closed_form(*moments(x0), 3 * tau)
    assert float(ob.bures_wasserstein(mk, Sk, mt, St)) ** 0.5 > 0.03
    assert res.decreasing() and res.log_density.shape == (150,)
    # push carries the initial particles (and densities) along the same maps
    y, lr = res.push(x0, ld0)
    torch.testing.assert_close(y, res.x)
    torch.testing.assert_close(lr, res.log_density)


def test_jko_icnn_stochastic_logdet_follows_the_exact_jko_steps_in_higher_dimension():
    """d = 8, stochastic log-determinant (few Lanczos and CG steps), decaying learning rate."""
    d, n, tau = 8, 120, 0.5
    g = gen(5)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    s = torch.linspace(0.5, 1.5, d, dtype=F64)
    m0 = torch.randn(d, generator=g, dtype=F64)
    x0 = m0 + (torch.randn(n, d, generator=g, dtype=F64) * s) @ Q.T
    ld0 = torch.distributions.MultivariateNormal(m0, Q @ torch.diag(s ** 2) @ Q.T).log_prob(x0)
    F = quadratic() + ob.internal_energy("entropy")
    torch.manual_seed(0)
    res = ob.jko_icnn(x0, F, tau=tau, n_steps=2, log_density=ld0, hidden=(8,),
                      inner_steps=100, lr=2e-2, logdet="stochastic", n_probes=4,
                      lanczos_steps=3, cg_steps=6, generator=gen(1), warn=False)
    assert res.extra["logdet"] == "stochastic" and res.decreasing()
    m, S = moments(x0)
    for k in (1, 2):
        m, S = ou_jko_step(m, S, tau)
        mk, Sk = moments(res.trajectory[k])
        mt, St = ou_closed_form(*moments(x0), k * tau)
        to_jko = float(ob.bures_wasserstein(mk, Sk, m, S).clamp_min(0)) ** 0.5
        to_flow = float(ob.bures_wasserstein(mk, Sk, mt, St).clamp_min(0)) ** 0.5
        assert to_jko < 0.1 and to_jko < 0.5 * to_flow, (k, to_jko, to_flow)


def test_jko_icnn_porous_medium_follows_barenblatt():
    """1-D porous medium (m = 2) from a Barenblatt profile: exact log-determinants."""
    torch.manual_seed(0)
    C, kappa, t0, tau = (3 / 64) ** (1 / 3), 1 / 12, 1e-2, 1e-2

    def baren(x, t):
        return t ** (-1 / 3) * (C - kappa * x ** 2 * t ** (-2 / 3)).clamp_min(0)

    # quantiles of the profile by bisection on its cubic CDF
    a, n = math.sqrt(C / kappa), 80
    q = (torch.arange(n, dtype=F64) + 0.5) / n
    lo, hi = torch.full_like(q, -a), torch.full_like(q, a)
    cdf = lambda u: (C * (u + a) - kappa * (u ** 3 + a ** 3) / 3) / (4 / 3 * a * C)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = torch.where(cdf(mid) < q, mid, lo), torch.where(cdf(mid) < q, hi, mid)
    x0 = ((lo + hi) / 2 * t0 ** (1 / 3))[:, None]
    ld0 = torch.log(baren(x0[:, 0], t0))
    res = ob.jko_icnn(x0, ob.internal_energy("porous", m=2.0), tau=tau, n_steps=3, log_density=ld0,
                      inner_steps=80, lr=2e-2, warn=False)
    t = t0 + 3 * tau
    l1 = float((1 - baren(res.x[:, 0], t) / res.log_density.exp()).abs().mean())
    assert l1 < 0.08, l1
    l1_start = float((1 - baren(x0[:, 0], t) / ld0.exp()).abs().mean())
    assert l1_start > 0.25   # the profile did have to move
    assert res.decreasing()


def test_jko_icnn_without_density_and_inner_convergence_flag():
    torch.manual_seed(1)
    x = torch.linspace(-2, 2, 40, dtype=F64)[:, None]
    res = ob.jko_icnn(x, quadratic(), tau=0.5, n_steps=2, inner_steps=150, lr=0.05, warn=False)
    torch.testing.assert_close(res.x, x / 1.5 ** 2, atol=1e-2, rtol=0)
    assert res.log_density is None and res.converged and len(res.maps) == 2
    assert res.extra["inner_losses"].shape == (2, 150)
    with pytest.warns(RuntimeWarning, match="had not flattened"):
        short = ob.jko_icnn(x, quadratic(), tau=0.5, n_steps=1, inner_steps=3, lr=1e-4)
    assert not short.converged


def test_jko_icnn_never_takes_a_step_that_raises_the_objective():
    """A badly trained map (huge learning rate, 3 steps) scores worse than staying put: not taken."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 20, dtype=F64)[:, None] / 100
    res = ob.jko_icnn(x, quadratic(), tau=0.5, n_steps=3, inner_steps=3, lr=5.0, warn=False)
    assert res.extra["stayed"] == [0, 1, 2] and res.maps == [None, None, None]
    torch.testing.assert_close(res.x, x)
    assert res.decreasing()
    torch.testing.assert_close(res.push(x), x)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("step", [0, -1.0, float("nan"), float("inf")])
def test_bad_step(step):
    x = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="step must be a finite number > 0"):
        ob.particle_flow(x, quadratic(), step=step, n_steps=3)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        ob.jko_particles(x, quadratic(), tau=step, n_steps=3)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        ob.jko_icnn(x, quadratic(), tau=step, n_steps=3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_particles(bad):
    x = torch.randn(4, 2, dtype=F64)
    x[1, 0] = bad
    kind = "NaN" if math.isnan(bad) else "inf"
    for call in (lambda: ob.particle_flow(x, quadratic(), step=0.1, n_steps=3),
                 lambda: ob.jko_particles(x, quadratic(), tau=0.1, n_steps=3),
                 lambda: ob.jko_icnn(x, quadratic(), tau=0.1, n_steps=3)):
        with pytest.raises(ValueError, match=f"x contains {kind}"):
            call()


@bad_inputs(
    [
        (lambda: ob.particle_flow(torch.zeros(0, 2), quadratic(), step=0.1, n_steps=2), ValueError, "x is empty"),
        (lambda: ob.particle_flow(torch.zeros(2, 3, 2), quadratic(), step=0.1, n_steps=2), ValueError, r"shape \(n, d\)"),
        (lambda: ob.particle_flow(["a"], quadratic(), step=0.1, n_steps=2), TypeError, "x must hold numbers"),
        (lambda: ob.particle_flow(torch.ones(3, 2), "energy", step=0.1, n_steps=2), TypeError, "energy must be callable"),
        (lambda: ob.particle_flow(torch.ones(3, 2), lambda x: x, step=0.1, n_steps=2), TypeError, "scalar tensor"),
        (lambda: ob.particle_flow(torch.ones(3, 2), lambda x: torch.tensor(1.0), step=0.1, n_steps=2), ValueError, "does not depend"),
        (lambda: ob.particle_flow(torch.ones(3, 2), quadratic(), step=0.1, n_steps=0), ValueError, "n_steps must be at least 1"),
        (lambda: ob.particle_flow(torch.ones(3, 2), quadratic(), step=0.1, n_steps=2.5), TypeError, "n_steps must be an integer"),
        (lambda: ob.particle_flow(torch.ones(3, 2), quadratic(), step=0.1, n_steps=2, tol=-1), ValueError, "tol must be"),
        (lambda: ob.particle_flow(torch.ones(3, 2), quadratic(), step="big", n_steps=2), TypeError, "step must be a positive number"),
        (lambda: ob.particle_flow(torch.randn(3, 1), quadratic(1e3), step=1.0, n_steps=200, tol=0), ValueError, "lower the step"),
        (lambda: ob.particle_flow(torch.zeros(3, 1), ob.interaction_energy(lambda z: -torch.log(z.abs()[:, 0])), step=0.1, n_steps=2), ValueError, "energy is inf"),
        (lambda: ob.jko_particles(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, eps=0.0), ValueError, "eps must be"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), ob.internal_energy(), tau=0.1, n_steps=2), ValueError, "needs the initial log-density"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), ob.internal_energy(), tau=0.1, n_steps=2, log_density=torch.zeros(4)), ValueError, "log_density must have length 3"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), ob.internal_energy(), tau=0.1, n_steps=2, log_density=torch.tensor([0.0, np.nan, 0.0])), ValueError, "log_density contains NaN"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, model=ob.ICNN(3)), ValueError, "R\\^3"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, model=torch.nn.Linear(2, 1)), TypeError, "ICNN"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, logdet="svd"), ValueError, "logdet must be one of"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, lanczos_steps=0), ValueError, "lanczos_steps must be at least 1"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, cg_steps=2.5), TypeError, "cg_steps must be an integer"),
        (lambda: ob.jko_icnn(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, n_probes=0), ValueError, "n_probes must be at least 1"),
        (lambda: ob.jko_particles(torch.ones(3, 2), quadratic(), tau=0.1, n_steps=2, eps=0.1, sinkhorn_max_iter=0), ValueError, "sinkhorn_max_iter must be at least 1"),
    ],
)
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)


def test_warnings_from_inside_the_flow_are_summarised_once():
    y = torch.randn(30, 2, generator=gen(9), dtype=F64)
    F = ob.sinkhorn_energy(y, eps=1e-3, tol=1e-12, max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ob.particle_flow(y + 1.0, F, step=0.1, n_steps=3)
    ours = [w for w in caught if "particle_flow" in str(w.message)]
    assert len(ours) == 1 and res.extra["warnings"] == 4
    assert len(caught) == 1
