"""otbook.transfer: batched networks train as if alone; the source-permutation test against
scipy's statistics and its null distribution; bad inputs."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import otbook as ob


def _data(B, n, d, seed=0, n_out=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, d, generator=gen)
    y = torch.randint(0, n_out, (B, n), generator=gen)
    return x, y


def test_forward_shape_and_initial_bound():
    nets = ob.BatchedMLP(4, 6, 3, hidden=(5, 7), generator=torch.Generator().manual_seed(0))
    assert tuple(nets(torch.zeros(4, 2, 6)).shape) == (4, 2, 3)
    for W, b in zip(nets.W, nets.b):
        bound = 1 / np.sqrt(W.shape[1])
        assert W.abs().max() <= bound and b.abs().max() <= bound
    assert [tuple(W.shape) for W in nets.W] == [(4, 6, 5), (4, 5, 7), (4, 7, 3)]


def test_batched_training_equals_training_each_network_alone():
    x, y = _data(3, 12, 4)
    gen = torch.Generator().manual_seed(1)
    batch = ob.BatchedMLP(3, 4, 3, hidden=(8,), generator=gen)
    alone = []
    for k in range(3):
        net = ob.BatchedMLP(1, 4, 3, hidden=(8,))
        with torch.no_grad():
            for dst, src in zip(net.parameters(), batch.parameters()):
                dst.copy_(src[k:k + 1])
        alone.append(ob.train_batched(net, x[k:k + 1], y[k:k + 1], steps=30, lr=1e-2))
    ob.train_batched(batch, x, y, steps=30, lr=1e-2)
    for k, net in enumerate(alone):
        for p_batch, p_alone in zip(batch.parameters(), net.parameters()):
            torch.testing.assert_close(p_batch[k:k + 1], p_alone, rtol=1e-5, atol=1e-6)


def test_head_only_training_leaves_the_body_unchanged():
    x, y = _data(2, 10, 4)
    nets = ob.BatchedMLP(2, 4, 3, hidden=(8, 8), generator=torch.Generator().manual_seed(2))
    before = [p.detach().clone() for p in nets.parameters()]
    ob.train_batched(nets, x, y, steps=20, lr=1e-2, params=nets.head_parameters())
    after = list(nets.parameters())
    n_body = 2 * (len(nets.W) - 1)  # ParameterLists: all W, then all b
    body = [0, 1, 3, 4]  # W[0], W[1], b[0], b[1]
    assert n_body == len(body)
    for k in body:
        assert torch.equal(before[k], after[k])
    for k in [2, 5]:  # the head
        assert not torch.equal(before[k], after[k])


def test_mini_batches_never_touch_the_padding():
    x, y = _data(2, 10, 3)
    x[0, 6:] = float("nan")  # padding of network 0 must still be finite
    nets = ob.BatchedMLP(2, 3, 3, hidden=(4,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="x contains NaN"):
        ob.train_batched(nets, x, y, steps=5, lr=1e-2, batch_size=8, sizes=[6, 10])
    # network 0: two real rows of class 0, then eight padding rows, the same inputs with
    # class 2; trained on the padding too, it would predict the majority class 2
    x[0] = x[0, :1]
    y[0, :2], y[0, 2:] = 0, 2
    ob.train_batched(nets, x, y, steps=100, lr=1e-2, batch_size=8, sizes=torch.tensor([2, 10]),
                     generator=torch.Generator().manual_seed(0))
    assert ob.batched_accuracy(nets, x[:, :2], y[:, :2])[0] == 1


def test_copy_body_repeats_each_source_network():
    pre = ob.BatchedMLP(2, 4, 10, hidden=(8, 6), generator=torch.Generator().manual_seed(3))
    nets = ob.BatchedMLP(6, 4, 3, hidden=(8, 6)).copy_body_(pre, repeats=3)
    for k in range(6):
        for layer in range(2):
            assert torch.equal(nets.W[layer][k], pre.W[layer][k // 3])
            assert torch.equal(nets.b[layer][k], pre.b[layer][k // 3])
    assert nets.W[-1].shape == (6, 6, 3)


def test_accuracy_counts_the_argmax():
    nets = ob.BatchedMLP(1, 2, 2, hidden=(2,))
    with torch.no_grad():
        for p in nets.parameters():
            p.zero_()
        nets.W[0][0] = torch.eye(2)
        nets.W[1][0] = torch.eye(2)  # logits = relu(x): class = argmax of the coordinates
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.5], [0.1, 3.0]]])
    y = torch.tensor([[0, 1, 1, 1]])
    assert ob.batched_accuracy(nets, x, y).tolist() == [0.75]


def test_permutation_test_statistics_match_scipy():
    rng = np.random.default_rng(0)
    D = rng.random((8, 3))
    G = -D + 0.3 * rng.standard_normal((8, 3))
    G[0, 0] = G[1, 0]  # a tie: average ranks, as scipy
    test = ob.source_permutation_test(D, G, n_permutations=2000,
                                      generator=torch.Generator().manual_seed(0))
    r = stats.pearsonr(D.ravel(), G.ravel()).statistic
    r_s = np.mean([stats.spearmanr(D[:, j], G[:, j]).statistic for j in range(3)])
    assert test["r"][0] == pytest.approx(r, abs=1e-12)
    assert test["r_s"][0] == pytest.approx(r_s, abs=1e-12)
    assert test["r"][1] < 0.05 and test["r_s"][1] < 0.05
    # a perfectly ordered source set: only the identity permutation reaches r_s = -1
    S = 6
    perfect = ob.source_permutation_test(np.arange(S)[:, None] + np.zeros((1, 2)),
                                         -np.arange(S)[:, None] + np.array([[0.0, 5.0]]),
                                         n_permutations=5000,
                                         generator=torch.Generator().manual_seed(1))
    assert perfect["r_s"][0] == pytest.approx(-1)
    assert perfect["r_s"][1] == pytest.approx(1 / math.factorial(S), abs=0.003)


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    p = [ob.source_permutation_test(rng.random((7, 3)), rng.random((7, 3)),
                                    n_permutations=400,
                                    generator=torch.Generator().manual_seed(k))["r_s"][1]
         for k in range(60)]
    assert 0.3 < np.mean(p) < 0.7
    assert np.mean(np.array(p) < 0.1) < 0.25


@pytest.mark.parametrize("call, error, match", [
    (lambda: ob.BatchedMLP(0, 2, 2), ValueError, "n_networks"),
    (lambda: ob.BatchedMLP(1, 2, 2, hidden=(0,)), ValueError, "hidden"),
    (lambda: ob.BatchedMLP(1, 2, 2, dtype=torch.long), TypeError, "dtype"),
    (lambda: ob.BatchedMLP(1, 2, 2, generator=3), TypeError, "generator"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 5),
                              torch.zeros(2, 4, dtype=torch.long), steps=1, lr=0.1),
     ValueError, "x must have shape"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 4), steps=1, lr=0.1), TypeError, "y must hold"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.full((2, 4), 2), steps=1, lr=0.1), ValueError, "classes 0"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 3, dtype=torch.long), steps=1, lr=0.1),
     ValueError, "y must have shape"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 4, dtype=torch.long), steps=0, lr=0.1),
     ValueError, "steps"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 4, dtype=torch.long), steps=1, lr=-1),
     ValueError, "lr"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 4, dtype=torch.long), steps=1, lr=0.1,
                              batch_size=2, sizes=[0, 4]), ValueError, "sizes"),
    (lambda: ob.train_batched(ob.BatchedMLP(2, 3, 2), torch.zeros(2, 4, 3),
                              torch.zeros(2, 4, dtype=torch.long), steps=1, lr=0.1,
                              sizes=[2, 4]), ValueError, "sizes"),
    (lambda: ob.train_batched("net", torch.zeros(2, 4, 3), torch.zeros(2, 4), steps=1, lr=0.1),
     TypeError, "nets"),
    (lambda: ob.BatchedMLP(4, 3, 2).copy_body_(ob.BatchedMLP(3, 3, 5), repeats=1),
     ValueError, "repeated"),
    (lambda: ob.BatchedMLP(2, 3, 2, hidden=(4,)).copy_body_(ob.BatchedMLP(2, 3, 5)),
     ValueError, "hidden widths"),
    (lambda: ob.source_permutation_test(np.zeros((2, 3)), np.zeros((2, 3))),
     ValueError, "at least 3 sources"),
    (lambda: ob.source_permutation_test(np.random.rand(4, 3), np.random.rand(4, 2)),
     ValueError, "gains must have the shape"),
    (lambda: ob.source_permutation_test(np.ones((4, 2)), np.random.rand(4, 2)),
     ValueError, "distances is constant"),
    (lambda: ob.source_permutation_test(np.random.rand(4, 2), [[np.nan] * 2] * 4),
     ValueError, "gains contains NaN"),
    (lambda: ob.source_permutation_test(np.random.rand(4, 2), np.random.rand(4, 2),
                                        n_permutations=0), ValueError, "n_permutations"),
])
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float64_networks_keep_their_dtype():
    x, y = _data(2, 8, 3)  # float32 inputs are converted to the networks' dtype
    nets = ob.BatchedMLP(2, 3, 3, hidden=(4,), dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    ob.train_batched(nets, x, y, steps=3, lr=1e-2)
    assert all(p.dtype == torch.float64 for p in nets.parameters())
    assert ob.batched_accuracy(nets, x, y).dtype == torch.float64
    test = ob.source_permutation_test(torch.rand(5, 2), torch.rand(5, 2), n_permutations=10)
    assert isinstance(test["r"][0], float) and 0 < test["r"][1] <= 1
