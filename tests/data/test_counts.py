"""Minibatch loading from CSR and the bundled data set."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scvae_beta
from scvae_beta.data import CountData, minibatch_indices, n_minibatches, to_csr
from scvae_beta.datasets import PBMC_SHA256


@pytest.mark.parametrize(("n", "bs"), [(10, 3), (10, 5), (11, 5), (1, 4), (9, 4), (129, 128)])
def test_minibatches_cover_every_cell_once(n, bs):
    batches = list(minibatch_indices(np.arange(n), bs, np.random.default_rng(0)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert len(batches) == n_minibatches(n, bs)
    if n > 1:
        assert all(len(b) >= 2 for b in batches)  # no lone cell (batch norm)


def test_minibatch_order_is_seeded():
    a = list(minibatch_indices(np.arange(50), 8, np.random.default_rng(3)))
    b = list(minibatch_indices(np.arange(50), 8, np.random.default_rng(3)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_countdata_minibatch_is_sparse_and_holds_the_requested_rows():
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.3, (30, 7)).astype(np.int32)
    dense[:, 0] += 1
    data = CountData(sp.csr_matrix(dense), batch_index=np.arange(30) % 3)
    mb = data.minibatch(np.array([4, 0, 17]))
    assert mb.x.dtype == torch.float32 and mb.x.is_sparse and mb.x.is_coalesced()
    assert mb.x._nnz() == np.count_nonzero(dense[[4, 0, 17]])
    np.testing.assert_array_equal(mb.x.to_dense().numpy(), dense[[4, 0, 17]])
    np.testing.assert_allclose(mb.log_library.numpy(), np.log(dense[[4, 0, 17]].sum(1)), rtol=1e-6)
    np.testing.assert_array_equal(mb.batch_index.numpy(), [1, 0, 2])
    np.testing.assert_array_equal(mb.indices.numpy(), [4, 0, 17])


def test_to_csr_does_not_copy_csr_and_converts_others():
    X = sp.random(20, 5, density=0.3, format="csr", random_state=0)
    assert to_csr(X) is X
    for other in (X.tocsc(), X.toarray(), X.tocoo()):
        np.testing.assert_array_equal(to_csr(other).toarray(), X.toarray())
    with pytest.raises(TypeError, match="numpy array or a scipy sparse matrix"):
        to_csr([[1, 2]])


def test_bundled_pbmc_sorted():
    path = resources.files("scvae_beta.datasets") / "pbmc_sorted_2k_hvg.h5ad"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PBMC_SHA256
    assert path.stat().st_size <= 3_000_000
    adata = scvae_beta.datasets.pbmc_sorted()
    assert adata.shape == (3500, 2000)
    assert sp.issparse(adata.X) and np.issubdtype(adata.X.dtype, np.integer)
    assert adata.X.min() >= 0 and np.asarray(adata.X.sum(1)).min() > 0
    counts = adata.obs["trueLabel"].value_counts()
    assert len(counts) == 7 and (counts == 500).all()
    assert "Zheng" in adata.uns["source"] or "scMINER" in adata.uns["source"]


def test_minibatch_nonzero_lists_skip_stored_zeros_and_duplicates_are_summed():
    # explicit zero at (0, 1) and a duplicated entry at (1, 2): 2 + 3
    X = sp.csr_matrix(
        (np.array([4.0, 0.0, 2.0, 3.0]), np.array([0, 1, 2, 2]), np.array([0, 2, 4])),
        shape=(2, 3),
    )
    assert not X.has_canonical_format
    data = CountData(X)
    mb = data.minibatch(np.array([0, 1]))
    np.testing.assert_array_equal(mb.x.to_dense().numpy(), [[4, 0, 0], [0, 0, 5]])
    rows, cols = mb.x._indices()
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (1, 2)]
    assert X.nnz == 4  # the caller's matrix was not modified
