"""``fit(adata, ...)``: settings -> data source -> train -> summarise -> write (last)."""

from __future__ import annotations

import functools
import inspect
import os
import warnings

import numpy as np
import pandas as pd
import pyro
import torch
from anndata import AnnData

from scvae_beta._logging import finish as log_finish
from scvae_beta._logging import start as log_start
from scvae_beta._utils import caller_stacklevel, cells_digest, seeded, versions
from scvae_beta.data import count_data, sampler_for
from scvae_beta.evaluation import DECOMPOSITION_BATCH_SIZE, summarise_fit, summary_fields
from scvae_beta.fitted import FittedModel
from scvae_beta.models import CountVAE, LossModule
from scvae_beta.objectives import build_objective
from scvae_beta.pruning import prune_and_finetune
from scvae_beta.settings import (
    ACTIVE_THRESHOLD,
    KL_TERMS,
    DecoderName,
    Dispersion,
    KLTerm,
    Likelihood,
    ModelName,
    Norm,
    Precision,
    PresetName,
    ScheduleName,
    Settings,
    TCEstimator,
    default_max_epochs,
)
from scvae_beta.train import distributed, pinned_threads, resolve_device, train
from scvae_beta.train.checkpoint import Checkpoints
from scvae_beta.train.device import place_data

__all__ = ["fit", "default_max_epochs", "ACTIVE_THRESHOLD"]


def _passes_given_keywords(func):
    """Call ``func`` with ``_given``: the keywords the caller passed explicitly, so that a
    ``preset`` fills in only the others. The public signature hides ``_given``."""
    sig = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(adata, /, **kwargs):
        if "_given" in kwargs:
            raise TypeError("fit() got an unexpected keyword argument '_given'")
        return func(adata, _given=frozenset(kwargs), **kwargs)

    params = [p for name, p in sig.parameters.items() if name != "_given"]
    wrapper.__signature__ = sig.replace(parameters=params)
    return wrapper


