r"""Upper and lower bounds on exact OT from exact OT between mini-batches.

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

import time
from dataclasses import dataclass, field

import torch

from .._checks import (check_choice, check_clouds, check_generator, check_int_at_most,
                       check_positive_int, check_same_mass, check_weights)
from .._runtime import WarningSummary, randperm, warn
from .._runtime import progress as progress_bar
from ..exact import emd
from ._common import (BUDGETED, COSTS_WITH_MEAN_BOUND, METHODS, PARTITIONS, ShortRepr,
                      solve_pair)
from ._couplings import mean_bound, north_west, restricted_coupling, support
from ._ctransform import offset_c_transform
from ._distributed import (all_reduce, broadcast, broadcast_batches, check_same_data,
                           rank_and_world)
from .partition import partition as make_partition

__all__ = ["MinibatchBounds", "minibatch_bounds"]


@dataclass(repr=False)
class MinibatchBounds(ShortRepr):
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


# --------------------------------------------------------------------------------------------
# one call's state: the batches, the pairs solved so far, the small problems on the table
# --------------------------------------------------------------------------------------------

def _shared_partition(p, w, batch_size, rule, generator, world):
    """The batches of one side (at most ``batch_size`` points, capped at its size); under
    torch.distributed, rank 0's draw on every rank."""
    n = p.shape[0]
    parts = make_partition(p, min(batch_size, n), method=rule, weights=w, generator=generator)
    return broadcast_batches(parts, n, p, world)


class _Run:
    """One call of :func:`minibatch_bounds` after its checks: the data and its batches, the
    batch pairs solved so far (this rank's share, combined across ranks), and the time and
    convergence of the small problems on the ``k_x x k_y`` table."""

    def __init__(self, x, y, a, b, src, tgt, *, method, budget, cost, generator, rank, world,
                 show_progress):
        self.x, self.y, self.a, self.b, self.src, self.tgt = x, y, a, b, src, tgt
        self.method, self.budget, self.cost, self.generator = method, budget, cost, generator
        self.rank, self.world, self.show_progress = rank, world, show_progress
        self.kx, self.ky = len(src), len(tgt)
        self.alpha = torch.stack([a[A].sum() for A in src])
        self.beta = torch.stack([b[B].sum() for B in tgt])
        # the table's problems are solved by POT, on the CPU in float64
        self.alpha64 = self.alpha.detach().cpu().double()
        self.beta64 = self.beta.detach().cpu().double()
        self.M = x.new_full((self.kx, self.ky), float("inf"))
        self.evaluated = torch.zeros(self.kx, self.ky, dtype=torch.bool)
        self.pots = {}  # (i, j) -> (f, g), for the pairs this rank solved
        self.n_solves = 0
        self.solves_ok = self.outer_ok = True
        self.t_solves = self.t_outer = self.t_lower = 0.0
        self.summary = WarningSummary()  # the solvers' warnings, reported once by the caller

    @property
    def room(self) -> int:
        """Solves left in the budget (all pairs when there is none)."""
        full = self.kx * self.ky
        return (full if self.budget is None else min(self.budget, full)) - int(self.evaluated.sum())

    @property
    def settled(self) -> bool:
        """Whether the coupling is forced optimal: every pair evaluated, or one batch on a side
        (then the batch masses have a single coupling)."""
        return bool(self.evaluated.all()) or self.kx == 1 or self.ky == 1

    def check_budget(self, n_base: int) -> None:
        """The budget must cover the solves of the strategy's starting coupling."""
        if self.budget is not None and self.budget < n_base:
            raise ValueError(f"budget must be at least {n_base} for method {self.method!r} with "
                             f"{self.kx} x {self.ky} batches (the solves of its starting "
                             f"coupling), got {self.budget}")

    def solve(self, pairs) -> None:
        """Evaluate the batch pairs ``pairs`` (a list of (i, j)); pair number t goes to rank
        ``t mod world``; the values are summed across ranks (each is non-zero on one rank)."""
        pairs = [p for p in pairs if not self.evaluated[p]]
        if not pairs:
            return
        start = time.perf_counter()
        vals = self.x.new_zeros(len(pairs))
        mine = range(self.rank, len(pairs), self.world)
        ok = 1.0
        for t in progress_bar(self.show_progress, total=len(mine), desc="mini-batch solves",
                              iterable=mine):
            i, j = pairs[t]
            al, be = float(self.alpha[i]), float(self.beta[j])
            if al <= 0 or be <= 0:  # an empty batch: nothing travels, nothing to solve
                continue
            A, B = self.src[i], self.tgt[j]
            v, f, g, conv = solve_pair(self.x[A], self.y[B], self.a[A] / al, self.b[B] / be,
                                       self.cost, self.summary)
            vals[t] = v
            self.pots[(i, j)] = (f, g)
            ok = ok * float(conv)
        vals = all_reduce(vals, self.world)
        flag = all_reduce(self.x.new_tensor([ok]), self.world, "min")
        self.solves_ok = self.solves_ok and bool(flag.item() == 1.0)
        for t, (i, j) in enumerate(pairs):
            self.M[i, j] = vals[t]
            self.evaluated[i, j] = True
            if float(self.alpha[i]) > 0 and float(self.beta[j]) > 0:
                self.n_solves += 1
        self.t_solves += time.perf_counter() - start

    def restricted(self):
        """The optimal coupling of the batches on the evaluated pairs and its duals (u, v)."""
        start = time.perf_counter()
        plan, u, v, ok = restricted_coupling(self.alpha64, self.beta64, self.M, self.evaluated,
                                             self.summary)
        self.outer_ok &= ok
        self.t_outer += time.perf_counter() - start
        return plan, u, v

    def stitched(self, pick_src) -> torch.Tensor:
        """Potentials on all source points: batch i takes the source potential of the pair
        ``(i, pick_src[i])``, centred (mean 0 under the batch measure). Filled by the rank that
        solved the pair, summed across ranks."""
        f = self.x.new_zeros(self.x.shape[0])
        for i, j in enumerate(pick_src):
            if (i, j) in self.pots:
                fi = self.pots[(i, j)][0]
                A = self.src[i]
                f[A] = fi - (fi * self.a[A]).sum() / self.alpha[i]
        return all_reduce(f, self.world)


