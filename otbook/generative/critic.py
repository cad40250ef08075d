r"""A Wasserstein-1 critic trained with a gradient penalty (WGAN-GP).

Kantorovich–Rubinstein duality writes the 1-Wasserstein distance as a maximum over 1-Lipschitz
functions, :math:`W_1(\alpha, \beta) = \max_{\mathrm{Lip}(f) \le 1} \mathbb E_\alpha f -
\mathbb E_\beta f`. WGAN (Arjovsky et al. 2017) replaces :math:`f` by a network, the *critic*;
WGAN-GP (Gulrajani et al. 2017) replaces the constraint by the penalty
:math:`\lambda\, \mathbb E (\|\nabla f(\hat x)\| - 1)^2` at random points :math:`\hat x` on
segments between the two samples (:func:`gradient_penalty`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import (check_callable, check_generator, check_module, check_nonnegative,
                       check_pair_points, check_paired, check_positive, check_positive_int)
from .._runtime import progress as progress_bar
from .._runtime import rand, randint
from .._training import optimizer_step

__all__ = ["gradient_penalty", "fit_critic", "CriticFit"]


def _gradient_norms(critic, x_hat):
    x_hat = x_hat.detach().requires_grad_(True)
    out = critic(x_hat)
    if not isinstance(out, torch.Tensor) or out.shape not in (x_hat.shape[:-1],
                                                             (*x_hat.shape[:-1], 1)):
        raise ValueError(f"critic must return one value per point, shape "
                         f"{tuple(x_hat.shape[:-1])} or {(*x_hat.shape[:-1], 1)}")
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return grad.norm(dim=-1)


def gradient_penalty(critic, x, y, *, generator=None) -> torch.Tensor:
    r"""The WGAN-GP penalty :math:`\mathbb E (\|\nabla f(\hat x)\| - 1)^2` of a critic.

    :math:`\hat x_k = u_k x_k + (1 - u_k) y_k` with :math:`u_k \sim U[0, 1]` on the segment between
    row ``k`` of each sample (Gulrajani et al. 2017, Algorithm 1).

    Parameters
    ----------
    critic : callable
        ``critic(x)`` with ``x`` of shape (n, d), returning (n,) or (n, 1).
    x, y : Tensor or array, shape (n, d)
        The two samples (real and generated), paired row by row.
    generator : torch.Generator, optional
        Randomness of the points on the segments.

    Returns
    -------
    Tensor, scalar
        Differentiable in the critic's parameters (the graph of the gradient is kept).

    Examples
    --------
    A 1-Lipschitz linear critic with slope 1 pays no penalty; slope 3 pays :math:`(3 - 1)^2`.

    >>> import torch, otbook as ob
    >>> x, y = torch.randn(8, 2), torch.randn(8, 2)
    >>> float(ob.gradient_penalty(lambda z: z[:, 0], x, y))
    0.0
    >>> float(ob.gradient_penalty(lambda z: 3 * z[:, 0], x, y))
    4.0
    """
    check_callable(critic, "critic")
    x, y = check_paired(x, y, ("x", "y"))
    u = rand((*x.shape[:-1], 1), like=x, generator=check_generator(generator))
    x_hat = u * x.detach() + (1 - u) * y.detach()
    return ((_gradient_norms(critic, x_hat) - 1) ** 2).mean()


@dataclass
class CriticFit:
    r"""What :func:`fit_critic` returns.

    Attributes
    ----------
    critic : torch.nn.Module
        The trained critic (the object given, trained in place).
    estimate : Tensor, scalar
        :math:`\frac1n \sum f(x_i) - \frac1m \sum f(y_j)` on the training samples: the
        critic's estimate of :math:`W_1`.
    losses : Tensor, shape (n_steps,)
        The loss minimised at each step: :math:`-(\text{estimate}) + \lambda\, \text{penalty}`.
    max_slope : Tensor, scalar
        The largest gradient norm of the critic on the samples and on points between them
        (above 1: the critic is not 1-Lipschitz there).
    """

    critic: torch.nn.Module
    estimate: torch.Tensor
    losses: torch.Tensor
    max_slope: torch.Tensor

    def evaluate(self, x, y) -> torch.Tensor:
        """The critic's estimate :math:`\\mathbb E_x f - \\mathbb E_y f` on other samples."""
        x, y = check_pair_points(x, y, ("x", "y"))
        with torch.no_grad():
            return self.critic(x).mean() - self.critic(y).mean()


