"""Reading a transport plan between two labelled samples.

A plan between labelled samples says, row by row, where each source point's mass goes; summed by
label it says which classes are matched with which. The functions here turn a plan (a dense
``(n, m)`` tensor, from any solver) into such summaries.
"""

from __future__ import annotations

import torch

from ._checks import check_labels, check_plan

__all__ = ["class_coupling", "class_preservation"]


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
    plan = check_plan(plan, "plan")
    if plan.ndim != 2:
        raise ValueError(f"plan must be a matrix (n, m), got shape {tuple(plan.shape)}")
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
    plan = check_plan(plan, "plan")
    if plan.ndim != 2:
        raise ValueError(f"plan must be a matrix (n, m), got shape {tuple(plan.shape)}")
    ya, _ = check_labels(labels_a, plan.shape[0], "labels_a")
    yb, _ = check_labels(labels_b, plan.shape[1], "labels_b")
    k = int(max(ya.max() if len(ya) else -1, yb.max() if len(yb) else -1)) + 1
    per_class = plan.new_zeros(plan.shape[0], k).index_add_(1, yb.to(plan.device), plan)
    has_mass = per_class.sum(1) > 0
    hit = (per_class.argmax(1) == ya.to(plan.device)) & has_mass
    return float(hit.double().mean())
