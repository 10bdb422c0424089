"""The one base class: a Pyro model/guide pair over cells with a count decoder.

Site names are module constants so that tests, ELBOs and downstream code agree on them.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import Tensor, nn

from scvae_beta.config import ModelConfig
from scvae_beta.likelihoods import count_distribution
from scvae_beta.models.decoders import DECODERS
from scvae_beta.nn import GaussianEncoder

#: Name of the plate over cells.
CELLS = "cells"
#: Name of the latent sample site.
LATENT = "z"
#: Name of the observed counts site.
OBS = "x"
#: Name under which the module's parameters are registered in Pyro's param store.
PYRO_NAME = "scvae_beta"


def kl_weighting(weight: float | Tensor):
    """Context that weights the latent site by ``weight`` (``poutine.scale``).

    A weight of exactly 0 (the first step of a warm-up) uses ``poutine.mask(False)``
    because ``poutine.scale`` only accepts positive scales.
    """
    if isinstance(weight, Tensor):
        return poutine.scale(scale=weight)
    if weight == 1.0:
        return contextlib.nullcontext()
    if weight == 0.0:
        return poutine.mask(mask=torch.tensor(False))
    return poutine.scale(scale=float(weight))


class CountVAE(nn.Module):
    """Encoder, decoder and dispersion of a VAE on raw counts, with ``model`` and ``guide``.

    Generative story, for cell ``n`` with observed library size ``l_n`` and batch ``s_n``::

        z_n      ~ Normal(0, I_D)                                   (prior, D = n_latent)
        rho_n    = softmax(f_dec(z_n, onehot(s_n)))                 (gene proportions, sum 1)
        mu_ng    = l_n * rho_ng                                     (NB mean)
        x_ng     ~ NB(mu_ng, theta_g)      or theta_{s_n g} with dispersion="gene-batch"
                   (ZINB adds dropout sigmoid(h_ng); Poisson drops theta)

    Guide: ``q(z_n | x_n) = Normal(mu_enc(log1p x_n), diag sigma_enc(log1p x_n)^2)``.
    ``f_dec`` is the decoder named by ``config.decoder`` (see
    :data:`~scvae_beta.models.DECODERS`). What is penalised besides ``-log p(x | z)`` is the
    objective's business (:mod:`scvae_beta.objectives`); the β-VAE's ``beta * anneal`` enters
    here as ``kl_weight``, a ``poutine.scale`` on the latent site.

    Both methods share one signature::

        model(x, log_library, batch_index=None, *, n_cells=None, subsample=None, kl_weight=1.0)

    Parameters (of ``model`` / ``guide``)
    -------------------------------------
    x
        Counts of a minibatch, shape ``(B, G)``, float: dense, or a coalesced sparse COO
        tensor of the nonzero counts (what the loader passes; nothing ``(B, G)`` is then
        materialised but ``log1p(x)`` for the encoder).
    log_library
        Log of each cell's observed total count, shape ``(B,)``.
    batch_index
        Batch code of each cell, shape ``(B,)`` int64, or ``None`` without a batch key.
    n_cells
        Number of cells in the whole (training) data set; the ``cells`` plate scales the
        minibatch log-densities by ``n_cells / B`` so the loss is unbiased for the full data.
    subsample
        Indices of the minibatch cells in the data set, shape ``(B,)`` (defaults to ``0..B-1``).
    kl_weight
        Weight on the latent site in both model and guide (beta, possibly annealed).

    The module is registered in Pyro's param store once, by :meth:`register` (``fit`` calls
    it), not inside ``model``/``guide``: a ``pyro.module`` call there records a param site per
    tensor on every step (~0.3 ms each call here). Training uses a torch optimiser over
    ``module.parameters()``; to train with ``pyro.infer.SVI`` and a ``pyro.optim`` optimiser
    instead, wrap ``model`` and ``guide`` in functions that call :meth:`register` first.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        n_cov = c.n_batches
        self.encoder = GaussianEncoder(
            c.n_genes,
            c.n_latent,
            n_covariates=n_cov if c.encode_batch else 0,
            n_hidden=c.n_hidden,
            n_layers=c.n_layers,
            dropout=c.dropout,
            norm=c.norm,
        )
        decoder_cls = DECODERS[c.decoder]
        self.decoder = decoder_cls(
            c.n_latent,
            c.n_genes,
            n_covariates=n_cov,
            n_hidden=c.decoder_hidden or getattr(decoder_cls, "default_hidden", c.n_hidden),
            n_layers=c.n_layers,
            norm=c.norm,
            zero_inflated=c.likelihood == "zinb",
        )
        if c.likelihood in ("nb", "zinb"):
            rows = c.n_batches if c.dispersion == "gene-batch" else 1
            self.log_theta = nn.Parameter(torch.zeros(rows, c.n_genes))
        else:
            self.log_theta = None

    # ------------------------------------------------------------------ pieces

    def covariates(self, batch_index: Tensor | None) -> Tensor | None:
        """One-hot batch covariates ``(B, n_batches)``, or ``None``."""
        if self.config.n_batches == 0:
            return None
        if batch_index is None:
            raise ValueError("this model was trained with a batch key; pass batch_index")
        return F.one_hot(batch_index, self.config.n_batches).to(self.encoder.loc.weight.dtype)

    def dispersion(self, batch_index: Tensor | None) -> Tensor | None:
        """Log inverse dispersion: ``(G,)`` per gene or ``(B, G)`` per gene and batch."""
        if self.log_theta is None:
            return None
        if self.config.dispersion == "gene-batch":
            return self.log_theta.index_select(0, batch_index)  # deterministic backward
        return self.log_theta[0]

    def prior(self, loc_like: Tensor) -> dist.Normal:
        """The prior p(z) = N(0, I), shaped like ``loc_like`` ``(B, D)`` (no event dims)."""
        zeros = torch.zeros_like(loc_like)
        return dist.Normal(zeros, torch.ones_like(zeros), validate_args=False)

    def kl_to_prior(self, loc: Tensor, scale: Tensor) -> Tensor:
        """Closed-form KL(q(z_d | x) || p(z_d)) per cell and dimension, shape ``(B, D)``."""
        q = dist.Normal(loc, scale, validate_args=False)
        return torch.distributions.kl_divergence(q, self.prior(loc))

    def encode(self, x: Tensor, batch_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior ``loc, scale`` of q(z | x), each ``(B, n_latent)``."""
        cov = self.covariates(batch_index) if self.config.encode_batch else None
        return self.encoder(x, cov)

    def decode(self, z: Tensor, log_library: Tensor, batch_index: Tensor | None = None):
        """Count distribution p(x | z) with mean ``library * softmax(decoder(z))``."""
        logits, zi_logits = self.decoder(z, self.covariates(batch_index))
        log_mu = log_library.unsqueeze(-1) + F.log_softmax(logits, dim=-1)
        return count_distribution(
            self.config.likelihood, log_mu, self.dispersion(batch_index), zi_logits
        )

    def keep_latents(self, keep) -> CountVAE:
        """A copy over the latent dimensions ``keep`` (indices, in order): the encoder's
        output rows, the decoder's weights for those dimensions (see each decoder's
        ``keep_latents``) and the dispersion are copied; nothing else changes."""
        keep = torch.as_tensor(keep, dtype=torch.long)
        if keep.ndim != 1 or len(keep) == 0 or len(torch.unique(keep)) != len(keep):
            raise ValueError(f"keep must be distinct latent indices, got {keep.tolist()}")
        if int(keep.min()) < 0 or int(keep.max()) >= self.config.n_latent:
            raise ValueError(f"keep {keep.tolist()} out of range for {self.config.n_latent} dims")
        encoder = self.encoder.keep_latents(keep)
        decoder = self.decoder.keep_latents(keep)
        # The decoder's class can change (an additive decoder that lost its global dimension):
        # the configuration names the class, so that a saved copy rebuilds the same decoder.
        name = next(k for k, cls in DECODERS.items() if type(decoder) is cls)
        new = CountVAE(dataclasses.replace(self.config, n_latent=len(keep), decoder=name))
        new.encoder, new.decoder = encoder, decoder
        if self.log_theta is not None:
            with torch.no_grad():
                new.log_theta.copy_(self.log_theta)
        return new.to(self.encoder.loc.weight.device)

    def register(self) -> CountVAE:
        """Register the parameters in Pyro's param store under ``"scvae_beta"``."""
        pyro.module(PYRO_NAME, self)
        return self

    def _plate(self, x: Tensor, n_cells: int | None, subsample: Tensor | None):
        if subsample is None:
            subsample = torch.arange(x.shape[0], device=x.device)
        return pyro.plate(CELLS, size=n_cells or x.shape[0], subsample=subsample)

    # ------------------------------------------------------------------ Pyro

    def model(
        self,
        x: Tensor,
        log_library: Tensor,
        batch_index: Tensor | None = None,
        *,
        n_cells: int | None = None,
        subsample: Tensor | None = None,
        kl_weight: float | Tensor = 1.0,
    ) -> Tensor:
        with self._plate(x, n_cells, subsample):
            prior = self.prior(log_library.new_empty((x.shape[0], self.config.n_latent)))
            prior = prior.to_event(1)
            with kl_weighting(kl_weight):
                z = pyro.sample(LATENT, prior)
            return pyro.sample(OBS, self.decode(z, log_library, batch_index), obs=x)

    def guide(
        self,
        x: Tensor,
        log_library: Tensor,
        batch_index: Tensor | None = None,
        *,
        n_cells: int | None = None,
        subsample: Tensor | None = None,
        kl_weight: float | Tensor = 1.0,
    ) -> Tensor:
        with self._plate(x, n_cells, subsample):
            loc, scale = self.encode(x, batch_index)
            with kl_weighting(kl_weight):
                return pyro.sample(LATENT, dist.Normal(loc, scale, validate_args=False).to_event(1))
