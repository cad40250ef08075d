r"""Distances between labelled datasets: the optimal transport dataset distance (OTDD).

A labelled dataset :math:`\mathcal D = \{(x_i, y_i)\}` is a measure on features x labels. Each
label :math:`y` is replaced by the distribution :math:`\alpha_y` of the features that carry it,
and two labelled points are compared with

.. math::

    c\big((x, y), (x', y')\big) = \lambda_x \|x - x'\|^2 + \lambda_y W_2^2(\alpha_y, \alpha_{y'}).

OTDD is the optimal transport cost between the two datasets under :math:`c` (Alvarez-Melis and
Fusi, 2020), on the *squared* scale. Labels only enter through their feature distributions, so
the two label sets may differ in size and meaning, or be disjoint.

How it is computed here:

* the label-to-label table :math:`W_2^2(\alpha_y, \alpha_{y'})` is either the Gaussian
  (Bures-Wasserstein) approximation, for all class pairs in one batched eigendecomposition, or
  exact (EMD, or a debiased Sinkhorn divergence, between the empirical class-conditionals);
* the outer cost is never gathered through an ``N x M`` integer index: the label term
  :math:`T[c_i, c'_j] = \langle T[c_i, :], e_{c'_j} \rangle` factors through one-hot codes, so it
  rides along in the matrix product that computes :math:`\|x - x'\|^2`, block by block;
* the outer problem is exact (``eps=None``, network simplex through POT) or entropic with the
  Sinkhorn engine, debiased by default so that a dataset is at distance 0 from itself; when the
  ``N x M`` matrices do not fit in ``memory_budget`` the online solver runs, with memory linear
  in ``N + M``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import (
    as_tensor,
    check_callable,
    check_choice,
    check_generator,
    check_clouds,
    check_eps,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_relaxation,
    check_same_mass,
    check_scaling,
    check_weights,
)
from ._runtime import progress as progress_bar
from ._runtime import block_rows, randperm, warn as warn_runtime
from .costs import PointCloud, SumCost, TableCost, check_magnitude, cost_matrix
from .exact import emd
from .gaussian import bures_wasserstein
from .sinkhorn.engine import BACKENDS, Options, debiased, solve
from .sinkhorn.objective import linear_value, ot_value

__all__ = ["dataset_distance", "DatasetDistance", "label_distances", "class_statistics"]


# --------------------------------------------------------------------------------------------
# inputs


def _labels(y, n: int, name: str):
    """Arbitrary label values (ints, strings, ...) -> (values, contiguous codes as a long tensor)."""
    if isinstance(y, torch.Tensor):
        if y.is_floating_point() or y.is_complex():
            raise TypeError(f"{name} must hold class labels (integers or strings), got dtype {y.dtype}")
        arr = y.detach().cpu().numpy()
    else:
        arr = np.asarray(y)
        if arr.dtype == object:
            raise TypeError(f"{name} must hold class labels (integers or strings), got objects "
                            f"such as {arr.flat[0]!r}" if arr.size else f"{name} is empty")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise TypeError(f"{name} must hold class labels; got non-integer floats")
            arr = arr.astype(np.int64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per example), got {arr.shape}")
    values, codes = np.unique(arr, return_inverse=True)
    return values, torch.as_tensor(codes.reshape(-1), dtype=torch.long)


def _features(x, name: str, feature_map, batch_size: int = 1024):
    """Apply the optional feature map (without gradients, in batches) and flatten to (n, d)."""
    if feature_map is not None:
        check_callable(feature_map, "feature_map")
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        outs = []
        with torch.no_grad():
            for s in range(0, t.shape[0], batch_size):
                out = feature_map(t[s:s + batch_size])
                out = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
                if out.ndim == 0 or out.shape[0] != min(batch_size, t.shape[0] - s):
                    raise ValueError(f"feature_map must return one row of features per example "
                                     f"(shape ({min(batch_size, t.shape[0] - s)}, ...)), got "
                                     f"shape {tuple(out.shape)}")
                outs.append(out)
        x = torch.cat(outs) if outs else t
    t = as_tensor(x, name)
    if t.ndim > 2:  # images and other structured inputs: one row per example
        t = t.reshape(t.shape[0], -1)
    return t


# --------------------------------------------------------------------------------------------
# class statistics and the label-to-label table


def class_statistics(x: torch.Tensor, codes: torch.Tensor, n_classes: int):
    """Means ``(C, d)`` and covariances ``(C, d, d)`` (normaliser ``1 / (n_c - 1)``) per class.

    Two passes per class (mean first, then the centred second moment), which avoids the
    cancellation of ``E[x x^T] - m m^T``.
    """
    d = x.shape[1]
    counts = torch.bincount(codes, minlength=n_classes)
    means = x.new_zeros(n_classes, d).index_add_(0, codes.to(x.device), x)
    means = means / counts.to(x)[:, None]
    r = x - means[codes.to(x.device)]
    covs = x.new_zeros(n_classes, d, d)
    for c in range(n_classes):
        rc = r[codes == c]
        covs[c] = rc.T @ rc / max(int(counts[c]) - 1, 1)
    return means, covs


def _gaussian_table(means_r, covs_r, means_c, covs_c):
    """Bures-Wasserstein W2^2 between every row Gaussian and every column Gaussian.

    One broadcast call of :func:`~otbook.bures_wasserstein` (one batched eigendecomposition of
    the ``(C_r, C_c, d, d)`` cross matrices), in chunks of rows of the library's block size
    (three ``d x d`` matrices per pair).
    """
    Cr, Cc, d = means_r.shape[0], means_c.shape[0], means_r.shape[1]
    step = block_rows(Cr, 3 * Cc * d * d, means_r)
    rows = []
    for s in range(0, Cr, step):
        rows.append(bures_wasserstein(means_r[s:s + step, None], covs_r[s:s + step, None],
                                      means_c[None], covs_c[None]))
    return torch.cat(rows)


def _inner_divergence(xi, xj, inner_eps, opts, pair):
    """The debiased Sinkhorn divergence between two classes; an error if it did not converge."""
    ai = xi.new_full((1, xi.shape[0]), 1.0 / xi.shape[0])
    aj = xj.new_full((1, xj.shape[0]), 1.0 / xj.shape[0])
    div = debiased(PointCloud(xi, xj, checked=True).broadcast((1,)),
                   PointCloud(xi, xi, checked=True).broadcast((1,)),
                   PointCloud(xj, xj, checked=True).broadcast((1,)), ai, aj, inner_eps, opts)
    if not bool(div.converged.all()):
        raise RuntimeError(f"the inner Sinkhorn problem for classes {pair} did not converge in "
                           f"{opts.max_iter} iterations; raise inner_eps or max_iter")
    return div.value[0]


def _exact_table(groups_r, groups_c, inner_eps, symmetric, progress, opts):
    """W2^2 between empirical class-conditionals: EMD, or the debiased Sinkhorn divergence."""
    Cr, Cc = len(groups_r), len(groups_c)
    T = groups_r[0].new_zeros(Cr, Cc)
    pairs = [(i, j) for i in range(Cr) for j in range(Cc) if not symmetric or j > i]
    for i, j in progress_bar(progress, total=len(pairs), desc="label distances", iterable=pairs):
        xi, xj = groups_r[i], groups_c[j]
        if inner_eps is None:
            ai = xi.new_full((xi.shape[0],), 1.0 / xi.shape[0])
            aj = xj.new_full((xj.shape[0],), 1.0 / xj.shape[0])
            T[i, j] = emd(ai, aj, cost_matrix(xi, xj)).value
        else:
            T[i, j] = _inner_divergence(xi, xj, inner_eps, opts, (i, j))
    if symmetric:
        T = T + T.T
    return T.clamp_min(0.0)


def label_distances(x1, y1, x2=None, y2=None, *, inner: str = "gaussian", inner_eps=None,
                    max_per_class: int | None = None, tol: float = 1e-6,
                    max_iter: int = 10_000, generator=None, progress: bool = False):
    r"""The label-to-label table :math:`W_2^2(\alpha_y, \alpha_{y'})` between two labelled datasets.

    Parameters
    ----------
    x1, y1 : features ``(n, d)`` and labels ``(n,)`` of the first dataset (any label values).
    x2, y2 : the second dataset; omitted, the table of the first against itself.
    inner : {"gaussian", "exact"}
        ``"gaussian"``: Bures-Wasserstein between the class means and covariances (normaliser
        ``1 / (n_c - 1)``; every class needs two examples). ``"exact"``: between the empirical
        class-conditionals, by EMD (``inner_eps=None``) or by the debiased Sinkhorn divergence
        with ``inner_eps``.
    max_per_class : int, optional
        Exact inner only: compare at most this many examples per class (a random subset drawn
        with ``generator``), which bounds the cost of each inner problem.
    tol, max_iter : float, int
        Stopping rule of the inner Sinkhorn problems (``inner_eps``), as in
        :func:`~otbook.sinkhorn`; an inner problem that does not converge is an error.

    Returns
    -------
    Tensor, shape (C1, C2)
        Rows follow the sorted label values of ``y1``, columns those of ``y2``.
    """
    same = x2 is None and y2 is None
    if same:
        x2, y2 = x1, y1
    elif x2 is None or y2 is None:
        raise ValueError("give both x2 and y2, or neither (the table of the first dataset)")
    x1, x2 = check_clouds(_features(x1, "x1", None), _features(x2, "x2", None), ("x1", "x2"))
    _, c1 = _labels(y1, x1.shape[0], "y1")
    _, c2 = _labels(y2, x2.shape[0], "y2")
    inner = check_choice(inner, "inner", ("gaussian", "exact"))
    opts = Options(tol=check_positive(tol, "tol"),
                   max_iter=check_positive_int(max_iter, "max_iter"))
    with torch.no_grad():
        table, _ = _tables(x1, c1, x2, c2, inner,
                           None if inner_eps is None else check_eps(inner_eps), max_per_class,
                           generator, progress, False, opts)
    return table


def _groups(x, codes, n_classes, max_per_class, generator):
    """The examples of each class, at most ``max_per_class`` of them (drawn at random)."""
    out = []
    for c in range(n_classes):
        g = x[codes.to(x.device) == c]
        if max_per_class is not None and g.shape[0] > max_per_class:
            g = g[randperm(g.shape[0], g, generator)[:max_per_class]]
        out.append(g)
    return out


def _tables(x1, c1, x2, c2, inner, inner_eps, max_per_class, generator, progress, within, opts):
    """The cross table (C1, C2) and, when ``within``, the full table over the union of classes
    (rows and columns: the classes of the first dataset, then those of the second)."""
    C1, C2 = int(c1.max()) + 1, int(c2.max()) + 1
    if inner == "gaussian":
        for codes, C, name in ((c1, C1, "y1"), (c2, C2, "y2")):
            counts = torch.bincount(codes, minlength=C)
            if bool((counts < 2).any()):
                k = int(torch.nonzero(counts < 2)[0, 0])
                raise ValueError(
                    f"{name}: a class has a single example (class index {k} in sorted order); the "
                    f"Gaussian inner distance needs a covariance, so at least 2 examples per "
                    f"class. Drop the class, or use inner='exact' (a single point is a Dirac)."
                )
        m1, S1 = class_statistics(x1, c1, C1)
        m2, S2 = class_statistics(x2, c2, C2)
        if not within:
            return _gaussian_table(m1, S1, m2, S2), None
        m, S = torch.cat([m1, m2]), torch.cat([S1, S2])
        full = _gaussian_table(m, S, m, S)
        full = 0.5 * (full + full.T)  # the two orders agree up to round-off; make it exact
        full.fill_diagonal_(0.0)
        return full[:C1, C1:], full
    g1 = _groups(x1, c1, C1, max_per_class, generator)
    g2 = _groups(x2, c2, C2, max_per_class, generator)
    if not within:
        return _exact_table(g1, g2, inner_eps, False, progress, opts), None
    full = _exact_table(g1 + g2, g1 + g2, inner_eps, True, progress, opts)
    return full[:C1, C1:], full


# --------------------------------------------------------------------------------------------
# the result


@dataclass
class DatasetDistance:
    r"""What :func:`dataset_distance` found.

    Attributes
    ----------
    value : Tensor
        OTDD on the squared scale: the debiased Sinkhorn divergence
        :math:`S_\varepsilon` (``debias=True``), the entropic cost :math:`\mathrm{OT}_\varepsilon`
        (``debias=False``), or the exact OT cost (``eps=None``). See also :attr:`distance`.
    plan : Tensor (N, M) or None
        The coupling of the two datasets: the plan of the exact problem, or of the entropic
        problem :math:`\mathrm{OT}_\varepsilon(\mathcal D_1, \mathcal D_2)` (not a debiased
        quantity). ``None`` when the online solver ran (the plan was never stored; its class
        summary and largest entries are below).
    label_distances : Tensor (C1, C2)
        :math:`W_2^2(\alpha_y, \alpha_{y'})` between the classes of the two datasets.
    class_coupling : Tensor (C1, C2)
        Mass the plan moves from each source class to each target class (sums to 1).
    top_pairs : Tensor (k, 2) and top_mass : Tensor (k,)
        Indices ``(i, j)`` of the most-coupled pairs of examples, and their mass.
    classes1, classes2 : ndarray
        The label values, in the order of the rows and columns of the tables.
    feature_cost, label_cost : Tensor
        The two parts of :math:`\langle P, c \rangle`: :math:`\lambda_x \langle P, \|x - x'\|^2
        \rangle` and :math:`\lambda_y \langle P, W_2^2 \rangle`.
    converged : bool
        Whether every solve (the cross problem and, when debiased, the two self problems) met
        its tolerance.
    n_iter : dict
        Iterations of each solve.
    marginal_error : float
        L1 marginal violation of the cross plan.
    extra : dict
        ``self_terms``, ``label_table`` (the full table over both label sets), ``eps``,
        ``backend``, ``inner``.
    """

    value: torch.Tensor
    plan: torch.Tensor | None
    label_distances: torch.Tensor
    class_coupling: torch.Tensor
    top_pairs: torch.Tensor
    top_mass: torch.Tensor
    classes1: np.ndarray
    classes2: np.ndarray
    feature_cost: torch.Tensor
    label_cost: torch.Tensor
    converged: bool
    n_iter: dict
    marginal_error: float
    f: torch.Tensor | None = None
    g: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def distance(self) -> torch.Tensor:
        """The square root of :attr:`value` (clamped at 0): OTDD on the scale of a distance."""
        return self.value.clamp_min(0.0).sqrt()

    def __repr__(self) -> str:
        return (f"DatasetDistance(value={float(self.value):.6g}, classes={len(self.classes1)}x"
                f"{len(self.classes2)}, converged={self.converged}, n_iter={self.n_iter}, "
                f"backend={self.extra.get('backend')!r})")


# --------------------------------------------------------------------------------------------
# the distance


def _summaries(blocks, problem, k, like):
    """From blocks of rows of the plan: the class coupling and the k largest entries (a running
    top-k, so the plan is never stored)."""
    onehot2 = torch.nn.functional.one_hot(problem.c2.to(like.device), problem.C2).to(like)
    c1d = problem.c1.to(like.device)
    coupling = like.new_zeros(problem.C1, problem.C2)
    top_v = like.new_empty(0)
    top_ij = torch.empty(0, 2, dtype=torch.long, device=like.device)
    for s, P in blocks:
        coupling.index_add_(0, c1d[s:s + P.shape[0]], P @ onehot2)
        v, flat = P.reshape(-1).topk(min(k, P.numel()))
        ij = torch.stack([flat // P.shape[1] + s, flat % P.shape[1]], 1)
        top_v, top_ij = torch.cat([top_v, v]), torch.cat([top_ij, ij])
        keep = top_v.topk(min(k, top_v.numel())).indices  # sorted, largest first
        top_v, top_ij = top_v[keep], top_ij[keep]
    return coupling, top_ij.cpu(), top_v


def dataset_distance(x1, y1, x2, y2, *, inner: str = "gaussian", eps=None, debias: bool = True,
                     lambda_x: float = 1.0, lambda_y: float = 1.0, a=None, b=None,
                     inner_eps=None, max_per_class: int | None = None, feature_map=None,
                     tol: float = 1e-6, max_iter: int = 10_000, eps_scaling: float | None = None,
                     backend: str = "auto", memory_budget: float | None = None, omega="auto",
                     top_k: int = 10, generator=None, progress: bool = False,
                     warn: bool = True) -> DatasetDistance:
    r"""The optimal transport dataset distance (OTDD) between two labelled datasets.

    With :math:`\alpha_y` the distribution of the features of class :math:`y`, the ground cost
    between labelled examples is

    .. math::

        c\big((x, y), (x', y')\big) = \lambda_x \|x - x'\|^2 + \lambda_y W_2^2(\alpha_y, \alpha_{y'}),

    and OTDD is the optimal transport cost between the datasets (weights ``a``, ``b``, uniform by
    default) under :math:`c`, **on the squared scale** (``result.distance`` is its square root).

    Parameters
    ----------
    x1, y1 : features ``(N, ...)`` (flattened to ``(N, d)``) and labels ``(N,)`` of the first
        dataset. Labels may be any values (integers, strings); only their grouping matters.
    x2, y2 : the second dataset, same feature dimension. Its label set may differ in size and
        meaning, or be disjoint from the first.
    inner : {"gaussian", "exact"}
        Label-to-label :math:`W_2^2`: Bures-Wasserstein between the class Gaussians (means and
        covariances, normaliser ``1 / (n_c - 1)``; a class with one example is an error), or
        between the empirical class-conditionals (EMD; with ``inner_eps`` the debiased Sinkhorn
        divergence of that strength; ``max_per_class`` subsamples large classes).
    eps : float or None
        ``None``: the outer problem is solved exactly (network simplex; needs the ``N x M`` cost).
        A float: entropic, absolute (in cost units; see :func:`~otbook.eps_relative`), by the
        Sinkhorn engine.
    debias : bool
        Entropic only: return the Sinkhorn divergence :math:`S_\varepsilon = \mathrm{OT}_\varepsilon
        (\mathcal D_1, \mathcal D_2) - \tfrac12 \mathrm{OT}_\varepsilon(\mathcal D_1, \mathcal D_1) -
        \tfrac12 \mathrm{OT}_\varepsilon(\mathcal D_2, \mathcal D_2)`, which is 0 for identical
        datasets (the label table then covers both label sets, within and across).
    lambda_x, lambda_y : float
        Weights of the feature and label terms (>= 0, not both 0). ``lambda_y=0`` is plain
        :math:`W_2^2` between the feature clouds.
    feature_map : callable, optional
        Applied (without gradients, in batches of 1024) to the inputs before anything else, e.g.
        a frozen network.
    tol, max_iter, eps_scaling
        Stopping rule of every Sinkhorn solve, as in :func:`~otbook.sinkhorn`.
    omega : "auto" or float in (0, 2)
        Over-relaxation of the outer (cross) Sinkhorn problem, as in :func:`~otbook.sinkhorn`.
    backend : {"auto", "dense", "online"}
        ``"dense"`` stores the ``N x M`` cost (and the plan); ``"online"`` recomputes it block by
        block with memory linear in ``N + M`` (entropic only); ``"auto"`` goes online when the
        dense matrices would exceed ``memory_budget`` bytes (``None``, the default: half of the
        free memory of a CUDA device, 2 GB on the CPU).
    top_k : int
        How many of the most-coupled pairs of examples to report.
    progress : bool
        Progress bar over the class pairs of the exact inner problem.

    Returns
    -------
    DatasetDistance
        ``value``, ``plan``, ``label_distances``, ``class_coupling``, ``top_pairs``, the
        convergence report, and ``distance`` (the square root). ``value`` is differentiable in
        the features ``x1``, ``x2`` and the weights (envelope gradients through both terms of
        the cost, the label table and its class statistics included; not through
        ``feature_map``, which runs without gradients).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    >>> y = torch.arange(60) % 3
    >>> r = ob.dataset_distance(x, y, x, y, eps=0.1)
    >>> abs(float(r.value)) < 1e-6, r.converged
    (True, True)
    """
    x1, x2 = check_clouds(_features(x1, "x1", feature_map), _features(x2, "x2", feature_map),
                          ("x1", "x2"))
    check_magnitude(x1, x2, ("x1", "x2"))
    classes1, c1 = _labels(y1, x1.shape[0], "y1")
    classes2, c2 = _labels(y2, x2.shape[0], "y2")
    inner = check_choice(inner, "inner", ("gaussian", "exact"))
    if eps is not None:
        eps = check_eps(eps)
    if inner_eps is not None:
        if inner != "exact":
            raise ValueError("inner_eps is for inner='exact' (the Gaussian inner is a closed form)")
        inner_eps = check_eps(inner_eps)
    if max_per_class is not None:
        max_per_class = check_positive_int(max_per_class, "max_per_class")
    lambda_x = check_nonnegative(lambda_x, "lambda_x")
    lambda_y = check_nonnegative(lambda_y, "lambda_y")
    if lambda_x == 0 and lambda_y == 0:
        raise ValueError("lambda_x and lambda_y are both 0: the cost would be identically 0")
    top_k = check_positive_int(top_k, "top_k")
    a = check_weights(a, x1.shape[0], "a", like=x1)
    b = check_weights(b, x2.shape[0], "b", like=x1)
    check_same_mass(a, b)
    a, b = a / a.sum(), b / b.sum()
    opts = Options(tol=check_positive(tol, "tol"),
                   max_iter=check_positive_int(max_iter, "max_iter"),
                   omega=check_relaxation(omega),
                   eps_scaling=check_scaling(eps_scaling),
                   backend=check_choice(backend, "backend", BACKENDS),
                   memory_budget=None if memory_budget is None
                   else check_positive(memory_budget, "memory_budget"))
    debias = bool(debias) and eps is not None
    if opts.backend == "online" and eps is None:
        raise ValueError("the exact outer problem (eps=None) needs the dense N x M cost; "
                         "give eps for the online solver")
    generator = check_generator(generator)
    problem = _Problem(x1, c1, len(classes1), x2, c2, len(classes2), lambda_x, lambda_y)
    # the label-to-label table (across the datasets, and within each when debiasing) and the
    # value keep their autograd history when the features require gradients; the solves do not
    cross, full = (_tables(x1, c1, x2, c2, inner, inner_eps, max_per_class, generator,
                           progress, debias, opts)
                   if lambda_y > 0 else (x1.new_zeros(len(classes1), len(classes2)), None))
    if eps is None:
        out = _exact_outer(problem, cross, a, b)
    else:
        out = _entropic_outer(problem, cross, full, a, b, eps, debias, opts)
    with torch.no_grad():
        coupling, top_pairs, top_mass = _summaries(out["blocks"](), problem, top_k, x1)
        label_cost = (coupling * lambda_y * cross).sum()
        feature_cost = out["feature_cost"]()
    cross = cross.detach()
    if warn and not out["converged"]:
        warn_runtime(f"dataset_distance: a Sinkhorn solve did not converge (iterations "
                     f"{out['n_iter']}, tol {tol:g}); raise max_iter or eps, or set eps_scaling")
    return DatasetDistance(
        value=out["value"], plan=out["plan"], label_distances=cross, class_coupling=coupling,
        top_pairs=top_pairs, top_mass=top_mass, classes1=classes1, classes2=classes2,
        feature_cost=feature_cost, label_cost=label_cost, converged=out["converged"],
        n_iter=out["n_iter"], marginal_error=out["marginal_error"], f=out["f"], g=out["g"],
        extra={"self_terms": out["self_terms"], "label_table": full, "eps": eps,
               "backend": out["backend"], "inner": inner, "debias": debias,
               "lambda_x": lambda_x, "lambda_y": lambda_y},
    )


@dataclass
class _Problem:
    """The two labelled datasets (label codes ``c1``, ``c2`` over ``C1``, ``C2`` classes) and the
    weights of the two terms of the ground cost."""

    x1: torch.Tensor
    c1: torch.Tensor
    C1: int
    x2: torch.Tensor
    c2: torch.Tensor
    C2: int
    lambda_x: float
    lambda_y: float

    def cost(self, xa, ca, xb, cb, table):
        """``lambda_x |x - x'|^2 + lambda_y T[c, c']`` as one flat cost (the label term joins the
        matrix product of the feature term through one-hot codes)."""
        parts = [PointCloud(xa, xb, checked=True)]
        weights = [self.lambda_x]
        if self.lambda_y > 0:
            dev = xa.device
            parts.append(TableCost(table, ca.to(dev), cb.to(dev), checked=True))
            weights.append(self.lambda_y)
        return SumCost(parts, weights).broadcast(())

    def features(self):
        return PointCloud(self.x1, self.x2, checked=True).broadcast(())


def _exact_outer(problem, cross, a, b):
    """The exact outer problem (network simplex on the dense N x M cost)."""
    C = problem.cost(problem.x1, problem.c1, problem.x2, problem.c2, cross).matrix()[0]
    res = emd(a, b, C)
    del C
    plan = res.plan
    return {"value": res.value_linear, "plan": plan, "f": res.f, "g": res.g,
            "blocks": lambda: [(0, plan)], "converged": bool(res.converged),
            "n_iter": {"cross": int(res.n_iter)}, "marginal_error": float(res.marginal_error),
            "self_terms": {}, "backend": "dense",
            "feature_cost": lambda: problem.lambda_x * (plan * cost_matrix(problem.x1,
                                                                          problem.x2)).sum()}


def _entropic_outer(problem, cross, full, a, b, eps, debias, opts):
    """The entropic outer problem on the engine: ``OT_eps`` or, debiased, the divergence (the
    label table over both label sets, the first dataset's classes first)."""
    p = problem
    a1, b1 = a[None], b[None]
    if debias:
        off = p.c2 + p.C1
        table = full if full is not None else p.x1.new_zeros(p.C1 + p.C2, p.C1 + p.C2)
        div = debiased(p.cost(p.x1, p.c1, p.x2, off, table), p.cost(p.x1, p.c1, p.x1, p.c1, table),
                       p.cost(p.x2, off, p.x2, off, table), a1, b1, eps, opts)
        sol, value = div.cross, div.value[0]
        with torch.no_grad():
            self_terms = {"self1": ot_value(div.self_x, p.cost(p.x1, p.c1, p.x1, p.c1, table),
                                            a1, a1)[0],
                          "self2": ot_value(div.self_y, p.cost(p.x2, off, p.x2, off, table),
                                            b1, b1)[0]}
        n_iter = {"self1": div.self_x.n_iter, "self2": div.self_y.n_iter}
        converged = bool(div.converged.all())
    else:
        sol = solve(p.cost(p.x1, p.c1, p.x2, p.c2, cross), a1, b1, eps, opts)
        value, self_terms, n_iter = ot_value(sol, p.cost(p.x1, p.c1, p.x2, p.c2, cross), a1,
                                             b1)[0], {}, {}
        converged = bool(sol.done.all())
    n_iter["cross"] = sol.n_iter
    plan = None if sol.plan is None else sol.plan[0]
    return {"value": value, "plan": plan, "f": sol.f[0], "g": sol.g[0],
            "blocks": lambda: ((s, P[0]) for s, P in sol.plan_blocks()),
            "converged": converged, "n_iter": n_iter,
            "marginal_error": float(sol.marginal_error[0]), "self_terms": self_terms,
            "backend": sol.backend,
            "feature_cost": lambda: p.lambda_x * linear_value(sol, p.features())[0]}
