"""Discretisation of continuous values: latents for the MI metrics, continuous factors.

- :func:`histogram_bins` is the equal-width discretisation that MIG, modularity and the label
  matching score apply to each latent dimension (disentanglement_lib's
  ``_histogram_discretize``).
- :func:`quantile_bins` turns a continuous ground-truth factor (pseudotime, cell-cycle phase,
  response strength ...) into equal-count integer codes, so it can be passed as a discrete
  factor to :func:`~scvae_beta.metrics.mig`, :func:`~scvae_beta.metrics.dci`, etc.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from scvae_beta.metrics._inputs import check_n_bins


def histogram_bins(x, n_bins: int = 20) -> np.ndarray:
    """Equal-width bins over ``[min, max]``, computed separately for each column.

    For each column the edges are ``numpy.histogram(column, n_bins)[1]`` (``n_bins + 1``
    equally spaced edges from the column's minimum to its maximum) and the bin of each value is
    ``numpy.digitize(column, edges[:-1])``: the values in ``[edges[i-1], edges[i])`` get code
    ``i``, and the maximum falls in bin ``n_bins``. Codes therefore run ``1 .. n_bins`` (as in
    disentanglement_lib) and the per-bin counts equal ``numpy.histogram``'s. A constant column
    falls in a single bin (numpy widens its range to ``value +- 0.5``).

    Parameters
    ----------
    x
        Shape ``(n,)`` or ``(n, d)``, finite.
    n_bins
        Number of bins per column.

    Returns
    -------
    numpy.ndarray
        int64 codes with the shape of ``x``.
    """
    n_bins = check_n_bins(n_bins)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D or 2-D; got {arr.ndim}-D shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("x contains NaN or infinite values; drop or impute them first")
    if arr.ndim == 1:
        edges = np.histogram(arr, bins=n_bins)[1]
        return np.digitize(arr, edges[:-1]).astype(np.int64)
    out = np.empty(arr.shape, dtype=np.int64)
    for j in range(arr.shape[1]):
        out[:, j] = histogram_bins(arr[:, j], n_bins)
    return out


def quantile_bins(values, n_bins: int = 10) -> np.ndarray:
    """Equal-count integer codes for one continuous factor.

    Value ``x`` gets bin ``floor(n_bins * (r - 1) / n)``, where ``r`` is its rank among the
    ``n`` values with ties given their lowest rank (``scipy.stats.rankdata(method="min")``).
    Without ties every bin holds ``n / n_bins`` values (to within one), and the bins agree
    with ``pandas.qcut(values, n_bins, labels=False)`` when ``n`` is a multiple of ``n_bins``.

    Ties are never split: equal values always share a bin (the bin of their lowest rank), so a
    heavily tied factor gives uneven bins and possibly fewer than ``n_bins`` of them. Empty
    bins are removed by renumbering, so the codes are always ``0 .. n_codes - 1``, increasing
    with the value.

    Cyclic factors (cell-cycle phase as an angle) are cut at the origin of the angle: bins
    either side of 0 / 2 pi are neighbours in biology but unrelated codes here. The MI metrics
    (MIG, modularity) and DCI treat codes as unordered categories, so this only changes where
    the cut falls; for :func:`~scvae_beta.metrics.sap` with ``continuous=True`` (linear fits)
    a cyclic factor should instead be passed as its cosine and sine.

    Parameters
    ----------
    values
        Shape ``(n,)``, finite.
    n_bins
        Number of bins wanted.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, int64 codes ``0 .. n_codes - 1`` with ``n_codes <= n_bins``.
    """
    n_bins = check_n_bins(n_bins)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"values must be 1-D (n_cells,); got shape {arr.shape}; bin one factor at a time"
        )
    if arr.size == 0:
        raise ValueError("values is empty")
    if not np.isfinite(arr).all():
        raise ValueError("values contains NaN or infinite values; drop those cells first")
    ranks = rankdata(arr, method="min").astype(np.int64)
    raw = (n_bins * (ranks - 1)) // arr.size
    return np.unique(raw, return_inverse=True)[1].ravel().astype(np.int64)
