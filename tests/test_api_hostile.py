"""The promises of fit / FittedModel under hostile input (issue 9): each bug with its test."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import scvae_beta
from scvae_beta.settings import Settings
from tests.conftest import FAST, simulate_counts

DATA = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def fitted():
    adata = simulate_counts(n_cells=150, n_genes=24)
    model = scvae_beta.fit(adata, **FAST)
    return adata, model


def _nothing_written(adata, before):
    assert (set(adata.uns), set(adata.obsm)) == before


# ---------------------------------------------------------------- bug 1: gene order


def test_normalized_expression_follows_the_callers_gene_order(fitted):
    adata, model = fitted
    ref = model.get_normalized_expression(adata, library_size=1e4)
    perm = np.random.default_rng(0).permutation(adata.n_vars)
    shuffled = adata[:, perm].copy()
    out = model.get_normalized_expression(shuffled, library_size=1e4)
    np.testing.assert_allclose(out, ref[:, perm], rtol=1e-5)
    # the latent does not depend on the order either
    np.testing.assert_allclose(model.get_latent(shuffled), model.get_latent(adata), atol=1e-6)


# ---------------------------------------------------------------- bug 2: keys


@pytest.mark.parametrize("key", ["a/b", "nul\x00key", "", 3])
def test_key_added_that_h5ad_cannot_store_is_rejected_up_front(key):
    adata = simulate_counts(n_cells=60, n_genes=10)
    before = set(adata.uns), set(adata.obsm)
    with pytest.raises(ValueError, match="key_added"):
        scvae_beta.fit(adata, key_added=key, **FAST)
    _nothing_written(adata, before)


# ---------------------------------------------------------------- bug 3: atomic save


def test_save_is_atomic_when_writing_fails(fitted, tmp_path, monkeypatch):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    good = (folder / "model.json").read_text(), (folder / "model.pt").read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(folder, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "n")
    # the old model is intact and loadable; no new or temporary folder is left behind
    assert ((folder / "model.json").read_text(), (folder / "model.pt").read_bytes()) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    monkeypatch.undo()
    scvae_beta.load(folder)


def test_save_refuses_a_folder_with_other_files(fitted, tmp_path):
    _, model = fitted
    (tmp_path / "model.pt").write_text("my own file")
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="other files"):
        model.save(tmp_path, overwrite=True)
    assert (tmp_path / "model.pt").read_text() == "my own file"
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.pt").write_text("user weights")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(lone)
    assert (lone / "model.pt").read_text() == "user weights"


# ---------------------------------------------------------------- bug 4: NumPy scalars


@pytest.mark.parametrize("beta", [np.int64(4), np.float32(4.0), np.float64(4.0), 4])
def test_numpy_scalars_are_accepted(beta):
    adata = simulate_counts(n_cells=80, n_genes=10)
    scvae_beta.fit(adata, beta=beta, seed=np.int64(3), n_latent=np.int32(3), **FAST)
    p = adata.uns["scvae_beta"]["params"]
    assert p["beta"] == 4.0 and type(p["beta"]) is float
    assert p["seed"] == 3 and type(p["seed"]) is int and p["n_latent"] == 3


def test_numpy_library_size_is_used(fitted):
    adata, model = fitted
    out = model.get_normalized_expression(adata, library_size=np.float32(1e4))
    np.testing.assert_allclose(out.sum(1), 1e4, rtol=1e-4)
    np.testing.assert_allclose(
        model.get_normalized_expression(adata, library_size=np.int64(100)).sum(1), 100, rtol=1e-4
    )


# ---------------------------------------------------------------- bug 6: atomic write


def test_a_failure_after_training_writes_nothing(monkeypatch):
    import scvae_beta.api as api

    adata = simulate_counts(n_cells=80, n_genes=10)
    before = set(adata.uns), set(adata.obsm)

    def broken():
        raise RuntimeError("versions unavailable")

    monkeypatch.setattr(api, "versions", broken)
    with pytest.raises(RuntimeError, match="versions unavailable"):
        scvae_beta.fit(adata, **FAST)
    _nothing_written(adata, before)


# ---------------------------------------------------------------- bug 9: load validates


def test_load_rejects_a_gene_list_that_does_not_match_the_weights(fitted, tmp_path):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    meta["var_names"] = meta["var_names"][:-1]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.json.*genes"):
        scvae_beta.load(folder)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "missing"])
def test_load_names_a_corrupt_weights_file(fitted, tmp_path, damage):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    pt = folder / "model.pt"
    if damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:200])
    elif damage == "empty":
        pt.write_bytes(b"")
    elif damage == "garbage":
        pt.write_bytes(b"not a torch file at all" * 10)
    else:
        pt.unlink()
    with pytest.raises(ValueError, match=r"corrupt: model\.pt.*Save the model again"):
        scvae_beta.load(folder)


def test_load_names_a_corrupt_json(fitted, tmp_path):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt: model\.json"):
        scvae_beta.load(folder)


@pytest.mark.parametrize("model", ["beta_vae", "factor_vae"])
def test_models_saved_by_release_0_1_0_still_load(model):
    folder = DATA / f"model_v1_{model}"
    assert json.loads((folder / "model.json").read_text())["format_version"] == 1
    loaded = scvae_beta.load(folder, device="cpu")
    adata = simulate_counts(n_cells=120, n_genes=12, n_batches=2)
    expected = np.load(DATA / f"model_v1_{model}_latent.npy")
    np.testing.assert_allclose(loaded.get_latent(adata), expected, atol=1e-6)
    assert loaded.settings.model == model and loaded.settings.batch_key == "batch"
    if model == "factor_vae":
        assert sum(p.numel() for p in loaded.objective.discriminator.parameters()) > 0


# ---------------------------------------------------------------- rough edges


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(beta=float("inf")), ValueError, "beta must be finite"),
        (dict(model="beta_tcvae", gamma=float("inf")), ValueError, "gamma must be finite"),
        (dict(capacity=(0.0, float("inf"))), ValueError, "capacity"),
        (dict(batch_size=64.0), TypeError, "batch_size must be an integer"),
        (dict(max_epochs=2.5), TypeError, "max_epochs must be an integer"),
        (dict(validation_fraction=float("nan")), ValueError, "validation_fraction"),
        (dict(seed=-1), ValueError, "seed must be an integer >= 0"),
        (dict(seed=1.5), TypeError, "seed must be an integer"),
        (dict(device="CPU"), ValueError, "lower case"),
        (dict(active_threshold=float("nan")), ValueError, "active_threshold"),
        (dict(kl_anneal_terms="mi"), TypeError, r"pass e\.g\. kl_anneal_terms=\('mi',\)"),
        (dict(beta="4"), TypeError, "beta must be a number"),
        (dict(n_threads=0), ValueError, "n_threads"),
        (dict(progress="yes"), TypeError, "progress must be True or False"),
    ],
)
def test_bad_settings_fail_up_front_and_write_nothing(kwargs, error, match):
    adata = simulate_counts(n_cells=60, n_genes=10)
    before = set(adata.uns), set(adata.obsm)
    with pytest.raises(error, match=match):
        scvae_beta.fit(adata, **{**FAST, **kwargs})
    _nothing_written(adata, before)


def test_inference_arguments_are_checked(fitted):
    adata, model = fitted
    with pytest.raises(ValueError, match="batch_size"):
        model.get_latent(adata, batch_size=0)
    with pytest.raises(ValueError, match="library_size"):
        model.get_normalized_expression(adata, library_size=-1.0)
    with pytest.raises(ValueError, match="library_size"):
        model.get_normalized_expression(adata, library_size="lots")


def test_refitting_the_same_key_says_it_overwrites():
    adata = simulate_counts(n_cells=60, n_genes=10)
    scvae_beta.fit(adata, **FAST)
    with pytest.warns(UserWarning, match="overwritten"):
        scvae_beta.fit(adata, **FAST)


def test_get_elbo_is_seeded_and_leaves_the_global_rng_alone(fitted):
    adata, model = fitted
    state = torch.get_rng_state()
    a, b = model.get_elbo(adata, seed=1), model.get_elbo(adata, seed=1)
    assert a == b and torch.equal(state, torch.get_rng_state())
    assert model.get_elbo(adata, seed=2) != a


# ---------------------------------------------------------------- settings schema


def test_params_round_trip_through_settings_and_h5ad(tmp_path):
    adata = simulate_counts(n_cells=80, n_genes=10)
    model = scvae_beta.fit(adata, model="beta_tcvae", beta=np.float32(3), capacity=(0, 2), **FAST)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = Settings.from_dict(ad.read_h5ad(path).uns["scvae_beta"]["params"])
    assert back == model.settings and back.resolved
    assert back.kl_schedule == "constant" and back.gamma == 1.0 and back.capacity == (0.0, 2.0)


def test_fit_pins_the_thread_count_and_restores_the_callers():
    adata = simulate_counts(n_cells=60, n_genes=10)
    torch.set_num_threads(1)
    seen = []
    import scvae_beta.train.loop as loop

    original = loop.Progress

    class Spy(original):
        def __init__(self, *a, **k):
            seen.append(torch.get_num_threads())
            super().__init__(*a, **k)

    loop.Progress = Spy
    try:
        scvae_beta.fit(adata, n_threads=2, **FAST)
    finally:
        loop.Progress = original
    assert seen == [2] and torch.get_num_threads() == 1
    assert adata.uns["scvae_beta"]["training"]["n_threads"] == 2


# ---------------------------------------------------------------- fifteenth session's review


def test_a_view_of_backed_data_with_reordered_genes(fitted, tmp_path):
    # anndata makes no view of a backed view: reordering the genes of one used to fail with
    # anndata's "cannot make a view of a view" (traversal takes such a view by default).
    adata, model = fitted
    perm = np.random.default_rng(3).permutation(adata.n_vars)
    adata[:, perm].copy().write_h5ad(tmp_path / "r.h5ad")
    disk = ad.read_h5ad(tmp_path / "r.h5ad", backed="r")
    try:
        view = disk[10:60]
        np.testing.assert_array_equal(model.get_latent(view), model.get_latent(adata[10:60]))
        np.testing.assert_allclose(
            model.get_normalized_expression(view),
            model.get_normalized_expression(adata[10:60])[:, perm],
            rtol=1e-6,
        )
        assert view.is_view and disk.isbacked  # the caller's objects are left as they were
    finally:
        disk.file.close()


def test_decode_latent_takes_reversed_views(fitted):
    adata, model = fitted
    z = model.get_latent(adata)
    np.testing.assert_array_equal(model.decode_latent(z[::-1]), model.decode_latent(z)[::-1])


def test_warnings_point_at_the_callers_line(fitted, monkeypatch):
    # They pointed inside the package (api.py's keyword wrapper, pruning.py), so a user could
    # not see which of their calls raised them.
    from scvae_beta import pruning

    adata, _ = fitted
    a = adata.copy()
    scvae_beta.fit(a, key_added="w", **FAST)
    with pytest.warns(UserWarning, match="already exist and are overwritten") as rec:
        scvae_beta.fit(a, key_added="w", **FAST)
    assert [w.filename for w in rec if "overwritten" in str(w.message)] == [__file__]
    monkeypatch.setattr(pruning, "mean_kl_per_dim", lambda *args: np.zeros(10))
    with pytest.warns(UserWarning, match="no latent dimension has mean KL") as rec:
        scvae_beta.fit(adata.copy(), key_added="p", prune=True, prune_epochs=1, **FAST)
    assert [w.filename for w in rec if "mean KL" in str(w.message)] == [__file__]
