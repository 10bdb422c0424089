"""Neural building blocks: an MLP, the Gaussian encoder, the count decoders and batch norm
synchronised over the ranks of a process group."""

from scvae_beta.nn.additive import AdditiveDecoder, FastAdditiveDecoder, GlobalAdditiveDecoder
from scvae_beta.nn.modules import MLP, CountDecoder, GaussianEncoder
from scvae_beta.nn.sync_norm import SyncBatchNorm1d

__all__ = [
    "MLP",
    "GaussianEncoder",
    "CountDecoder",
    "AdditiveDecoder",
    "FastAdditiveDecoder",
    "GlobalAdditiveDecoder",
    "SyncBatchNorm1d",
]
