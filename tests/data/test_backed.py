"""Counts on disk (backed h5ad, zarr): the same checks and errors as in memory, read in row
chunks and never whole, chunked minibatch order, and training as good as in memory."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata._core.sparse_dataset import _CSRDataset

import scvae_beta
import scvae_beta.data.backed as backed_mod
from scvae_beta.data import BackedCountData, ChunkedSampler, count_data, read_backed, sampler_for
from tests.conftest import simulate_counts

pytestmark = pytest.mark.filterwarnings("ignore:Writing zarr v2 data")

FORMATS = ["h5ad", "zarr"]
KW = dict(n_hidden=16, n_latent=4, batch_size=64, progress=False)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Chunks far smaller than the tiny test data, so that whole-matrix reads would show."""
    monkeypatch.setattr(backed_mod, "CHUNK_ROWS", 16)
    monkeypatch.setattr(backed_mod, "BUFFER_CHUNKS", 2)
    monkeypatch.setattr(backed_mod, "PASS_ROWS", 32)


def on_disk(adata: ad.AnnData, tmp_path, fmt: str, name: str = "data") -> ad.AnnData:
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "h5ad":
        adata.write_h5ad(path)
    else:
        adata.write_zarr(path)
    return read_backed(path)


@pytest.fixture
def no_whole_reads(monkeypatch):
    """Fail on any read of the whole matrix or of scattered rows; record rows per read."""
    spans: list[int] = []
    real = _CSRDataset.__getitem__

    def getitem(self, index):
        rows = index[0] if isinstance(index, tuple) else index
        assert isinstance(rows, slice), f"scattered row read {type(rows).__name__}"
        start, stop, _ = rows.indices(self.shape[0])
        assert stop - start < self.shape[0], "read the whole matrix"
        spans.append(stop - start)
        return real(self, index)

    def to_memory(self):
        raise AssertionError("loaded the whole matrix")

    monkeypatch.setattr(_CSRDataset, "__getitem__", getitem)
    monkeypatch.setattr(_CSRDataset, "to_memory", to_memory)
    return spans


# ---------------------------------------------------------------------- reading


@pytest.mark.parametrize("fmt", FORMATS)
def test_on_disk_source_serves_the_same_minibatches(tmp_path, fmt, no_whole_reads):
    adata = simulate_counts(n_batches=2)
    disk = on_disk(adata, tmp_path, fmt)
    assert isinstance(disk.X, _CSRDataset)
    mem, cats = count_data(adata, batch_key="batch")
    src, cats_disk = count_data(disk, batch_key="batch")
    assert isinstance(src, BackedCountData) and cats == cats_disk
    np.testing.assert_array_equal(src.log_library, mem.log_library)
    np.testing.assert_array_equal(src.batch_index, mem.batch_index)
    rng = np.random.default_rng(0)
    for idx in (np.arange(10), rng.permutation(240)[:64], np.array([239, 0, 17, 16, 5])):
        a, b = mem.minibatch(idx), src.minibatch(idx)
        np.testing.assert_array_equal(a.x.to_dense().numpy(), b.x.to_dense().numpy())
        assert b.x.is_coalesced()
        for name in ("log_library", "batch_index", "indices"):
            np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
    assert max(no_whole_reads) <= 32


def test_dense_on_disk_and_gene_columns(tmp_path):
    adata = simulate_counts()
    adata.X = adata.X.toarray()
    disk = on_disk(adata, tmp_path, "h5ad")
    cols = np.arange(40)[::-1]
    src = BackedCountData(disk.X, columns=cols)
    mem, _ = count_data(adata[:, cols].copy())
    np.testing.assert_array_equal(src.log_library, mem.log_library)
    idx = np.array([3, 200, 41])
    np.testing.assert_array_equal(
        src.minibatch(idx).x.to_dense().numpy(), mem.minibatch(idx).x.to_dense().numpy()
    )


def test_cache_holds_a_bounded_number_of_chunks(tmp_path):
    src, _ = count_data(on_disk(simulate_counts(n_cells=600), tmp_path, "h5ad"))
    for start in range(0, 600, 50):
        src.minibatch(np.arange(start, min(start + 50, 600)))
    assert len(src._cache) <= src.cache_chunks == 2 * 2 + 2


# ---------------------------------------------------------------------- checks


