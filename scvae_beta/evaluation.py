"""Passes without gradients: validation, encoding and the KL decomposition of many cells.

Each walks the cells in minibatches with the module in eval mode and writes into
preallocated outputs (see :func:`eval_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import pyro
import torch

from scvae_beta.data.counts import Minibatch, minibatch_indices
from scvae_beta.data.source import CountSource
from scvae_beta.models.base import CountVAE
from scvae_beta.models.elbo import MeanFieldELBO
from scvae_beta.objectives import kl_decomposition

#: Minibatch size used for validation and inference passes (no gradients). Small enough that
#: the dense (B, G) temporaries stay well below the size of a typical sparse count matrix.
EVAL_BATCH_SIZE = 256
#: Minibatch size of the reported KL decomposition (MI, TC, dw-KL): fixed, so that estimates
#: are comparable between fits and data sets of different sizes.
DECOMPOSITION_BATCH_SIZE = 256
#: Without a validation split, the per-epoch decomposition uses this many training cells.
DECOMPOSITION_MAX_CELLS = 2048


def eval_batches(
    module: CountVAE,
    data: CountSource,
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


def evaluate(
    module: CountVAE,
    data: CountSource,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell log-likelihood ``(n,)`` and per-dimension KL ``(n, D)`` in eval mode.

    One posterior sample per cell for the log-likelihood; the KL is in closed form.
    """
    log_lik, kl, _ = validation_pass(module, data, indices, device, None, batch_size=batch_size)
    return log_lik, kl


Report = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, float]]


