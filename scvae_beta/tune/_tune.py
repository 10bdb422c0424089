"""``tune_beta(adata, ...)``: a beta sweep (one fit per beta and seed), scored and summarised.

Each fit runs on a light AnnData that shares the user's count matrix, so the user's ``adata``
only ever gains ``uns[key_added]``. The recommendation rule is :func:`recommend_beta`
(``_rules.py``), the metric columns come from :func:`score_latents` (``_scoring.py``) and
every argument is checked up front by ``_args.prepare``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from tqdm.auto import tqdm

from scvae_beta.api import fit
from scvae_beta.tune._args import FitJob, as_list, h5ad_safe, prepare
from scvae_beta.tune._rules import recommend_beta
from scvae_beta.tune._scoring import score_latents

__all__ = ["tune_beta"]

logger = logging.getLogger(__name__)

_KEY = "_tune"


def tune_beta(
    adata: AnnData,
    *,
    betas: Sequence[float] = (0.5, 1, 2, 4, 8, 16),
    model: str | None = None,
    factor_keys: Sequence[str] | str | None = None,
    seeds: Sequence[int] = (0, 1),
    metric: str = "mig",
    metrics: Sequence[str] | None = None,
    metric_kwargs: Mapping[str, Mapping] | None = None,
    max_distortion_increase: float = 0.05,
    n_bins: int = 10,
    n_jobs: int = 1,
    key_added: str = "scvae_beta_tune",
    progress: bool = True,
    **fit_kwargs,
) -> pd.DataFrame:
    """Fit one model per (beta, seed), score each, and recommend a beta.

    Parameters
    ----------
    adata
        Cells x genes of raw counts, as for :func:`scvae_beta.fit`. Only ``uns[key_added]``
        is written; nothing is written on error.
    betas
        Values of ``beta`` to fit (numbers >= 0, no repeats).
    model
        ``"beta_vae"``, ``"beta_tcvae"`` or ``"factor_vae"`` (see :func:`scvae_beta.fit`).
        ``None`` (default): the model of ``preset`` when one is passed in ``fit_kwargs``
        (``"beta_vae"`` for ``preset="disentangle"``), else ``"beta_tcvae"``.
    factor_keys
        ``obs`` columns of known factors (categorical, continuous or cyclic; coded with
        :func:`scvae_beta.datasets.obs_factor_codes` using ``n_bins``). ``None``: no metrics; the
        recommendation is then the knee of the rate-distortion curve.
    seeds
        Seeds (integers); every beta is fitted once per seed.
    metric
        Metric column the recommendation maximises (higher is better), e.g. ``"mig"``,
        ``"dci_disentanglement"``, ``"sap"``, ``"latent_matching"``, ``"ari"``.
    metrics
        Which metrics to compute (keys of :data:`METRIC_COLUMNS`). ``None``: ``"mig"``,
        ``"modularity"``, ``"sap"``, ``"dci"``, plus ``"latent_matching"`` and
        ``"cluster_agreement"`` (Leiden ARI / NMI) when the first factor key holds labels
        (categorical, string or boolean); those two always score the first factor key only.
    metric_kwargs
        Extra arguments per metric, e.g. ``{"dci": {"n_estimators": 100}}`` for the published
        DCI settings; default ``{"dci": {"n_estimators": 20}}`` (fast). Metrics use their own
        default ``seed`` (0), so their randomness is the same for every fit.
    max_distortion_increase
        Tolerance of the recommendation rule, relative to the lowest mean distortion.
    n_bins
        Bins for continuous and cyclic factors.
    n_jobs
        Parallel worker processes (spawned, one torch thread each); ``-1``: one per CPU.
        On CPU the numbers equal those of ``n_jobs=1`` when torch also uses one thread in
        the calling process (``torch.set_num_threads(1)``; float sums depend on the thread
        count). In a script, call ``tune_beta`` under ``if __name__ == "__main__":`` when
        ``n_jobs > 1``.
    key_added
        The summary goes to ``adata.uns[key_added]``.
    progress
        Progress bar over the fits, one line per fit and the recommendation.
    **fit_kwargs
        Passed to every :func:`scvae_beta.fit` (e.g. ``layer``, ``batch_key``, ``n_latent``,
        ``max_epochs``, ``gamma``); ``progress`` of each fit is off.

    Returns
    -------
    ``pandas.DataFrame``, one row per fit in the order of ``betas`` then ``seeds``: ``beta``,
    ``seed``, ``rate`` (held-out mean KL per cell, nats: the fit's ``uns["kl"]``),
    ``distortion`` (held-out negative log-likelihood per cell, nats: ``uns["reconstruction"]``),
    ``elbo``, ``n_active``, ``mi``, ``tc``, ``dw_kl`` (the fit's ``kl_decomposition``), the
    metric columns, ``train_seconds``, ``epochs`` and a boolean ``recommended``;
    ``table.attrs`` holds ``recommended_beta``, ``rule``, ``reason`` and ``metric``. Also
    writes

    ``adata.uns[key_added]``
        ``table`` (the DataFrame), ``recommended_beta`` (float), ``rule``, ``reason``,
        ``metric`` (``""`` with the knee rule) and ``params`` (the sweep's settings; fit
        settings left at ``None`` are omitted). It survives ``write_h5ad`` / ``read_h5ad``
        and is what :func:`scvae_beta.pl.rate_distortion` reads.
    """
    job, betas, seeds, metric, n_jobs = prepare(
        adata,
        betas=betas,
        model=model,
        factor_keys=factor_keys,
        seeds=seeds,
        metric=metric,
        metrics=metrics,
        metric_kwargs=metric_kwargs,
        max_distortion_increase=max_distortion_increase,
        n_bins=n_bins,
        n_jobs=n_jobs,
        key_added=key_added,
        fit_kwargs=fit_kwargs,
    )
    tasks = [(b, s) for b in betas for s in seeds]
    threads = torch.get_num_threads()
    rows: list[dict | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc="tune_beta", unit="fit", disable=not progress)

    def done(i: int, row: dict) -> None:
        rows[i] = row
        if progress:
            score = f", {metric} {row[metric]:.3f}" if metric else ""
            bar.write(
                f"β={row['beta']:g} seed={row['seed']}: distortion {row['distortion']:.3f}, "
                f"rate {row['rate']:.3f} nats{score} ({row['train_seconds']:.1f} s)"
            )
        bar.update(1)

    try:
        if n_jobs == 1:
            for i, (b, s) in enumerate(tasks):
                done(i, _run(job, b, s, threads))
        else:
            _run_parallel(job, tasks, n_jobs, done)
    finally:
        bar.close()
        torch.set_num_threads(threads)

    table = pd.DataFrame(rows).astype({"beta": np.float64, "seed": np.int64})
    best, rule, reason = recommend_beta(
        table, metric=metric, max_distortion_increase=max_distortion_increase
    )
    table["recommended"] = table["beta"] == best
    table.attrs.update(recommended_beta=best, rule=rule, reason=reason, metric=metric or "")
    logger.info(reason)
    if progress:
        print(f"recommended {reason}")
    adata.uns[key_added] = {
        "table": table.copy(),
        "recommended_beta": best,
        "rule": rule,
        "reason": reason,
        "metric": metric or "",
        "params": {
            "betas": [float(b) for b in betas],
            "seeds": [int(s) for s in seeds],
            "model": job.model,
            "factor_keys": [] if factor_keys is None else list(as_list(factor_keys)),
            "metrics": list(job.metrics),
            "metric_kwargs": {k: dict(v) for k, v in job.metric_kwargs.items()},
            "max_distortion_increase": float(max_distortion_increase),
            "n_bins": int(n_bins),
            "fit_kwargs": h5ad_safe(job.fit_kwargs),
        },
    }
    return table


def _run(job: FitJob, beta: float, seed: int, threads: int) -> dict:
    """Fit one model with ``threads`` torch threads and return its table row.

    The thread count is passed to every fit (``n_threads``, unless the caller set it) because
    metric libraries may change the process's count (Leiden's dependencies do), and float
    reductions, hence the fitted numbers, depend on it.
    """
    torch.set_num_threads(threads)
    light = job.light()
    fit(
        light,
        model=job.model,
        beta=beta,
        seed=seed,
        key_added=_KEY,
        progress=False,
        **{"n_threads": threads, **job.fit_kwargs},
    )
    u, z = light.uns[_KEY], light.obsm["X_" + _KEY]
    dec = u["kl_decomposition"]
    row = {
        "beta": float(beta),
        "seed": int(seed),
        "rate": float(u["kl"]),
        "distortion": float(u["reconstruction"]),
        "elbo": float(u["elbo"]),
        "n_active": int(u["n_active"]),
        "mi": float(dec["mi"]),
        "tc": float(dec["tc"]),
        "dw_kl": float(dec["dw_kl"]),
    }
    row.update(score_latents(z, job.codes, job.labels, job.metrics, job.metric_kwargs))
    row["train_seconds"] = float(u["training"]["seconds"])
    row["epochs"] = int(u["training"]["epochs_trained"])
    return row


# ---------------------------------------------------------------------- parallel fits

_WORKER_JOB: FitJob | None = None


def _init_worker(job: FitJob) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _worker_run(beta: float, seed: int) -> dict:
    assert _WORKER_JOB is not None
    return _run(_WORKER_JOB, beta, seed, threads=1)


def _run_parallel(job: FitJob, tasks: list, n_jobs: int, done) -> None:
    """Run the fits in ``n_jobs`` spawned processes; ``done(i, row)`` as each one finishes."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = min(n_jobs, len(tasks))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(job,))
    try:
        futures = {pool.submit(_worker_run, b, s): i for i, (b, s) in enumerate(tasks)}
        for fut in as_completed(futures):
            done(futures[fut], fut.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