def _bad_matrices():
    base = simulate_counts(n_cells=60, n_genes=10).X.toarray()
    cases = {}
    x = base.copy()
    x[3, 2] = -1.0
    cases["negative"] = x
    x = base.copy()
    x[5, 1] = 0.5
    cases["non_integer"] = x
    x = base.copy()
    x[7, 0], x[50, 3] = np.nan, np.inf
    cases["nan"] = x
    x = base.copy()
    x[[4, 40]] = 0
    cases["zero_cells"] = x
    x = base.copy()
    x[59, 9] = 3e7
    cases["too_large"] = x
    return cases


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(_bad_matrices()))
def test_errors_equal_those_in_memory(tmp_path, fmt, case):
    X = sp.csr_matrix(_bad_matrices()[case].astype(np.float32))
    adata = ad.AnnData(X=X, var=pd.DataFrame(index=[f"g{i}" for i in range(10)]))
    with pytest.raises(ValueError) as in_memory:
        count_data(adata)
    disk = on_disk(adata, tmp_path, fmt)
    with pytest.raises(ValueError) as from_disk:
        count_data(disk)
    assert str(from_disk.value) == str(in_memory.value)
    obsm, uns = set(disk.obsm), set(disk.uns)
    with pytest.raises(ValueError, match=str(in_memory.value)[:30].replace("(", r"\(")):
        scvae_beta.fit(disk, **KW, max_epochs=1)
    assert set(disk.obsm) == obsm and set(disk.uns) == uns


def test_duplicate_entries_on_disk_are_summed_and_checked(tmp_path):
    data = np.array([100, 100, 3, 1], dtype=np.int8)  # row 0 has gene 1 twice: 200
    X = sp.csr_matrix((data, [1, 1, 0, 2], [0, 2, 4]), shape=(2, 3))
    X.has_canonical_format = False
    adata = ad.AnnData(X=X.copy())
    mem, _ = count_data(adata)
    src, _ = count_data(on_disk(adata, tmp_path, "h5ad"))
    assert not src.canonical
    np.testing.assert_array_equal(src.log_library, mem.log_library)
    np.testing.assert_allclose(np.exp(src.log_library), [200, 4])
    np.testing.assert_array_equal(src.rows(np.array([0, 1])).toarray(), [[0, 200, 0], [3, 0, 1]])


def test_csc_on_disk_is_refused_with_the_fix(tmp_path):
    adata = simulate_counts(n_cells=40, n_genes=8)
    adata.X = sp.csc_matrix(adata.X)
    disk = on_disk(adata, tmp_path, "h5ad")
    with pytest.raises(ValueError, match="stored on disk as CSC.*tocsr"):
        count_data(disk)


# ---------------------------------------------------------------------- order


def test_chunked_sampler_visits_every_cell_once_in_buffers():
    s = ChunkedSampler(1000, 0.1, 32, seed=4, chunk_rows=50, buffer_chunks=3)
    ref = scvae_beta.data.Sampler(1000, 0.1, 32, seed=4)
    np.testing.assert_array_equal(s.val_idx, ref.val_idx)  # the same split
    batches = list(s.epoch())
    assert len(batches) == s.steps_per_epoch == ref.steps_per_epoch
    order = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(order), s.train_idx)
    # The order is a sequence of buffers: the training cells of at most 3 whole chunks each.
    chunks = order // 50
    per_chunk = np.bincount(chunks)
    segments, current, remaining = [], set(), 0
    for c in chunks:
        if c not in current:
            current.add(int(c))
            remaining += per_chunk[c]
        remaining -= 1
        if remaining == 0:
            segments.append(current)
            current = set()
    assert [len(seg) for seg in segments] == [3] * 6 + [2]
    assert set().union(*segments) == set(range(20))
    # Within a buffer the cells are shuffled, not sorted.
    assert not np.all(np.diff(order[:80]) > 0)
    # Seeded: the same seed gives the same order, another seed another.
    again = ChunkedSampler(1000, 0.1, 32, seed=4, chunk_rows=50, buffer_chunks=3)
    np.testing.assert_array_equal(np.concatenate(list(again.epoch())), order)
    other = ChunkedSampler(1000, 0.1, 32, seed=5, chunk_rows=50, buffer_chunks=3)
    assert not np.array_equal(np.concatenate(list(other.epoch()))[:100], order[:100])


def test_sampler_for_picks_the_chunked_order_for_data_on_disk(tmp_path):
    src, _ = count_data(on_disk(simulate_counts(), tmp_path, "zarr"))
    assert isinstance(sampler_for(src, 0.1, 64, 0), ChunkedSampler)
    mem, _ = count_data(simulate_counts())
    assert type(sampler_for(mem, 0.1, 64, 0)).__name__ == "Sampler"


# ---------------------------------------------------------------------- fit and inference


