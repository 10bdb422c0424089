"""Input checks on count matrices: each error names the problem and the fix.

The model computes in float32, so counts must be integers in ``[0, 2**24]`` (float32 holds
every integer up to 2**24 exactly). float16 matrices are accepted while every value is at most
2048 (float16 holds every integer up to 2048 exactly); larger float16 values may already have
been rounded and are rejected. All checks read the matrix in bounded chunks.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

_CHUNK = 2**22  # elements checked at a time, to bound temporary memory on dense input
#: Largest count accepted: float32 (in which the model computes) holds integers exactly up to it.
MAX_COUNT = 2**24
#: float16 holds every integer exactly only up to this value.
MAX_FLOAT16_COUNT = 2048


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
    """Raise ``ValueError`` unless ``X`` holds finite, non-negative integer counts <= 2**24.

    float16 is accepted only while every value is at most 2048 (exact in float16).

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix, cells x genes.
    where
        How to name the matrix in messages, e.g. ``"adata.layers['counts']"``.
    hint
        Extra sentence appended to the non-integer message (e.g. which layers exist).
    """
    check = CountCheck(X.dtype, where, hint)
    for chunk in _chunks(X):
        check.update(chunk)
    check.finish()


class CountCheck:
    """:func:`check_counts` one chunk of stored values at a time (for matrices on disk).

    ``update(values)`` with every chunk of stored values, then ``finish()`` raises the same
    errors, with the same totals, as :func:`check_counts` on the whole matrix.
    """

    def __init__(self, dtype, where: str = "adata.X", hint: str = "") -> None:
        dtype = np.dtype(dtype)
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            if dtype == np.bool_:
                raise ValueError(f"{where} is boolean; scvae_beta needs integer UMI counts")
            raise ValueError(f"{where} has dtype {dtype}; scvae_beta needs numeric integer counts")
        self.dtype, self.where, self.hint = dtype, where, hint
        self.is_float = np.issubdtype(dtype, np.floating)
        self.need_max = self.is_float or np.iinfo(dtype).max > MAX_COUNT
        self.n_bad = self.n_neg = 0
        self.min_val, self.max_val = math.inf, -math.inf
        self.example: float | None = None

    def update(self, chunk: np.ndarray) -> None:
        """Take in one chunk of stored values (any shape)."""
        chunk = np.asarray(chunk).ravel()
        if chunk.size == 0:
            return
        if self.is_float:
            finite = np.isfinite(chunk)
            if not finite.all():
                self.n_bad += int((~finite).sum())
                return
            if self.example is None:
                frac = chunk != np.floor(chunk)
                if frac.any():
                    self.example = float(chunk[np.argmax(frac)])
        neg = chunk < 0
        if neg.any():
            self.n_neg += int(neg.sum())
            self.min_val = min(self.min_val, float(chunk.min()))
        if self.need_max:
            self.max_val = max(self.max_val, float(chunk.max()))

    def finish(self) -> None:
        """Raise the error of the first problem found over all chunks, if any."""
        where, hint = self.where, self.hint
        if self.n_bad:
            raise ValueError(
                f"{where} contains {self.n_bad} NaN or infinite values; raw counts are finite. "
                "Pass the raw count matrix (e.g. layer='counts')."
            )
        if self.n_neg:
            raise ValueError(
                f"{where} contains {self.n_neg} negative values (min {self.min_val:g}); raw "
                "counts are >= 0. It looks scaled or centred (e.g. by sc.pp.scale); pass the raw "
                "counts with layer='counts' or adata.raw.to_adata()."
            )
        if self.example is not None:
            raise ValueError(
                f"{where} contains non-integer values (e.g. {self.example:g}); scvae_beta models "
                "raw UMI counts and the data look normalised or log-transformed. Pass the raw "
                "counts: layer='counts' if they are stored in a layer, or adata.raw.to_adata() if "
                f"they are in .raw.{(' ' + hint) if hint else ''}"
            )
        _check_range(self.dtype, self.max_val, where)


def _check_range(dtype: np.dtype, max_val: float, where: str) -> None:
    """Counts must be exact in float32 (<= 2**24) and, stored as float16, <= 2048."""
    if dtype == np.float16 and max_val > MAX_FLOAT16_COUNT:
        raise ValueError(
            f"{where} is float16, which holds integers exactly only up to 2048, and its largest "
            f"value is {max_val:g}: counts above 2048 may already have been rounded. Store the "
            f"raw counts as integers or float32 (e.g. {where} = {where}.astype(np.float32) on "
            "the original counts, before they were cast to float16)."
        )
    if max_val > MAX_COUNT:
        f32_max = float(np.finfo(np.float32).max)
        reason = (
            f"above float32's largest value ({f32_max:.3g}), so they would become infinite"
            if max_val > f32_max
            else "above 2**24 = 16777216, the largest integer float32 holds exactly"
        )
        raise ValueError(
            f"{where} contains values up to {max_val:g}, {reason}; the model computes in "
            "float32. These are not UMI counts of one gene in one cell: pass the raw per-cell "
            "UMI counts (e.g. layer='counts'), and undo any scaling or pseudobulk summing."
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
