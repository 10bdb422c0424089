"""The loss of every model in one place: reconstruction plus the model's KL-type penalty.

``Objective(config)(module, minibatch, n_cells=..., anneal=..., capacity=...)`` returns a
:class:`StepLoss` whose ``loss`` is the minibatch estimate of the *full-data* loss (the
``cells`` plate scales the reconstruction by ``n_cells / B``; the penalty, a mean per cell, is
multiplied by ``n_cells``), so it is on the same scale as Pyro's ELBO.

- ``"beta_vae"`` without capacity keeps the Pyro route: ``kl_weight = beta * anneal`` is a
  ``poutine.scale`` on the latent site and :class:`MeanFieldELBO`'s loss is used as is.
- Everything else runs the latent site with weight 1 and adds :meth:`Objective.penalty`, the
  only place where MI, TC, dimension-wise KL, the discriminator's TC and capacity are
  combined (see :class:`~scvae_beta.config.ObjectiveConfig` for the formulas).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from scvae_beta.config import ObjectiveConfig
from scvae_beta.data.counts import Minibatch
from scvae_beta.models.base import CountVAE
from scvae_beta.models.elbo import ELBOTerms, MeanFieldELBO
from scvae_beta.objectives import kl_decomposition, permute_dims


class StepLoss(NamedTuple):
    """Loss of one minibatch.

    Attributes
    ----------
    loss
        Differentiable scalar, full-data scale.
    terms
        The ELBO pieces (per-cell log-likelihood, per-dimension KL, z, loc, scale).
    parts
        Detached per-cell means of the penalty's terms (``mi``, ``tc``, ``dw_kl`` for
        beta-TCVAE, ``tc_disc`` for FactorVAE) and ``penalty`` itself.
    """

    loss: Tensor
    terms: ELBOTerms
    parts: dict[str, Tensor]


class Objective:
    """Loss of the model named in ``config`` (see the module docstring)."""

    def __init__(self, config: ObjectiveConfig) -> None:
        self.config = config
        self.elbo = MeanFieldELBO()

    @property
    def uses_pyro_scale(self) -> bool:
        """Whether the KL weight goes in as ``poutine.scale`` (beta-VAE without capacity)."""
        return self.config.model == "beta_vae" and self.config.capacity is None

    def penalty(
        self,
        kl: Tensor,
        parts: dict[str, Tensor],
        *,
        anneal: float = 1.0,
        capacity: float | None = None,
    ) -> Tensor:
        """Penalty per cell from the mean KL ``kl`` and the model's ``parts``.

        ``anneal`` is the schedule's factor in [0, 1]; ``capacity`` the current ``C`` (or
        ``None``). For beta-TCVAE, ``kl`` is ignored: its KL is ``mi + tc + dw_kl``.
        """
        c = self.config
        if c.model == "beta_tcvae":
            mi, tc, dw = parts["mi"], parts["tc"], parts["dw_kl"]
            f = {t: (anneal if t in c.anneal_terms else 1.0) for t in ("mi", "tc", "dw_kl")}
            if capacity is None:
                return f["mi"] * c.alpha * mi + f["tc"] * c.beta * tc + f["dw_kl"] * c.gamma * dw
            extra = (c.alpha - 1) * mi + (c.beta - 1) * tc + (c.gamma - 1) * dw
            return anneal * ((mi + tc + dw - capacity).abs() + extra)
        kl_term = kl if capacity is None else (kl - capacity).abs()
        out = c.beta * kl_term
        if c.model == "factor_vae":
            out = out + c.gamma * parts["tc_disc"]
        return anneal * out

    def __call__(
        self,
        module: CountVAE,
        mb: Minibatch,
        *,
        n_cells: int,
        anneal: float = 1.0,
        capacity: float | None = None,
    ) -> StepLoss:
        c = self.config
        weight = c.beta * anneal if self.uses_pyro_scale else 1.0
        terms = self.elbo(
            module.model,
            module.guide,
            mb.x,
            mb.log_library,
            mb.batch_index,
            n_cells=n_cells,
            subsample=mb.indices,
            kl_weight=weight,
        )
        if self.uses_pyro_scale:
            return StepLoss(terms.loss, terms, {})
        parts = self.parts(module, terms, n_cells)
        kl = (
            module.kl_to_prior(terms.loc, terms.scale).sum(-1).mean()
            if c.model != "beta_tcvae"
            else None
        )
        pen = self.penalty(kl, parts, anneal=anneal, capacity=capacity)
        detached = {k: v.detach() for k, v in parts.items()}
        detached["penalty"] = pen.detach()
        return StepLoss(terms.reconstruction + n_cells * pen, terms, detached)

    def parts(self, module: CountVAE, terms: ELBOTerms, n_cells: int) -> dict[str, Tensor]:
        """The model's differentiable penalty terms on one minibatch."""
        c = self.config
        if c.model == "beta_tcvae":
            d = kl_decomposition(
                terms.z,
                terms.loc,
                terms.scale,
                dataset_size=n_cells,
                estimator=c.tc_estimator,
                block_size=c.tc_block_size,
            )
            return {"mi": d.mi, "tc": d.tc, "dw_kl": d.dw_kl}
        if c.model == "factor_vae":
            return {"tc_disc": module.discriminator.tc(terms.z)}
        return {}


def discriminator_step(
    module: CountVAE,
    z: Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> float:
    """One update of FactorVAE's discriminator on detached codes ``z`` ``(B, D)``; its loss."""
    z = z.detach()
    loss = module.discriminator.loss(z, permute_dims(z, generator))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
