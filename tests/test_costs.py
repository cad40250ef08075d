"""The cost abstraction: every kind of cost gives the same matrix dense, streamed and factored,
the same Sinkhorn solution dense and online (to 1e-10 in float64), the same batched as looped,
and correct gradients (gradcheck); and the ground costs against independent computations."""

import numpy as np
import ot
import pytest
import torch

import otbook as ob
from helpers import F64, bad_inputs, cloud, gen, raises_clearly, weights

# ---------------------------------------------------------------- the kinds of cost


def _latlon(n, seed):
    g = gen(seed)
    return torch.stack([torch.rand(n, generator=g, dtype=F64) * 120 - 60,
                        torch.rand(n, generator=g, dtype=F64) * 300 - 150], -1)


def _ball(n, seed):
    x = cloud(n, 2, seed)
    return 0.8 * x / (1.0 + x.norm(dim=-1, keepdim=True))


def _l1(x, y):
    return (x[..., :, None, :] - y[..., None, :, :]).abs().sum(-1)


def _table(seed, n, m, k1=3, k2=4):
    g = gen(seed)
    T = torch.rand(k1, k2, generator=g, dtype=F64)
    return (T, torch.randint(0, k1, (n,), generator=g), torch.randint(0, k2, (m,), generator=g))


def make(kind, n=12, m=9, seed=0, requires_grad=False):
    """A cost of the given kind, and the tensors it is computed from."""
    if kind == "matrix":
        C = ob.cost_matrix(cloud(n, 2, seed), cloud(m, 2, seed + 1)).requires_grad_(requires_grad)
        return ob.CostMatrix(C), (C,)
    if kind == "table":
        T, cx, cy = _table(seed, n, m)
        T.requires_grad_(requires_grad)
        return ob.TableCost(T, cx, cy), (T,)
    if kind in ("sqeuclidean", "euclidean", "cosine", "callable"):
        x, y = cloud(n, 3, seed), cloud(m, 3, seed + 1, shift=0.3)
    elif kind == "great_circle":
        x, y = _latlon(n, seed), _latlon(m, seed + 1)
    elif kind == "poincare":
        x, y = _ball(n, seed), _ball(m, seed + 1)
    elif kind in ("sum", "otdd"):
        x, y = cloud(n, 2, seed), cloud(m, 2, seed + 1, shift=0.3)
    x.requires_grad_(requires_grad)
    y.requires_grad_(requires_grad)
    if kind == "sum":  # two components in different units, each normalised by its mean
        c = ob.SumCost([ob.PointCloud(x, y), ob.PointCloud(x, y, "euclidean")], [0.3, 0.7],
                       normalise="mean")
        return c, (x, y)
    if kind == "otdd":  # features plus a label table: the factored form of the dataset distance
        T, cx, cy = _table(seed, n, m)
        return ob.SumCost([ob.PointCloud(x, y), ob.TableCost(T, cx, cy)], [0.5, 2.0]), (x, y)
    return ob.PointCloud(x, y, _l1 if kind == "callable" else kind), (x, y)


KINDS = ["matrix", "sqeuclidean", "euclidean", "cosine", "great_circle", "poincare", "callable",
         "table", "sum", "otdd"]


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_and_factors_give_the_matrix(kind):
    cost, _ = make(kind)
    C = cost.matrix()
    flat = cost.broadcast(cost.batch_shape)
    rows = torch.cat([blk for _, blk in flat.blocks(5)], 1)[0]
    cols = torch.cat([blk for _, blk in flat.blocks(4, transpose=True)], 1)[0]
    torch.testing.assert_close(rows, C, atol=1e-12, rtol=0)
    torch.testing.assert_close(cols, C.T, atol=1e-12, rtol=0)
    fac = flat.factors()
    if kind in ("sqeuclidean", "cosine", "table", "otdd"):
        p, q, r, s = fac
        torch.testing.assert_close(r[0, :, None] + s[0, None, :] + p[0] @ q[0].T, C, atol=1e-12,
                                   rtol=0)
    else:
        assert fac is None


