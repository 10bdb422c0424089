"""Neural building blocks: an MLP, the Gaussian encoder and the count decoders."""

from scvae_beta.nn.additive import AdditiveDecoder, FastAdditiveDecoder
from scvae_beta.nn.modules import MLP, CountDecoder, GaussianEncoder

__all__ = ["MLP", "GaussianEncoder", "CountDecoder", "AdditiveDecoder", "FastAdditiveDecoder"]
