"""FactorVAE's total-correlation estimate by a discriminator (Kim & Mnih 2018).

A classifier learns to tell samples of the aggregate posterior ``q(z)`` (the minibatch's
codes) from samples of the product of its marginals ``prod_d q(z_d)`` (the same codes with
every dimension permuted independently across the minibatch). With balanced classes the
optimal classifier's logit is ``log q(z) - log prod_d q(z_d)`` (the density-ratio trick), so
the mean logit over samples of ``q(z)`` estimates ``TC = KL(q(z) || prod_d q(z_d))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TCDiscriminator", "permute_dims"]


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Permute each column of ``z`` ``(M, D)`` independently across the rows.

    The result is a sample of ``prod_d q(z_d)`` when the rows of ``z`` are samples of ``q(z)``.
    """
    m, d = z.shape
    keys = torch.rand(m, d, generator=generator, device=z.device if generator is None else "cpu")
    order = keys.to(z.device).argsort(dim=0)
    return z.gather(0, order)


class TCDiscriminator(nn.Module):
    """MLP ``(M, D) -> (M,)`` logits that ``z`` comes from ``q(z)`` rather than ``prod_d q(z_d)``.

    Parameters
    ----------
    n_latent
        Dimension of z.
    n_hidden, n_layers
        Width and number of hidden layers (LeakyReLU 0.2).
    """

    def __init__(self, n_latent: int, n_hidden: int = 128, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_latent
        for _ in range(n_layers):
            layers += [nn.Linear(width, n_hidden), nn.LeakyReLU(0.2)]
            width = n_hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)

    def tc(self, z: Tensor) -> Tensor:
        """Estimate of TC (nats) from samples ``z`` of ``q(z)``: the mean logit."""
        return self(z).mean()

    def loss(self, z: Tensor, z_permuted: Tensor) -> Tensor:
        """Balanced binary cross-entropy: ``z`` is class 1 (joint), ``z_permuted`` class 0."""
        real, fake = self(z), self(z_permuted)
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
