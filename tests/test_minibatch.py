"""Mini-batch OT: the bound sandwich, full batch = exact, the usual estimator's bias,
distributed = single process, bad inputs."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import ot
import pytest
import torch
from helpers import F64, bad_inputs, cloud, gen, raises_clearly, weights

import otbook as ob
from otbook.minibatch import partition
from otbook.minibatch._couplings import north_west

ROOT = pathlib.Path(__file__).resolve().parents[1]
STRATEGIES = [("paired", None), ("all_pairs", None), ("optimal", None), ("random", 12),
              ("proxy", 12), ("adaptive", 12), ("adaptive", None)]


def problem(n, m, seed, weighted, d=2):
    """Two clouds (the second narrower and shifted) and, if ``weighted``, random weights."""
    x = cloud(n, d, seed)
    y = cloud(m, d, seed + 1, scale=0.7, shift=1.0)
    a = b = None
    if weighted:
        a, b = weights(n, seed + 2), weights(m, seed + 3)
    return x, y, a, b


def exact(x, y, a=None, b=None):
    """POT's exact OT value: the reference."""
    a = ot.unif(len(x)) if a is None else a.numpy()
    b = ot.unif(len(y)) if b is None else b.numpy()
    return ot.emd2(a, b, ot.dist(x.numpy(), y.numpy()))


def assert_batch_coupling(res):
    """The batch plan is a coupling of the batch masses, on evaluated pairs only, and ``upper``
    is its value on the table."""
    torch.testing.assert_close(res.batch_plan.sum(1), res.alpha, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.batch_plan.sum(0), res.beta, atol=1e-12, rtol=0)
    assert float(res.batch_plan[~res.evaluated].abs().sum()) == 0.0
    M = torch.where(res.evaluated, res.batch_costs, torch.zeros_like(res.batch_costs))
    assert abs(float((res.batch_plan * M).sum()) - float(res.upper)) < 1e-12


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(60, 60), (50, 37)])
@pytest.mark.parametrize("partition_rule", ["random", "kmeans"])
def test_sandwich(weighted, shape, partition_rule):
    x, y, a, b = problem(*shape, seed=shape[1] + weighted, weighted=weighted)
    ref = exact(x, y, a, b)  # POT's value
    for method, budget in STRATEGIES:
        res = ob.minibatch_bounds(x, y, batch_size=15, a=a, b=b, method=method, budget=budget,
                                  partition=partition_rule, generator=gen(3))
        lo, up = float(res.lower), float(res.upper)
        assert lo <= ref + 1e-10 and ref <= up + 1e-10, (method, lo, ref, up)
        assert lo > 0.5 * ref  # a useful bound, not a trivial one
        assert res.converged
        # the lower bound's potentials are feasible everywhere: f_i + g_j <= C_ij
        C = ob.cost_matrix(x, y)
        assert float((res.f[:, None] + res.g[None, :] - C).max()) <= 1e-10
        # and the bound is their dual value
        aa = a if a is not None else ob.uniform(len(x), like=x)
        bb = b if b is not None else ob.uniform(len(y), like=y)
        assert abs(float((res.f * aa).sum() + (res.g * bb).sum()) - lo) < 1e-12
        # no round lowers the bound
        assert bool((res.lower_history.diff() >= -1e-12).all())
        assert_batch_coupling(res)
        if budget is not None:
            assert res.n_solves <= budget


def test_batch_costs_are_exact_ot_between_batches():
    x, y, a, b = problem(40, 30, 0, weighted=True)
    res = ob.minibatch_bounds(x, y, batch_size=10, a=a, b=b, generator=gen(0))
    for i, A in enumerate(res.source_batches):
        for j, B in enumerate(res.target_batches):
            ref = ot.emd2((a[A] / a[A].sum()).numpy(), (b[B] / b[B].sum()).numpy(),
                          ot.dist(x[A].numpy(), y[B].numpy()))
            assert abs(float(res.batch_costs[i, j]) - ref) < 1e-12
    assert res.n_solves == 4 * 3 and res.certified


def test_optimal_is_tightest_and_strategies_are_ordered():
    x, y, _, _ = problem(80, 80, 5, weighted=False)
    ups = {}
    for method in ["paired", "all_pairs", "optimal"]:
        ups[method] = float(ob.minibatch_bounds(x, y, batch_size=10, method=method,
                                                generator=gen(1)).upper)
    assert ups["optimal"] <= ups["paired"] + 1e-12 and ups["optimal"] <= ups["all_pairs"] + 1e-12
    # all_pairs = the mean of the table (uniform equal batches)
    res = ob.minibatch_bounds(x, y, batch_size=10, method="all_pairs",
                              generator=gen(1))
    assert abs(float(res.batch_costs.mean()) - ups["all_pairs"]) < 1e-12
    # paired = the mean of the diagonal
    res = ob.minibatch_bounds(x, y, batch_size=10, method="paired",
                              generator=gen(1))
    assert abs(float(res.batch_costs.diagonal().mean()) - ups["paired"]) < 1e-12
    assert res.n_solves == 8


