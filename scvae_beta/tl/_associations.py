"""Which obs annotation does each latent dimension track? Correlations, eta and binned MI."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import rankdata

from scvae_beta.data import backed, counts_matrix
from scvae_beta.tl._utils import latent, write_entry

#: Quality-control covariates computed from the counts when named in ``obs_keys``.
QC_KEYS = ("log_library", "log_n_genes", "pct_mito")
#: Categorical obs columns with more categories than this are left out by default.
MAX_CATEGORIES = 50
#: Statistic that ranks a kind of column in the per-dimension summary (compared as |value|).
PRIMARY = {"numeric": "spearman", "categorical": "eta"}

_COLUMNS = ["dim", "obs_key", "kind", "statistic", "value"]


def dimension_associations(
    adata: AnnData,
    *,
    key: str = "scvae_beta",
    obs_keys: list[str] | None = None,
    n_bins: int = 20,
    layer: str | None = "model",
) -> pd.DataFrame:
    """Associate each latent dimension with cell annotations and QC covariates.

    Tells at a glance whether a dimension is a cell-type program (high eta with a cell-type
    label), a continuous process (high rank correlation with, e.g., a pseudotime) or a
    technical nuisance (high correlation with ``log_library``).

    For a numeric column: ``pearson`` and ``spearman`` correlation (signed). For a
    categorical column: the correlation ratio ``eta`` (square root of the share of the
    dimension's variance between the categories' means; 1: the dimension is constant within
    each category; equals ``|Pearson|`` with a 0/1 indicator for two categories) and ``nmi``,
    the mutual information of the dimension cut into ``n_bins`` equal-width bins with the
    labels divided by the labels' entropy (the share of the label's entropy the dimension
    explains; 1: the binned dimension determines the label). Cells with a missing value are
    left out of that column's statistics; a constant column or dimension gives NaN.

    Parameters
    ----------
    adata
        Annotated by :func:`scvae_beta.fit` (``obsm["X_" + key]``; any finite ``(n_cells, D)``
        array there works: NaN or infinite values are refused).
    key
        The ``key_added`` of the fit.
    obs_keys
        Columns of ``adata.obs``, or the QC covariates ``"log_library"`` (log total count),
        ``"log_n_genes"`` (log number of detected genes) and ``"pct_mito"`` (percent counts in
        genes named ``MT-``/``mt-``), computed from the counts when no obs column has that
        name. ``None``: every numeric obs column (booleans count as categorical) and every
        categorical/string column with 2 to 50 distinct values, skipping constant ones, plus
        ``"log_library"`` when the counts are available. A numeric column with ``inf`` or
        ``-inf`` is refused (replace them with NaN, which means missing).
    n_bins
        Equal-width bins of each dimension for ``nmi`` (>= 2).
    layer
        Counts for the QC covariates; ``"model"`` uses the fit's layer
        (``uns[key]["params"]["layer"]``, else ``.X``).

    Returns
    -------
    Long ``pandas.DataFrame`` with columns ``dim`` (int), ``obs_key``, ``kind``
    (``"numeric"``/``"categorical"``), ``statistic`` (``pearson``, ``spearman``, ``eta``,
    ``nmi``) and ``value``. Also writes ``adata.uns[key]["associations"]`` (the same table)
    and ``adata.uns[key]["associations_best"]`` (one row per dimension: ``dim``, ``best_key``,
    ``kind``, ``statistic``, ``value`` and ``score`` = ``|value|`` of the column with the largest
    ``|spearman|`` or eta, and ``active``, from ``uns[key]["active_dims"]`` when present, else
    True), both as plain DataFrames that survive ``write_h5ad``.
    """
    z = latent(adata, key)
    if not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    entry = adata.uns.get(key, {})
    if not isinstance(entry, dict):
        raise TypeError(f"adata.uns[{key!r}] is a {type(entry).__name__}, expected a dict")
    columns = _columns(adata, entry, obs_keys, layer)

    rows = []
    for name, (kind, values) in columns.items():
        stats = _numeric(z, values) if kind == "numeric" else _categorical(z, values, n_bins)
        for stat, per_dim in stats.items():
            for d, v in enumerate(per_dim):
                rows.append((d, name, kind, stat, float(v)))
    table = pd.DataFrame(rows, columns=_COLUMNS)
    table["dim"] = table["dim"].astype(np.int64)
    table["value"] = table["value"].astype(np.float64)
    best = _best(table, z.shape[1], entry.get("active_dims"))

    write_entry(adata, key, {"associations": table, "associations_best": best})
    return table


# ---------------------------------------------------------------------- columns


def _columns(adata: AnnData, entry: dict, obs_keys, layer) -> dict[str, tuple[str, np.ndarray]]:
    """``name -> (kind, values)``: numeric float64 (NaN missing) or integer codes (-1)."""
    obs = adata.obs
    if layer == "model":
        layer = entry.get("params", {}).get("layer")
    if obs_keys is None:
        out = {}
        for name in obs.columns:
            kind, values = _classify(obs[name], chosen=False)
            valid = values[values >= 0] if kind == "categorical" else values[~np.isnan(values)]
            n_distinct = np.unique(valid).size
            if n_distinct < 2 or (kind == "categorical" and n_distinct > MAX_CATEGORIES):
                continue
            out[str(name)] = (kind, values)
        if "log_library" not in out:
            try:
                out["log_library"] = ("numeric", _qc(adata, "log_library", layer))
            except (KeyError, ValueError, TypeError):
                pass  # no usable counts: leave it out of the default
        return out
    if isinstance(obs_keys, str):
        obs_keys = [obs_keys]
    out = {}
    for name in obs_keys:
        if name in obs.columns:
            out[str(name)] = _classify(obs[name])
        elif name in QC_KEYS:
            out[name] = ("numeric", _qc(adata, name, layer))
        else:
            raise KeyError(
                f"{name!r} is neither a column of adata.obs nor a QC covariate {list(QC_KEYS)}; "
                f"obs columns: {list(obs.columns)}"
            )
    return out


def _classify(col: pd.Series, chosen: bool = True) -> tuple[str, np.ndarray]:
    """Numeric columns as float64 with NaN; everything else as category codes (-1 missing).

    A numeric column with infinite values is refused (NaN means missing; +-inf would turn every
    statistic of the column into NaN); ``chosen``: named in ``obs_keys`` (else picked by
    default, and the message says how to leave it out).
    """
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        inf = np.isinf(values)
        if inf.any():
            other = "" if chosen else ", or pass obs_keys=[...] without it"
            raise ValueError(
                f"adata.obs[{col.name!r}] has {int(inf.sum())} infinite value(s) (first: cell "
                f"{col.index[int(np.argmax(inf))]!r}); replace them with NaN to leave those "
                f"cells out of its statistics (adata.obs[{col.name!r}] = "
                f"adata.obs[{col.name!r}].replace([np.inf, -np.inf], np.nan)){other}"
            )
        return "numeric", values
    cat = pd.Categorical(col).remove_unused_categories()
    return "categorical", np.asarray(cat.codes, dtype=np.int64)


def _qc(adata: AnnData, name: str, layer: str | None) -> np.ndarray:
    """A QC covariate ``(n_cells,)`` from the counts (NaN where a cell has no counts)."""
    X = counts_matrix(adata, layer)
    mito = pd.Index(map(str, adata.var_names)).str.lower().str.startswith("mt-")
    if name == "pct_mito" and not mito.any():
        raise ValueError(
            "no mitochondrial genes (names starting with 'MT-' or 'mt-') to compute "
            "pct_mito; compute it yourself (e.g. sc.pp.calculate_qc_metrics with "
            "qc_vars=['mt']) and pass obs_keys=['pct_counts_mt']"
        )
    # Counts on disk (backed AnnData) are read in row chunks, never whole.
    n, step = X.shape[0], backed.PASS_ROWS
    on_disk = backed.is_on_disk(X)
    chunks = ((s, X[s : s + step]) for s in range(0, n, step)) if on_disk else [(0, X)]
    total, other = np.empty(n), np.empty(n)
    for s, rows in chunks:
        end = s + rows.shape[0]
        total[s:end] = np.asarray(rows.sum(axis=1, dtype=np.float64)).ravel()
        if name == "log_n_genes":
            other[s:end] = np.asarray((rows > 0).sum(axis=1), dtype=np.float64).ravel()
        elif name == "pct_mito":
            sub = rows[:, np.flatnonzero(mito)]
            other[s:end] = np.asarray(sub.sum(axis=1, dtype=np.float64)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "log_library":
            return np.where(total > 0, np.log(total), np.nan)
        if name == "log_n_genes":
            return np.where(other > 0, np.log(other), np.nan)
        return np.where(total > 0, 100.0 * other / total, np.nan)


# ---------------------------------------------------------------------- statistics


def _pearson(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``z`` ``(n, D)`` with ``y`` ``(n,)``."""
    zc = z - z.mean(0)
    yc = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (zc * yc[:, None]).sum(0) / np.sqrt((zc**2).sum(0) * (yc**2).sum())
    return np.clip(r, -1.0, 1.0)


