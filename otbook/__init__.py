"""otbook: optimal transport for machine learning, in PyTorch.

The library behind the otbook book. Every public name is documented in the book's API appendix.
"""

from .costs import Cost, CostMatrix, PointCloud, SumCost, TableCost, cost_matrix, pad_clouds
from .dataset_distance import DatasetDistance, dataset_distance, label_distances
from .decision_distance import DecisionDistance, decision_cost, decision_distance, topk_decisions
from .exact import emd, wasserstein_1d
from .gaussian import (GaussianBarycenter, GaussianMap, bures_wasserstein, gaussian_barycenter,
                       gaussian_map)
from .geo import LocationEncoder, Selection, greedy_selection, region_distances
from .gromov import gromov_divergence, gromov_objective, gromov_wasserstein
from .kernels import kernel_matrix, mmd, mmd_gaussians
from .plans import ClassReport, class_coupling, class_preservation, class_report
from .bispectral import bispectrum, polar_resample, power_spectrum, rotate_images
from .result import OTResult
from .sinkhorn import eps_relative, eps_schedule, sinkhorn, sinkhorn_divergence
from .sliced import sliced_wasserstein
from .transfer import BatchedMLP, batched_accuracy, source_permutation_test, train_batched
from .icnn import ICNN, hessian_logdet
from .maps import (EntropicMap, MapFit, barycentric_projection, entropic_map, fit_map, monge_gap,
                   soft_labels)
from .minibatch import MinibatchBounds, MinibatchOT, minibatch_bounds, minibatch_ot
from .energies import (Energy, interaction_energy, internal_energy, mmd_energy, potential_energy,
                       sinkhorn_energy)
from .flows import FlowResult, JKOResult, jko_icnn, jko_particles, particle_flow
from .generative import (CriticFit, FlowMatchingFit, SemiDiscreteOT, fit_critic,
                         fit_flow_matching, flow_matching_loss, gradient_penalty,
                         laguerre_assign, ot_pairing, path_straightness, sample_flow,
                         semidiscrete_ot)
from .barycenters import Barycenter, barycenter, interpolate
from . import data, energies, flows, generative, geo, icnn
from . import plot
from .notebook import glue, setup_notebook
from .utils import device, uniform

__version__ = "0.1.0"

__all__ = [
    "OTResult",
    "class_coupling",
    "class_preservation",
    "bispectrum",
    "polar_resample",
    "power_spectrum",
    "rotate_images",
    "class_report",
    "ClassReport",
    "plot",
    "data",
    "bures_wasserstein",
    "cost_matrix",
    "Cost",
    "CostMatrix",
    "PointCloud",
    "SumCost",
    "TableCost",
    "pad_clouds",
    "DatasetDistance",
    "dataset_distance",
    "label_distances",
    "BatchedMLP",
    "train_batched",
    "batched_accuracy",
    "source_permutation_test",
    "DecisionDistance",
    "decision_cost",
    "decision_distance",
    "topk_decisions",
    "device",
    "eps_relative",
    "eps_schedule",
    "emd",
    "gaussian_map",
    "GaussianMap",
    "geo",
    "greedy_selection",
    "LocationEncoder",
    "region_distances",
    "Selection",
    "gromov_divergence",
    "gromov_objective",
    "gromov_wasserstein",
    "kernel_matrix",
    "mmd",
    "mmd_gaussians",
    "sliced_wasserstein",
    "EntropicMap",
    "ICNN",
    "MapFit",
    "barycentric_projection",
    "entropic_map",
    "fit_map",
    "monge_gap",
    "soft_labels",
    "MinibatchBounds",
    "MinibatchOT",
    "minibatch_bounds",
    "minibatch_ot",
    "flows",
    "energies",
    "icnn",
    "Energy",
    "FlowResult",
    "JKOResult",
    "hessian_logdet",
    "interaction_energy",
    "internal_energy",
    "jko_icnn",
    "jko_particles",
    "mmd_energy",
    "particle_flow",
    "potential_energy",
    "sinkhorn_energy",
    "setup_notebook",
    "glue",
    "sinkhorn",
    "sinkhorn_divergence",
    "uniform",
    "wasserstein_1d",
    "generative",
    "CriticFit",
    "FlowMatchingFit",
    "SemiDiscreteOT",
    "fit_critic",
    "fit_flow_matching",
    "flow_matching_loss",
    "gradient_penalty",
    "laguerre_assign",
    "ot_pairing",
    "path_straightness",
    "sample_flow",
    "semidiscrete_ot",
    "Barycenter",
    "barycenter",
    "interpolate",
    "GaussianBarycenter",
    "gaussian_barycenter",
]
