"""OTDD (ob.dataset_distance): against independent computations, invariants, and bad inputs."""

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

import otbook as ob
from helpers import F64


# an unconverged solve is a failure here, except where a test expects the warning
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def make(n, n_classes, d=3, shift=0.0, scale=1.0, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    centres = 2.0 * torch.randn(n_classes, d, generator=g, dtype=dtype)
    A = torch.randn(n_classes, d, d, generator=g, dtype=dtype) * 0.4 + torch.eye(d, dtype=dtype)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    x = torch.einsum("nij,nj->ni", A[y], z) * scale + centres[y] + shift
    return x, y


def bures_scipy(A, B):
    mA, mB = A.mean(0), B.mean(0)
    SA, SB = np.cov(A.T), np.cov(B.T)
    rA = scipy.linalg.sqrtm(SA).real
    cross = scipy.linalg.sqrtm(rA @ SB @ rA).real
    return float(((mA - mB) ** 2).sum() + np.trace(SA + SB - 2 * cross))


def table_independent(x1, y1, x2, y2, inner):
    x1, x2, y1, y2 = (t.numpy() for t in (x1, x2, y1, y2))
    l1, l2 = np.unique(y1), np.unique(y2)
    T = np.zeros((len(l1), len(l2)))
    for i, u in enumerate(l1):
        for j, v in enumerate(l2):
            A, B = x1[y1 == u], x2[y2 == v]
            if inner == "exact":
                T[i, j] = ot.emd2(ot.unif(len(A)), ot.unif(len(B)), ot.dist(A, B))
            else:
                T[i, j] = bures_scipy(A, B)
    return T


@pytest.mark.parametrize("inner", ["gaussian", "exact"])
def test_exact_outer_equals_an_independent_computation(inner):
    x1, y1 = make(120, 4, seed=1)
    x2, y2 = make(100, 3, seed=2, shift=0.5)
    r = ob.dataset_distance(x1, y1, x2, y2, inner=inner, lambda_x=0.7, lambda_y=1.3)
    T = table_independent(x1, y1, x2, y2, inner)
    np.testing.assert_allclose(r.label_distances.numpy(), T, rtol=1e-9, atol=1e-9)
    C = 0.7 * ot.dist(x1.numpy(), x2.numpy()) + 1.3 * T[y1.numpy()][:, y2.numpy()]
    expected = ot.emd2(ot.unif(120), ot.unif(100), C)
    assert float(r.value) == pytest.approx(expected, rel=1e-9)
    assert float(r.feature_cost + r.label_cost) == pytest.approx(expected, rel=1e-9)
    assert r.converged
    P = r.plan
    torch.testing.assert_close(P.sum(1), torch.full((120,), 1 / 120, dtype=F64))
    torch.testing.assert_close(P.sum(0), torch.full((100,), 1 / 100, dtype=F64))
    # the class coupling is the plan summed over classes, and the top pairs are its largest entries
    M = np.zeros((4, 3))
    np.add.at(M, (y1.numpy()[:, None].repeat(100, 1), y2.numpy()[None, :].repeat(120, 0)), P.numpy())
    np.testing.assert_allclose(r.class_coupling.numpy(), M, atol=1e-12)
    i, j = r.top_pairs[0]
    assert float(P[i, j]) == pytest.approx(float(P.max()))
    assert float(r.distance) == pytest.approx(expected**0.5)


def test_entropic_outer_equals_pot_on_the_same_cost():
    x1, y1 = make(90, 3, seed=3)
    x2, y2 = make(80, 3, seed=4, shift=0.3)
    eps = 0.5
    r = ob.dataset_distance(x1, y1, x2, y2, eps=eps, debias=False, tol=1e-9)
    T = table_independent(x1, y1, x2, y2, "gaussian")
    C = ot.dist(x1.numpy(), x2.numpy()) + T[y1.numpy()][:, y2.numpy()]
    P = ot.sinkhorn(ot.unif(90), ot.unif(80), C, eps, method="sinkhorn_log", stopThr=1e-12,
                    numItermax=100_000)
    np.testing.assert_allclose(r.plan.numpy(), P, atol=1e-8)
    assert float(r.feature_cost + r.label_cost) == pytest.approx(float((P * C).sum()), rel=1e-6)


def test_self_distance_is_zero_when_debiased_and_positive_when_not():
    x, y = make(150, 5, seed=5)
    r = ob.dataset_distance(x, y, x, y, eps=3.0)
    assert abs(float(r.value)) < 1e-6 * float(r.extra["self_terms"]["self1"])
    biased = ob.dataset_distance(x, y, x, y, eps=3.0, debias=False)
    assert float(biased.value) > 0.1
    assert ob.dataset_distance(x, y, x, y).value.abs() < 1e-12  # exact outer: 0 exactly


@pytest.mark.parametrize("eps", [None, 3.0])
def test_symmetry(eps):
    x1, y1 = make(100, 4, seed=6)
    x2, y2 = make(90, 2, seed=7, shift=1.0)
    r12 = ob.dataset_distance(x1, y1, x2, y2, eps=eps, tol=1e-9)
    r21 = ob.dataset_distance(x2, y2, x1, y1, eps=eps, tol=1e-9)
    assert float(r12.value) == pytest.approx(float(r21.value), rel=1e-7)
    torch.testing.assert_close(r12.label_distances, r21.label_distances.T)
    torch.testing.assert_close(r12.class_coupling, r21.class_coupling.T, atol=1e-9, rtol=0)


def test_online_backend_equals_dense():
    x1, y1 = make(200, 4, d=5, seed=8)
    x2, y2 = make(170, 3, d=5, seed=9, shift=0.4)
    kw = dict(eps=0.5, tol=1e-9, lambda_x=0.5, lambda_y=2.0)
    dense = ob.dataset_distance(x1, y1, x2, y2, backend="dense", **kw)
    online = ob.dataset_distance(x1, y1, x2, y2, backend="online", memory_budget=1e5, **kw)
    assert online.plan is None and online.extra["backend"] == "online"
    assert float(online.value) == pytest.approx(float(dense.value), rel=1e-8)
    assert float(online.feature_cost) == pytest.approx(float(dense.feature_cost), rel=1e-6)
    assert float(online.label_cost) == pytest.approx(float(dense.label_cost), rel=1e-6)
    torch.testing.assert_close(online.class_coupling, dense.class_coupling, atol=1e-8, rtol=0)
    torch.testing.assert_close(online.top_pairs, dense.top_pairs)
    assert online.converged and dense.converged


@pytest.mark.parametrize("backend", ["dense", "online"])
def test_overrelaxed_outer_problem_gives_the_same_distance(backend):
    # well-separated classes with different proportions: a slow, block-structured outer problem
    x1, y1 = make(300, 5, d=4, seed=11, scale=0.3)
    x2, y2 = make(300, 5, d=4, seed=11, scale=0.3, shift=0.5)
    keep = (y2 < 3) | (torch.arange(300) % 3 == 0)  # fewer examples of classes 3 and 4
    x2, y2 = x2[keep], y2[keep]
    kw = dict(eps=1.0, tol=1e-9, backend=backend, memory_budget=None if backend == "dense" else 1e5)
    plain = ob.dataset_distance(x1, y1, x2, y2, omega=1.0, **kw)
    auto = ob.dataset_distance(x1, y1, x2, y2, **kw)
    assert plain.converged and auto.converged
    assert float(auto.value) == pytest.approx(float(plain.value), rel=1e-8)
    torch.testing.assert_close(auto.class_coupling, plain.class_coupling, atol=1e-8, rtol=0)
    assert auto.n_iter["cross"] <= 0.7 * plain.n_iter["cross"], (auto.n_iter, plain.n_iter)


def test_online_float32_self_distance():
    x, y = make(1000, 10, d=8, seed=10, dtype=torch.float32)
    x2 = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    r = ob.dataset_distance(x, y, x, y, eps=10.0, backend="online")
    assert r.converged
    assert abs(float(r.value)) < 1e-4 * float(r.extra["self_terms"]["self1"])
    r2 = ob.dataset_distance(x, y, x2, y, eps=10.0, backend="online")
    r2_64 = ob.dataset_distance(x.double(), y, x2.double(), y, eps=10.0, backend="dense")
    assert r2.converged and r2_64.converged
    assert float(r2.value) == pytest.approx(float(r2_64.value), rel=1e-3, abs=1e-4)


def test_without_the_label_term_it_is_the_sinkhorn_divergence():
    x1, y1 = make(80, 3, seed=11)
    x2, y2 = make(70, 2, seed=12, shift=0.5)
    r = ob.dataset_distance(x1, y1, x2, y2, eps=0.5, lambda_y=0.0, tol=1e-9)
    s = ob.sinkhorn_divergence(x1, x2, 0.5, tol=1e-9)
    assert float(r.value) == pytest.approx(float(s), rel=1e-7)
    assert float(r.label_cost) == 0.0


def test_disjoint_and_arbitrary_label_sets():
    x1, y1 = make(90, 3, seed=13)
    x2, y2 = make(100, 5, seed=14, shift=0.2)
    names = np.array(["cat", "dog", "eel", "fox", "gnu"])[y2.numpy()]
    r_int = ob.dataset_distance(x1, y1 + 100, x2, y2, eps=0.5)
    r_str = ob.dataset_distance(x1, y1, x2, names, eps=0.5)
    assert float(r_int.value) == pytest.approx(float(r_str.value), rel=1e-10)
    assert list(r_str.classes2) == ["cat", "dog", "eel", "fox", "gnu"]
    assert list(r_int.classes1) == [100, 101, 102]
    assert r_str.label_distances.shape == (3, 5) and r_str.class_coupling.shape == (3, 5)
    assert float(r_str.class_coupling.sum()) == pytest.approx(1.0)


def test_gaussian_and_exact_inner_agree_on_gaussian_classes():
    g = torch.Generator().manual_seed(15)
    n = 2000
    means1 = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=F64)
    means2 = torch.tensor([[0.5, 3.0], [4.0, 2.0], [-2.0, 1.0]], dtype=F64)
    x1 = torch.cat([torch.randn(n, 2, generator=g, dtype=F64) * torch.tensor([1.0, 0.5], dtype=F64) + m
                    for m in means1])
    x2 = torch.cat([torch.randn(n, 2, generator=g, dtype=F64) * torch.tensor([0.7, 1.2], dtype=F64) + m
                    for m in means2])
    y1, y2 = torch.arange(2).repeat_interleave(n), torch.arange(3).repeat_interleave(n)
    Tg = ob.label_distances(x1, y1, x2, y2, inner="gaussian")
    Te = ob.label_distances(x1, y1, x2, y2, inner="exact", max_per_class=700,
                            generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(Te.numpy(), Tg.numpy(), rtol=0.05, atol=0.05)


def test_exact_inner_with_sinkhorn_is_debiased_and_close_to_emd():
    x, y = make(120, 3, d=2, seed=16)
    T = ob.label_distances(x, y, inner="exact", inner_eps=0.1)
    assert torch.all(T.diagonal().abs() < 1e-6)
    T0 = ob.label_distances(x, y, inner="exact")
    np.testing.assert_allclose(T.numpy(), T0.numpy(), rtol=0.05, atol=1e-6)


def test_single_example_class():
    x1, y1 = make(40, 3, seed=17)
    y1 = y1.clone()
    y1[0] = 7  # class 7 has one example
    x2, y2 = make(30, 2, seed=18)
    with pytest.raises(ValueError, match="y1: a class has a single example"):
        ob.dataset_distance(x1, y1, x2, y2, eps=0.5)
    r = ob.dataset_distance(x1, y1, x2, y2, eps=0.5, inner="exact")  # a Dirac: fine
    assert torch.isfinite(r.value) and r.converged


def test_feature_map_is_applied_first():
    x1, y1 = make(60, 3, seed=19)
    x2, y2 = make(50, 3, seed=20, shift=0.3)
    r_map = ob.dataset_distance(x1, y1, x2, y2, eps=5.0, feature_map=lambda t: 2.0 * t)
    r_scaled = ob.dataset_distance(2.0 * x1, y1, 2.0 * x2, y2, eps=5.0)
    assert float(r_map.value) == pytest.approx(float(r_scaled.value), rel=1e-10)
    images = x1.reshape(60, 3, 1)  # structured inputs are flattened
    r_img = ob.dataset_distance(images, y1, x2, y2, eps=0.5)
    assert float(r_img.value) == pytest.approx(
        float(ob.dataset_distance(x1, y1, x2, y2, eps=0.5).value), rel=1e-12)


def test_unconverged_outer_problem_says_so():
    x1, y1 = make(100, 3, seed=21)
    x2, y2 = make(100, 3, seed=22, shift=1.0)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        r = ob.dataset_distance(x1, y1, x2, y2, eps=0.05, max_iter=3)
    assert not r.converged
    assert r.marginal_error > 1e-6


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(inner="bures"), ValueError, "inner"),
    (dict(lambda_x=-1.0), ValueError, "lambda_x"),
    (dict(lambda_y=float("nan")), ValueError, "lambda_y"),
    (dict(lambda_x=0.0, lambda_y=0.0), ValueError, "both 0"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(backend="online"), ValueError, "eps=None"),
    (dict(inner_eps=0.1), ValueError, "inner_eps"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(feature_map=3), TypeError, "feature_map"),
    (dict(eps=0.1, omega=2.5), ValueError, "omega"),
    (dict(eps=0.1, memory_budget=-1), ValueError, "memory_budget"),
])
def test_bad_arguments(kwargs, err, match):
    x1, y1 = make(20, 2, seed=23)
    x2, y2 = make(20, 2, seed=24)
    with pytest.raises(err, match=match):
        ob.dataset_distance(x1, y1, x2, y2, **kwargs)


def test_bad_data():
    x1, y1 = make(20, 2, seed=25)
    x2, y2 = make(20, 2, seed=26)
    with pytest.raises(ValueError, match="feature dimension"):
        ob.dataset_distance(x1, y1, x2[:, :2], y2)
    bad = x1.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="x1"):
        ob.dataset_distance(bad, y1, x2, y2)
    with pytest.raises(ValueError, match="y2"):
        ob.dataset_distance(x1, y1, x2, y2[:-1])
    with pytest.raises(TypeError, match="y1"):
        ob.dataset_distance(x1, y1.double() + 0.5, x2, y2)
    with pytest.raises(ValueError, match="a"):
        ob.dataset_distance(x1, y1, x2, y2, a=-torch.ones(20, dtype=F64))
