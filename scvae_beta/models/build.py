"""Model name -> Pyro module."""

from __future__ import annotations

from scvae_beta.config import MODELS, ModelConfig
from scvae_beta.models.base import CountVAE
from scvae_beta.models.beta_tcvae import BetaTCVAE
from scvae_beta.models.beta_vae import BetaVAE
from scvae_beta.models.factor_vae import FactorVAE


def build_module(
    name: str, config: ModelConfig, *, disc_hidden: int = 128, disc_layers: int = 2
) -> CountVAE:
    """Instantiate the Pyro module for the model named ``name`` (one of ``MODELS``).

    ``disc_hidden`` and ``disc_layers`` shape FactorVAE's discriminator.
    """
    if name == "beta_vae":
        return BetaVAE(config)
    if name == "beta_tcvae":
        return BetaTCVAE(config)
    if name == "factor_vae":
        return FactorVAE(config, disc_hidden=disc_hidden, disc_layers=disc_layers)
    raise ValueError(f"model={name!r} is not supported; choose one of {list(MODELS)}")
