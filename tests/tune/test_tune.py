"""tune_beta: a beta sweep whose numbers equal direct fits and metrics, and its beta rule."""

from __future__ import annotations

import contextlib
import io
import warnings

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import scvae_beta
from scvae_beta import metrics
from scvae_beta.tune import recommend_beta, score_latents, tune_beta

KEYS = ["cell_type", "phase"]
FAST = dict(max_epochs=3, n_hidden=16)
BETAS, SEEDS = (1.0, 4.0), (0, 1)


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return scvae_beta.datasets.simulate(n_cells=300, n_genes=120, genes_per_factor=10, seed=0)


@pytest.fixture(scope="module")
def swept(sim):
    """One sweep (2 betas x 2 seeds, all default metrics, progress on), shared by the tests."""
    adata = sim.copy()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = tune_beta(adata, betas=BETAS, seeds=SEEDS, factor_keys=KEYS, **FAST)
    return adata, table, out.getvalue()


def _direct_fit(sim, beta, seed):
    adata = sim.copy()
    torch.set_num_threads(1)  # Leiden's numba raises torch's thread count; sums depend on it
    scvae_beta.fit(adata, model="beta_tcvae", beta=beta, seed=seed, progress=False, **FAST)
    return adata


def test_table_equals_direct_fits_and_metric_calls(sim, swept):
    _, table, _ = swept
    assert list(zip(table["beta"], table["seed"], strict=True)) == [
        (b, s) for b in BETAS for s in SEEDS
    ]
    fits = {(b, s): _direct_fit(sim, b, s) for b, s in [(1.0, 0), (4.0, 1)]}
    codes = scvae_beta.datasets.obs_factor_codes(sim, KEYS)[0]
    for (b, s), fitted in fits.items():
        row = table[(table["beta"] == b) & (table["seed"] == s)].iloc[0]
        u = fitted.uns["scvae_beta"]
        assert row["rate"] == u["kl"] and row["distortion"] == u["reconstruction"]
        assert row["elbo"] == u["elbo"] and row["n_active"] == u["n_active"]
        for k in ("mi", "tc", "dw_kl"):
            assert row[k] == u["kl_decomposition"][k]
        assert row["epochs"] == u["training"]["epochs_trained"] == 3
        z = fitted.obsm["X_scvae_beta"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dci = metrics.dci(z, codes, n_estimators=20)
            ca = metrics.cluster_agreement(z, sim.obs["cell_type"])
            expected = {
                "mig": metrics.mig(z, codes),
                "modularity": metrics.modularity(z, codes),
                "sap": metrics.sap(z, codes),
                "dci_disentanglement": dci["disentanglement"],
                "dci_completeness": dci["completeness"],
                "dci_informativeness_test": dci["informativeness_test"],
                "latent_matching": metrics.latent_matching_score(z, sim.obs["cell_type"])["score"],
                "ari": ca["ari"],
                "nmi": ca["nmi"],
            }
        for k, v in expected.items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert (table["train_seconds"] > 0).all()
    assert table["seed"].dtype == np.int64 and table["recommended"].dtype == bool


def test_only_uns_key_added_is_written(sim, swept):
    adata, _, _ = swept
    assert set(adata.uns) == set(sim.uns) | {"scvae_beta_tune"}
    assert list(adata.obsm) == list(sim.obsm) and list(adata.layers) == list(sim.layers)
    pd.testing.assert_frame_equal(adata.obs, sim.obs)
    pd.testing.assert_frame_equal(adata.var, sim.var)
    assert (adata.X != sim.X).nnz == 0


def test_recommendation_stored_and_survives_h5ad(swept, tmp_path):
    adata, table, out = swept
    best, rule, reason = recommend_beta(table, metric="mig", max_distortion_increase=0.05)
    assert table.attrs == {
        "recommended_beta": best,
        "rule": rule,
        "reason": reason,
        "metric": "mig",
    }
    assert rule == "metric_within_distortion" and best in BETAS
    assert (table["recommended"] == (table["beta"] == best)).all() and table["recommended"].any()
    adata.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    entry = back.uns["scvae_beta_tune"]
    pd.testing.assert_frame_equal(entry["table"], table, check_dtype=False)
    assert entry["recommended_beta"] == best and entry["reason"] == reason
    assert entry["metric"] == "mig" and entry["rule"] == rule
    assert list(entry["params"]["betas"]) == list(BETAS)
    assert list(entry["params"]["factor_keys"]) == KEYS
    assert entry["params"]["fit_kwargs"] == FAST
    assert entry["params"]["metric_kwargs"]["dci"]["n_estimators"] == 20
    matplotlib.use("Agg")
    _, ax = scvae_beta.pl.rate_distortion(back, metric="mig")  # reads the stored entry
    assert ax.get_legend().get_texts()[0].get_text() == f"recommended β={best:g}"
    # Progress: one line per fit, then the reason.
    lines = out.strip().splitlines()
    assert len(lines) == 5 and lines[-1] == f"recommended {reason}"
    assert all(
        line.startswith("β=") and "distortion" in line and "mig" in line for line in lines[:4]
    )


def test_parallel_equals_serial(sim, swept):
    _, serial, _ = swept
    kw = dict(betas=BETAS, seeds=(0,), factor_keys=KEYS, metrics=("mig",), progress=False)
    table = tune_beta(sim.copy(), n_jobs=2, **kw, **FAST)
    cols = [c for c in table.columns if c not in ("train_seconds", "recommended")]
    expected = serial.loc[serial["seed"] == 0, cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(table[cols], expected, check_exact=True)


def test_without_factors_uses_the_rate_distortion_rule(sim):
    adata = sim.copy()
    table = tune_beta(adata, betas=2, seeds=[0], progress=False, **FAST)
    assert not set(table.columns) & {"mig", "sap", "ari"}
    assert table.attrs["rule"] == "lowest_distortion" and table.attrs["recommended_beta"] == 2.0
    assert adata.uns["scvae_beta_tune"]["metric"] == ""


@pytest.mark.parametrize(
    ("extra", "model"),
    [
        ({"preset": "disentangle"}, "beta_vae"),  # the preset's model (it used to be overridden)
        ({}, "beta_tcvae"),  # tune_beta's own default
        ({"preset": "disentangle", "model": "factor_vae"}, "factor_vae"),  # an explicit model
    ],
)
def test_the_model_follows_the_preset_unless_given(sim, monkeypatch, extra, model):
    calls = []

    def record(adata, **kw):
        calls.append(kw)
        raise RuntimeError("stop after the first fit")

    monkeypatch.setattr("scvae_beta.tune._tune.fit", record)
    with pytest.raises(RuntimeError, match="stop after"):
        tune_beta(sim.copy(), betas=[1], seeds=[0], progress=False, **extra)
    assert calls[0]["model"] == model
    assert calls[0].get("preset") == extra.get("preset")


def test_the_stored_params_name_the_model_used(sim):
    adata = sim.copy()
    tune_beta(adata, betas=[1], seeds=[0], progress=False, preset="disentangle", **FAST)
    assert adata.uns["scvae_beta_tune"]["params"]["model"] == "beta_vae"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(betas=[]), ValueError, "betas is empty"),
        (dict(betas=[1, -2]), ValueError, "number >= 0; got -2"),
        (dict(betas=[1, 1]), ValueError, "repeated"),
        (dict(factor_keys=["cell_type", "stage"]), KeyError, r"\['stage'\].*'phase'"),
        (dict(seeds=[0, 1.5]), ValueError, "integers >= 0; got 1.5"),
        (dict(seeds=["0"]), ValueError, "integers"),
        (dict(model="vae"), ValueError, "choose one of"),
        (dict(metrics=["mig", "bic"]), ValueError, r"unknown metrics \['bic'\]"),
        (dict(metrics=["sap"]), ValueError, "metric='mig' is not computed"),
        (dict(factor_keys=["phase"], metrics=["latent_matching"]), ValueError, "need labels"),
        (dict(metric_kwargs={"dci": {"trees": 5}}), TypeError, "metric_kwargs"),
        (dict(beta=2), ValueError, "sets"),
        (dict(n_latnet=4), TypeError, r"unknown fit settings \['n_latnet'\]"),
        (dict(checkpoint_dir="d"), ValueError, "does not pass .'checkpoint_dir'."),
        (dict(layer="counts"), KeyError, "layer 'counts' not found"),
        (dict(n_jobs=0), ValueError, "n_jobs"),
        (dict(max_distortion_increase=-0.1), ValueError, "max_distortion_increase"),
    ],
)
def test_bad_arguments_fail_before_any_fit(sim, monkeypatch, kwargs, exc, match):
    def no_fit(*a, **k):
        raise AssertionError("fit was called")

    monkeypatch.setattr("scvae_beta.tune._tune.fit", no_fit)
    adata = sim.copy()
    args = dict(betas=[1, 2], factor_keys=["cell_type"], progress=False) | kwargs
    with pytest.raises(exc, match=match):
        tune_beta(adata, **args)
    assert "scvae_beta_tune" not in adata.uns


