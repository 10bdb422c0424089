"""The factor simulator: structure, determinism, the generative story, factor codes, errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

import scvae_beta
from scvae_beta.datasets import obs_factor_codes, simulate

N, G, GPF = 1500, 300, 20


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return simulate(N, G, genes_per_factor=GPF, seed=3)


@pytest.fixture(scope="module")
def sim_batch() -> ad.AnnData:
    return simulate(N, G, genes_per_factor=GPF, n_batches=3, batch_effect=0.8, seed=4)


def _normalised(adata: ad.AnnData) -> np.ndarray:
    X = adata.X.toarray().astype(float)
    return X / X.sum(axis=1, keepdims=True)


def _expected_mean(adata: ad.AnnData) -> np.ndarray:
    """mu (cells x genes) recomputed from obs/var/varm by the documented generative story."""
    obs, var = adata.obs, adata.var
    logit = np.tile(var["baseline"].to_numpy(), (adata.n_obs, 1))
    eff = var["effect"].to_numpy()
    for j, label in enumerate(var["program"].astype(str)):
        if label.startswith("cell_type:"):
            logit[:, j] += eff[j] * (obs["cell_type"].astype(str) == label.split(":")[1])
        elif label == "differentiation:early":
            logit[:, j] += -eff[j] * (1 - obs["differentiation"].to_numpy())
        elif label.startswith("cell_cycle:"):
            peak = var["peak_phase"].iloc[j]
            logit[:, j] += eff[j] * (1 + np.cos(obs["phase"].to_numpy() - peak)) / 2
        elif label != "background":
            logit[:, j] += eff[j] * obs[label.split(":")[0]].to_numpy()
    if "batch_lfc" in adata.varm:
        logit += adata.varm["batch_lfc"].T[obs["batch"].cat.codes.to_numpy()]
    p = np.exp(logit - logit.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p * obs["library_size_expected"].to_numpy()[:, None]


def test_structure(sim_batch):
    a = sim_batch
    assert a.shape == (N, G) and sp.isspmatrix_csr(a.X) and a.X.dtype == np.int32
    assert list(a.obs) == [
        "cell_type",
        "differentiation",
        "interferon",
        "phase",
        "cycle_stage",
        "batch",
        "library_size",
        "library_size_expected",
    ]
    assert list(a.obs["cell_type"].cat.categories) == ["type0", "type1", "type2", "type3"]
    assert list(a.obs["batch"].cat.categories) == ["batch0", "batch1", "batch2"]
    assert list(a.obs["cycle_stage"].cat.categories) == ["G1", "S", "G2M"]
    stage = np.floor(a.obs["phase"] / (2 * np.pi / 3)).astype(int)
    np.testing.assert_array_equal(a.obs["cycle_stage"].cat.codes, stage)
    assert a.obs["phase"].between(0, 2 * np.pi, inclusive="left").all()
    for p in ("differentiation", "interferon"):
        assert a.obs[p].dtype == np.float64 and a.obs[p].between(0, 1).all()
    counts = a.var["program"].astype(str).value_counts()
    for k in range(4):
        assert counts[f"cell_type:type{k}"] == GPF
    assert counts["differentiation:late"] == counts["differentiation:early"] == GPF // 2
    assert counts["interferon"] == GPF and counts["cell_cycle:S"] == GPF // 2
    assert counts["background"] == G - 7 * GPF
    bg = a.var["factor"] == "background"
    assert (a.var.loc[bg, "effect"] == 0).all() and (a.var.loc[~bg, "effect"].abs() == 1.5).all()
    assert np.isnan(a.var["peak_phase"]).sum() == G - GPF
    assert set(a.var["factor"]) == {
        "background",
        "cell_type",
        "differentiation",
        "interferon",
        "phase",
    }
    assert a.varm["batch_lfc"].shape == (G, 3)
    u = a.uns["simulation"]
    assert list(u["factors"]) == ["cell_type", "differentiation", "interferon", "phase", "batch"]
    assert list(u["cyclic_factors"]) == ["phase"]
    assert u["n_batches"] == 3 and u["seed"] == 4 and u["effect_size"] == 1.5
    assert u["program_beta_shapes"].tolist() == [[1.0, 1.0], [1.0, 3.0]]


def test_options_switch_factors_off():
    a = simulate(50, 10, n_cell_types=0, programs=(), cell_cycle=False, genes_per_factor=5)
    assert list(a.obs) == ["library_size", "library_size_expected"]
    assert (a.var["factor"] == "background").all() and "batch_lfc" not in a.varm
    b = simulate(80, 30, n_cell_types=2, programs=("myprog",), genes_per_factor=5, seed=1)
    assert list(b.uns["simulation"]["factors"]) == ["cell_type", "myprog", "phase"]
    assert (b.var["program"] == "myprog").sum() == 5
    assert b.uns["simulation"]["program_beta_shapes"].tolist() == [[1.0, 1.0]]


def test_determinism():
    kwargs = dict(genes_per_factor=5, n_batches=2)
    a, b = simulate(200, 80, **kwargs), simulate(200, 80, **kwargs)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    c = simulate(200, 80, **kwargs, seed=1)
    assert (a.X != c.X).nnz > 0 and not np.allclose(a.obs["phase"], c.obs["phase"])


def test_counts_are_integer_nonzero_and_match_library(sim):
    X = sim.X
    assert X.data.min() >= 0 and np.all(X.data == np.round(X.data))
    totals = np.asarray(X.sum(axis=1)).ravel()
    assert totals.min() >= 1
    np.testing.assert_array_equal(totals, sim.obs["library_size"])


def test_no_zero_cells_even_with_tiny_libraries():
    # mean total 0.01: most cells exhaust the redraws, then get exactly one count
    a = simulate(
        400,
        20,
        n_cell_types=0,
        programs=(),
        cell_cycle=False,
        library_size=0.01,
        library_sdlog=0.0,
        seed=2,
    )
    totals = np.asarray(a.X.sum(axis=1)).ravel()
    assert totals.min() == 1 and np.mean(totals == 1) > 0.9


def test_means_and_dispersion_follow_generative_story(sim_batch):
    """Gene totals within factor bins agree with mu rebuilt from obs/var (NB z-scores)."""
    X = sim_batch.X.toarray().astype(float)
    mu = _expected_mean(sim_batch)
    theta = sim_batch.var["dispersion"].to_numpy()
    var = mu + mu**2 / theta
    codes, _ = obs_factor_codes(sim_batch, n_bins=4)
    groups = [codes[:, j] == b for j in range(codes.shape[1]) for b in range(3)]
    groups.append(np.ones(N, bool))
    z = np.array([(X[g].sum(0) - mu[g].sum(0)) / np.sqrt(var[g].sum(0)) for g in groups])
    assert np.abs(z).max() < 5 and np.abs(z.mean(1)).max() < 0.3
    # moment estimate of theta on well-expressed genes: sum mu^2 / sum((x - mu)^2 - mu)
    keep = mu.mean(0) > 2
    theta_hat = (mu**2).sum(0)[keep] / ((X - mu) ** 2 - mu).sum(0)[keep]
    assert 0.85 < np.median(theta_hat / theta[keep]) < 1.15


def test_poisson_when_dispersion_infinite():
    a = simulate(
        3000,
        40,
        n_cell_types=2,
        programs=(),
        cell_cycle=False,
        genes_per_factor=5,
        dispersion=np.inf,
        library_sdlog=0.0,
        library_size=200.0,
    )
    X, mu = a.X.toarray().astype(float), _expected_mean(a)
    ratio = ((X - mu) ** 2).sum(0) / mu.sum(0)  # variance / mean, ~1 for Poisson
    assert np.all(np.abs(ratio - 1) < 0.15)


def test_programs_drive_their_genes(sim):
    obs, prog, E = sim.obs, sim.var["program"].astype(str).to_numpy(), _normalised(sim)

    def rho(label, factor_values):
        return spearmanr(E[:, prog == label].sum(1), factor_values)[0]

    assert rho("differentiation:late", obs["differentiation"]) > 0.5
    assert rho("differentiation:early", obs["differentiation"]) < -0.5
    assert rho("interferon", obs["interferon"]) > 0.5
    assert rho("cell_cycle:S", np.cos(obs["phase"] - np.pi)) > 0.5
    assert rho("cell_cycle:G2M", np.cos(obs["phase"] - 5 * np.pi / 3)) > 0.5
    types = obs["cell_type"].astype(str).to_numpy()
    for k in range(4):
        marker = E[:, prog == f"cell_type:type{k}"].sum(1)
        means = [marker[types == f"type{m}"].mean() for m in range(4)]
        assert np.argmax(means) == k and means[k] > 2 * sorted(means)[-2]
        # markers of type k do not follow the programs
        assert abs(spearmanr(marker, obs["differentiation"])[0]) < 0.15


def test_background_genes_do_not_respond(sim):
    """Within the background, proportions are fixed: no factor moves them."""
    bg = (sim.var["factor"] == "background").to_numpy()
    X = sim.X.toarray()[:, bg].astype(float)
    keep = X.sum(0) > 0.5 * N
    E = X[:, keep] / X.sum(1, keepdims=True).clip(1)
    obs = sim.obs
    factors = [obs["differentiation"], obs["interferon"], np.cos(obs["phase"])]
    factors += [np.sin(obs["phase"])] + [obs["cell_type"] == f"type{k}" for k in range(4)]
    rhos = np.array([[spearmanr(E[:, j], f)[0] for j in range(E.shape[1])] for f in factors])
    assert keep.sum() > 40
    assert np.abs(rhos).max() < 5 / np.sqrt(N) and np.abs(rhos.mean(1)).max() < 0.05


def test_factors_and_library_are_independent(sim_batch):
    obs = sim_batch.obs
    cols = [
        obs["differentiation"],
        obs["interferon"],
        np.cos(obs["phase"]),
        np.sin(obs["phase"]),
        np.log(obs["library_size_expected"]),
    ]
    cols += [obs["cell_type"] == f"type{k}" for k in range(4)]
    cols += [obs["batch"] == f"batch{b}" for b in range(3)]
    C = np.corrcoef(np.array(cols, dtype=float))
    for i in range(len(cols)):
        for j in range(len(cols)):
            same_onehot = (i >= 5 and j >= 5) and ((i < 9) == (j < 9))
            if i != j and not same_onehot:
                assert abs(C[i, j]) < 4.5 / np.sqrt(N), (i, j, C[i, j])


@pytest.mark.parametrize("sdlog", [0.2, 0.6])
def test_library_size_spread(sdlog):
    a = simulate(
        4000,
        60,
        n_cell_types=2,
        programs=("stress",),
        genes_per_factor=10,
        library_size=5000.0,
        library_sdlog=sdlog,
        seed=5,
    )
    log_expected = np.log(a.obs["library_size_expected"])
    se = sdlog / np.sqrt(2 * 4000)
    assert abs(log_expected.std() - sdlog) < 4 * se
    assert abs(log_expected.mean() - np.log(5000.0)) < 4 * sdlog / np.sqrt(4000)
    assert abs(np.log(a.obs["library_size"]).std() - sdlog) < 0.05  # NB noise adds little
    same = simulate(20, 60, n_cell_types=0, programs=(), library_sdlog=0.0, library_size=300.0)
    np.testing.assert_allclose(same.obs["library_size_expected"], 300.0)


def test_batch_effect_only_with_batches(sim, sim_batch):
    assert "batch" not in sim.obs and "batch_lfc" not in sim.varm
    a = sim_batch
    E = _normalised(a)
    codes = a.obs["batch"].cat.codes.to_numpy()
    lfc = a.varm["batch_lfc"]
    keep = E.mean(0) > 1e-3
    observed = np.log(E[codes == 1].mean(0) / E[codes == 0].mean(0))[keep]
    assert spearmanr(observed, (lfc[:, 1] - lfc[:, 0])[keep])[0] > 0.8
    # the same contrast over a random split of a batch-free simulation carries nothing
    E0 = _normalised(sim)
    half = np.arange(N) % 2 == 0
    null = np.log(E0[half].mean(0) / E0[~half].mean(0))[keep]
    assert abs(spearmanr(null, (lfc[:, 1] - lfc[:, 0])[keep])[0]) < 0.2


def test_h5ad_round_trip(sim_batch, tmp_path):
    bare = simulate(30, 10, n_cell_types=0, programs=(), cell_cycle=False, dispersion=np.inf)
    for a, name in [(sim_batch, "full.h5ad"), (bare, "bare.h5ad")]:
        a.write_h5ad(tmp_path / name)
        b = ad.read_h5ad(tmp_path / name)
        assert (a.X != b.X).nnz == 0 and b.X.dtype == np.int32
        assert a.obs.equals(b.obs) and a.var.equals(b.var)
        for key, value in a.uns["simulation"].items():
            np.testing.assert_array_equal(np.asarray(b.uns["simulation"][key]), np.asarray(value))
        codes_a, names_a = (
            obs_factor_codes(a, ["library_size"]) if a is bare else obs_factor_codes(a)
        )
        codes_b, names_b = (
            obs_factor_codes(b, ["library_size"]) if a is bare else obs_factor_codes(b)
        )
        np.testing.assert_array_equal(codes_a, codes_b)
        assert names_a == names_b
        assert set(b.varm) == set(a.varm)
        for key in a.varm:
            np.testing.assert_array_equal(b.varm[key], a.varm[key])


def test_factor_codes(sim_batch):
    a = sim_batch
    codes, names = obs_factor_codes(a, n_bins=6)
    assert names == ["cell_type", "differentiation", "interferon", "phase", "batch"]
    assert codes.shape == (N, 5) and codes.dtype == np.int64
    np.testing.assert_array_equal(codes[:, 0], a.obs["cell_type"].cat.codes)
    np.testing.assert_array_equal(codes[:, 4], a.obs["batch"].cat.codes)
    for j in (1, 2):  # equal-count quantile bins, monotone in the factor
        assert np.bincount(codes[:, j]).tolist() == [N // 6] * 6
        x = a.obs[names[j]].to_numpy()
        order = np.argsort(x)
        assert np.all(np.diff(codes[order, j]) >= 0)
    np.testing.assert_array_equal(codes[:, 3], np.floor(a.obs["phase"] / (2 * np.pi / 6)))
    # cyclic keys are angles mod 2 pi; explicit keys; small integer columns used as codes
    b = a.copy()
    b.obs["shifted"] = b.obs["phase"] + 2 * np.pi
    b.obs["small_int"] = (np.arange(N) % 3) * 10
    b.obs["label"] = np.where(np.arange(N) % 2, "x", "y")
    c, n = obs_factor_codes(b, ["shifted", "small_int", "label"], n_bins=6, cyclic=["shifted"])
    assert n == ["shifted", "small_int", "label"]
    np.testing.assert_array_equal(c[:, 0], codes[:, 3])
    np.testing.assert_array_equal(c[:, 1], np.arange(N) % 3)
    np.testing.assert_array_equal(c[:, 2], 1 - np.arange(N) % 2)
    tied = obs_factor_codes(b, ["small_int"], n_bins=2)[0][:, 0]  # 3 levels > 2 bins: ranks, ties
    assert all(np.unique(tied[b.obs["small_int"] == v]).size == 1 for v in (0, 10, 20))


def test_factor_codes_one_hot(sim_batch):
    a = sim_batch
    codes, names = obs_factor_codes(a, n_bins=6)
    hot, hot_names = obs_factor_codes(a, n_bins=6, one_hot=["cell_type", "batch"])
    types = list(a.obs["cell_type"].cat.categories)
    batches = list(a.obs["batch"].cat.categories)
    assert hot_names == [f"cell_type={t}" for t in types] + names[1:4] + [
        f"batch={b}" for b in batches
    ]
    assert hot.dtype == np.int64 and hot.shape == (N, len(types) + 3 + len(batches))
    for i, t in enumerate(types):  # indicator i is 1 exactly on the cells of type i
        np.testing.assert_array_equal(hot[:, i], (a.obs["cell_type"] == t).to_numpy())
    ind = [i for i, name in enumerate(hot_names) if "=" in name]
    np.testing.assert_array_equal(hot[:, ind].sum(1), 2)  # one type and one batch per cell
    np.testing.assert_array_equal(hot[:, len(types) : len(types) + 3], codes[:, 1:4])
    # a string key (one_hot given as a single str), a boolean and a small-integer column
    b = a.copy()
    b.obs["label"] = np.where(np.arange(N) % 3 == 0, "x", "y")
    b.obs["flag"] = np.arange(N) % 2 == 0
    b.obs["small_int"] = (np.arange(N) % 3) * 10
    c, n = obs_factor_codes(b, ["label", "flag", "small_int"], one_hot="label")
    assert n == ["label=x", "label=y", "flag", "small_int"]
    np.testing.assert_array_equal(c[:, 0], np.arange(N) % 3 == 0)
    c, n = obs_factor_codes(b, ["flag", "small_int"], one_hot=["flag", "small_int"])
    assert n == ["flag=False", "flag=True", "small_int=0", "small_int=10", "small_int=20"]
    np.testing.assert_array_equal(c[:, 2:].argmax(1), np.arange(N) % 3)
    # unused categories give no constant indicator
    b.obs["cell_type"] = b.obs["cell_type"].cat.add_categories(["unused"])
    assert obs_factor_codes(b, ["cell_type"], one_hot=["cell_type"])[0].shape[1] == len(types)


def test_factor_codes_errors(sim):
    with pytest.raises(ValueError, match="n_bins must be an integer >= 2"):
        obs_factor_codes(sim, n_bins=1)
    with pytest.raises(ValueError, match=r"\['nope'\] not in adata.obs"):
        obs_factor_codes(sim, ["nope"])
    with pytest.raises(ValueError, match=r"one_hot keys \['batch'\] are not among"):
        obs_factor_codes(sim, ["cell_type"], one_hot=["batch"])
    for key in ("interferon", "phase"):
        with pytest.raises(ValueError, match=rf"one_hot keys \['{key}'\] are continuous or cyclic"):
            obs_factor_codes(sim, one_hot=[key])
    plain = ad.AnnData(sim.X, obs=sim.obs.copy())
    with pytest.raises(ValueError, match="pass factor_keys"):
        obs_factor_codes(plain)
    plain.obs.loc[plain.obs_names[0], "interferon"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        obs_factor_codes(plain, ["interferon"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_genes=100), r"280 genes are needed; pass n_genes >= 280"),
        (dict(n_cell_types=1), "n_cell_types must be 0"),
        (dict(n_batches=-1), "n_batches must be 0"),
        (dict(n_cells=0), "n_cells must be a positive integer"),
        (dict(genes_per_factor=1.5), "genes_per_factor must be a positive integer"),
        (dict(programs="interferon"), r"pass programs=\('interferon',\)"),
        (dict(programs=("a", "a")), "unique"),
        (dict(programs=("batch",)), "not allowed"),
        (dict(genes_per_factor=1, programs=()), "genes_per_factor >= 2"),
        (dict(effect_size=-1.0), "effect_size must be >= 0"),
        (dict(library_size=0.0), "library_size must be > 0"),
        (dict(library_sdlog=np.nan), "library_sdlog must be finite"),
        (dict(dispersion=0.0), "dispersion must be > 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate(**{"n_cells": 10, **kwargs})


def test_fit_accepts_simulation():
    a = simulate(200, 60, genes_per_factor=6, n_batches=2, seed=7)
    model = scvae_beta.fit(
        a, max_epochs=3, n_hidden=16, batch_size=64, progress=False, batch_key="batch"
    )
    assert model is not None and a.obsm["X_scvae_beta"].shape == (200, 10)
    assert np.isfinite(a.obsm["X_scvae_beta"]).all()
