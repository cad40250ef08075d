"""Reading a transport plan between two labelled samples.

A plan between labelled samples says, row by row, where each source point's mass goes; summed by
label it says which classes are matched with which. The functions here turn a plan (a dense
``(n, m)`` tensor, from any solver) into such summaries; :func:`class_report` adds the cost, so
that a plan between a reference sample and a shifted one reads as an explanation of the shift:
which classes pay the most to be transported, how much of their mass stays in its class, which
pairs of examples carry the cost, and (for an unbalanced plan) how much mass is created or
destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_labels, check_plan, check_positive_int, check_weights
from .costs import as_cost

__all__ = ["class_coupling", "class_preservation", "class_report", "ClassReport"]


def class_coupling(plan, labels_a, labels_b, *, n_classes_a: int | None = None,
                   n_classes_b: int | None = None) -> torch.Tensor:
    """Mass the plan moves from each source class to each target class.

    Parameters
    ----------
    plan : (n, m) tensor
        A transport plan (non-negative).
    labels_a, labels_b : (n,) and (m,) integer labels
        Classes of the rows and of the columns, numbered from 0.
    n_classes_a, n_classes_b : int, optional
        Numbers of classes (default: the largest label plus one).

    Returns
    -------
    (n_classes_a, n_classes_b) tensor ``K`` with ``K[k, l] = sum of plan[i, j]`` over rows of
    class ``k`` and columns of class ``l``.

    Examples
    --------
    >>> P = torch.tensor([[0.5, 0.0], [0.1, 0.4]])
    >>> class_coupling(P, [0, 1], [0, 1])
    tensor([[0.5000, 0.0000],
            [0.1000, 0.4000]])
    """
    plan = check_plan(plan, "plan", matrix=True)
    ya, ka = check_labels(labels_a, plan.shape[0], "labels_a", n_classes_a)
    yb, kb = check_labels(labels_b, plan.shape[1], "labels_b", n_classes_b)
    ya, yb = ya.to(plan.device), yb.to(plan.device)
    rows = plan.new_zeros(ka, plan.shape[1]).index_add_(0, ya, plan)
    return plan.new_zeros(ka, kb).index_add_(1, yb, rows)


def class_preservation(plan, labels_a, labels_b) -> float:
    """Fraction of source points whose mass goes mostly to their own class.

    For each row ``i`` of the plan, the mass sent to each target class is summed; the row counts
    as preserved when the class receiving the most mass is ``labels_a[i]``. This is the
    class-preservation accuracy used to compare the plans of different feature maps on the same
    labelled data (both samples labelled in the same label set). Rows with no mass count as not
    preserved.

    Parameters
    ----------
    plan : (n, m) tensor
        A transport plan (non-negative).
    labels_a, labels_b : (n,) and (m,) integer labels
        Classes of the rows and of the columns, in one label set numbered from 0.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> P = torch.tensor([[0.1, 0.4, 0.0], [0.0, 0.1, 0.4]])
    >>> class_preservation(P, [0, 1], [0, 1, 1])
    0.5
    """
    plan = check_plan(plan, "plan", matrix=True)
    ya, _ = check_labels(labels_a, plan.shape[0], "labels_a")
    yb, _ = check_labels(labels_b, plan.shape[1], "labels_b")
    k = int(max(ya.max() if len(ya) else -1, yb.max() if len(yb) else -1)) + 1
    per_class = plan.new_zeros(plan.shape[0], k).index_add_(1, yb.to(plan.device), plan)
    has_mass = per_class.sum(1) > 0
    hit = (per_class.argmax(1) == ya.to(plan.device)) & has_mass
    return float(hit.double().mean())


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, with 0 where ``den`` is 0 (a class with no mass has nothing to report)."""
    return torch.where(den > 0, num / den.where(den > 0, torch.ones_like(den)),
                       torch.zeros_like(num))


