"""torch.distributed plumbing: which share of the work is this rank's, and how the shares
combine. With one process (``world == 1``) every function is the identity, and torch.distributed
is not even imported."""

from __future__ import annotations

import torch

__all__ = ["rank_and_world", "all_reduce", "broadcast", "broadcast_batches", "check_same_data"]


def rank_and_world(distributed) -> tuple[int, int]:
    """``(rank, world_size)`` of the process group in use (``(0, 1)`` when not distributed)."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError("distributed must be None, True or False, got "
                        f"{type(distributed).__name__}")
    if distributed is False:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        raise ValueError("distributed=True but no torch.distributed process group is initialised; "
                         "launch with torchrun and call torch.distributed.init_process_group first")
    return 0, 1


def all_reduce(t: torch.Tensor, world: int, op: str = "sum") -> torch.Tensor:
    """``t`` combined (``"sum"``, ``"max"`` or ``"min"``) across the ranks, in place."""
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                               "min": dist.ReduceOp.MIN}[op])
    return t


def broadcast(t: torch.Tensor, world: int) -> torch.Tensor:
    """Rank 0's copy of ``t`` on every rank (random draws are made once, by rank 0)."""
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(t, src=0)
    return t


def broadcast_batches(batches: list, n: int, like: torch.Tensor, world: int) -> list:
    """Rank 0's partition of ``range(n)`` (a list of index tensors) on every rank."""
    if world == 1:
        return batches
    labels = torch.empty(n, dtype=torch.long, device=like.device)
    for i, batch in enumerate(batches):
        labels[batch] = i
    labels = broadcast(labels, world)
    return [torch.nonzero(labels == i).flatten() for i in range(len(batches))]


def check_same_data(world: int, **tensors) -> None:
    """Every rank must hold the same inputs: compare a checksum of each across ranks."""
    if world == 1:
        return
    for name, t in tensors.items():
        s = t.detach().double().sum().reshape(1)
        lo, hi = all_reduce(s.clone(), world, "min"), all_reduce(s.clone(), world, "max")
        if bool(lo != hi):
            raise ValueError(f"{name} differs between the ranks of the process group; every rank "
                             "must be given the same data")
