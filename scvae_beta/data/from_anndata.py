"""AnnData -> :class:`~scvae_beta.data.counts.CountData`, with every input check up front.

Nothing here writes to the AnnData; the checks run before any training starts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scvae_beta.data.checks import check_counts, check_library_sizes
from scvae_beta.data.counts import CountData, to_csr


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def counts_matrix(adata: AnnData, layer: str | None = None):
    """The count matrix (``.X`` or ``.layers[layer]``) as stored, without copying.

    Backed AnnData (``read_h5ad(..., backed="r")``) is not supported yet: it raises a
    ``ValueError`` naming ``adata.to_memory()``.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    if adata.isbacked:
        raise ValueError(
            f"adata is backed by {adata.filename} (read with backed='r'); scvae_beta does not "
            "support backed (on-disk) data yet. Load it into memory first: "
            "adata = adata.to_memory()"
        )
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError(
                f"adata.X is empty; pass layer=... (available layers: {list(adata.layers)})"
            )
    elif layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not found; available: {list(adata.layers)}; pass layer=None to use .X"
        )
    else:
        X = adata.layers[layer]
    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        raise TypeError(
            f"{_where(layer)} is a {type(X).__name__}; scvae_beta needs counts in memory as a "
            f"numpy array or scipy sparse matrix, e.g. {_where(layer)} = "
            f"{_where(layer)}.compute() for dask arrays"
        )
    return X


def batch_codes(adata: AnnData, batch_key: str | None) -> tuple[np.ndarray | None, list[str]]:
    """Integer codes and category names of ``adata.obs[batch_key]`` (``None, []`` without key)."""
    if batch_key is None:
        return None, []
    if batch_key not in adata.obs.columns:
        raise KeyError(
            f"batch_key {batch_key!r} not found in adata.obs; available columns: "
            f"{list(adata.obs.columns)}"
        )
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(
            f"adata.obs[{batch_key!r}] has {int(col.isna().sum())} missing values; "
            "fill them (e.g. with 'unknown') before fitting"
        )
    n_values = col.nunique()
    if pd.api.types.is_float_dtype(col) and n_values > adata.n_obs / 2:
        warnings.warn(
            f"adata.obs[{batch_key!r}] is a float column with {n_values} distinct values in "
            f"{adata.n_obs} cells; it is probably not a batch label (each value becomes its own "
            "batch). Pass the obs column that names each cell's batch or sample.",
            UserWarning,
            stacklevel=4,
        )
    cat = pd.Categorical(col.astype(str))
    cat = cat.remove_unused_categories()
    return np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]


def codes_for_categories(adata: AnnData, batch_key: str, categories: list[str]) -> np.ndarray:
    """Codes of ``adata.obs[batch_key]`` in a fixed (training) category order."""
    if batch_key not in adata.obs.columns:
        raise KeyError(
            f"this model was trained with batch_key={batch_key!r}, which is not in adata.obs; "
            f"available columns: {list(adata.obs.columns)}"
        )
    values = adata.obs[batch_key].astype(str)
    unknown = sorted(set(values) - set(categories))
    if unknown:
        raise ValueError(
            f"adata.obs[{batch_key!r}] has categories the model was not trained on: "
            f"{unknown[:5]}; known: {categories}"
        )
    lookup = {c: i for i, c in enumerate(categories)}
    return values.map(lookup).to_numpy(dtype=np.int64)


def _float16_to_csr(X: np.ndarray, rows: int = 4096) -> sp.csr_matrix:
    """Dense float16 (scipy.sparse has no float16) -> float32 CSR, in row chunks. Exact: the
    checks have ensured every value is an integer <= 2048."""
    return sp.vstack(
        [sp.csr_matrix(X[s : s + rows].astype(np.float32)) for s in range(0, X.shape[0], rows)],
        format="csr",
    )


def count_data(
    adata: AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    batch_categories: list[str] | None = None,
) -> tuple[CountData, list[str]]:
    """Check the counts of ``adata`` and wrap them for training or inference.

    Parameters
    ----------
    adata
        Cells x genes; CSR, CSC, dense and views are accepted. Never modified.
    layer
        Layer holding raw counts; ``None`` uses ``.X``.
    batch_key
        Column of ``adata.obs`` with batch labels, or ``None``.
    batch_categories
        Fixed category order (from a trained model); ``None`` derives it from the data.

    Returns
    -------
    The :class:`CountData` and the batch category names (empty without a batch key).
    """
    X = counts_matrix(adata, layer)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"adata.var_names has {len(dup)} duplicated gene names (e.g. {list(dup[:3])}); "
            "genes are matched by name (e.g. when a fitted model encodes new data), so they "
            "must be unique. Make them unique first: adata.var_names_make_unique()"
        )
    where = _where(layer)
    hint = f"Available layers: {list(adata.layers)}." if adata.layers else ""
    check_counts(X, where, hint)
    if batch_key is not None and batch_categories is not None:
        codes, cats = codes_for_categories(adata, batch_key, batch_categories), batch_categories
    else:
        codes, cats = batch_codes(adata, batch_key)
    data = CountData(_float16_to_csr(X) if X.dtype == np.float16 else to_csr(X), codes)
    check_library_sizes(data.log_library, where)
    return data, cats
