"""OTDD side by side: otbook's ``dataset_distance`` vs the straightforward POT + SciPy computation.

One run, one table per part, ratios printed (machines are noisy; compare the columns of one table,
not absolute times across runs). Every row computes the same number on the same data.

Data. Two synthetic labelled datasets in d = 64 with 10 classes. Dataset 1: class means
N(0, 0.9^2 I), class covariances Q_c diag(lam) Q_c^T with a geometric spectrum lam from 4 down to
0.01 and an independent random rotation Q_c per class (anisotropic, differently oriented: the
Bures term of the label distance is large), balanced classes. Dataset 2: the same classes
relabelled by a permutation, means perturbed (+ N(0, 0.3^2 I)) and shifted (a fixed vector of norm
2), covariances rotated a little and rescaled (x0.5 to x1.5), class sizes unbalanced (proportional
to 1, 1.5, ..., 5.5). The populations are fixed by ``--seed``; the samples by the seed and n.

Cost. c((x, y), (x', y')) = |x - x'|^2 + W_2^2(alpha_y, alpha_y') (lambda_x = lambda_y = 1), with
the Gaussian (Bures-Wasserstein) label distance, class covariances with normaliser 1 / (n_c - 1).
eps = ``--rel`` x the mean of the cross cost over all pairs (computed exactly in O(n + m):
mean |x|^2 + mean |x'|^2 - 2 mean(x) . mean(x') + p1^T W p2; equal to ``ob.eps_relative(C)``).

Part 1, Gaussian inner, entropic outer. otbook: ``ob.dataset_distance(x1, y1, x2, y2,
inner="gaussian", eps=eps, debias=..., tol=tol)`` with its default backend "auto" (dense when its
estimate of the matrices, 3 max(nm, n^2, m^2) x bytes, fits in the default ``memory_budget``,
2 GB on a CPU and half the free memory on a GPU, else online); where "auto" went online, a second row forces ``backend="dense"``. The ratios are POT's
time over each. otbook's "tables s" is a separate ``ob.label_distances`` call (the same table;
its time is part of otbook's total, not added to it). The baseline, the way one writes it with
POT and SciPy: class means and covariances (``np.cov``), a Python loop of ``scipy.linalg.sqrtm`` Bures distances over class pairs
(the square root of each covariance cached), the dense augmented cost ``ot.dist(x1, x2) +
W[y1][:, y2]``, and POT's log-domain ``ot.sinkhorn2(a, b, C, eps, method="sinkhorn_log")``.
Two comparisons:

* ``debias=False``: OT_eps(D1, D2), one ``sinkhorn2`` call; the label table across the datasets
  only (C1 x C2 pairs).
* ``debias=True`` (otbook's default): S_eps = OT_eps(D1, D2) - OT_eps(D1, D1) / 2 -
  OT_eps(D2, D2) / 2, three ``sinkhorn2`` calls; the label table over the union of the classes
  (within and across the datasets, (C1 + C2)(C1 + C2 - 1) / 2 pairs).

Values: otbook returns the entropic objective OT_eps = <P, C> + eps KL(P | a x b); ``sinkhorn2``
returns <P, C> only. The baseline's OT_eps is its dual value at POT's potentials
f = eps (log u - log a), g = eps (log v - log b): <a, f> + <b, g> - eps (sum P - 1) (a read-off of
``log=True``, not timed). The table prints both the entropic values and, for the cross plan, <P, C>
(``sinkhorn2``'s own return value against otbook's feature_cost + label_cost).

Stopping: both solvers stop on the marginal violation of the cross plan (the other marginal is
exact after each update). otbook's ``tol`` is an L1 violation, checked every 10 iterations; POT
checks the L2 norm of one marginal every 10 iterations, so it gets ``stopThr = tol / sqrt(n)``
(which guarantees L1 <= tol; at most about ten extra iterations). The table prints each solve's
iterations and the L1 marginal violation ||P 1 - a||_1 + ||P^T 1 - b||_1 it reached, computed the
same way for both (not timed). The self problems: POT runs its alternating Sinkhorn on (a, a,
C11); otbook runs its averaged symmetric iteration, stopping on the same L1 criterion.

Part 2, exact inner, exact outer (``inner="exact", eps=None``): otbook against a Python loop of
``ot.emd2`` over the C1 x C2 class pairs (uniform weights, squared Euclidean cost) and one outer
``ot.emd2`` on the augmented cost. Both call POT's network simplex for the outer problem, which
dominates: expect a ratio near 1.

Part 3 (``--large N ...``): otbook alone, Gaussian inner, debiased entropic OTDD with the online
backend (memory linear in n + m) at each n = m given, each in a fresh subprocess, which reports
its wall time, the iterations, and the peak resident memory of the process (``ru_maxrss``; on a
GPU also the peak GPU memory), next to what the dense cost and kernel matrices of the three
problems would take together, 3 (nm + n^2 + m^2) x bytes (the dense backend holds one problem's
at a time: a third of that). On a quiet machine give it all the cores (``--threads 2`` on 2 cores).

Threads: both libraries run with ``--threads`` threads (torch, and the BLAS under NumPy through
threadpoolctl); default 1, the fair and stable setting on a shared machine (two torch threads on
a loaded 2-core machine made small operations tens of times slower). POT's NumPy backend runs its
log-sum-exp through SciPy; its torch backend (torch tensors in, the default here) through
``torch.logsumexp``: the stronger baseline on CPU and the only one on a GPU.

Usage::

    python benchmarks/bench_otdd.py                          # parts 1 and 2 at the default sizes
    python benchmarks/bench_otdd.py --sizes 1000 --exact-sizes 1000 --pot-backends torch
    python benchmarks/bench_otdd.py --skip-entropic --skip-exact --large 20000 60000
    python benchmarks/bench_otdd.py --device cuda --sizes 8000 20000 --large 60000 200000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from scipy.linalg import sqrtm

import otbook as ob

D, K = 64, 10


# --------------------------------------------------------------------------------------------
# data


def populations(seed, dtype=torch.float64):
    """Class means and covariance factors of the two datasets (fixed by the seed)."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(math.log10(4.0), math.log10(0.01), D, dtype=torch.float64)

    def rotation(scale=None):
        A = torch.randn(D, D, generator=g, dtype=torch.float64)
        if scale is not None:  # a rotation close to the identity: exp of a small skew matrix
            return torch.linalg.matrix_exp(scale * (A - A.T) / math.sqrt(2 * D))
        Q, R = torch.linalg.qr(A)
        return Q * torch.sign(torch.diagonal(R))

    means1 = 0.9 * torch.randn(K, D, generator=g, dtype=torch.float64)
    Q1 = torch.stack([rotation() for _ in range(K)])
    factors1 = Q1 * lam.sqrt()  # S_c = F F^T
    perm = torch.randperm(K, generator=g)
    shift = torch.randn(D, generator=g, dtype=torch.float64)
    shift = 2.0 * shift / shift.norm()
    means2 = means1[perm] + 0.3 * torch.randn(K, D, generator=g, dtype=torch.float64) + shift
    scale2 = 0.5 + torch.rand(K, 1, 1, generator=g, dtype=torch.float64)
    factors2 = torch.stack([rotation(0.3) for _ in range(K)]) @ factors1[perm] * scale2.sqrt()
    props1 = torch.ones(K, dtype=torch.float64)
    props2 = 1.0 + 0.5 * torch.arange(K, dtype=torch.float64)
    return [(means1.to(dtype), factors1.to(dtype), props1 / props1.sum()),
            (means2.to(dtype), factors2.to(dtype), props2 / props2.sum())]


