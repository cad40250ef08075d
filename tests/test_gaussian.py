"""Gaussians: Bures-Wasserstein against POT and the commuting case, batches, the Gaussian map."""

import ot
import pytest
import torch

import otbook as ob
from helpers import random_spd


@pytest.mark.parametrize("d", [1, 3, 8])
def test_bures_against_pot_and_commuting_case(d):
    S1, S2 = random_spd(d, 0), random_spd(d, 1)
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    ref = ot.gaussian.bures_wasserstein_distance(m1.numpy(), m2.numpy(), S1.numpy(), S2.numpy()) ** 2
    assert abs(float(ob.bures_wasserstein(m1, S1, m2, S2)) - ref) < 1e-9 * max(1, ref)
    D1 = torch.diag(torch.rand(d, dtype=torch.float64) + 0.1)
    D2 = torch.diag(torch.rand(d, dtype=torch.float64) + 0.1)
    commuting = ((D1.sqrt() - D2.sqrt()) ** 2).sum() + d
    assert torch.allclose(ob.bures_wasserstein(m1, D1, m2, D2), commuting)
    assert float(ob.bures_wasserstein(m1, S1, m1, S1)) < 1e-10


def test_bures_batched():
    S = torch.stack([random_spd(3, k) for k in range(4)])
    m = torch.randn(4, 3, dtype=torch.float64)
    out = ob.bures_wasserstein(m, S, m.flip(0), S.flip(0))
    for k in range(4):
        assert torch.allclose(out[k], ob.bures_wasserstein(m[k], S[k], m.flip(0)[k], S.flip(0)[k]))


def test_gaussian_map_pushes_covariance():
    S1, S2 = random_spd(4, 2), random_spd(4, 3)
    m1, m2 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    T = ob.gaussian_map(m1, S1, m2, S2)
    torch.testing.assert_close(T.A @ S1 @ T.A.T, S2)
    torch.testing.assert_close(T(m1[None]), m2[None])
    assert torch.linalg.eigvalsh(T.A).min() > 0
    # the map's cost equals the Bures distance
    L = torch.linalg.cholesky(S1)
    z = torch.randn(400_000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = m1 + z @ L.T
    cost = ((T(x) - x) ** 2).sum(-1).mean()
    assert abs(float(cost) - float(ob.bures_wasserstein(m1, S1, m2, S2))) < 0.02 * float(cost)
