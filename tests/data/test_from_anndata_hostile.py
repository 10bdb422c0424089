"""Hostile inputs: backed files (now read from disk), narrow dtypes, duplicate genes,
out-of-range counts, float batch columns. Each is rejected (or handled) up front with an error
naming the fix, and nothing is written into the AnnData."""

from __future__ import annotations

import hashlib
import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scvae_beta
from scvae_beta.data import CountData, check_counts, count_data
from scvae_beta.data import checks as checks_module
from tests.conftest import FAST, simulate_counts


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rejected(adata, match, **kwargs):
    """fit raises ``ValueError`` matching ``match`` and writes nothing into ``adata``."""
    obsm, uns = set(adata.obsm), set(adata.uns)
    with pytest.raises(ValueError, match=match):
        scvae_beta.fit(adata, **{**FAST, **kwargs})
    assert set(adata.obsm) == obsm and set(adata.uns) == uns


# 1. backed AnnData: read from disk in chunks (tests/data/test_backed.py has the rest) ---------


@pytest.mark.parametrize("dense", [False, True])
def test_backed_anndata_is_read_from_disk(tmp_path, dense):
    small = simulate_counts(n_cells=40, n_genes=12)
    if dense:
        small.X = small.X.toarray()
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    before = _sha(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        data, _ = count_data(backed)
        assert type(data).__name__ == "BackedCountData"
        library = np.asarray(small.X.sum(1)).ravel()
        np.testing.assert_allclose(np.exp(data.log_library), library, rtol=1e-6)
        in_memory, _ = count_data(backed.to_memory())
        np.testing.assert_array_equal(data.log_library, in_memory.log_library)
    finally:
        backed.file.close()
    assert _sha(path) == before


# 2. narrow integer dtypes: duplicates summed without overflow ------------------------------------


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(np.int8, 100), (np.uint8, 200), (np.int16, 20_000), (np.uint16, 40_000)],
)
def test_duplicate_entries_of_narrow_ints_sum_without_overflow(dtype, value):
    # row 0 holds (0, 0) twice and (0, 2) once; row 1 holds (1, 1) once
    X = sp.csr_matrix(
        (np.array([value, value, 3, 7], dtype=dtype), [0, 0, 2, 1], [0, 3, 4]), shape=(2, 3)
    )
    data = CountData(X)
    np.testing.assert_allclose(np.exp(data.log_library), [2 * value + 3, 7], rtol=1e-6)
    np.testing.assert_array_equal(data.X.toarray(), [[2 * value, 0, 3], [0, 7, 0]])
    mb = data.minibatch(np.array([0, 1]))
    np.testing.assert_array_equal(mb.x.to_dense().numpy(), [[2 * value, 0, 3], [0, 7, 0]])
    assert X.dtype == dtype and X.nnz == 4  # the caller's matrix is untouched


def test_int8_duplicates_give_the_right_library_through_fit(toy):
    dense = np.minimum(toy.X.toarray(), 50).astype(np.int8)
    dense[:, 0] += 1  # no empty cell
    X = sp.csr_matrix(dense)
    # split cell 0's first entry into two stored entries 100 + 100 (200 does not fit in int8)
    data_, indices, indptr = X.data.copy(), X.indices.copy(), X.indptr.copy()
    data_[0] = 100
    data_ = np.insert(data_, 0, np.int8(100))
    indices = np.insert(indices, 0, indices[0])
    indptr[1:] += 1
    toy.X = sp.csr_matrix((data_, indices, indptr), shape=X.shape)
    expected = dense.astype(np.int64)
    expected[0, X.indices[0]] = 200
    data, _ = count_data(toy)
    np.testing.assert_array_equal(data.X.toarray(), expected)
    np.testing.assert_allclose(np.exp(data.log_library), expected.sum(1), rtol=1e-6)
    assert toy.X.dtype == np.int8 and toy.X.nnz == X.nnz + 1  # .X left as it was
    scvae_beta.fit(toy, **FAST)
    assert np.isfinite(toy.uns["scvae_beta"]["elbo"])


def test_summed_duplicates_are_checked_again():
    # 128 int32 entries of 2**24 sum to 2**31: past int32, and past what float32 holds exactly
    n = 128
    X = sp.csr_matrix(
        (np.full(n, 2**24, dtype=np.int32), np.zeros(n, dtype=np.int32), [0, n]), shape=(1, 2)
    )
    with pytest.raises(ValueError, match=r"after summing duplicate.*up to 2\.14748e\+09.*2\*\*24"):
        CountData(X)
    neg = sp.csr_matrix((np.array([-5, 3], dtype=np.int8), [0, 0], [0, 2]), shape=(1, 1))
    with pytest.raises(ValueError, match="after summing duplicate.*1 negative values"):
        CountData(neg)