@pytest.mark.parametrize("kind", KINDS)
def test_dense_equals_online(kind):
    cost, _ = make(kind, n=40, m=30)
    a, b = weights(40, 1), weights(30, 2)
    eps = 0.1 * float(cost.matrix().mean())
    kw = dict(tol=1e-12, max_iter=50_000)
    dense = ob.sinkhorn(a, b, cost, eps, backend="dense", **kw)
    online = ob.sinkhorn(a, b, cost, eps, backend="online", memory_budget=2000, **kw)
    assert dense.converged and online.converged and online.plan is None
    assert online.extra["backend"] == "online" and dense.extra["backend"] == "dense"
    for key in ("value", "value_linear", "marginal_error"):
        torch.testing.assert_close(getattr(online, key), getattr(dense, key), atol=1e-10, rtol=0)
    # potentials up to the shift (f + c, g - c) that leaves the plan unchanged
    shift = float((online.f - dense.f).mean())
    torch.testing.assert_close(online.f - shift, dense.f, atol=1e-10, rtol=0)
    torch.testing.assert_close(online.g + shift, dense.g, atol=1e-10, rtol=0)


def test_unbalanced_and_semi_relaxed_online_equal_dense():
    cost, _ = make("otdd", n=30, m=25)
    a, b = weights(30, 1), 2.0 * weights(25, 2)
    for rho in ((1.0, 0.5), (None, 0.3), (0.7, None)):
        res = [ob.sinkhorn(a, b, cost, 0.2, rho_a=rho[0], rho_b=rho[1], tol=1e-12,
                           max_iter=50_000, backend=be, memory_budget=4000)
               for be in ("dense", "online")]
        assert res[0].converged and res[1].converged
        torch.testing.assert_close(res[1].value, res[0].value, atol=1e-10, rtol=0)
        torch.testing.assert_close(res[1].f, res[0].f, atol=1e-9, rtol=0)


@pytest.mark.parametrize("backend", ["dense", "online"])
def test_batched_equals_looped_and_padding_is_invisible(backend):
    sizes = [(7, 9), (12, 5), (10, 10)]
    xs = [cloud(n, 2, k) for k, (n, _) in enumerate(sizes)]
    ys = [cloud(m, 2, 10 + k, shift=0.5) for k, (_, m) in enumerate(sizes)]
    x, a = ob.pad_clouds(xs)
    y, b = ob.pad_clouds(ys)
    assert x.shape == (3, 12, 2) and float(a[0, 7:].abs().sum()) == 0.0
    batch = ob.sinkhorn(a, b, ob.PointCloud(x, y), 0.3, tol=1e-12, backend=backend,
                        memory_budget=3000)
    assert batch.converged.shape == (3,) and bool(batch.converged.all())
    for k, (n, m) in enumerate(sizes):
        alone = ob.sinkhorn(None, None, ob.PointCloud(xs[k], ys[k]), 0.3, tol=1e-12)
        torch.testing.assert_close(batch.value[k], alone.value, atol=1e-10, rtol=0)
        if backend == "dense":
            torch.testing.assert_close(batch.plan[k, :n, :m], alone.plan, atol=1e-11, rtol=0)
            assert float(batch.plan[k, n:].abs().sum() + batch.plan[k, :, m:].abs().sum()) == 0.0


@pytest.mark.parametrize("kind", ["matrix", "sqeuclidean", "great_circle", "poincare",
                                  "callable", "table", "sum", "otdd"])
@pytest.mark.parametrize("backend", ["dense", "online"])
def test_gradcheck(kind, backend):
    _, tensors = make(kind, n=5, m=4, requires_grad=True)
    a, b = weights(5, 3), weights(4, 4)

    def value(*ts):
        cost = _rebuild(kind, ts)
        return ob.sinkhorn(a, b, cost, 0.5, tol=1e-13, max_iter=100_000, backend=backend,
                           memory_budget=64).value

    assert torch.autograd.gradcheck(value, tensors, atol=1e-6, rtol=1e-4)