def sample(pop, n, seed, dtype):
    means, factors, props = pop
    g = torch.Generator().manual_seed(seed)
    counts = torch.floor(props * n).long()
    counts[: n - int(counts.sum())] += 1
    y = torch.repeat_interleave(torch.arange(K), counts)
    y = y[torch.randperm(n, generator=g)]
    z = torch.randn(n, D, generator=g, dtype=dtype)
    x = torch.empty_like(z)
    for c in range(K):  # class by class: no (n, d, d) temporary
        idx = y == c
        x[idx] = means[c] + z[idx] @ factors[c].T
    return x, y


def datasets(n, m, seed, dtype):
    """Sampled in float64, then cast: the same points whatever ``dtype``."""
    p1, p2 = populations(seed, torch.float64)
    x1, y1 = sample(p1, n, seed + 1 + n, torch.float64)
    x2, y2 = sample(p2, m, seed + 2 + 3 * m, torch.float64)
    return x1.to(dtype), y1, x2.to(dtype), y2


def mean_cross_cost(x1, y1, x2, y2, W):
    """Mean of |x - x'|^2 + W[y, y'] over all n x m pairs, in O(n + m)."""
    p1 = torch.bincount(y1, minlength=W.shape[0]).to(W) / len(y1)
    p2 = torch.bincount(y2, minlength=W.shape[1]).to(W) / len(y2)
    feat = (x1**2).sum(1).mean() + (x2**2).sum(1).mean() - 2 * x1.mean(0) @ x2.mean(0)
    return float(feat + p1 @ W @ p2)


