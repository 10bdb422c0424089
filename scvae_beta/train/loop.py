"""The epoch loop: minibatches from the sampler, one optimiser step each, validation, history.

Works on a :class:`~scvae_beta.data.CountSource` and a
:class:`~scvae_beta.models.LossModule` (no AnnData). The loss of a minibatch estimates the
*full* training-set loss (the ``cells`` plate scales by ``n_train / B``); it is divided by
``n_train`` before ``backward`` so that the optimiser and gradient clipping see a per-cell
loss whose scale does not depend on the data-set size.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch

from scvae_beta.data.sampler import Sampler
from scvae_beta.data.source import CountSource
from scvae_beta.evaluation import DECOMPOSITION_MAX_CELLS, validation_pass
from scvae_beta.models.loss import LossModule
from scvae_beta.train.checkpoint import Checkpoints, restore, snapshot
from scvae_beta.train.device import autocast
from scvae_beta.train.distributed import (
    broadcast_flag,
    broadcast_object,
    broadcast_value,
    data_parallel,
    rank_and_world,
)
from scvae_beta.train.early_stopping import EarlyStopping
from scvae_beta.train.guard import check_finite
from scvae_beta.train.history import EpochSums, History
from scvae_beta.train.progress import Progress
from scvae_beta.train.schedules import Schedules


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    history
        Column name -> ``(n_epochs,)`` array (see :func:`train` for the columns).
    kl_per_dim
        ``(n_epochs, n_latent)`` mean KL per training cell and dimension, each epoch.
    schedules
        The resolved KL schedule and capacity.
    best_epoch
        Epoch whose weights were kept (``None`` when early stopping is off).
    stopped_early
        Whether early stopping ended training before ``max_epochs``.
    monitor
        ``"val_loss"`` or ``"train_loss"``: what early stopping watched.
    seconds
        Wall time of the loop.
    """

    history: dict[str, np.ndarray]
    kl_per_dim: np.ndarray
    schedules: Schedules
    best_epoch: int | None
    stopped_early: bool
    monitor: str
    seconds: float


def _validation_row(loss: LossModule, data, probe_idx, device, final_capacity, has_val):
    """Validation loss at the target weights and final capacity, and the decomposition."""
    ll, kl, parts = validation_pass(
        loss.vae, data, probe_idx, device, loss.objective.estimator, loss.objective.report
    )
    row: dict[str, float] = {}
    if has_val:
        v_rec, v_kl = float(-ll.mean()), float(kl.sum(1).mean())
        tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in parts.items()}
        pen = loss.objective.penalty(
            torch.tensor(v_kl, dtype=torch.float64), tensors, capacity=final_capacity
        )
        row.update(val_loss=v_rec + float(pen), val_reconstruction=v_rec, val_kl=v_kl)
    else:
        row.update(val_loss=math.nan, val_reconstruction=math.nan, val_kl=math.nan)
    row.update(parts)
    return row


