"""``tune_beta(adata, ...)``: a beta sweep (one fit per beta and seed), scored and summarised.

Each fit runs on a light AnnData that shares the user's count matrix, so the user's ``adata``
only ever gains ``uns[key_added]``. The recommendation rule is :func:`recommend_beta`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from tqdm.auto import tqdm

from scvae_beta import metrics as M
from scvae_beta.api import fit
from scvae_beta.config import MODELS
from scvae_beta.data import count_data
from scvae_beta.datasets import factor_codes

logger = logging.getLogger(__name__)

#: Metric name -> the table columns it fills.
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "mig": ("mig",),
    "modularity": ("modularity",),
    "sap": ("sap",),
    "dci": ("dci_disentanglement", "dci_completeness", "dci_informativeness_test"),
    "latent_matching": ("latent_matching",),
    "cluster_agreement": ("ari", "nmi"),
}
#: Metrics computed against the first factor key only, and only when it holds labels.
LABEL_METRICS = ("latent_matching", "cluster_agreement")
#: Fast defaults: DCI with 20 trees instead of disentanglement_lib's 100.
DEFAULT_METRIC_KWARGS: dict[str, dict] = {"dci": {"n_estimators": 20}}
_FUNCS = {
    "mig": M.mig,
    "modularity": M.modularity,
    "sap": M.sap,
    "dci": M.dci,
    "latent_matching": M.latent_matching_score,
    "cluster_agreement": M.cluster_agreement,
}
#: Arguments tune_beta sets itself for every fit.
_OWN = ("beta", "seed", "model", "key_added", "progress")
_KEY = "_tune"
_SETTINGS = set(inspect.signature(fit).parameters) - {"adata"}


@dataclass(frozen=True)
class _Job:
    """Everything a fit needs, picklable for worker processes."""

    X: object
    layer: str | None
    obs: pd.DataFrame
    var_names: pd.Index
    model: str
    fit_kwargs: dict
    codes: np.ndarray | None
    labels: np.ndarray | None
    metrics: tuple[str, ...]
    metric_kwargs: dict

    def light(self) -> AnnData:
        var = pd.DataFrame(index=self.var_names)
        if self.layer is None:
            return AnnData(X=self.X, obs=self.obs.copy(), var=var)
        return AnnData(obs=self.obs.copy(), var=var, layers={self.layer: self.X})


def tune_beta(
    adata: AnnData,
    *,
    betas: Sequence[float] = (0.5, 1, 2, 4, 8, 16),
    model: str = "beta_tcvae",
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
    factor_keys
        ``obs`` columns of known factors (categorical, continuous or cyclic; coded with
        :func:`scvae_beta.datasets.factor_codes` using ``n_bins``). ``None``: no metrics; the
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
    job, betas, seeds, metric, n_jobs = _prepare(
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
            "model": model,
            "factor_keys": [] if factor_keys is None else list(_as_list(factor_keys)),
            "metrics": list(job.metrics),
            "metric_kwargs": {k: dict(v) for k, v in job.metric_kwargs.items()},
            "max_distortion_increase": float(max_distortion_increase),
            "n_bins": int(n_bins),
            "fit_kwargs": _h5ad_safe(job.fit_kwargs),
        },
    }
    return table


def recommend_beta(
    table: pd.DataFrame, *, metric: str | None = "mig", max_distortion_increase: float = 0.05
) -> tuple[float, str, str]:
    """The recommended beta of a sweep table, the rule used and a one-line reason.

    Values are first averaged over seeds, per beta.

    - ``"metric_within_distortion"`` (``metric`` given and not all NaN): among the betas whose
      mean ``distortion`` is at most ``best + max_distortion_increase * |best|`` (``best`` the
      lowest mean distortion), the one with the highest mean ``metric``; ties go to the lower
      distortion. Betas whose metric is NaN are skipped.
    - ``"knee"`` (no metric): the knee of the mean rate-distortion curve. Points are sorted by
      rate and both axes scaled to [0, 1]; the knee is the point farthest below the chord
      joining the first and last point (beyond it, more rate buys little less distortion).
    - ``"lowest_distortion"``: the fallback when there is no knee (fewer than three betas,
      distortion not falling from the lowest to the highest rate, or no point below the
      chord).

    Parameters
    ----------
    table
        Columns ``beta``, ``rate``, ``distortion`` and ``metric`` (when given).
    metric
        Column to maximise, or ``None`` for the knee rule.
    max_distortion_increase
        Relative tolerance on the mean distortion (>= 0).

    Returns
    -------
    ``(beta, rule, reason)``.
    """
    if max_distortion_increase < 0 or not math.isfinite(max_distortion_increase):
        raise ValueError(f"max_distortion_increase must be >= 0, got {max_distortion_increase!r}")
    cols = ["rate", "distortion"] + ([metric] if metric else [])
    missing = [c for c in ["beta", *cols] if c not in table.columns]
    if missing:
        raise KeyError(f"the sweep table lacks columns {missing}; it has {list(table.columns)}")
    if len(table) == 0:
        raise ValueError("the sweep table is empty")
    mean = table.astype({"beta": np.float64}).groupby("beta", sort=True)[cols].mean()
    d = mean["distortion"]
    if metric and mean[metric].notna().any():
        best = float(d.min())
        limit = best + max_distortion_increase * abs(best)
        ok = mean[(d <= limit) & mean[metric].notna()]
        if not ok.empty:
            pick = ok.sort_values([metric, "distortion"], ascending=[False, True]).index[0]
            return (
                float(pick),
                "metric_within_distortion",
                f"β={pick:g}: highest mean {metric} ({ok.loc[pick, metric]:.3g}) among β "
                f"{[float(b) for b in ok.index]} whose mean held-out distortion is within "
                f"{max_distortion_increase:.0%} of the lowest ({best:.4g} nats/cell at "
                f"β={d.idxmin():g})",
            )
    pts = mean.reset_index().sort_values(["rate", "beta"])
    x, y = (_unit(pts[c].to_numpy(dtype=np.float64)) for c in ("rate", "distortion"))
    if len(pts) >= 3:
        dx, dy = x[-1] - x[0], y[-1] - y[0]
        below = (dx * (y - y[0]) - dy * (x - x[0])) / max(math.hypot(dx, dy), 1e-12)
        if dx > 0 and dy < 0 and below.min() < -1e-9:
            i = int(np.argmin(below))
            b = float(pts["beta"].iloc[i])
            return (
                b,
                "knee",
                f"β={b:g}: knee of the rate-distortion curve (mean rate "
                f"{pts['rate'].iloc[i]:.3g} nats, distortion {pts['distortion'].iloc[i]:.4g} "
                f"nats/cell), the point farthest below the chord from β="
                f"{pts['beta'].iloc[0]:g} to β={pts['beta'].iloc[-1]:g}",
            )
    b = float(d.idxmin())
    return (
        b,
        "lowest_distortion",
        f"β={b:g}: lowest mean held-out distortion ({d.min():.4g} nats/cell); the "
        "rate-distortion curve has no knee",
    )


def _unit(v: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant vector becomes zeros)."""
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def _run(job: _Job, beta: float, seed: int, threads: int) -> dict:
    """Fit one model with ``threads`` torch threads and return its table row.

    The thread count is set before every fit because metric libraries may change it (Leiden's
    dependencies do), and float reductions, hence the fitted numbers, depend on it.
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
        **job.fit_kwargs,
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


def score_latents(
    latents: np.ndarray,
    codes: np.ndarray | None,
    labels: np.ndarray | None,
    metrics: Sequence[str],
    metric_kwargs: Mapping[str, Mapping],
) -> dict[str, float]:
    """Metric columns of one fit (see :data:`METRIC_COLUMNS`).

    ``latents`` ``(n_cells, n_latent)``; ``codes`` ``(n_cells, n_factors)`` integer factor
    codes; ``labels`` ``(n_cells,)`` labels of the first factor (for the label metrics). A
    metric that fails with ``ValueError`` (e.g. a factor with one class among DCI's training
    cells) gives NaN and a warning instead of ending the sweep.
    """
    import warnings

    out: dict[str, float] = {}
    for name in metrics:
        kw = dict(metric_kwargs.get(name, {}))
        target = labels if name in LABEL_METRICS else codes
        try:
            res = _FUNCS[name](latents, target, **kw)
        except ValueError as err:
            msg = f"tune_beta: metric {name!r} failed ({err}); recorded as NaN"
            warnings.warn(msg, UserWarning, stacklevel=2)
            out.update(dict.fromkeys(METRIC_COLUMNS[name], float("nan")))
            continue
        if name == "dci":
            parts = ("disentanglement", "completeness", "informativeness_test")
            res = {f"dci_{k}": res[k] for k in parts}
        elif name == "latent_matching":
            res = {"latent_matching": res["score"]}
        elif name == "cluster_agreement":
            res = {"ari": res["ari"], "nmi": res["nmi"]}
        else:
            res = {name: res}
        out.update({k: float(v) for k, v in res.items()})
    return out


# ---------------------------------------------------------------------- parallel fits

_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _worker_run(beta: float, seed: int) -> dict:
    assert _WORKER_JOB is not None
    return _run(_WORKER_JOB, beta, seed, threads=1)


def _run_parallel(job: _Job, tasks: list, n_jobs: int, done) -> None:
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


# ---------------------------------------------------------------------- validation


def _as_list(x) -> list:
    return [x] if isinstance(x, str | int | float | np.number) else list(x)


def _is_label(col: pd.Series) -> bool:
    return (
        isinstance(col.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(col)
        or not pd.api.types.is_numeric_dtype(col)
    )


def _prepare(
    adata: AnnData,
    *,
    betas,
    model: str,
    factor_keys,
    seeds,
    metric: str,
    metrics,
    metric_kwargs,
    max_distortion_increase: float,
    n_bins: int,
    n_jobs: int,
    key_added: str,
    fit_kwargs: dict,
) -> tuple[_Job, list[float], list[int], str | None, int]:
    """Check every argument (before any fit) and build the job."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    betas = _as_list(betas)
    if not betas:
        raise ValueError("betas is empty; pass at least one value, e.g. betas=[1, 2, 4, 8]")
    for b in betas:
        if isinstance(b, bool) or not isinstance(b, int | float | np.number) or not b >= 0:
            raise ValueError(f"every beta must be a number >= 0; got {b!r} in betas={betas}")
        if not math.isfinite(b):
            raise ValueError(f"every beta must be finite; got {b!r}")
    betas = [float(b) for b in betas]
    if len(set(betas)) != len(betas):
        raise ValueError(f"betas has repeated values: {betas}; seeds= gives repeats per beta")
    seeds = _as_list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; pass at least one integer, e.g. seeds=[0]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise ValueError(f"seeds must be integers >= 0; got {s!r} in seeds={seeds}")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has repeated values: {seeds}")
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not supported; choose one of {list(MODELS)}")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError("key_added must be a non-empty string")
    if not (isinstance(max_distortion_increase, int | float) and max_distortion_increase >= 0):
        raise ValueError(
            f"max_distortion_increase must be a number >= 0, got {max_distortion_increase!r}"
        )
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1 (or -1: one per CPU); got {n_jobs!r}")
    own = sorted(set(fit_kwargs) & set(_OWN))
    if own:
        raise ValueError(
            f"tune_beta sets {own} itself; pass betas=[...], seeds=[...], model=..., "
            "key_added=... of tune_beta instead"
        )
    unknown = sorted(set(fit_kwargs) - _SETTINGS)
    if unknown:
        raise TypeError(f"unknown fit settings {unknown}; scvae_beta.fit takes {sorted(_SETTINGS)}")

    # Factors, metrics and the recommendation metric.
    keys = [] if factor_keys is None else [str(k) for k in _as_list(factor_keys)]
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"factor keys {missing} not in adata.obs; available columns: {list(adata.obs.columns)}"
        )
    codes = labels = None
    is_label = bool(keys) and _is_label(adata.obs[keys[0]])
    if keys:
        codes = factor_codes(adata, keys, n_bins)[0]
        if is_label:
            labels = adata.obs[keys[0]].astype(str).to_numpy()
    if metrics is None:
        metrics = [] if not keys else ["mig", "modularity", "sap", "dci"]
        metrics += list(LABEL_METRICS) if is_label else []
    metrics = tuple(_as_list(metrics))
    bad = [m for m in metrics if m not in METRIC_COLUMNS]
    if bad:
        raise ValueError(f"unknown metrics {bad}; choose from {list(METRIC_COLUMNS)}")
    if metrics and not keys:
        raise ValueError(f"metrics {list(metrics)} need factor_keys=[...] (obs columns)")
    if not is_label and set(metrics) & set(LABEL_METRICS):
        raise ValueError(
            f"{sorted(set(metrics) & set(LABEL_METRICS))} need labels: the first factor key "
            f"must be a categorical, string or boolean obs column (got {keys[:1]})"
        )
    kwargs = {k: dict(v) for k, v in DEFAULT_METRIC_KWARGS.items() if k in metrics}
    for name, kw in (metric_kwargs or {}).items():
        if name not in metrics:
            raise ValueError(f"metric_kwargs names {name!r}, which is not in metrics={metrics}")
        kwargs[name] = {**kwargs.get(name, {}), **dict(kw)}
        try:
            inspect.signature(_FUNCS[name]).bind(None, None, **kwargs[name])
        except TypeError as err:
            raise TypeError(f"metric_kwargs[{name!r}]: {err}") from err
    columns = [c for m in metrics for c in METRIC_COLUMNS[m]]
    if not keys:
        metric = None
    elif metric not in columns:
        raise ValueError(f"metric={metric!r} is not computed; choose one of {columns}")

    # Data: the light AnnData shares the count matrix; count_data checks it once up front.
    layer, batch_key = fit_kwargs.get("layer"), fit_kwargs.get("batch_key")
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not found; available: {list(adata.layers)}; pass layer=None to use .X"
        )
    obs_cols = [batch_key] if batch_key is not None and batch_key in adata.obs else []
    job = _Job(
        X=adata.X if layer is None else adata.layers[layer],
        layer=layer,
        obs=adata.obs[obs_cols].copy(),
        var_names=adata.var_names.copy(),
        model=model,
        fit_kwargs=dict(fit_kwargs),
        codes=codes,
        labels=labels,
        metrics=metrics,
        metric_kwargs=kwargs,
    )
    count_data(job.light(), layer=layer, batch_key=batch_key)
    return job, betas, seeds, metric, int(n_jobs)


def _h5ad_safe(d: Mapping) -> dict:
    """Fit settings as h5ad-writable values: tuples become lists, ``None`` entries go."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        out[k] = _h5ad_safe(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v
    return out