# --------------------------------------------------------------------------------------------
# helpers


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def rel_diff(u, v):
    return abs(u - v) / max(abs(u), abs(v), 1e-300)


# --------------------------------------------------------------------------------------------
# the baseline: POT + SciPy, written the straightforward way


def bures_table_scipy(stats_r, stats_c, symmetric):
    """W2^2 between class Gaussians: a loop of scipy.linalg.sqrtm over class pairs (each
    covariance's square root computed once)."""
    roots = [np.real(sqrtm(S)) for _, S in stats_r]
    T = np.zeros((len(stats_r), len(stats_c)))
    for i, (mi, Si) in enumerate(stats_r):
        for j, (mj, Sj) in enumerate(stats_c):
            if symmetric and j <= i:
                continue
            cross = np.real(sqrtm(roots[i] @ Sj @ roots[i]))
            T[i, j] = max(np.sum((mi - mj) ** 2) + np.trace(Si) + np.trace(Sj) - 2 * np.trace(cross), 0.0)
    if symmetric:
        T = T + T.T
    return T


def class_stats_numpy(x, y):
    return [(x[y == c].mean(0), np.cov(x[y == c], rowvar=False)) for c in np.unique(y)]


def pot_sinkhorn(a, b, C, eps, tol, max_iter):
    """POT's log-domain sinkhorn2 with the L1 tolerance turned into its L2 one: (<P, C>, log)."""
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin, log = ot.sinkhorn2(a, b, C, eps, method="sinkhorn_log", stopThr=tol / math.sqrt(len(a)),
                                numItermax=max_iter, log=True)
    return lin, log


def pot_entropic_value(a, b, C, eps, log):
    """OT_eps = <a, f> + <b, g> - eps (sum P - 1) at POT's potentials f = eps (log u - log a),
    g = eps (log v - log b); and the L1 marginal violation of the plan (one n x m pass; the
    caller does not time it)."""
    import ot

    nx = ot.backend.get_backend(C)
    lu, lv = log["log_u"], log["log_v"]
    logP = -C / eps + lu[:, None] + lv[None, :]
    P = nx.exp(logP)
    mass = nx.sum(P)
    val = eps * (nx.sum(a * (lu - nx.log(a))) + nx.sum(b * (lv - nx.log(b)))) - eps * (mass - 1.0)
    err = nx.sum(nx.abs(nx.sum(P, 1) - a)) + nx.sum(nx.abs(nx.sum(P, 0) - b))
    return float(val), float(err)


