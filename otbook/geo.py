r"""Optimal transport between geographic domains (GeoSpOT, Zhang et al., 2026).

A *domain* is a region's samples: points on the Earth given as (latitude, longitude) pairs in
degrees, or any representation of them (the embeddings of a location encoder, the features of a
task model). Two domains are compared by entropic optimal transport under a ground cost:

* the great-circle distance between the coordinates (``PointCloud(x, y, "great_circle")``),
* the cosine distance between embeddings (``"cosine"``), for instance those of a
  :class:`LocationEncoder`, which needs nothing but the coordinates,
* or a normalised mixture :math:`\lambda \tilde C_a + (1 - \lambda) \tilde C_b` of such costs
  (a :class:`~otbook.SumCost`), each component divided by its largest value over all the data.

:func:`region_distances` computes the table of distances between every pair of domains (one
batched solve); :func:`greedy_selection` picks, one at a time, the source domains whose union
is closest to a target domain, as in the paper's data selection. Everything runs on the
library's Sinkhorn engine (:func:`~otbook.sinkhorn`) and its cost abstraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import (check_choice, check_generator, check_int_at_most, check_latlon,
                      check_pair_points, check_points, check_positive, check_positive_int,
                      check_simplex)
from ._runtime import rand, randn
from .costs import GROUND_COSTS, PointCloud, SumCost, pad_clouds, unit_vectors
from .sinkhorn import sinkhorn

__all__ = ["unit_vectors", "LocationEncoder", "region_distances", "greedy_selection",
           "Selection"]


class LocationEncoder:
    r"""A fixed, multi-scale random Fourier encoder of locations on the sphere.

    The embedding of a location with unit vector :math:`u \in S^2` is
    :math:`\phi(u) = \sqrt{2 / D}\, \cos(\Omega u + \beta)`, with ``D`` rows of :math:`\Omega`
    drawn as :math:`\mathcal N(0, s^2 I_3)` for each scale ``s`` of ``scales`` (in turn) and
    :math:`\beta` uniform on :math:`[0, 2\pi)`. Then :math:`\langle \phi(u), \phi(u') \rangle`
    approximates the average over the scales of the Gaussian kernels
    :math:`\exp(-s^2 \|u - u'\|^2 / 2)`, so the cosine distance between embeddings grows with
    the distance between the places and saturates beyond a few times ``1 / min(scales)``
    radians (one radian is 6,371 km). It stands in, offline, for a pretrained encoder such as
    SatCLIP or GeoCLIP, which learn what places *look like* and so can also find far-apart
    places similar; a random encoder cannot.

    Parameters
    ----------
    n_features : int
        Embedding dimension ``D``.
    scales : sequence of float
        Frequencies, in inverse radians (larger: finer detail).
    generator : torch.Generator, optional
        Random draws of the frequencies and phases.
    dtype : torch.dtype
        Dtype of the parameters (embeddings take the dtype and device of the input).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> enc = ob.LocationEncoder(256, scales=(2.0,), generator=torch.Generator().manual_seed(0))
    >>> z = enc(torch.tensor([[48.86, 2.35], [48.86, 2.35], [-33.87, 151.21]]))
    >>> z.shape, bool((z[0] == z[1]).all())
    (torch.Size([3, 256]), True)
    """

    def __init__(self, n_features: int = 128, scales=(1.0, 4.0, 16.0), *,
                 generator: torch.Generator | None = None, dtype=torch.float64):
        D = check_positive_int(n_features, "n_features")
        scales = [check_positive(s, f"scales[{k}]") for k, s in enumerate(scales)]
        if not scales:
            raise ValueError("scales must hold at least one frequency scale")
        check_generator(generator)
        like = torch.empty(0, dtype=dtype,
                           device=generator.device if generator is not None else "cpu")
        s = torch.tensor([scales[k % len(scales)] for k in range(D)], dtype=dtype)
        self.omega = randn((D, 3), like, generator) * s.to(like.device)[:, None]
        self.beta = 2 * math.pi * rand((D,), like, generator)
        self.scales, self.n_features = tuple(float(v) for v in scales), D

    def __call__(self, latlon) -> torch.Tensor:
        """Embeddings, shape ``(..., n, n_features)``, of (latitude, longitude) in degrees."""
        u = unit_vectors(latlon)
        omega, beta = self.omega.to(u), self.beta.to(u)
        return math.sqrt(2.0 / self.n_features) * torch.cos(u @ omega.T + beta)

    def __repr__(self) -> str:
        return f"LocationEncoder(n_features={self.n_features}, scales={self.scales})"


def _domains(domains, cost, name):
    """Checked point tensors of the domains (one dtype, device and dimension)."""
    if not isinstance(domains, (list, tuple)) or not domains:
        raise TypeError(f"{name} must be a non-empty list of point tensors")
    check = check_latlon if cost == "great_circle" else check_points
    first = check(domains[0], f"{name}[0]")
    out = [first]
    for k, d in enumerate(domains[1:], 1):
        x = check(d, f"{name}[{k}]", like=first)
        check_pair_points(first, x, (f"{name}[0]", f"{name}[{k}]"))
        out.append(x)
    for k, x in enumerate(out):
        if x.ndim != 2:
            raise ValueError(f"{name}[{k}] must have shape (n, d), got {tuple(x.shape)}")
    return out


def _cost_name(cost, name="cost"):
    if callable(cost):
        return cost
    return check_choice(cost, name, GROUND_COSTS)


def region_distances(domains, cost="great_circle", *, weights=None, eps: float = 0.01,
                     normalise="max", diagonal: bool = False, pairs_per_solve: int = 256,
                     max_iter: int = 10_000, tol: float = 1e-6) -> torch.Tensor:
    r"""Entropic OT distance between every pair of domains, under one cost or a mixture.

    The distance between domains :math:`i` and :math:`j`, with uniform weights on their points,
    is :math:`\langle P^\star, \tilde C \rangle` for the entropic plan :math:`P^\star` of
    :func:`~otbook.sinkhorn` (``value_linear``, what POT's ``sinkhorn2`` returns). The cost is
    :math:`\tilde C = \sum_m w_m C_m / s_m`, where each component :math:`C_m` is a ground cost
    between one *view* of the points (coordinates, embeddings, features) and :math:`s_m` its
    largest value between any two points of all the domains (``normalise="max"``), so that
    ``eps`` is relative to a cost in [0, 1] and every pair shares one scale.

    Parameters
    ----------
    domains : list of Tensor, or list of such lists
        The ``K`` domains, each an ``(n_k, d)`` tensor of points; for a mixture, one such list
        per view (the views of a domain have the same number of points, in the same order).
    cost : str, callable, or list of these
        The ground cost (see :func:`~otbook.cost_matrix`), one per view for a mixture. With
        ``"great_circle"`` the points are (latitude, longitude) in degrees.
    weights : sequence of float, optional
        Mixing weights of the views, on the simplex (default: equal).
    eps : float
        Entropic regularisation, relative to the normalised cost (the paper's 0.01).
    normalise : "max" or None
        Divide each component by its largest value over all the data (``None``: raw costs).
    diagonal : bool
        Also solve each domain against itself (a separate batch: these problems, with nearby
        points on both sides, need many more iterations). Off by default: the diagonal is 0.
    pairs_per_solve : int
        How many pairs are solved in one batch (memory).
    max_iter, tol : int, float
        Passed to :func:`~otbook.sinkhorn`.

    Returns
    -------
    Tensor, shape (K, K)
        Symmetric. The diagonal is 0, or with ``diagonal=True`` each domain's entropic distance
        to itself (small, but not 0: the entropic blur).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> paris, lyon, sydney = [[48.9, 2.4], [48.8, 2.3]], [[45.8, 4.8]], [[-33.9, 151.2]]
    >>> D = ob.region_distances([torch.tensor(p) for p in (paris, lyon, sydney)])
    >>> bool(D[0, 1] < D[0, 2]), bool(torch.allclose(D, D.T))
    (True, True)
    """
    views, costs, w = _views(domains, cost, weights)
    eps = check_positive(eps, "eps")
    per = check_positive_int(pairs_per_solve, "pairs_per_solve")
    if normalise is not None:
        check_choice(normalise, "normalise", ("max",))
    K = len(views[0])
    padded = [pad_clouds(v) for v in views]
    a = padded[0][1]
    refs = [PointCloud(torch.cat(v), torch.cat(v), c, checked=True)
            for v, c in zip(views, costs)]
    i, j = torch.triu_indices(K, K, 1, device=a.device)
    batches = [(i[s:s + per], j[s:s + per]) for s in range(0, i.numel(), per)]
    if diagonal:  # in batches of their own: these need many more iterations
        d = torch.arange(K, device=a.device)
        batches += [(d[s:s + per], d[s:s + per]) for s in range(0, K, per)]
    D = a.new_zeros(K, K)
    for ii, jj in batches:
        parts = [PointCloud(P[ii], P[jj], c, checked=True) for (P, _), c in zip(padded, costs)]
        C = SumCost(parts, w, normalise=normalise, reference=refs if normalise else None)
        res = sinkhorn(a[ii], a[jj], C, eps, max_iter=max_iter, tol=tol)
        D[ii, jj] = res.value_linear
        D[jj, ii] = res.value_linear
    return D


def _views(domains, cost, weights):
    """The views (lists of checked domains), their costs and the simplex weights."""
    mixture = isinstance(cost, (list, tuple))
    costs = [_cost_name(c, f"cost[{m}]") for m, c in enumerate(cost)] if mixture \
        else [_cost_name(cost)]
    if not costs:
        raise ValueError("cost must name at least one ground cost")
    if mixture:
        if not isinstance(domains, (list, tuple)) or len(domains) != len(costs):
            raise ValueError(f"domains must hold one list of domains per cost ({len(costs)})")
        views = [_domains(v, c, f"domains[{m}]") for m, (v, c) in enumerate(zip(domains, costs))]
    else:
        views = [_domains(domains, costs[0], "domains")]
    for m, v in enumerate(views[1:], 1):
        if [x.shape[0] for x in v] != [x.shape[0] for x in views[0]]:
            raise ValueError(f"domains[{m}] must have as many domains as domains[0], with the "
                             "same number of points in each")
        if v[0].dtype != views[0][0].dtype or v[0].device != views[0][0].device:
            raise ValueError(f"domains[{m}] differs from domains[0] in dtype or device")
    M = len(costs)
    w = [1.0 / M] * M if weights is None else check_simplex(weights, "weights", M)
    return views, costs, w


@dataclass
class Selection:
    """What :func:`greedy_selection` chose.

    Attributes
    ----------
    selected : list of int
        Indices of the chosen candidates, in the order they were added.
    distances : Tensor, shape (k,)
        Distance between the target and the union of the first ``t + 1`` chosen domains.
    trials : Tensor, shape (k, K)
        The distance each candidate would have given at each step (``inf`` where it was
        already chosen).
    """

    selected: list
    distances: torch.Tensor
    trials: torch.Tensor


def greedy_selection(target, candidates, k: int, *, cost="great_circle", eps: float = 0.01,
                     normalise="max", max_iter: int = 10_000, tol: float = 1e-6) -> Selection:
    r"""Choose ``k`` source domains, one at a time, whose union is closest to a target in OT.

    At each step the candidate :math:`c` that minimises the entropic OT distance (as in
    :func:`region_distances`) between the target and the union of the domains chosen so far
    and :math:`c` is added; the union has uniform weights on its points, so larger domains
    weigh more, as when their samples are pooled. All the candidates of a step are solved in
    one batch.

    Parameters
    ----------
    target : Tensor, shape (n, d)
        The target domain's points ((latitude, longitude) in degrees for ``"great_circle"``).
    candidates : list of Tensor, shapes (n_k, d)
        The candidate source domains.
    k : int
        How many to choose (at most ``len(candidates)``).
    cost : str or callable
        The ground cost (see :func:`~otbook.cost_matrix`).
    eps : float
        Entropic regularisation, relative to the normalised cost.
    normalise : "max" or None
        Divide the cost by its largest value between the target and all candidates, one scale
        for every step.
    max_iter, tol : int, float
        Passed to :func:`~otbook.sinkhorn`.

    Returns
    -------
    Selection

    Examples
    --------
    >>> import torch, otbook as ob
    >>> t = torch.tensor([[45.0, 5.0], [46.0, 6.0]])
    >>> far, near = torch.tensor([[-30.0, 150.0]]), torch.tensor([[44.0, 4.0]])
    >>> nearer = torch.tensor([[45.8, 5.8]])
    >>> ob.greedy_selection(t, [far, near, nearer], k=2).selected
    [2, 1]
    """
    cost = _cost_name(cost)
    target = (check_latlon if cost == "great_circle" else check_points)(target, "target")
    if target.ndim != 2:
        raise ValueError(f"target must have shape (n, d), got {tuple(target.shape)}")
    cands = _domains(candidates, cost, "candidates")
    check_pair_points(target, cands[0], ("target", "candidates[0]"))
    k = check_int_at_most(k, "k", len(cands), "the number of candidates")
    eps = check_positive(eps, "eps")
    if normalise is not None:
        check_choice(normalise, "normalise", ("max",))
    pool = torch.cat(cands)
    ref = [PointCloud(target, pool, cost, checked=True)] if normalise else None
    chosen, dists = [], []
    trials = target.new_full((k, len(cands)), float("inf"))
    for step in range(k):
        rest = [c for c in range(len(cands)) if c not in chosen]
        unions, w = pad_clouds([torch.cat([cands[c] for c in chosen + [r]]) for r in rest])
        x = target.expand(len(rest), *target.shape)
        C = SumCost([PointCloud(x, unions, cost, checked=True)], normalise=normalise,
                    reference=ref)
        a = target.new_full((len(rest), target.shape[0]), 1.0 / target.shape[0])
        value = sinkhorn(a, w, C, eps, max_iter=max_iter, tol=tol).value_linear
        trials[step, rest] = value
        best = int(value.argmin())
        chosen.append(rest[best])
        dists.append(value[best])
    return Selection(chosen, torch.stack(dists), trials)
