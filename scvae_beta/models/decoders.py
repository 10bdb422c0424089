"""Decoder name -> class: ``ModelConfig.decoder`` (``fit(decoder=...)``) picks one.

Every decoder is an ``nn.Module`` built as ``cls(n_latent, n_genes, *, n_covariates,
n_hidden, n_layers, norm, zero_inflated)`` whose ``forward(z, covariates)`` returns
``(logits, zi_logits)`` of shape ``(B, G)`` (``zi_logits`` ``None`` unless zero-inflated);
``log_softmax(logits)`` are the log proportions of each cell's library, and
``keep_latents(keep)`` returns a decoder over a subset of the latent dimensions with the
matching weights (dimension pruning). A class attribute ``default_hidden`` is its hidden
width when ``decoder_hidden`` is ``None`` (otherwise ``n_hidden``). Adding a decoder is its
class plus one entry here (and in :data:`scvae_beta.settings.DecoderName`, for editors).

- ``"mlp"``: :class:`~scvae_beta.nn.CountDecoder`, an MLP on ``[z, batch one-hot]``.
- ``"additive"``: :class:`~scvae_beta.nn.AdditiveDecoder`, one network per latent dimension,
  combined by ``logsumexp`` (a gene program per dimension, DRVI's form), plus a linear batch
  term.
- ``"additive_fast"``: :class:`~scvae_beta.nn.FastAdditiveDecoder`, the same with the last
  layer linear in expression space, so the combination is one matrix product (cheaper,
  disentangled less in the benchmark).
- ``"additive_global"``: :class:`~scvae_beta.nn.GlobalAdditiveDecoder`, ``"additive"`` whose
  last latent dimension is global: its program is added in log space (it scales every other
  program) instead of entering the ``logsumexp``.
"""

from __future__ import annotations

from torch import nn

from scvae_beta.nn import (
    AdditiveDecoder,
    CountDecoder,
    FastAdditiveDecoder,
    GlobalAdditiveDecoder,
)

DECODERS: dict[str, type[nn.Module]] = {
    "mlp": CountDecoder,
    "additive": AdditiveDecoder,
    "additive_fast": FastAdditiveDecoder,
    "additive_global": GlobalAdditiveDecoder,
}
