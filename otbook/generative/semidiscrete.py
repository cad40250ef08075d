r"""Semi-discrete optimal transport: a continuous source against a discrete target.

The target :math:`\beta = \sum_j b_j \delta_{y_j}` is discrete, the source :math:`\alpha` is
anything one can sample. The dual reduces to one vector :math:`g \in \R^m` (the **semi-dual**),

.. math::

    \OT_\varepsilon(\alpha, \beta) = \max_g\ \mathbb E_{x \sim \alpha}\big[g^{c,\varepsilon}(x)\big]
    + \langle g, b\rangle, \qquad
    g^{c,\varepsilon}(x) = -\varepsilon \log \sum_j b_j e^{(g_j - c(x, y_j))/\varepsilon},

with :math:`g^{c,0}(x) = \min_j c(x, y_j) - g_j` (the c-transform) for exact OT. The objective
is an expectation, so its stochastic gradient :math:`b - \pi(x)` needs only samples; Genevay et
al. (2016) maximise it by stochastic gradient ascent with steps :math:`C / \sqrt k` and averaged
iterates. For :math:`\varepsilon = 0`, :math:`\pi(x)` is the indicator of the **Laguerre cell**
of :math:`x`, :math:`\arg\min_j c(x, y_j) - g_j` (:func:`laguerre_assign`), and the optimal
``g`` gives every cell :math:`j` the mass :math:`b_j`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (check_callable, check_generator, check_nonnegative, check_pair_points,
                       check_points, check_positive, check_positive_int, check_potential,
                       check_weights)
from .._runtime import progress as progress_bar
from .._runtime import randint
from ..costs import cost_matrix

__all__ = ["SemiDiscreteOT", "semidiscrete_ot", "laguerre_assign"]


def _scores(x, y, g, cost):
    """``c(x_i, y_j) - g_j``, shape (..., n, m)."""
    return cost_matrix(x, y, cost) - g[..., None, :]


def laguerre_assign(x, y, g, *, cost="sqeuclidean") -> torch.Tensor:
    r"""The Laguerre cell of each point: :math:`\arg\min_j c(x_i, y_j) - g_j`.

    For the squared Euclidean cost and ``g = 0`` these are the Voronoi cells of ``y``; the dual
    weights ``g`` move the walls between cells (a larger :math:`g_j` grows cell ``j``).

    Parameters
    ----------
    x : Tensor or array, shape (..., n, d)
        Points to assign.
    y : Tensor or array, shape (m, d)
        The sites (the discrete target's support).
    g : Tensor or array, shape (m,)
        Dual weights.
    cost : str or callable
        Ground cost (see :func:`~otbook.cost_matrix`).

    Returns
    -------
    Tensor of long, shape (..., n)

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.tensor([[0.4], [0.6]])
    >>> y = torch.tensor([[0.0], [1.0]])
    >>> ob.laguerre_assign(x, y, torch.zeros(2)).tolist()
    [0, 1]
    >>> ob.laguerre_assign(x, y, torch.tensor([0.0, 0.5])).tolist()   # cell 1 grows
    [1, 1]
    """
    x, y = check_pair_points(x, y, ("x", "y"))
    if y.ndim != 2:
        raise ValueError(f"y must have shape (m, d), got {tuple(y.shape)}")
    g = check_potential(g, y.shape[0], "g", like=y)
    return _scores(x, y, g, cost).argmin(-1)


def _cell_probabilities(x, y, b, g, eps, cost):
    """:math:`\\pi(x)`: the one-hot Laguerre cell (eps = 0) or the softmax of the semi-dual."""
    s = _scores(x, y, g, cost)
    if eps == 0:
        return torch.nn.functional.one_hot(s.argmin(-1), y.shape[0]).to(x.dtype)
    return torch.softmax(-s / eps + b.log(), dim=-1)


def _semidual(x, y, b, g, eps, cost):
    """Mean over ``x`` of :math:`g^{c,\\varepsilon}(x)`, plus :math:`\\langle g, b\\rangle`."""
    s = _scores(x, y, g, cost)
    if eps == 0:
        gc = s.min(-1).values
    else:
        gc = -eps * torch.logsumexp(-s / eps + b.log(), dim=-1)
    return gc.mean() + (g * b).sum()


@dataclass
class SemiDiscreteOT:
    r"""What :func:`semidiscrete_ot` returns.

    Attributes
    ----------
    g : Tensor, shape (m,)
        The averaged dual weights (the estimate).
    g_last : Tensor, shape (m,)
        The last iterate of the stochastic ascent.
    history : Tensor, shape (n_records, m)
        The averaged weights every ``record_every`` steps (the last row is ``g``).
    y, b : Tensor
        The target's support and weights.
    eps : float
        The regularisation (0: exact OT).
    cost : str or callable
        The ground cost.
    n_steps : int
        Steps taken.
    """

    g: torch.Tensor
    g_last: torch.Tensor
    history: torch.Tensor
    y: torch.Tensor
    b: torch.Tensor
    eps: float
    cost: object
    n_steps: int

    def assign(self, x) -> torch.Tensor:
        """The Laguerre cell of each point of ``x`` under the weights ``g``."""
        return laguerre_assign(x, self.y, self.g, cost=self.cost)

    def value(self, x, g=None) -> torch.Tensor:
        r"""The semi-dual objective at ``g`` (default: :attr:`g`), its expectation estimated on
        the sample ``x`` of the source: a lower bound on :math:`\OT_\varepsilon` in expectation
        (exactly, for the empirical measure of ``x``)."""
        x, y = check_pair_points(x, self.y, ("x", "y"))
        g = self.g if g is None else check_potential(g, y.shape[0], "g", like=y)
        return _semidual(x, y, self.b, g, self.eps, self.cost)

    def cell_masses(self, x) -> torch.Tensor:
        """The fraction of the points of ``x`` in each cell (:math:`b` at the optimum, for
        ``eps = 0``), shape (m,)."""
        cells = self.assign(x).reshape(-1)
        return torch.bincount(cells, minlength=self.y.shape[0]).to(self.y.dtype) / cells.numel()


def _draw(source, n, like, generator):
    if callable(source):
        x = check_points(source(n, generator), "source(n, generator)", like=like)
        if x.shape != (n, like.shape[-1]):
            raise ValueError(f"source(n, generator) must return shape ({n}, {like.shape[-1]}), "
                             f"got {tuple(x.shape)}")
        return x.to(like.dtype)
    return source[randint(source.shape[0], (n,), like=source, generator=generator)]


def semidiscrete_ot(source, y, b=None, *, eps: float = 0.0, cost="sqeuclidean",
                    n_steps: int = 2000, batch_size: int = 64, lr: float = 1.0,
                    record_every: int = 10, generator=None, progress: bool = False
                    ) -> SemiDiscreteOT:
    r"""Semi-discrete OT by averaged stochastic gradient ascent on the semi-dual.

    Step :math:`k` draws a batch :math:`x_1, \dots, x_B` from the source and moves
    :math:`g \leftarrow g + \frac{\mathrm{lr}}{\sqrt k}\big(b - \frac1B \sum_i \pi(x_i)\big)`,
    where :math:`\pi(x)` is the one-hot Laguerre cell of :math:`x` (``eps = 0``) or the softmax
    :math:`\pi_j(x) \propto b_j e^{(g_j - c(x, y_j))/\varepsilon}`; the estimate is the running
    average of the iterates :math:`\bar g_k = \bar g_{k-1} + (g_k - \bar g_{k-1}) / k`
    (Genevay et al. 2016, with mini-batches). No gradient flows through the result.

    Parameters
    ----------
    source : callable or Tensor
        ``source(n, generator)`` returning ``n`` fresh samples of shape (n, d); or a sample of
        shape (N, d), from which batches are drawn uniformly with replacement (its empirical
        measure is then the source).
    y : Tensor or array, shape (m, d)
        The discrete target's support.
    b : Tensor or array, shape (m,), optional
        Its weights (uniform by default); normalised to sum to one.
    eps : float
        Entropic regularisation (absolute, >= 0); 0 solves exact OT.
    cost : str or callable
        Ground cost (see :func:`~otbook.cost_matrix`).
    n_steps, batch_size : int
        Ascent steps, and source samples per step.
    lr : float
        The constant :math:`C` of the step :math:`C / \sqrt k`, in cost units per unit of
        mass.
    record_every : int
        Keep the averaged weights every this many steps in ``history``.
    generator : torch.Generator, optional
        Randomness of the batches (passed on to a callable ``source``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    SemiDiscreteOT

    Examples
    --------
    Two sites on the line, with a uniform source on [0, 1] and weights 1/4, 3/4: the optimal
    cells are [0, 1/4] and [1/4, 1], so the wall between the sites moves from 1/2 to 1/4.

    >>> import torch, otbook as ob
    >>> unif = lambda n, gen: torch.rand(n, 1, generator=gen)
    >>> y = torch.tensor([[0.0], [1.0]])
    >>> res = ob.semidiscrete_ot(unif, y, [0.25, 0.75], n_steps=3000, lr=0.5,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> wall = (1 + res.g[0] - res.g[1]) / 2    # where |x|^2 - g0 = |x - 1|^2 - g1
    >>> round(float(wall), 2)
    0.25
    """
    if not callable(source):
        source = check_points(source, "source")
        if source.ndim != 2:
            raise ValueError(f"source must have shape (N, d) or be callable, got "
                             f"{tuple(source.shape)}")
        source, y = check_pair_points(source, y, ("source", "y"))
    else:
        check_callable(source, "source")
        y = check_points(y, "y")
    if y.ndim != 2:
        raise ValueError(f"y must have shape (m, d), got {tuple(y.shape)}")
    m = y.shape[0]
    b = check_weights(b, m, "b", like=y)
    if b.ndim != 1:
        raise ValueError(f"b must have shape ({m},), got {tuple(b.shape)}")
    b = b / b.sum()
    eps = check_nonnegative(eps, "eps")
    if eps > 0 and bool((b == 0).any()):
        raise ValueError("b has zero weights; drop those sites first (their log-weight is -inf)")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    record_every = check_positive_int(record_every, "record_every")
    check_generator(generator)
    y = y.detach()
    g = y.new_zeros(m)
    g_bar = y.new_zeros(m)
    history = []
    for k in progress_bar(progress, n_steps, "semi-dual ascent", iterable=range(1, n_steps + 1)):
        x = _draw(source, batch_size, y, generator).detach()
        pi = _cell_probabilities(x, y, b, g, eps, cost).mean(0)
        g = g + lr / k ** 0.5 * (b - pi)
        g_bar = g_bar + (g - g_bar) / k
        if k % record_every == 0 or k == n_steps:
            history.append(g_bar)
    return SemiDiscreteOT(g=g_bar, g_last=g, history=torch.stack(history), y=y, b=b, eps=eps,
                          cost=cost, n_steps=n_steps)
