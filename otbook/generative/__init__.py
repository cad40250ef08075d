"""OT in generative modelling: a Wasserstein critic with a gradient penalty (:mod:`.critic`),
semi-discrete OT by stochastic ascent on the semi-dual (:mod:`.semidiscrete`), and flow matching
with independent or mini-batch OT pairs (:mod:`.flow`)."""

from .critic import CriticFit, fit_critic, gradient_penalty
from .flow import (FlowMatchingFit, fit_flow_matching, flow_matching_loss, ot_pairing,
                   path_straightness, sample_flow)
from .semidiscrete import SemiDiscreteOT, laguerre_assign, semidiscrete_ot

__all__ = [
    "CriticFit",
    "fit_critic",
    "gradient_penalty",
    "FlowMatchingFit",
    "fit_flow_matching",
    "flow_matching_loss",
    "ot_pairing",
    "path_straightness",
    "sample_flow",
    "SemiDiscreteOT",
    "laguerre_assign",
    "semidiscrete_ot",
]
