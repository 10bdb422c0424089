"""Bad input gets a clear error naming the fix, and the AnnData is left unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp

import scvae_beta
from tests.conftest import FAST, simulate_counts


def _snapshot(adata):
    X = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X)
    return (
        X,
        set(adata.obsm),
        copy.deepcopy(dict(adata.uns)),
        set(adata.layers),
        list(adata.obs.columns),
    )


def _assert_unchanged(adata, snap):
    X, obsm, uns, layers, obs = snap
    X_now = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    np.testing.assert_array_equal(X_now, X)
    assert set(adata.obsm) == obsm
    assert set(adata.uns) == set(uns)
    assert set(adata.layers) == layers
    assert list(adata.obs.columns) == obs


def _expect_rejected(adata, match, exc=ValueError, **kwargs):
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        scvae_beta.fit(adata, **{**FAST, **kwargs})
    _assert_unchanged(adata, snap)


def test_non_integer_counts_point_to_raw_counts(toy):
    toy.X = toy.X.copy()
    toy.X.data = np.log1p(toy.X.data)
    _expect_rejected(toy, r"non-integer values.*layer='counts'.*adata\.raw")


def test_non_integer_message_lists_layers(toy):
    toy.layers["counts"] = toy.X.copy()
    toy.X = toy.X.copy()
    toy.X.data = toy.X.data / 3.0
    _expect_rejected(toy, r"Available layers: \['counts'\]")


def test_negative_values(toy):
    toy.X = toy.X.toarray()
    toy.X[0, 0] = -2
    _expect_rejected(toy, r"1 negative values \(min -2\)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf(toy, bad):
    toy.X = toy.X.copy()
    toy.X.data[3] = bad
    _expect_rejected(toy, "NaN or infinite")


def test_missing_layer_lists_what_exists(toy):
    toy.layers["raw"] = toy.X.copy()
    _expect_rejected(
        toy,
        r"layer 'counts' not found; available: \['raw'\]; pass layer=None",
        KeyError,
        layer="counts",
    )


def test_missing_batch_key_lists_columns(toy):
    _expect_rejected(
        toy, r"batch_key 'sample' not found.*\['group'\]", KeyError, batch_key="sample"
    )


def test_batch_key_with_missing_values(toy):
    toy.obs["batch"] = ["a"] * (toy.n_obs - 1) + [None]
    _expect_rejected(toy, "1 missing values", batch_key="batch")


def test_zero_count_cells_are_counted_and_fix_named(toy):
    X = toy.X.toarray()
    X[[2, 5, 7]] = 0
    toy.X = X
    _expect_rejected(
        toy, r"3 of 240 cells have zero total counts.*sc\.pp\.filter_cells\(adata, min_counts=1\)"
    )


def test_too_few_cells_for_validation_split():
    small = simulate_counts(n_cells=4)
    _expect_rejected(
        small, r"leaves no validation cell; need at least 5 cells.*validation_fraction=0"
    )


@pytest.mark.parametrize(
    ("n_latent", "exc", "match"),
    [
        (0, ValueError, "n_latent must be an integer >= 1"),
        (-3, ValueError, "n_latent must be an integer >= 1"),
        (2.5, TypeError, r"n_latent must be an integer, got 2\.5"),
    ],
)
def test_bad_n_latent(toy, n_latent, exc, match):
    _expect_rejected(toy, match, exc, n_latent=n_latent)


def test_negative_beta(toy):
    _expect_rejected(toy, r"beta must be >= 0, got -1\.0", beta=-1.0)


def test_bad_option_names_choices(toy):
    _expect_rejected(
        toy,
        r"likelihood='gauss' is not supported; choose one of \['nb', 'zinb', 'poisson'\]",
        likelihood="gauss",
    )
    _expect_rejected(toy, r"kl_schedule='cosine' is not supported", kl_schedule="cosine")
    _expect_rejected(toy, r"model='vqvae' is not supported", model="vqvae")


def test_cuda_requested_without_cuda(toy, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    _expect_rejected(toy, "CUDA is not available", RuntimeError, device="cuda")


def test_gene_batch_dispersion_without_batch_key(toy):
    _expect_rejected(toy, "needs a batch_key", dispersion="gene-batch")


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense", "int_dense", "view"])
def test_accepted_formats_give_the_same_latents(toy, fmt):
    ref = toy.copy()
    scvae_beta.fit(ref, **FAST)
    if fmt == "csc":
        toy.X = sp.csc_matrix(toy.X)
    elif fmt == "dense":
        toy.X = toy.X.toarray()
    elif fmt == "int_dense":
        toy.X = toy.X.toarray().astype(np.int64)
    X_before = toy.X.copy()
    target = toy[:, :] if fmt == "view" else toy
    scvae_beta.fit(target, **FAST)
    np.testing.assert_allclose(target.obsm["X_scvae_beta"], ref.obsm["X_scvae_beta"], atol=1e-5)
    after = toy.X.toarray() if sp.issparse(toy.X) else toy.X
    before = X_before.toarray() if sp.issparse(X_before) else X_before
    np.testing.assert_array_equal(after, before)  # .X never modified
