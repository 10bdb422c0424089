"""Model name -> objective class: the only place a model name is branched on."""

from __future__ import annotations

from scvae_beta.objectives.base import Objective
from scvae_beta.objectives.beta_tcvae import BetaTCVAE
from scvae_beta.objectives.beta_vae import BetaVAE
from scvae_beta.objectives.factor_vae import FactorVAE

#: ``fit(model=...)`` -> objective class.
OBJECTIVES: dict[str, type[Objective]] = {
    "beta_vae": BetaVAE,
    "beta_tcvae": BetaTCVAE,
    "factor_vae": FactorVAE,
}


def objective_class(name: str) -> type[Objective]:
    """The class registered under ``name``, or a ``ValueError`` listing the choices."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"model={name!r} is not supported; choose one of {list(OBJECTIVES)}"
        ) from None


def build_objective(settings, n_latent: int) -> Objective:
    """The objective of ``settings.model`` (``settings`` resolved)."""
    return objective_class(settings.model)(settings, n_latent)