def baseline_gaussian(x1, y1, x2, y2, eps, tol, max_iter, debias, backend, device):
    """The straightforward OTDD: SciPy label table, dense augmented cost, POT sinkhorn2.

    Returns the time of the label tables, the time of the costs + Sinkhorn solves, the value
    (S_eps when ``debias``, else OT_eps), per-solve read-outs (computed after the timed part),
    and the label tables (cross; full or None).
    """
    import ot

    X1, X2 = x1.cpu().numpy(), x2.cpu().numpy()
    Y1, Y2 = y1.cpu().numpy(), y2.cpu().numpy()

    def tables():
        s1, s2 = class_stats_numpy(X1, Y1), class_stats_numpy(X2, Y2)
        if not debias:
            return bures_table_scipy(s1, s2, symmetric=False), None
        full = bures_table_scipy(s1 + s2, s1 + s2, symmetric=True)
        return full[:K, K:], full

    t_tab, (cross, full) = timed(tables, device)

    if backend == "torch":
        conv = lambda z: torch.as_tensor(z, dtype=x1.dtype, device=x1.device)  # noqa: E731
        P1, P2 = x1, x2
        L1, L2 = y1.to(x1.device), y2.to(x1.device)
    else:
        conv = lambda z: np.asarray(z, dtype=X1.dtype)  # noqa: E731
        P1, P2, L1, L2 = X1, X2, Y1, Y2
    n, m = len(Y1), len(Y2)
    a = conv(np.full(n, 1.0 / n))
    b = conv(np.full(m, 1.0 / m))

    def solve(p, lp, q, lq, w, v, T):
        C = ot.dist(p, q) + conv(T)[lp][:, lq]
        lin, log = pot_sinkhorn(w, v, C, eps, tol, max_iter)
        return C, float(lin), log

    out = {}
    sync(device)
    t = time.perf_counter()
    runs = [("cross", P1, L1, P2, L2, a, b, cross)]
    if debias:
        runs += [("self1", P1, L1, P1, L1, a, a, full[:K, :K]), ("self2", P2, L2, P2, L2, b, b, full[K:, K:])]
    logs = {}
    for key, p, lp, q, lq, w, v, T in runs:
        C, lin, log = solve(p, lp, q, lq, w, v, T)
        logs[key] = (w, v, lin, log)
        del C
    sync(device)
    t_sk = time.perf_counter() - t
    # read-outs (not timed): entropic values, iterations, marginal errors
    for key, p, lp, q, lq, w, v, T in runs:
        C = ot.dist(p, q) + conv(T)[lp][:, lq]
        w, v, lin, log = logs[key]
        val, err = pot_entropic_value(w, v, C, eps, log)
        out[key] = {"linear": lin, "value": val, "iters": int(log["niter"]) + 1, "err": err}
        del C
    value = out["cross"]["value"]
    if debias:
        value -= 0.5 * (out["self1"]["value"] + out["self2"]["value"])
    return t_tab, t_sk, value, out, cross, full


def baseline_exact(x1, y1, x2, y2):
    """Exact inner (emd2 per class pair) and exact outer (one emd2), with POT."""
    import ot

    X1, X2 = x1.cpu().double().numpy(), x2.cpu().double().numpy()
    Y1, Y2 = y1.cpu().numpy(), y2.cpu().numpy()
    t0 = time.perf_counter()
    groups1 = [X1[Y1 == c] for c in np.unique(Y1)]
    groups2 = [X2[Y2 == c] for c in np.unique(Y2)]
    T = np.zeros((len(groups1), len(groups2)))
    for i, gi in enumerate(groups1):
        for j, gj in enumerate(groups2):
            T[i, j] = ot.emd2(ot.unif(len(gi)), ot.unif(len(gj)), ot.dist(gi, gj), numItermax=10**7)
    t_tab = time.perf_counter() - t0
    t0 = time.perf_counter()
    C = ot.dist(X1, X2) + T[Y1][:, Y2]
    value = ot.emd2(ot.unif(len(Y1)), ot.unif(len(Y2)), C, numItermax=10**7)
    t_outer = time.perf_counter() - t0
    return t_tab, t_outer, float(value), T


# --------------------------------------------------------------------------------------------
# parts


