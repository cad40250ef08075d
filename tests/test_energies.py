"""Energies: the algebra of Energy objects, the factories, the kernel density estimate."""

import math

import numpy as np
import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, gen, raises_clearly


def quadratic(lam=1.0):
    return ob.potential_energy(lambda x: 0.5 * lam * (x ** 2).sum(-1))


# ---------------------------------------------------------------- energies as objects


def test_energy_algebra_and_terms():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    V = quadratic()
    F = 2 * V + ob.Energy(lambda z: z.sum(), "sum") + (lambda z: z.mean())
    assert "2 * potential" in repr(F) and "sum" in repr(F)
    assert float(F(x)) == pytest.approx(2 * 7.5 + 10 + 2.5)
    terms = F.terms(x)
    assert set(terms) == {"potential", "sum", "<lambda>"} and float(terms["potential"]) == 15.0
    assert float(sum([V, V])(x)) == pytest.approx(15.0)
    assert not F.uses_density and (F + ob.internal_energy()).uses_density


def test_internal_energy_with_known_density_is_exact():
    x = torch.zeros(3, 1, dtype=F64)
    ld = torch.log(torch.tensor([0.5, 1.0, 2.0], dtype=F64))
    assert float(ob.internal_energy("entropy")(x, ld)) == pytest.approx(float(ld.mean()))
    assert float(ob.internal_energy("porous", m=3.0)(x, ld)) == pytest.approx((0.25 + 1 + 4) / 3 / 2)
    f = ob.internal_energy(lambda r: r ** 2)     # int rho^2 = E rho
    assert float(f(x, ld)) == pytest.approx(3.5 / 3)


def test_kde_entropy_of_a_gaussian_sample():
    x = torch.randn(2000, 1, generator=gen(8), dtype=F64)
    neg_entropy = float(ob.internal_energy("entropy")(x))
    assert abs(neg_entropy - (-0.5 * math.log(2 * math.pi * math.e))) < 0.05


def test_kde_log_density_of_a_point_mass_is_the_kernel():
    x = torch.zeros(3, 1, dtype=F64)
    ld = ob.energies.kde_log_density(x, bandwidth=0.5)
    torch.testing.assert_close(ld, torch.full((3,), -0.5 * math.log(2 * math.pi * 0.25), dtype=F64))
    assert ob.flows.kde_log_density is ob.energies.kde_log_density   # the book's name for it


def test_as_energy_wraps_callables_once():
    F = quadratic()
    assert ob.energies.as_energy(F) is F
    G = ob.energies.as_energy(lambda z: z.sum())
    assert isinstance(G, ob.Energy) and float(G(torch.ones(2, 2))) == 4.0


# ---------------------------------------------------------------- bad inputs


@bad_inputs(
    [
        (lambda: ob.internal_energy("gibbs"), ValueError, "kind must be one of"),
        (lambda: ob.internal_energy("porous", m=1.0), ValueError, "m must be > 1"),
        (lambda: ob.internal_energy(bandwidth=0.0), ValueError, "bandwidth must be"),
        (lambda: ob.potential_energy(3.0), TypeError, "V must be callable"),
        (lambda: ob.potential_energy(lambda x: x)(torch.ones(3, 2)), ValueError, "V must map"),
        (lambda: ob.interaction_energy(lambda z: z)(torch.ones(3, 2)), ValueError, "W must map"),
        (lambda: ob.interaction_energy(lambda z: z[:, 0])(torch.ones(1, 2)), ValueError, "at least 2 particles"),
        (lambda: ob.mmd_energy(torch.ones(3, 2), kernel="cauchy"), ValueError, "kernel must be one of"),
        (lambda: ob.mmd_energy(torch.ones(3, 2))(torch.ones(3, 3)), ValueError, "feature dimension"),
        (lambda: ob.sinkhorn_energy(torch.ones(3, 2), eps=-1), ValueError, "eps must be"),
        (lambda: ob.sinkhorn_energy(torch.tensor([[np.nan, 1.0]]), eps=1), ValueError, "target contains NaN"),
        (lambda: 2 * quadratic() * float("inf"), ValueError, "finite number"),
        (lambda: ob.energies.as_energy("F"), TypeError, "energy must be callable"),
    ],
)
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
