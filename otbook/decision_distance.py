r"""The decision-aware dataset distance of predict-then-optimize tasks (OTD³).

In a predict-then-optimize task an example is a triplet :math:`(x, y, z)`: features :math:`x`,
the coefficients :math:`y` of a downstream optimisation problem (the labels a model learns to
predict), and the decision :math:`z = w^*(y)` that the problem's solver takes when it knows
:math:`y`. OTD³ (Rodriguez-Diaz et al., UAI 2025) compares two such datasets by optimal
transport under a convex combination of three components,

.. math::

    c\big((x, y, z), (x', y', z')\big) = \alpha_X\, d_X(x, x') + \alpha_Y\, d_Y(y, y')
    + \alpha_W\, g(z, z'; y, y'), \qquad \alpha \in \Delta^2,

each normalised (in the official code, by the mean of the same component between the target
and itself) so that the weights say how much each one counts. Here the components are costs of
:mod:`otbook.costs` and the combination is a :class:`~otbook.costs.SumCost`, solved by
:func:`otbook.emd` (or :func:`otbook.sinkhorn`): no solver of its own.

The decision term :math:`g` of the paper could not be checked against it (its code is in a
package the official repository lacks); the default here is the *symmetrised cross-regret* for a
linear objective :math:`f(z; y) = \langle z, y\rangle`,

.. math::

    g(z, z'; y, y') = \tfrac12\big[f(z; y) - f(z'; y)\big] + \tfrac12\big[f(z'; y') - f(z; y')\big]
    = \tfrac12 \langle z - z', y - y'\rangle

(for maximisation; the sign flips for minimisation): what each example would lose by taking the
other's decision. It is :math:`\ge 0` when each :math:`z` is optimal for its :math:`y`, and
:math:`0` when the two decisions are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._checks import (as_tensor, check_choice, check_eps, check_finite, check_int_at_most,
                      check_simplex, check_weights)
from .costs import Cost, PointCloud, SumCost
from .exact import emd
from .result import OTResult
from .sinkhorn import sinkhorn

__all__ = ["topk_decisions", "decision_cost", "decision_distance", "DecisionDistance"]

COMPONENTS = ("x", "y", "z")


def topk_decisions(y, k: int, *, sense: str = "max") -> torch.Tensor:
    r"""The optimal decisions of top-:math:`k` selection: pick the ``k`` items of largest value.

    Solves :math:`\max_{z \in \{0, 1\}^K,\ \sum_i z_i = k} \langle z, y\rangle` for each row of
    ``y`` (``sense="min"``: the ``k`` smallest). Ties are broken by ``torch.topk``.

    Parameters
    ----------
    y : Tensor or array, shape (..., K)
        Item values (the objective's coefficients), one row per instance.
    k : int
        Number of items to pick, ``1 <= k <= K``.
    sense : {"max", "min"}
        Pick the largest or the smallest values.

    Returns
    -------
    Tensor, shape (..., K)
        The 0/1 decisions, on the dtype and device of ``y``.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> ob.topk_decisions(torch.tensor([[3.0, 1.0, 2.0]]), 2)
    tensor([[1., 0., 1.]])
    """
    y = check_finite(as_tensor(y, "y"), "y")
    if y.ndim == 0:
        raise ValueError("y must have shape (..., K), got a scalar")
    k = check_int_at_most(k, "k", y.shape[-1], "the number of items, y.shape[-1]")
    check_choice(sense, "sense", ("max", "min"))
    idx = y.topk(k, dim=-1, largest=sense == "max").indices
    return torch.zeros_like(y).scatter_(-1, idx, 1.0)


def _cross_regret(sign: float):
    """The symmetrised cross-regret of a linear objective, on packed points ``[z | y]``."""

    def cost(p, q):
        K = p.shape[-1] // 2
        z, y, z2, y2 = p[..., :K], p[..., K:], q[..., :K], q[..., K:]
        own = (z * y).sum(-1)[..., :, None] + (z2 * y2).sum(-1)[..., None, :]
        cross = z @ y2.transpose(-1, -2) + y @ z2.transpose(-1, -2)
        return 0.5 * sign * (own - cross)

    return cost


def _hamming(p, q):
    K = p.shape[-1] // 2
    d = p[..., :, None, :K] - q[..., None, :, :K]
    return (d * d).sum(-1)


def _user_term(fn):
    def cost(p, q):
        K = p.shape[-1] // 2
        return fn(p[..., :K], p[..., K:], q[..., :K], q[..., K:])

    return cost


def _matrix(t, name, like=None):
    t = check_finite(as_tensor(t, name, like), name)
    t = t if like is None else t.to(like.dtype)
    t = t[:, None] if t.ndim == 1 else t
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, K) with n >= 1, got {tuple(t.shape)}")
    return t


def _decisions(y, z, names, n=None, like=None):
    """Checked coefficients and decisions ``(n, K)`` of one dataset (``n`` rows if given)."""
    y = _matrix(y, names[0], like)
    z = _matrix(z, names[1], y)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{names[0]} must have one row per example ({n}), got {y.shape[0]}")
    if z.shape != y.shape:
        raise ValueError(f"{names[1]} must have the shape of {names[0]} (one decision per "
                         f"coefficient), got {tuple(z.shape)} and {tuple(y.shape)}")
    return y, z


def _triplet(x, y, z, names, like=None):
    """Checked ``(n, dx)``, ``(n, K)``, ``(n, K)`` tensors of one dataset."""
    x = _matrix(x, names[0], like)
    return (x, *_decisions(y, z, names[1:], n=x.shape[0], like=x))


def decision_cost(y1, z1, y2, z2, *, decision="regret", sense: str = "max") -> Cost:
    r"""The decision component :math:`g(z, z'; y, y')` between two datasets, as a cost object.

    Parameters
    ----------
    y1, z1 : Tensor or array, shape (n, K)
        Objective coefficients and decisions of the first dataset.
    y2, z2 : Tensor or array, shape (m, K)
        The same for the second dataset.
    decision : "regret", "sqeuclidean" or callable
        ``"regret"``: the symmetrised cross-regret of the linear objective
        :math:`f(z; y) = \langle z, y\rangle`, :math:`\frac{s}{2}\langle z - z', y - y'\rangle`
        with :math:`s = 1` for ``sense="max"`` and :math:`-1` for ``"min"`` (non-negative when
        every decision is optimal for its coefficients). ``"sqeuclidean"``:
        :math:`\|z - z'\|^2` (the number of differing choices, for 0/1 decisions), blind to
        what a difference costs. A callable ``g(z, y, z2, y2)`` takes blocks of shapes
        ``(..., k, K)`` and ``(..., m, K)`` and returns the ``(..., k, m)`` costs.
    sense : {"max", "min"}
        Whether the downstream problem maximises or minimises :math:`f`.

    Returns
    -------
    Cost
        A :class:`~otbook.costs.PointCloud` over the packed points :math:`[z \mid y]`, shape
        ``(n, m)``: it can be solved on, streamed, or combined in a
        :class:`~otbook.costs.SumCost`.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> y1 = torch.tensor([[1.0, 0.0]]); y2 = torch.tensor([[0.0, 2.0]])
    >>> g = ob.decision_cost(y1, ob.topk_decisions(y1, 1), y2, ob.topk_decisions(y2, 1))
    >>> g.matrix()  # each loses by the other's choice: (1 + 2) / 2
    tensor([[1.5000]])
    """
    y1, z1 = _decisions(y1, z1, ("y1", "z1"))
    y2, z2 = _decisions(y2, z2, ("y2", "z2"), like=y1)
    if y2.shape[1] != y1.shape[1]:
        raise ValueError(f"y2 must have {y1.shape[1]} columns, as y1, got {y2.shape[1]}")
    check_choice(sense, "sense", ("max", "min"))
    if callable(decision):
        fn = _user_term(decision)
    else:
        check_choice(decision, "decision", ("regret", "sqeuclidean"))
        fn = _cross_regret(1.0 if sense == "max" else -1.0) if decision == "regret" else _hamming
    return PointCloud(torch.cat([z1, y1], -1), torch.cat([z2, y2], -1), fn)


@dataclass
class DecisionDistance:
    r"""The result of :func:`decision_distance`.

    Attributes
    ----------
    value : Tensor
        :math:`\langle P, C\rangle` for the plan found (exact OT), or the transport part of the
        entropic objective.
    plan : Tensor, shape (n, m)
        The coupling between the examples of the two datasets.
    parts : dict
        ``"x"``, ``"y"``, ``"z"``: :math:`\alpha_k \langle P, C_k \rangle / s_k`, the share of
        each component in ``value`` (they sum to it).
    scales : dict
        The normaliser :math:`s_k` of each component (1 where not normalised).
    weights : dict
        The weights :math:`\alpha_k`.
    cost : SumCost
        The combined cost (its components are in ``cost.components``, in the order x, y, z).
    result : OTResult
        What the solver returned (potentials, convergence).
    """

    value: torch.Tensor
    plan: torch.Tensor
    parts: dict
    scales: dict
    weights: dict
    cost: SumCost
    result: OTResult
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in self.parts.items())
        return f"DecisionDistance(value={float(self.value):.6g}, parts: {parts})"


def _reference(normalise, reference, x2, y2, z2, ground, decision, sense, weights):
    """The normalising mode and reference cost of each component."""
    check_choice(reference, "reference", ("target", "self"))
    if normalise is None:
        return None, None
    check_choice(normalise, "normalise", ("mean", "max"))
    modes = [normalise if w > 0 else None for w in weights]
    if reference == "self":
        return modes, None
    refs = [PointCloud(x2, x2, ground), PointCloud(y2, y2, ground),
            decision_cost(y2, z2, y2, z2, decision=decision, sense=sense)]
    return modes, refs


def _check_optimal(g: Cost, decision, sense):
    """The cross-regret is >= 0 when every decision is optimal; a negative entry means some
    decision is not (or ``sense`` is the wrong way round)."""
    if decision != "regret":
        return
    C = g.matrix()
    scale = float(C.abs().max()) if C.numel() else 0.0
    if float(C.min()) < -1e-6 * max(scale, 1e-30):
        raise ValueError(f"the cross-regret is negative ({float(C.min()):.3g}): some decisions z1 "
                         f"or z2 are not optimal for their coefficients y1 or y2 under "
                         f"sense={sense!r}")


def decision_distance(x1, y1, z1, x2, y2, z2, *, weights=(1 / 3, 1 / 3, 1 / 3),
                      ground: str = "euclidean", decision="regret", sense: str = "max",
                      normalise: str | None = "mean", reference: str = "target", eps=None,
                      a=None, b=None) -> DecisionDistance:
    r"""OTD³: optimal transport between two predict-then-optimize datasets of triplets
    :math:`(x, y, z)` under :math:`\alpha_X d_X + \alpha_Y d_Y + \alpha_W g`.

    Parameters
    ----------
    x1, y1, z1 : Tensor or array, shapes (n, dx), (n, K), (n, K)
        Source dataset: features, objective coefficients (labels) and decisions, one row per
        example (an instance of the downstream problem).
    x2, y2, z2 : Tensor or array, shapes (m, dx), (m, K), (m, K)
        Target dataset.
    weights : sequence of 3 floats
        :math:`(\alpha_X, \alpha_Y, \alpha_W)`, on the simplex (non-negative, summing to 1).
        ``(1/2, 1/2, 0)`` is a feature-label distance.
    ground : str
        Ground cost of :math:`d_X` and :math:`d_Y` (a name of :func:`otbook.cost_matrix`;
        default the Euclidean distance).
    decision : "regret", "sqeuclidean" or callable
        The decision term :math:`g`, see :func:`decision_cost`.
    sense : {"max", "min"}
        Whether the downstream problem maximises or minimises :math:`\langle z, y\rangle`.
    normalise : "mean", "max" or None
        Divide each component by its mean (or largest entry) over ``reference``.
    reference : {"target", "self"}
        ``"target"`` (as the official code): the statistic of the component between the target
        and itself, so that every source is measured on the target's scale. ``"self"``: over
        the component itself.
    eps : float, optional
        ``None`` (default): exact OT (:func:`otbook.emd`). A number: entropic OT
        (:func:`otbook.sinkhorn`) with this regularisation, on the normalised cost.
    a, b : Tensor or array, optional
        Weights of the examples (default uniform).

    Returns
    -------
    DecisionDistance

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.0], [1.0]]); y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> z = ob.topk_decisions(y, 1)
    >>> float(ob.decision_distance(x, y, z, x, y, z).value)  # a dataset from itself
    0.0
    >>> ob.decision_distance(x, y, z, x, y.flip(0), z.flip(0))  # labels swapped: moves in x
    DecisionDistance(value=0.666667, parts: x=0.6667, y=0, z=0)
    """
    x1, y1, z1 = _triplet(x1, y1, z1, ("x1", "y1", "z1"))
    x2, y2, z2 = _triplet(x2, y2, z2, ("x2", "y2", "z2"), like=x1)
    for s, t, name in ((x1, x2, "x2"), (y1, y2, "y2")):
        if s.shape[1] != t.shape[1]:
            raise ValueError(f"{name} must have {s.shape[1]} columns, as its source, got "
                             f"{t.shape[1]}")
    w = check_simplex(weights, "weights", 3)
    comps = [PointCloud(x1, x2, ground), PointCloud(y1, y2, ground),
             decision_cost(y1, z1, y2, z2, decision=decision, sense=sense)]
    _check_optimal(comps[2], decision, sense)
    modes, refs = _reference(normalise, reference, x2, y2, z2, ground, decision, sense, w)
    cost = SumCost(comps, w, normalise=modes, reference=refs)
    a = check_weights(a, x1.shape[0], "a", like=x1)
    b = check_weights(b, x2.shape[0], "b", like=x1)
    res = emd(a, b, cost.matrix()) if eps is None else sinkhorn(a, b, cost, check_eps(eps))
    P = res.plan
    parts = {k: (wk / s) * (P * c.matrix()).sum() if wk > 0 else P.new_zeros(())
             for k, wk, s, c in zip(COMPONENTS, w, cost.scales, comps)}
    return DecisionDistance(value=res.value_linear, plan=P, parts=parts,
                            scales=dict(zip(COMPONENTS, cost.scales)),
                            weights=dict(zip(COMPONENTS, w)), cost=cost, result=res)
