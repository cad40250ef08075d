"""Mini-batch optimal transport: the usual estimator (:func:`minibatch_ot`), and upper and lower
bounds on exact OT from exact OT between batches (:func:`minibatch_bounds`; the mathematics is in
:mod:`otbook.minibatch.bounds`).

The batch solves can be shared among the ranks of a ``torch.distributed`` process group;
``python -m otbook.minibatch`` launches :func:`minibatch_bounds` under ``torchrun``.
"""

from .bounds import MinibatchBounds, minibatch_bounds
from .estimator import MinibatchOT, minibatch_ot
from .partition import partition

__all__ = ["MinibatchBounds", "MinibatchOT", "minibatch_bounds", "minibatch_ot", "partition"]
