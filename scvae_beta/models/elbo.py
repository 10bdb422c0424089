"""One small custom ELBO: analytic KL per latent site, named terms returned for logging.

It computes exactly what Pyro's ``TraceMeanField_ELBO`` computes for a single particle
(``-sum_obs scale * log p(x|z) + sum_latent scale * KL(q || p)``, where each site's scale
carries the plate's ``n_cells / B`` and the ``poutine.scale`` KL weight), but also hands back
the unweighted per-cell log-likelihood and per-dimension KL, so the training loop can log
the reconstruction term and KL of every dimension without computing anything twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import kl_divergence


class ELBOTerms(NamedTuple):
    """Result of one ELBO evaluation on a minibatch.

    Attributes
    ----------
    loss
        Differentiable scalar: the minibatch estimate of the full-data negative ELBO with
        each site's scale applied (``n_cells / B`` and the KL weight).
    reconstruction
        Differentiable scalar: the observed sites' part of ``loss``,
        ``-(n_cells / B) * sum_n log p(x_n | z_n)``; objectives that replace the KL term add
        their own penalty to it.
    log_lik
        Detached ``(B,)``: log p(x_n | z_n) of each cell, unscaled.
    kl
        Detached ``(B, D)``: KL(q(z_nd | x_n) || p(z_nd)) of each cell and latent dimension,
        unweighted.
    z, loc, scale
        ``(B, D)``: the posterior sample and the guide's Normal parameters (attached to the
        graph), for estimators that need them and for inference passes.
    """

    loss: Tensor
    reconstruction: Tensor
    log_lik: Tensor
    kl: Tensor
    z: Tensor
    loc: Tensor
    scale: Tensor


def _base(d):
    """Strip ``Independent`` wrappers so the KL comes out per dimension."""
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def _weighted_sum(values: Tensor, site: dict) -> Tensor:
    scale, mask = site["scale"], site["mask"]
    if mask is not None:
        values = torch.where(torch.as_tensor(mask, device=values.device), values, 0.0)
    return (values * scale).sum()


class MeanFieldELBO:
    """Single-sample ELBO with closed-form KL terms (reparametrised guides only).

    ``elbo(model, guide, *args, **kwargs)`` runs the guide, replays the model against it and
    returns :class:`ELBOTerms`. The per-dimension KL requires a closed form for the
    *unwrapped* guide and prior distributions, and the guide's latent distributions must
    have ``loc`` and ``scale`` (Normal here).
    """

    def __call__(self, model: Callable, guide: Callable, *args, **kwargs) -> ELBOTerms:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        recon = 0.0
        kl_loss = 0.0
        log_liks, kls, zs, locs, scales = [], [], [], [], []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                lp = site["fn"].log_prob(site["value"])
                recon = recon - _weighted_sum(lp, site)
                log_liks.append(lp.detach())
            else:
                guide_site = guide_trace.nodes[name]
                q = _base(guide_site["fn"])
                kl = kl_divergence(q, _base(site["fn"]))
                if kl.dim() == 1:
                    kl = kl.unsqueeze(-1)
                kl_loss = kl_loss + _weighted_sum(kl.sum(-1), guide_site)
                kls.append(kl.detach())
                zs.append(guide_site["value"])
                locs.append(q.loc)
                scales.append(q.scale)
        log_lik = torch.stack(log_liks).sum(0) if len(log_liks) > 1 else log_liks[0]

        def cat(ts):
            return ts[0] if len(ts) == 1 else torch.cat(ts, dim=-1)

        return ELBOTerms(recon + kl_loss, recon, log_lik, cat(kls), cat(zs), cat(locs), cat(scales))
