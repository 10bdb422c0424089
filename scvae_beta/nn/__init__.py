"""Neural building blocks: an MLP, the Gaussian encoder and the count decoder."""

from scvae_beta.nn.modules import MLP, CountDecoder, GaussianEncoder

__all__ = ["MLP", "GaussianEncoder", "CountDecoder"]