def warm_up(args, device, dtype):
    """Run every code path once on a small problem, untimed (first calls pay for lazy set-up)."""
    x1, y1, x2, y2 = (t.to(device) for t in datasets(300, 300, args.seed, dtype))
    W = ob.label_distances(x1, y1, x2, y2)
    eps = args.rel * mean_cross_cost(x1, y1, x2, y2, W)
    for debias in (False, True):
        for backend in ("dense", "online"):
            ob.dataset_distance(x1, y1, x2, y2, inner="gaussian", eps=eps, debias=debias, tol=args.tol,
                                backend=backend, warn=False)
        for backend in args.pot_backends:
            baseline_gaussian(x1, y1, x2, y2, eps, args.tol, args.max_iter, debias, backend, device)


def part_entropic(args, device, dtype):
    print(f"Part 1. Gaussian inner, entropic outer: otbook vs SciPy sqrtm loop + POT sinkhorn2 (sinkhorn_log). "
          f"d = {D}, {K} + {K} classes, {str(dtype).replace('torch.', '')} for both, eps = {args.rel:g} x mean cost, "
          f"tol = {args.tol:g} (L1 marginal; POT stopThr = tol / sqrt(n)), max_iter = {args.max_iter}")
    warm_up(args, device, dtype)
    header = (f"{'n=m':>6s} {'debias':>6s} {'solver':24s} {'tables s':>8s} {'total s':>8s} {'iters cross/self1/self2':>23s} "
              f"{'L1 marg err cross/self1/self2':>29s} {'value':>13s} {'rel diff':>8s} {'<P,C> rd':>8s} "
              f"{'POT / otbook':>12s} {'POT / ob dense':>14s}")
    print(header)
    print("-" * len(header))
    summary = []
    for n in args.sizes:
        x1, y1, x2, y2 = (t.to(device) for t in datasets(n, n, args.seed, dtype))
        W = ob.label_distances(x1, y1, x2, y2)
        eps = args.rel * mean_cross_cost(x1, y1, x2, y2, W)
        for debias in args.debias:
            keys = ["cross"] + (["self1", "self2"] if debias else [])
            if debias:  # the table otbook builds: over the union of the classes
                t_tab_ob, _ = timed(lambda: ob.label_distances(torch.cat([x1, x2]), torch.cat([y1, y2 + K])), device)
            else:
                t_tab_ob, _ = timed(lambda: ob.label_distances(x1, y1, x2, y2), device)
            ob_rows = []
            for ob_backend in ("auto", "dense"):
                if ob_backend == "dense" and (not args.otbook_dense or ob_rows[0][1].extra["backend"] == "dense"):
                    continue
                t_ob, r = timed(lambda: ob.dataset_distance(
                    x1, y1, x2, y2, inner="gaussian", eps=eps, debias=debias, tol=args.tol,
                    max_iter=args.max_iter, backend=ob_backend, warn=False), device)
                ob_rows.append((ob_backend, r, t_ob))
            r0, t0 = ob_rows[0][1], ob_rows[0][2]
            v0, lin0 = float(r0.value), float(r0.feature_cost + r0.label_cost)
            t_dense = next((t for be, r, t in ob_rows[1:] if r.extra["backend"] == "dense"), None)
            for be, r, t_ob in ob_rows:
                it = "/".join(str(r.n_iter[k]) for k in keys)
                err = f"{r.marginal_error:.1e}" + ("/-/-" if debias else "")
                tag = f"otbook ({be}: {r.extra['backend']})" if be == "auto" else "otbook (dense)"
                rd = "" if r is r0 else f"{rel_diff(v0, float(r.value)):8.1e}"
                print(f"{n:6d} {str(debias):>6s} {tag:24s} {t_tab_ob:8.2f} {t_ob:8.2f} {it:>23s} {err:>29s} "
                      f"{float(r.value):13.8g} {rd:>8s}" + ("" if r.converged else "   NOT CONVERGED"))
            for backend in args.pot_backends:
                if backend == "numpy" and n > args.numpy_max_n:
                    continue
                t_tab, t_sk, v_pot, out, cross, full = baseline_gaussian(
                    x1, y1, x2, y2, eps, args.tol, args.max_iter, debias, backend, device)
                total = t_tab + t_sk
                it = "/".join(str(out[k]["iters"]) for k in keys)
                err = "/".join(f"{out[k]['err']:.1e}" for k in keys)
                name = f"SciPy + POT ({backend})"
                ok = all(out[k]["err"] <= args.tol * 1.01 for k in keys)
                rd, rl = rel_diff(v0, v_pot), rel_diff(lin0, out["cross"]["linear"])
                r_dense = "" if t_dense is None else f"{total / t_dense:13.1f}x"
                print(f"{n:6d} {str(debias):>6s} {name:24s} {t_tab:8.2f} {total:8.2f} {it:>23s} {err:>29s} {v_pot:13.8g} "
                      f"{rd:8.1e} {rl:8.1e} {total / t0:11.1f}x {r_dense:>14s}" + ("" if ok else "   tol NOT MET"))
                summary.append((n, debias, backend, total / t0, r0.extra["backend"],
                                None if t_dense is None else total / t_dense, rd))
            tab_diff = float((r0.label_distances.cpu().double() - torch.as_tensor(cross)).abs().max()
                             / r0.label_distances.abs().max())
            print(f"{'':6s} {'':6s} {'':24s} eps = {eps:.4g}; max rel. difference of the label tables "
                  f"(otbook vs SciPy) {tab_diff:.1e}")
        print()
    print("summary (SciPy + POT time / otbook time; relative difference of the values):")
    for n, debias, backend, ratio, be, ratio_dense, rd in summary:
        dense = "" if ratio_dense is None or be == "dense" else f", {ratio_dense:6.1f}x vs otbook backend='dense'"
        print(f"  n = m = {n:6d}, debias = {str(debias):5s}, POT {backend:5s} backend: {ratio:6.1f}x vs otbook default "
              f"(auto: {be}){dense}; values differ by {rd:.1e}")
    print()


