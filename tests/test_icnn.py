"""Convex potentials: ICNNs, the gradient map of a potential, Hessian log-determinants."""

import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, gen, raises_clearly
from otbook.icnn import lanczos_logdet_quadrature, potential_gradient


# ---------------------------------------------------------------- ICNN


def test_icnn_identity_init_and_strong_convexity():
    x = torch.randn(20, 3, dtype=F64)
    for s in [0.0, 0.5, 2.0]:
        net = ob.ICNN(3, hidden=(8, 8), strong_convexity=s, dtype=F64)
        expected = x if s <= 1 else s * x
        torch.testing.assert_close(net.transport(x), expected)
    net = ob.ICNN(3, hidden=(8,), strong_convexity=0.7, init="random", dtype=F64)
    assert float(torch.linalg.eigvalsh(net.hessian(x)).min()) >= 0.7 - 1e-10


@pytest.mark.parametrize("activation", ["softplus", "leaky_relu", "celu"])
def test_icnn_is_convex_even_with_negative_raw_weights(activation):
    torch.manual_seed(0)
    net = ob.ICNN(2, hidden=(16, 16, 16), activation=activation, init="random", dtype=F64)
    with torch.no_grad():  # raw weights of either sign: the forward pass clamps them
        for W in net.W:
            W.normal_()
        net.w.normal_()
    g = gen(8)
    x = 3 * torch.randn(500, 2, generator=g, dtype=F64)
    z = 3 * torch.randn(500, 2, generator=g, dtype=F64)
    t = torch.rand(500, 1, generator=g, dtype=F64)
    lhs = net(t * x + (1 - t) * z)
    rhs = t[:, 0] * net(x) + (1 - t[:, 0]) * net(z)
    assert bool((lhs <= rhs + 1e-9).all())
    if activation != "leaky_relu":  # piecewise linear: a zero Hessian almost everywhere
        assert float(torch.linalg.eigvalsh(net.hessian(x[:100])).min()) > -1e-9
    # monotone gradient: <grad(x) - grad(z), x - z> >= 0
    assert bool((((net.transport(x) - net.transport(z)) * (x - z)).sum(1) >= -1e-9).all())
    net.project_()
    assert all(bool((W >= 0).all()) for W in net.W) and bool((net.w >= 0).all())


def test_icnn_represents_the_gaussian_map_exactly():
    m1, S1 = torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
    m2 = torch.tensor([2.0, 1.0], dtype=F64)
    S2 = torch.tensor([[0.5, -0.3], [-0.3, 1.5]], dtype=F64)
    T = ob.gaussian_map(m1, S1, m2, S2)
    net = ob.ICNN(2, hidden=(4,), dtype=F64)
    evals, evecs = torch.linalg.eigh(T.A)
    with torch.no_grad():
        net.L.copy_((evecs * evals.sqrt()) @ evecs.T)
        net.linear.copy_(m2 - T.A @ m1)
    x = torch.randn(50, 2, dtype=F64)
    torch.testing.assert_close(net.transport(x), T(x))
    torch.testing.assert_close(net.hessian(x), T.A.expand(50, 2, 2))


def test_icnn_transport_graph_and_dtype(device):
    net = ob.ICNN(2, hidden=(8,), init="random").to(device)
    x = torch.randn(6, 2, device=device)
    with torch.no_grad():
        out = net.transport(x)
    assert not out.requires_grad and out.device.type == device.type
    out = net.transport(x)  # with gradients enabled: back-propagates to the parameters
    out.sum().backward()
    assert net.A[0].weight.grad is not None
    assert net.transport(x.cpu().numpy()).shape == (6, 2)


def test_potential_gradient_is_the_icnn_map_for_any_potential():
    net = ob.ICNN(3, hidden=(8,), init="random", dtype=F64)
    x = torch.randn(5, 3, generator=gen(0), dtype=F64)
    torch.testing.assert_close(potential_gradient(net, x), net.transport(x))
    g = potential_gradient(net, x)  # with the graph: a loss on the map trains the network
    g.sum().backward()
    assert net.A[0].weight.grad is not None
    quadratic = potential_gradient(lambda z: 0.5 * (z ** 2).sum(-1), x, create_graph=False)
    torch.testing.assert_close(quadratic, x)


# ---------------------------------------------------------------- Hessian log-determinants


def reference_logdet(net, x):
    """torch.logdet of the Hessian from torch.autograd.functional.hessian, point by point."""
    out = []
    for p in x:
        H = torch.autograd.functional.hessian(lambda z: net(z[None])[0], p, create_graph=True)
        out.append(torch.logdet(H))
    return torch.stack(out)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_hessian_logdet_exact_matches_torch_logdet_with_gradients(d):
    torch.manual_seed(d)
    net = ob.ICNN(d, hidden=(8, 8), init="random", strong_convexity=0.2, dtype=F64)
    x = torch.randn(6, d, generator=gen(d), dtype=F64)
    ours = ob.hessian_logdet(net, x)
    ref = reference_logdet(net, x)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_ours = torch.autograd.grad(ours.sum(), list(net.parameters()), allow_unused=True)
    g_ref = torch.autograd.grad(ref.sum(), list(net.parameters()), allow_unused=True)
    for a, b in zip(g_ours, g_ref):
        if b is None:
            assert a is None or float(a.abs().max()) == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    logdet, grad_psi = ob.hessian_logdet(net, x, return_map=True)
    torch.testing.assert_close(grad_psi, net.transport(x))


