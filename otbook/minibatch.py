r"""Mini-batch optimal transport: the usual estimator, and upper and lower bounds on exact OT.

Split the source points into batches :math:`A_1, \dots, A_{k_x}` and the target points into
:math:`B_1, \dots, B_{k_y}`, with batch masses :math:`\alpha_i = a(A_i)` and
:math:`\beta_j = b(B_j)`. The *batch cost* :math:`M_{ij}` is the exact OT cost between the
renormalised batch measures :math:`a|_{A_i} / \alpha_i` and :math:`b|_{B_j} / \beta_j`. For any
coupling :math:`\Gamma \in \Pi(\alpha, \beta)` of the batches, the block plan
:math:`\sum_{ij} \Gamma_{ij} \pi^\star_{ij}` is a coupling of the full measures, so

.. math::

    \OT(a, b) \le U(\Gamma) = \sum_{ij} \Gamma_{ij} M_{ij}.

Paired averaging (the north-west-corner coupling; :math:`\Gamma = I / k` for equal batches) and
all-pairs averaging (:math:`\Gamma = \alpha\beta^\top`) are members of the family; the tightest
member for a partition is the optimal coupling of the :math:`k_x \times k_y` table. Budgeted
variants evaluate only a support :math:`E` of batch pairs that contains a feasible coupling and
solve the restricted :math:`k_x \times k_y` problem. Lower bounds come from the dual potentials of
the solved batches, stitched across batches with the duals of the outer problem and made feasible
by c-transforms (computed blockwise: the full ``n x m`` cost matrix is never stored).

The batch solves are independent, so they can be shared among the ranks of a
``torch.distributed`` process group (gloo on CPU, NCCL on GPU); the results are combined with
``all_reduce`` and are identical to those of one process. ``python -m otbook.minibatch`` is a
small launcher for ``torchrun``.

The budget strategies and the lower-bound construction are this library's reconstruction of the
family described in the abstract of Alvarez-Melis, Fusi, Mackey and Wagner (arXiv 2210.13630),
not that paper's exact algorithms.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ._checks import (check_choice, check_clouds, check_generator, check_int_at_most,
                      check_pair_points,
                      check_positive_int, check_same_mass, check_weights)
from .costs import cost_matrix
from .exact import emd

__all__ = ["MinibatchBounds", "MinibatchOT", "minibatch_bounds", "minibatch_ot", "partition"]

METHODS = ("paired", "all_pairs", "optimal", "random", "proxy", "adaptive")
BUDGETED = ("random", "proxy", "adaptive")
PARTITIONS = ("random", "kmeans")
# costs c for which c(mean(A), mean(B)) <= OT(A, B) (Jensen: c is jointly convex)
COSTS_WITH_MEAN_BOUND = ("sqeuclidean", "euclidean")
BLOCK_ENTRIES = 2**22  # entries of one block of the cost matrix in the c-transforms


# --------------------------------------------------------------------------------------------
# torch.distributed: which share of the work is ours, and how to combine the shares
# --------------------------------------------------------------------------------------------

def _dist_group(distributed):
    """``(rank, world_size)`` of the process group in use (``(0, 1)`` when not distributed)."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {type(distributed).__name__}")
    if distributed is False:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        raise ValueError("distributed=True but no torch.distributed process group is initialised; "
                         "launch with torchrun and call torch.distributed.init_process_group first")
    return 0, 1


def _all_reduce(t: torch.Tensor, world: int, op: str = "sum") -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                               "min": dist.ReduceOp.MIN}[op])
    return t


def _broadcast(t: torch.Tensor, world: int) -> torch.Tensor:
    """Rank 0's copy of ``t`` on every rank (random draws are made once, by rank 0)."""
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(t, src=0)
    return t


def _check_same_data(world: int, **tensors) -> None:
    """Every rank must hold the same inputs: compare a checksum of each across ranks."""
    if world == 1:
        return
    for name, t in tensors.items():
        s = t.detach().double().sum().reshape(1)
        lo, hi = _all_reduce(s.clone(), world, "min"), _all_reduce(s.clone(), world, "max")
        if bool(lo != hi):
            raise ValueError(f"{name} differs between the ranks of the process group; every rank "
                             "must be given the same data")


# --------------------------------------------------------------------------------------------
# partitions
# --------------------------------------------------------------------------------------------

def _chunk_sizes(n: int, batch_size: int) -> list[int]:
    """``ceil(n / batch_size)`` sizes that sum to ``n`` and differ by at most one."""
    k = math.ceil(n / batch_size)
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _randperm(n, like, generator):
    if generator is None:
        return torch.randperm(n, device=like.device)
    return torch.randperm(n, generator=generator, device=generator.device).to(like.device)


