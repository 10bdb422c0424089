"""Synthetic single-cell count data for throughput benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["make_counts"]

_N_FACTORS = 10
_LOADING_SD = 0.8  # sd of gene loadings on each latent factor
_LIB_MEDIAN = 1200.0  # median UMIs per cell
_LIB_LOG_SD = 0.35
_THETA_MEDIAN = 1.5  # median gene-wise inverse dispersion
_THETA_LOG_SD = 0.7
_CHUNK = 2048  # cells per sampling chunk (bounds peak memory)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _expected_zero_fraction(scale, base, zw, lib, theta) -> float:
    """Mean of P(x=0) = (theta / (theta + mu))**theta over the given cells."""
    mu = _softmax_rows(scale * base[None, :] + zw) * lib[:, None]
    return float(np.mean(np.exp(theta[None, :] * (np.log(theta) - np.log(theta + mu)))))


def make_counts(
    n_cells: int = 20000,
    n_genes: int = 2000,
    *,
    seed: int = 0,
    zero_fraction_target: float = 0.9,
):
    """Make an AnnData of synthetic negative-binomial UMI counts.

    Generative model (all numpy, ``np.random.default_rng(seed)``):

    * 10 latent factors per cell ``z_c ~ N(0, I)`` and gene loadings
      ``W ~ N(0, 0.8^2)`` (10 x n_genes), plus a gene baseline logit
      ``s * b_g`` with ``b_g ~ N(0, 1)``.
    * Gene proportions per cell: ``p_c = softmax(s * b + z_c W)``.
    * Library sizes: log-normal with median 1200 UMIs (log-sd 0.35).
    * Gene-wise inverse dispersion ``theta_g``: log-normal, median 1.5
      (log-sd 0.7).
    * Counts ``x_cg ~ NB(mean=l_c p_cg, theta_g)`` drawn as a gamma-Poisson
      mixture.

    The baseline scale ``s`` is set by bisection so that the *expected* zero
    fraction (computed exactly from the NB zero probability on a subsample of
    cells) equals ``zero_fraction_target``; the realised fraction matches it to
    within sampling noise (~1e-3 for the default size).

    Parameters
    ----------
    n_cells
        Number of cells (rows).
    n_genes
        Number of genes (columns).
    seed
        Seed for ``numpy.random.default_rng``; the output is deterministic.
    zero_fraction_target
        Desired fraction of zero entries in ``X``, in (0, 1). Values that the
        model cannot reach are clipped to the nearest reachable one.

    Returns
    -------
    anndata.AnnData
        ``X`` is a ``scipy.sparse.csr_matrix`` of dtype int32 (indices int32);
        ``obs["library_size"]`` holds the realised UMI totals,
        ``var["theta"]`` the true inverse dispersions and ``obsm["z_true"]``
        the true latent factors.
    """
    import anndata as ad
    import pandas as pd

    if not 0.0 < zero_fraction_target < 1.0:
        raise ValueError("zero_fraction_target must be in (0, 1)")
    rng = np.random.default_rng(seed)

    z = rng.standard_normal((n_cells, _N_FACTORS))
    loadings = rng.normal(0.0, _LOADING_SD, size=(_N_FACTORS, n_genes))
    base = rng.standard_normal(n_genes)
    lib = _LIB_MEDIAN * np.exp(_LIB_LOG_SD * rng.standard_normal(n_cells))
    theta = _THETA_MEDIAN * np.exp(_THETA_LOG_SD * rng.standard_normal(n_genes))

    # Calibrate the baseline scale on a subsample (expected zero fraction is
    # increasing in the scale: a more skewed p means more zeros).
    n_cal = min(n_cells, 1000)
    zw_cal = z[:n_cal] @ loadings
    lo, hi = 0.0, 6.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _expected_zero_fraction(mid, base, zw_cal, lib[:n_cal], theta) < zero_fraction_target:
            lo = mid
        else:
            hi = mid
    scale = 0.5 * (lo + hi)

    blocks = []
    for start in range(0, n_cells, _CHUNK):
        stop = min(start + _CHUNK, n_cells)
        mu = _softmax_rows(scale * base[None, :] + z[start:stop] @ loadings)
        mu *= lib[start:stop, None]
        rate = rng.gamma(theta[None, :], mu / theta[None, :])
        counts = rng.poisson(rate).astype(np.int32)
        blocks.append(sp.csr_matrix(counts))
    x = sp.vstack(blocks, format="csr", dtype=np.int32)
    x.indices = x.indices.astype(np.int32, copy=False)
    x.indptr = x.indptr.astype(np.int32, copy=False)

    obs = pd.DataFrame(
        {"library_size": np.asarray(x.sum(axis=1)).ravel()},
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"theta": theta}, index=[f"gene_{j}" for j in range(n_genes)])
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obsm["z_true"] = z.astype(np.float32)
    adata.uns["synthetic"] = {"seed": seed, "baseline_scale": scale}
    return adata
