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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from scvae_beta.annealing import Schedule, make_schedule
from scvae_beta.config import AnnealingConfig, TrainConfig
from scvae_beta.data.counts import CountData, Minibatch, minibatch_indices, n_minibatches
from scvae_beta.models.base import CountVAE
from scvae_beta.models.elbo import MeanFieldELBO

#: Minibatch size used for validation and inference passes (no gradients). Small enough that
#: the dense (B, G) temporaries stay well below the size of a typical sparse count matrix.
EVAL_BATCH_SIZE = 256


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


def eval_batches(
    module: CountVAE,
    data: CountData,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> Iterator[tuple[slice, Minibatch]]:
    """Yield ``(rows, minibatch)`` over ``indices`` in order, with ``module`` in eval mode.

    ``rows`` is the slice of the output arrays the minibatch fills. Callers write results
    into preallocated arrays: collecting small per-batch tensors in a list was seen to pin
    the freed ``(B, G)`` blocks of every batch in glibc's heap (+2 MiB per batch). The
    module's train/eval mode is restored afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        start = 0
        for idx in minibatch_indices(indices, batch_size):
            yield slice(start, start + len(idx)), data.minibatch(idx, device)
            start += len(idx)
    finally:
        module.train(was_training)


@torch.no_grad()
def evaluate(
    module: CountVAE,
    data: CountData,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell log-likelihood ``(n,)`` and per-dimension KL ``(n, D)`` in eval mode.

    One posterior sample per cell for the log-likelihood; the KL is in closed form.
    """
    elbo = MeanFieldELBO()
    log_lik = np.empty(len(indices), dtype=np.float64)
    kl = np.empty((len(indices), module.config.n_latent), dtype=np.float64)
    with pyro.validation_enabled(False):
        for rows, mb in eval_batches(module, data, indices, device, batch_size):
            terms = elbo(module.model, module.guide, mb.x, mb.log_library, mb.batch_index)
            log_lik[rows] = terms.log_lik.cpu().numpy()
            kl[rows] = terms.kl.cpu().numpy()
    return log_lik, kl


@torch.no_grad()
def encode_cells(
    module: CountVAE,
    data: CountData,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``loc``, ``scale`` ``(n, D)`` of q(z | x) for the rows ``indices`` (eval mode)."""
    loc = np.empty((len(indices), module.config.n_latent), dtype=np.float32)
    scale = np.empty_like(loc)
    for rows, mb in eval_batches(module, data, indices, device, batch_size):
        m, s = module.encode(mb.x, mb.batch_index)
        loc[rows] = m.cpu().numpy()
        scale[rows] = s.cpu().numpy()
    return loc, scale


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
) -> TrainResult:
    """Train ``module`` by SVI on the rows ``train_idx`` of ``data``.

    History columns (per epoch, per cell, nats): ``epoch``, ``train_loss`` (the optimised
    ``reconstruction + kl_weight * kl``), ``train_reconstruction`` (``-log p(x|z)``),
    ``train_kl``, ``val_loss`` (``reconstruction + beta * kl`` on the validation cells, at
    the *target* beta so it is comparable across epochs), ``val_reconstruction``, ``val_kl``,
    ``kl_weight`` (weight of the epoch's last step), ``seconds`` (cumulative).

    Raises
    ------
    TrainingDivergedError
        When the loss becomes NaN/inf, naming the epoch and what to try.
    """
    beta = annealing.beta
    n_train, n_val = len(train_idx), len(val_idx)
    spe = n_minibatches(n_train, config.batch_size)
    schedule = make_schedule(
        annealing.schedule,
        beta=beta,
        total_steps=config.max_epochs * spe,
        steps_per_epoch=spe,
        warmup=annealing.warmup,
        n_cycles=annealing.n_cycles,
        cycle_ratio=annealing.cycle_ratio,
    )
    settle_epoch = _settle_epoch(schedule, spe)
    monitor = "val_loss" if n_val > 0 else "train_loss"

    module.to(device)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    elbo = MeanFieldELBO()
    rng = np.random.default_rng([config.seed, 1])

    cols = (
        "train_loss train_reconstruction train_kl val_loss val_reconstruction val_kl "
        "kl_weight seconds"
    ).split()
    hist: dict[str, list[float]] = {c: [] for c in cols}
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
            sum_wkl = torch.zeros((), device=device, dtype=torch.float64)
            sum_kl = torch.zeros(module.config.n_latent, device=device, dtype=torch.float64)
            for i, idx in enumerate(minibatch_indices(train_idx, config.batch_size, rng)):
                mb = data.minibatch(idx, device)
                w = schedule(step)
                terms = elbo(
                    module.model,
                    module.guide,
                    mb.x,
                    mb.log_library,
                    mb.batch_index,
                    n_cells=n_train,
                    subsample=mb.indices,
                    kl_weight=w,
                )
                loss = terms.loss / n_train
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.clip_norm, foreach=True)
                optimizer.step()
                step_losses[i] = loss.detach()
                kl_dims = terms.kl.sum(0)
                sum_ll += terms.log_lik.sum()
                sum_kl += kl_dims
                sum_wkl += w * kl_dims.sum()
                step += 1
            finite = torch.isfinite(step_losses)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0, 0])
                raise TrainingDivergedError(
                    f"training loss became non-finite at epoch {epoch + 1} (step {bad + 1} of "
                    f"{spe}, KL weight {schedule(step - spe + bad):.3g})."
                    " Try a lower lr (e.g. lr=1e-4), a smaller beta, a longer kl_warmup or "
                    "clip_norm=1.0, and check the counts for extreme values. Nothing was written "
                    "to the AnnData."
                )
            recon = -float(sum_ll) / n_train
            hist["train_reconstruction"].append(recon)
            hist["train_kl"].append(float(sum_kl.sum()) / n_train)
            hist["train_loss"].append(recon + float(sum_wkl) / n_train)
            kl_dims_hist.append((sum_kl / n_train).cpu().numpy())
            if n_val:
                ll, kl = evaluate(module, data, val_idx, device)
                v_rec, v_kl = -ll.mean(), kl.sum(1).mean()
                hist["val_reconstruction"].append(float(v_rec))
                hist["val_kl"].append(float(v_kl))
                hist["val_loss"].append(float(v_rec + beta * v_kl))
            else:
                for c in ("val_reconstruction", "val_kl", "val_loss"):
                    hist[c].append(math.nan)
            hist["kl_weight"].append(schedule(step - 1))
            hist["seconds"].append(time.perf_counter() - t0)
            current = hist[monitor][-1]
            bar.set_postfix(loss=f"{hist['train_loss'][-1]:.4g}", w=f"{hist['kl_weight'][-1]:.3g}")

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