def _pairs(mask: torch.Tensor) -> list:
    """The (i, j) where ``mask`` holds, in row-major order."""
    return [tuple(map(int, ij)) for ij in torch.nonzero(mask)]


# --------------------------------------------------------------------------------------------
# the strategies: which pairs to solve, and the coupling Gamma of the upper bound
# --------------------------------------------------------------------------------------------

@dataclass
class _Coupling:
    """What a strategy found. ``plan`` is Gamma (its value on the table is the upper bound);
    ``outer`` is the optimal coupling on the evaluated pairs (it picks the potentials of the
    lower bound); ``certified``: ``plan`` is proved optimal for the full table."""

    plan: torch.Tensor
    outer: torch.Tensor
    certified: bool
    n_rounds: int = 1


def _north_west_support(run: _Run):
    """The north-west-corner coupling and its support (at most ``k_x + k_y - 1`` pairs)."""
    G = torch.as_tensor(north_west(run.alpha64.numpy(), run.beta64.numpy()))
    base = support(G)
    run.check_budget(int(base.sum()))
    return G, base


def _paired(run: _Run) -> _Coupling:
    """``"paired"``: solve the north-west corner's support; Gamma is that corner."""
    G, base = _north_west_support(run)
    run.solve(_pairs(base))
    outer, _, _ = run.restricted()
    return _Coupling(G, outer, certified=run.kx == 1 or run.ky == 1)


def _all_pairs(run: _Run) -> _Coupling:
    """``"all_pairs"`` and ``"optimal"``: solve every pair; Gamma is ``alpha beta^T`` or the
    optimal coupling of the table."""
    run.solve(_pairs(torch.ones(run.kx, run.ky, dtype=torch.bool)))
    outer, _, _ = run.restricted()
    if run.method == "optimal":
        return _Coupling(outer, outer, certified=True)
    product = run.alpha64[:, None] * run.beta64[None, :]
    return _Coupling(product, outer, certified=run.kx == 1 or run.ky == 1)


