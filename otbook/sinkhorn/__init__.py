r"""Entropic optimal transport: the Sinkhorn engine.

The problem solved everywhere in this package is

.. math::

    \min_{P \ge 0} \langle P, C \rangle + \varepsilon \operatorname{KL}(P \,|\, a \otimes b)
    + \rho_a \operatorname{KL}(P 1 \,|\, a) + \rho_b \operatorname{KL}(P^\top 1 \,|\, b),

with ``KL(p | q) = sum p log(p / q) - p + q`` and a marginal penalty replaced by the hard
constraint when its ``rho`` is ``None`` (balanced: both ``None``; semi-relaxed: one ``None``).

How it is organised (one loop, one divergence engine, any cost):

* :mod:`~otbook.sinkhorn.loop`: THE loop, in the kernel domain, with absorption into the
  log domain, over-relaxation, unbalanced and semi-relaxed marginals, batched; and the averaged
  solver of symmetric problems;
* :mod:`~otbook.sinkhorn.kernel`: where the cost lives: a stored kernel (dense) or blocks
  recomputed from a :class:`~otbook.Cost` (online, memory linear in ``n + m``);
* :mod:`~otbook.sinkhorn.relax`: the safeguarded, adaptive over-relaxation;
* :mod:`~otbook.sinkhorn.objective`: values, primal and dual, and their envelope gradients;
* :mod:`~otbook.sinkhorn.engine`: the entry points library code calls with checked inputs,
  :func:`~otbook.sinkhorn.engine.solve` and the debiased-divergence engine
  :func:`~otbook.sinkhorn.engine.debiased`;
* :mod:`~otbook.sinkhorn.api`: the public doors, :func:`sinkhorn` and
  :func:`sinkhorn_divergence`; :mod:`~otbook.sinkhorn.schedule`: ``eps`` helpers.
"""

from .api import sinkhorn, sinkhorn_divergence
from .schedule import eps_relative, eps_schedule

__all__ = ["sinkhorn", "sinkhorn_divergence", "eps_relative", "eps_schedule"]
