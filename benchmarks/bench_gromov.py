"""Entropic Gromov-Wasserstein side by side: otbook vs POT; and sliced W / MMD vs POT / GeomLoss.

One run, one table per part, ratios printed (machines are noisy; compare the columns of one
table, not absolute times across runs).

Gromov-Wasserstein. Problem: x ~ N(0, I_2) (n points in 2-D), y ~ N(0, I_3) (n points in 3-D);
Cx, Cy their Euclidean distance matrices, each divided by its largest entry; uniform weights;
square loss; the same eps for both libraries. Stopping is the same rule for both: the plan
changes by less than ``--tol`` in Frobenius norm in one mirror-descent step (POT checks it every
10 steps, otbook at every step), or ``--max-iter`` steps. POT runs its default solver
(``ot.gromov.entropic_gromov_wasserstein``: projected gradient, a cold-started Sinkhorn of up to
1000 iterations per step). otbook runs its default (warm-started Sinkhorn engine, Anderson
acceleration) and, to show where the time goes, the plain iteration (``anderson=0``, POT's).
Every plan is scored by the same function, ``ob.gromov_objective`` (the entropic objective
GW(P) + eps KL(P | a x b), and the GW loss alone), with its marginal error
||P1 - a||_1 + ||P^T 1 - b||_1. GW is not convex: the runs start from the same plan (a x b), and a
faster run counts only if its objective is no worse than POT's (to 1e-6 relative; plans whose
inner Sinkhorn solves stopped early differ at that level).

Threads: both libraries run with ``--threads`` threads (torch and the BLAS under NumPy, through
threadpoolctl). On a shared 2-core machine one thread is the fair and stable setting.

Usage::

    python benchmarks/bench_gromov.py                  # GW at n = 200, 500, 1000, then SW and MMD (~10 min)
    python benchmarks/bench_gromov.py --sizes 200 500 --skip-kernels --plain-max-n 0
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import otbook as ob


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def gw_problem(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    Cx = ob.cost_matrix(x, x, "euclidean")
    Cy = ob.cost_matrix(y, y, "euclidean")
    return Cx / Cx.max(), Cy / Cy.max()


def score(Cx, Cy, P, eps):
    a = ob.uniform(Cx.shape[0], like=Cx)
    b = ob.uniform(Cy.shape[0], like=Cy)
    value = float(ob.gromov_objective(Cx, Cy, P, eps=eps))
    gw = float(ob.gromov_objective(Cx, Cy, P))
    marg = float((P.sum(1) - a).abs().sum() + (P.sum(0) - b).abs().sum())
    return value, gw, marg


def run_pot(Cx, Cy, eps, tol, max_iter):
    import ot

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t, (P, log) = timed(lambda: ot.gromov.entropic_gromov_wasserstein(
            Cx.numpy(), Cy.numpy(), epsilon=eps, tol=tol, max_iter=max_iter, log=True))
    n_steps = min(10 * (len(log["err"]) - 1) + 1, max_iter)  # POT checks every 10 steps
    converged = log["err"][-1] <= tol
    inner_warnings = sum("Sinkhorn did not converge" in str(w.message) for w in caught)
    return t, torch.from_numpy(P), n_steps, converged, inner_warnings


def run_otbook(Cx, Cy, eps, tol, max_iter, anderson):
    t, res = timed(lambda: ob.gromov_wasserstein(Cx, Cy, eps=eps, tol=tol, max_iter=max_iter,
                                                 anderson=anderson, warn=False))
    ok = bool((res.extra["criterion"] <= tol).all())
    return t, res.plan, res.n_iter, ok, res


def bench_gw(args):
    print(f"Entropic GW, square loss, eps = {args.eps:g}, tol = {args.tol:g} (plan change, Frobenius), "
          f"max_iter = {args.max_iter}")
    header = (f"{'n':>5s} {'solver':26s} {'time s':>8s} {'steps':>6s} {'stop':>5s} {'objective':>14s} "
              f"{'GW loss':>12s} {'marg err':>9s}  {'POT time / this':>15s}")
    print(header)
    print("-" * len(header))
    verdicts = []
    for n in args.sizes:
        Cx, Cy = gw_problem(n, seed=n)
        rows = []
        t_pot, P, steps, ok, inner_warn = run_pot(Cx, Cy, args.eps, args.tol, args.max_iter)
        rows.append(("POT entropic_gromov", t_pot, P, steps, ok,
                     f"{inner_warn} inner Sinkhorn solves hit their budget" if inner_warn else ""))
        for anderson, name in ((5, "otbook (default)"), (0, "otbook anderson=0 (plain)")):
            if anderson == 0 and n > args.plain_max_n:
                continue
            t, P, steps, ok, res = run_otbook(Cx, Cy, args.eps, args.tol, args.max_iter, anderson)
            note = f"{res.extra['rejected']} extrapolations rolled back" if anderson else ""
            rows.append((name, t, P, steps, ok, note))
        v_pot = score(Cx, Cy, rows[0][2], args.eps)[0]
        for name, t, P, steps, ok, note in rows:
            value, gw, marg = score(Cx, Cy, P, args.eps)
            ratio = "" if name.startswith("POT") else f"{t_pot / t:14.1f}x"
            print(f"{n:5d} {name:26s} {t:8.2f} {steps:6d} {'tol' if ok else 'max':>5s} {value:14.10f} "
                  f"{gw:12.8f} {marg:9.1e}  {ratio}" + (f"   ({note})" if note else ""))
            if name == "otbook (default)":
                no_worse = value <= v_pot + 1e-6 * abs(v_pot)
                verdicts.append((n, t_pot / t, value - v_pot, no_worse))
        print()
    print("summary (otbook default vs POT): n, speed-up, objective difference (otbook - POT), no worse")
    for n, r, dv, ok in verdicts:
        print(f"  n = {n:5d}: {r:6.1f}x faster, objective difference {dv:+.2e}, "
              f"{'no worse' if ok else 'WORSE'} than POT")
    print()


def bench_sliced(args):
    import ot
    from otbook.sliced import random_directions

    L = 200
    print(f"Sliced Wasserstein SW_2^2, {L} directions (the same directions for both), d = 10")
    header = f"{'n':>7s} {'otbook s':>9s} {'POT s':>9s} {'POT / otbook':>12s} {'|difference|':>13s}"
    print(header)
    print("-" * len(header))
    for n in (1000, 10000, 100000):
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 10, generator=g, dtype=torch.float64)
        y = torch.rand(n, 10, generator=g, dtype=torch.float64)
        theta = random_directions(10, L, like=x, generator=torch.Generator().manual_seed(1))
        t1, ours = timed(lambda: ob.sliced_wasserstein(x, y, n_projections=L, generator=torch.Generator().manual_seed(1)))
        t2, pot = timed(lambda: ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), projections=theta.numpy()))
        print(f"{n:7d} {t1:9.3f} {t2:9.3f} {t2 / t1:11.1f}x {abs(float(ours) - pot ** 2):13.1e}")
    print()


def bench_mmd(args):
    import os

    os.environ.setdefault("KEOPS_VERBOSE", "0")
    try:
        from geomloss import SamplesLoss
    except ImportError:
        print("GeomLoss is not installed: MMD comparison skipped\n")
        return
    print("MMD^2 (V-statistic) vs GeomLoss (tensorized backend; its kernel losses are MMD^2 / 2), d = 3")
    header = f"{'kernel':9s} {'n':>6s} {'otbook s':>9s} {'GeomLoss s':>11s} {'GeomLoss / otbook':>17s} {'rel. difference':>15s}"
    print(header)
    print("-" * len(header))
    for n in (1000, 5000):
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = torch.randn(n, 3, generator=g, dtype=torch.float64) + 0.2
        for kernel, gl in (("gaussian", SamplesLoss("gaussian", blur=0.5, backend="tensorized")),
                           ("energy", SamplesLoss("energy", backend="tensorized"))):
            t1, ours = timed(lambda: ob.mmd(x, y, kernel=kernel, bandwidth=0.5))
            t2, theirs = timed(lambda: gl(x, y))
            rel = abs(float(ours) - 2 * float(theirs)) / float(ours)
            print(f"{kernel:9s} {n:6d} {t1:9.3f} {t2:11.3f} {t2 / t1:16.1f}x {rel:15.1e}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plain-max-n", type=int, default=500,
                    help="run otbook's plain iteration (anderson=0) only up to this n (it is as slow as POT)")
    ap.add_argument("--skip-kernels", action="store_true", help="skip the sliced W and MMD tables")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        blas = f"NumPy BLAS threads {args.threads}"
    except ImportError:
        blas = "NumPy BLAS threads: default (threadpoolctl not installed)"
    import ot

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), POT {ot.__version__}, {blas}, "
          "float64, CPU\n")
    bench_gw(args)
    if not args.skip_kernels:
        bench_sliced(args)
        bench_mmd(args)


if __name__ == "__main__":
    main()
