"""Pyro model/guide pairs, the ELBO that trains them and the per-model objective."""

from scvae_beta.models.base import CELLS, LATENT, OBS, CountVAE
from scvae_beta.models.beta_tcvae import BetaTCVAE
from scvae_beta.models.beta_vae import BetaVAE
from scvae_beta.models.build import build_module
from scvae_beta.models.elbo import ELBOTerms, MeanFieldELBO
from scvae_beta.models.factor_vae import FactorVAE
from scvae_beta.models.objective import Objective, StepLoss, discriminator_step

__all__ = [
    "CELLS",
    "LATENT",
    "OBS",
    "CountVAE",
    "BetaVAE",
    "BetaTCVAE",
    "FactorVAE",
    "build_module",
    "ELBOTerms",
    "MeanFieldELBO",
    "Objective",
    "StepLoss",
    "discriminator_step",
]