def _rebuild(kind, ts):
    """``make(kind)``'s cost from other tensors (what gradcheck perturbs)."""
    cost, _ = make(kind, n=5, m=4)
    if kind == "sum":  # x and y in both components
        return cost.replace(list(ts) * 2)
    return cost.replace(list(ts) + list(cost.tensors()[len(ts):]))  # otdd: the table stays


def test_gradcheck_weights_and_linear_value_online():
    x, y = cloud(6, 2, 0), cloud(5, 2, 1, shift=0.4)
    a = weights(6, 2).requires_grad_()
    b = weights(5, 3).requires_grad_()
    xr = x.clone().requires_grad_()

    def value(a, b, xr):
        r = ob.sinkhorn(a / a.sum(), b / b.sum(), ob.PointCloud(xr, y), 0.5, tol=1e-13,
                        backend="online", memory_budget=48)
        return r.value, r.value_linear.detach() + 0 * r.value

    assert torch.autograd.gradcheck(lambda *t: value(*t)[0], (a, b, xr), atol=1e-6, rtol=1e-4)
    # value_linear's gradient in the cost is the plan held fixed (POT's sinkhorn2 convention)
    dense = ob.sinkhorn(None, None, ob.cost_matrix(xr, y), 0.5, tol=1e-13)
    online = ob.sinkhorn(None, None, ob.PointCloud(xr, y), 0.5, tol=1e-13, backend="online",
                         memory_budget=48)
    g_dense, = torch.autograd.grad(dense.value_linear, xr)
    g_online, = torch.autograd.grad(online.value_linear, xr)
    torch.testing.assert_close(g_online, g_dense, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- ground costs


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



def test_ground_costs_against_independent_computations():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
    for ours, theirs in [("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean"),
                         ("cosine", "cosine")]:
        np.testing.assert_allclose(ob.cost_matrix(x, y, ours).numpy(),
                                   ot.dist(x, y, metric=theirs), atol=1e-10)
    # great circle: the haversine formula
    p, q = _latlon(7, 1).numpy(), _latlon(5, 2).numpy()
    la1, lo1 = np.radians(p[:, None, 0]), np.radians(p[:, None, 1])
    la2, lo2 = np.radians(q[None, :, 0]), np.radians(q[None, :, 1])
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    np.testing.assert_allclose(ob.cost_matrix(p, q, "great_circle").numpy(),
                               2 * np.arcsin(np.sqrt(h)), atol=1e-12)
    # Poincaré ball: arccosh(1 + 2 |x - y|^2 / ((1 - |x|^2)(1 - |y|^2)))
    u, v = _ball(6, 3).numpy(), _ball(4, 4).numpy()
    d2 = ((u[:, None] - v[None]) ** 2).sum(-1)
    ref = np.arccosh(1 + 2 * d2 / ((1 - (u**2).sum(-1))[:, None] * (1 - (v**2).sum(-1))[None]))
    np.testing.assert_allclose(ob.cost_matrix(u, v, "poincare").numpy(), ref, atol=1e-12)


def test_great_circle_and_poincare_gradients_are_finite_where_points_coincide():
    for kind in ("great_circle", "poincare", "euclidean"):
        x = (_latlon(4, 0) if kind == "great_circle" else _ball(4, 0)).requires_grad_()
        ob.cost_matrix(x, x.detach(), kind).sum().backward()
        assert torch.isfinite(x.grad).all(), kind


def test_squared_distances_far_from_the_origin_in_float32():
    # |x|^2 + |y|^2 - 2 <x, y> cancels catastrophically at 1e4 from the origin in float32
    x = cloud(3, 2, 0, dtype=torch.float32) + 1e4
    y = cloud(3, 2, 1, dtype=torch.float32) + 1e4
    exact = ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1)  # the same points, exactly
    torch.testing.assert_close(ob.cost_matrix(x, y).double(), exact, atol=1e-5, rtol=1e-6)
    for backend in ("dense", "online"):  # and through a divergence
        s = ob.sinkhorn_divergence(x, y, 1.0, backend=backend, tol=1e-5)
        ref = ob.sinkhorn_divergence(x.double(), y.double(), 1.0, tol=1e-9)
        assert abs(float(s) - float(ref)) < 1e-4 * float(ref), backend


