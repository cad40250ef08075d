"""Plotting helpers shared by the chapters (matplotlib)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["plot_coupling", "plot_plan_matrix", "to_numpy"]


def to_numpy(t) -> np.ndarray:
    """A tensor (any device, with or without grad) or an array, as a NumPy array."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def plot_coupling(x, y, plan, ax=None, *, a=None, b=None, threshold=1e-3, color="0.4",
                  source_color="C0", target_color="C1", max_lines=5000):
    """Draw two 2-D point clouds and a segment for each pair the plan couples.

    Segment opacity is proportional to the mass moved; pairs with less than ``threshold`` times
    the largest entry are not drawn. Point sizes follow the weights ``a`` and ``b`` when given.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    x, y, P = to_numpy(x), to_numpy(y), to_numpy(plan)
    if x.ndim == 1:
        x = np.stack([x, np.zeros_like(x)], 1)
    if y.ndim == 1:
        y = np.stack([y, np.ones_like(y)], 1)
    ax = ax if ax is not None else plt.gca()
    i, j = np.nonzero(P > threshold * P.max())
    if len(i) > max_lines:
        keep = np.argsort(P[i, j])[-max_lines:]
        i, j = i[keep], j[keep]
    alpha = P[i, j] / P[i, j].max()
    rgba = np.zeros((len(i), 4))
    rgba[:, :3] = plt.matplotlib.colors.to_rgb(color)
    rgba[:, 3] = 0.15 + 0.85 * alpha
    ax.add_collection(LineCollection(np.stack([x[i], y[j]], 1), colors=rgba, linewidths=1.0, zorder=1))
    sa = 20 if a is None else 20 * len(x) * to_numpy(a) / to_numpy(a).sum()
    sb = 20 if b is None else 20 * len(y) * to_numpy(b) / to_numpy(b).sum()
    ax.scatter(x[:, 0], x[:, 1], s=sa, c=source_color, zorder=2, label="source", edgecolors="none")
    ax.scatter(y[:, 0], y[:, 1], s=sb, c=target_color, zorder=2, label="target", edgecolors="none")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def plot_plan_matrix(plan, ax=None, *, title=None, cmap="magma_r"):
    """Show a coupling as an image (rows: source points, columns: target points)."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.gca()
    im = ax.imshow(to_numpy(plan), cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xlabel("target index j")
    ax.set_ylabel("source index i")
    if title:
        ax.set_title(title)
    return im