@dataclass
class ClassReport:
    r"""What :func:`class_report` found: a plan summarised class by class.

    Classes are those of one label set shared by both samples, numbered ``0 .. K - 1``; a
    class absent from one sample has zero mass on that side. Suffix ``_a`` is the source side
    (rows of the plan), ``_b`` the target side (columns).

    Attributes
    ----------
    coupling : Tensor (K, K)
        :func:`class_coupling` of the plan: mass moved from each source class to each target
        class.
    mass_a, mass_b : Tensor (K,)
        Mass the plan moves out of each source class and into each target class.
    cost_a, cost_b : Tensor (K,)
        The transport cost :math:`\sum \pi_{ij} C_{ij}` of that mass (rows, or columns, of the
        class).
    weight_a, weight_b : Tensor (K,)
        Mass of each class in the marginals ``a`` and ``b`` (the plan's own marginals when they
        were not given, so that :attr:`kept_a` is then 1 for every class with mass).
    top_pairs_a, top_pairs_b : list of K long tensors (k, 2)
        For each class, the indices ``(i, j)`` of the pairs with the largest cost
        contributions :math:`\pi_{ij} C_{ij}` among the rows (``_a``) or the columns (``_b``) of
        that class, largest first; ``top_values_a``, ``top_values_b`` hold those
        contributions.
    total : Tensor
        :math:`\langle \pi, C \rangle`.
    """

    coupling: torch.Tensor
    mass_a: torch.Tensor
    mass_b: torch.Tensor
    cost_a: torch.Tensor
    cost_b: torch.Tensor
    weight_a: torch.Tensor
    weight_b: torch.Tensor
    top_pairs_a: list
    top_pairs_b: list
    top_values_a: list
    top_values_b: list
    total: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        """Per class, the mean transport cost of the mass leaving or entering it:
        ``(cost_a + cost_b) / (mass_a + mass_b)`` (0 for a class with no mass)."""
        return _ratio(self.cost_a + self.cost_b, self.mass_a + self.mass_b)

    @property
    def mean_cost_a(self) -> torch.Tensor:
        """Mean transport cost of the mass leaving each source class (0 if none leaves)."""
        return _ratio(self.cost_a, self.mass_a)

    @property
    def mean_cost_b(self) -> torch.Tensor:
        """Mean transport cost of the mass entering each target class (0 if none enters)."""
        return _ratio(self.cost_b, self.mass_b)

    @property
    def within(self) -> torch.Tensor:
        """Mass that stays in its class (the diagonal of :attr:`coupling`)."""
        return self.coupling.diagonal()

    @property
    def within_fraction_a(self) -> torch.Tensor:
        """Fraction of the mass leaving each source class that arrives in the same class."""
        return _ratio(self.within, self.mass_a)

    @property
    def cross_a(self) -> torch.Tensor:
        """Mass leaving each source class for another class."""
        return self.mass_a - self.within

    @property
    def kept_a(self) -> torch.Tensor:
        """Transported fraction of each source class's mass, ``mass_a / weight_a``: below 1
        where an unbalanced plan destroys mass (0 for a class absent from ``a``)."""
        return _ratio(self.mass_a, self.weight_a)

    @property
    def kept_b(self) -> torch.Tensor:
        """Transported fraction of each target class's mass, ``mass_b / weight_b``: below 1
        where an unbalanced plan creates mass (0 for a class absent from ``b``)."""
        return _ratio(self.mass_b, self.weight_b)

    def __repr__(self) -> str:
        return (f"ClassReport(classes={self.coupling.shape[0]}, total={float(self.total):.4g}, "
                f"mass={float(self.mass_a.sum()):.4g})")