def test_hessian_logdet_stochastic_estimator_is_unbiased():
    d, p = 5, 300
    torch.manual_seed(0)
    net = ob.ICNN(d, hidden=(16,), init="random", strong_convexity=0.5, dtype=F64)
    x = torch.randn(8, d, generator=gen(0), dtype=F64)
    exact = ob.hessian_logdet(net, x)
    H = net.hessian(x)
    ev, U = torch.linalg.eigh(H)
    log_h = U @ torch.diag_embed(ev.log()) @ U.transpose(-1, -2)
    # Lanczos with d steps is exact for each probe: v^T log(H) v
    v = torch.randn(8, d, generator=gen(1), dtype=F64)
    quad = lanczos_logdet_quadrature(lambda u: (H @ u[..., None])[..., 0], v, d)
    torch.testing.assert_close(quad, (v[:, None, :] @ log_h @ v[..., None])[:, 0, 0])
    # what is left is Hutchinson's noise: per probe, variance 2 sum_{i != j} log(H)_ij^2
    est = ob.hessian_logdet(net, x, method="stochastic", n_probes=p, lanczos_steps=d,
                            cg_steps=d, generator=gen(2))
    off = (log_h ** 2).sum((-1, -2)) - (torch.diagonal(log_h, dim1=-2, dim2=-1) ** 2).sum(-1)
    z = (est - exact).detach().abs() / (2 * off / p).sqrt()
    assert float(z.max()) < 4.0, z
    g_ex = torch.autograd.grad(exact.sum(), net.A[0].weight)[0]
    g_st = torch.autograd.grad(est.sum(), net.A[0].weight)[0]
    assert float((g_st - g_ex).norm() / g_ex.norm()) < 0.2
    # the identity Hessian: exact from a single probe
    one = ob.ICNN(d, hidden=(4,), dtype=F64)   # identity map at initialisation: H = I
    zero = ob.hessian_logdet(one, x, method="stochastic", n_probes=1, generator=gen(3))
    torch.testing.assert_close(zero.detach(), torch.zeros(8, dtype=F64), atol=1e-10, rtol=0)


def test_hessian_logdet_probes_follow_the_generator(device):
    net = ob.ICNN(4, hidden=(8,), init="random", strong_convexity=0.5, dtype=F64).to(device)
    x = torch.randn(6, 4, generator=gen(0), dtype=F64).to(device)
    runs = [ob.hessian_logdet(net, x, method="stochastic", n_probes=2,
                              generator=gen(5, device=device.type)) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])   # the same probes
    assert runs[0].device.type == device.type
    other = ob.hessian_logdet(net, x, method="stochastic", n_probes=2, generator=gen(6))
    assert not torch.allclose(runs[0].cpu(), other.cpu())


def test_hessian_logdet_refuses_a_non_convex_potential():
    class Concave(torch.nn.Module):
        def forward(self, x):
            return -(x ** 2).sum(-1)

    with pytest.raises(ValueError, match="not positive definite"):
        ob.hessian_logdet(Concave(), torch.ones(3, 2))
    with pytest.raises(ValueError, match="not positive definite"):
        ob.hessian_logdet(Concave(), torch.ones(3, 2), method="stochastic")



# ---------------------------------------------------------------- bad inputs


@bad_inputs(
    [
        (lambda: ob.ICNN(0), ValueError, "dim must be at least 1"),
        (lambda: ob.ICNN(2, hidden=()), ValueError, "hidden must list"),
        (lambda: ob.ICNN(2, hidden=(4, 0)), ValueError, "hidden"),
        (lambda: ob.ICNN(2, activation="relu6"), ValueError, "activation must be one of"),
        (lambda: ob.ICNN(2, init="zeros"), ValueError, "init must be"),
        (lambda: ob.ICNN(2, strong_convexity=-1.0), ValueError, "strong_convexity"),
        (lambda: ob.ICNN(2.5), TypeError, "dim must be an integer"),
        (lambda: ob.ICNN(2).transport(torch.randn(4, 3)), ValueError, "x must have shape \\(k, 2\\)"),
        (lambda: ob.hessian_logdet(torch.nn.Linear(2, 1), torch.ones(3, 2), method="qr"), ValueError, "method must be one of"),
        (lambda: ob.hessian_logdet("net", torch.ones(3, 2)), TypeError, "model must be a torch.nn.Module"),
        (lambda: ob.hessian_logdet(ob.ICNN(2, dtype=F64), torch.ones(3, 2, dtype=F64), method="stochastic", lanczos_steps=3), ValueError, "lanczos_steps must be at most"),
        (lambda: ob.hessian_logdet(ob.ICNN(2), torch.ones(3, 2, dtype=F64)), TypeError, "dtype"),
    ],
)
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
