"""The loss of one training step as an ``nn.Module``: ``forward(minibatch) -> StepLoss``.

:class:`LossModule` holds the :class:`~scvae_beta.models.CountVAE` and the fit's
:class:`~scvae_beta.objectives.base.Objective` (with any auxiliary network), so one module
carries every trained parameter and its ``forward`` is the loss: what
``DistributedDataParallel`` or autocast wraps (in the spirit of Pyro's ELBO-as-module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from torch import Tensor, nn

from scvae_beta.models.base import CountVAE
from scvae_beta.models.elbo import ELBOTerms, MeanFieldELBO

if TYPE_CHECKING:
    from scvae_beta.data.counts import Minibatch
    from scvae_beta.objectives.base import Objective


class StepLoss(NamedTuple):
    """Loss of one minibatch.

    Attributes
    ----------
    loss
        Differentiable scalar: the minibatch estimate of the *full-data* loss (the ``cells``
        plate scales the reconstruction by ``n_cells / B``; the penalty, a mean per cell, is
        multiplied by ``n_cells``), on the same scale as Pyro's ELBO.
    terms
        The ELBO pieces (per-cell log-likelihood, per-dimension KL, z, loc, scale).
    parts
        Detached per-cell means of the objective's terms (e.g. ``mi``, ``tc``, ``dw_kl``;
        ``tc_disc``) and ``penalty``, the penalty per cell that entered ``loss``.
    """

    loss: Tensor
    terms: ELBOTerms
    parts: dict[str, Tensor]


class LossModule(nn.Module):
    """``vae`` + ``objective``; ``forward`` returns the step's :class:`StepLoss`.

    Parameters
    ----------
    vae
        The Pyro model/guide module.
    objective
        What the model penalises (see :mod:`scvae_beta.objectives`).
    """

    def __init__(self, vae: CountVAE, objective: Objective) -> None:
        super().__init__()
        self.vae = vae
        self.objective = objective
        self.elbo = MeanFieldELBO()

    def vae_parameters(self) -> list[nn.Parameter]:
        """Parameters of encoder, decoder and dispersion (what the main optimiser updates);
        auxiliary networks of the objective have their own optimiser."""
        return [p for p in self.vae.parameters() if p.requires_grad]

    def forward(
        self,
        mb: Minibatch,
        n_cells: int,
        anneal: float = 1.0,
        capacity: float | None = None,
    ) -> StepLoss:
        """Loss of minibatch ``mb`` as an estimate for ``n_cells`` training cells.

        ``anneal`` is the KL schedule's factor in [0, 1], ``capacity`` the current ``C``.
        """
        obj, vae = self.objective, self.vae
        terms = self.elbo(
            vae.model,
            vae.guide,
            mb.x,
            mb.log_library,
            mb.batch_index,
            n_cells=n_cells,
            subsample=mb.indices,
            kl_weight=obj.kl_weight(anneal),
        )
        if obj.uses_pyro_scale:
            # The KL is already in terms.loss, weighted by poutine.scale; report its penalty.
            pen = anneal * obj.beta * terms.kl.sum(-1).mean()
            return StepLoss(terms.loss, terms, {"penalty": pen})
        parts = obj.parts(terms, n_cells)
        kl = vae.kl_to_prior(terms.loc, terms.scale).sum(-1).mean()
        pen = obj.penalty(kl, parts, anneal=anneal, capacity=capacity)
        detached = {k: v.detach() for k, v in parts.items()}
        detached["penalty"] = pen.detach()
        return StepLoss(terms.reconstruction + n_cells * pen, terms, detached)