def part_exact(args, device):
    print(f"Part 2. Exact inner (EMD per class pair), exact outer (network simplex): otbook vs a loop of "
          f"POT emd2 + one outer emd2. d = {D}, {K} + {K} classes, float64")
    header = (f"{'n=m':>6s} {'solver':16s} {'tables s':>9s} {'outer s':>9s} {'total s':>9s} {'value':>16s} "
              f"{'rel diff':>9s}  {'POT / otbook':>12s}")
    print(header)
    print("-" * len(header))
    for n in args.exact_sizes:
        x1, y1, x2, y2 = datasets(n, n, args.seed, torch.float64)
        x1, x2 = x1.to(device), x2.to(device)
        t_ob, r = timed(lambda: ob.dataset_distance(x1, y1, x2, y2, inner="exact", eps=None), device)
        t_tab_ob, _ = timed(lambda: ob.label_distances(x1, y1, x2, y2, inner="exact"), device)
        print(f"{n:6d} {'otbook':16s} {t_tab_ob:9.2f} {t_ob - t_tab_ob:9.2f} {t_ob:9.2f} {float(r.value):16.10g} "
              f"{'':>9s}")
        t_tab, t_out, v, T = baseline_exact(x1, y1, x2, y2)
        rd = rel_diff(float(r.value), v)
        print(f"{n:6d} {'POT emd2 loop':16s} {t_tab:9.2f} {t_out:9.2f} {t_tab + t_out:9.2f} {v:16.10g} {rd:9.1e}  "
              f"{(t_tab + t_out) / t_ob:11.2f}x")
        tab_diff = float((r.label_distances.cpu() - torch.as_tensor(T)).abs().max() / r.label_distances.abs().max())
        print(f"{'':6s} (otbook 'tables s' is a separate ob.label_distances call; 'outer s' = total - tables; "
              f"max rel. difference of the label tables {tab_diff:.1e})")
    print()


