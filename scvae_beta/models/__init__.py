"""Pyro model/guide pairs and the ELBO that trains them."""

from scvae_beta.models.base import CELLS, LATENT, OBS, CountVAE
from scvae_beta.models.beta_vae import BetaVAE, build_module
from scvae_beta.models.elbo import ELBOTerms, MeanFieldELBO

__all__ = [
    "CELLS",
    "LATENT",
    "OBS",
    "CountVAE",
    "BetaVAE",
    "build_module",
    "ELBOTerms",
    "MeanFieldELBO",
]
