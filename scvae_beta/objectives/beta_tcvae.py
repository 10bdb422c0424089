"""beta-TCVAE (Chen et al. 2018): MI, TC and dimension-wise KL weighted separately."""

from __future__ import annotations

from torch import Tensor

from scvae_beta.models.elbo import ELBOTerms
from scvae_beta.objectives.base import Objective
from scvae_beta.objectives.kl_decomposition import kl_decomposition


class BetaTCVAE(Objective):
    """``-log p(x|z) + f_mi alpha MI + f_tc beta TC + f_dw gamma dw_KL`` per cell.

    The three terms are estimated on each minibatch by
    :func:`~scvae_beta.objectives.kl_decomposition` (``tc_estimator``, ``dataset_size`` = the
    number of training cells, blocks of at most ``tc_block_size`` cells); ``f_t`` is the
    annealing factor for the terms in ``kl_anneal_terms`` and 1 for the others. With
    ``capacity``: ``anneal * (|MI + TC + dw_KL - C| + (alpha-1) MI + (beta-1) TC +
    (gamma-1) dw_KL)``, which is the usual loss at ``C = 0``.
    """

    name = "beta_tcvae"
    history_columns = ("mi", "tc", "dw_kl")

    def parts(self, terms: ELBOTerms, n_cells: int) -> dict[str, Tensor]:
        d = kl_decomposition(
            terms.z,
            terms.loc,
            terms.scale,
            dataset_size=n_cells,
            estimator=self.estimator,
            block_size=self.block_size,
        )
        return {"mi": d.mi, "tc": d.tc, "dw_kl": d.dw_kl}

    def penalty(self, kl, parts, *, anneal=1.0, capacity=None) -> Tensor:
        mi, tc, dw = parts["mi"], parts["tc"], parts["dw_kl"]
        if capacity is None:
            f = {t: (anneal if t in self.anneal_terms else 1.0) for t in ("mi", "tc", "dw_kl")}
            return (
                f["mi"] * self.alpha * mi + f["tc"] * self.beta * tc + f["dw_kl"] * self.gamma * dw
            )
        extra = (self.alpha - 1) * mi + (self.beta - 1) * tc + (self.gamma - 1) * dw
        return anneal * ((mi + tc + dw - capacity).abs() + extra)