def _numeric(z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    keep = ~np.isnan(y)
    z, y = z[keep], y[keep]
    if y.size < 2:
        nan = np.full(z.shape[1], np.nan)
        return {"pearson": nan, "spearman": nan.copy()}
    ranks = np.apply_along_axis(rankdata, 0, z)
    return {"pearson": _pearson(z, y), "spearman": _pearson(ranks, rankdata(y))}


def _categorical(z: np.ndarray, codes: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    keep = codes >= 0
    z, codes = z[keep], codes[keep]
    n, n_dims = z.shape
    if n < 2:
        nan = np.full(n_dims, np.nan)
        return {"eta": nan, "nmi": nan.copy()}
    _, codes = np.unique(codes, return_inverse=True)
    k = int(codes.max()) + 1
    if k < 2:  # one category: nothing to separate
        nan = np.full(n_dims, np.nan)
        return {"eta": nan, "nmi": nan.copy()}
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    sums = np.column_stack(
        [np.bincount(codes, weights=z[:, d], minlength=k) for d in range(n_dims)]
    )
    mean = z.mean(0)
    between = (counts[:, None] * (sums / counts[:, None] - mean) ** 2).sum(0)
    total = ((z - mean) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.sqrt(np.clip(between / total, 0.0, 1.0))
    p_label = counts / n
    h_label = -(p_label * np.log(p_label)).sum()
    nmi = np.full(n_dims, np.nan)
    for d in range(n_dims):
        lo, hi = z[:, d].min(), z[:, d].max()
        if hi <= lo:
            nmi[d] = 0.0
            continue
        bins = np.minimum(((z[:, d] - lo) / (hi - lo) * n_bins).astype(np.int64), n_bins - 1)
        joint = np.bincount(bins * k + codes, minlength=n_bins * k).reshape(n_bins, k) / n
        outer = joint.sum(1, keepdims=True) * p_label[None, :]
        nz = joint > 0
        nmi[d] = (joint[nz] * np.log(joint[nz] / outer[nz])).sum() / h_label
    return {"eta": eta, "nmi": nmi}


def _best(table: pd.DataFrame, n_dims: int, active_dims) -> pd.DataFrame:
    """One row per dimension: the column with the strongest primary statistic."""
    active = np.ones(n_dims, dtype=bool)
    if active_dims is not None:
        active[:] = False
        active[np.asarray(active_dims, dtype=np.int64)] = True
    primary = table[table["statistic"] == table["kind"].map(PRIMARY)]
    primary = primary.assign(score=primary["value"].abs()).dropna(subset=["score"])
    rows = []
    for d in range(n_dims):
        sub = primary[primary["dim"] == d]
        if sub.empty:
            rows.append((d, "", "", "", np.nan, np.nan, bool(active[d])))
            continue
        r = sub.loc[sub["score"].idxmax()]
        rows.append(
            (d, r["obs_key"], r["kind"], r["statistic"], r["value"], r["score"], bool(active[d]))
        )
    best = pd.DataFrame(
        rows, columns=["dim", "best_key", "kind", "statistic", "value", "score", "active"]
    )
    return best.astype({"dim": np.int64, "value": np.float64, "score": np.float64})
