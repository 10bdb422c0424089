"""The SVI loop: minibatches, annealed KL weight, validation, early stopping, NaN guard.

Works on tensors and :class:`~scvae_beta.data.CountData` only (no AnnData). The loss of a
minibatch is the Pyro ELBO estimate of the *full* training-set loss (the ``cells`` plate
scales by ``n_train / B``); it is divided by ``n_train`` before ``backward`` so that the
optimiser and gradient clipping see a per-cell loss whose scale does not depend on the
data-set size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from scvae_beta.annealing import Schedule, make_schedule
from scvae_beta.config import AnnealingConfig, ObjectiveConfig, TrainConfig
from scvae_beta.data.counts import CountData, minibatch_indices, n_minibatches
from scvae_beta.evaluation import DECOMPOSITION_MAX_CELLS, validation_pass
from scvae_beta.models.base import CountVAE
from scvae_beta.models.objective import Objective, discriminator_step


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; nothing was written to the AnnData."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    history
        Column name -> ``(n_epochs,)`` array (see :func:`train` for the columns).
    kl_per_dim
        ``(n_epochs, n_latent)`` mean KL per training cell and dimension, each epoch.
    schedule
        The resolved KL schedule.
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
    schedule: Schedule
    best_epoch: int | None
    stopped_early: bool
    monitor: str
    seconds: float


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; checks that CUDA exists when asked for."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but CUDA is not available here; "
            "pass device='auto' or device='cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'auto', 'cpu' or 'cuda'")
    return dev


def _settle_epoch(schedule: Schedule, steps_per_epoch: int) -> int:
    """First epoch all of whose steps use the full beta."""
    return math.ceil(schedule.settle_step / steps_per_epoch)


def train(
    module: CountVAE,
    data: CountData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
    annealing: AnnealingConfig,
    device: torch.device,
    objective: ObjectiveConfig | None = None,
) -> TrainResult:
    """Train ``module`` by SVI on the rows ``train_idx`` of ``data``.

    ``objective`` says what is penalised and how strongly (default: a beta-VAE, beta 1). The KL
    schedule is used as a factor in [0, 1] on the penalty (see
    :class:`~scvae_beta.config.ObjectiveConfig`); ``kl_weight`` in the history is
    ``beta`` times that factor.

    History columns (per epoch, per cell, nats): ``epoch``, ``train_loss`` (the optimised
    ``reconstruction + penalty``), ``train_reconstruction`` (``-log p(x|z)``), ``train_kl``
    (closed form), ``val_loss`` (``reconstruction + penalty`` on the validation cells at the
    *target* weights and final capacity, so it is comparable across epochs),
    ``val_reconstruction``, ``val_kl``, ``mi``, ``tc``, ``dw_kl`` (KL decomposition of the
    validation cells' aggregate posterior, or of up to 2,048 training cells without a split),
    ``kl_weight`` (of the epoch's last step), ``capacity`` (NaN without), ``seconds``
    (cumulative); beta-TCVAE adds ``train_mi``, ``train_tc``, ``train_dw_kl`` (the
    minibatch estimates it optimised) and FactorVAE ``tc_disc`` (validation),
    ``train_tc_disc`` and ``disc_loss``.

    Raises
    ------
    TrainingDivergedError
        When the loss becomes NaN/inf, naming the epoch and what to try.
    """
    oc = objective if objective is not None else ObjectiveConfig()
    loss_fn = Objective(oc)
    n_train, n_val = len(train_idx), len(val_idx)
    spe = n_minibatches(n_train, config.batch_size)
    total_steps = config.max_epochs * spe
    schedule = make_schedule(
        annealing.schedule,
        beta=1.0,
        total_steps=total_steps,
        steps_per_epoch=spe,
        warmup=annealing.warmup,
        n_cycles=annealing.n_cycles,
        cycle_ratio=annealing.cycle_ratio,
    )
    settle_epoch = max(
        _settle_epoch(schedule, spe), math.ceil(oc.capacity_settle_step(total_steps) / spe)
    )
    final_capacity = oc.capacity_at(total_steps, total_steps)
    monitor = "val_loss" if n_val > 0 else "train_loss"
    rng = np.random.default_rng([config.seed, 1])
    probe_idx = (
        val_idx
        if n_val
        else np.sort(rng.choice(train_idx, min(n_train, DECOMPOSITION_MAX_CELLS), replace=False))
    )

    module.to(device)
    module.train()
    params = module.vae_parameters()
    optimizer = torch.optim.Adam(
        params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    disc_opt = None
    if oc.model == "factor_vae":
        disc_opt = torch.optim.Adam(
            module.discriminator.parameters(), lr=oc.disc_lr, betas=(0.5, 0.9), foreach=True
        )
    disc_gen = torch.Generator(device="cpu").manual_seed(config.seed)

    hist: dict[str, list[float]] = {}
    kl_dims_hist: list[np.ndarray] = []
    best, best_epoch, best_state, wait = math.inf, None, None, 0
    stopped_early = False
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(
        range(config.max_epochs), desc="scvae_beta", unit="epoch", disable=not config.progress
    )
    with pyro.validation_enabled(False):
        step_losses = torch.empty(spe, device=device)  # reused: no per-step allocations kept
        for epoch in bar:
            sum_ll = torch.zeros((), device=device, dtype=torch.float64)
            sum_pen = torch.zeros((), device=device, dtype=torch.float64)
            sum_kl = torch.zeros(module.config.n_latent, device=device, dtype=torch.float64)
            sum_parts: dict[str, torch.Tensor] = {}
            disc_loss = 0.0
            for i, idx in enumerate(minibatch_indices(train_idx, config.batch_size, rng)):
                mb = data.minibatch(idx, device)
                f = schedule(step)
                cap = oc.capacity_at(step, total_steps)
                out = loss_fn(module, mb, n_cells=n_train, anneal=f, capacity=cap)
                loss = out.loss / n_train
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.clip_norm, foreach=True)
                optimizer.step()
                if disc_opt is not None:
                    disc_loss += discriminator_step(module, out.terms.z, disc_opt, disc_gen)
                step_losses[i] = loss.detach()
                kl_dims = out.terms.kl.sum(0)
                sum_ll += out.terms.log_lik.sum()
                sum_kl += kl_dims
                if loss_fn.uses_pyro_scale:
                    sum_pen += oc.beta * f * kl_dims.sum()
                else:
                    b = len(idx)
                    sum_pen += out.parts["penalty"] * b
                    for k, v in out.parts.items():
                        if k != "penalty":
                            sum_parts[k] = sum_parts.get(k, 0.0) + v * b
                step += 1
            finite = torch.isfinite(step_losses)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0, 0])
                raise TrainingDivergedError(
                    f"training loss became non-finite at epoch {epoch + 1} (step {bad + 1} of "
                    f"{spe}, KL weight {oc.beta * schedule(step - spe + bad):.3g})."
                    " Try a lower lr (e.g. lr=1e-4), a smaller beta, a longer kl_warmup or "
                    "clip_norm=1.0, and check the counts for extreme values. Nothing was written "
                    "to the AnnData."
                )
            row: dict[str, float] = {}
            recon = -float(sum_ll) / n_train
            row["train_loss"] = recon + float(sum_pen) / n_train
            row["train_reconstruction"] = recon
            row["train_kl"] = float(sum_kl.sum()) / n_train
            for k, v in sum_parts.items():
                row["train_" + k] = float(v) / n_train
            if disc_opt is not None:
                row["disc_loss"] = disc_loss / spe
            kl_dims_hist.append((sum_kl / n_train).cpu().numpy())
            ll, kl, parts = validation_pass(module, data, probe_idx, device, oc.tc_estimator)
            if n_val:
                v_rec, v_kl = float(-ll.mean()), float(kl.sum(1).mean())
                tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in parts.items()}
                pen = loss_fn.penalty(
                    torch.tensor(v_kl, dtype=torch.float64), tensors, capacity=final_capacity
                )
                row.update(val_loss=v_rec + float(pen), val_reconstruction=v_rec, val_kl=v_kl)
            else:
                row.update(val_loss=math.nan, val_reconstruction=math.nan, val_kl=math.nan)
            row.update(parts)
            row["kl_weight"] = oc.beta * schedule(step - 1)
            cap = oc.capacity_at(step - 1, total_steps)
            row["capacity"] = math.nan if cap is None else cap
            row["seconds"] = time.perf_counter() - t0
            for k, v in row.items():
                hist.setdefault(k, []).append(v)
            current = row[monitor]
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", w=f"{row['kl_weight']:.3g}")

            if config.early_stopping and epoch >= settle_epoch:
                if current < best - config.min_delta:
                    best, best_epoch, wait = current, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    wait += 1
                    if wait >= config.patience:
                        stopped_early = True
                        break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    n_epochs = len(hist["train_loss"])
    history = {"epoch": np.arange(1, n_epochs + 1)}
    history.update({c: np.asarray(v, dtype=np.float64) for c, v in hist.items()})
    return TrainResult(
        history=history,
        kl_per_dim=np.vstack(kl_dims_hist),
        schedule=schedule,
        best_epoch=None if best_epoch is None else best_epoch + 1,
        stopped_early=stopped_early,
        monitor=monitor,
        seconds=time.perf_counter() - t0,
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