@pytest.mark.parametrize("fmt", FORMATS)
def test_fit_and_inference_never_load_the_matrix(tmp_path, fmt, no_whole_reads):
    adata = simulate_counts(n_batches=2)
    disk = on_disk(adata, tmp_path, fmt)
    model = scvae_beta.fit(disk, **KW, max_epochs=3, batch_key="batch")
    z = disk.obsm["X_scvae_beta"]
    assert z.shape == (240, 4) and np.isfinite(z).all()
    assert disk.uns["scvae_beta"]["training"]["n_cells"] == 240
    np.testing.assert_array_equal(model.get_latent(disk), z)
    np.testing.assert_allclose(model.get_latent(adata), z, atol=1e-6)
    expr = model.get_normalized_expression(disk)
    np.testing.assert_allclose(expr, model.get_normalized_expression(adata), atol=1e-6)
    table = scvae_beta.tl.latent_traversal(disk, model, dims=[0, 1], n_cells=None)
    assert table.shape == (40, 2) and np.isfinite(table.to_numpy()).all()
    assert no_whole_reads and max(no_whole_reads) <= 32


def test_model_reads_its_genes_from_permuted_data_on_disk(tmp_path):
    adata = simulate_counts()
    model = scvae_beta.fit(adata, **KW, max_epochs=2)
    permuted = adata[:, adata.var_names[::-1]].copy()
    disk = on_disk(permuted, tmp_path, "h5ad")
    np.testing.assert_allclose(model.get_latent(disk), adata.obsm["X_scvae_beta"], atol=1e-6)
    expr = model.get_normalized_expression(disk)
    np.testing.assert_allclose(expr, model.get_normalized_expression(permuted), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt, stored, chunk_rows",
    [("h5ad", "shuffled", 32), ("zarr", "shuffled", 32), ("h5ad", "sorted", 64)],
)
def test_training_from_disk_matches_in_memory_validation_loss(
    tmp_path, monkeypatch, fmt, stored, chunk_rows
):
    """Same data, split and seed; only the minibatch order differs (buffers of 8 chunks,
    256 or 512 of the 1,350 training cells). Cells stored sorted by group are the hard case
    for chunked shuffling."""
    adata = simulate_counts(n_cells=1500, n_genes=60, seed=3)
    if stored == "sorted":
        adata = adata[np.argsort(adata.obs["group"].to_numpy(), kind="stable")].copy()
    monkeypatch.setattr(backed_mod, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(backed_mod, "BUFFER_CHUNKS", 8)
    kw = dict(KW, max_epochs=15, early_stopping=False, kl_warmup=0)
    scvae_beta.fit(adata, **kw)
    disk = on_disk(adata, tmp_path, fmt)
    scvae_beta.fit(disk, **kw)
    mem_loss = adata.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    disk_loss = disk.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    assert abs(disk_loss - mem_loss) / mem_loss < 0.01, (mem_loss, disk_loss)


def test_resume_from_disk_equals_uninterrupted(tmp_path, monkeypatch):
    import scvae_beta.train.loop as loop_mod

    kw = dict(KW, max_epochs=4)
    whole = on_disk(simulate_counts(), tmp_path, "h5ad", name="whole")
    scvae_beta.fit(whole, **kw)
    real = loop_mod.validation_pass
    calls = []

    def preempted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "validation_pass", preempted)
    part = on_disk(simulate_counts(), tmp_path, "h5ad", name="part")
    with pytest.raises(KeyboardInterrupt):
        scvae_beta.fit(part, **kw, checkpoint_dir=tmp_path / "c")
    monkeypatch.setattr(loop_mod, "validation_pass", real)  # (keep the small chunks)
    scvae_beta.fit(part, **kw, checkpoint_dir=tmp_path / "c", resume=True)
    np.testing.assert_array_equal(part.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"])


def test_dimension_associations_read_qc_from_disk(tmp_path, no_whole_reads):
    adata = simulate_counts()
    adata.var_names = ["MT-1", *adata.var_names[1:]]
    scvae_beta.fit(adata, **KW, max_epochs=2)
    disk = on_disk(adata, tmp_path, "h5ad")
    keys = ["group", "log_n_genes", "pct_mito"]
    mem = scvae_beta.tl.dimension_associations(adata, obs_keys=keys)
    got = scvae_beta.tl.dimension_associations(disk, obs_keys=keys)
    pd.testing.assert_frame_equal(got, mem)


def test_tune_beta_asks_for_counts_in_memory(tmp_path):
    disk = on_disk(simulate_counts(), tmp_path, "h5ad")
    with pytest.raises(ValueError, match="tune_beta .* needs the counts in memory"):
        scvae_beta.tune_beta(disk, betas=[1, 2], progress=False, max_epochs=1)


def test_checkpoint_of_an_in_memory_fit_is_not_resumed_from_disk(tmp_path):
    adata = simulate_counts()
    scvae_beta.fit(adata, **KW, max_epochs=2, checkpoint_dir=tmp_path / "c")
    disk = on_disk(adata, tmp_path, "h5ad")
    with pytest.raises(ValueError, match="data order: 'cells' in the checkpoint, 'chunks 16 x 2'"):
        scvae_beta.fit(disk, **KW, max_epochs=2, checkpoint_dir=tmp_path / "c", resume=True)
