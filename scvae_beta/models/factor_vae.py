"""FactorVAE on raw counts (Kim & Mnih 2018): TC penalised through a discriminator."""

from __future__ import annotations

from scvae_beta.config import ModelConfig
from scvae_beta.models.base import CountVAE
from scvae_beta.objectives import TCDiscriminator


class FactorVAE(CountVAE):
    """FactorVAE: the beta-VAE's model and guide plus a discriminator on z.

    Generative story and guide as :class:`~scvae_beta.models.BetaVAE`. Loss per cell::

        -E_q[log p(x_n | z_n)] + beta * KL(q(z_n | x_n) || p(z_n)) + gamma * TC_disc

    where ``TC_disc`` is the mean logit of :attr:`discriminator` on the minibatch's samples of
    ``q(z)`` (the density-ratio estimate of the total correlation). The discriminator is
    trained with its own optimiser to tell those samples from copies whose dimensions are
    permuted independently across the minibatch; its parameters are not in
    :meth:`vae_parameters`.
    """

    def __init__(
        self, config: ModelConfig, *, disc_hidden: int = 128, disc_layers: int = 2
    ) -> None:
        super().__init__(config)
        self.discriminator = TCDiscriminator(config.n_latent, disc_hidden, disc_layers)
