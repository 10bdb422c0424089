"""Tools (scanpy-style): read a fit's outputs from an AnnData, write results under its key."""

from scvae_beta.tl._associations import dimension_associations
from scvae_beta.tl._prune import prune_dimensions
from scvae_beta.tl._traversal import latent_traversal

__all__ = ["dimension_associations", "latent_traversal", "prune_dimensions"]