def _random(run: _Run) -> _Coupling:
    """``"random"``: the north-west corner's support plus random pairs up to the budget;
    Gamma is the optimal coupling on them."""
    _, base = _north_west_support(run)
    chosen = _pairs(base)
    more = run.room - len(chosen)
    if more > 0:
        rest = _pairs(~base)
        order = broadcast(randperm(len(rest), run.x, run.generator), run.world).tolist()
        chosen += [rest[t] for t in order[:more]]
    run.solve(chosen)
    outer, _, _ = run.restricted()
    return _Coupling(outer, outer, certified=run.settled)


def _proxy(run: _Run) -> _Coupling:
    """``"proxy"`` and ``"adaptive"``: solve the support of the optimal coupling for the proxy
    table ``c(mean A_i, mean B_j) <= M_ij``; then the pairs with the smallest proxy
    (``"proxy"``), or rounds of the pairs with negative reduced cost (``"adaptive"``)."""
    start = time.perf_counter()
    proxy = mean_bound(run.x, run.y, run.a, run.b, run.src, run.tgt, run.alpha, run.beta,
                       run.cost)
    with run.summary:
        proxy_plan = emd(run.alpha64, run.beta64, proxy).plan
    run.t_outer += time.perf_counter() - start
    base = support(proxy_plan)
    run.check_budget(int(base.sum()))
    run.solve(_pairs(base))
    if run.method == "adaptive":
        return _adaptive_rounds(run, proxy)
    if run.room > 0:
        rest = ~run.evaluated
        idx = torch.nonzero(rest)
        order = torch.argsort(proxy[rest], stable=True)
        run.solve([tuple(map(int, idx[t])) for t in order[:run.room]])
    outer, _, _ = run.restricted()
    return _Coupling(outer, outer, certified=run.settled)


def _adaptive_rounds(run: _Run, proxy: torch.Tensor) -> _Coupling:
    """Rounds of at most ``min(k_x, k_y)`` solves: the pairs whose proxy has the most negative
    reduced cost ``proxy_ij - u_i - v_j`` under the duals of the restricted problem. The proxy
    is below the true cost, so when no reduced cost is negative none of the true ones is
    either: the restricted coupling is optimal for the full table."""
    plan, u, v = run.restricted()
    per_round = max(1, min(run.kx, run.ky))
    tol = 1e-12 * (float(proxy.abs().max()) + 1.0)
    n_rounds, certified = 1, False
    while True:
        reduced = proxy - u[:, None] - v[None, :]
        cand = (~run.evaluated) & (reduced < -tol)
        if not bool(cand.any()):
            certified = True
            break
        if run.room <= 0:
            break
        idx = torch.nonzero(cand)
        order = torch.argsort(reduced[cand], stable=True)[:min(run.room, per_round)]
        run.solve([tuple(map(int, idx[t])) for t in order])
        n_rounds += 1
        plan, u, v = run.restricted()
    return _Coupling(plan, plan, certified=certified or run.settled, n_rounds=n_rounds)


_STRATEGIES = {"paired": _paired, "all_pairs": _all_pairs, "optimal": _all_pairs,
               "random": _random, "proxy": _proxy, "adaptive": _proxy}


# --------------------------------------------------------------------------------------------
# the lower bound, and the result
# --------------------------------------------------------------------------------------------

def _labels(batches, n: int, like: torch.Tensor) -> torch.Tensor:
    """The batch number of each of the ``n`` points."""
    labels = like.new_zeros(n, dtype=torch.long)
    for i, batch in enumerate(batches):
        labels[batch] = i
    return labels