def train(
    loss: LossModule,
    data: CountSource,
    sampler: Sampler,
    settings,
    device: torch.device,
    checkpoints: Checkpoints | None = None,
) -> TrainResult:
    """Train ``loss.vae`` (and the objective's auxiliary networks) on ``sampler``'s cells.

    ``settings`` is the fit's resolved :class:`~scvae_beta.settings.Settings` (epochs, Adam
    settings, clipping, early stopping, schedules, seed). The KL schedule is a factor in
    [0, 1] on the objective's penalty; ``kl_weight`` in the history is ``beta`` times it.

    History columns (per epoch, per cell, nats): ``epoch``, ``train_loss`` (the optimised
    ``reconstruction + penalty``), ``train_reconstruction`` (``-log p(x|z)``), ``train_kl``
    (closed form), ``train_<part>`` for the objective's parts (beta-TCVAE: ``mi``, ``tc``,
    ``dw_kl``; FactorVAE: ``tc_disc``) and its auxiliary values (FactorVAE: ``disc_loss``),
    ``val_loss`` (``reconstruction + penalty`` on the validation cells at the *target*
    weights and final capacity, so it is comparable across epochs), ``val_reconstruction``,
    ``val_kl``, ``mi``, ``tc``, ``dw_kl`` (KL decomposition of the validation cells'
    aggregate posterior, or of up to 2,048 training cells without a split; FactorVAE adds
    ``tc_disc``), ``kl_weight`` (of the epoch's last step), ``capacity`` (NaN without),
    ``seconds`` (cumulative).

    Under a process group of several ranks (see :mod:`scvae_beta.train.distributed`) the
    batch norms are synchronised over the ranks and the loss module runs inside
    ``DistributedDataParallel`` for the length of the loop; the training columns are sums
    over the ranks, and the validation columns are computed on rank 0 alone and sent to the
    others, so every rank's history is the same.

    With ``checkpoints`` (:class:`~scvae_beta.train.checkpoint.Checkpoints`), the loop's
    state is written after every ``checkpoints.every`` epochs and after the last one, and a
    checkpoint loaded by it is continued from: the epochs it holds are not trained again.

    Raises
    ------
    TrainingDivergedError
        When the loss becomes NaN/inf, naming the epoch and what to try.
    """
    s = settings
    n_train = sampler.n_train
    spe = sampler.steps_per_epoch
    schedules = Schedules(s, s.max_epochs * spe, spe)
    monitor = "val_loss" if sampler.n_val else "train_loss"
    probe_idx = sampler.probe_cells(DECOMPOSITION_MAX_CELLS)
    beta = loss.objective.beta

    loss.to(device)
    loss.train()
    amp = functools.partial(autocast, device, s.precision)
    rank, world = rank_and_world()
    params = loss.vae_parameters()
    optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay, fused=True)
    aux_gen = torch.Generator(device="cpu").manual_seed(s.seed)
    stopper = EarlyStopping(s.patience, s.min_delta, start_epoch=schedules.settle_epoch)
    history = History()
    stopped_early = False
    step = first_epoch = 0
    seconds_before = 0.0
    state = dict(
        loss=loss,
        optimizer=optimizer,
        stopper=stopper,
        history=history,
        sampler=sampler,
        aux_gen=aux_gen,
        device=device,
    )
    if checkpoints is not None and checkpoints.loaded is not None:
        done = restore(checkpoints.loaded, **state)
        first_epoch, step = done["epochs_done"], done["step"]
        stopped_early, seconds_before = done["stopped_early"], done["seconds"]
    t0 = time.perf_counter() - seconds_before
    progress = Progress(s.max_epochs, s.progress, initial=first_epoch)
    # Under a process group: synchronised batch norm and DDP (see train/distributed.py).
    with pyro.validation_enabled(False), data_parallel(loss, device) as step_module:
        step_losses = torch.empty(spe, device=device)  # reused: no per-step allocations kept
        last_epoch = first_epoch if stopped_early else s.max_epochs  # resumed after the end
        for epoch in range(first_epoch, last_epoch):
            sums = EpochSums(loss.vae.config.n_latent, device)
            for i, idx in enumerate(sampler.epoch()):
                anneal, cap = schedules(step)
                mb = data.minibatch(idx, device)
                with amp():
                    out = step_module(mb, n_train, anneal, cap)
                scaled = out.loss / n_train
                optimizer.zero_grad(set_to_none=True)
                scaled.backward()
                if s.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, s.clip_norm, foreach=True)
                optimizer.step()
                sums.add_aux(loss.objective.auxiliary_step(out.terms.z, aux_gen))
                step_losses[i] = scaled.detach()
                sums.add(out, len(idx))
                step += 1
            check_finite(
                step_losses, epoch, lambda j, first=step - spe: beta * schedules.kl(first + j)
            )
            sums.all_reduce()
            row = sums.row(n_train)
            val_row = None
            if rank == 0:  # the other ranks read no validation cells: rank 0's row is sent
                val_row = _validation_row(
                    loss, data, probe_idx, device, schedules.final_capacity, sampler.n_val > 0
                )
            row.update(broadcast_object(val_row, device))
            row["kl_weight"] = beta * schedules.kl(step - 1)
            cap = schedules.capacity_at(step - 1)
            row["capacity"] = math.nan if cap is None else cap
            row["seconds"] = time.perf_counter() - t0
            history.append(row, sums.kl_per_dim(n_train))
            progress.update(row)
            monitored = broadcast_value(row[monitor], device)  # rank 0's validation
            stop = s.early_stopping and stopper.step(epoch, monitored, loss)
            stopped_early = broadcast_flag(stop, device)  # rank 0 decides
            last = stopped_early or epoch + 1 == s.max_epochs
            if checkpoints is not None and rank == 0 and checkpoints.due(epoch + 1, last):
                checkpoints.write(
                    snapshot(
                        **state,
                        epochs_done=epoch + 1,
                        step=step,
                        stopped_early=stopped_early,
                        seconds=time.perf_counter() - t0,
                    )
                )
            if stopped_early:
                break
    progress.close()
    stopper.restore(loss)
    best = stopper.best_epoch
    return TrainResult(
        history=history.arrays(),
        kl_per_dim=np.vstack(history.kl_per_dim),
        schedules=schedules,
        best_epoch=None if best is None else best + 1,
        stopped_early=stopped_early,
        monitor=monitor,
        seconds=time.perf_counter() - t0,
    )