@pytest.mark.parametrize("method", ["random", "proxy", "adaptive"])
def test_upper_bound_tightens_with_budget(method):
    """For one draw (the same generator seed), a larger budget evaluates a superset of the batch
    pairs: "random" a longer prefix of one random order, "proxy" a longer prefix of the proxy's
    order, "adaptive" the same rounds run longer. The restricted optimum over a larger set is
    no larger, so the upper bound never rises; it never falls below the optimal coupling of the
    full table (nor that below exact OT); and it reaches that optimum, certified, at the full
    budget of k_x k_y = 64 pairs."""
    x, y, _, _ = problem(120, 120, 7, weighted=False)
    opt = float(ob.minibatch_bounds(x, y, batch_size=15, method="optimal", generator=gen(2)).upper)
    assert opt >= exact(x, y) - 1e-12
    ups, prev = [], None
    for budget in [8, 16, 32, 64]:
        res = ob.minibatch_bounds(x, y, batch_size=15, method=method, budget=budget,
                                  generator=gen(2))
        up = float(res.upper)
        assert_batch_coupling(res)
        assert opt - 1e-12 <= up <= (ups[-1] if ups else np.inf) + 1e-12
        if prev is not None:
            assert bool((res.evaluated >= prev).all())  # the pairs of the smaller budget, and more
        prev = res.evaluated
        if method == "adaptive":  # stops early only with a certificate
            assert res.n_solves == budget or res.certified
        else:                     # spends the whole budget
            assert res.n_solves == budget
        if res.certified:  # proved optimal for the full table
            assert abs(up - opt) < 1e-12
        ups.append(up)
    assert res.certified and abs(up - opt) < 1e-12
    assert ups[0] > opt + 1e-3  # on this draw the smallest budget is not optimal yet


def test_adaptive_certificate_matches_optimal():
    x, y, _, _ = problem(150, 150, 11, weighted=False)
    opt = ob.minibatch_bounds(x, y, batch_size=15, method="optimal", partition="kmeans",
                              generator=gen(4))
    ada = ob.minibatch_bounds(x, y, batch_size=15, method="adaptive", partition="kmeans",
                              generator=gen(4))
    assert ada.certified and ada.n_solves < opt.n_solves
    assert abs(float(ada.upper) - float(opt.upper)) < 1e-12


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(45, 45), (45, 30)])
def test_full_batch_is_exact(weighted, shape):
    x, y, a, b = problem(*shape, seed=1, weighted=weighted)
    ref = float(ob.emd(a, b, ob.cost_matrix(x, y)).value)
    for method in ["optimal", "paired", "all_pairs", "adaptive"]:
        res = ob.minibatch_bounds(x, y, batch_size=max(shape), a=a, b=b, method=method)
        assert res.n_solves == 1 and res.certified
        assert abs(float(res.upper) - ref) <= 1e-12 * ref
        assert abs(float(res.lower) - ref) <= 1e-12 * ref


def test_unnormalised_masses_scale():
    x, y, a, b = problem(40, 40, 2, weighted=True)
    r1 = ob.minibatch_bounds(x, y, batch_size=10, a=a, b=b, generator=gen(0))
    r3 = ob.minibatch_bounds(x, y, batch_size=10, a=3 * a, b=3 * b, generator=gen(0))
    assert abs(float(r3.upper) - 3 * float(r1.upper)) < 1e-12
    assert abs(float(r3.lower) - 3 * float(r1.lower)) < 1e-12


def test_partition_rule():
    g = gen(0)
    x = torch.randn(103, 3, generator=g)
    for rule in ["random", "kmeans"]:
        parts = partition(x, 10, method=rule, generator=g)
        sizes = sorted(len(p) for p in parts)
        assert len(parts) == 11 and sizes[-1] - sizes[0] <= 1 and sum(sizes) == 103
        assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(103))
    # k-means batches are spatially coherent: smaller within-batch spread than random ones
    spread = {rule: sum(float(((x[p] - x[p].mean(0)) ** 2).sum())
                        for p in partition(x, 10, method=rule, generator=g))
              for rule in ["random", "kmeans"]}
    assert spread["kmeans"] < 0.7 * spread["random"]


def test_north_west_corner():
    G = north_west(np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.6]))
    np.testing.assert_allclose(G, [[0.4, 0.1], [0.0, 0.3], [0.0, 0.2]])