def test_sum_cost_normalises_by_its_reference():
    x, y = cloud(8, 2, 0), cloud(6, 2, 1)
    c1, c2 = ob.PointCloud(x, y), ob.PointCloud(x, y, "euclidean")
    s = ob.SumCost([c1, c2], [1.0, 1.0], normalise=["max", "mean"])
    C1, C2 = c1.matrix(), c2.matrix()
    torch.testing.assert_close(s.matrix(), C1 / C1.max() + C2 / C2.mean())
    ref = ob.PointCloud(2 * x, 2 * y)  # a reference with 4x the scale
    s = ob.SumCost([c1], normalise="max", reference=[ref])
    torch.testing.assert_close(s.matrix(), C1 / (4 * C1.max()))


X3, Y4 = torch.rand(3, 2), torch.rand(4, 2)


@bad_inputs([
    (lambda: ob.PointCloud(X3, Y4, cost="l7"), ValueError, "cost must be one of"),
    (lambda: ob.PointCloud(X3, Y4, cost=3), TypeError, "cost must be a string or a callable"),
    (lambda: ob.PointCloud(torch.rand(3, 3), torch.rand(4, 3), "great_circle"), ValueError,
     "latitude, longitude"),
    (lambda: ob.PointCloud(torch.tensor([[91.0, 0.0]]), Y4, "great_circle"), ValueError,
     "latitudes outside"),
    (lambda: ob.PointCloud(torch.tensor([[0.6, 0.8]]), 0.1 * Y4, "poincare"), ValueError,
     "inside the unit ball"),
    (lambda: ob.PointCloud(X3, Y4, cost=lambda x, y: x.sum()).matrix(), ValueError,
     "must return a matrix"),
    (lambda: ob.PointCloud(X3, Y4, cost=lambda x, y: 1.0).matrix(), TypeError,
     "must return a torch.Tensor"),
    (lambda: ob.TableCost(torch.rand(2, 2), [0, 2], [1]), ValueError, "class 2 but n_classes"),
    (lambda: ob.TableCost(torch.rand(2, 2), [0.5], [1]), TypeError, "integer codes"),
    (lambda: ob.TableCost(torch.rand(2), [0], [1]), ValueError, "table must have shape"),
    (lambda: ob.SumCost([]), TypeError, "non-empty list"),
    (lambda: ob.SumCost([ob.PointCloud(X3, Y4), ob.PointCloud(X3, X3)]), ValueError,
     r"components\[1\] has shape"),
    (lambda: ob.SumCost([ob.PointCloud(X3, Y4)], [-1.0]), ValueError, r"weights\[0\]"),
    (lambda: ob.SumCost([ob.PointCloud(X3, Y4)], [0.0]), ValueError, "all 0"),
    (lambda: ob.SumCost([ob.PointCloud(X3, Y4)], [1.0, 2.0]), ValueError, "2 entries for 1"),
    (lambda: ob.SumCost([ob.TableCost(torch.zeros(1, 1), [0], [0])], normalise="max"),
     ValueError, "cannot be normalised"),
    (lambda: ob.SumCost([ob.PointCloud(X3, Y4)], normalise="median"), ValueError,
     r"normalise\[0\] must be one of"),
    (lambda: ob.pad_clouds([]), TypeError, "non-empty list"),
    (lambda: ob.pad_clouds([X3, torch.rand(2, 3)]), ValueError, r"clouds\[1\] differs"),
    (lambda: ob.sinkhorn(None, None, ob.PointCloud(X3, Y4), 0.1, backend="gpu"), ValueError,
     "backend must be one of"),
])
def test_bad_input(call, exc, match):
    raises_clearly(call, exc, match)