# 3. duplicate gene names --------------------------------------------------------------------------


def test_duplicate_var_names_are_rejected_with_the_fix(toy):
    names = list(toy.var_names)
    names[5] = names[3]
    toy.var_names = names
    match = r"1 duplicated gene names \(e\.g\. \['gene3'\]\).*adata\.var_names_make_unique\(\)"
    _rejected(toy, match)
    with pytest.raises(ValueError, match=match):
        count_data(toy)
    toy.var_names_make_unique()
    model = scvae_beta.fit(toy, **FAST)
    order = np.random.default_rng(0).permutation(toy.n_vars)
    z = model.get_latent(toy[:, order].copy())  # reordered genes are matched by name
    np.testing.assert_allclose(z, toy.obsm["X_scvae_beta"], atol=1e-5)


# 4. float16 -------------------------------------------------------------------------------------


def test_float16_counts_up_to_2048_are_used_exactly(toy, monkeypatch):
    # scipy.sparse has no float16, so float16 counts are dense; they are converted in chunks
    monkeypatch.setattr("scvae_beta.data.from_anndata._float16_to_csr.__defaults__", (7,))
    ref, _ = count_data(toy)
    X16 = toy.X.toarray().astype(np.float16)
    X16[1, 1] = 2048
    toy.layers["counts"] = X16
    data, _ = count_data(toy, layer="counts")
    expected = ref.X.toarray()
    expected[1, 1] = 2048
    np.testing.assert_array_equal(data.X.toarray(), expected)
    np.testing.assert_allclose(np.exp(data.log_library), expected.sum(1), rtol=1e-6)
    assert toy.layers["counts"].dtype == np.float16  # the layer is left as it was
    scvae_beta.fit(toy, layer="counts", **FAST)
    assert np.isfinite(toy.uns["scvae_beta"]["elbo"])


def test_float16_counts_above_2048_are_rejected_with_the_fix(toy):
    X = toy.X.toarray().astype(np.float16)
    X[3, 4] = 4096  # exactly representable, but neighbours of it are not
    toy.layers["counts"] = X
    _rejected(
        toy,
        r"float16, which holds integers exactly only up to 2048.*largest value is 4096.*"
        r"adata\.layers\['counts'\] = adata\.layers\['counts'\]\.astype\(np\.float32\)",
        layer="counts",
    )
    assert toy.layers["counts"].dtype == np.float16  # not cast behind the user's back


# 5. counts float32 cannot hold ------------------------------------------------------------------


def test_counts_beyond_float32_are_rejected_up_front(toy):
    X = toy.X.toarray().astype(np.int64)
    toy.X = X.astype(np.float64)
    toy.X[0, 0] = 1e39
    _rejected(toy, r"up to 1e\+39, above float32's largest value.*pass the raw per-cell UMI")
    X[0, 0] = 2**24 + 1
    toy.X = sp.csr_matrix(X)
    _rejected(toy, r"up to 1\.67772e\+07, above 2\*\*24 = 16777216")
    X[0, 0] = 2**24  # the largest exact count is accepted
    check_counts(X)


@pytest.mark.parametrize("sparse", [False, True])
def test_range_checks_see_every_chunk(monkeypatch, sparse):
    monkeypatch.setattr(checks_module, "_CHUNK", 7)
    if not sparse:  # scipy.sparse has no float16
        X = np.ones((50, 9), dtype=np.float16)
        X[-1, -1] = 3000
        with pytest.raises(ValueError, match="largest value is 3000"):
            check_counts(X)
    Y = np.ones((50, 9), dtype=np.float64)
    Y[-1, -1] = 2.0**25
    with pytest.raises(ValueError, match="above 2\\*\\*24"):
        check_counts(sp.csr_matrix(Y) if sparse else Y)


def test_checks_on_dense_float_read_in_chunks(monkeypatch):
    monkeypatch.setattr(checks_module, "_CHUNK", 2**14)
    X = np.random.default_rng(0).poisson(2.0, (2000, 500)).astype(np.float64)  # 8 MB
    tracemalloc.start()
    try:
        check_counts(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 8


# 6. a float column as batch key -----------------------------------------------------------------


def test_float_batch_column_warns(toy):
    toy.obs["size_factor"] = np.random.default_rng(0).lognormal(size=toy.n_obs)
    with pytest.warns(UserWarning, match=r"'size_factor'\] is a float column with 240 distinct"):
        data, cats = count_data(toy, batch_key="size_factor")
    assert len(cats) == 240
    toy.obs["batch"] = np.arange(toy.n_obs) % 2 * 1.0  # float, but two labels: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, cats = count_data(toy, batch_key="batch")
    assert cats == ["0.0", "1.0"]
