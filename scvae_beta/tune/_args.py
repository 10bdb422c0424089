"""Argument checks of ``tune_beta`` and the picklable job they build (before any fit runs)."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from scvae_beta.api import fit
from scvae_beta.data import count_data
from scvae_beta.data.backed import is_on_disk
from scvae_beta.datasets import obs_factor_codes
from scvae_beta.settings import PRESETS, Settings, check_key
from scvae_beta.tune._scoring import (
    DEFAULT_METRIC_KWARGS,
    LABEL_METRICS,
    METRIC_COLUMNS,
    METRIC_FUNCS,
)

#: Arguments tune_beta sets itself for every fit.
_OWN = ("beta", "seed", "model", "key_added", "progress")
_SETTINGS = set(inspect.signature(fit).parameters) - {"adata"}


@dataclass(frozen=True)
class FitJob:
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
        """A fresh AnnData sharing the count matrix, with only the batch column in ``obs``."""
        var = pd.DataFrame(index=self.var_names)
        if self.layer is None:
            return AnnData(X=self.X, obs=self.obs.copy(), var=var)
        return AnnData(obs=self.obs.copy(), var=var, layers={self.layer: self.X})


def as_list(x) -> list:
    """A scalar (or string) as a one-element list; any other iterable as a list."""
    return [x] if isinstance(x, str | int | float | np.number) else list(x)


def _is_label(col: pd.Series) -> bool:
    """Whether an obs column holds labels (categorical, boolean or non-numeric)."""
    return (
        isinstance(col.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(col)
        or not pd.api.types.is_numeric_dtype(col)
    )


def prepare(
    adata: AnnData,
    *,
    betas,
    model: str | None,
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
) -> tuple[FitJob, list[float], list[int], str | None, int]:
    """Check every argument (before any fit) and build the job."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    betas = as_list(betas)
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
    seeds = as_list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; pass at least one integer, e.g. seeds=[0]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise ValueError(f"seeds must be integers >= 0; got {s!r} in seeds={seeds}")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has repeated values: {seeds}")
    check_key(key_added)
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
    ckpt = sorted(set(fit_kwargs) & {"checkpoint_dir", "checkpoint_every", "resume"})
    if ckpt:
        raise ValueError(
            f"tune_beta does not pass {ckpt} on: its fits are short and would share one "
            "checkpoint folder. Checkpoint a long single fit with scvae_beta.fit instead."
        )
    unknown = sorted(set(fit_kwargs) - _SETTINGS)
    if unknown:
        raise TypeError(f"unknown fit settings {unknown}; scvae_beta.fit takes {sorted(_SETTINGS)}")
    if model is None:  # the preset's model, if it names one (its other settings apply in fit)
        name = fit_kwargs.get("preset")
        model = PRESETS.get(name, {}).get("model", "beta_tcvae") if isinstance(name, str) else None
        model = model or "beta_tcvae"
    # Every fit setting is checked once, by the settings object fit itself uses.
    for b in betas:
        Settings(model=model, beta=b, **fit_kwargs)

    # Factors, metrics and the recommendation metric.
    keys = [] if factor_keys is None else [str(k) for k in as_list(factor_keys)]
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"factor keys {missing} not in adata.obs; available columns: {list(adata.obs.columns)}"
        )
    codes = labels = None
    is_label = bool(keys) and _is_label(adata.obs[keys[0]])
    if keys:
        codes = obs_factor_codes(adata, keys, n_bins)[0]
        if is_label:
            labels = adata.obs[keys[0]].astype(str).to_numpy()
    if metrics is None:
        metrics = [] if not keys else ["mig", "modularity", "sap", "dci"]
        metrics += list(LABEL_METRICS) if is_label else []
    metrics = tuple(as_list(metrics))
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
            inspect.signature(METRIC_FUNCS[name]).bind(None, None, **kwargs[name])
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
    if is_on_disk(adata.X if layer is None else adata.layers[layer]):
        raise ValueError(
            "tune_beta runs many short fits and needs the counts in memory; the AnnData is "
            "backed (on disk). Tune on a subsample in memory, e.g. "
            "adata[:50000].to_memory(), then fit the chosen beta on the backed data"
        )
    job = FitJob(
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


def h5ad_safe(d: Mapping) -> dict:
    """Fit settings as h5ad-writable values: tuples become lists, ``None`` entries go."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        out[k] = h5ad_safe(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v
    return out
