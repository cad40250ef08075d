"""The decision-aware dataset distance (OTD³): top-k decisions, the decision term, the
normalised weighted sum, against NumPy loops and POT."""

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import cdist

import otbook as ob


def _data(n, K=6, dx=3, c=0.45, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dx, generator=g, dtype=dtype)
    y = 10 * (x.sum(1, keepdim=True) / dx - c * torch.rand(n, K, generator=g, dtype=dtype) ** 2)
    y = y + torch.randn(n, K, generator=g, dtype=dtype)
    return x, y, ob.topk_decisions(y, 2)


def _cross_regret_loop(y1, z1, y2, z2, sign=1.0):
    f = lambda z, y: sign * float(np.dot(z, y))  # noqa: E731
    G = np.zeros((len(y1), len(y2)))
    for i in range(len(y1)):
        for j in range(len(y2)):
            G[i, j] = 0.5 * (f(z1[i], y1[i]) - f(z2[j], y1[i])) \
                + 0.5 * (f(z2[j], y2[j]) - f(z1[i], y2[j]))
    return G


def test_topk_decisions_match_numpy():
    y = torch.randn(20, 7, dtype=torch.float64)
    for k in (1, 3, 7):
        z = ob.topk_decisions(y, k).numpy()
        top = np.argsort(-y.numpy(), axis=1)[:, :k]
        want = np.zeros_like(z)
        np.put_along_axis(want, top, 1.0, axis=1)
        assert np.array_equal(z, want)
    low = ob.topk_decisions(y, 2, sense="min").numpy()
    two_smallest = np.sort(y.numpy(), 1)[:, :2].sum(1)
    np.testing.assert_allclose((low * y.numpy()).sum(1), two_smallest)


@pytest.mark.parametrize("sense", ["max", "min"])
def test_cross_regret_matches_loop_and_is_nonnegative(sense):
    _, y1, _ = _data(9, seed=1)
    _, y2, _ = _data(7, seed=2, c=0.9)
    z1, z2 = ob.topk_decisions(y1, 2, sense=sense), ob.topk_decisions(y2, 2, sense=sense)
    G = ob.decision_cost(y1, z1, y2, z2, sense=sense).matrix().numpy()
    want = _cross_regret_loop(y1.numpy(), z1.numpy(), y2.numpy(), z2.numpy(),
                              1.0 if sense == "max" else -1.0)
    np.testing.assert_allclose(G, want, rtol=1e-12, atol=1e-12)
    assert G.min() >= -1e-12
    # the closed form (s/2) <z - z', y - y'>
    s = 1.0 if sense == "max" else -1.0
    dz = z1.numpy()[:, None] - z2.numpy()[None]
    dy = y1.numpy()[:, None] - y2.numpy()[None]
    np.testing.assert_allclose(G, 0.5 * s * (dz * dy).sum(-1), atol=1e-12)


def test_other_decision_terms():
    _, y1, z1 = _data(5, seed=3)
    _, y2, z2 = _data(4, seed=4)
    H = ob.decision_cost(y1, z1, y2, z2, decision="sqeuclidean").matrix().numpy()
    np.testing.assert_allclose(H, cdist(z1.numpy(), z2.numpy(), "sqeuclidean"))
    value_gap = lambda z, y, z2, y2: ((z * y).sum(-1)[..., :, None]  # noqa: E731
                                      - (z2 * y2).sum(-1)[..., None, :]).abs()
    V = ob.decision_cost(y1, z1, y2, z2, decision=value_gap).matrix().numpy()
    f1, f2 = (z1 * y1).sum(1).numpy(), (z2 * y2).sum(1).numpy()
    np.testing.assert_allclose(V, np.abs(f1[:, None] - f2[None]))


def _numpy_otd3(x1, y1, z1, x2, y2, z2, w):
    """OTD³ from scratch: SciPy distances, loop cross-regret, target-target means, POT."""
    X, Y, Z = (cdist(x1, x2), cdist(y1, y2), _cross_regret_loop(y1, z1, y2, z2))
    MX, MY = cdist(x2, x2).mean(), cdist(y2, y2).mean()
    MZ = _cross_regret_loop(y2, z2, y2, z2).mean()
    return w[0] * X / MX + w[1] * Y / MY + w[2] * Z / MZ


@pytest.mark.parametrize("w", [(1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0), (0.1, 0.2, 0.7)])
def test_exact_value_matches_pot(w):
    s = [t.numpy() for t in _data(12, seed=5)]
    t = [t.numpy() for t in _data(10, seed=6, c=0.8)]
    C = _numpy_otd3(*s, *t, w)
    res = ob.decision_distance(*s, *t, weights=w)
    assert abs(res.value.item() - ot.emd2([], [], C)) < 1e-10
    assert abs(sum(p.item() for p in res.parts.values()) - res.value.item()) < 1e-10
    np.testing.assert_allclose(res.cost.matrix().numpy(), C, rtol=1e-12, atol=1e-12)
    assert res.result.converged