@_passes_given_keywords
def fit(
    adata: AnnData,
    *,
    preset: PresetName | None = None,
    model: ModelName = "beta_vae",
    beta: float = 1.0,
    alpha: float = 1.0,
    gamma: float | None = None,
    tc_estimator: TCEstimator = "mss",
    tc_block_size: int | None = 128,
    capacity: tuple[float, float] | None = None,
    capacity_fraction: float = 0.5,
    n_latent: int = 10,
    decoder: DecoderName = "mlp",
    decoder_hidden: int | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    key_added: str = "scvae_beta",
    likelihood: Likelihood = "nb",
    dispersion: Dispersion = "gene",
    n_hidden: int = 128,
    n_layers: int = 1,
    dropout: float = 0.1,
    norm: Norm = "batch",
    encode_batch: bool = False,
    kl_schedule: ScheduleName | None = None,
    kl_anneal_terms: tuple[KLTerm, ...] = KL_TERMS,
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
    prune: bool = False,
    prune_epochs: int = 20,
    device: str = "auto",
    seed: int = 0,
    n_threads: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    data_on_device: bool | None = None,
    precision: Precision = "fp32",
    _given: frozenset = frozenset(),
) -> FittedModel:
    """Fit a beta-VAE, beta-TCVAE or FactorVAE with a count likelihood and annotate ``adata``.

    Parameters
    ----------
    adata
        Cells x genes of raw integer counts (in ``.X`` or ``layer``); CSR, CSC, dense or a
        view, in memory or on disk (``read_h5ad(path, backed="r")`` or
        :func:`scvae_beta.data.read_backed` for zarr: read in row chunks, never whole; see
        :class:`scvae_beta.data.ChunkedSampler` for the minibatch order). ``.X`` is never
        modified; on any error nothing is written.
    preset
        A named set of settings (:data:`scvae_beta.settings.PRESETS`); every keyword passed
        explicitly overrides the preset's value, and ``uns[key]["params"]`` records the
        values used. ``"disentangle"``: ``model="beta_vae"``, ``beta=1``,
        ``decoder="additive"`` with ``decoder_hidden=8``, ``n_latent=32``, linear KL warm-up
        over half of training (``kl_schedule="linear"``, ``kl_warmup=0.5``), the
        configuration recommended for interpretable axes (see ``benchmarks/RESULTS.md``; an
        epoch ~1.9x the MLP decoder's on CPU).
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
        :mod:`scvae_beta.objectives` for each model's formula).
    capacity_fraction
        Fraction of training over which the capacity rises.
    n_latent
        Latent dimensions (>= 1).
    decoder
        Decoder family (a key of :data:`scvae_beta.models.DECODERS`): ``"mlp"``, an MLP on
        ``z`` and the batch one-hot; ``"additive"``, one small network per latent dimension
        (1 -> h -> h -> genes, its *gene program*), the programs summed in expression space
        (``logsumexp`` of log contributions) plus a linear batch term before the softmax
        (:class:`~scvae_beta.nn.AdditiveDecoder`, DRVI's form; ~2.3x the MLP decoder's epoch
        on CPU with its C++ kernel, built at first use where a compiler is found, 3.2-4.5x
        without; ~1.9x with ``decoder_hidden=8``, the preset's width);
        ``"additive_fast"``, the same with each program's last layer linear in expression
        space, so the sum over dimensions is one matrix product (~2x the MLP decoder's
        epoch; disentangled less in ``benchmarks/RESULTS.md``); ``"additive_global"``,
        ``"additive"`` whose last dimension is global: its program is added in log space,
        scaling every other program, for an axis shared by all cell types
        (:class:`~scvae_beta.nn.GlobalAdditiveDecoder`).
    decoder_hidden
        Hidden width of the decoder; ``None``: ``n_hidden`` for ``"mlp"``, 16 per dimension
        for the additive decoders.
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
        Warm-up length: ``int`` steps or ``float`` fraction in [0, 1] of the planned steps
        (``1.0``: over the whole budget, as DRVI and scVI do); never longer than training
        (it is shortened, with a warning, to end before the last 10 %, so the weight reaches
        ``beta``).
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
    prune
        After training, drop the dimensions whose mean KL is at most ``active_threshold``,
        copy the kept dimensions' encoder and decoder weights into a smaller model and
        fine-tune it for ``prune_epochs`` epochs (see
        :func:`scvae_beta.tl.prune_dimensions`); the outputs are the smaller model's.
    prune_epochs
        Fine-tuning epochs after pruning (full KL weight, early stopping on validation).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed
        Seeds split, minibatch order, initialisation and sampling (an integer >= 0); on CPU
        the same seed gives identical latents at the same ``n_threads``. The caller's global
        RNG state is left as it was.
    n_threads
        torch threads for the duration of the fit (``None``: the count when scvae_beta was
        imported, so a thread count changed behind the user's back, e.g. by
        ``sc.pp.neighbors``, does not change the result); the caller's count is restored.
    progress
        Show a progress bar.
    checkpoint_dir
        Folder for a resumable checkpoint (``checkpoint.pt``: weights, optimiser states,
        schedule step, early-stopping state, history, RNG states and a fingerprint of the
        settings and data), written atomically after every ``checkpoint_every`` epochs and
        after the last epoch. ``None``: no checkpoints. A folder that already holds one is
        refused unless ``resume=True``.
    checkpoint_every
        Epochs between checkpoints (``None``: every epoch; needs ``checkpoint_dir``).
    resume
        Continue from the checkpoint in ``checkpoint_dir`` (same data and settings;
        ``progress``, ``n_threads``, ``device`` and ``key_added`` may differ). On CPU at the
        same ``n_threads`` the result equals that of an uninterrupted fit bit for bit.
        Without a checkpoint in the folder, the fit starts from the beginning, so a
        preempted job can be relaunched unchanged. A corrupt checkpoint, or one written by
        a fit with other data or settings, raises a ``ValueError`` naming the difference.
    data_on_device
        CUDA only: keep the whole count matrix (CSR) in GPU memory and gather minibatches
        there (no host-to-device copy per step). ``None`` (default): when the data are in
        memory and take less than a quarter of the free GPU memory; ``True``: always (an
        error when the data are on disk); ``False``: never (minibatches are copied from
        pinned host memory without blocking).
    precision
        ``"fp32"`` (default) or ``"bf16"``: the training step's encoder and decoder run
        under bfloat16 autocast; the count likelihood, the KL terms and the optimiser stay in
        float32, so the NB log-likelihood stays finite. Validation and inference run in
        float32. Faster on GPUs with bf16 tensor cores; on CPU mostly slower.

    Returns
    -------
    :class:`~scvae_beta.FittedModel`. Also writes

    ``adata.obsm["X_" + key_added]``
        ``(n_cells, n_latent)`` float32 posterior means.
    ``adata.uns[key_added]``
        ``params`` (every setting used: :meth:`Settings.to_dict
        <scvae_beta.settings.Settings.to_dict>`, keyed by ``fit``'s keyword names, with
        ``gamma``, ``kl_schedule``, ``max_epochs`` and ``device`` resolved),
        ``kl_per_dim`` (``(n_latent,)`` mean KL per cell
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
        trained, best epoch, early stopping, KL schedule settle step, seconds, ``n_cells``,
        ``n_genes``, ``n_train``, ``n_val``, ``n_threads``),
        ``validation_indices``, ``batch_categories`` and ``versions``; with ``prune=True``
        also ``pruning`` (``kept_dims``: original indices of the kept dimensions,
        ``n_latent_before``, ``kl_per_dim_before``, ``elbo_before`` / ``elbo_pruned`` /
        ``elbo_after``: mean ELBO per cell of the full model, of the kept dimensions before
        and after fine-tuning, ``epochs``, ``history``; ``params["n_latent"]`` is then the
        kept count, ``history`` that of the full model's training). All of it survives
        ``write_h5ad``/``read_h5ad``. An existing ``obsm``/``uns`` entry under the same key is
        overwritten (with a warning).
    """
    # 1. Settings first: every argument is checked here, before the data are touched.
    kwargs = {k: v for k, v in locals().items() if k not in ("adata", "_given")}
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    settings = Settings.from_keywords(kwargs, _given)
    started = log_start(f"fitting {settings.model} (beta={settings.beta:g})")
    # 2. Data checks (raise before anything is written) and the split.
    data, categories = count_data(adata, layer=settings.layer, batch_key=settings.batch_key)
    sampler = sampler_for(data, settings.validation_fraction, settings.batch_size, settings.seed)
    dev, rank, world = distributed.setup(resolve_device(settings.device))
    sampler.shard(rank, world)  # inside torchrun: this rank's cells (see train/distributed.py)
    data = place_data(data, dev, settings.data_on_device)
    settings = settings.resolve(n_train=sampler.n_train, device=str(dev))
    model_config = settings.model_config(data.n_genes, len(categories))
    checkpoints = None
    if settings.checkpoint_dir is not None:  # reads and checks a checkpoint to resume now
        every = settings.checkpoint_every or 1
        checkpoints = Checkpoints(
            settings.checkpoint_dir, every, settings, data, resume=settings.resume
        )

    # 3. Build and train under a forked, seeded RNG and a pinned thread count; Pyro's param
    # store is cleared.
    pyro.clear_param_store()
    with pinned_threads(settings.n_threads), seeded(settings.seed, dev):
        vae = CountVAE(model_config).register()
        objective = build_objective(settings, model_config.n_latent)
        loss = LossModule(vae, objective)
        result = train(loss, data, sampler, settings, dev, checkpoints)
        pruning = None
        if settings.prune:  # the smaller, fine-tuned model replaces the full one
            pruned = prune_and_finetune(vae, data, sampler, settings, dev)
            vae, objective, settings = pruned.vae, pruned.objective, pruned.settings
            pruning = pruned.record
            pyro.clear_param_store()
            vae.register()
        # Latents and KL of every cell from the encoder alone; the ELBO (which needs the
        # decoder and likelihood) on the held-out cells, or all cells without a split.
        summary = summarise_fit(vae, objective, data, sampler, settings, dev)
    loc, decomposition = summary.loc, summary.decomposition

    # 4. Build every output, then write them at once (nothing is half-written on error).
    fields = summary_fields(summary, settings.active_threshold)
    history = pd.DataFrame(result.history)
    for d in range(result.kl_per_dim.shape[1]):  # the full model's dims (before pruning)
        history[f"kl_dim_{d}"] = result.kl_per_dim[:, d]
    training = {
        "epochs_trained": int(len(history)),
        "best_epoch": result.best_epoch,
        "stopped_early": bool(result.stopped_early),
        "monitor": result.monitor,
        "kl_settle_step": int(result.schedules.kl.settle_step),
        "total_steps_planned": int(result.schedules.total_steps),
        "final_kl_weight": float(history["kl_weight"].iloc[-1]),
        "seconds": float(result.seconds),
        "n_cells": int(data.n_cells),
        "n_genes": int(data.n_genes),
        "n_train": int(sampler.n_train),
        "n_val": int(sampler.n_val),
        "n_threads": int(settings.n_threads or torch.get_num_threads()),
    }
    fitted = FittedModel(
        module=vae,
        settings=settings,
        var_names=list(map(str, adata.var_names)),
        batch_categories=categories,
        history=history,
        objective=objective,
    )
    uns_entry = {
        "params": settings.to_dict(),
        **fields,
        "kl_decomposition": {
            **decomposition,
            "estimator": settings.tc_estimator,
            "batch_size": DECOMPOSITION_BATCH_SIZE,
            "n_cells": int(data.n_cells),
        },
        "elbo_cells": "validation" if sampler.n_val else "training",
        "history": history,
        "training": training,
        "validation_indices": sampler.val_idx.astype(np.int64),
        "cells_digest": cells_digest(adata.obs_names),
        "batch_categories": list(categories),
        "versions": versions(),
    }
    if pruning is not None:
        uns_entry["pruning"] = pruning
    obsm_key = "X_" + settings.key_added
    if obsm_key in adata.obsm or settings.key_added in adata.uns:
        warnings.warn(
            f"adata.obsm[{obsm_key!r}] / adata.uns[{settings.key_added!r}] already exist and are "
            "overwritten; pass key_added=... to keep both fits",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    adata.obsm[obsm_key] = loc.astype(np.float32)
    adata.uns[settings.key_added] = uns_entry
    log_finish(
        started,
        f"added\n    .obsm[{obsm_key!r}], posterior means ({data.n_cells}, "
        f"{model_config.n_latent})\n    .uns[{settings.key_added!r}], KL per dimension, "
        f"{fields['n_active']} active, history of {len(history)} epochs",
    )
    return fitted
