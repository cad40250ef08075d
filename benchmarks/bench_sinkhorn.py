"""Sinkhorn side by side: otbook, POT (log-domain and plain kernel solvers), GeomLoss.

Same problem, same accuracy target, one run, ratios printed (machines are noisy; compare the
columns of one table, not absolute times across runs).

Problem (``--problem smooth``, the default): x ~ U[0,1]^3, y ~ N(0.5, 0.3^2 I) in 3-D, uniform
weights, C = ||x - y||^2, eps = rel * mean(C). ``--problem clusters``: five well-separated
Gaussian clusters in 3-D, with equal class proportions on the x side and 1 : 2 : 3 : 4 : 5 on the
y side, so that mass must cross between clusters: the slow, block-structured case of Sinkhorn.
otbook runs with its default over-relaxation (``omega="auto"``) and, on a second row, plain
(``omega=1.0``). Every solver is asked to reach an L1 marginal error ``--tol``
(||P1 - a||_1 + ||P^T 1 - b||_1). POT checks the L2 norm of one marginal, so it gets
``stopThr = tol / sqrt(n)``; GeomLoss anneals eps and stops without a tolerance (``scaling``).
Each solver then reports the marginal error it actually reached, computed the same way from its
returned plan (GeomLoss: from its potentials). A run that exceeds the time budget is stopped by
its iteration cap and reported as such.

``--batch``: many small problems in one call against a Python loop over them (64 problems of 64
points in 2-D, float64, eps 0.5 by default): warm (best of 5), cold (the first call of a fresh
process, best of 3 processes), and warm while one CPU-bound process (one thread of matrix
products) competes for the cores.

Usage::

    python benchmarks/bench_sinkhorn.py                 # the full table on this CPU
    python benchmarks/bench_sinkhorn.py --batch         # batched vs looped small problems
    python benchmarks/bench_sinkhorn.py --sizes 500 2000 --quick
    python benchmarks/bench_sinkhorn.py --device cuda   # on a GPU; also pair-updates per second
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

import otbook as ob


def marginal_error(P, a, b):
    if P is None or not torch.isfinite(P).all():
        return float("nan")
    return float((P.sum(1) - a).abs().sum() + (P.sum(0) - b).abs().sum())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def per_iter_time(fn_iters, device):
    """Seconds per iteration of a solver, from two short runs (removes set-up time)."""
    t1, _ = timed(lambda: fn_iters(10), device)
    t2, _ = timed(lambda: fn_iters(110), device)
    return max((t2 - t1) / 100, 1e-7)


def run_otbook(a, b, C, eps, tol, budget, device, eps_scaling=None, omega="auto"):
    def go(max_iter):
        return ob.sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, warn=False, eps_scaling=eps_scaling,
                           omega=omega)

    cap = max(50, int(budget / per_iter_time(go, device)))
    t, res = timed(lambda: go(cap), device, repeat=2)
    return t, res.plan, res.n_iter, bool(res.converged)


def run_pot(a, b, C, eps, tol, budget, device, method):
    import ot

    n = C.shape[0]

    def go(max_iter):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.sinkhorn(a, b, C, eps, method=method, stopThr=tol / math.sqrt(n),
                               numItermax=max_iter, log=True)

    cap = max(50, int(budget / per_iter_time(go, device)))
    t, (P, log) = timed(lambda: go(cap), device, repeat=2 if budget * 2 < 60 else 1)
    n_iter = int(log.get("niter", cap))
    err = marginal_error(P, a, b)
    return t, P, n_iter, bool(err <= tol)


def run_geomloss(x, y, a, b, eps, device, scaling):
    from geomloss import SamplesLoss

    # GeomLoss: cost |x-y|^2 / 2 and eps_g = blur^2. Ours: cost |x-y|^2 and eps, i.e. twice
    # the cost, so eps_g = eps / 2.
    loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), scaling=scaling, debias=False,
                       potentials=True, backend="tensorized")
    t, (F, G) = timed(lambda: loss(a, x, b, y), device, repeat=2)
    C2 = ob.cost_matrix(x, y) / 2
    P = a[:, None] * b[None, :] * torch.exp((F.reshape(-1)[:, None] + G.reshape(-1)[None, :] - C2) / (eps / 2))
    return t, P, None, None


BATCH_SETUP = """
import time, torch, otbook as ob
g = torch.Generator().manual_seed(0)
x = torch.randn({B}, {n}, 2, generator=g, dtype=torch.float64)
y = torch.randn({B}, {n}, 2, generator=g, dtype=torch.float64) + 0.5
C = ob.cost_matrix(x, y).to("{device}")
batched = lambda: ob.sinkhorn(None, None, C, {eps})
looped = lambda: [ob.sinkhorn(None, None, C[k], {eps}) for k in range({B})]
"""

COMPETITOR = """
import torch
torch.set_num_threads(1)
a = torch.randn(400, 400)
while True:
    a = torch.tanh(a @ a.T * 1e-3)
