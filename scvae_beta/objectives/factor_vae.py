"""FactorVAE (Kim & Mnih 2018): total correlation from a discriminator on z."""

from __future__ import annotations

import torch
from torch import Tensor

from scvae_beta.models.elbo import ELBOTerms
from scvae_beta.objectives.base import Objective
from scvae_beta.objectives.discriminator import TCDiscriminator, permute_dims

#: Discriminator: Adam learning rate and betas, width and depth (Kim & Mnih's settings).
DISC_LR = 1e-4
DISC_BETAS = (0.5, 0.9)
DISC_HIDDEN = 128
DISC_LAYERS = 2


class FactorVAE(Objective):
    """``-log p(x|z) + anneal * (beta * KL + gamma * TC_disc)`` per cell.

    ``TC_disc`` is the mean logit of :attr:`discriminator` on the minibatch's samples of
    ``q(z)`` (the density-ratio estimate of the total correlation). The discriminator is
    trained by :meth:`auxiliary_step`, with its own Adam, to tell those samples from copies
    whose dimensions are permuted independently across the minibatch. With capacity the KL
    enters as ``|KL - C|``.
    """

    name = "factor_vae"
    default_gamma = 10.0
    history_columns = ("tc_disc",)

    def __init__(self, settings, n_latent: int) -> None:
        super().__init__(settings, n_latent)
        self.discriminator = TCDiscriminator(n_latent, DISC_HIDDEN, DISC_LAYERS)
        self._optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def check_weights(cls, settings) -> None:
        if settings.alpha != 1.0:
            raise ValueError("alpha is a weight of model='beta_tcvae'; factor_vae uses beta, gamma")

    def parts(self, terms: ELBOTerms, n_cells: int) -> dict[str, Tensor]:
        return {"tc_disc": self.discriminator.tc(terms.z)}

    def penalty(self, kl, parts, *, anneal=1.0, capacity=None) -> Tensor:
        kl_term = self.beta * self._kl_term(kl, capacity)
        return anneal * (kl_term + self.gamma * parts["tc_disc"])

    def report(self, z: Tensor, loc: Tensor, scale: Tensor) -> dict[str, float]:
        return {"tc_disc": float(self.discriminator.tc(z))}

    def _adam(self) -> torch.optim.Optimizer:
        if self._optimizer is None:  # created on first use, after the module is on its device
            self._optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=DISC_LR, betas=DISC_BETAS, foreach=True
            )
        return self._optimizer

    def auxiliary_step(self, z: Tensor, generator: torch.Generator) -> dict[str, float]:
        optimizer = self._adam()
        z = z.detach()
        loss = self.discriminator.loss(z, permute_dims(z, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"disc_loss": float(loss.detach())}

    def auxiliary_state_dict(self) -> dict:
        return {} if self._optimizer is None else {"discriminator": self._optimizer.state_dict()}

    def load_auxiliary_state_dict(self, state: dict) -> None:
        if "discriminator" in state:
            self._adam().load_state_dict(state["discriminator"])