def _batch(z, size, generator):
    if size >= z.shape[0]:
        return z
    return z[randint(z.shape[0], (size,), like=z, generator=generator)]


def fit_critic(critic, x, y, *, penalty: float = 10.0, n_steps: int = 1000,
               batch_size: int | None = None, lr: float = 1e-3, generator=None,
               progress: bool = False) -> CriticFit:
    r"""Train a critic :math:`f` to estimate :math:`W_1(x, y)` by Kantorovich–Rubinstein duality.

    Minimises :math:`-\big(\mathbb E_x f - \mathbb E_y f\big) + \lambda\,
    \mathbb E (\|\nabla f(\hat x)\| - 1)^2` with Adam (``penalty`` is :math:`\lambda`;
    Gulrajani et al. use 10). The estimate is the dual objective on the training samples; it is
    a lower bound on the samples' :math:`W_1` only if the critic is 1-Lipschitz, which the
    penalty encourages but does not enforce (see :attr:`CriticFit.max_slope`).

    Parameters
    ----------
    critic : torch.nn.Module
        ``critic(x)`` returns (n,) or (n, 1); dtype and device of ``x``.
    x, y : Tensor or array, shapes (n, d) and (m, d)
        The two samples.
    penalty : float
        :math:`\lambda >= 0` (0: no constraint at all; the estimate then grows without bound).
    n_steps : int
        Adam steps.
    batch_size : int, optional
        Points drawn from each sample per step (with replacement); ``None``: full batches. The
        penalty pairs the batches row by row (truncated to the shorter one).
    lr : float
        Adam's learning rate.
    generator : torch.Generator, optional
        Randomness of the batches and of the penalty's points.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CriticFit

    Examples
    --------
    >>> import torch, otbook as ob
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 1, generator=gen)
    >>> _ = torch.manual_seed(0)  # the critic's initial weights (a linear critic started
    >>> critic = torch.nn.Linear(1, 1)  # with the wrong sign can stall at the wrong maximum)
    >>> fit = ob.fit_critic(critic, x, x + 2.0, n_steps=500, lr=0.05, generator=gen)
    >>> round(float(fit.estimate), 2)   # W1 = 2, overshot by W1^2 / (2 penalty) = 0.2
    2.2
    """
    x, y = check_pair_points(x, y, ("x", "y"))
    for t, name in ((x, "x"), (y, "y")):
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (n, d), got {tuple(t.shape)}")
    check_module(critic, "critic", x)
    lam = check_nonnegative(penalty, "penalty")
    n_steps = check_positive_int(n_steps, "n_steps")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    check_generator(generator)
    size = batch_size or max(x.shape[0], y.shape[0])
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    losses = x.new_empty(n_steps)
    for step in progress_bar(progress, n_steps, "critic", iterable=range(n_steps)):
        bx, by = _batch(x, size, generator), _batch(y, size, generator)
        gap = critic(bx).mean() - critic(by).mean()
        loss = -gap
        if lam > 0:
            k = min(bx.shape[0], by.shape[0])
            loss = loss + lam * gradient_penalty(critic, bx[:k], by[:k], generator=generator)
        optimizer_step(critic, opt, loss)
        losses[step] = loss.detach()
    k = min(x.shape[0], y.shape[0])
    u = rand((k, 1), like=x, generator=generator)
    probe = torch.cat([x, y, u * x[:k] + (1 - u) * y[:k]])
    slope = _gradient_norms(critic, probe).max().detach()
    with torch.no_grad():
        estimate = critic(x).mean() - critic(y).mean()
    return CriticFit(critic=critic, estimate=estimate, losses=losses, max_slope=slope)
