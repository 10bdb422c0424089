"""Decoder name -> class: ``ModelConfig.decoder`` (``fit(decoder=...)``) picks one.

Every decoder is an ``nn.Module`` built as ``cls(n_latent, n_genes, *, n_covariates,
n_hidden, n_layers, norm, zero_inflated)`` whose ``forward(z, covariates)`` returns
``(logits, zi_logits)`` of shape ``(B, G)`` (``zi_logits`` ``None`` unless zero-inflated);
``log_softmax(logits)`` are the log proportions of each cell's library. Adding a decoder is
its class plus one entry here (and in :data:`scvae_beta.settings.DecoderName`, for editors).
"""

from __future__ import annotations

from torch import nn

from scvae_beta.nn import CountDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "mlp": CountDecoder,
}
