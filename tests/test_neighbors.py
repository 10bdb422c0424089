"""``scvae_beta._neighbors``: scanpy's neighbour graph for the package's own calls, also from
8,192 cells on, where scanpy 1.11 with pynndescent 0.7 and SciPy 1.17 fails."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scvae_beta import _neighbors, metrics

pytest.importorskip("scanpy")


def _blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, n)
    z = (np.eye(8)[group] * 8.0 + rng.normal(size=(n, 8))).astype(np.float32)
    return z, group


def test_below_the_threshold_the_graph_is_scanpys_default():
    import scanpy as sc

    z, _ = _blobs(300)
    ours, theirs = ad.AnnData(X=z.copy()), ad.AnnData(X=z.copy())
    _neighbors.neighbors(ours, use_rep="X", n_neighbors=10, random_state=0)
    sc.pp.neighbors(theirs, use_rep="X", n_neighbors=10, random_state=0)
    for key in ("distances", "connectivities"):
        assert (ours.obsp[key] != theirs.obsp[key]).nnz == 0


@pytest.mark.slow
def test_the_approximate_search_gives_a_knn_graph(monkeypatch):
    # the approximate path (pynndescent) on few cells: the threshold lowered for the test
    from sklearn.neighbors import NearestNeighbors

    monkeypatch.setattr(_neighbors, "APPROXIMATE_FROM", 500)
    z, group = _blobs(600)
    adata = ad.AnnData(X=z)
    _neighbors.neighbors(adata, use_rep="X", n_neighbors=10, random_state=0)
    d = adata.obsp["distances"].tocsr()
    # scanpy keeps pynndescent's rows as they come (k or more entries; scverse/scanpy#3809)
    assert np.all(np.diff(d.indptr) >= 9)
    exact = NearestNeighbors(n_neighbors=10).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    recall = np.mean([np.isin(exact[i], d[i].indices).mean() for i in range(len(z))])
    assert recall > 0.95
    # and the clusters through cluster_agreement, which uses the same helper
    res = metrics.cluster_agreement(z, group, resolution=0.1, n_neighbors=10)
    assert res["ari"] == pytest.approx(1.0)


def test_the_transformer_has_scanpys_settings():
    pytest.importorskip("pynndescent")
    t = _neighbors.nndescent_transformer(10_000, 15, 3)
    params = t.get_params()
    assert (params["n_neighbors"], params["random_state"], params["metric"]) == (15, 3, "euclidean")
    assert (params["n_trees"], params["n_iters"]) == (10, 13)  # min(64, 5+round(100/20)), log2


@pytest.mark.slow
def test_users_own_scanpy_neighbors_work_from_8192_cells():
    # Users call sc.pp.neighbors on our latents themselves. With pynndescent 0.7 (a SciPy sparse
    # array from its transformer) scanpy 1.11 fails there with AttributeError 'getnnz'; the
    # package's requirement (pynndescent < 0.7) and constraints.txt keep the installed
    # environment on a working version. This fails in an environment that ignores the bound.
    import scanpy as sc

    z, group = _blobs(_neighbors.APPROXIMATE_FROM)
    adata = ad.AnnData(X=np.zeros((len(z), 1), dtype=np.float32), obsm={"X_z": z})
    sc.pp.neighbors(adata, use_rep="X_z", n_neighbors=15, random_state=0)
    d = adata.obsp["distances"].tocsr()
    assert d.shape == (len(z), len(z))
    per_row = np.diff(d.indptr)
    assert np.all(per_row >= 14)
    # the neighbours are found: almost all lie in the cell's own blob
    rows = np.repeat(np.arange(len(z)), per_row)
    assert np.mean(group[rows] == group[d.indices]) > 0.99
