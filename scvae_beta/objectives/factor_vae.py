"""FactorVAE (Kim & Mnih 2018): total correlation from a discriminator on z."""

from __future__ import annotations

import torch
import torch.distributed as dist
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

    Under ``torch.distributed`` (a default process group of several ranks, each with its
    part of every minibatch) the discriminator's gradients are averaged over the ranks before
    its Adam step, so every rank keeps the same discriminator (the VAE's gradients are
    averaged by ``DistributedDataParallel``), and the ``disc_loss`` it returns is the mean
    over the ranks. Each rank permutes the codes of its own part: the discriminator learns
    from products of the marginals within the parts, not within the whole minibatch as one
    process would, and ``TC_disc`` is the mean logit of each rank's part.
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
        value = loss.detach().clone()
        _average_over_ranks([*(p.grad for p in self.discriminator.parameters()), value])
        optimizer.step()
        return {"disc_loss": float(value)}

    def auxiliary_state_dict(self) -> dict:
        return {} if self._optimizer is None else {"discriminator": self._optimizer.state_dict()}

    def load_auxiliary_state_dict(self, state: dict) -> None:
        if "discriminator" in state:
            self._adam().load_state_dict(state["discriminator"])


def _average_over_ranks(tensors: list[Tensor]) -> None:
    """Average each tensor over the ranks of the default process group, in place and in one
    all-reduce (nothing outside a process group of several ranks). Every rank must call it
    in step, with tensors of the same shapes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, mean in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(mean.view_as(t))