# ---------------------------------------------------------------------- the rule


def _table(betas, dist, rate=None, metric=None, noise=1.0):
    """Two seeds per beta whose means are ``dist`` / ``rate`` / ``metric`` (+- noise)."""
    rows = []
    for i, b in enumerate(betas):
        for sign in (-1, 1):
            row = {"beta": b, "distortion": dist[i] + sign * noise}
            row["rate"] = 10.0 / (i + 1) if rate is None else rate[i] + sign * 0.1
            if metric is not None:
                row["mig"] = metric[i] + sign * 0.01
            rows.append(row)
    return pd.DataFrame(rows)


def test_rule_best_metric_within_distortion_tolerance():
    t = _table([1, 2, 4, 8], dist=[100, 102, 104, 130], metric=[0.1, 0.3, 0.2, 0.9])
    b, rule, reason = recommend_beta(t, metric="mig", max_distortion_increase=0.05)
    assert (b, rule) == (2.0, "metric_within_distortion")  # 8 has the best MIG but 130 > 105
    assert reason.startswith("β=2: highest mean mig (0.3)") and "5%" in reason
    assert recommend_beta(t, metric="mig", max_distortion_increase=0.0)[0] == 1.0
    assert recommend_beta(t, metric="mig", max_distortion_increase=0.3)[0] == 8.0
    t.loc[t["beta"] == 2, "mig"] = np.nan  # a failed metric is skipped
    assert recommend_beta(t, metric="mig")[0] == 4.0
    t["mig"] = np.nan  # no metric at all: the knee rule
    assert recommend_beta(t, metric="mig")[:2] == (4.0, "knee")


