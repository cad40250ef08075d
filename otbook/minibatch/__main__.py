"""``python -m otbook.minibatch``: :func:`otbook.minibatch_bounds` on every rank of a
``torchrun`` job; rank 0 writes the result as JSON.

    torchrun --nproc_per_node 2 -m otbook.minibatch --points 1000 --batch-size 50 \\
        --method adaptive --budget 100 --partition kmeans --seed 0 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ._common import METHODS, PARTITIONS
from .bounds import minibatch_bounds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m otbook.minibatch",
        description="Mini-batch OT bounds, shared across torch.distributed ranks. Launch with "
                    "torchrun --nproc_per_node K -m otbook.minibatch ... (gloo on CPU, NCCL on "
                    "GPU).")
    p.add_argument("--data", help="a torch.save file with tensors x, y and optionally a, b; "
                                  "default: two Gaussian clouds drawn from --seed")
    p.add_argument("--points", type=int, default=400,
                   help="points per cloud when --data is not given")
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--method", default=None, choices=METHODS)
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--partition", default="random", choices=PARTITIONS)
    p.add_argument("--n-ctransforms", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the generator")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with CUDA)")
    p.add_argument("--out", help="JSON file written by rank 0 (default: print it)")
    return p


def _data(args, dev: torch.device):
    """``x, y, a, b`` on ``dev``: from ``--data``, or two Gaussian clouds drawn from ``--seed``
    (every rank draws the same)."""
    if args.data:
        data = torch.load(args.data, map_location="cpu")
        x, y, a, b = data["x"], data["y"], data.get("a"), data.get("b")
    else:
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.points, args.dim, dtype=torch.float64, generator=gen)
        y = 0.5 * torch.randn(args.points, args.dim, dtype=torch.float64, generator=gen) + 1.0
        a = b = None
    return tuple(t.to(dev) if t is not None else None for t in (x, y, a, b))


def main(argv=None) -> None:
    """Run :func:`otbook.minibatch_bounds` on every rank; rank 0 writes JSON."""
    import torch.distributed as dist

    args = _parser().parse_args(argv)
    torch.set_num_threads(1)  # one core per rank
    use_cuda = torch.cuda.is_available() and args.backend != "gloo"
    backend = args.backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend)
    try:
        if backend == "nccl":  # one GPU per rank
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        x, y, a, b = _data(args, dev)
        start = time.perf_counter()
        res = minibatch_bounds(x, y, batch_size=args.batch_size, a=a, b=b, budget=args.budget,
                               method=args.method, partition=args.partition,
                               n_ctransforms=args.n_ctransforms,
                               generator=torch.Generator().manual_seed(args.seed),
                               distributed=True)
        seconds = time.perf_counter() - start
        if dist.get_rank() == 0:
            out = {"world_size": dist.get_world_size(), "backend": backend,
                   "lower": res.lower.item(), "upper": res.upper.item(),
                   "n_solves": res.n_solves, "method": res.method, "certified": res.certified,
                   "lower_history": res.lower_history.tolist(),
                   "batch_costs": torch.where(res.evaluated, res.batch_costs,
                                              torch.zeros_like(res.batch_costs)).tolist(),
                   "seconds": seconds}
            text = json.dumps(out)
            if args.out:
                with open(args.out, "w") as fh:
                    fh.write(text)
            else:
                print(text)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