def _no_report(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> dict[str, float]:
    return {}


def _batch_parts(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    dataset_size: int,
    estimator: str,
    report: Report,
) -> dict[str, float]:
    """MI, TC, dw-KL of one minibatch, plus what the objective's ``report`` adds, as floats."""
    d = kl_decomposition(z, loc, scale, dataset_size=dataset_size, estimator=estimator)
    return {"mi": float(d.mi), "tc": float(d.tc), "dw_kl": float(d.dw_kl), **report(z, loc, scale)}


def _accumulate(total: dict[str, float], parts: dict[str, float], weight: int) -> None:
    for k, v in parts.items():
        total[k] = total.get(k, 0.0) + weight * v


@torch.no_grad()
def validation_pass(
    module: CountVAE,
    data: CountSource,
    indices: np.ndarray,
    device: torch.device,
    estimator: str | None,
    report: Report = _no_report,
    batch_size: int = DECOMPOSITION_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per-cell log-likelihood and KL plus the KL decomposition of the cells ``indices``.

    Returns per-cell log-likelihood ``(n,)`` (one posterior sample), per-dimension KL
    ``(n, D)`` (closed form) and the mean per cell of ``mi``, ``tc``, ``dw_kl`` (and what
    the objective's ``report(z, loc, scale)`` adds, e.g. FactorVAE's ``tc_disc``) of the cells' own
    aggregate posterior, each minibatch's estimate weighted by its size; ``{}`` when
    ``estimator`` is ``None``.
    """
    elbo = MeanFieldELBO()
    n = len(indices)
    log_lik = np.empty(n, dtype=np.float64)
    kl = np.empty((n, module.config.n_latent), dtype=np.float64)
    total: dict[str, float] = {}
    with pyro.validation_enabled(False):
        for rows, mb in eval_batches(module, data, indices, device, batch_size):
            terms = elbo(module.model, module.guide, mb.x, mb.log_library, mb.batch_index)
            log_lik[rows] = terms.log_lik.cpu().numpy()
            kl[rows] = terms.kl.cpu().numpy()
            if estimator is not None and n >= 2:
                parts = _batch_parts(terms.z, terms.loc, terms.scale, n, estimator, report)
                _accumulate(total, parts, rows.stop - rows.start)
    return log_lik, kl, {k: v / n for k, v in total.items()}


@torch.no_grad()
def decompose_cells(
    loc: np.ndarray,
    scale: np.ndarray,
    *,
    estimator: str = "mss",
    report: Report = _no_report,
    batch_size: int = DECOMPOSITION_BATCH_SIZE,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """KL decomposition of the aggregate posterior of cells with posteriors ``loc``, ``scale``.

    ``loc``, ``scale``: ``(n, D)`` (from :func:`encode_cells`, so nothing is encoded twice).
    The cells are shuffled (seeded) into minibatches of ``batch_size``; each gets one sample
    ``z ~ q(z | x)`` per cell and the estimator with ``dataset_size = n``; the minibatch
    estimates are averaged, weighted by size. ``report(z, loc, scale)`` adds the
    objective's own terms (FactorVAE's ``tc_disc``); the estimates run on ``device``.

    Returns
    -------
    ``{"mi", "tc", "dw_kl"}`` in nats per cell (plus what ``report`` adds).
    """
    n = len(loc)
    if n < 2:
        raise ValueError("the KL decomposition needs at least 2 cells")
    order = np.random.default_rng([seed, 3]).permutation(n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    total: dict[str, float] = {}
    for idx in minibatch_indices(order, batch_size):
        m = torch.from_numpy(loc[idx]).to(device)
        s = torch.from_numpy(scale[idx]).to(device)
        eps = torch.randn(m.shape, generator=gen, dtype=m.dtype).to(device)
        _accumulate(total, _batch_parts(m + s * eps, m, s, n, estimator, report), len(idx))
    return {k: v / n for k, v in total.items()}


@torch.no_grad()
def encode_cells(
    module: CountVAE,
    data: CountSource,
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


class FitSummary(NamedTuple):
    """What ``fit`` (and ``tl.prune_dimensions``) report after training.

    ``loc``, ``scale``: ``(n_cells, D)`` posterior parameters of every cell; ``kl_per_dim``:
    ``(D,)`` mean KL per cell; ``log_lik`` ``(n,)`` and ``kl`` ``(n, D)`` of the ELBO cells
    (validation cells, or the training cells without a split); ``decomposition``: MI, TC,
    dw-KL (and the objective's own terms) over all cells.
    """

    loc: np.ndarray
    scale: np.ndarray
    kl_per_dim: np.ndarray
    log_lik: np.ndarray
    kl: np.ndarray
    decomposition: dict[str, float]


@torch.no_grad()
def summarise_fit(vae, objective, data, sampler, settings, device) -> FitSummary:
    """Encode every cell, its mean KL per dimension (in chunks: no ``(n_cells, D)`` KL
    temporaries), the ELBO of the held-out cells and the whole-data decomposition."""
    loc, scale = encode_cells(vae, data, np.arange(data.n_cells), device)
    kl_per_dim = np.zeros(vae.config.n_latent)
    for s in range(0, data.n_cells, 65536):
        kl = vae.kl_to_prior(
            torch.from_numpy(loc[s : s + 65536]), torch.from_numpy(scale[s : s + 65536])
        )
        kl_per_dim += kl.double().sum(0).numpy()
    kl_per_dim /= data.n_cells
    elbo_idx = sampler.val_idx if sampler.n_val else sampler.train_idx
    log_lik, kl = evaluate(vae, data, elbo_idx, device)
    decomposition = decompose_cells(
        loc,
        scale,
        estimator=settings.tc_estimator,
        report=objective.report,
        seed=settings.seed,
        device=device,
    )
    return FitSummary(loc, scale, kl_per_dim, log_lik, kl, decomposition)


def summary_fields(summary: FitSummary, active_threshold: float) -> dict:
    """The ``uns[key]`` entries every fit summary writes: ``kl_per_dim``, ``active_dims``
    (mean KL above ``active_threshold``), ``n_active``, ``elbo``, ``reconstruction`` and
    ``kl`` (per cell, over the cells the ELBO was evaluated on)."""
    active = np.flatnonzero(summary.kl_per_dim > active_threshold).astype(np.int64)
    kl_total = summary.kl.sum(1)
    return {
        "kl_per_dim": summary.kl_per_dim,
        "active_dims": active,
        "n_active": int(active.size),
        "elbo": float(np.mean(summary.log_lik - kl_total)),
        "reconstruction": float(-np.mean(summary.log_lik)),
        "kl": float(kl_total.mean()),
    }