def test_minibatch_ot_bias_and_expectation():
    g = gen(0)
    x = torch.randn(200, 2, dtype=F64, generator=g)
    est = ob.minibatch_ot(x, x, batch_size=20, n_batches=200, generator=g)
    assert est.n_solves == 200 and est.converged
    assert float(est.value) > 10 * float(est.stderr) > 0  # biased: OT(x, x) = 0
    # full batch, uniform weights: the estimator is exact
    y = torch.randn(30, 2, dtype=F64, generator=g)
    full = ob.minibatch_ot(x[:30], y, batch_size=30, generator=g)
    assert abs(float(full.value) - exact(x[:30], y)) < 1e-12
    # it estimates the all-pairs bound of its batch size, which is >= OT
    xs, ys = x[:60], y.repeat(2, 1) + 0.3
    est = ob.minibatch_ot(xs, ys, batch_size=10, n_batches=400, generator=g)
    assert float(est.value) >= exact(xs, ys)
    # weighted sampling draws with replacement, values carry the total mass: the same draws
    # (the probabilities do not change) with twice the mass give twice the values
    a = torch.rand(60, dtype=F64, generator=g)
    a, b = a / a.sum(), torch.full((60,), 1 / 60, dtype=F64)
    est_1 = ob.minibatch_ot(xs, ys, batch_size=10, n_batches=5, a=a, b=b, generator=gen(6))
    est_2 = ob.minibatch_ot(xs, ys, batch_size=10, n_batches=5, a=2 * a, b=2 * b, generator=gen(6))
    assert est_2.values.shape == (5,) and bool((est_1.values > 0).all())
    torch.testing.assert_close(est_2.values, 2 * est_1.values, atol=1e-12, rtol=0)


def test_dtype_device_numpy(device, dtype):
    x, y, a, b = problem(30, 30, 0, weighted=True)
    res = ob.minibatch_bounds(x.to(device, dtype), y.to(device, dtype), batch_size=10,
                              a=a.to(device, dtype), b=b.to(device, dtype))
    for t in (res.lower, res.upper, res.batch_costs, res.f, res.g, res.batch_plan):
        assert t.dtype == dtype and t.device.type == device.type
    res_np = ob.minibatch_bounds(x.numpy(), y.numpy(), batch_size=10, a=a.numpy(), b=b.numpy(),
                                 generator=gen(0))
    assert res_np.upper.dtype == F64
    est = ob.minibatch_ot(x.to(device, dtype), y.to(device, dtype), batch_size=5, n_batches=2)
    assert est.value.dtype == dtype and est.value.device.type == device.type


X, Y, A, B = problem(20, 20, 0, weighted=True)


@bad_inputs([
    (lambda: ob.minibatch_bounds(X, Y, batch_size=0), ValueError,
     "batch_size must be at least 1"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=21), ValueError,
     "batch_size must be at most 20"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=2.5), TypeError,
     "batch_size must be an integer"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, budget=0), ValueError,
     "budget must be at least 1"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, method="random", budget=2), ValueError,
     "budget must be at least 4"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, method="optimal", budget=5), ValueError,
     "budget applies"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, a=A, b=2 * B), ValueError,
     "same total mass"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, a=-A, b=B), ValueError,
     "a has negative weights"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, method="best"), ValueError,
     "method must be one of"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, partition="grid"), ValueError,
     "partition must be one of"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, cost="cosine"), ValueError,
     "cost must be one of"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, n_ctransforms=0), ValueError,
     "n_ctransforms must be at least 1"),
    (lambda: ob.minibatch_bounds(X, Y[:, :1], batch_size=5), ValueError,
     "same feature dimension"),
    (lambda: ob.minibatch_bounds(torch.full_like(X, float("nan")), Y, batch_size=5), ValueError,
     "x contains NaN"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, generator=0), TypeError,
     "generator must be a torch.Generator"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, distributed=True), ValueError,
     "no torch.distributed process group"),
    (lambda: ob.minibatch_bounds(X, Y, batch_size=5, distributed=1), TypeError,
     "distributed must be None, True or False"),
    (lambda: ob.minibatch_ot(X, Y[:15], batch_size=16), ValueError,
     "batch_size must be at most 15"),
    (lambda: ob.minibatch_ot(X, Y, batch_size=0), ValueError,
     "batch_size must be at least 1"),
    (lambda: ob.minibatch_ot(X, Y, batch_size=5, n_batches=0), ValueError,
     "n_batches must be at least 1"),
    (lambda: ob.minibatch_ot(X, Y, batch_size=5, a=A, b=3 * B), ValueError,
     "same total mass"),
    (lambda: partition(X, 5, method="grid"), ValueError, "partition must be one of"),
    (lambda: partition(X, 5, n_iter=0), ValueError, "n_iter must be at least 1"),
])
def test_bad_inputs(call, exc, match):
    raises_clearly(call, exc, match)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method,budget", [("adaptive", 14)])
def test_distributed_two_processes_match_single_process(tmp_path, method, budget):
    x, y, a, b = problem(90, 70, 8, weighted=True)
    torch.save({"x": x, "y": y, "a": a, "b": b}, tmp_path / "data.pt")
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "otbook.minibatch", "--data", str(tmp_path / "data.pt"), "--batch-size", "12",
           "--method", method, "--partition", "kmeans", "--seed", "5", "--backend", "gloo",
           "--out", str(out)]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world_size"] == 2 and got["backend"] == "gloo"
    ref = ob.minibatch_bounds(x, y, batch_size=12, a=a, b=b, method=method, budget=budget,
                              partition="kmeans", generator=gen(5))
    # exactly the single-process numbers
    assert got["lower"] == float(ref.lower) and got["upper"] == float(ref.upper)
    assert got["n_solves"] == ref.n_solves
    M = torch.where(ref.evaluated, ref.batch_costs, torch.zeros_like(ref.batch_costs))
    assert got["batch_costs"] == M.tolist()
