"""Dimension pruning: which dimensions are kept, weights carried over, ELBO before/after,
``fit(prune=True)`` and ``tl.prune_dimensions``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvae_beta
from scvae_beta import tl
from scvae_beta.data import Sampler, count_data
from scvae_beta.pruning import mean_kl_per_dim, prune_and_finetune
from tests.conftest import FAST


@pytest.fixture(scope="module")
def fitted():
    from tests.conftest import simulate_counts

    adata = simulate_counts()
    model = scvae_beta.fit(adata, n_latent=6, decoder="additive", **FAST)
    return adata, model


def test_keeps_exactly_the_dimensions_above_the_threshold(fitted):
    adata, model = fitted
    kl = np.asarray(adata.uns["scvae_beta"]["kl_per_dim"])
    threshold = float(np.median(kl))
    data, _ = count_data(adata)
    s = model.settings
    sampler = Sampler(data.n_cells, s.validation_fraction, s.batch_size, s.seed)
    dev = torch.device("cpu")
    np.testing.assert_allclose(mean_kl_per_dim(model.module, data, dev), kl)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    res = prune_and_finetune(
        model.module, data, sampler, s, dev, active_threshold=threshold, epochs=2
    )
    keep = np.flatnonzero(kl > threshold)
    np.testing.assert_array_equal(res.record["kept_dims"], keep)
    assert res.vae.config.n_latent == keep.size == res.settings.n_latent
    assert res.record["n_latent_before"] == 6 and res.record["epochs"] == 2
    for k in ("elbo_before", "elbo_pruned", "elbo_after"):
        assert np.isfinite(res.record[k])
    # the full model is left as it was
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_keeping_every_dimension_leaves_the_elbo_unchanged(fitted):
    adata, model = fitted
    data, _ = count_data(adata)
    s = model.settings
    sampler = Sampler(data.n_cells, s.validation_fraction, s.batch_size, s.seed)
    res = prune_and_finetune(
        model.module, data, sampler, s, torch.device("cpu"), active_threshold=-1.0, epochs=3
    )
    # nothing dropped: the copy decodes like the original, so the ELBO is unchanged
    assert res.record["elbo_pruned"] == pytest.approx(res.record["elbo_before"], abs=1e-6)
    np.testing.assert_array_equal(res.record["kept_dims"], np.arange(6))


def test_no_active_dimension_keeps_the_strongest_with_a_warning(fitted):
    adata, model = fitted
    data, _ = count_data(adata)
    s = model.settings
    sampler = Sampler(data.n_cells, s.validation_fraction, s.batch_size, s.seed)
    kl = np.asarray(adata.uns["scvae_beta"]["kl_per_dim"])
    with pytest.warns(UserWarning, match="keeping the strongest"):
        res = prune_and_finetune(
            model.module, data, sampler, s, torch.device("cpu"), active_threshold=1e9, epochs=1
        )
    np.testing.assert_array_equal(res.record["kept_dims"], [int(np.argmax(kl))])


@pytest.mark.parametrize("decoder", ["mlp", "additive"])
def test_fit_prune_writes_the_smaller_model(toy, tmp_path, decoder):
    import anndata as ad

    m = scvae_beta.fit(
        toy, n_latent=8, decoder=decoder, prune=True, prune_epochs=2, active_threshold=0.02, **FAST
    )
    u = toy.uns["scvae_beta"]
    kept = np.asarray(u["pruning"]["kept_dims"])
    before = np.asarray(u["pruning"]["kl_per_dim_before"])
    expected = np.flatnonzero(before > 0.02) if (before > 0.02).any() else [np.argmax(before)]
    np.testing.assert_array_equal(kept, expected)
    assert toy.obsm["X_scvae_beta"].shape == (240, kept.size) == (240, m.module.config.n_latent)
    assert u["params"]["n_latent"] == kept.size and u["params"]["prune"] is True
    assert len(u["kl_per_dim"]) == kept.size and u["pruning"]["n_latent_before"] == 8
    assert [c for c in u["history"] if c.startswith("kl_dim_")][-1] == "kl_dim_7"
    toy.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["scvae_beta"]["pruning"]
    np.testing.assert_array_equal(back["kept_dims"], kept)
    m.save(tmp_path / "m")
    np.testing.assert_array_equal(
        scvae_beta.load(tmp_path / "m").get_latent(toy), m.get_latent(toy)
    )


def test_tool_prunes_a_fitted_model_and_rewrites_the_entry(toy):
    m = scvae_beta.fit(toy, n_latent=5, **FAST)
    tl.latent_traversal(toy, m, dims=[0], n_cells=30)
    kl = np.asarray(toy.uns["scvae_beta"]["kl_per_dim"])
    thr = float(np.sort(kl)[1])  # drops the two weakest
    small = tl.prune_dimensions(toy, m, active_threshold=thr, epochs=2)
    u = toy.uns["scvae_beta"]
    np.testing.assert_array_equal(u["pruning"]["kept_dims"], np.flatnonzero(kl > thr))
    assert small.module.config.n_latent == 3 == toy.obsm["X_scvae_beta"].shape[1]
    assert "traversal" not in u and "scvae_beta_traversal" not in toy.varm
    assert m.module.config.n_latent == 5  # the given model is left alone
    np.testing.assert_allclose(toy.obsm["X_scvae_beta"], small.get_latent(toy))
    tl.latent_traversal(toy, small, n_cells=30)  # the tools work on the pruned fit


def test_tool_refuses_other_cells(toy):
    m = scvae_beta.fit(toy, n_latent=3, **FAST)
    other = toy[:200].copy()
    other.uns["scvae_beta"] = toy.uns["scvae_beta"]
    with pytest.raises(ValueError, match="validation split differs"):
        tl.prune_dimensions(other, m, epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"active_threshold": float("nan")}, ValueError, "active_threshold must be finite"),
        ({"active_threshold": float("inf")}, ValueError, "active_threshold must be finite"),
        ({"active_threshold": "0.1"}, TypeError, "active_threshold must be a number"),
        ({"active_threshold": True}, TypeError, "active_threshold must be a number"),
        ({"epochs": 1.5}, TypeError, "epochs must be an integer"),
        ({"epochs": "2"}, TypeError, "epochs must be an integer"),
        ({"epochs": True}, TypeError, "epochs must be an integer"),
        ({"epochs": 0}, ValueError, r"epochs must be an integer >= 1"),
    ],
)
def test_tool_checks_its_arguments_like_fit_and_writes_nothing(fitted, kwargs, error, match):
    # fit refuses these values for active_threshold / prune_epochs; the tool used to take NaN
    # or inf as a threshold (keeping one dimension) and 1.5, "2" or True as epochs
    base, model = fitted
    adata = base.copy()
    entry = dict(adata.uns["scvae_beta"])
    latent = adata.obsm["X_scvae_beta"].copy()
    with pytest.raises(error, match=match):
        tl.prune_dimensions(adata, model, **kwargs)
    assert set(adata.uns["scvae_beta"]) == set(entry) and "pruning" not in adata.uns["scvae_beta"]
    np.testing.assert_array_equal(adata.obsm["X_scvae_beta"], latent)
    assert model.module.config.n_latent == 6


def test_tool_takes_numpy_scalars(fitted):
    base, model = fitted
    adata = base.copy()
    kl = np.asarray(adata.uns["scvae_beta"]["kl_per_dim"])
    thr = np.float32(np.sort(kl)[:2].mean())  # drops the weakest
    small = tl.prune_dimensions(adata, model, active_threshold=thr, epochs=np.int64(1))
    np.testing.assert_array_equal(
        adata.uns["scvae_beta"]["pruning"]["kept_dims"], np.flatnonzero(kl > float(thr))
    )
    assert small.module.config.n_latent == 5
    assert adata.uns["scvae_beta"]["pruning"]["epochs"] == 1
