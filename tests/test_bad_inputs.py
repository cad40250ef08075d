"""Every bad-input class raises a clear ValueError / TypeError naming the argument."""

import numpy as np
import pytest
import torch

import otbook as ob

C = torch.rand(3, 4, dtype=torch.float64)
A = torch.full((3,), 1 / 3, dtype=torch.float64)
B = torch.full((4,), 1 / 4, dtype=torch.float64)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ob.emd(A, B[:3], C), ValueError, "b has 3 weights"),
        (lambda: ob.emd(-A, B, C), ValueError, "a has negative"),
        (lambda: ob.emd(torch.tensor([np.nan, 0.5, 0.5]), B, C), ValueError, "a contains NaN"),
        (lambda: ob.emd(torch.tensor([np.inf, 0.5, 0.5]), B, C), ValueError, "a contains inf"),
        (lambda: ob.emd(A, 2 * B, C), ValueError, "same total mass"),
        (lambda: ob.emd(A, B, C.masked_fill(C > 0.5, np.nan)), ValueError, "C contains NaN"),
        (lambda: ob.emd(A, B, torch.rand(3)), ValueError, "C must be a matrix"),
        (lambda: ob.emd(None, None, torch.zeros(0, 4)), ValueError, "C is empty"),
        (lambda: ob.emd(A, B, "C"), TypeError, "C must be"),
        (lambda: ob.emd(A, B, C, max_iter=0), ValueError, "max_iter"),
        (lambda: ob.emd(torch.zeros(3, dtype=torch.float64), B, C), ValueError, "a has zero total mass"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 3)), ValueError, "feature dimension"),
        (lambda: ob.cost_matrix(torch.rand(0, 2), torch.rand(4, 2)), ValueError, "x is empty"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.tensor([[np.nan, 1.0]])), ValueError, "y contains NaN"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 2, dtype=torch.float64)), TypeError, "dtype"),
        (lambda: ob.cost_matrix(torch.rand(3, 2), torch.rand(4, 2), cost="l7"), ValueError, "cost must be one of"),
        (lambda: ob.cost_matrix(torch.zeros(3, 2), torch.rand(4, 2), cost="cosine"), ValueError, "zero vector"),
        (lambda: ob.cost_matrix(["a"], torch.rand(4, 1)), TypeError, "x must hold numbers"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(4), p=0.5), ValueError, "p must be"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(0)), ValueError, "y is empty"),
        (lambda: ob.wasserstein_1d(torch.rand(3), torch.rand(4), b=torch.ones(4)), ValueError, "same total mass"),
        (lambda: ob.wasserstein_1d(torch.tensor([0.0, np.nan]), torch.rand(4)), ValueError, "x contains NaN"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "S1 must be positive semi-definite"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.tensor([[1.0, 2.0], [0.0, 1.0]])), ValueError, "S2 must be symmetric"),
        (lambda: ob.bures_wasserstein(torch.zeros(3), torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "m1 must be a vector of length 2"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3)), ValueError, "S2"),
        (lambda: ob.bures_wasserstein(torch.zeros(2), torch.ones(2, 3), torch.zeros(2), torch.eye(2)), ValueError, "S1 must be a square"),
        (lambda: ob.gaussian_map(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2), torch.eye(2)), ValueError, "singular"),
        (lambda: ob.uniform(0), ValueError, "n must be at least 1"),
        (lambda: ob.uniform(2.5), TypeError, "n must be an int"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
