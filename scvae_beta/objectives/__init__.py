"""Pure torch estimators of the KL decomposition (MI, TC, dimension-wise KL)."""

from scvae_beta.objectives.discriminator import TCDiscriminator, permute_dims
from scvae_beta.objectives.kl_decomposition import (
    ESTIMATORS,
    KLDecomposition,
    aggregate_log_densities,
    kl_decomposition,
    log_density_matrix,
    log_importance_weights,
)

__all__ = [
    "ESTIMATORS",
    "KLDecomposition",
    "TCDiscriminator",
    "aggregate_log_densities",
    "kl_decomposition",
    "log_density_matrix",
    "log_importance_weights",
    "permute_dims",
]
