"""Sliced Wasserstein: 1-D and Gaussian closed forms, translation, POT, gradients, bad input."""

import ot
import torch

import otbook as ob
from helpers import F64, bad_inputs, gaussian_sample, gen, raises_clearly
from otbook.sliced import random_directions


def test_sliced_in_1d_equals_wasserstein_1d():
    x = torch.randn(40, generator=gen(0), dtype=F64)
    y = torch.randn(55, generator=gen(1), dtype=F64) ** 2
    a = torch.rand(40, generator=gen(2), dtype=F64) + 0.1
    b = torch.rand(55, generator=gen(3), dtype=F64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    for p in (1, 2, 3):
        sw = ob.sliced_wasserstein(x[:, None], y[:, None], n_projections=7, p=p, a=a, b=b, generator=gen(4))
        w = ob.wasserstein_1d(x, y, a, b, p=p)
        assert abs(float(sw) - float(w)) < 1e-12


def test_translation_is_exact_per_direction():
    x = torch.randn(60, 3, generator=gen(5), dtype=F64)
    t = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    sw = ob.sliced_wasserstein(x, x + t, n_projections=50, generator=gen(6))
    theta = random_directions(3, 50, like=x, generator=gen(6))  # the same directions
    assert abs(float(sw) - float(((t @ theta) ** 2).mean())) < 1e-12
    # and |t|^2 / d in expectation over the sphere
    sw_many = ob.sliced_wasserstein(x, x + t, n_projections=20000, generator=gen(7))
    assert abs(float(sw_many) - float(t @ t) / 3) < 0.05 * float(t @ t) / 3


def test_sliced_gaussian_closed_form():
    # isotropic Gaussians: SW_2^2 = |m1 - m2|^2 / d + (s1 - s2)^2
    d, n = 3, 5000
    m1, m2 = torch.zeros(d, dtype=F64), torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    s1, s2 = 1.0, 0.5
    x = gaussian_sample(m1, s1**2 * torch.eye(d), n, seed=8, exact_moments=True)
    y = gaussian_sample(m2, s2**2 * torch.eye(d), n, seed=9, exact_moments=True)
    closed = float(((m1 - m2) ** 2).sum()) / d + (s1 - s2) ** 2
    sw = ob.sliced_wasserstein(x, y, n_projections=200, generator=gen(10))
    assert abs(float(sw) - closed) < 0.03 * closed


def test_sliced_matches_pot_symmetric_and_below_w2():
    x = torch.randn(50, 3, generator=gen(11), dtype=F64)
    y = torch.randn(40, 3, generator=gen(12), dtype=F64) * 0.5 + 1.0
    b = torch.rand(40, generator=gen(13), dtype=F64) + 0.1
    b = b / b.sum()
    theta = random_directions(3, 100, like=x, generator=gen(14))
    ours = ob.sliced_wasserstein(x, y, n_projections=100, b=b, generator=gen(14))
    pot = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), b=b.numpy(), projections=theta.numpy(), p=2)
    assert abs(float(ours) - pot**2) < 1e-12  # POT returns SW_p, otbook SW_p^p
    swapped = ob.sliced_wasserstein(y, x, n_projections=100, a=b, generator=gen(14))
    assert abs(float(ours) - float(swapped)) < 1e-12
    w2 = ob.emd(None, b, ob.cost_matrix(x, y)).value  # projections are 1-Lipschitz
    assert float(ours) <= float(w2)


def test_sliced_gradient_and_batch():
    x = torch.randn(20, 2, generator=gen(15), dtype=F64).requires_grad_()
    y = torch.randn(30, 2, generator=gen(16), dtype=F64)
    sw = ob.sliced_wasserstein(x, y, n_projections=8, generator=gen(17))
    (gx,) = torch.autograd.grad(sw, x)
    h = torch.randn(20, 2, generator=gen(18), dtype=F64)
    step = 1e-6
    with torch.no_grad():
        up = ob.sliced_wasserstein(x + step * h, y, n_projections=8, generator=gen(17))
        dn = ob.sliced_wasserstein(x - step * h, y, n_projections=8, generator=gen(17))
    assert abs(float((up - dn) / (2 * step)) - float((gx * h).sum())) < 1e-6
    xb = torch.stack([x.detach(), x.detach() + 1.0])
    batch = ob.sliced_wasserstein(xb, y, n_projections=8, generator=gen(17))
    assert batch.shape == (2,) and abs(float(batch[0]) - float(sw.detach())) < 1e-12


# ---------------------------------------------------------------- MMD and energy distance


X = torch.rand(5, 2, dtype=F64)
Y = torch.rand(6, 2, dtype=F64)


@bad_inputs([
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=0), ValueError, "n_projections must be at least 1"),
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=2.5), TypeError, "n_projections must be an integer"),
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=3, p=0.5), ValueError, "p must be"),
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=3, a=-torch.ones(5, dtype=F64) / 5), ValueError, "a has negative"),
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=3, b=torch.ones(6, dtype=F64)), ValueError, "same total mass"),
    (lambda: ob.sliced_wasserstein(X, torch.rand(6, 3, dtype=F64), n_projections=3), ValueError, "feature dimension"),
    (lambda: ob.sliced_wasserstein(X, Y, n_projections=3, generator=0), TypeError, "generator must be"),
])
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
