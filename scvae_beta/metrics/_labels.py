"""Metrics against observed cell labels (cell type, condition ...), no simulator needed."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from scvae_beta.metrics._info import entropy, mutual_info
from scvae_beta.metrics._inputs import check_latents, check_n_bins, check_same_n, label_codes
from scvae_beta.settings import check_integer


def latent_matching_score(
    latents, labels, *, metric: Literal["smi", "spn"] = "smi", n_bins: int = 10
) -> dict:
    """One-to-one matching of latent dimensions to label categories (DRVI's LMS, MSAS, MSGS).

    Reproduces the ``DiscreteDisentanglementBenchmark`` of drvi-py (Moinfar et al. 2024) on
    the same inputs: ``metric="smi"`` gives its ``LMS-SMI`` / ``MSAS-SMI`` / ``MSGS-SMI``,
    ``metric="spn"`` its ``*-SPN`` (tested against drvi-py when it is installed).

    1. A ``(n_dims, n_categories)`` score matrix against the one-vs-rest indicator of each
       category ``c``:

       - ``"smi"`` (scaled mutual information): each dimension is cut into ``n_bins``
         equal-width bins between its minimum and maximum, exactly as drvi-py does it
         (scikit-learn's ``KBinsDiscretizer(n_bins, encode="ordinal", strategy="uniform",
         random_state=123)`` over all dimensions at once, in the latents' own float dtype;
         above 200,000 cells its edges come from a seeded bootstrap subsample), and
         ``matrix[i, c] = I(bins_i; 1[label == c]) / H(1[label == c])`` (plug-in, nats),
         in [0, 1], 1 when the dimension separates the category from the rest.
       - ``"spn"`` (nearest-neighbour alignment): cells are ordered along dimension ``i``;
         with ``n_c`` cells of category ``c`` among ``n``, ``a`` = the number of neighbouring
         pairs in that order that are both of ``c``,
         ``matrix[i, c] = max(0, a / (n_c - 1) - n_c / n) / (1 - n_c / n)``: 1 when the
         category forms one contiguous run along the axis, about 0 at random. A category
         with a single cell scores 0 (drvi-py gives NaN). Cells with equal values along the
         dimension have no order among themselves, so ``a`` is averaged over every order of
         the tied cells (a run of ``s`` tied cells, ``k`` of them of ``c``, adds
         ``k (k - 1) / s``; two neighbouring runs add the product of their fractions of
         ``c``): the score does not depend on the order of the cells, and a constant
         (collapsed) dimension scores 0. Without ties this is drvi-py's count exactly. On
         latents with ties the two differ: drvi-py orders tied cells as ``numpy.argsort``
         leaves them, which depends on the order of the cells in the input (a collapsed
         dimension there scores 1 when the cells are sorted by label).

    2. Aggregates:

       - ``score`` (LMS): the one-to-one matching of dimensions to categories that maximises
         the summed entries (``scipy.optimize.linear_sum_assignment``), divided by the
         number of categories (an unmatched category counts 0);
       - ``msas``: mean over categories of the best dimension's entry;
       - ``msgs``: mean over categories of the gap between the best and the second-best
         dimension (the second best is 0 with a single dimension).

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    labels
        Shape ``(n_cells,)``: strings, integers or a pandas ``Categorical`` with at least two
        categories and no missing values. Category names are the values' text, so distinct
        values that read the same (the integer 1 and the string ``"1"``) raise ``ValueError``.
    metric
        ``"smi"`` (DRVI's headline metric) or ``"spn"``.
    n_bins
        Bins per latent dimension for ``"smi"`` (drvi-py's default, 10).

    Returns
    -------
    dict
        ``score`` (LMS, float in [0, 1]); ``msas``; ``msgs``; ``matching`` (dict: category
        name -> matched dimension index, matched categories only); ``matrix``
        (``(n_dims, n_categories)`` float array); ``categories`` (the columns of
        ``matrix``); ``metric``.
    """
    from scipy.optimize import linear_sum_assignment

    z = check_latents(latents)
    codes, categories = _label_codes(labels, z)
    if metric == "smi":
        matrix = _smi_matrix(latents, z, codes, len(categories), check_n_bins(n_bins))
    elif metric == "spn":
        matrix = _spn_matrix(z, codes, len(categories))
    else:
        raise ValueError(f"metric={metric!r} is not supported; choose 'smi' or 'spn'")
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    matching = {categories[c]: int(i) for c, i in sorted(zip(cols, rows, strict=True))}
    top = np.sort(matrix, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    return {
        "score": float(matrix[rows, cols].sum() / len(categories)),
        "msas": float(top[0].mean()),
        "msgs": float((top[0] - second).mean()),
        "matching": matching,
        "matrix": matrix,
        "categories": categories,
        "metric": metric,
    }


def _label_codes(labels, z: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes and category names of ``labels``: one per cell, at least two categories."""
    codes, categories = label_codes(labels)
    check_same_n(z, codes[:, None], what="labels")
    if len(categories) < 2:
        raise ValueError(
            f"labels has a single category ({categories[0]!r}); the score needs at least two"
        )
    return codes, categories


def _smi_matrix(latents, z: np.ndarray, codes: np.ndarray, n_cat: int, n_bins: int) -> np.ndarray:
    """Scaled MI of each (dimension, one-vs-rest category), drvi-py's discretisation."""
    import warnings

    from sklearn.preprocessing import KBinsDiscretizer

    raw = np.asarray(latents)
    x = raw if raw.dtype in (np.float32, np.float64) else z  # drvi bins in the input's dtype
    discretizer = KBinsDiscretizer(
        n_bins=n_bins, encode="ordinal", strategy="uniform", random_state=123
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Feature i is constant": one bin, MI 0
        bins = discretizer.fit_transform(x).astype(np.int64)
    matrix = np.zeros((z.shape[1], n_cat))
    for c in range(n_cat):
        indicator = codes == c
        h = entropy(indicator)
        for i in range(z.shape[1]):
            matrix[i, c] = mutual_info(bins[:, i], indicator) / h
    return matrix


def _spn_matrix(z: np.ndarray, codes: np.ndarray, n_cat: int) -> np.ndarray:
    """Nearest-neighbour alignment of each (dimension, category) along the dimension's order."""
    n = z.shape[0]
    counts = np.bincount(codes, minlength=n_cat).astype(np.float64)
    freq = counts / n
    matrix = np.zeros((z.shape[1], n_cat))
    for i in range(z.shape[1]):
        pairs = _neighbour_pairs(z[:, i], codes, n_cat)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(counts > 1, pairs / (counts - 1), 0.0)
        matrix[i] = np.clip(frac - freq, 0.0, None) / (1.0 - freq)
    matrix[:, counts <= 1] = 0.0
    return matrix


def _neighbour_pairs(values: np.ndarray, codes: np.ndarray, n_cat: int) -> np.ndarray:
    """Per category, the neighbouring pairs of cells along ``values`` that are both of it,
    averaged over every order of tied values (without ties: the plain count, as drvi-py)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], codes[order]
    run = np.concatenate([[0], np.cumsum(v[1:] != v[:-1])])  # runs of equal values
    size = np.bincount(run).astype(np.float64)
    keys, k = np.unique(run * n_cat + c, return_counts=True)  # sorted by (run, category)
    r, cat = np.divmod(keys, n_cat)
    k = k.astype(np.float64)
    # inside a run of s cells, each of its s - 1 pairs is two of them drawn at random
    within = np.bincount(cat, weights=k * (k - 1) / size[r], minlength=n_cat)
    # between neighbouring runs: the last cell of one and the first of the next, independent
    share = k / size[r]
    nxt = np.minimum(np.searchsorted(keys, keys + n_cat), len(keys) - 1)
    hit = keys[nxt] == keys + n_cat  # the same category in the next run
    across = np.bincount(cat[hit], weights=share[hit] * share[nxt[hit]], minlength=n_cat)
    return within + across


# The grids of ``cluster_agreement``, documented where they are public (scvae_beta.metrics).
# On the pancreas benchmark the disentangled latents give ~6 clusters at 0.1, scVI's 3.
RESOLUTIONS = tuple(round(0.1 * i, 1) for i in range(1, 21))
RESOLUTIONS_WIDE = (0.01, 0.02, 0.03, 0.05, 0.07, *RESOLUTIONS)


def cluster_agreement(
    latents,
    labels,
    *,
    resolution: float | str | Sequence[float] = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
) -> dict:
    """Agreement of Leiden clusters of the latent space with known labels.

    Builds a throwaway ``AnnData`` with the latents as ``.X``, runs
    ``scanpy.pp.neighbors(use_rep="X", n_neighbors=n_neighbors, random_state=seed)`` and
    ``scanpy.tl.leiden(resolution=resolution, flavor="igraph", n_iterations=2,
    directed=False, random_state=seed)``, and compares the clusters with ``labels``.

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    labels
        Shape ``(n_cells,)``: strings, integers or a pandas ``Categorical`` with at least two
        categories and no missing values; as for :func:`latent_matching_score`, distinct values
        that read the same as text (1 and ``"1"``) raise ``ValueError``.
    resolution
        Leiden resolution (larger -> more clusters), or ``"optimal"``: cluster at every
        resolution of :data:`RESOLUTIONS` (0.1, 0.2, ..., 2.0) on the same neighbour graph
        and keep the one whose clusters have the highest NMI with the labels (the protocol of
        scIB, Luecken et al. 2022), or a sequence of resolutions to search the same way
        (e.g. :data:`RESOLUTIONS_WIDE`, which goes down to 0.01). A fixed resolution favours
        representations whose density suits it; the optimum compares how well each
        representation *can* be clustered. When the best resolution is the grid's smallest
        or largest and strictly beats its neighbour in the grid, the optimum may lie outside
        the grid: a ``UserWarning`` says so. The grid is searched in ascending order and, of
        resolutions with equal NMI, the smallest is kept, whatever the order the grid is
        given in. Each resolution is a positive, finite real number (Python or NumPy; not a
        bool or a string).
    n_neighbors
        Neighbours in the kNN graph: an integer from 2 to ``n_cells - 1``.
    seed
        Seeds the neighbour search and Leiden: a non-negative integer.

    Returns
    -------
    dict
        ``ari`` (``sklearn.metrics.adjusted_rand_score``), ``nmi``
        (``sklearn.metrics.normalized_mutual_info_score``, arithmetic mean), ``n_clusters``
        (int), ``clusters`` (``(n_cells,)`` int array of cluster ids) and ``resolution``
        (float: the one used).
    """
    import anndata as ad
    import scanpy as sc
    from scipy.sparse import SparseEfficiencyWarning
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    z = check_latents(latents)
    codes, _ = _label_codes(labels, z)
    resolutions = _resolutions(resolution)
    n_neighbors = check_integer("n_neighbors", n_neighbors, low=2)
    seed = check_integer("seed", seed, low=0)
    if not 2 <= n_neighbors < z.shape[0]:
        raise ValueError(
            f"n_neighbors must be between 2 and n_cells - 1 = {z.shape[0] - 1}; got {n_neighbors}"
        )
    from scvae_beta._neighbors import keep_torch_threads, neighbors

    adata = ad.AnnData(X=z.astype(np.float32))
    with keep_torch_threads():  # so that later fits run at the caller's thread count
        with warnings.catch_warnings():
            # Duplicate cells (e.g. constant latents) can leave a cell out of its own kNN list;
            # scanpy then zeroes the diagonal of its csr_matrix, which SciPy warns is slow.
            warnings.filterwarnings("ignore", category=SparseEfficiencyWarning)
            neighbors(adata, use_rep="X", n_neighbors=n_neighbors, random_state=seed)
        best, nmis = None, []
        for r in resolutions:
            sc.tl.leiden(
                adata,
                resolution=r,
                flavor="igraph",
                n_iterations=2,
                directed=False,
                random_state=seed,
                key_added="clusters",
            )
            clusters = adata.obs["clusters"].cat.codes.to_numpy().astype(np.int64)
            nmi = float(normalized_mutual_info_score(codes, clusters))
            nmis.append(nmi)
            if best is None or nmi > best["nmi"]:
                best = {
                    "ari": float(adjusted_rand_score(codes, clusters)),
                    "nmi": nmi,
                    "n_clusters": int(np.unique(clusters).size),
                    "clusters": clusters,
                    "resolution": float(r),
                }
    _warn_at_grid_edge(resolutions, nmis, best["resolution"])
    return best


def _resolutions(resolution) -> tuple[float, ...]:
    """The Leiden resolutions to search, ascending and distinct; ``ValueError`` unless
    ``resolution`` is ``"optimal"``, a positive finite real number or a non-empty sequence
    of them (bools and strings are refused, alone or in a sequence)."""
    bad = (
        "resolution must be a positive number, 'optimal' or a sequence of positive numbers; "
        f"got {resolution!r}"
    )
    if isinstance(resolution, str):
        if resolution != "optimal":
            raise ValueError(bad)
        return RESOLUTIONS
    if isinstance(resolution, np.ndarray) and resolution.ndim == 0:
        resolution = resolution.item()
    if isinstance(resolution, (numbers.Real, np.bool_)):
        values = [resolution]
    else:
        try:
            values = list(resolution)
        except TypeError:
            raise ValueError(bad) from None
    if not values or not all(
        isinstance(r, numbers.Real)
        and not isinstance(r, (bool, np.bool_))
        and math.isfinite(r)
        and r > 0
        for r in values
    ):
        raise ValueError(bad)
    return tuple(sorted({float(r) for r in values}))


def _warn_at_grid_edge(resolutions: tuple[float, ...], nmis: list[float], chosen: float) -> None:
    """Warn when the NMI-optimal resolution is an end of the grid and strictly beats the grid
    value next to it (on a plateau the clusters beyond would likely be the same)."""
    if len(resolutions) < 2:
        return
    order = np.argsort(resolutions, kind="stable")
    lo, hi = order[0], order[-1]
    for end, inner, side in ((lo, order[1], "smallest"), (hi, order[-2], "largest")):
        if resolutions[end] == chosen and nmis[end] > nmis[inner]:
            hint = " (e.g. resolution=metrics.RESOLUTIONS_WIDE)" if side == "smallest" else ""
            warnings.warn(
                f"the NMI-optimal Leiden resolution {chosen} is the grid's {side}; the optimum "
                f"may lie beyond it: search a wider grid{hint}",
                UserWarning,
                stacklevel=3,
            )
