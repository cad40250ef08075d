import numpy as np
import ot
import pytest
import torch

import otbook as ob


def test_cost_matrix_against_pot():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
    for ours, theirs in [("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean"), ("cosine", "cosine")]:
        C = ob.cost_matrix(x, y, cost=ours)
        assert C.dtype == torch.float64 and C.shape == (20, 30)
        np.testing.assert_allclose(C.numpy(), ot.dist(x, y, metric=theirs), atol=1e-10)


def test_cost_matrix_batched_callable_and_1d(device, dtype):
    x = torch.randn(5, 7, 2, device=device, dtype=dtype)
    y = torch.randn(5, 9, 2, device=device, dtype=dtype)
    C = ob.cost_matrix(x, y)
    assert C.shape == (5, 7, 9) and C.dtype == dtype and C.device.type == device.type
    for k in range(5):
        torch.testing.assert_close(C[k], ob.cost_matrix(x[k], y[k]))
    C1 = ob.cost_matrix(x, y, cost=lambda u, v: (u[..., :, None, :] - v[..., None, :, :]).abs().sum(-1))
    assert C1.shape == (5, 7, 9)
    C2 = ob.cost_matrix(torch.tensor([0.0, 1.0]), torch.tensor([3.0]))
    assert C2.tolist() == [[9.0], [4.0]]


def test_euclidean_gradient_finite_at_coincident_points():
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    ob.cost_matrix(x, x.detach(), cost="euclidean").sum().backward()
    assert torch.isfinite(x.grad).all()


def random_spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64)


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