def large_child(args):
    """One size of part 3, in this (fresh) process; prints one JSON line."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.large_dtype)
    n = args.child
    x1, y1, x2, y2 = datasets(n, n, args.seed, dtype)
    x1, x2 = x1.to(device), x2.to(device)
    y1, y2 = y1.to(device), y2.to(device)
    W = ob.label_distances(x1, y1, x2, y2)
    eps = args.rel * mean_cross_cost(x1, y1, x2, y2, W)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t, r = timed(lambda: ob.dataset_distance(x1, y1, x2, y2, inner="gaussian", eps=eps, debias=True, tol=args.tol,
                                             max_iter=args.max_iter, backend="online", warn=False), device)
    out = {"n": n, "time": t, "value": float(r.value), "eps": eps, "n_iter": r.n_iter, "converged": r.converged,
           "marginal_error": r.marginal_error, "rss_before": rss_before,
           "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "gpu_peak": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    print("RESULT " + json.dumps(out))


def part_large(args):
    size = torch.finfo(getattr(torch, args.large_dtype)).bits // 8
    print(f"Part 3. otbook alone: debiased entropic OTDD, Gaussian inner, online backend, {args.large_dtype}, "
          f"device {args.device}, eps = {args.rel:g} x mean cost, tol = {args.tol:g}; each size in a fresh process")
    header = (f"{'n=m':>7s} {'time s':>9s} {'iters (cross/self1/self2)':>25s} {'L1 marg err':>11s} {'value':>14s} "
              f"{'peak RSS GiB':>12s} {'RSS before GiB':>14s} {'peak GPU GiB':>12s} {'dense est. GiB':>14s}")
    print(header)
    print("-" * len(header))
    for n in args.large:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--device", args.device, "--rel",
               str(args.rel), "--tol", str(args.tol), "--max-iter", str(args.max_iter), "--seed", str(args.seed),
               "--large-dtype", args.large_dtype, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{n:7d} failed (exit code {proc.returncode}): {proc.stderr.strip()[-500:]}")
            continue
        o = json.loads(lines[-1][len("RESULT "):])
        it = "/".join(str(o["n_iter"][k]) for k in ("cross", "self1", "self2"))
        gpu = "-" if o["gpu_peak"] is None else f"{o['gpu_peak']:.2f}"
        dense = 3 * 3 * n * n * size / 2**30
        print(f"{n:7d} {o['time']:9.1f} {it:>25s} {o['marginal_error']:11.1e} {o['value']:14.8g} {o['rss_peak']:12.2f} "
              f"{o['rss_before']:14.2f} {gpu:>12s} {dense:14.1f}" + ("" if o["converged"] else "   NOT CONVERGED"))
        sys.stdout.flush()
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="n = m for part 1")
    ap.add_argument("--exact-sizes", type=int, nargs="+", default=[2000], help="n = m for part 2")
    ap.add_argument("--large", type=int, nargs="*", default=[], help="n = m for part 3 (otbook online, memory)")
    ap.add_argument("--debias", type=lambda s: s.lower() in ("1", "true", "yes"), nargs="+", default=[False, True],
                    help="part 1: which of debias=False / True to compare (default both)")
    ap.add_argument("--pot-backends", nargs="+", default=["torch", "numpy"], choices=["torch", "numpy"],
                    help="POT on torch tensors (torch.logsumexp) and/or NumPy arrays (scipy logsumexp)")
    ap.add_argument("--no-otbook-dense", dest="otbook_dense", action="store_false",
                    help="do not add an otbook backend='dense' row where backend='auto' went online")
    ap.add_argument("--numpy-max-n", type=int, default=2000, help="run POT's NumPy backend only up to this n")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="part 1 (both libraries)")
    ap.add_argument("--large-dtype", default="float32", choices=["float32", "float64"], help="part 3")
    ap.add_argument("--rel", type=float, default=0.05, help="eps = rel x mean of the cross cost")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--max-iter", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads for both libraries (0: leave the defaults); on a shared "
                         "machine one thread is the fair and stable setting")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-entropic", action="store_true")
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)
        except ImportError:
            pass
    if args.child:
        large_child(args)
        return
    import ot
    import scipy

    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__} ({torch.get_num_threads()} threads), POT {ot.__version__}, "
          f"SciPy {scipy.__version__}, seed {args.seed}\n")
    if not args.skip_entropic:
        part_entropic(args, device, getattr(torch, args.dtype))
    if not args.skip_exact:
        part_exact(args, device)
    if args.large:
        part_large(args)


if __name__ == "__main__":
    main()
