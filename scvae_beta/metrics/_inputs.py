"""Input checks and coercions shared by the metrics: each error names the problem and the fix.

Conventions (the transpose of disentanglement_lib's, which stores codes as rows):

- ``latents``: float array, shape ``(n_cells, n_dims)``, finite.
- ``factors``: shape ``(n_cells, n_factors)`` or ``(n_cells,)`` (one factor). Integer codes,
  strings, booleans, pandas ``Categorical`` / ``Series`` / ``DataFrame`` (one factor per
  column) are all turned into integer codes ``0 .. n_values - 1`` per column. Only the
  partition of cells matters to every metric here, so the numbering is irrelevant.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

_QUANTILE_HINT = (
    "discretise continuous factors first, e.g. scvae_beta.metrics.quantile_bins(values, n_bins=10)"
)


def check_latents(latents) -> np.ndarray:
    """Return ``latents`` as a finite float64 array of shape ``(n_cells, n_dims)``."""
    try:
        z = np.asarray(latents, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"latents must be a numeric array of shape (n_cells, n_dims); could not convert "
            f"a {type(latents).__name__} to float ({err})"
        ) from err
    if z.ndim != 2:
        raise ValueError(
            f"latents must be 2-D (n_cells, n_dims); got {z.ndim}-D shape {z.shape}. "
            "For a single latent dimension pass latents[:, None]."
        )
    if z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(f"latents needs at least 2 cells and 1 dimension; got shape {z.shape}")
    bad = ~np.isfinite(z)
    if bad.any():
        cols = np.unique(np.nonzero(bad)[1]).tolist()
        raise ValueError(
            f"latents contains {int(bad.sum())} NaN or infinite values (dimensions {cols}); "
            "drop or impute those cells before computing metrics"
        )
    return z


def _column_codes(column, name: str) -> tuple[np.ndarray, list]:
    """Integer codes ``0..C-1`` and the sorted distinct values of one factor column."""
    s = column if isinstance(column, pd.Series) else pd.Series(column)
    n_missing = int(s.isna().sum())
    if n_missing:
        raise ValueError(
            f"{name} has {n_missing} missing values (NaN/None); drop those cells or give "
            "them a label of their own"
        )
    if pd.api.types.is_float_dtype(s.dtype):
        values = s.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains infinite values; drop those cells")
        frac = values != np.round(values)
        if frac.any():
            raise ValueError(
                f"{name} holds non-integer values (e.g. {values[np.argmax(frac)]:g}), but "
                f"this metric needs discrete factors; {_QUANTILE_HINT}"
            )
    elif not (
        pd.api.types.is_integer_dtype(s.dtype)
        or pd.api.types.is_bool_dtype(s.dtype)
        or isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(s.dtype)
        or pd.api.types.is_string_dtype(s.dtype)
    ):
        raise TypeError(f"{name} has unsupported dtype {s.dtype}; pass integer codes or labels")
    codes, uniques = pd.factorize(s, sort=True)
    return codes.astype(np.int64), list(uniques)


def _columns(factors, what: str) -> list[tuple[str, object]]:
    """Split ``factors`` into named 1-D columns (one per factor)."""
    if isinstance(factors, pd.DataFrame):
        return [(f"{what} column {c!r}", factors[c]) for c in factors.columns]
    if isinstance(factors, (pd.Series, pd.Categorical, pd.Index)):
        return [(what, pd.Series(factors))]
    arr = np.asarray(factors)
    if arr.ndim == 1:
        return [(what, arr)]
    if arr.ndim == 2:
        return [(f"{what} column {j}", arr[:, j]) for j in range(arr.shape[1])]
    raise ValueError(
        f"{what} must be 1-D (n_cells,) or 2-D (n_cells, n_factors); got {arr.ndim}-D "
        f"shape {arr.shape}"
    )


def factor_codes(factors) -> np.ndarray:
    """Turn discrete ground-truth factors into integer codes, one column per factor.

    Parameters
    ----------
    factors
        Shape ``(n_cells,)`` (one factor) or ``(n_cells, n_factors)``: integer codes,
        integer-valued floats, booleans, strings, a pandas ``Categorical`` / ``Series``, or a
        ``DataFrame`` with one factor per column.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_cells, n_factors)``, int64; column ``j`` holds ``0 .. C_j - 1`` numbering
        the distinct values of factor ``j`` in sorted order (category order for a
        ``Categorical``).

    Raises
    ------
    ValueError
        Missing values, non-integer floats (discretise them with :func:`quantile_bins`) or
        arrays with more than two dimensions.
    """
    cols = _columns(factors, "factors")
    if not cols:
        raise ValueError("factors has no columns; pass at least one factor")
    return np.column_stack([_column_codes(col, name)[0] for name, col in cols])


def label_codes(labels) -> tuple[np.ndarray, list[str]]:
    """Integer codes ``(n_cells,)`` and category names of a single 1-D label vector.

    Values are told apart as pandas does (the integer 1 and the string ``"1"`` are distinct,
    also in a list, which NumPy would turn into text), but the names are their text, so two
    distinct values that read the same raise ``ValueError`` rather than give two categories of
    one name.
    """
    cols = _columns(labels, "labels")
    if len(cols) != 1 or (not isinstance(labels, pd.DataFrame) and np.ndim(labels) != 1):
        raise ValueError(
            f"labels must be 1-D (n_cells,), e.g. adata.obs['cell_type']; got {len(cols)} columns"
        )
    column = pd.Series(list(labels)) if isinstance(labels, (list, tuple)) else cols[0][1]
    codes, uniques = _column_codes(column, cols[0][0])
    names = [str(u) for u in uniques]
    if len(set(names)) < len(names):
        first = {}
        for u, name in zip(uniques, names, strict=True):
            if name in first:
                raise ValueError(
                    f"labels holds distinct values that read the same as text ({first[name]!r} "
                    f"and {u!r}); category names are text, so give the labels one type, e.g. "
                    "labels.astype(str) to merge them"
                )
            first[name] = u
    return codes, names


def continuous_factors(factors) -> np.ndarray:
    """Return continuous factors as a finite float64 array ``(n_cells, n_factors)``."""
    if isinstance(factors, pd.DataFrame):
        arr = factors.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            arr = np.asarray(factors, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                "continuous factors must be numeric; for labels use continuous=False"
            ) from err
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"factors must be 1-D (n_cells,) or 2-D (n_cells, n_factors); got {arr.ndim}-D "
            f"shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(
            f"factors contains {int((~np.isfinite(arr)).sum())} NaN or infinite values; "
            "drop those cells"
        )
    return arr


def check_same_n(latents: np.ndarray, factors: np.ndarray, what: str = "factors") -> None:
    """Raise unless ``latents`` and ``factors`` have one row per cell, in equal number."""
    if latents.shape[0] != factors.shape[0]:
        raise ValueError(
            f"latents has {latents.shape[0]} rows (cells) but {what} has {factors.shape[0]}; "
            "pass one row per cell, in the same order"
        )


def check_n_bins(n_bins: int) -> int:
    """Validate a bin count: an integer >= 2 (with one bin every mutual information is 0, so
    MIG, modularity and LMS-SMI would come out 0 whatever the latents)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise ValueError(
            f"n_bins must be an integer >= 2 (one bin carries no information); got {n_bins!r}"
        )
    return int(n_bins)