def test_entropic_value_matches_pot():
    s, t = _data(12, seed=7), _data(10, seed=8, c=0.8)
    C = _numpy_otd3(*[u.numpy() for u in s], *[u.numpy() for u in t], (0.2, 0.3, 0.5))
    res = ob.decision_distance(*s, *t, weights=(0.2, 0.3, 0.5), eps=0.1)
    P = ot.sinkhorn(ot.unif(12), ot.unif(10), C, 0.1, stopThr=1e-12, numItermax=100_000)
    assert abs(res.value.item() - float((P * C).sum())) < 1e-6


def test_invariants():
    x, y, z = _data(15, seed=9)
    assert abs(ob.decision_distance(x, y, z, x, y, z).value.item()) < 1e-12
    # feature weight only: W1 between the feature clouds, over the target's mean distance
    x2, y2, z2 = _data(11, seed=10)
    res = ob.decision_distance(x, y, z, x2, y2, z2, weights=(1, 0, 0))
    want = ot.emd2([], [], cdist(x.numpy(), x2.numpy())) / cdist(x2.numpy(), x2.numpy()).mean()
    assert abs(res.value.item() - want) < 1e-10
    # without normalisation, the raw sum; with reference="self" the cross statistics
    raw = ob.decision_distance(x, y, z, x2, y2, z2, weights=(0, 1, 0), normalise=None)
    assert abs(raw.value.item() - ot.emd2([], [], cdist(y.numpy(), y2.numpy()))) < 1e-10
    own = ob.decision_distance(x, y, z, x2, y2, z2, weights=(0, 1, 0), reference="self")
    assert abs(own.scales["y"] - cdist(y.numpy(), y2.numpy()).mean()) < 1e-10


def test_zero_weight_component_is_not_normalised():
    # every target instance takes the same decision: the decision term is 0 between target
    # examples, so it cannot be normalised by its mean, but with weight 0 it is not needed
    x, y, z = _data(8, seed=11)
    y2 = torch.arange(6, dtype=torch.float64) + 0.1 * torch.rand(5, 6, dtype=torch.float64)
    x2, z2 = x[:5], ob.topk_decisions(y2, 2)
    ob.decision_distance(x, y, z, x2, y2, z2, weights=(0.5, 0.5, 0))
    with pytest.raises(ValueError, match="normalised"):
        ob.decision_distance(x, y, z, x2, y2, z2)


def test_dtype_and_gradient_free_float32():
    s = [u.float() for u in _data(6, seed=12)]
    t = [u.float() for u in _data(5, seed=13)]
    res = ob.decision_distance(*s, *t)
    assert res.value.dtype == torch.float32 and res.plan.dtype == torch.float32
    assert ob.topk_decisions(s[1], 1).dtype == torch.float32


def test_bad_inputs_name_the_argument():
    x, y, z = _data(6, seed=14)
    x2, y2, z2 = _data(5, seed=15)
    cases = [
        (dict(weights=(0.5, 0.5, 0.5)), "weights"),       # off the simplex
        (dict(weights=(1.2, -0.2, 0.0)), r"weights\[1\]"),  # a negative weight
        (dict(weights=(0.5, 0.5)), "weights"),            # wrong length
        (dict(sense="maximise"), "sense"),
        (dict(decision="hamming"), "decision"),
        (dict(reference="source"), "reference"),
        (dict(normalise="median"), "normalise"),
        (dict(eps=0.0), "eps"),
    ]
    for kw, name in cases:
        with pytest.raises(ValueError, match=name):
            ob.decision_distance(x, y, z, x2, y2, z2, **kw)
    with pytest.raises(ValueError, match="y1"):   # labels of the wrong length
        ob.decision_distance(x, y[:4], z[:4], x2, y2, z2)
    with pytest.raises(ValueError, match="y2"):
        ob.decision_distance(x, y, z, x2, y2[:3], z2[:3])
    with pytest.raises(ValueError, match="z1"):   # decisions not shaped like the labels
        ob.decision_distance(x, y, z[:, :3], x2, y2, z2)
    with pytest.raises(ValueError, match="x2"):   # features of another dimension
        ob.decision_distance(x, y, z, x2[:, :2], y2, z2)
    with pytest.raises(ValueError, match="not optimal"):  # decisions for another problem
        ob.decision_distance(x, y, z, x2, y2, ob.topk_decisions(y2, 2, sense="min"))
    with pytest.raises(ValueError, match="NaN"):
        ob.decision_distance(x, y.masked_fill(y > 5, float("nan")), z, x2, y2, z2)
    with pytest.raises(ValueError, match="k"):
        ob.topk_decisions(y, 7)
    with pytest.raises(TypeError, match="weights"):
        ob.decision_distance(x, y, z, x2, y2, z2, weights="equal")