"""


def _cold(kind, setup):
    """Seconds of the first call of ``kind`` in a fresh process (best of 3 processes)."""
    code = setup + f"t = time.perf_counter(); {kind}(); print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3))


def _warm(fns):
    """Best of 5 calls of each function (after one call), interleaved."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(5):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def batch_table(B, n, eps, device):
    """One batched ``ob.sinkhorn`` call on B problems against a loop of B calls."""
    setup = BATCH_SETUP.format(B=B, n=n, eps=eps, device=device)
    env = {}
    exec(setup, env)
    res = env["batched"]()
    assert bool(res.converged.all())
    rows = [("warm", _warm({"batched": env["batched"], "looped": env["looped"]}))]
    rows.append(("cold (fresh process)", {k: _cold(k, setup) for k in ("batched", "looped")}))
    rival = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(1.0)
        rows.append(("warm, 1 competing process",
                     _warm({"batched": env["batched"], "looped": env["looped"]})))
    finally:
        rival.kill()
    print(f"batched vs looped: {B} problems of {n} points, float64, eps {eps}, device {device}, "
          f"torch threads {torch.get_num_threads()}, iterations {res.n_iter} (per problem "
          f"{int(res.extra['n_iter_per_problem'].min())}-"
          f"{int(res.extra['n_iter_per_problem'].max())})")
    print(f"{'case':28s} {'batched s':>10s} {'looped s':>10s} {'batch speed-up':>15s}")
    for name, t in rows:
        print(f"{name:28s} {t['batched']:10.4f} {t['looped']:10.4f} "
              f"{t['looped'] / t['batched']:14.1f}x")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    ap.add_argument("--rels", type=float, nargs="+", default=[0.05, 0.01, 0.001])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per solver run (iteration cap)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--problem", choices=["smooth", "clusters"], default="smooth")
    ap.add_argument("--quick", action="store_true", help="skip POT's log-domain solver at n > 2000")
    ap.add_argument("--skip-geomloss", action="store_true", help="leave GeomLoss out (slow at scaling 0.99)")
    ap.add_argument("--batch", action="store_true", help="the batched-vs-looped table only")
    ap.add_argument("--batch-shape", type=int, nargs=2, default=[64, 64], metavar=("B", "N"))
    ap.add_argument("--batch-eps", type=float, default=0.5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.batch:
        print(f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
        return batch_table(*args.batch_shape, args.batch_eps, device)
    try:
        import geomloss  # noqa: F401
        have_geomloss = not args.skip_geomloss
    except ImportError:
        have_geomloss = False

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, tol {args.tol:g} (L1 marginal), "
          f"problem {args.problem}")
    header = f"{'dtype':8s} {'n':>6s} {'eps/mean':>8s} {'solver':22s} {'time s':>8s} {'iters':>6s} {'L1 marg err':>11s} {'NaN':>4s} {'ok':>3s}  {'otbook speed-up':>15s}"
    print(header)
    print("-" * len(header))
    summary = []
    for dname in args.dtypes:
        dtype = getattr(torch, dname)
        for n in args.sizes:
            g = torch.Generator().manual_seed(n)
            if args.problem == "smooth":
                x = torch.rand(n, 3, generator=g, dtype=dtype).to(device)
                y = (0.5 + 0.3 * torch.randn(n, 3, generator=g, dtype=dtype)).to(device)
            else:
                centres = 4.0 * torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=dtype)
                lx = torch.arange(n) % 5
                ly = torch.multinomial(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), n, replacement=True, generator=g)
                x = (centres[lx] + 0.5 * torch.randn(n, 3, generator=g, dtype=dtype)).to(device)
                y = (centres[ly] + 0.5 * torch.randn(n, 3, generator=g, dtype=dtype)).to(device)
            a = ob.uniform(n, like=x)
            b = ob.uniform(n, like=x)
            C = ob.cost_matrix(x, y)
            for rel in args.rels:
                eps = rel * float(C.mean())
                rows = []
                t0, P, it, ok = run_otbook(a, b, C, eps, args.tol, args.budget, device)
                rows.append(("otbook", t0, P, it, ok))
                t, P, it, ok = run_otbook(a, b, C, eps, args.tol, args.budget, device, omega=1.0)
                rows.append(("otbook plain (omega=1)", t, P, it, ok))
                if rel <= 0.01:
                    t, P, it, ok = run_otbook(a, b, C, eps, args.tol, args.budget, device, eps_scaling=0.5)
                    rows.append(("otbook eps-scaling 0.5", t, P, it, ok))
                if not (args.quick and n > 2000):
                    t, P, it, ok = run_pot(a, b, C, eps, args.tol, args.budget, device, "sinkhorn_log")
                    rows.append(("POT sinkhorn_log", t, P, it, ok))
                t, P, it, ok = run_pot(a, b, C, eps, args.tol, args.budget, device, "sinkhorn")
                rows.append(("POT sinkhorn (plain)", t, P, it, ok))
                if have_geomloss and n * n * (4 if dtype == torch.float32 else 8) < 2e9:
                    for sc in (0.5, 0.9, 0.99):
                        t, P, it, ok = run_geomloss(x, y, a, b, eps, device, sc)
                        rows.append((f"GeomLoss scaling {sc}", t, P, it, ok))
                for name, t, P, it, ok in rows:
                    err = marginal_error(P, a, b)
                    nan = "yes" if P is None or not torch.isfinite(P).all() else "no"
                    ok_s = "-" if ok is None else ("yes" if (ok and err <= args.tol * 1.01) else "no")
                    ratio = f"{t / t0:14.2f}x" if name != "otbook" else ""
                    it_s = "-" if it is None else str(it)
                    print(f"{dname:8s} {n:6d} {rel:8.3f} {name:22s} {t:8.3f} {it_s:>6s} {err:11.2e} {nan:>4s} {ok_s:>3s}  {ratio}")
                    summary.append((dname, n, rel, name, t, err, t / t0))
                print()
    if device.type == "cuda":
        print("pair-updates per second (dense kernel iterations, n = m = 20000, float32):")
        n = 20000
        x = torch.rand(n, 3, device=device)
        y = torch.rand(n, 3, device=device)
        C = ob.cost_matrix(x, y)
        eps = 0.05 * float(C.mean())
        res = ob.sinkhorn(None, None, C, eps, max_iter=200, tol=1e-12, warn=False)
        t, res = timed(lambda: ob.sinkhorn(None, None, C, eps, max_iter=200, tol=1e-12, warn=False), device)
        print(f"  dense: {2 * n * n * res.n_iter / t:.3e} pair-updates/s")
        t, _ = timed(lambda: ob.sinkhorn_divergence(x, y, eps, backend="online", max_iter=20, tol=1e-12, warn=False), device)
        print(f"  blockwise (online, 3 problems, <= 20 iterations each): {t:.2f} s")
    return summary


if __name__ == "__main__":
    main()
