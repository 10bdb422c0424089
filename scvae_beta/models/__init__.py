"""The maths: the Pyro model/guide module, its decoders, the ELBO and the loss module."""

from scvae_beta.models.base import CELLS, LATENT, OBS, CountVAE
from scvae_beta.models.decoders import DECODERS
from scvae_beta.models.elbo import ELBOTerms, MeanFieldELBO
from scvae_beta.models.loss import LossModule, StepLoss

__all__ = [
    "CELLS",
    "LATENT",
    "OBS",
    "CountVAE",
    "DECODERS",
    "ELBOTerms",
    "MeanFieldELBO",
    "LossModule",
    "StepLoss",
]
