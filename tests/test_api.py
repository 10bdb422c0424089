"""fit(): outputs, history, annealing, early stopping, reproducibility, NaN guard, round trips."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scvae_beta
import scvae_beta.likelihoods as lik
from scvae_beta.train import TrainingDivergedError
from tests.conftest import FAST


def test_outputs_written(toy):
    model = scvae_beta.fit(toy, beta=2.0, n_latent=5, **FAST)
    z = toy.obsm["X_scvae_beta"]
    assert z.shape == (240, 5) and z.dtype == np.float32
    u = toy.uns["scvae_beta"]
    assert u["kl_per_dim"].shape == (5,)
    assert np.all(u["kl_per_dim"] >= 0)
    np.testing.assert_array_equal(u["active_dims"], np.flatnonzero(u["kl_per_dim"] > 0.05))
    assert u["n_active"] == len(u["active_dims"])
    assert u["params"]["beta"] == 2.0 and u["params"]["n_latent"] == 5
    assert u["params"]["likelihood"] == "nb" and u["params"]["max_epochs"] == 4
    t = u["training"]
    assert t["n_train"] + t["n_val"] == 240 and t["n_val"] == 24 and t["n_cells"] == 240
    assert set(u["versions"]) >= {"scvae_beta", "torch", "pyro", "anndata"}
    assert u["elbo"] == pytest.approx(-(u["reconstruction"] + u["kl"]))
    assert u["elbo_cells"] == "validation"
    h = u["history"]
    for col in [
        "train_loss",
        "val_loss",
        "train_reconstruction",
        "train_kl",
        "val_reconstruction",
        "val_kl",
        "kl_weight",
        "kl_dim_0",
        "kl_dim_4",
    ]:
        assert col in h.columns
    assert len(h) == 4
    np.testing.assert_allclose(
        h[[f"kl_dim_{d}" for d in range(5)]].sum(1), h["train_kl"], rtol=1e-6
    )
    # the optimised loss weights the KL by the annealed weight, which is at most beta
    assert np.all(h["train_loss"] >= h["train_reconstruction"] - 1e-9)
    assert np.all(h["train_loss"] <= (h["train_reconstruction"] + 2.0 * h["train_kl"]) * (1 + 1e-6))
    np.testing.assert_allclose(
        h["val_loss"], h["val_reconstruction"] + 2.0 * h["val_kl"], rtol=1e-9
    )
    # latents are the posterior means of the encoder in eval mode
    np.testing.assert_allclose(model.get_latent(toy), z, atol=1e-6)


def test_kl_per_dim_is_closed_form_mean_over_cells(toy):
    model = scvae_beta.fit(toy, **FAST)
    x = torch.tensor(toy.X.toarray())
    with torch.no_grad():
        loc, scale = model.module.encode(x)
    kl = 0.5 * (loc**2 + scale**2 - torch.log(scale**2) - 1).mean(0)
    np.testing.assert_allclose(toy.uns["scvae_beta"]["kl_per_dim"], kl.numpy(), rtol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "sigmoid", "cyclical", "constant"])
def test_kl_weight_reaches_beta_and_is_logged(toy, schedule):
    scvae_beta.fit(
        toy, beta=3.0, kl_schedule=schedule, early_stopping=False, **{**FAST, "max_epochs": 12}
    )
    h = toy.uns["scvae_beta"]["history"]
    assert h["kl_weight"].iloc[-1] == 3.0
    assert toy.uns["scvae_beta"]["training"]["final_kl_weight"] == 3.0
    if schedule != "constant":
        assert h["kl_weight"].iloc[0] < 3.0
    np.testing.assert_allclose(
        h["train_loss"].iloc[-1], h["train_reconstruction"].iloc[-1] + 3.0 * h["train_kl"].iloc[-1]
    )


def test_overlong_warmup_is_shortened(toy):
    with pytest.warns(UserWarning, match="would not finish"):
        scvae_beta.fit(toy, beta=2.0, kl_warmup=10_000, **FAST)
    assert toy.uns["scvae_beta"]["history"]["kl_weight"].iloc[-1] == 2.0


def test_early_stopping_counts_only_after_kl_settles(toy):
    scvae_beta.fit(
        toy, early_stopping=True, patience=1, kl_warmup=0.5, **{**FAST, "max_epochs": 40}
    )
    t = toy.uns["scvae_beta"]["training"]
    h = toy.uns["scvae_beta"]["history"]
    settle_epoch = int(np.ceil(t["kl_settle_step"] / np.ceil(216 / 64)))
    assert t["epochs_trained"] > settle_epoch  # never stopped during warm-up
    assert t["best_epoch"] is not None and t["best_epoch"] > settle_epoch
    if t["stopped_early"]:
        assert t["epochs_trained"] == t["best_epoch"] + 1
        assert h["val_loss"].iloc[-1] >= h["val_loss"].iloc[t["best_epoch"] - 1]


def test_early_stopping_restores_best_weights(toy):
    model = scvae_beta.fit(toy, patience=3, **{**FAST, "max_epochs": 30})
    t = toy.uns["scvae_beta"]["training"]
    assert t["monitor"] == "val_loss"
    h = toy.uns["scvae_beta"]["history"]
    # the kept weights give (up to the one-sample noise) the best validation loss
    val = toy[toy.uns["scvae_beta"]["validation_indices"]]
    assert -model.get_elbo(val) < h["val_reconstruction"].iloc[0] + h["val_kl"].iloc[0]


def test_no_validation_monitors_training_loss(toy):
    scvae_beta.fit(toy, validation_fraction=0.0, **FAST)
    u = toy.uns["scvae_beta"]
    assert u["training"]["monitor"] == "train_loss"
    assert u["history"]["val_loss"].isna().all()
    assert u["validation_indices"].size == 0
    assert u["elbo_cells"] == "training"


def test_same_seed_identical_latents_different_seed_differs(toy):
    a, b, c = toy.copy(), toy.copy(), toy.copy()
    scvae_beta.fit(a, seed=7, **FAST)
    scvae_beta.fit(b, seed=7, **FAST)
    scvae_beta.fit(c, seed=8, **FAST)
    np.testing.assert_array_equal(a.obsm["X_scvae_beta"], b.obsm["X_scvae_beta"])
    assert not np.allclose(a.obsm["X_scvae_beta"], c.obsm["X_scvae_beta"])
    pd.testing.assert_frame_equal(
        a.uns["scvae_beta"]["history"].drop(columns="seconds"),
        b.uns["scvae_beta"]["history"].drop(columns="seconds"),
    )


def test_global_rng_state_is_left_alone(toy):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    scvae_beta.fit(toy, **FAST)
    torch.testing.assert_close(torch.rand(3), expected)


def test_key_added(toy):
    scvae_beta.fit(toy, key_added="vae2", **FAST)
    assert "X_vae2" in toy.obsm and "vae2" in toy.uns and "scvae_beta" not in toy.uns


def test_nan_guard_names_epoch_and_writes_nothing(toy, monkeypatch):
    calls = {"n": 0}
    real = lik.nb_log_prob_cells

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 5 else out

    monkeypatch.setattr(lik, "nb_log_prob_cells", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"non-finite at epoch 2 .*lower lr"):
        scvae_beta.fit(toy, **FAST)
    assert "X_scvae_beta" not in toy.obsm and "scvae_beta" not in toy.uns


def test_progress_bar_can_be_turned_off(toy, capsys):
    scvae_beta.fit(toy, **FAST)
    captured = capsys.readouterr()
    assert "scvae_beta" not in captured.err and captured.out == ""
    scvae_beta.fit(toy, **{**FAST, "progress": True})
    assert "scvae_beta" in capsys.readouterr().err


@pytest.mark.parametrize("likelihood", ["zinb", "poisson"])
def test_other_likelihoods(toy, likelihood):
    scvae_beta.fit(toy, likelihood=likelihood, **FAST)
    assert np.isfinite(toy.uns["scvae_beta"]["elbo"])
    assert toy.uns["scvae_beta"]["params"]["likelihood"] == likelihood


def test_batch_key_gene_batch_dispersion(toy_batches):
    model = scvae_beta.fit(
        toy_batches, batch_key="batch", dispersion="gene-batch", encode_batch=True, **FAST
    )
    assert model.batch_categories == ["b0", "b1"]
    assert model.module.log_theta.shape == (2, 40)
    assert toy_batches.uns["scvae_beta"]["batch_categories"] == ["b0", "b1"]
    z = model.get_latent(toy_batches)
    np.testing.assert_allclose(z, toy_batches.obsm["X_scvae_beta"], atol=1e-6)
    other = toy_batches[:10].copy()
    other.obs["batch"] = ["b9"] * 10
    with pytest.raises(ValueError, match=r"not trained on: \['b9'\]"):
        model.get_latent(other)


def test_h5ad_round_trip(toy, tmp_path):
    scvae_beta.fit(toy, **FAST)
    path = tmp_path / "fit.h5ad"
    toy.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["X_scvae_beta"], toy.obsm["X_scvae_beta"])
    u, v = toy.uns["scvae_beta"], back.uns["scvae_beta"]
    assert set(u) == set(v)
    np.testing.assert_allclose(v["kl_per_dim"], u["kl_per_dim"])
    pd.testing.assert_frame_equal(
        v["history"], u["history"], check_dtype=False, check_index_type=False
    )
    assert v["params"]["beta"] == u["params"]["beta"]
    assert v["params"]["layer"] is None and v["training"] == u["training"]


def test_save_load_latents_equal(toy, tmp_path):
    model = scvae_beta.fit(toy, **FAST)
    z = model.get_latent(toy)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    loaded = scvae_beta.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.get_latent(toy), z, atol=1e-6)
    assert loaded.params["n_latent"] == model.params["n_latent"]
    pd.testing.assert_frame_equal(
        loaded.history.drop(columns=["val_loss"]),
        model.history.drop(columns=["val_loss"]),
        check_dtype=False,
    )
    np.testing.assert_allclose(
        loaded.get_normalized_expression(toy), model.get_normalized_expression(toy), rtol=1e-5
    )


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no scvae_beta model"):
        scvae_beta.load(tmp_path)


def test_get_latent_on_other_genes_is_a_clear_error(toy):
    model = scvae_beta.fit(toy, **FAST)
    with pytest.raises(ValueError, match=r"genes differ.*2 missing.*adata\[:, model\.var_names\]"):
        model.get_latent(toy[:, 2:].copy())
    # same genes in another order are reordered, not rejected
    perm = np.random.default_rng(0).permutation(toy.n_vars)
    np.testing.assert_allclose(
        model.get_latent(toy[:, perm].copy()), model.get_latent(toy), atol=1e-6
    )


def test_get_latent_sampling(toy):
    model = scvae_beta.fit(toy, **FAST)
    s1 = model.get_latent(toy, give_mean=False, seed=1)
    s2 = model.get_latent(toy, give_mean=False, seed=1)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, model.get_latent(toy))


def test_get_normalized_expression(toy):
    model = scvae_beta.fit(toy, **FAST)
    rho = model.get_normalized_expression(toy)
    assert rho.shape == (240, 40)
    np.testing.assert_allclose(rho.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        model.get_normalized_expression(toy, library_size=1e4), rho * 1e4, rtol=1e-5
    )
    obs = model.get_normalized_expression(toy, library_size="observed")
    np.testing.assert_allclose(obs.sum(1), np.asarray(toy.X.sum(1)).ravel(), rtol=1e-4)


def test_fit_clears_pyro_param_store(toy):
    import pyro

    pyro.get_param_store().setdefault("leftover", torch.zeros(1))
    scvae_beta.fit(toy, **FAST)
    assert "leftover" not in pyro.get_param_store().keys()


def test_fit_logs_what_it_added_the_scanpy_way(toy):
    import io

    import scanpy as sc

    buf = io.StringIO()
    before = sc.settings.logfile, sc.settings.verbosity
    try:
        sc.settings.logfile = buf
        sc.settings.verbosity = 3
        scvae_beta.fit(toy, **FAST)
        out = buf.getvalue()
        assert "fitting beta_vae" in out and "finished" in out
        assert ".obsm['X_scvae_beta']" in out and ".uns['scvae_beta']" in out
        buf.truncate(0)
        buf.seek(0)
        sc.settings.verbosity = 1  # warnings only: nothing is logged
        scvae_beta.fit(toy, key_added="quiet", **FAST)
        assert "finished" not in buf.getvalue()
    finally:
        sc.settings.logfile, sc.settings.verbosity = before