def partition(x, batch_size: int, *, method: str = "random", weights=None, generator=None,
              n_iter: int = 10) -> list[torch.Tensor]:
    r"""Split the points of ``x`` into ``k = ceil(n / batch_size)`` batches of near-equal size.

    The batch sizes are fixed first: ``k`` sizes that sum to ``n`` and differ by at most one (the
    first ``n mod k`` batches have one point more), all at most ``batch_size``. Then

    * ``"random"``: a random permutation of the points is cut into contiguous chunks of these
      sizes;
    * ``"kmeans"``: balanced k-means. Lloyd's iterations in which the assignment step is an exact
      OT problem (``ob.emd``) from the points, each of mass 1, to the ``k`` centres, with masses
      equal to the batch sizes; an optimal vertex of that transportation polytope is integral, so
      it is a hard assignment with exactly the prescribed sizes. Centres start at ``k`` random
      points and move to the (weighted) means of their batches.

    Parameters
    ----------
    x : Tensor or array, shape (n, d) or (n,)
        Points.
    batch_size : int
        Largest batch size, between 1 and ``n``.
    method : {"random", "kmeans"}
        Partition rule.
    weights : Tensor or array, shape (n,), optional
        Point weights, used for the k-means centres only (batches are balanced by count).
    generator : torch.Generator, optional
        Source of the random permutation (or of the initial centres).
    n_iter : int
        Lloyd iterations of ``"kmeans"``.

    Returns
    -------
    list of Tensor
        ``k`` sorted index tensors (``long``, on ``x``'s device) that partition ``range(n)``.

    Examples
    --------
    >>> import torch
    >>> from otbook.minibatch import partition
    >>> parts = partition(torch.randn(10, 2), 4, generator=torch.Generator().manual_seed(0))
    >>> [len(p) for p in parts]
    [4, 3, 3]
    """
    x, _ = check_pair_points(x, x)
    n = x.shape[0]
    batch_size = check_int_at_most(batch_size, "batch_size", n, "the number of points")
    method = check_choice(method, "partition", PARTITIONS)
    generator = check_generator(generator)
    n_iter = check_positive_int(n_iter, "n_iter")
    sizes = _chunk_sizes(n, batch_size)
    k = len(sizes)
    perm = _randperm(n, x, generator)
    if method == "random" or k == 1:
        return [chunk.sort().values for chunk in torch.split(perm, sizes)]
    w = check_weights(weights, n, "weights", like=x)
    centres = x[perm[:k]].clone()
    counts = x.new_tensor(sizes, dtype=torch.float64)
    ones = counts.new_ones(n)
    labels = None
    for _ in range(n_iter):
        C = cost_matrix(x, centres).double()
        plan = emd(ones, counts, C).plan  # integral vertex: one 1 per row
        new = plan.argmax(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype) * w[:, None]
        centres = (onehot.T @ x) / onehot.sum(0).clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    return [torch.nonzero(labels == i).flatten() for i in range(k)]


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

def _short(self, name):
    def show(t):
        if isinstance(t, torch.Tensor):
            return f"{t.item():.6g}" if t.numel() == 1 else f"Tensor{tuple(t.shape)}"
        if isinstance(t, list):
            return f"[{len(t)} items]"
        return repr(t)

    parts = [f"{f.name}={show(getattr(self, f.name))}" for f in fields(self) if f.name != "extra"]
    return f"{name}(" + ", ".join(parts) + ")"


@dataclass
class MinibatchBounds:
    """Upper and lower bounds on exact OT from mini-batch solves (see :func:`minibatch_bounds`).

    Attributes
    ----------
    lower, upper : Tensor, shape ()
        ``lower <= OT(a, b) <= upper`` (up to round-off).
    n_solves : int
        Number of mini-batch OT problems solved (evaluated batch pairs with positive masses).
    batch_costs : Tensor, shape (k_x, k_y)
        The batch cost table ``M``; ``inf`` where a pair was not evaluated.
    evaluated : Tensor of bool, shape (k_x, k_y)
        Which batch pairs were evaluated.
    batch_plan : Tensor, shape (k_x, k_y)
        The coupling ``Gamma`` of the batches whose value ``sum Gamma * M`` is ``upper``.
    alpha, beta : Tensor, shapes (k_x,) and (k_y,)
        Batch masses.
    source_batches, target_batches : list of Tensor
        Index tensors of the batches.
    f, g : Tensor, shapes (n,) and (m,)
        The dual-feasible potentials (``f_i + g_j <= C_ij`` for all pairs) of the lower bound.
    lower_history : Tensor, shape (n_ctransforms,)
        The lower bound after each round (non-decreasing).
    method : str
        The batch-coupling strategy.
    certified : bool
        Whether ``batch_plan`` is proved optimal for the full table ``M`` (always for
        ``"optimal"``; for ``"adaptive"`` when its reduced-cost test found nothing left to gain).
    n_iter : int
        Evaluation rounds (``"adaptive"`` evaluates in rounds; the other strategies use one).
    converged : bool
        Whether every exact solve (batch pairs and the outer problem) reached optimality.
    extra : dict
        Timings in seconds: ``time_solves`` (batch OT problems), ``time_outer`` (the small
        problems on the table), ``time_lower`` (the c-transforms).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    n_solves: int
    batch_costs: torch.Tensor
    evaluated: torch.Tensor
    batch_plan: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    source_batches: list
    target_batches: list
    f: torch.Tensor
    g: torch.Tensor
    lower_history: torch.Tensor
    method: str
    certified: bool
    n_iter: int
    converged: bool
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return _short(self, "MinibatchBounds")


@dataclass
class MinibatchOT:
    """The usual mini-batch OT estimate (see :func:`minibatch_ot`).

    Attributes
    ----------
    value : Tensor, shape ()
        Mean of the per-pair exact OT costs.
    stderr : Tensor, shape ()
        Standard error of that mean (0 for a single pair).
    values : Tensor, shape (n_batches,)
        The exact OT cost of each random batch pair.
    n_solves : int
        Number of mini-batch OT problems solved.
    converged : bool
        Whether every solve reached optimality.
    """

    value: torch.Tensor
    stderr: torch.Tensor
    values: torch.Tensor
    n_solves: int
    converged: bool

    def __repr__(self) -> str:
        return _short(self, "MinibatchOT")


# --------------------------------------------------------------------------------------------
# the batch solves
# --------------------------------------------------------------------------------------------

def _solve_pair(xs, ys, ws, vs, cost):
    """Exact OT between two small weighted clouds: value, potentials, converged."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")  # reported once, by the caller
        res = emd(ws, vs, cost_matrix(xs, ys, cost))
    return res.value.detach(), res.f, res.g, bool(res.converged)


