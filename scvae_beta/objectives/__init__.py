"""What each model penalises (one file per objective, behind :data:`OBJECTIVES`) and the
pure torch estimators of the KL decomposition (MI, TC, dimension-wise KL)."""

from scvae_beta.objectives.base import Objective
from scvae_beta.objectives.discriminator import TCDiscriminator, permute_dims
from scvae_beta.objectives.kl_decomposition import (
    ESTIMATORS,
    KLDecomposition,
    aggregate_log_densities,
    kl_decomposition,
    log_density_matrix,
    log_importance_weights,
)
from scvae_beta.objectives.registry import OBJECTIVES, build_objective, objective_class

__all__ = [
    "ESTIMATORS",
    "OBJECTIVES",
    "KLDecomposition",
    "Objective",
    "TCDiscriminator",
    "aggregate_log_densities",
    "build_objective",
    "kl_decomposition",
    "log_density_matrix",
    "log_importance_weights",
    "objective_class",
    "permute_dims",
]