def _top_pairs(contrib: torch.Tensor, labels: torch.Tensor, k: int, n_classes: int):
    """Per class, the ``k`` largest entries of ``contrib`` among the rows of that class."""
    pairs, values = [], []
    for c in range(n_classes):
        rows = (labels == c).nonzero().flatten()
        block = contrib[rows].reshape(-1)
        v, flat = block.topk(min(k, block.numel()))
        m = contrib.shape[1]
        pairs.append(torch.stack([rows[flat // m], flat % m], 1).cpu())
        values.append(v)
    return pairs, values


def class_report(plan, C, labels_a, labels_b, *, a=None, b=None, n_classes: int | None = None,
                 top_k: int = 5) -> ClassReport:
    r"""Read a plan between two labelled samples class by class: cost, mass, pairs.

    For a plan :math:`\pi` between a reference sample (rows) and another sample (columns)
    under a cost :math:`C`, both labelled in one label set, the report gives per class

    * the mass the plan moves out of (``mass_a``) and into (``mass_b``) the class, and its
      transport cost :math:`\sum_{i: y_i = c} \sum_j \pi_{ij} C_{ij}` (``cost_a``; ``cost_b``
      over the columns of the class), from which ``score`` is the mean cost per unit of mass,
      the "extent to which each class is affected" by a shift;
    * the mass that stays in its class and the mass that crosses to another (``within``,
      ``cross_a``; the class coupling in full as ``coupling``);
    * with the marginals ``a``, ``b`` of an unbalanced problem, the fraction of each class's mass
      the plan transports (``kept_a``, ``kept_b``): mass that disappears or appears;
    * the pairs of examples with the largest cost contributions :math:`\pi_{ij} C_{ij}`.

    It works on any plan (exact, entropic, unbalanced) and any cost.

    Parameters
    ----------
    plan : (n, m) tensor
        A transport plan (non-negative).
    C : (n, m) tensor or :class:`~otbook.Cost`
        The cost the plan was computed under (or any cost to read it with).
    labels_a, labels_b : (n,) and (m,) integer labels
        Classes of the rows and of the columns, in one label set numbered from 0.
    a, b : (n,) and (m,) tensors, optional
        The marginals the plan was asked to have (for ``kept_a``, ``kept_b``); by default the
        plan's own marginals.
    n_classes : int, optional
        Number of classes (default: the largest label on either side plus one).
    top_k : int
        Number of pairs kept per class.

    Returns
    -------
    ClassReport

    Examples
    --------
    >>> P = torch.tensor([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.2, 0.3]])
    >>> C = torch.tensor([[1.0, 9.0, 9.0], [9.0, 2.0, 9.0], [9.0, 4.0, 0.0]])
    >>> rep = class_report(P, C, [0, 1, 1], [0, 1, 0], top_k=1)
    >>> rep.coupling
    tensor([[0.2500, 0.0000],
            [0.3000, 0.4500]])
    >>> rep.cost_a, rep.score
    (tensor([0.2500, 1.3000]), tensor([0.6250, 2.1667]))
    >>> rep.top_pairs_a[1]  # the costliest pair leaving class 1: row 2 to column 1
    tensor([[2, 1]])
    """
    plan = check_plan(plan, "plan", matrix=True)
    n, m = plan.shape
    cost = as_cost(C, "C")
    if tuple(cost.shape) != (n, m):
        raise ValueError(f"C has shape {tuple(cost.shape)} but the plan has shape {(n, m)}")
    Cm = cost.matrix().detach().to(device=plan.device, dtype=plan.dtype)
    ya, ka = check_labels(labels_a, n, "labels_a")
    yb, kb = check_labels(labels_b, m, "labels_b")
    k = check_positive_int(n_classes, "n_classes") if n_classes is not None else max(ka, kb)
    check_labels(ya, n, "labels_a", k)
    check_labels(yb, m, "labels_b", k)
    top_k = check_positive_int(top_k, "top_k")
    a = plan.sum(1) if a is None else check_weights(a, n, "a", plan)
    b = plan.sum(0) if b is None else check_weights(b, m, "b", plan)
    ya, yb = ya.to(plan.device), yb.to(plan.device)
    contrib = plan * Cm

    def per_class(labels, values):
        return plan.new_zeros(k).index_add_(0, labels, values)

    pairs_a, values_a = _top_pairs(contrib, ya, top_k, k)
    pairs_b, values_b = _top_pairs(contrib.T, yb, top_k, k)
    return ClassReport(
        coupling=class_coupling(plan, ya, yb, n_classes_a=k, n_classes_b=k),
        mass_a=per_class(ya, plan.sum(1)), mass_b=per_class(yb, plan.sum(0)),
        cost_a=per_class(ya, contrib.sum(1)), cost_b=per_class(yb, contrib.sum(0)),
        weight_a=per_class(ya, a), weight_b=per_class(yb, b),
        top_pairs_a=pairs_a, top_values_a=values_a,
        top_pairs_b=[p.flip(1) for p in pairs_b], top_values_b=values_b,
        total=contrib.sum())
