"""otbook.plans: summaries of a plan between labelled samples, against NumPy loops."""

import numpy as np
import pytest
import torch

import otbook as ob
from tests.helpers import gen


def _random_problem(seed, n=30, m=25, k=4):
    g = np.random.default_rng(seed)
    plan = g.random((n, m)) * (g.random((n, m)) < 0.3)
    return plan, g.integers(0, k, n), g.integers(0, k, m), k


@pytest.mark.parametrize("seed", range(3))
def test_class_coupling_against_loops(seed):
    plan, ya, yb, k = _random_problem(seed)
    ref = np.zeros((k, k))
    for i in range(plan.shape[0]):
        for j in range(plan.shape[1]):
            ref[ya[i], yb[j]] += plan[i, j]
    K = ob.class_coupling(torch.tensor(plan), ya, yb, n_classes_a=k, n_classes_b=k)
    np.testing.assert_allclose(K.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_class_preservation_against_loops(seed):
    plan, ya, yb, k = _random_problem(seed)
    hits = 0
    for i in range(plan.shape[0]):
        mass = np.bincount(yb, weights=plan[i], minlength=k)
        hits += mass.sum() > 0 and mass.argmax() == ya[i]
    assert ob.class_preservation(torch.tensor(plan), ya, yb) == pytest.approx(hits / len(ya))


def test_class_preservation_identity_and_emd():
    x = torch.randn(40, 2, generator=gen(0), dtype=torch.float64)
    y = torch.arange(40) % 3
    plan = ob.emd(ob.uniform(40, x), ob.uniform(40, x), ob.cost_matrix(x, x)).plan
    assert ob.class_preservation(plan, y, y) == 1.0
    assert ob.class_preservation(plan, y, (y + 1) % 3) == 0.0


def test_bad_inputs():
    P = torch.ones(3, 2)
    with pytest.raises(ValueError, match="labels_a"):
        ob.class_preservation(P, [0, 1], [0, 1])
    with pytest.raises(ValueError, match="labels_b"):
        ob.class_coupling(P, [0, 1, 1], [0, 1, 1])
    with pytest.raises(TypeError, match="labels_a"):
        ob.class_coupling(P, [0.5, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="plan"):
        ob.class_preservation(-P, [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="plan"):
        ob.class_preservation(torch.ones(2, 3, 2), [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="plan"):
        ob.class_preservation(torch.full((3, 2), float("nan")), [0, 1, 1], [0, 1])


# -- class_report ---------------------------------------------------------------------------


def _report_reference(plan, C, ya, yb, k, top_k, a=None, b=None):
    """The report's numbers by explicit loops over the entries of the plan (NumPy)."""
    ref = {key: np.zeros(k) for key in ["mass_a", "mass_b", "cost_a", "cost_b", "within"]}
    contrib = {c: [] for c in range(k)}
    for i in range(plan.shape[0]):
        for j in range(plan.shape[1]):
            ref["mass_a"][ya[i]] += plan[i, j]
            ref["mass_b"][yb[j]] += plan[i, j]
            ref["cost_a"][ya[i]] += plan[i, j] * C[i, j]
            ref["cost_b"][yb[j]] += plan[i, j] * C[i, j]
            ref["within"][ya[i]] += plan[i, j] * (ya[i] == yb[j])
            contrib[ya[i]].append((plan[i, j] * C[i, j], i, j))
    ref["weight_a"] = np.bincount(ya, weights=plan.sum(1) if a is None else a, minlength=k)
    ref["weight_b"] = np.bincount(yb, weights=plan.sum(0) if b is None else b, minlength=k)
    ref["top_a"] = [sorted(contrib[c], reverse=True)[:top_k] for c in range(k)]
    return ref


def _check_report(rep, ref, k):
    for key in ["mass_a", "mass_b", "cost_a", "cost_b", "within", "weight_a", "weight_b"]:
        np.testing.assert_allclose(getattr(rep, key).numpy(), ref[key], rtol=1e-10,
                                   atol=1e-15, err_msg=key)
    for c in range(k):
        values = [v for v, _, _ in ref["top_a"][c]]
        np.testing.assert_allclose(rep.top_values_a[c].numpy(), values, rtol=1e-12)
        for (v, i, j), (ri, rj) in zip(ref["top_a"][c], rep.top_pairs_a[c].tolist()):
            assert (ri, rj) == (i, j) or np.isclose(v, rep.top_values_a[c][0].item())


@pytest.mark.parametrize("seed", range(3))
def test_class_report_emd_against_pot_and_loops(seed):
    ot = pytest.importorskip("ot")
    g = np.random.default_rng(seed)
    n, m, k = 30, 24, 4
    x, z = g.normal(size=(n, 3)), g.normal(size=(m, 3)) + 0.3
    ya, yb = g.integers(0, k, n), g.integers(0, k, m)
    C = ot.dist(x, z)  # squared Euclidean
    plan = ot.emd(ot.unif(n), ot.unif(m), C)
    rep = ob.class_report(torch.tensor(plan), torch.tensor(C), ya, yb, top_k=3)
    _check_report(rep, _report_reference(plan, C, ya, yb, k, 3), k)
    assert rep.total.item() == pytest.approx(ot.emd2(ot.unif(n), ot.unif(m), C), rel=1e-10)
    np.testing.assert_allclose(rep.kept_a.numpy()[rep.weight_a.numpy() > 0], 1.0)
    score = (rep.cost_a + rep.cost_b) / (rep.mass_a + rep.mass_b)
    np.testing.assert_allclose(rep.score.numpy(), score.numpy())
    np.testing.assert_allclose((rep.within + rep.cross_a).numpy(), rep.mass_a.numpy())
    # the top pairs of the columns' classes are the top pairs of the transposed problem
    rep_t = ob.class_report(torch.tensor(plan.T), torch.tensor(C.T), yb, ya, top_k=3)
    for c in range(k):
        assert torch.equal(rep.top_pairs_b[c], rep_t.top_pairs_a[c].flip(1))


def test_class_report_unbalanced_against_pot():
    ot = pytest.importorskip("ot")
    g = np.random.default_rng(0)
    n, m, k = 40, 30, 3
    x, z = g.normal(size=(n, 2)), g.normal(size=(m, 2))
    ya, yb = np.arange(n) % k, np.arange(m) % k
    z[yb == 2] += 3.0  # class 2 of the target is far away: an unbalanced plan creates it
    a, b = ot.unif(n), ot.unif(m)
    C = ot.dist(x, z)
    plan = ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg=0.5, reg_m=1.0,
                                              numItermax=5000)
    rep = ob.class_report(torch.tensor(plan), ot.dist(x, z), ya, yb, a=a, b=b, top_k=2)
    _check_report(rep, _report_reference(plan, C, ya, yb, k, 2, a, b), k)
    kept_b = np.bincount(yb, weights=plan.sum(0)) / np.bincount(yb, weights=b)
    np.testing.assert_allclose(rep.kept_b.numpy(), kept_b, rtol=1e-10)
    assert rep.kept_b[2] < 0.5 * rep.kept_b[:2].min()


def test_class_report_cost_object_and_absent_class():
    x = torch.randn(12, 2, generator=gen(0), dtype=torch.float64)
    z = torch.randn(10, 2, generator=gen(1), dtype=torch.float64)
    ya, yb = torch.arange(12) % 3, torch.arange(10) % 2  # class 2 only in the source
    plan = ob.emd(None, None, ob.cost_matrix(x, z)).plan
    rep = ob.class_report(plan, ob.PointCloud(x, z), ya, yb, n_classes=4)
    dense = ob.class_report(plan, ob.cost_matrix(x, z), ya, yb, n_classes=4)
    assert torch.allclose(rep.cost_a, dense.cost_a) and rep.coupling.shape == (4, 4)
    assert rep.mass_b[2] == 0 and rep.mean_cost_b[2] == 0 and rep.kept_b[2] == 0
    assert rep.mass_a[3] == 0 and rep.score[3] == 0 and len(rep.top_pairs_a[3]) == 0
    assert rep.score.dtype == torch.float64 and bool(torch.isfinite(rep.score).all())


def test_class_report_identical_samples():
    x = torch.randn(20, 3, generator=gen(2), dtype=torch.float64)
    y = torch.arange(20) % 4
    plan = ob.emd(None, None, ob.cost_matrix(x, x)).plan
    rep = ob.class_report(plan, ob.cost_matrix(x, x), y, y)
    assert rep.score.abs().max() < 1e-12
    assert torch.allclose(rep.within_fraction_a, torch.ones(4, dtype=torch.float64))


def test_class_report_bad_inputs():
    P, C = torch.full((3, 2), 1 / 6), torch.ones(3, 2)
    with pytest.raises(ValueError, match="labels_a"):
        ob.class_report(P, C, [0, 1], [0, 1])
    with pytest.raises(ValueError, match="labels_b"):
        ob.class_report(P, C, [0, 1, 1], [0, 1, 1])
    with pytest.raises(TypeError, match="labels_b"):
        ob.class_report(P, C, [0, 1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="C"):
        ob.class_report(P, torch.ones(2, 3), [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="C"):
        ob.class_report(P, torch.full((3, 2), float("nan")), [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="plan"):
        ob.class_report(-P, C, [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="labels_a"):
        ob.class_report(P, C, [0, 1, 3], [0, 1], n_classes=2)
    with pytest.raises(ValueError, match="top_k"):
        ob.class_report(P, C, [0, 1, 1], [0, 1], top_k=0)
    with pytest.raises(ValueError, match="a"):
        ob.class_report(P, C, [0, 1, 1], [0, 1], a=[0.5, 0.5])
    with pytest.raises(ValueError, match="b"):
        ob.class_report(P, C, [0, 1, 1], [0, 1], b=[-0.5, 0.5])


def test_class_report_relabelling_permutes_the_report():
    x = torch.randn(24, 2, generator=gen(3), dtype=torch.float64)
    z = torch.randn(18, 2, generator=gen(4), dtype=torch.float64) + 0.5
    ya, yb = torch.arange(24) % 3, torch.arange(18) % 3
    C = ob.cost_matrix(x, z)
    plan = ob.emd(None, None, C).plan
    perm = torch.tensor([2, 0, 1])  # class c is renamed perm[c]
    rep, ren = ob.class_report(plan, C, ya, yb), ob.class_report(plan, C, perm[ya], perm[yb])
    assert torch.allclose(ren.score[perm], rep.score)
    assert torch.allclose(ren.coupling[perm][:, perm], rep.coupling)
    for c in range(3):
        assert torch.equal(ren.top_pairs_a[perm[c]], rep.top_pairs_a[c])


def test_class_report_keeps_the_plan_dtype():
    P = torch.full((4, 3), 1 / 12, dtype=torch.float32)
    rep = ob.class_report(P, torch.ones(4, 3, dtype=torch.float64), [0, 1, 1, 0], [0, 1, 0])
    assert rep.score.dtype == torch.float32 and rep.total.item() == pytest.approx(1.0)
