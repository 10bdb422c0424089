"""Metrics against observed cell labels (cell type, condition ...), no simulator needed."""

from __future__ import annotations

import numpy as np

from scvae_beta.metrics._discretize import histogram_bins
from scvae_beta.metrics._info import entropy, mutual_info
from scvae_beta.metrics._inputs import check_latents, check_n_bins, check_same_n, label_codes


def latent_matching_score(latents, labels, *, n_bins: int = 20) -> dict:
    """How well a one-to-one matching of latent dimensions to label categories captures them.

    In the spirit of DRVI's "latent matching score" (Moinfar et al. 2024), computed with the
    histogram plug-in estimator used by MIG (DRVI itself uses sklearn's k-NN estimator):

    1. Each latent dimension ``i`` is discretised into ``n_bins`` equal-width bins.
    2. For each category ``c`` the one-vs-rest indicator ``1[label == c]`` is formed, and::

           matrix[i, c] = I(bins_i; 1[label == c]) / H(1[label == c])

       (plug-in, nats), which lies in [0, 1] and is 1 when the dimension separates the
       category from the rest.
    3. A one-to-one matching of dimensions to categories maximising the summed ``matrix``
       entries is found with ``scipy.optimize.linear_sum_assignment``. With fewer dimensions
       than categories some categories stay unmatched.
    4. ``score = sum of the matched entries / n_categories``: an unmatched category counts 0.

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    labels
        Shape ``(n_cells,)``: strings, integers or a pandas ``Categorical`` with at least two
        categories and no missing values.
    n_bins
        Bins per latent dimension.

    Returns
    -------
    dict
        ``score`` (float in [0, 1]); ``matching`` (dict: category name -> matched dimension
        index, matched categories only); ``matrix`` (``(n_dims, n_categories)`` float array);
        ``categories`` (list of category names, the columns of ``matrix``).
    """
    from scipy.optimize import linear_sum_assignment

    z = check_latents(latents)
    codes, categories = label_codes(labels)
    check_same_n(z, codes[:, None], what="labels")
    if len(categories) < 2:
        raise ValueError(
            f"labels has a single category ({categories[0]!r}); the score needs at least two"
        )
    bins = histogram_bins(z, check_n_bins(n_bins))
    matrix = np.zeros((z.shape[1], len(categories)))
    for c in range(len(categories)):
        indicator = codes == c
        h = entropy(indicator)
        for i in range(z.shape[1]):
            matrix[i, c] = mutual_info(bins[:, i], indicator) / h
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    matching = {categories[c]: int(i) for c, i in sorted(zip(cols, rows, strict=True))}
    return {
        "score": float(matrix[rows, cols].sum() / len(categories)),
        "matching": matching,
        "matrix": matrix,
        "categories": categories,
    }


def cluster_agreement(
    latents,
    labels,
    *,
    resolution: float = 1.0,
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
        Shape ``(n_cells,)``: strings, integers or a pandas ``Categorical``, no missing values.
    resolution
        Leiden resolution (larger -> more clusters).
    n_neighbors
        Neighbours in the kNN graph.
    seed
        Seeds the neighbour search and Leiden.

    Returns
    -------
    dict
        ``ari`` (``sklearn.metrics.adjusted_rand_score``), ``nmi``
        (``sklearn.metrics.normalized_mutual_info_score``, arithmetic mean), ``n_clusters``
        (int) and ``clusters`` (``(n_cells,)`` int array of cluster ids).
    """
    import anndata as ad
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    z = check_latents(latents)
    codes, _ = label_codes(labels)
    check_same_n(z, codes[:, None], what="labels")
    if not 2 <= n_neighbors < z.shape[0]:
        raise ValueError(
            f"n_neighbors must be between 2 and n_cells - 1 = {z.shape[0] - 1}; got {n_neighbors}"
        )
    import torch

    adata = ad.AnnData(X=z.astype(np.float32))
    # numba's OpenMP layer (used by the neighbour search) resets the process-wide OpenMP
    # thread count that torch reads; restore it so that later fits are reproducible.
    threads = torch.get_num_threads()
    try:
        sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep="X", random_state=seed)
        sc.tl.leiden(
            adata,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
            key_added="clusters",
        )
    finally:
        torch.set_num_threads(threads)
    clusters = adata.obs["clusters"].cat.codes.to_numpy().astype(np.int64)
    return {
        "ari": float(adjusted_rand_score(codes, clusters)),
        "nmi": float(normalized_mutual_info_score(codes, clusters)),
        "n_clusters": int(np.unique(clusters).size),
        "clusters": clusters,
    }
