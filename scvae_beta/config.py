"""The architecture of a :class:`~scvae_beta.models.CountVAE`, derived from the settings.

:class:`ModelConfig` is what the module needs to be rebuilt (saved with the weights); the
fit's options are :class:`~scvae_beta.settings.Settings`, whose ``model_config`` makes one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import get_args

from scvae_beta.settings import (
    DecoderName,
    Dispersion,
    Likelihood,
    ModelName,
    Norm,
    ScheduleName,
    TCEstimator,
)

LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)
DISPERSIONS: tuple[str, ...] = get_args(Dispersion)
NORMS: tuple[str, ...] = get_args(Norm)
#: Option names, for argument parsers and messages (the classes are in the tables).
MODELS: tuple[str, ...] = get_args(ModelName)
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
TC_ESTIMATORS: tuple[str, ...] = get_args(TCEstimator)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the encoder/decoder pair.

    Parameters
    ----------
    n_genes
        Number of genes (decoder output width, encoder input width).
    n_latent
        Dimension of the latent space z.
    n_hidden
        Width of each hidden layer.
    n_layers
        Number of hidden layers in the encoder and in the decoder.
    dropout
        Dropout rate in the encoder's hidden layers (the decoder uses none).
    norm
        Normalisation after each hidden linear layer.
    likelihood
        Count likelihood of the decoder.
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: one per gene and batch.
    n_batches
        Number of batch categories (0 when no batch key is used).
    encode_batch
        Also feed the batch one-hot into the encoder (it always goes into the decoder).
    decoder
        Decoder family, a key of :data:`scvae_beta.models.DECODERS`.
    decoder_hidden
        Hidden width of the decoder; ``None``: the decoder's ``default_hidden`` if it has one
        (the additive decoders: 16 per dimension), else ``n_hidden``.
    """

    n_genes: int
    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 1
    dropout: float = 0.1
    norm: Norm = "batch"
    likelihood: Likelihood = "nb"
    dispersion: Dispersion = "gene"
    n_batches: int = 0
    encode_batch: bool = False
    decoder: DecoderName = "mlp"
    decoder_hidden: int | None = None

    def __post_init__(self) -> None:
        if self.n_genes < 1:
            raise ValueError(f"n_genes must be >= 1, got {self.n_genes}")
        if not isinstance(self.n_latent, int) or self.n_latent < 1:
            raise ValueError(f"n_latent must be an integer >= 1, got {self.n_latent!r}")
        if self.n_hidden < 1 or self.n_layers < 1:
            raise ValueError("n_hidden and n_layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        _check_choice("norm", self.norm, NORMS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        _check_choice("dispersion", self.dispersion, DISPERSIONS)
        from scvae_beta.models.decoders import DECODERS

        _check_choice("decoder", self.decoder, tuple(DECODERS))
        if self.dispersion == "gene-batch" and self.n_batches < 1:
            raise ValueError(
                "dispersion='gene-batch' needs a batch_key; pass batch_key=... or dispersion='gene'"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