def test_rule_knee_of_rate_distortion_curve():
    betas, rate, dist = [1, 2, 4, 8], [10.0, 5.0, 4.0, 1.0], [100.0, 101.0, 103.0, 150.0]
    b, rule, reason = recommend_beta(_table(betas, dist, rate), metric=None)
    # Independent check: scaled points, perpendicular distance below the chord (0,1)-(1,0).
    x = (np.array(rate) - 1) / 9
    y = (np.array(dist) - 100) / 50
    gap = (1 - x) - y  # chord height minus the point, both axes in [0, 1]
    assert b == betas[int(np.argmax(gap))] == 4 and rule == "knee"
    assert "knee" in reason and "β=8" in reason and "β=1" in reason


def test_rule_fallback_without_a_knee():
    b, rule, _ = recommend_beta(_table([1, 4], [100.0, 120.0]), metric=None)
    assert (b, rule) == (1.0, "lowest_distortion")
    # Distortion rising with rate (noise, not a trade-off): no knee either.
    t = _table([1, 2, 4], dist=[103.0, 101.0, 100.0], rate=[3.0, 2.0, 1.0])
    assert recommend_beta(t, metric=None)[:2] == (4.0, "lowest_distortion")


def test_rule_errors():
    t = _table([1, 2], [1.0, 2.0])
    with pytest.raises(KeyError, match=r"lacks columns \['mig'\]"):
        recommend_beta(t, metric="mig")
    with pytest.raises(ValueError, match="max_distortion_increase"):
        recommend_beta(t, metric=None, max_distortion_increase=-1)


def test_score_latents_matches_metrics_and_turns_failures_into_nan():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 3))
    codes = rng.integers(0, 3, (60, 2))
    out = score_latents(z, codes, None, ("mig", "modularity"), {})
    assert out == {"mig": metrics.mig(z, codes), "modularity": metrics.modularity(z, codes)}
    with pytest.warns(UserWarning, match="metric 'mig' failed"):
        out = score_latents(z, np.zeros((60, 1), dtype=int), None, ("mig",), {})
    assert np.isnan(out["mig"])
