"""Frozen configuration dataclasses: the one home for defaults.

Everything below the AnnData edge (``nn``, ``models``, ``train``) receives these small
objects instead of long keyword lists, so the defaults live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Likelihood = Literal["nb", "zinb", "poisson"]
Dispersion = Literal["gene", "gene-batch"]
Norm = Literal["batch", "layer", "none"]
ScheduleName = Literal["linear", "cyclical", "sigmoid", "constant"]
ModelName = Literal["beta_vae", "beta_tcvae", "factor_vae"]
TCEstimator = Literal["mss", "mws"]

LIKELIHOODS: tuple[str, ...] = ("nb", "zinb", "poisson")
DISPERSIONS: tuple[str, ...] = ("gene", "gene-batch")
NORMS: tuple[str, ...] = ("batch", "layer", "none")
SCHEDULES: tuple[str, ...] = ("linear", "cyclical", "sigmoid", "constant")
MODELS: tuple[str, ...] = ("beta_vae", "beta_tcvae", "factor_vae")
TC_ESTIMATORS: tuple[str, ...] = ("mss", "mws")
KL_TERMS: tuple[str, ...] = ("mi", "tc", "dw_kl")


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
        if self.dispersion == "gene-batch" and self.n_batches < 1:
            raise ValueError(
                "dispersion='gene-batch' needs a batch_key; pass batch_key=... or dispersion='gene'"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AnnealingConfig:
    """KL annealing schedule: ``step -> factor`` in [0, 1], reaching 1 before training ends.

    The factor multiplies the model's penalty (see :class:`ObjectiveConfig`, which holds the
    target weights such as ``beta``).

    Parameters
    ----------
    schedule
        ``"linear"`` warm-up from 0, ``"sigmoid"`` warm-up, ``"cyclical"`` (Fu et al. 2019)
        or ``"constant"`` (the full weight from the first step).
    warmup
        Warm-up length: an ``int`` is a number of optimisation steps, a ``float`` in [0, 1) is
        a fraction of the planned training steps. It is clamped (with a warning) so that at
        least the last 10 % of training, and at least one epoch, runs at the full weight.
        For ``"cyclical"`` it is ignored; ``n_cycles`` and ``cycle_ratio`` shape the schedule.
    n_cycles
        Number of cycles of the cyclical schedule.
    cycle_ratio
        Fraction of each cycle spent increasing the weight (the rest is at the full weight).
    """

    schedule: ScheduleName = "linear"
    warmup: int | float = 0.25
    n_cycles: int = 4
    cycle_ratio: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("kl_schedule", self.schedule, SCHEDULES)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int | float):
            raise TypeError(
                f"kl_warmup must be an int (steps) or a float fraction, got {self.warmup!r}"
            )
        if isinstance(self.warmup, float) and not 0.0 <= self.warmup < 1.0:
            raise ValueError(
                f"kl_warmup={self.warmup} as a fraction must be in [0, 1); "
                "pass an int for a number of steps"
            )
        if isinstance(self.warmup, int) and self.warmup < 0:
            raise ValueError(f"kl_warmup must be >= 0 steps, got {self.warmup}")
        if self.n_cycles < 1 or not 0.0 < self.cycle_ratio <= 1.0:
            raise ValueError("n_cycles must be >= 1 and cycle_ratio in (0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the SVI loop.

    Parameters
    ----------
    max_epochs
        Upper bound on passes over the training cells.
    batch_size
        Cells per minibatch.
    lr, weight_decay
        Adam learning rate and (decoupled-free, L2) weight decay.
    clip_norm
        Gradients are clipped to this global L2 norm (of the per-cell loss); ``None`` disables.
    validation_fraction
        Fraction of cells held out for the validation loss (0 disables).
    early_stopping
        Stop when the monitored loss has not improved by ``min_delta`` for ``patience``
        epochs, counted only once the KL weight has settled at ``beta``; the best weights are
        restored.
    patience, min_delta
        See ``early_stopping``.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    seed
        Seeds the split, the minibatch order, initialisation and sampling.
    progress
        Show a progress bar over epochs.
    """

    max_epochs: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = 10.0
    validation_fraction: float = 0.1
    early_stopping: bool = True
    patience: int = 20
    min_delta: float = 0.0
    device: str = "auto"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ObjectiveConfig:
    """What is penalised besides the reconstruction, and how strongly.

    Per cell, with ``f`` the annealing factor in [0, 1] of the KL schedule:

    ``"beta_vae"``
        ``-log p(x|z) + f * beta * KL`` (closed-form KL).
    ``"beta_tcvae"``
        ``-log p(x|z) + f_mi * alpha * MI + f_tc * beta * TC + f_dw * gamma * dw_KL``, the terms
        from :func:`scvae_beta.objectives.kl_decomposition` on each minibatch; ``f_t = f`` for
        the terms in ``anneal_terms`` and 1 for the others.
    ``"factor_vae"``
        ``-log p(x|z) + f * (beta * KL + gamma * TC_disc)``, TC from the discriminator.

    With ``capacity = (C_min, C_max)`` (Burgess et al. 2018) the KL enters as
    ``|KL - C(t)|``, ``C`` rising linearly from ``C_min`` to ``C_max`` over
    ``capacity_fraction`` of the planned steps: ``beta * |KL - C|`` for ``"beta_vae"`` and
    ``"factor_vae"``; for ``"beta_tcvae"`` ``|MI + TC + dw_KL - C| + (alpha - 1) MI +
    (beta - 1) TC + (gamma - 1) dw_KL``, which is its usual loss at ``C = 0``.

    Parameters
    ----------
    model
        ``"beta_vae"``, ``"beta_tcvae"`` or ``"factor_vae"``.
    beta, alpha, gamma
        Weights as above (``alpha`` is used by ``"beta_tcvae"`` only).
    tc_estimator
        ``"mss"`` or ``"mws"``: estimator of the decomposition (training of ``"beta_tcvae"``
        and the reported decomposition of every model).
    tc_block_size
        ``"beta_tcvae"`` training: at most this many cells per ``(M, M, D)`` density matrix;
        larger minibatches are estimated in blocks (see
        :func:`~scvae_beta.objectives.kl_decomposition`), so the estimator's cost per cell
        does not grow with the batch size. ``None``: one matrix per minibatch.
    anneal_terms
        Terms of ``"beta_tcvae"`` the KL schedule applies to.
    capacity
        ``None`` or ``(C_min, C_max)`` in nats per cell.
    capacity_fraction
        Fraction of the planned steps over which ``C`` rises.
    disc_lr, disc_hidden, disc_layers
        FactorVAE discriminator: Adam learning rate, width and depth.
    """

    model: ModelName = "beta_vae"
    beta: float = 1.0
    alpha: float = 1.0
    gamma: float = 1.0
    tc_estimator: TCEstimator = "mss"
    tc_block_size: int | None = 128
    anneal_terms: tuple[str, ...] = KL_TERMS
    capacity: tuple[float, float] | None = None
    capacity_fraction: float = 0.5
    disc_lr: float = 1e-4
    disc_hidden: int = 128
    disc_layers: int = 2

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        _check_choice("tc_estimator", self.tc_estimator, TC_ESTIMATORS)
        for name in ("beta", "alpha", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        bad = [t for t in self.anneal_terms if t not in KL_TERMS]
        if bad:
            raise ValueError(f"anneal_terms {bad} not understood; choose from {list(KL_TERMS)}")
        if self.capacity is not None:
            c = self.capacity
            if len(c) != 2 or not 0 <= c[0] <= c[1]:
                raise ValueError(
                    f"capacity must be (C_min, C_max) with 0 <= C_min <= C_max nats, got {c!r}"
                )
        if not 0.0 < self.capacity_fraction <= 1.0:
            raise ValueError(f"capacity_fraction must be in (0, 1], got {self.capacity_fraction}")
        if self.tc_block_size is not None and self.tc_block_size < 2:
            raise ValueError(f"tc_block_size must be >= 2 or None, got {self.tc_block_size}")
        if not self.disc_lr > 0 or self.disc_hidden < 1 or self.disc_layers < 1:
            raise ValueError("disc_lr must be > 0 and disc_hidden, disc_layers >= 1")

    def capacity_at(self, step: int, total_steps: int) -> float | None:
        """``C(step)``: linear from ``C_min`` to ``C_max``, then constant; ``None`` without."""
        if self.capacity is None:
            return None
        lo, hi = self.capacity
        ramp = max(1, round(self.capacity_fraction * total_steps))
        return float(hi) if step >= ramp else lo + (hi - lo) * step / ramp

    def capacity_settle_step(self, total_steps: int) -> int:
        """First step at which ``C`` equals ``C_max`` (0 without capacity)."""
        if self.capacity is None:
            return 0
        return max(1, round(self.capacity_fraction * total_steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["anneal_terms"] = list(self.anneal_terms)
        d["capacity"] = None if self.capacity is None else [float(v) for v in self.capacity]
        return d
