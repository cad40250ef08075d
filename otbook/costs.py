r"""Ground costs, and the cost abstraction every OT solver of the library runs on.

A *cost* is a batch of matrices :math:`C[\dots, i, j] = c(x_i, y_j)` between ``n`` sources and
``m`` targets. Solvers never need to know how it is stored: a :class:`Cost` can hand over its
dense matrix (:meth:`Cost.matrix`) or stream it, a block of rows at a time (:meth:`Cost.block`),
so that problems too large for an ``n x m`` matrix are solved with memory linear in ``n + m``
(the *online* backend of the Sinkhorn engine). The kinds:

* :class:`CostMatrix`: a dense matrix you already have.
* :class:`PointCloud`: two point clouds and a named ground cost: ``"sqeuclidean"``
  (:math:`\|x - y\|^2`, no factor 1/2), ``"euclidean"``, ``"cosine"`` (:math:`1 - \cos`),
  ``"great_circle"`` (angle on the unit sphere between (latitude, longitude) points in degrees),
  ``"poincare"`` (hyperbolic distance in the Poincaré ball), or a callable on blocks.
* :class:`TableCost`: a small table gathered by integer codes, :math:`T[c_i, c'_j]` (the label
  term of the dataset distance).
* :class:`SumCost`: a weighted sum of costs, each optionally normalised by its mean or maximum
  (over itself, or over a reference cost), :math:`\sum_k w_k C_k / s_k`.

Costs whose entries are an inner product plus row and column terms,
:math:`C_{ij} = r_i + s_j + \langle p_i, q_j \rangle`, say so through :meth:`Cost.factors`
(squared Euclidean, cosine, tables, and weighted sums of these): the engine then computes a
whole block of :math:`-C / \varepsilon` plus potentials in one matrix product.

Squared distances are formed with the points *centred* (the costs are translation invariant),
which keeps the expansion :math:`\|x\|^2 + \|y\|^2 - 2\langle x, y\rangle` accurate in float32
for data far from the origin.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._runtime import block_rows
from ._checks import (as_tensor, broadcast_shapes, check_choice, check_codes, check_cost,
                      check_finite, check_labels, check_latlon, check_nonnegative,
                      check_pair_points, check_points, check_weights)

__all__ = [
    "cost_matrix",
    "pairwise",
    "check_ground",
    "check_magnitude",
    "GROUND_COSTS",
    "unit_vectors",
    "Cost",
    "CostMatrix",
    "PointCloud",
    "TableCost",
    "SumCost",
    "as_cost",
    "pad_clouds",
]


# --------------------------------------------------------------------------------------------
# ground costs between two (checked) point tensors


def _centred(x, y):
    # the costs below are translation invariant: centring keeps |x|^2 + |y|^2 - 2 <x, y>
    # accurate in float32 far from the origin (coordinates in metres, pixels, ...)
    c = 0.5 * (x.mean(-2, keepdim=True) + y.mean(-2, keepdim=True))
    return x - c, y - c


def _sqeuclidean(x, y):
    x, y = _centred(x, y)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True).transpose(-1, -2)
    return (x2 + y2 - 2.0 * x @ y.transpose(-1, -2)).clamp_min(0.0)


#: Up to this dimension, Euclidean distances are computed from exact differences: the expansion
#: loses half the digits of the distance between nearby points (sqrt(1e-16) in float64), and
#: the difference kernel is as fast as a matrix product there.
EXACT_DIFFERENCES_DIM = 16


def _euclidean(x, y):
    # torch.cdist has a gradient of 0 (not NaN) where two points coincide
    x, y = _centred(x, y)
    mode = ("donot_use_mm_for_euclid_dist" if x.shape[-1] <= EXACT_DIFFERENCES_DIM
            else "use_mm_for_euclid_dist_if_necessary")
    return torch.cdist(x, y, p=2.0, compute_mode=mode)


def _unit(x, name):
    n = x.norm(dim=-1, keepdim=True)
    if bool((n == 0).any()):
        raise ValueError(f"the cosine cost is undefined for a zero vector in {name}")
    return x / n


def _cosine(x, y):
    return 1.0 - _unit(x, "x") @ _unit(y, "y").transpose(-1, -2)


def _sphere(latlon):
    lat, lon = torch.deg2rad(latlon[..., 0]), torch.deg2rad(latlon[..., 1])
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)


def unit_vectors(latlon) -> torch.Tensor:
    """Points on the unit sphere, ``(cos lat cos lon, cos lat sin lon, sin lat)``.

    Parameters
    ----------
    latlon : Tensor or array, shape (..., n, 2)
        (latitude, longitude) pairs in degrees; latitudes in [-90, 90].

    Returns
    -------
    Tensor, shape (..., n, 3)
        On the input's device and dtype.

    Examples
    --------
    >>> import torch
    >>> unit_vectors(torch.tensor([[0.0, 90.0], [90.0, 0.0]])).round(decimals=6).abs()
    tensor([[0., 1., 0.],
            [0., 0., 1.]])
    """
    return _sphere(check_latlon(latlon, "latlon"))


def _great_circle(x, y):
    # the angle from the chord |u - v| (exact differences, not the expansion: the chord of two
    # nearby points would lose half its digits), 2 asin(chord / 2); a gradient of 0 where two
    # points coincide, as for the Euclidean cost
    chord = torch.cdist(_sphere(x), _sphere(y), compute_mode="donot_use_mm_for_euclid_dist")
    return 2.0 * torch.asin((0.5 * chord).clamp_max(1.0))


def _poincare(x, y):
    # d = arccosh(1 + 2 |x - y|^2 / ((1 - |x|^2)(1 - |y|^2))) = 2 asinh(|x - y| / sqrt(...)),
    # the second form has a finite gradient where two points coincide
    diff = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    sx = (1.0 - (x * x).sum(-1)).clamp_min(torch.finfo(x.dtype).tiny)
    sy = (1.0 - (y * y).sum(-1)).clamp_min(torch.finfo(x.dtype).tiny)
    return 2.0 * torch.asinh(diff / (sx[..., :, None] * sy[..., None, :]).sqrt())


#: The named ground costs: ``name -> c(x, y)`` on point tensors ``(..., n, d)``, ``(..., m, d)``.
GROUND_COSTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sqeuclidean": _sqeuclidean,
    "euclidean": _euclidean,
    "cosine": _cosine,
    "great_circle": _great_circle,
    "poincare": _poincare,
}


def check_magnitude(x, y, names=("x", "y")):
    """Points whose squared distances fit in their dtype: a ``ValueError`` otherwise (squared
    distances would overflow to inf, and every cost or kernel built on them would be wrong)."""
    limit = 0.25 * torch.finfo(x.dtype).max ** 0.5 / max(1, x.shape[-1]) ** 0.5
    for t, name in zip((x, y), names):
        if t.numel() and float(t.detach().abs().max()) > limit:
            raise ValueError(f"{name} has coordinates up to {float(t.detach().abs().max()):.3g}: "
                             f"their squared distances overflow {t.dtype}; rescale the points")


def check_ground(cost, x, y):
    """The ground cost function for ``cost`` (a name or a callable), after checking that the
    points ``x``, ``y`` suit it (latitudes in range, points inside the ball, no zero vectors)."""
    if callable(cost):
        return cost
    if not isinstance(cost, str):
        raise TypeError(f"cost must be a string or a callable, got {type(cost).__name__}")
    check_choice(cost, "cost", GROUND_COSTS)
    if cost in ("sqeuclidean", "euclidean"):
        check_magnitude(x, y)
    if cost == "great_circle":
        for t, name in ((x, "x"), (y, "y")):
            if t.shape[-1] != 2:
                raise ValueError(f"the great-circle cost takes (latitude, longitude) pairs in "
                                 f"degrees: {name} must have shape (n, 2), got {tuple(t.shape)}")
            if bool((t[..., 0].abs() > 90).any()):
                raise ValueError(f"{name} has latitudes outside [-90, 90] degrees")
    if cost == "poincare":
        for t, name in ((x, "x"), (y, "y")):
            if bool(((t * t).sum(-1) >= 1).any()):
                raise ValueError(f"the Poincaré cost needs points inside the unit ball: {name} "
                                 "has a point of norm >= 1")
    if cost == "cosine":
        for t, name in ((x, "x"), (y, "y")):
            if bool((t.norm(dim=-1) == 0).any()):
                raise ValueError(f"the cosine cost is undefined for a zero vector in {name}")
    return GROUND_COSTS[cost]


def pairwise(x: torch.Tensor, y: torch.Tensor, cost="sqeuclidean") -> torch.Tensor:
    """The matrix ``c(x_i, y_j)`` for checked point tensors (no input checks: library code)."""
    fn = GROUND_COSTS[cost] if isinstance(cost, str) else cost
    C = fn(x, y)
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"the cost callable must return a torch.Tensor, got {type(C).__name__}")
    want = (*x.shape[:-2], x.shape[-2], y.shape[-2])
    if C.ndim < 2 or C.shape[-2:] != want[-2:]:
        raise ValueError(f"the cost callable must return a matrix of shape (..., {x.shape[-2]}, "
                         f"{y.shape[-2]}), got shape {tuple(C.shape)}")
    return C


def cost_matrix(x, y, cost: str | Callable = "sqeuclidean") -> torch.Tensor:
    r"""Matrix of pairwise costs ``C[..., i, j] = c(x[..., i, :], y[..., j, :])``.

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d) or (n,)
        Source points (a 1-D input is read as ``n`` points on the line).
    y : Tensor or array, shape (..., m, d) or (m,)
        Target points; leading dimensions broadcast against those of ``x``.
    cost : str or callable
        ``"sqeuclidean"`` is :math:`\|x - y\|^2` (no factor 1/2), ``"euclidean"`` is
        :math:`\|x - y\|`, ``"cosine"`` is :math:`1 - \cos(x, y)`, ``"great_circle"`` the angle
        (radians) between two (latitude, longitude) points in degrees on the unit sphere (multiply
        by 6371 for kilometres on the Earth), ``"poincare"`` the hyperbolic distance between points
        of the open unit ball. A callable takes the two point tensors and returns the
        ``(..., n, m)`` matrix.

    Returns
    -------
    Tensor, shape (..., n, m)
        On the inputs' device and dtype; differentiable in ``x`` and ``y``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.cost_matrix(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]]))
    tensor([[9.],
            [4.]])
    """
    C = PointCloud(x, y, cost).matrix()
    if C.numel() and not bool(torch.isfinite(C).all()):
        raise ValueError(f"the cost matrix has non-finite entries: the points are too far apart "
                         f"for the {cost if isinstance(cost, str) else 'given'} cost in "
                         f"{C.dtype} (or the callable returned inf/NaN); rescale the points")
    return C


# --------------------------------------------------------------------------------------------
# the cost abstraction


def _flat(t: torch.Tensor, batch: torch.Size, tail: int) -> torch.Tensor:
    """``t`` expanded to ``(*batch, *t.shape[-tail:])`` and flattened to one batch dimension."""
    shape = t.shape[t.ndim - tail:]
    return t.expand(*batch, *shape).reshape(-1, *shape)


class Cost:
    r"""A batch of ``n x m`` cost matrices, which can be given dense or streamed by blocks.

    Subclasses set ``batch_shape``, ``n``, ``m``, ``dtype``, ``device``
    and implement :meth:`broadcast`, :meth:`block`, :meth:`tensors` and :meth:`detach`; costs
    with the structure :math:`C_{ij} = r_i + s_j + \langle p_i, q_j\rangle` also implement
    :meth:`factors`. Everything else derives from these.

    The engine works on a *flat* cost, ``cost.broadcast(batch)``: its tensors carry one batch
    dimension ``B`` (the product of ``batch``), and :meth:`block` and :meth:`factors` are only
    called on flat costs.
    """

    batch_shape: torch.Size
    n: int
    m: int
    dtype: torch.dtype
    device: torch.device

    # -- what a subclass provides ---------------------------------------------------------------

    def broadcast(self, batch) -> "Cost":
        """The flat cost over the batch shape ``batch`` (which the cost's own batch shape must
        broadcast to): its tensors have one batch dimension, of size ``prod(batch)``."""
        raise NotImplementedError

    def block(self, idx: slice, transpose: bool = False) -> torch.Tensor:
        """Rows ``idx`` of ``C`` (shape ``(B, k, m)``), or of ``C^T`` (``(B, k, n)``), of a flat
        cost; differentiable in :meth:`tensors`."""
        raise NotImplementedError

    def factors(self):
        """For a flat cost, ``(p, q, r, s)`` with ``C_ij = r_i + s_j + <p_i, q_j>`` (shapes
        ``(B, n, k)``, ``(B, m, k)``, ``(B, n)``, ``(B, m)``), or ``None`` when there is none."""
        return None

    def tensors(self) -> tuple:
        """The tensors the cost is computed from (what its gradient flows to)."""
        raise NotImplementedError

    def detach(self) -> "Cost":
        """The same cost without autograd history."""
        return self.replace([t.detach() for t in self.tensors()])

    def replace(self, tensors) -> "Cost":
        """The same cost computed from other ``tensors`` (in the order of :meth:`tensors`)."""
        raise NotImplementedError

    # -- derived ------------------------------------------------------------------------------

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.batch_shape, self.n, self.m))

    @property
    def requires_grad(self) -> bool:
        return any(t.requires_grad for t in self.tensors())

    def matrix(self) -> torch.Tensor:
        """The dense matrix, shape ``(*batch_shape, n, m)`` (differentiable)."""
        return self.broadcast(self.batch_shape).block(slice(0, self.n)).reshape(self.shape)

    def blocks(self, rows: int, transpose: bool = False):
        """Yield ``(start, block)`` over the rows of ``C`` (or ``C^T``) of a flat cost, ``rows``
        at a time."""
        total = self.m if transpose else self.n
        for s in range(0, total, rows):
            yield s, self.block(slice(s, min(s + rows, total)), transpose)

    def reduce(self, stat: str) -> torch.Tensor:
        """``"mean"`` or ``"max"`` of the entries of each matrix of the batch (flattened to
        ``(B,)``), streamed block by block, without gradient."""
        flat = self.detach().broadcast(self.batch_shape)
        acc = None
        with torch.no_grad():
            for _, Cb in flat.blocks(block_rows(self.n, self.m, flat.tensors()[0],
                                                batch=max(1, flat.batch_shape.numel()))):
                part = Cb.sum((-2, -1)) if stat == "mean" else Cb.amax((-2, -1))
                acc = part if acc is None else (acc + part if stat == "mean"
                                                else torch.maximum(acc, part))
        return acc / (self.n * self.m) if stat == "mean" else acc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype})"


class CostMatrix(Cost):
    """A dense cost matrix ``C`` of shape ``(..., n, m)`` (finite, not empty).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.CostMatrix(torch.zeros(3, 2, 4)).shape
    torch.Size([3, 2, 4])
    """

    def __init__(self, C, *, checked: bool = False):
        if not checked:
            C = check_cost(C, "C")
        self.C = C
        self.batch_shape = C.shape[:-2]
        self.n, self.m = C.shape[-2:]
        self.dtype, self.device = C.dtype, C.device

    def broadcast(self, batch):
        return CostMatrix(_flat(self.C, torch.Size(batch), 2), checked=True)

    def block(self, idx, transpose=False):
        return self.C[:, :, idx].transpose(-1, -2) if transpose else self.C[:, idx]

    def matrix(self):
        return self.C

    def tensors(self):
        return (self.C,)

    def replace(self, tensors):
        return CostMatrix(tensors[0], checked=True)


class PointCloud(Cost):
    r"""The cost between two point clouds under a ground cost.

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d)
        Source points.
    y : Tensor or array, shape (..., m, d), optional
        Target points (default: ``x``, the cloud against itself).
    cost : str or callable
        A name of ``otbook.costs.GROUND_COSTS`` (see :func:`cost_matrix`), or a callable
        ``c(xb, y)`` that returns the ``(..., k, m)`` costs between a block of sources and all
        targets.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    >>> ob.PointCloud(x, x + 1.0).matrix()
    tensor([[2., 5.],
            [1., 2.]])
    """

    def __init__(self, x, y=None, cost: str | Callable = "sqeuclidean", *, checked: bool = False):
        if not checked:
            x, y = check_pair_points(x, x if y is None else y)
            self.fn = check_ground(cost, x, y)
        else:
            self.fn = GROUND_COSTS[cost] if isinstance(cost, str) else cost
        self.name = cost if isinstance(cost, str) else None
        self.x, self.y = x, y
        self.batch_shape = broadcast_shapes(x.shape[:-2], y.shape[:-2],
                                            what="batch dimensions of x and y")
        self.n, self.m = x.shape[-2], y.shape[-2]
        self.dtype, self.device = x.dtype, x.device

    def broadcast(self, batch):
        batch = torch.Size(batch)
        x, y = _flat(self.x, batch, 2), _flat(self.y, batch, 2)
        return PointCloud(x, y, self.fn if self.name is None else self.name, checked=True)

    def _points(self):
        if self.name in ("sqeuclidean", "euclidean"):
            return _centred(self.x, self.y)
        return self.x, self.y

    def block(self, idx, transpose=False):
        x, y = self._points()
        if transpose:
            return pairwise(x, y[:, idx], self.fn).transpose(-1, -2)
        return pairwise(x[:, idx], y, self.fn)

    def matrix(self):
        x, y = self._points()
        return pairwise(x, y, self.fn).expand(self.shape)

    def factors(self):
        if self.name == "sqeuclidean":
            x, y = self._points()
            return -2.0 * x, y, (x * x).sum(-1), (y * y).sum(-1)
        if self.name == "cosine":
            xu, yu = _unit(self.x, "x"), _unit(self.y, "y")
            return -xu, yu, xu.new_ones(xu.shape[:-1]), yu.new_zeros(yu.shape[:-1])
        return None

    def tensors(self):
        return (self.x, self.y)

    def replace(self, tensors):
        x, y = tensors
        return PointCloud(x, y, self.fn if self.name is None else self.name, checked=True)


class TableCost(Cost):
    r"""A table gathered by integer codes: :math:`C_{ij} = T[c_i, c'_j]`.

    As an inner product with one-hot codes, :math:`T[c_i, c'_j] = \langle T[c_i, :],
    e_{c'_j}\rangle`, the table joins the matrix product of a :class:`SumCost` (when ``K2`` is
    at most ``MAX_FACTOR``, 256); larger tables are gathered block by block.

    Parameters
    ----------
    table : Tensor or array, shape (K1, K2)
        The table (finite).
    codes_x : Tensor or array of int, shape (n,)
        Row code of each source, in ``0 .. K1 - 1``.
    codes_y : Tensor or array of int, shape (m,)
        Column code of each target, in ``0 .. K2 - 1``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> T = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> ob.TableCost(T, [0, 1, 1], [1, 0]).matrix()
    tensor([[1., 0.],
            [0., 1.],
            [0., 1.]])
    """

    MAX_FACTOR = 256

    def __init__(self, table, codes_x, codes_y, *, checked: bool = False, B: int | None = None):
        if not checked:
            table = as_tensor(table, "table")
            if table.ndim != 2:
                raise ValueError(f"table must have shape (K1, K2), got {tuple(table.shape)}")
            check_finite(table, "table")
            cx, cy = check_codes(codes_x, "codes_x"), check_codes(codes_y, "codes_y")
            codes_x, _ = check_labels(cx, cx.shape[0], "codes_x", table.shape[0])
            codes_y, _ = check_labels(cy, cy.shape[0], "codes_y", table.shape[1])
            codes_x, codes_y = codes_x.to(table.device), codes_y.to(table.device)
        self.table, self.cx, self.cy = table, codes_x, codes_y
        self.batch_shape = torch.Size(()) if B is None else torch.Size((B,))
        self.n, self.m = codes_x.shape[0], codes_y.shape[0]
        self.dtype, self.device = table.dtype, table.device

    def broadcast(self, batch):
        return TableCost(self.table, self.cx, self.cy, checked=True,
                         B=int(torch.Size(batch).numel()))

    def _batched(self, t):
        return t[None].expand(self.batch_shape.numel() if self.batch_shape else 1, *t.shape)

    def block(self, idx, transpose=False):
        if transpose:
            return self._batched(self.table[self.cx][:, self.cy[idx]].T)
        return self._batched(self.table[self.cx[idx]][:, self.cy])

    def factors(self):
        if self.table.shape[1] > self.MAX_FACTOR:
            return None
        onehot = torch.nn.functional.one_hot(self.cy, self.table.shape[1]).to(self.table)
        p = self.table[self.cx]
        return (self._batched(p), self._batched(onehot), self._batched(p.new_zeros(self.n)),
                self._batched(p.new_zeros(self.m)))

    def tensors(self):
        return (self.table,)

    def replace(self, tensors):
        B = None if not self.batch_shape else self.batch_shape.numel()
        return TableCost(tensors[0], self.cx, self.cy, checked=True, B=B)


class SumCost(Cost):
    r"""A weighted sum of costs, each optionally normalised: :math:`\sum_k w_k C_k / s_k`.

    Parameters
    ----------
    components : list of Cost
        Costs of the same shape (dtype and device).
    weights : list of float, optional
        Non-negative weights, not all zero (default: all 1).
    normalise : None, "mean", "max", or a list of these (one per component)
        Divide each component by its mean or largest entry, so that components in different
        units (kilometres, label distances, decision regrets) weigh what their weight says.
    reference : list of Cost (or None entries), optional
        Compute a component's normalising statistic over this cost instead of itself (e.g.
        over all the data, so that several problems share one scale).

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0], [2.0]])
    >>> c = ob.SumCost([ob.PointCloud(x, x), ob.PointCloud(x, x, "euclidean")],
    ...                weights=[0.5, 0.5], normalise="max")
    >>> c.matrix()
    tensor([[0., 1.],
            [1., 0.]])
    """

    def __init__(self, components, weights=None, *, normalise=None, reference=None,
                 scales=None):
        components = list(components)
        if not components or not all(isinstance(c, Cost) for c in components):
            raise TypeError("components must be a non-empty list of Cost objects")
        first = components[0]
        for k, c in enumerate(components):
            if ((c.n, c.m) != (first.n, first.m) or c.dtype != first.dtype
                    or c.device != first.device):
                raise ValueError(f"components[{k}] has shape {tuple(c.shape)}, {c.dtype} on "
                                 f"{c.device}; components[0] has {tuple(first.shape)}, "
                                 f"{first.dtype} on {first.device}")
        K = len(components)
        weights = [1.0] * K if weights is None else list(weights)
        if len(weights) != K:
            raise ValueError(f"weights has {len(weights)} entries for {K} components")
        weights = [check_nonnegative(w, f"weights[{k}]") for k, w in enumerate(weights)]
        if not any(w > 0 for w in weights):
            raise ValueError("weights are all 0: the cost would be identically 0")
        self.components, self.weights = components, weights
        self.batch_shape = broadcast_shapes(*(c.batch_shape for c in components))
        self.n, self.m, self.dtype, self.device = first.n, first.m, first.dtype, first.device
        self.scales = scales if scales is not None else _scales(components, normalise, reference)

    def broadcast(self, batch):
        parts = [c.broadcast(batch) for c in self.components]
        return SumCost(parts, self.weights, scales=self.scales)

    def _coefficients(self):
        return [w / s for w, s in zip(self.weights, self.scales)]

    def block(self, idx, transpose=False):
        out = None
        for w, c in zip(self._coefficients(), self.components):
            if w == 0:
                continue
            part = w * c.block(idx, transpose)
            out = part if out is None else out + part
        return out

    def factors(self):
        parts = [(w, c.factors()) for w, c in zip(self._coefficients(), self.components) if w]
        if any(f is None for _, f in parts):
            return None
        B = max(f[0].shape[0] for _, f in parts)
        p = torch.cat([(w * f[0]).expand(B, -1, -1) for w, f in parts], -1)
        q = torch.cat([f[1].expand(B, -1, -1) for _, f in parts], -1)
        r = sum(w * f[2] for w, f in parts).expand(B, -1)
        s = sum(w * f[3] for w, f in parts).expand(B, -1)
        return p, q, r, s

    def tensors(self):
        return tuple(t for c in self.components for t in c.tensors())

    def replace(self, tensors):
        parts, k = [], 0
        for c in self.components:
            n = len(c.tensors())
            parts.append(c.replace(tensors[k:k + n]))
            k += n
        return SumCost(parts, self.weights, scales=self.scales)


def _scales(components, normalise, reference):
    """The normalising statistic of each component (1 where there is none)."""
    K = len(components)
    modes = normalise if isinstance(normalise, (list, tuple)) else [normalise] * K
    refs = reference if reference is not None else [None] * K
    if len(modes) != K or len(refs) != K:
        raise ValueError(f"normalise and reference need one entry per component ({K})")
    scales = []
    for k, (mode, c, ref) in enumerate(zip(modes, components, refs)):
        if mode is None:
            scales.append(1.0)
            continue
        check_choice(mode, f"normalise[{k}]", ("mean", "max"))
        src = ref if ref is not None else c
        if not isinstance(src, Cost):
            raise TypeError(f"reference[{k}] must be a Cost, got {type(src).__name__}")
        stat = float(src.reduce(mode).max() if mode == "max" else src.reduce(mode).mean())
        if not stat > 0:
            raise ValueError(f"component {k} has {mode} {stat} (over its reference), so it cannot "
                             "be normalised by it")
        scales.append(stat)
    return scales


def as_cost(C, name: str = "C") -> Cost:
    """A :class:`Cost` as it is; anything else checked as a dense cost matrix named ``name``."""
    if isinstance(C, Cost):
        return C
    return CostMatrix(check_cost(C, name), checked=True)


def pad_clouds(clouds, weights=None):
    """Stack point clouds of different sizes into one batch, padded with weight-0 points.

    Parameters
    ----------
    clouds : list of Tensor, shapes (n_k, d)
        The clouds (same dimension, dtype and device).
    weights : list of Tensor, optional
        Their weights (default uniform, each summing to 1).

    Returns
    -------
    points : Tensor, shape (K, max n_k, d)
        Padded with copies of each cloud's first point (finite costs, nothing moves there).
    weights : Tensor, shape (K, max n_k)
        Zero on the padding: a solver treats each row as its own cloud.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> pts, w = ob.pad_clouds([torch.zeros(1, 2), torch.ones(3, 2)])
    >>> pts.shape, w
    (torch.Size([2, 3, 2]), tensor([[1.0000, 0.0000, 0.0000],
            [0.3333, 0.3333, 0.3333]]))
    """
    if not isinstance(clouds, (list, tuple)) or not clouds:
        raise TypeError("clouds must be a non-empty list of point tensors")
    pts = [check_points(c, f"clouds[{k}]") for k, c in enumerate(clouds)]
    for k, p in enumerate(pts):
        if p.ndim != 2:
            raise ValueError(f"clouds[{k}] must have shape (n, d), got {tuple(p.shape)}")
        if p.shape[1] != pts[0].shape[1] or p.dtype != pts[0].dtype or p.device != pts[0].device:
            raise ValueError(f"clouds[{k}] differs from clouds[0] in dimension, dtype or device")
    if weights is not None and len(weights) != len(pts):
        raise ValueError(f"weights has {len(weights)} entries for {len(pts)} clouds")
    n = max(p.shape[0] for p in pts)
    out = pts[0].new_empty(len(pts), n, pts[0].shape[1])
    w = pts[0].new_zeros(len(pts), n)
    for k, p in enumerate(pts):
        out[k, :p.shape[0]] = p
        out[k, p.shape[0]:] = p[0]
        wk = None if weights is None else weights[k]
        w[k, :p.shape[0]] = check_weights(wk, p.shape[0], f"weights[{k}]", like=p)
    return out, w
