"""c-transforms over all ``n x m`` point pairs, for the lower bound: computed in blocks (the
full cost matrix is never stored), block ``t`` on rank ``t mod world``, the pieces summed across
ranks. The blocks are the same on one rank or many, so the results agree exactly."""

from __future__ import annotations

from .._runtime import WarningSummary, block_rows
from ..costs import cost_matrix
from ..exact import emd
from ._distributed import all_reduce

__all__ = ["c_transform", "batch_c_transform", "offset_c_transform"]


def c_transform(p, q, pot_q, cost, rank, world):
    """``out_i = min_j c(p_i, q_j) - pot_q[j]``, in blocks of rows of ``p``."""
    n, m = p.shape[0], q.shape[0]
    rows = block_rows(n, m, p)
    out = p.new_zeros(n)
    for t, start in enumerate(range(0, n, rows)):
        if t % world != rank:
            continue
        stop = min(n, start + rows)
        out[start:stop] = (cost_matrix(p[start:stop], q, cost) - pot_q[None, :]).amin(1)
    return all_reduce(out, world)


def batch_c_transform(x, y, f, labels, k, cost, rank, world):
    """``D[i, j] = min_{x_l in batch i} c(x_l, y_j) - f_l``, shape ``(k, m)``, in blocks of
    columns."""
    n, m = x.shape[0], y.shape[0]
    cols = block_rows(m, n, x)
    D = x.new_zeros(k, m)
    idx = labels[:, None]
    for t, start in enumerate(range(0, m, cols)):
        if t % world != rank:
            continue
        stop = min(m, start + cols)
        block = cost_matrix(x, y[start:stop], cost) - f[:, None]
        D[:, start:stop] = x.new_full((k, stop - start), float("inf")).scatter_reduce(
            0, idx.expand(-1, stop - start), block, reduce="amin")
    return all_reduce(D, world)


def offset_c_transform(x, y, f, labels, alpha, b, cost, rank, world, summary: WarningSummary):
    """The best per-batch offsets ``u`` for ``f``, and the c-transform of ``f + u[batch]``.

    ``max_u <a, f + u[batch]> + <b, (f + u[batch])^c>`` is the semi-dual of the ``k x m`` OT
    problem between the batch masses ``alpha`` and ``b`` with cost
    ``D_ij = min_{x_l in batch i} c(x_l, y_j) - f_l``: solved exactly (``ob.emd``), its source
    potential is the best ``u``. ``u = 0`` is a candidate, so this never does worse than a plain
    c-transform. Returns ``f + u[batch]``, its c-transform, and whether the solve converged.
    """
    D = batch_c_transform(x, y, f, labels, len(alpha), cost, rank, world)
    with summary:
        semi = emd(alpha, b, D)
    f = f + semi.f[labels]
    return f, c_transform(y, x, f, cost, rank, world), bool(semi.converged)
