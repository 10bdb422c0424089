"""Fit the bundled PBMCs for a few epochs and check the latent space separates the sorted types."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import scvae_beta


@pytest.mark.slow
def test_bundled_pbmc_few_epochs(tmp_path):
    adata = scvae_beta.datasets.pbmc_sorted()
    model = scvae_beta.fit(adata, beta=4.0, n_latent=10, max_epochs=15, seed=0, progress=False)
    u = adata.uns["scvae_beta"]
    h = u["history"]
    assert len(h) == 15 and h["kl_weight"].iloc[-1] == 4.0
    assert h["train_reconstruction"].iloc[-1] < h["train_reconstruction"].iloc[0]
    assert np.isfinite(u["elbo"]) and u["n_active"] >= 2
    sc.pp.neighbors(adata, use_rep="X_scvae_beta", random_state=0)
    sc.tl.leiden(adata, resolution=0.5, flavor="igraph", n_iterations=2, random_state=0)
    ari = adjusted_rand_score(adata.obs["trueLabel"], adata.obs["leiden"])
    assert ari > 0.4  # PCA-based scanpy workflow: ~0.6 after full training
    model.save(tmp_path / "m")
    other = scvae_beta.datasets.pbmc_sorted()[:100]
    z = scvae_beta.load(tmp_path / "m").get_latent(other)
    np.testing.assert_allclose(z, adata.obsm["X_scvae_beta"][:100], atol=1e-6)