def _lower_bound(run: _Run, outer: torch.Tensor, n_ctransforms: int):
    """Stitch the source potentials of the pairs ``outer`` picks (the largest entry of each
    row), then alternate best per-batch offsets and c-transforms, side by side. Returns the
    feasible potentials ``f, g`` and the bound after each round."""
    start = time.perf_counter()
    pick_src = [int(outer[i].argmax()) for i in range(run.kx)]
    run.solve([(i, pick_src[i]) for i in range(run.kx)])
    f = run.stitched(pick_src)  # each batch's potential, centred on its batch measure
    lab_x = _labels(run.src, run.x.shape[0], run.x)
    lab_y = _labels(run.tgt, run.y.shape[0], run.x)
    xd, yd, ad, bd = (t.detach() for t in (run.x, run.y, run.a, run.b))
    alpha, beta = run.alpha.detach(), run.beta.detach()
    share = (run.cost, run.rank, run.world, run.summary)
    g = None
    history = []
    for r in range(n_ctransforms):
        if r % 2 == 0:  # improve f by per-batch offsets, then g = f^c
            f, g, ok = offset_c_transform(xd, yd, f, lab_x, alpha, bd, *share)
        else:           # improve g by per-batch offsets, then f = g^c
            g, f, ok = offset_c_transform(yd, xd, g, lab_y, beta, ad, *share)
        run.outer_ok &= ok
        history.append((f * run.a).sum() + (g * run.b).sum())
    run.t_lower = time.perf_counter() - start
    return f, g, torch.stack(history).detach()


def _result(run: _Run, coupling: _Coupling, f, g, history, rule: str) -> MinibatchBounds:
    """The bounds and everything that explains them, on the inputs' dtype and device."""
    x, G = run.x, coupling.plan
    M64 = run.M.detach().cpu().double()
    upper = (G * torch.where(G > 0, M64, torch.zeros_like(M64))).sum()  # inf * 0 is nan
    return MinibatchBounds(
        lower=history.max(),
        upper=upper.to(x.dtype).to(x.device),
        n_solves=run.n_solves,
        batch_costs=run.M.detach(),
        evaluated=run.evaluated.to(x.device),
        batch_plan=G.to(x.dtype).to(x.device),
        alpha=run.alpha.detach(),
        beta=run.beta.detach(),
        source_batches=run.src,
        target_batches=run.tgt,
        f=f.detach(),
        g=g.detach(),
        lower_history=history,
        method=run.method,
        certified=coupling.certified,
        n_iter=coupling.n_rounds,
        converged=run.solves_ok and run.outer_ok,
        extra={"time_solves": run.t_solves, "time_outer": run.t_outer,
               "time_lower": run.t_lower, "budget": run.budget, "partition": rule,
               "world_size": run.world},
    )


# --------------------------------------------------------------------------------------------
# the public function
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
    pair with the largest ``Gamma_ij`` for each source batch) are stitched together, then made
    feasible by the c-transform ``g = f^c``. The additive constant of each batch's potential is
    free: the best constants solve a small ``k_x x m`` OT problem (the semi-dual of the bound in
    those constants), solved exactly. Further rounds alternate sides (best
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
    rule = check_choice(partition, "partition", PARTITIONS)
    n_ctransforms = check_positive_int(n_ctransforms, "n_ctransforms")
    cost = check_choice(cost, "cost", COSTS_WITH_MEAN_BOUND)
    generator = check_generator(generator)
    rank, world = rank_and_world(distributed)
    check_same_data(world, x=x, y=y, a=a, b=b)

    src = _shared_partition(x, a, batch_size, rule, generator, world)
    tgt = _shared_partition(y, b, batch_size, rule, generator, world)
    run = _Run(x, y, a, b, src, tgt, method=method, budget=budget, cost=cost,
               generator=generator, rank=rank, world=world, show_progress=progress)
    coupling = _STRATEGIES[method](run)
    f, g, history = _lower_bound(run, coupling.outer, n_ctransforms)
    res = _result(run, coupling, f, g, history, rule)
    if not res.converged:
        warn("minibatch_bounds: an exact solve stopped before optimality; the bounds may not "
             "hold (use smaller batches)")
    return res
