"""The debiased Sinkhorn divergence between two large point clouds, without an n x m matrix.

Runs ``ob.sinkhorn_divergence(..., backend="online")`` on n = m points in 3-D (uniform in the unit
cube vs a shifted, shrunk cube), reports the value, the wall time, the iterations, and the peak
resident memory of the process, next to the memory the dense cost matrices would need.

Usage::

    python benchmarks/bench_online.py                   # n = 50,000 on this CPU
    python benchmarks/bench_online.py --n 20000 --eps 0.05
    python benchmarks/bench_online.py --device cuda --n 200000
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import otbook as ob


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--scaling", type=float, default=0.7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check", type=int, default=2000, help="also compare with the dense backend on this many points")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, generator=g).to(device)
    y = (0.8 * torch.rand(args.n, 3, generator=g) + 0.3).to(device)
    dense_gb = 3 * args.n**2 * 4 / 1e9
    print(f"n = m = {args.n}, d = 3, float32, eps = {args.eps}, tol = {args.tol} (L1 marginal), "
          f"eps-scaling {args.scaling}, device {device}, threads {torch.get_num_threads()}")
    print(f"dense cost matrices (xy, xx, yy) would need {dense_gb:.1f} GB")
    if args.check:
        k = min(args.check, args.n)
        s_on = ob.sinkhorn_divergence(x[:k], y[:k], args.eps, backend="online", tol=args.tol, eps_scaling=args.scaling)
        s_de = ob.sinkhorn_divergence(x[:k], y[:k], args.eps, backend="dense", tol=args.tol, eps_scaling=args.scaling)
        print(f"check on {k} points: online {s_on.item():.6f}, dense {s_de.item():.6f}")
    start = time.perf_counter()
    s = ob.sinkhorn_divergence(x, y, args.eps, backend="online", tol=args.tol, eps_scaling=args.scaling)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"S_eps = {s.item():.6f} in {elapsed:.1f} s; peak resident memory of the process {peak_gb:.2f} GB")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
