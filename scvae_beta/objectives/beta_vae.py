"""beta-VAE (Higgins et al. 2017): the KL to the prior weighted by ``beta``."""

from __future__ import annotations

from scvae_beta.objectives.base import Objective


class BetaVAE(Objective):
    """``-log p(x|z) + anneal * beta * KL(q(z|x) || p(z))`` per cell.

    Without capacity, ``beta * anneal`` is a ``poutine.scale`` on the latent site (model and
    guide) and the ELBO's own loss is used; with ``capacity = (C_min, C_max)`` (Burgess et al.
    2018) the latent site runs at weight 1 and the penalty is ``anneal * beta * |KL - C|``.
    """

    name = "beta_vae"
    pyro_scale = True

    @classmethod
    def check_weights(cls, settings) -> None:
        if settings.alpha != 1.0 or settings.gamma not in (None, cls.default_gamma):
            raise ValueError(
                "alpha and gamma are weights of model='beta_tcvae' (and gamma of 'factor_vae'); "
                "for model='beta_vae' set only beta"
            )
