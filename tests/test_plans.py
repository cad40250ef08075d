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