class _Solver:
    """Solves batch pairs (this rank's share), keeps their potentials, combines the shares."""

    def __init__(self, x, y, a, b, src, tgt, alpha, beta, cost, rank, world, progress):
        self.x, self.y, self.a, self.b = x, y, a, b
        self.src, self.tgt, self.alpha, self.beta = src, tgt, alpha, beta
        self.cost, self.rank, self.world, self.progress = cost, rank, world, progress
        kx, ky = len(src), len(tgt)
        self.M = x.new_full((kx, ky), float("inf"))
        self.evaluated = torch.zeros(kx, ky, dtype=torch.bool)
        self.pots = {}  # (i, j) -> (f, g), for the pairs this rank solved
        self.ok = True
        self.n_solves = 0
        self.seconds = 0.0

    def solve(self, pairs):
        """Evaluate the batch pairs ``pairs`` (a list of (i, j)); pair number t goes to rank
        ``t mod world``; the values are summed across ranks (each is non-zero on one rank)."""
        pairs = [p for p in pairs if not self.evaluated[p]]
        if not pairs:
            return
        start = time.perf_counter()
        vals = self.x.new_zeros(len(pairs))
        mine = list(range(self.rank, len(pairs), self.world))
        it = mine
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(mine, desc="mini-batch solves", leave=False)
        ok = 1.0
        for t in it:
            i, j = pairs[t]
            al, be = float(self.alpha[i]), float(self.beta[j])
            if al <= 0 or be <= 0:  # an empty batch: nothing travels, nothing to solve
                continue
            A, B = self.src[i], self.tgt[j]
            v, f, g, conv = _solve_pair(self.x[A], self.y[B], self.a[A] / al, self.b[B] / be,
                                        self.cost)
            vals[t] = v
            self.pots[(i, j)] = (f, g)
            ok = ok * float(conv)
        vals = _all_reduce(vals, self.world)
        flag = _all_reduce(self.x.new_tensor([ok]), self.world, "min")
        self.ok = self.ok and bool(flag.item() == 1.0)
        for t, (i, j) in enumerate(pairs):
            self.M[i, j] = vals[t]
            self.evaluated[i, j] = True
            if float(self.alpha[i]) > 0 and float(self.beta[j]) > 0:
                self.n_solves += 1
        self.seconds += time.perf_counter() - start

    def stitched(self, pick_src):
        """Potentials on all source points: batch i takes the source potential of the pair
        ``(i, pick_src[i])``, centred (mean 0 under the batch measure). Filled by the rank that
        solved the pair, summed across ranks."""
        f = self.x.new_zeros(self.x.shape[0])
        for i, j in enumerate(pick_src):
            if (i, j) in self.pots:
                fi = self.pots[(i, j)][0]
                A = self.src[i]
                f[A] = fi - (fi * self.a[A]).sum() / self.alpha[i]
        return _all_reduce(f, self.world)


# --------------------------------------------------------------------------------------------
# couplings of the batches
# --------------------------------------------------------------------------------------------