def drop_constant(values: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Remove factor columns that take a single value, with a warning naming them.

    A constant factor has zero entropy: it carries no information, its normalised mutual
    information is 0/0 and no classifier can be trained on it. Every metric in this package
    therefore scores only the non-constant factors.

    Returns
    -------
    (values[:, kept], kept)
        ``kept`` holds the indices of the columns kept.

    Raises
    ------
    ValueError
        When every factor is constant.
    """
    constant = np.array([np.all(values[:, j] == values[0, j]) for j in range(values.shape[1])])
    if constant.all():
        raise ValueError(
            f"{metric}: every factor is constant (takes a single value over all cells); "
            "there is nothing to measure. Pass factors that vary across cells."
        )
    if constant.any():
        warnings.warn(
            f"{metric}: factor columns {np.flatnonzero(constant).tolist()} are constant and "
            "are left out of the score",
            UserWarning,
            stacklevel=3,
        )
    kept = np.flatnonzero(~constant)
    return values[:, kept], kept


def split_indices(
    n: int, *, test_size: float, shuffle: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices, in the convention of ``sklearn.model_selection``.

    ``n_test = ceil(test_size * n)``. Without shuffling the first ``n - n_test`` rows train and
    the rest test; with shuffling a permutation from ``numpy.random.default_rng(seed)`` is
    split the same way.
    """
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1); got {test_size!r}")
    n_test = math.ceil(float(test_size) * n)
    n_train = n - n_test
    if n_train < 2 or n_test < 1:
        raise ValueError(
            f"{n} cells give {n_train} training and {n_test} test cells at "
            f"test_size={test_size}; pass more cells or a test_size nearer 0.5"
        )
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return order[:n_train], order[n_train:]


def check_train_classes(y_train: np.ndarray, j: int, metric: str) -> None:
    """Raise when a factor has a single value among the training cells."""
    if np.all(y_train == y_train[0]):
        raise ValueError(
            f"{metric}: factor column {j} takes a single value in the training cells, so no "
            "classifier can be fitted; use shuffle=True or pass more cells"
        )
