"""Tools on awkward input: views, non-finite values, the wrong model or cells, float counts.

Each call that is refused must leave the AnnData as it was; a view must be written (as a copy)
without touching its parent.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import ImplicitModificationWarning

import scvae_beta
from scvae_beta import tl
from tests.conftest import FAST, simulate_counts

KEY = "scvae_beta"
X_KEY = "X_" + KEY
SETTINGS = {**FAST, "max_epochs": 2}


@pytest.fixture(scope="module")
def fit6():
    adata = simulate_counts(n_cells=160, n_genes=30)
    model = scvae_beta.fit(adata, n_latent=6, **SETTINGS)
    return adata, model


def state(adata) -> dict:
    """A deep copy of what the tools may write: obsm, the varm keys and uns."""
    return {
        "obsm": {k: np.array(v) for k, v in adata.obsm.items()},
        "varm": sorted(adata.varm),
        "uns": copy.deepcopy(dict(adata.uns)),
    }


def assert_same(a, b, where: str = "uns") -> None:
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in b:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(b, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def assert_unchanged(adata, before: dict) -> None:
    after = state(adata)
    assert after["varm"] == before["varm"]
    assert set(after["obsm"]) == set(before["obsm"])
    for k, v in before["obsm"].items():
        np.testing.assert_array_equal(after["obsm"][k], v)
    assert_same(after["uns"], before["uns"])


# ---------------------------------------------------------------------- views


def test_associations_on_a_view_write_the_view_not_its_parent(fit6):
    # the view's statistics used to be written into the parent's uns[key] (an in-place edit
    # of the dict the view shares with it), the view staying a view
    base, _ = fit6
    adata = base.copy()
    before = state(adata)
    keep = (adata.obs["group"] != "g0").to_numpy()
    view = adata[keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = tl.dimension_associations(view, obs_keys=["group"])
    assert_unchanged(adata, before)
    # anndata's copy-on-write: the view became a copy, with anndata's usual warning
    assert any(issubclass(w.category, ImplicitModificationWarning) for w in caught)
    assert not view.is_view and view.n_obs == keep.sum()
    pd.testing.assert_frame_equal(view.uns[KEY]["associations"], table)
    subset = tl.dimension_associations(adata[keep].copy(), obs_keys=["group"])
    pd.testing.assert_frame_equal(table, subset)
    # the copy shares no nested object with the parent
    view.uns[KEY]["params"]["n_latent"] = 99
    assert adata.uns[KEY]["params"]["n_latent"] == 6


def test_tools_update_the_entry_a_caller_holds(fit6):
    # On an AnnData (not a view) the tools update uns[key] in place, so a reference taken
    # before the call sees the results (the demo reads them that way).
    adata, model = fit6
    a = adata.copy()
    entry = a.uns[KEY]
    tl.dimension_associations(a, obs_keys=["log_library"])
    tl.latent_traversal(a, model, dims=[0], n_cells=40)
    assert a.uns[KEY] is entry and {"associations", "top_genes"} <= set(entry)


def test_traversal_on_a_view_leaves_the_parent_unchanged(fit6):
    base, model = fit6
    adata = base.copy()
    before = state(adata)
    view = adata[(adata.obs["group"] != "g0").to_numpy()]
    with pytest.warns(ImplicitModificationWarning):
        tl.latent_traversal(view, model, dims=[0], n_cells=None, n_top_genes=3)
    assert_unchanged(adata, before)
    assert not view.is_view and KEY + "_traversal" in view.varm
    assert list(view.uns[KEY]["top_genes"]) == ["dim_0"]


def test_prune_on_a_view_leaves_the_parent_unchanged(fit6):
    base, model = fit6
    adata = base.copy()
    before = state(adata)
    view = adata[np.ones(adata.n_obs, dtype=bool)]  # every cell, in order: a valid input
    thr = float(np.median(adata.uns[KEY]["kl_per_dim"]))
    with pytest.warns(ImplicitModificationWarning):
        small = tl.prune_dimensions(view, model, active_threshold=thr, epochs=1)
    assert_unchanged(adata, before)
    n_kept = small.module.config.n_latent
    assert n_kept < 6 and view.obsm[X_KEY].shape == (adata.n_obs, n_kept)
    assert view.uns[KEY]["params"]["n_latent"] == n_kept and "pruning" in view.uns[KEY]


# ---------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_associations_refuse_non_finite_latents(fit6, bad):
    # NaN failed inside np.bincount ("'list' argument must have no negative elements")
    base, _ = fit6
    adata = base.copy()
    z = adata.obsm[X_KEY].copy()
    z[3, 1] = bad
    adata.obsm[X_KEY] = z
    before = state(adata)
    msg = r"adata.obsm\['X_scvae_beta'\] has 1 cell\(s\) with NaN or infinite values"
    with pytest.raises(ValueError, match=msg + r" \(first: 'cell3'\); refit, or leave"):
        tl.dimension_associations(adata, obs_keys=["group"])
    assert_unchanged(adata, before)


def test_associations_refuse_infinite_obs_values_and_take_nan_as_missing(fit6):
    # inf gave NaN correlations for every dimension, with only numpy's RuntimeWarning
    base, _ = fit6
    adata = base.copy()
    time = np.random.default_rng(0).uniform(0, 1, adata.n_obs)
    time[[4, 9]] = [np.inf, -np.inf]
    adata.obs["time"] = time
    before = state(adata)
    fix = r"replace them with NaN to leave those cells out"
    with pytest.raises(ValueError, match=r"adata.obs\['time'\] has 2 infinite value\(s\)"):
        tl.dimension_associations(adata, obs_keys=["time"])
    with pytest.raises(ValueError, match=fix + r".*or pass obs_keys=\[...\] without it"):
        tl.dimension_associations(adata)  # picked by default: says how to leave it out
    assert_unchanged(adata, before)
    # the suggested fix: those cells are left out of the column's statistics
    adata.obs["time"] = adata.obs["time"].replace([np.inf, -np.inf], np.nan)
    table = tl.dimension_associations(adata, obs_keys=["time"])
    ok = np.isfinite(time)
    z = adata.obsm[X_KEY].astype(np.float64)[ok]
    for d in range(6):
        row = table[(table["dim"] == d) & (table["statistic"] == "pearson")]
        r = np.corrcoef(z[:, d], time[ok])[0, 1]
        assert float(row["value"].iloc[0]) == pytest.approx(r, abs=1e-9)


# ---------------------------------------------------------------------- prune: model and cells


def test_prune_refuses_a_model_with_another_n_latent(fit6):
    # a 4-dim model was accepted for a 6-dim fit and overwrote its obsm/uns
    base, _ = fit6
    m4 = scvae_beta.fit(simulate_counts(n_cells=160, n_genes=30), n_latent=4, **SETTINGS)
    adata = base.copy()
    before = state(adata)
    msg = (
        r"the model has 4 latent dims but adata.uns\['scvae_beta'\] comes from a fit with 6; "
        r"pass the model that fit key_added='scvae_beta'"
    )
    with pytest.raises(ValueError, match=msg):
        tl.prune_dimensions(adata, m4, epochs=1)
    with pytest.raises(ValueError, match=msg):  # the same check, worded the same
        tl.latent_traversal(adata, m4, dims=[0])
    assert_unchanged(adata, before)


def test_prune_refuses_other_cells_and_another_model(fit6):
    # cells of the same number (so the same validation positions) were taken for the fit's
    base, model = fit6
    other = simulate_counts(n_cells=160, n_genes=30, seed=7)
    other.uns[KEY] = copy.deepcopy(base.uns[KEY])
    other.obsm[X_KEY] = base.obsm[X_KEY].copy()
    shuffled = base.copy()  # the counts reordered, the latents not
    shuffled.X = shuffled.X[np.random.default_rng(0).permutation(base.n_obs)]
    fresh = simulate_counts(n_cells=160, n_genes=30)  # the same cells, not yet fit
    different = scvae_beta.fit(fresh, n_latent=6, **{**SETTINGS, "n_hidden": 24})
    cases = [(other, model), (shuffled, model), (base.copy(), different)]
    for adata, m in cases:
        before = state(adata)
        with pytest.raises(ValueError, match=r"adata holds other cells \(or other counts\)"):
            tl.prune_dimensions(adata, m, epochs=1)
        assert_unchanged(adata, before)
    fewer = base[:100].copy()
    with pytest.raises(ValueError, match="split differs: adata has 100 cells, the fit had 160"):
        tl.prune_dimensions(fewer, model, epochs=1)


def test_prune_refuses_the_fits_cells_in_another_order(fit6):
    # adata[perm] moves obsm along, so the posterior means agree; only the cell names tell.
    base, model = fit6
    assert base.uns[KEY]["cells_digest"] == scvae_beta._utils.cells_digest(base.obs_names)
    perm = np.random.default_rng(1).permutation(base.n_obs)
    moved = base[perm].copy()
    before = state(moved)
    with pytest.raises(ValueError, match=r"cells \(obs_names, in order\) are not those"):
        tl.prune_dimensions(moved, model, epochs=1)
    assert_unchanged(moved, before)
    renamed = base.copy()
    renamed.obs_names = [f"x{i}" for i in range(base.n_obs)]
    with pytest.raises(ValueError, match="in the same order"):
        tl.prune_dimensions(renamed, model, epochs=1)
    old = base.copy()  # a fit of an earlier version, without the digest: not checked
    del old.uns[KEY]["cells_digest"]
    assert tl.prune_dimensions(old, model, epochs=1).module.config.n_latent <= 6


# ---------------------------------------------------------------------- prune: threshold


def test_prune_records_the_threshold_it_used(fit6):
    # params["active_threshold"] kept the fit's 0.05 while active_dims used the new threshold
    base, model = fit6
    adata = base.copy()
    thr = float(np.sort(adata.uns[KEY]["kl_per_dim"])[2])
    assert thr != model.settings.active_threshold
    small = tl.prune_dimensions(adata, model, active_threshold=thr, epochs=1)
    u = adata.uns[KEY]
    assert u["params"]["active_threshold"] == thr == u["pruning"]["active_threshold"]
    assert small.settings.active_threshold == thr and small.params["active_threshold"] == thr
    kl = np.asarray(u["kl_per_dim"])
    np.testing.assert_array_equal(u["active_dims"], np.flatnonzero(kl > thr))
    assert model.settings.active_threshold == 0.05  # the given model is left alone
    default = base.copy()
    tl.prune_dimensions(default, model, epochs=1)
    assert default.uns[KEY]["params"]["active_threshold"] == 0.05


# ---------------------------------------------------------------------- integer arguments


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_cells", 50.0),
        ("n_cells", np.float64(20.0)),
        ("n_steps", 5.0),
        ("n_top_genes", 3.0),
        ("seed", 1.0),
        ("batch_size", 64.0),
    ],
)
def test_traversal_says_integer_for_float_counts(fit6, name, value):
    # n_cells=50.0 was refused with "n_cells must be >= 2"
    base, model = fit6
    adata = base.copy()
    before = state(adata)
    with pytest.raises((ValueError, TypeError), match=rf"{name} must be an integer") as err:
        tl.latent_traversal(adata, model, dims=[0], **{name: value})
    assert f"pass {int(value)}" in str(err.value)
    assert_unchanged(adata, before)
