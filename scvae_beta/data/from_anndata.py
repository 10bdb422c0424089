"""AnnData -> :class:`~scvae_beta.data.counts.CountData`, with every input check up front.

Nothing here writes to the AnnData; the checks run before any training starts.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scvae_beta.data.backed import BackedCountData, is_on_disk
from scvae_beta.data.checks import check_counts, check_library_sizes
from scvae_beta.data.counts import CountData, to_csr
from scvae_beta.data.source import CountSource


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def counts_matrix(adata: AnnData, layer: str | None = None):
    """The count matrix (``.X`` or ``.layers[layer]``) as stored, without copying or reading.

    In memory: a numpy array or scipy sparse matrix. On disk (backed ``.h5ad``, or an
    ``anndata.io.sparse_dataset`` of a zarr store: see
    :func:`read_backed`): anndata's on-disk dataset, read later in
    row chunks by :class:`~scvae_beta.data.backed.BackedCountData`.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
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
    if not (sp.issparse(X) or isinstance(X, np.ndarray) or is_on_disk(X)):
        raise TypeError(
            f"{_where(layer)} is a {type(X).__name__}; scvae_beta needs counts in memory as a "
            f"numpy array or scipy sparse matrix, or on disk as anndata's sparse dataset, e.g. "
            f"{_where(layer)} = {_where(layer)}.compute() for dask arrays"
        )
    return X


def read_backed(path: str | os.PathLike):
    """Open an ``.h5ad`` file or a ``.zarr`` store with its count matrix ``X`` left on disk.

    ``.h5ad``: ``anndata.read_h5ad(path, backed="r")``. ``.zarr``: ``obs``, ``var``,
    ``obsm``, ``uns`` read into memory and ``X`` as ``anndata.io.sparse_dataset`` (layers of
    either stay as anndata reads them: in memory).
    """
    import anndata as ad

    path = Path(path)
    if path.is_dir() or path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r")
        X = group["X"]
        X = ad.io.sparse_dataset(X) if isinstance(X, zarr.Group) else X
        parts = {k: ad.io.read_elem(group[k]) for k in ("obs", "var", "obsm", "uns") if k in group}
        return ad.AnnData(X=X, **parts)
    return ad.read_h5ad(path, backed="r")


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
    columns: np.ndarray | None = None,
) -> tuple[CountSource, list[str]]:
    """Check the counts of ``adata`` and wrap them for training or inference.

    Parameters
    ----------
    adata
        Cells x genes; CSR, CSC, dense and views are accepted, in memory or on disk (a
        backed ``.h5ad`` or a zarr store's sparse dataset: never loaded whole). Never
        modified.
    layer
        Layer holding raw counts; ``None`` uses ``.X``.
    batch_key
        Column of ``adata.obs`` with batch labels, or ``None``.
    batch_categories
        Fixed category order (from a trained model); ``None`` derives it from the data.
    columns
        Counts on disk only: gene positions to read, in order (``None``: all).

    Returns
    -------
    The count source (:class:`CountData` in memory,
    :class:`~scvae_beta.data.backed.BackedCountData` on disk) and the batch category names
    (empty without a batch key).
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
    on_disk = is_on_disk(X)
    if not on_disk:
        check_counts(X, where, hint)
    if batch_key is not None and batch_categories is not None:
        codes, cats = codes_for_categories(adata, batch_key, batch_categories), batch_categories
    else:
        codes, cats = batch_codes(adata, batch_key)
    if on_disk:  # one chunked pass: the same checks, library sizes
        return BackedCountData(X, codes, where=where, hint=hint, columns=columns), cats
    if columns is not None:
        raise ValueError("columns= is for counts on disk; subset the AnnData in memory instead")
    data = CountData(_float16_to_csr(X) if X.dtype == np.float16 else to_csr(X), codes)
    check_library_sizes(data.log_library, where)
    return data, cats
