"""``fit(adata, ...)``: validate, build, train, then write ``obsm``/``uns`` in one go."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import torch
from anndata import AnnData

from scvae_beta._utils import seeded, versions
from scvae_beta.config import (
    MODELS,
    AnnealingConfig,
    ModelConfig,
    ObjectiveConfig,
    TrainConfig,
)
from scvae_beta.data import count_data, split_sizes
from scvae_beta.evaluation import (
    DECOMPOSITION_BATCH_SIZE,
    decompose_cells,
    encode_cells,
    evaluate,
)
from scvae_beta.fitted import FittedModel
from scvae_beta.models import build_module
from scvae_beta.train import resolve_device, train

#: Default threshold (nats) above which a latent dimension counts as active.
ACTIVE_THRESHOLD = 0.05


def default_max_epochs(n_cells: int) -> int:
    """Epoch budget: about 4 million cell passes, between 20 and 400 epochs.

    ``clip(round(4_000_000 / n_cells), 20, 400)``: 400 epochs up to 10,000 training cells,
    about 200 at 20,000, 40 at 100,000 and at least 20. Early stopping usually ends sooner.
    """
    return int(np.clip(round(4_000_000 / max(n_cells, 1)), 20, 400))


def fit(
    adata: AnnData,
    *,
    model: str = "beta_vae",
    beta: float = 1.0,
    alpha: float = 1.0,
    gamma: float | None = None,
    tc_estimator: str = "mss",
    tc_block_size: int | None = 128,
    capacity: tuple[float, float] | None = None,
    capacity_fraction: float = 0.5,
    n_latent: int = 10,
    layer: str | None = None,
    batch_key: str | None = None,
    key_added: str = "scvae_beta",
    likelihood: str = "nb",
    dispersion: str = "gene",
    n_hidden: int = 128,
    n_layers: int = 1,
    dropout: float = 0.1,
    norm: str = "batch",
    encode_batch: bool = False,
    kl_schedule: str | None = None,
    kl_anneal_terms: tuple[str, ...] = ("mi", "tc", "dw_kl"),
    kl_warmup: int | float = 0.25,
    kl_cycles: int = 4,
    max_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    clip_norm: float | None = 10.0,
    validation_fraction: float = 0.1,
    early_stopping: bool = True,
    patience: int = 20,
    active_threshold: float = ACTIVE_THRESHOLD,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> FittedModel:
    """Fit a beta-VAE, beta-TCVAE or FactorVAE with a count likelihood and annotate ``adata``.

    Parameters
    ----------
    adata
        Cells x genes of raw integer counts (in ``.X`` or ``layer``); CSR, CSC, dense or a
        view. ``.X`` is never modified; on any error nothing is written.
    model
        ``"beta_vae"`` (Higgins et al. 2017), ``"beta_tcvae"`` (Chen et al. 2018: MI, TC and
        dimension-wise KL weighted by ``alpha``, ``beta``, ``gamma``) or ``"factor_vae"``
        (Kim & Mnih 2018: ``beta * KL + gamma * TC`` with TC from a discriminator).
    beta
        ``"beta_vae"`` / ``"factor_vae"``: weight of the KL term (>= 0; 1 is the plain VAE,
        larger values trade reconstruction for a more compact, factorised latent space).
        ``"beta_tcvae"``: weight of the total correlation.
    alpha
        ``"beta_tcvae"`` only: weight of the index-code mutual information.
    gamma
        ``"beta_tcvae"``: weight of the dimension-wise KL (default 1). ``"factor_vae"``:
        weight of the discriminator's TC (default 10). Not used by ``"beta_vae"``.
    tc_estimator
        ``"mss"`` (minibatch-stratified, default) or ``"mws"`` (minibatch-weighted) estimate
        of the decomposition, for training beta-TCVAE and for the reported
        ``kl_decomposition`` of every model.
    tc_block_size
        ``"beta_tcvae"``: most cells per ``(M, M, D)`` density matrix in training; larger
        minibatches are estimated in blocks of about this size, keeping the cost per cell
        independent of ``batch_size``. ``None``: the whole minibatch in one matrix.
    capacity
        ``(C_min, C_max)`` nats: capacity control (Burgess et al. 2018) for any model; the
        KL enters as ``|KL - C|`` with ``C`` rising linearly from ``C_min`` to ``C_max`` over
        ``capacity_fraction`` of the planned steps (see
        :class:`~scvae_beta.config.ObjectiveConfig` for each model's formula).
    capacity_fraction
        Fraction of training over which the capacity rises.
    n_latent
        Latent dimensions (>= 1).
    layer
        Layer with raw counts; ``None`` uses ``.X``.
    batch_key
        ``adata.obs`` column of batch labels; the one-hot goes into the decoder (and the
        encoder with ``encode_batch=True``).
    key_added
        Outputs go to ``obsm["X_" + key_added]`` and ``uns[key_added]``.
    likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    dispersion
        ``"gene"`` or ``"gene-batch"`` (needs ``batch_key``).
    n_hidden, n_layers, dropout, norm
        Encoder/decoder MLPs (``norm``: ``"batch"``, ``"layer"`` or ``"none"``).
    encode_batch
        Feed the batch one-hot into the encoder too.
    kl_schedule
        ``"linear"``, ``"cyclical"``, ``"sigmoid"`` or ``"constant"``; ``None`` (default) is
        ``"linear"``, or ``"constant"`` with ``capacity`` (the rising capacity already
        anneals). It scales the whole penalty by a factor rising from 0 to 1.
    kl_anneal_terms
        ``"beta_tcvae"``: which of ``"mi"``, ``"tc"``, ``"dw_kl"`` the schedule applies to.
    kl_warmup
        Warm-up length: ``int`` steps or ``float`` fraction of the planned steps; never
        longer than training (it is shortened, with a warning, to end before the last 10 %).
    kl_cycles
        Number of cycles of the cyclical schedule.
    max_epochs
        Epoch budget; ``None`` uses :func:`default_max_epochs`.
    batch_size, lr, weight_decay, clip_norm
        Minibatch size, Adam settings and global gradient-norm clipping (``None``: off).
    validation_fraction
        Held-out fraction for the validation loss (seeded by ``seed``); 0 disables.
    early_stopping, patience
        Stop when the validation loss (training loss without validation cells) has not
        improved for ``patience`` epochs after the KL weight reached ``beta``; the best
        weights are kept.
    active_threshold
        A dimension whose mean KL exceeds this (nats) is reported as active.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed
        Seeds split, minibatch order, initialisation and sampling; on CPU the same seed
        gives identical latents. The caller's global RNG state is left as it was.
    progress
        Show a progress bar.

    Returns
    -------
    :class:`~scvae_beta.FittedModel`. Also writes

    ``adata.obsm["X_" + key_added]``
        ``(n_cells, n_latent)`` float32 posterior means.
    ``adata.uns[key_added]``
        ``params`` (every setting used), ``kl_per_dim`` (``(n_latent,)`` mean KL per cell
        of each dimension, nats), ``active_dims`` (indices with KL > ``active_threshold``),
        ``n_active``, ``elbo``, ``reconstruction`` and ``kl`` (mean per cell, beta = 1, over
        the held-out validation cells, or the training cells without a split, as
        ``elbo_cells`` says), ``kl_decomposition`` (``mi``, ``tc``, ``dw_kl``: the KL to
        the prior split as in Chen et al. 2018, nats per cell, estimated over all cells
        with ``tc_estimator`` in shuffled minibatches of 256; FactorVAE adds ``tc_disc``),
        ``history`` (DataFrame, one row per epoch: ``train_loss``,
        ``train_reconstruction``, ``train_kl``, ``val_loss``, ``val_reconstruction``,
        ``val_kl``, ``mi``, ``tc``, ``dw_kl``, ``kl_weight``, ``capacity``, ``seconds``,
        ``kl_dim_0`` ...; see :func:`scvae_beta.train.train`), ``training`` (epochs
        trained, best epoch, early stopping, KL schedule settle step, seconds),
        ``validation_indices``, ``batch_categories`` and ``versions``. All of it survives
        ``write_h5ad``/``read_h5ad``.
    """
    # 1. Settings first: cheap errors before touching the data.
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not supported; choose one of {list(MODELS)}")
    if model == "beta_vae" and (alpha != 1.0 or gamma is not None):
        raise ValueError(
            "alpha and gamma are weights of model='beta_tcvae' (and gamma of 'factor_vae'); "
            "for model='beta_vae' set only beta"
        )
    if model == "factor_vae" and alpha != 1.0:
        raise ValueError("alpha is a weight of model='beta_tcvae'; factor_vae uses beta, gamma")
    if gamma is None:
        gamma = 10.0 if model == "factor_vae" else 1.0
    if capacity is not None:
        capacity = tuple(float(c) for c in capacity)
    if kl_schedule is None:
        kl_schedule = "constant" if capacity is not None else "linear"
    objective = ObjectiveConfig(
        model=model,
        beta=float(beta) if isinstance(beta, int | float) else beta,
        alpha=float(alpha) if isinstance(alpha, int | float) else alpha,
        gamma=float(gamma) if isinstance(gamma, int | float) else gamma,
        tc_estimator=tc_estimator,
        tc_block_size=tc_block_size,
        anneal_terms=tuple(kl_anneal_terms),
        capacity=capacity,
        capacity_fraction=capacity_fraction,
    )
    if not isinstance(n_latent, int | np.integer) or isinstance(n_latent, bool) or n_latent < 1:
        raise ValueError(f"n_latent must be an integer >= 1, got {n_latent!r}")
    if not (isinstance(beta, int | float) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError("key_added must be a non-empty string")
    annealing = AnnealingConfig(schedule=kl_schedule, warmup=kl_warmup, n_cycles=kl_cycles)
    # 2. Data checks (raise before anything is written).
    data, categories = count_data(adata, layer=layer, batch_key=batch_key)
    model_config = ModelConfig(
        n_genes=data.n_genes,
        n_latent=int(n_latent),
        n_hidden=n_hidden,
        n_layers=n_layers,
        dropout=dropout,
        norm=norm,
        likelihood=likelihood,
        dispersion=dispersion,
        n_batches=len(categories),
        encode_batch=encode_batch,
    )
    n_train, n_val = split_sizes(data.n_cells, validation_fraction)
    train_config = TrainConfig(
        max_epochs=max_epochs if max_epochs is not None else default_max_epochs(n_train),
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        validation_fraction=validation_fraction,
        early_stopping=early_stopping,
        patience=patience,
        device=device,
        seed=seed,
        progress=progress,
    )
    dev = resolve_device(device)
    perm = np.random.default_rng([seed, 0]).permutation(data.n_cells)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    # 3. Build and train under a forked, seeded RNG; Pyro's param store is cleared.
    pyro.clear_param_store()
    with seeded(seed, dev):
        module = build_module(
            model,
            model_config,
            disc_hidden=objective.disc_hidden,
            disc_layers=objective.disc_layers,
        ).register()
        result = train(module, data, train_idx, val_idx, train_config, annealing, dev, objective)
        # Latents and KL of every cell from the encoder alone; the ELBO (which needs the
        # decoder and likelihood) on the held-out cells, or all cells without a split.
        loc, scale = encode_cells(module, data, np.arange(data.n_cells), dev)
        kl_per_dim = module.kl_to_prior(torch.from_numpy(loc), torch.from_numpy(scale))
        kl_per_dim = kl_per_dim.double().mean(0).numpy()
        elbo_idx = val_idx if n_val else train_idx
        log_lik, kl = evaluate(module, data, elbo_idx, dev)
        decomposition = decompose_cells(module, loc, scale, estimator=tc_estimator, seed=seed)

    # 4. Write everything at once.
    active = np.flatnonzero(kl_per_dim > active_threshold)
    history = pd.DataFrame(result.history)
    for d in range(model_config.n_latent):
        history[f"kl_dim_{d}"] = result.kl_per_dim[:, d]
    params = {
        **objective.to_dict(),
        "kl_schedule": annealing.schedule,
        "kl_warmup": annealing.warmup,
        "kl_cycles": annealing.n_cycles,
        "kl_cycle_ratio": annealing.cycle_ratio,
        **model_config.to_dict(),
        **train_config.to_dict(),
        "device": str(dev),
        "layer": layer,
        "batch_key": batch_key,
        "key_added": key_added,
        "active_threshold": float(active_threshold),
        "n_cells": int(data.n_cells),
        "n_train": int(n_train),
        "n_val": int(n_val),
    }
    training = {
        "epochs_trained": int(len(history)),
        "best_epoch": result.best_epoch,
        "stopped_early": bool(result.stopped_early),
        "monitor": result.monitor,
        "kl_settle_step": int(result.schedule.settle_step),
        "total_steps_planned": int(result.schedule.total_steps),
        "final_kl_weight": float(history["kl_weight"].iloc[-1]),
        "seconds": float(result.seconds),
    }
    fitted = FittedModel(
        module=module,
        params=params,
        var_names=list(map(str, adata.var_names)),
        batch_categories=categories,
        history=history,
    )
    adata.obsm["X_" + key_added] = loc.astype(np.float32)
    adata.uns[key_added] = {
        "params": params,
        "kl_per_dim": kl_per_dim,
        "active_dims": active.astype(np.int64),
        "n_active": int(active.size),
        "elbo": float(np.mean(log_lik - kl.sum(1))),
        "reconstruction": float(-np.mean(log_lik)),
        "kl": float(kl.sum(1).mean()),
        "kl_decomposition": {
            **decomposition,
            "estimator": tc_estimator,
            "batch_size": DECOMPOSITION_BATCH_SIZE,
            "n_cells": int(data.n_cells),
        },
        "elbo_cells": "validation" if n_val else "training",
        "history": history,
        "training": training,
        "validation_indices": val_idx.astype(np.int64),
        "batch_categories": list(categories),
        "versions": versions(),
    }
    return fitted
