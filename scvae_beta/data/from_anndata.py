"""AnnData -> :class:`~scvae_beta.data.counts.CountData`, with every input check up front.

Nothing here writes to the AnnData; the checks run before any training starts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scvae_beta.data.checks import check_counts, check_library_sizes
from scvae_beta.data.counts import CountData, to_csr


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def counts_matrix(adata: AnnData, layer: str | None = None):
    """The count matrix (``.X`` or ``.layers[layer]``) as stored, without copying."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError(
                f"adata.X is empty; pass layer=... (available layers: {list(adata.layers)})"
            )
        return X
    if layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not found; available: {list(adata.layers)}; pass layer=None to use .X"
        )
    return adata.layers[layer]


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
    where = _where(layer)
    hint = f"Available layers: {list(adata.layers)}." if adata.layers else ""
    check_counts(X, where, hint)
    if batch_key is not None and batch_categories is not None:
        codes, cats = codes_for_categories(adata, batch_key, batch_categories), batch_categories
    else:
        codes, cats = batch_codes(adata, batch_key)
    data = CountData(to_csr(X), codes)
    check_library_sizes(data.log_library, where)
    return data, cats
