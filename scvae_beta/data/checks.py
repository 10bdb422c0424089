"""Input checks on count matrices: each error names the problem and the fix."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

_CHUNK = 2**22  # elements checked at a time, to bound temporary memory on dense input


def _chunks(X):
    """Yield the stored values of ``X`` in bounded chunks (sparse: ``.data``; dense: rows)."""
    if sp.issparse(X):
        data = X.data
        for s in range(0, data.size, _CHUNK):
            yield data[s : s + _CHUNK]
    else:
        X = np.asarray(X)
        rows = max(1, _CHUNK // max(1, X.shape[1] if X.ndim == 2 else 1))
        for s in range(0, X.shape[0], rows):
            yield X[s : s + rows].ravel()


def check_counts(X, where: str = "adata.X", hint: str = "") -> None:
    """Raise ``ValueError`` unless ``X`` holds finite, non-negative integer counts.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix, cells x genes.
    where
        How to name the matrix in messages, e.g. ``"adata.layers['counts']"``.
    hint
        Extra sentence appended to the non-integer message (e.g. which layers exist).
    """
    dtype = X.dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        if dtype == np.bool_:
            raise ValueError(f"{where} is boolean; scvae_beta needs integer UMI counts")
        raise ValueError(f"{where} has dtype {dtype}; scvae_beta needs numeric integer counts")
    is_float = np.issubdtype(dtype, np.floating)
    n_bad = n_neg = 0
    min_val = math.inf
    example = None
    for chunk in _chunks(X):
        if chunk.size == 0:
            continue
        if is_float:
            finite = np.isfinite(chunk)
            if not finite.all():
                n_bad += int((~finite).sum())
                continue
            if example is None:
                frac = chunk != np.floor(chunk)
                if frac.any():
                    example = float(chunk[np.argmax(frac)])
        neg = chunk < 0
        if neg.any():
            n_neg += int(neg.sum())
            min_val = min(min_val, float(chunk.min()))
    if n_bad:
        raise ValueError(
            f"{where} contains {n_bad} NaN or infinite values; raw counts are finite. "
            "Pass the raw count matrix (e.g. layer='counts')."
        )
    if n_neg:
        raise ValueError(
            f"{where} contains {n_neg} negative values (min {min_val:g}); raw counts are >= 0. "
            "It looks scaled or centred (e.g. by sc.pp.scale); pass the raw counts with "
            "layer='counts' or adata.raw.to_adata()."
        )
    if example is not None:
        raise ValueError(
            f"{where} contains non-integer values (e.g. {example:g}); scvae_beta models raw "
            "UMI counts and the data look normalised or log-transformed. Pass the raw counts: "
            "layer='counts' if they are stored in a layer, or adata.raw.to_adata() if they are "
            f"in .raw.{(' ' + hint) if hint else ''}"
        )


def check_library_sizes(log_library: np.ndarray, where: str = "adata.X") -> None:
    """Raise ``ValueError`` if any cell has a total count of zero (``log_library == -inf``)."""
    n_zero = int(np.isneginf(log_library).sum())
    if n_zero:
        raise ValueError(
            f"{n_zero} of {log_library.size} cells have zero total counts in {where}; the model "
            "uses each cell's library size and cannot fit them. Remove them first, e.g. "
            "sc.pp.filter_cells(adata, min_counts=1)."
        )


def split_sizes(n_cells: int, validation_fraction: float) -> tuple[int, int]:
    """Sizes ``(n_train, n_val)`` of the split, or a ``ValueError`` naming the fix."""
    n_val = int(round(validation_fraction * n_cells))
    if validation_fraction > 0 and n_val < 1:
        need = math.ceil(0.5 / validation_fraction)
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n_cells} cells leaves no validation "
            f"cell; need at least {need} cells, or pass validation_fraction=0 to train on all "
            "cells (early stopping then monitors the training loss)."
        )
    n_train = n_cells - n_val
    if n_train < 2:
        raise ValueError(
            f"only {n_train} training cell(s) after holding out {n_val} for validation; "
            "training needs at least 2. Use more cells or a smaller validation_fraction."
        )
    return n_train, n_val
