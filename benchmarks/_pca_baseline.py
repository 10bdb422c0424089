"""PCA on log-normalised counts: the linear baseline of the disentanglement benchmark."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

__all__ = ["pca_latents"]

TARGET_SUM = 1e4  # counts per cell after normalisation (scanpy's usual choice)


def pca_latents(
    adata: ad.AnnData, n_comps: int, *, layer: str | None = None, seed: int = 0
) -> np.ndarray:
    """Principal-component scores of log-normalised counts, as a stand-in latent space.

    On a private copy of the counts (``adata`` is not modified):
    ``sc.pp.normalize_total(target_sum=1e4)``, ``sc.pp.log1p``, then
    ``sc.pp.pca(n_comps=n_comps, random_state=seed)`` (centred, genes not scaled).

    Parameters
    ----------
    adata
        Cells x genes of raw counts in ``.X`` or ``layer``.
    n_comps
        Number of components, the same as the models' ``n_latent``; must be below
        ``min(n_cells, n_genes)``.
    layer
        Layer holding the counts; ``None`` uses ``.X``.
    seed
        Seeds the PCA solver.

    Returns
    -------
    np.ndarray
        ``(n_cells, n_comps)`` float64 scores, components in decreasing order of variance.
    """
    import scanpy as sc

    if not 1 <= n_comps < min(adata.n_obs, adata.n_vars):
        raise ValueError(
            f"n_comps must be between 1 and min(n_cells, n_genes) - 1 = "
            f"{min(adata.n_obs, adata.n_vars) - 1}; got {n_comps}"
        )
    counts = adata.X if layer is None else adata.layers[layer]
    counts = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    work = ad.AnnData(X=counts)
    sc.pp.normalize_total(work, target_sum=TARGET_SUM)
    sc.pp.log1p(work)
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    return np.asarray(work.obsm["X_pca"], dtype=np.float64)
