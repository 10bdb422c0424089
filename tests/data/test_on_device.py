"""The whole matrix on the training device: the same minibatches as from host memory (the
gather runs on any device; on CPU here, on CUDA in tests/test_cuda.py), and when it is used."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scvae_beta.data import CountData, count_data
from scvae_beta.data.on_device import DeviceCountData, device_bytes
from scvae_beta.train.device import place_data
from tests.conftest import simulate_counts


def test_device_minibatches_equal_host_minibatches():
    adata = simulate_counts(n_batches=3)
    host, _ = count_data(adata, batch_key="batch")
    dev = DeviceCountData(host, "cpu")
    assert (dev.n_cells, dev.n_genes) == (host.n_cells, host.n_genes)
    assert device_bytes(host) == host.X.nnz * 8 + (host.n_cells + 1) * 8
    rng = np.random.default_rng(1)
    for idx in (np.arange(5), rng.permutation(240)[:128], np.array([7]), np.array([239, 3, 3])):
        a, b = host.minibatch(idx), dev.minibatch(idx)
        assert b.x.is_coalesced() and b.x.dtype == torch.float32
        torch.testing.assert_close(b.x.to_dense(), a.x.to_dense(), rtol=0, atol=0)
        # Coalesced means the same index order as a fresh coalesce().
        torch.testing.assert_close(b.x.indices(), b.x.coalesce().indices(), rtol=0, atol=0)
        for name in ("log_library", "batch_index", "indices"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)


def test_empty_rows_and_no_batches():
    X = sp.csr_matrix(np.array([[0, 2, 0], [1, 0, 0], [0, 0, 0], [3, 1, 4]], dtype=np.float32))
    host = CountData(X)
    dev = DeviceCountData(host, "cpu")
    mb = dev.minibatch(np.array([2, 3, 2]))
    torch.testing.assert_close(mb.x.to_dense(), torch.tensor([[0.0, 0, 0], [3, 1, 4], [0, 0, 0]]))
    assert mb.batch_index is None


def test_place_data_keeps_host_data_on_cpu_and_when_told():
    host, _ = count_data(simulate_counts())
    assert place_data(host, torch.device("cpu"), True) is host  # the CPU holds it already
    assert place_data(host, torch.device("cuda"), False) is host  # no CUDA call made


def test_data_on_device_true_refuses_data_on_disk(tmp_path):
    from scvae_beta.data import read_backed

    simulate_counts().write_h5ad(tmp_path / "d.h5ad")
    disk, _ = count_data(read_backed(tmp_path / "d.h5ad"))
    with pytest.raises(ValueError, match="data_on_device=True needs the counts in memory"):
        place_data(disk, torch.device("cuda"), True)
    assert place_data(disk, torch.device("cuda"), None) is disk