def _north_west(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The north-west-corner coupling of two mass vectors (a spanning-tree support)."""
    G = np.zeros((len(alpha), len(beta)))
    ra, rb = alpha.astype(float).copy(), beta.astype(float).copy()
    tol = 1e-12 * max(alpha.sum(), beta.sum())
    i = j = 0
    while i < len(alpha) and j < len(beta):
        t = min(ra[i], rb[j])
        G[i, j] = t
        ra[i] -= t
        rb[j] -= t
        if ra[i] <= tol:
            i += 1
        if rb[j] <= tol:
            j += 1
    return G


def _restricted(alpha, beta, M, evaluated):
    """Optimal coupling of the batches using evaluated pairs only, and the duals ``(u, v)``.

    Pairs not evaluated get a prohibitive cost; the support holds a feasible coupling, so the
    optimum puts no mass on them (checked, with a larger penalty if ever needed).
    """
    Mn = M.detach().cpu().double()
    known = Mn[evaluated]
    scale = float(known.abs().max()) + 1.0
    for factor in (1e6, 1e10, 1e14):
        table = torch.where(evaluated, Mn, torch.full_like(Mn, factor * scale))
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            res = emd(alpha.detach().cpu().double(), beta.detach().cpu().double(), table)
        leak = float(res.plan[~evaluated].sum()) if bool((~evaluated).any()) else 0.0
        if leak <= 1e-12 * float(alpha.sum()):
            plan = torch.where(evaluated, res.plan, torch.zeros_like(res.plan))
            return plan, res.f, res.g, bool(res.converged)
    raise RuntimeError("the evaluated batch pairs hold no coupling of the batch masses")


def _support(plan, rel=1e-14):
    return plan > rel * float(plan.sum())


def _mean_bound(x, y, a, b, src, tgt, alpha, beta, cost):
    """``c(mean A_i, mean B_j) <= M_ij`` (Jensen, for jointly convex costs): a free proxy."""
    tiny = torch.finfo(x.dtype).tiny
    mx = torch.stack([(a[A, None] * x[A]).sum(0) / max(float(alpha[i]), tiny)
                      for i, A in enumerate(src)])
    my = torch.stack([(b[B, None] * y[B]).sum(0) / max(float(beta[j]), tiny)
                      for j, B in enumerate(tgt)])
    return cost_matrix(mx, my, cost).detach().cpu().double()


# --------------------------------------------------------------------------------------------
# c-transforms, blockwise and shared among ranks
# --------------------------------------------------------------------------------------------

def _c_transform(p, q, pot_q, cost, rank, world):
    """``out_i = min_j c(p_i, q_j) - pot_q[j]`` without storing the full cost matrix: rows of
    ``p`` in blocks (the same blocks on one or many ranks, so the results agree exactly), block
    ``t`` computed on rank ``t mod world``, the pieces summed across ranks."""
    n, m = p.shape[0], q.shape[0]
    rows = max(1, BLOCK_ENTRIES // max(m, 1))
    out = p.new_zeros(n)
    for t, start in enumerate(range(0, n, rows)):
        if t % world != rank:
            continue
        stop = min(n, start + rows)
        out[start:stop] = (cost_matrix(p[start:stop], q, cost) - pot_q[None, :]).amin(1)
    return _all_reduce(out, world)


def _batch_c_transform(x, y, f, labels, k, cost, rank, world):
    """``D[i, j] = min_{x_l in batch i} c(x_l, y_j) - f_l``, shape ``(k, m)``, in column blocks
    (block ``t`` on rank ``t mod world``), the pieces summed across ranks."""
    n, m = x.shape[0], y.shape[0]
    cols = max(1, BLOCK_ENTRIES // max(n, 1))
    D = x.new_zeros(k, m)
    idx = labels[:, None]
    for t, start in enumerate(range(0, m, cols)):
        if t % world != rank:
            continue
        stop = min(m, start + cols)
        block = cost_matrix(x, y[start:stop], cost) - f[:, None]
        D[:, start:stop] = x.new_full((k, stop - start), float("inf")).scatter_reduce(
            0, idx.expand(-1, stop - start), block, reduce="amin")
    return _all_reduce(D, world)


def _offset_c_transform(x, y, f, labels, alpha, b, cost, rank, world):
    """The best per-batch offsets ``u`` for ``f``, and the c-transform of ``f + u[batch]``.

    ``max_u <a, f + u[batch]> + <b, (f + u[batch])^c>`` is the semi-dual of the ``k x m`` OT
    problem between the batch masses ``alpha`` and ``b`` with cost
    ``D_ij = min_{x_l in batch i} c(x_l, y_j) - f_l``: solved exactly (``ob.emd``), its source
    potential is the best ``u``. ``u = 0`` is a candidate, so this never does worse than a plain
    c-transform. Returns ``f + u[batch]``, its c-transform, and whether the solve converged.
    """
    D = _batch_c_transform(x, y, f, labels, len(alpha), cost, rank, world)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        semi = emd(alpha, b, D)
    f = f + semi.f[labels]
    return f, _c_transform(y, x, f, cost, rank, world), bool(semi.converged)


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------

def minibatch_bounds(x, y, *, batch_size: int, a=None, b=None, budget: int | None = None,
                     method: str | None = None, partition: str = "random",
                     n_ctransforms: int = 3, cost: str = "sqeuclidean", generator=None,
                     distributed: bool | None = None, progress: bool = False) -> MinibatchBounds:
    r"""Upper and lower bounds on exact OT from exact OT between mini-batches.

    Each side is partitioned into batches of at most ``batch_size`` points (rule: see
    :func:`otbook.minibatch.partition`; ``ceil(n / batch_size)`` batches whose sizes differ by
    at most one). ``M[i, j]`` is exact OT (:func:`otbook.emd`) between the renormalised batch
    measures. For a coupling ``Gamma`` of the batch masses ``alpha``, ``beta``,
    ``upper = sum Gamma * M >= OT(a, b)``, because the block plan is feasible.

    The strategies (``method``) choose ``Gamma`` and the pairs to evaluate:

    * ``"paired"``: the north-west-corner coupling (``I / k`` for equal batches): at most
      ``k_x + k_y - 1`` solves; the classic paired mini-batch average.
    * ``"all_pairs"``: ``Gamma = alpha beta^T``, all ``k_x k_y`` solves; the expectation of the
      usual mini-batch estimator over the batch pairs.
    * ``"optimal"``: all pairs, ``Gamma`` optimal for the table ``M``: the tightest bound of the
      family for this partition.
    * budgeted (at most ``budget`` solves; then the optimal coupling restricted to the evaluated
      pairs): ``"random"`` evaluates the north-west-corner support plus random pairs;
      ``"proxy"`` evaluates the support of the optimal coupling for the cheap lower estimate
      ``c(mean A_i, mean B_j) <= M_ij`` and then the pairs with the smallest estimate;
      ``"adaptive"`` starts like ``"proxy"`` and then, in rounds, evaluates the pairs whose
      estimate has the most negative reduced cost ``c(mean A_i, mean B_j) - u_i - v_j`` under the
      duals ``(u, v)`` of the restricted problem. When no pair has a negative reduced cost the
      coupling is proved optimal for the full table (``certified``), and it stops early.

    The lower bound: the source potentials of the evaluated pairs picked by ``Gamma`` (the
    pair with the largest ``Gamma_ij`` for each source batch) are stitched together, then made feasible by the c-transform ``g = f^c``. The additive constant of each batch's
    potential is free: the best constants solve a small ``k_x x m`` OT problem (the semi-dual of
    the bound in those constants), solved exactly. Further rounds alternate sides (best
    per-batch constants for ``g``, then ``f = g^c``, ...), and none lowers the bound. Each
    round costs ``O(n m)`` cost evaluations, computed in blocks (the ``n x m`` cost matrix is
    never stored), and one ``k x m`` exact solve.

    Parameters
    ----------
    x, y : Tensor or array, shapes (n, d) and (m, d)
        Source and target points.
    batch_size : int
        Largest batch size: at least 1 and at most ``max(n, m)`` (a side with fewer points is
        one batch). ``batch_size >= max(n, m)`` gives one batch per side, and both bounds equal
        exact OT.
    a, b : Tensor or array, shapes (n,) and (m,), optional
        Weights (default uniform), non-negative, with equal total masses.
    budget : int, optional
        Largest number of mini-batch solves, for the budgeted strategies; at least the size of
        the strategy's starting support (at most ``k_x + k_y - 1``). ``None``: all pairs.
    method : str, optional
        One of ``"paired"``, ``"all_pairs"``, ``"optimal"``, ``"random"``, ``"proxy"``,
        ``"adaptive"``. Default: ``"optimal"``, or ``"adaptive"`` when a budget is given.
    partition : {"random", "kmeans"}
        How the batches are formed (see :func:`otbook.minibatch.partition`).
    n_ctransforms : int
        Rounds of the lower bound (at least 1), alternating sides; none lowers the bound.
    cost : {"sqeuclidean", "euclidean"}
        Ground cost (``ob.cost_matrix``). Both are jointly convex, which the proxies need.
    generator : torch.Generator, optional
        Randomness of the partition and of the ``"random"`` strategy. Under
        ``torch.distributed`` the draws of rank 0 are broadcast to all ranks.
    distributed : bool, optional
        Share the batch solves and the c-transforms among the ranks of the initialised
        ``torch.distributed`` process group (``None``: when one is initialised). Every rank must
        call with the same data; all ranks return the same result.
    progress : bool
        Progress bar over the batch solves.

    Returns
    -------
    MinibatchBounds
        ``lower``, ``upper``, ``n_solves``, ``batch_costs`` and more (see the class).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(60, 2, dtype=torch.float64, generator=gen)
    >>> y = torch.randn(60, 2, dtype=torch.float64, generator=gen) + 1.0
    >>> exact = float(ob.emd(None, None, ob.cost_matrix(x, y)).value)
    >>> res = ob.minibatch_bounds(x, y, batch_size=20, generator=gen)
    >>> res.n_solves, float(res.lower) <= exact <= float(res.upper)
    (9, True)
    >>> full = ob.minibatch_bounds(x, y, batch_size=60)
    >>> abs(float(full.upper) - exact) < 1e-12, abs(float(full.lower) - exact) < 1e-12
    (True, True)
    """
    x, y = check_clouds(x, y)
    n, m = x.shape[0], y.shape[0]
    batch_size = check_int_at_most(batch_size, "batch_size", max(n, m),
                                   "the number of points in the larger of x and y")
    a = check_weights(a, n, "a", like=x)
    b = check_weights(b, m, "b", like=x)
    check_same_mass(a, b)
    if method is None:
        method = "optimal" if budget is None else "adaptive"
    method = check_choice(method, "method", METHODS)
    if budget is not None:
        budget = check_positive_int(budget, "budget")
        if method not in BUDGETED:
            raise ValueError(f"budget applies to the methods {list(BUDGETED)}, not {method!r}; "
                             "drop budget or choose a budgeted method")
    partition = check_choice(partition, "partition", PARTITIONS)
    n_ctransforms = check_positive_int(n_ctransforms, "n_ctransforms")
    cost = check_choice(cost, "cost", COSTS_WITH_MEAN_BOUND)
    generator = check_generator(generator)
    rank, world = _dist_group(distributed)
    _check_same_data(world, x=x, y=y, a=a, b=b)

    # --- partitions: drawn once (on rank 0 when distributed) ---------------------------------
    src = _partition_shared(x, a, min(batch_size, n), partition, generator, world)
    tgt = _partition_shared(y, b, min(batch_size, m), partition, generator, world)
    kx, ky = len(src), len(tgt)
    alpha = torch.stack([a[A].sum() for A in src])
    beta = torch.stack([b[B].sum() for B in tgt])
    solver = _Solver(x, y, a, b, src, tgt, alpha, beta, cost, rank, world, progress)
    full = kx * ky
    budget_eff = full if budget is None else min(budget, full)
    alpha64, beta64 = alpha.detach().cpu().double(), beta.detach().cpu().double()
    t_outer = 0.0
    LB = None
    certified = False
    n_rounds = 1
    outer_ok = True

    def pairs_of(mask):
        return [tuple(map(int, ij)) for ij in torch.nonzero(mask)]

    def base_check(n_base):
        if budget is not None and budget < n_base:
            raise ValueError(f"budget must be at least {n_base} for method {method!r} with "
                             f"{kx} x {ky} batches (the solves of its starting coupling), got {budget}")

    if method == "paired" or method == "random":
        G = torch.as_tensor(_north_west(alpha64.numpy(), beta64.numpy()))
        base = _support(G)
        base_check(int(base.sum()))
        chosen = pairs_of(base)
        if method == "random" and budget_eff > len(chosen):
            rest = pairs_of(~base)
            order = _broadcast(_randperm(len(rest), x, generator), world).tolist()
            chosen += [rest[t] for t in order[:budget_eff - len(chosen)]]
        solver.solve(chosen)
    elif method in ("all_pairs", "optimal"):
        solver.solve(pairs_of(torch.ones(kx, ky, dtype=torch.bool)))
    else:  # proxy, adaptive
        start = time.perf_counter()
        LB = _mean_bound(x, y, a, b, src, tgt, alpha, beta, cost)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            proxy_plan = emd(alpha64, beta64, LB).plan
        t_outer += time.perf_counter() - start
        base = _support(proxy_plan)
        base_check(int(base.sum()))
        solver.solve(pairs_of(base))
        if method == "proxy" and budget_eff > solver.evaluated.sum():
            rest = ~solver.evaluated
            idx = torch.nonzero(rest)
            order = torch.argsort(LB[rest], stable=True)
            extra = [tuple(map(int, idx[t])) for t in order[:budget_eff - int(solver.evaluated.sum())]]
            solver.solve(extra)

    # --- the outer problem on the evaluated pairs --------------------------------------------
    start = time.perf_counter()
    plan, u, v, ok = _restricted(alpha64, beta64, solver.M, solver.evaluated)
    outer_ok &= ok
    t_outer += time.perf_counter() - start
    if method == "adaptive":
        per_round = max(1, min(kx, ky))
        while True:
            reduced = LB - u[:, None] - v[None, :]
            tol = 1e-12 * (float(LB.abs().max()) + 1.0)
            cand = (~solver.evaluated) & (reduced < -tol)
            if not bool(cand.any()):
                certified = True
                break
            room = budget_eff - int(solver.evaluated.sum())
            if room <= 0:
                break
            idx = torch.nonzero(cand)
            order = torch.argsort(reduced[cand], stable=True)[:min(room, per_round)]
            solver.solve([tuple(map(int, idx[t])) for t in order])
            n_rounds += 1
            start = time.perf_counter()
            plan, u, v, ok = _restricted(alpha64, beta64, solver.M, solver.evaluated)
            outer_ok &= ok
            t_outer += time.perf_counter() - start
    if method == "optimal" or (method in BUDGETED and bool(solver.evaluated.all())) \
            or kx == 1 or ky == 1:  # one batch on a side: the only coupling of the batches
        certified = True

    M64 = solver.M.detach().cpu().double()
    if method == "paired":
        G_up = G
    elif method == "all_pairs":
        G_up = alpha64[:, None] * beta64[None, :]
    else:
        G_up = plan
    upper = (G_up * torch.where(G_up > 0, M64, torch.zeros_like(M64))).sum()

    # --- the lower bound: stitch, then c-transforms ------------------------------------------
    start = time.perf_counter()
    pick_src = [int(plan[i].argmax()) for i in range(kx)]
    solver.solve([(i, pick_src[i]) for i in range(kx)])
    f0 = solver.stitched(pick_src)  # each batch's potential, centred on its batch measure
    lab_x = x.new_zeros(n, dtype=torch.long)
    for i, A in enumerate(src):
        lab_x[A] = i
    lab_y = x.new_zeros(m, dtype=torch.long)
    for j, B in enumerate(tgt):
        lab_y[B] = j
    xd, yd = x.detach(), y.detach()
    ad, bd = a.detach(), b.detach()
    f, g = f0, None
    history = []
    for r in range(n_ctransforms):
        if r % 2 == 0:  # improve f by per-batch offsets, then g = f^c
            f, g, ok = _offset_c_transform(xd, yd, f, lab_x, alpha.detach(), bd, cost, rank, world)
        else:           # improve g by per-batch offsets, then f = g^c
            g, f, ok = _offset_c_transform(yd, xd, g, lab_y, beta.detach(), ad, cost, rank, world)
        outer_ok &= ok
        history.append((f * a).sum() + (g * b).sum())
    history = torch.stack(history).detach()
    lower = history.max()
    t_lower = time.perf_counter() - start

    converged = solver.ok and outer_ok
    if not converged:
        warnings.warn("minibatch_bounds: an exact solve stopped before optimality; the bounds may "
                      "not hold (use smaller batches)", RuntimeWarning, stacklevel=2)
    return MinibatchBounds(
        lower=lower,
        upper=upper.to(x.dtype).to(x.device),
        n_solves=solver.n_solves,
        batch_costs=solver.M.detach(),
        evaluated=solver.evaluated.to(x.device),
        batch_plan=G_up.to(x.dtype).to(x.device),
        alpha=alpha.detach(),
        beta=beta.detach(),
        source_batches=src,
        target_batches=tgt,
        f=f.detach(),
        g=g.detach(),
        lower_history=history,
        method=method,
        certified=certified,
        n_iter=n_rounds,
        converged=converged,
        extra={"time_solves": solver.seconds, "time_outer": t_outer, "time_lower": t_lower,
               "budget": budget, "partition": partition, "world_size": world},
    )


def _partition_shared(x, w, batch_size, method, generator, world):
    """:func:`partition`, drawn on rank 0 and broadcast (as batch labels) to the other ranks."""
    parts = partition(x, batch_size, method=method, weights=w, generator=generator)
    if world == 1:
        return parts
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i, p in enumerate(parts):
        labels[p] = i
    labels = _broadcast(labels, world)
    return [torch.nonzero(labels == i).flatten() for i in range(len(parts))]


def minibatch_ot(x, y, *, batch_size: int, n_batches: int = 1, a=None, b=None,
                 cost: str = "sqeuclidean", generator=None, distributed: bool | None = None,
                 progress: bool = False) -> MinibatchOT:
    r"""The usual mini-batch OT estimator: exact OT averaged over random batch pairs.

    Each of the ``n_batches`` pairs draws ``batch_size`` source and ``batch_size`` target points
    (without replacement for uniform weights; with replacement, with probabilities ``a`` and
    ``b``, for weighted ones), and solves exact OT between the two batches with uniform weights.
    The estimate is the mean of these costs. It is an *upper-biased* estimate of ``OT(a, b)``:
    its expectation is the all-pairs member of the bound family, and it is positive even
    between a dataset and itself, where ``OT = 0``.

    Parameters
    ----------
    x, y : Tensor or array, shapes (n, d) and (m, d)
        Source and target points.
    batch_size : int
        Points per batch, between 1 and ``min(n, m)``.
    n_batches : int
        Number of random batch pairs (at least 1).
    a, b : Tensor or array, optional
        Sampling weights (default uniform), non-negative, with equal total masses.
    cost : {"sqeuclidean", "euclidean"}
        Ground cost.
    generator : torch.Generator, optional
        Randomness of the draws (drawn on rank 0 under ``torch.distributed``).
    distributed : bool, optional
        Share the solves among the ranks of the initialised process group (``None``: when one
        is initialised).
    progress : bool
        Progress bar over the solves.

    Returns
    -------
    MinibatchOT
        ``value`` (the estimate), ``stderr``, the per-pair ``values``, ``n_solves``,
        ``converged``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, dtype=torch.float64, generator=gen)
    >>> est = ob.minibatch_ot(x, x, batch_size=20, n_batches=10, generator=gen)
    >>> est.n_solves, bool(est.value > 0)       # biased: OT(x, x) = 0
    (10, True)
    """
    x, y = check_clouds(x, y)
    n, m = x.shape[0], y.shape[0]
    batch_size = check_int_at_most(batch_size, "batch_size", min(n, m),
                                   "the number of points in the smaller of x and y")
    n_batches = check_positive_int(n_batches, "n_batches")
    weighted = a is not None or b is not None
    a = check_weights(a, n, "a", like=x)
    b = check_weights(b, m, "b", like=x)
    check_same_mass(a, b)
    cost = check_choice(cost, "cost", COSTS_WITH_MEAN_BOUND)
    generator = check_generator(generator)
    rank, world = _dist_group(distributed)
    _check_same_data(world, x=x, y=y, a=a, b=b)

    def draw(w, size):
        if weighted:
            p = (w / w.sum()).detach()
            if generator is None:
                return torch.multinomial(p, batch_size * n_batches, replacement=True)
            return torch.multinomial(p.to(generator.device), batch_size * n_batches,
                                     replacement=True, generator=generator).to(x.device)
        return torch.stack([_randperm(size, x, generator)[:batch_size] for _ in range(n_batches)])

    I = _broadcast(draw(a, n).reshape(n_batches, batch_size).contiguous(), world)
    J = _broadcast(draw(b, m).reshape(n_batches, batch_size).contiguous(), world)
    vals = x.new_zeros(n_batches)
    mine = range(rank, n_batches, world)
    if progress:
        from tqdm.auto import tqdm

        mine = tqdm(mine, desc="mini-batch solves", leave=False)
    ok = 1.0
    for t in mine:
        v, _, _, conv = _solve_pair(x[I[t]], y[J[t]], None, None, cost)
        vals[t] = v
        ok *= float(conv)
    vals = _all_reduce(vals, world)
    converged = bool(_all_reduce(x.new_tensor([ok]), world, "min").item() == 1.0)
    if not converged:
        warnings.warn("minibatch_ot: an exact solve stopped before optimality", RuntimeWarning,
                      stacklevel=2)
    mass = a.sum()
    vals = vals * mass  # the batches carry the total mass of the measures
    stderr = vals.std() / math.sqrt(n_batches) if n_batches > 1 else vals.new_zeros(())
    return MinibatchOT(value=vals.mean(), stderr=stderr, values=vals, n_solves=n_batches,
                       converged=converged)


# --------------------------------------------------------------------------------------------
# launcher: python -m otbook.minibatch (under torchrun)
# --------------------------------------------------------------------------------------------

def _main(argv=None):
    """Run :func:`minibatch_bounds` on every rank of a ``torchrun`` job; rank 0 writes JSON."""
    import argparse
    import json
    import os

    import torch.distributed as dist

    p = argparse.ArgumentParser(
        prog="python -m otbook.minibatch",
        description="Mini-batch OT bounds, shared across torch.distributed ranks. Launch with "
                    "torchrun --nproc_per_node K -m otbook.minibatch ... (gloo on CPU, NCCL on GPU).")
    p.add_argument("--data", help="a torch.save file with tensors x, y and optionally a, b; "
                                  "default: two Gaussian clouds drawn from --seed")
    p.add_argument("--points", type=int, default=400, help="points per cloud when --data is not given")
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--method", default=None, choices=METHODS)
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--partition", default="random", choices=PARTITIONS)
    p.add_argument("--n-ctransforms", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the generator")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with CUDA)")
    p.add_argument("--out", help="JSON file written by rank 0 (default: print it)")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # one core per rank
    use_cuda = torch.cuda.is_available() and args.backend != "gloo"
    backend = args.backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend)
    try:
        rank = dist.get_rank()
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if backend == "nccl" \
            else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(dev)
        if args.data:
            data = torch.load(args.data, map_location="cpu")
            x, y, a, b = data["x"], data["y"], data.get("a"), data.get("b")
        else:
            gen = torch.Generator().manual_seed(args.seed)
            x = torch.randn(args.points, args.dim, dtype=torch.float64, generator=gen)
            y = 0.5 * torch.randn(args.points, args.dim, dtype=torch.float64, generator=gen) + 1.0
            a = b = None
        x, y = x.to(dev), y.to(dev)
        a = a.to(dev) if a is not None else None
        b = b.to(dev) if b is not None else None
        start = time.perf_counter()
        res = minibatch_bounds(x, y, batch_size=args.batch_size, a=a, b=b, budget=args.budget,
                               method=args.method, partition=args.partition,
                               n_ctransforms=args.n_ctransforms,
                               generator=torch.Generator().manual_seed(args.seed), distributed=True)
        seconds = time.perf_counter() - start
        if rank == 0:
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
    _main()
