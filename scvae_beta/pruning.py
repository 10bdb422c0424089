"""Dimension pruning: drop latent dimensions that stayed on the prior, fine-tune the rest.

A standard way to choose the latent size: train with a generous ``n_latent``, keep the
dimensions whose mean KL exceeds ``active_threshold`` nats, copy their encoder and decoder
weights into a smaller model (:meth:`CountVAE.keep_latents
<scvae_beta.models.CountVAE.keep_latents>`) and fine-tune it for a few epochs at the full KL
weight. Works on a count source and a sampler (no AnnData); ``fit(prune=True)`` and
:func:`scvae_beta.tl.prune_dimensions` call it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from scvae_beta._utils import caller_stacklevel
from scvae_beta.data.sampler import Sampler
from scvae_beta.data.source import CountSource
from scvae_beta.evaluation import encode_cells, evaluate
from scvae_beta.models.base import CountVAE
from scvae_beta.models.loss import LossModule
from scvae_beta.objectives import Objective, build_objective
from scvae_beta.settings import Settings, check_integer, check_number


@dataclass
class PruneResult:
    """What :func:`prune_and_finetune` returns.

    Attributes
    ----------
    vae, objective, settings
        The smaller model, its objective and its settings (``n_latent`` = kept dims).
    record
        For ``uns[key]["pruning"]``: ``kept_dims`` (original indices, in order),
        ``n_latent_before``, ``kl_per_dim_before``, ``active_threshold``, ``elbo_before``
        (the full model), ``elbo_pruned`` (kept dims, before fine-tuning), ``elbo_after``
        (after fine-tuning; all mean ELBO per cell on ``elbo_cells``), ``epochs`` (of the
        fine-tuning), ``best_epoch`` (-1 without early stopping) and ``history`` (one row
        per fine-tuning epoch).
    """

    vae: CountVAE
    objective: Objective
    settings: Settings
    record: dict


def check_prune_args(active_threshold: Any, epochs: Any, settings: Settings) -> tuple[float, int]:
    """``(threshold, epochs)`` for pruning: the arguments checked the way :func:`scvae_beta.fit`
    checks ``active_threshold`` and ``prune_epochs`` (a finite number; an integer >= 1; NumPy
    scalars accepted), ``None`` taking the fit's setting."""
    if active_threshold is None:
        threshold = float(settings.active_threshold)
    else:
        threshold = check_number("active_threshold", active_threshold, low=None)
    if epochs is None:
        return threshold, settings.prune_epochs
    return threshold, check_integer("epochs", epochs, low=1)


def mean_kl_per_dim(
    vae: CountVAE, data: CountSource, device: torch.device, encoded=None
) -> np.ndarray:
    """Mean closed-form KL to the prior per latent dimension over all cells, ``(D,)`` nats;
    ``encoded``: the cells' ``(loc, scale)`` under ``vae`` if the caller has them already."""
    if encoded is None:
        encoded = encode_cells(vae, data, np.arange(data.n_cells), device)
    loc, scale = encoded
    kl = vae.kl_to_prior(torch.from_numpy(loc), torch.from_numpy(scale))
    return kl.double().mean(0).numpy()


def mean_elbo(vae: CountVAE, data: CountSource, idx: np.ndarray, device, seed: int) -> float:
    """Mean ELBO per cell over ``idx`` (one seeded posterior sample per cell)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        log_lik, kl = evaluate(vae, data, idx, device)
    finally:
        torch.random.set_rng_state(gen_state)
    return float(np.mean(log_lik - kl.sum(1)))


def prune_and_finetune(
    vae: CountVAE,
    data: CountSource,
    sampler: Sampler,
    settings: Settings,
    device: torch.device,
    *,
    active_threshold: float | None = None,
    epochs: int | None = None,
    encoded: tuple[np.ndarray, np.ndarray] | None = None,
) -> PruneResult:
    """Keep the dimensions with mean KL above the threshold and fine-tune the smaller model.

    Parameters
    ----------
    vae
        The trained model (left unchanged).
    data, sampler
        The cells and the split the model was trained on (the fine-tuning uses the same
        training cells; the ELBOs are on the validation cells, or the training cells
        without a split).
    settings
        The fit's resolved settings.
    active_threshold, epochs
        Defaults: ``settings.active_threshold`` and ``settings.prune_epochs``.
    encoded
        Every cell's posterior ``(loc, scale)`` under ``vae``, when the caller has encoded
        them already (saves a pass over the data).

    Fine-tuning runs ``epochs`` epochs at the full KL weight (constant schedule, the final
    capacity if any) with early stopping on the validation loss (best weights kept).
    At least one dimension is kept (the one with the largest KL, with a warning).
    """
    from scvae_beta.train import train  # the training loop imports the models

    threshold, epochs = check_prune_args(active_threshold, epochs, settings)
    kl_before = mean_kl_per_dim(vae, data, device, encoded)
    keep = np.flatnonzero(kl_before > threshold)
    if keep.size == 0:
        keep = np.array([int(np.argmax(kl_before))])
        warnings.warn(
            f"no latent dimension has mean KL above {threshold} nats; keeping the strongest "
            f"(dimension {keep[0]}, {kl_before[keep[0]]:.3g} nats)",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    eval_idx = sampler.val_idx if sampler.n_val else sampler.train_idx
    elbo_before = mean_elbo(vae, data, eval_idx, device, settings.seed)
    small = vae.keep_latents(torch.from_numpy(keep)).to(device)
    elbo_pruned = mean_elbo(small, data, eval_idx, device, settings.seed)
    cap = settings.capacity
    ft_settings = settings.replace(
        n_latent=int(keep.size),
        max_epochs=epochs,
        kl_schedule="constant",
        capacity=None if cap is None else (cap[1], cap[1]),
        progress=False,
    )
    objective = build_objective(ft_settings, int(keep.size))
    result = train(LossModule(small, objective), data, sampler, ft_settings, device)
    small.eval()
    elbo_after = mean_elbo(small, data, eval_idx, device, settings.seed)
    history = pd.DataFrame(result.history)
    record = {
        "kept_dims": keep.astype(np.int64),
        "n_latent_before": int(vae.config.n_latent),
        "kl_per_dim_before": kl_before,
        "active_threshold": float(threshold),
        "elbo_before": elbo_before,
        "elbo_pruned": elbo_pruned,
        "elbo_after": elbo_after,
        "elbo_cells": "validation" if sampler.n_val else "training",
        "epochs": int(len(history)),
        "best_epoch": -1 if result.best_epoch is None else int(result.best_epoch),
        "history": history,
    }
    out_settings = settings.replace(n_latent=int(keep.size))
    return PruneResult(small, objective, out_settings, record)
