"""Tools: latent traversals (on one tiny fitted model) and dimension associations (hand-made)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import entropy, pearsonr, spearmanr
from sklearn.metrics import mutual_info_score

import scvae_beta
from scvae_beta import tl
from tests.conftest import FAST, simulate_counts

KEY = "scvae_beta"
SETTINGS = {**FAST, "max_epochs": 15, "kl_warmup": 0.1}


@pytest.fixture(scope="module")
def fitted():
    adata = simulate_counts(n_cells=160, n_genes=30)
    model = scvae_beta.fit(adata, n_latent=3, **SETTINGS)
    return adata, model


@pytest.fixture(scope="module")
def fitted_batches():
    adata = simulate_counts(n_cells=120, n_genes=30, n_batches=2, seed=1)
    model = scvae_beta.fit(adata, n_latent=2, batch_key="batch", **SETTINGS)
    return adata, model


def brute_force_means(model, adata, d, steps, labels=None):
    """Mean decoded proportions ``(n_steps, n_genes)``: one decoder call per step, in torch."""
    loc = model.get_latent(adata)
    sd = loc[:, d].astype(np.float64).std()
    module = model.module.eval()
    codes = None
    if labels is not None:
        lookup = {c: i for i, c in enumerate(model.batch_categories)}
        codes = torch.tensor([lookup[s] for s in labels])
    out = []
    with torch.no_grad():
        for t in steps:
            z = torch.from_numpy(loc.copy())
            z[:, d] += float(t * sd)
            rho = module.decode(z, torch.zeros(len(z)), codes).log_mu.exp().double()
            out.append(rho.mean(0).numpy())
    return np.array(out)


# ---------------------------------------------------------------------- FittedModel additions


def test_encode_gives_get_latent_and_the_fit_kl(fitted):
    adata, model = fitted
    loc, scale = model.encode(adata)
    np.testing.assert_array_equal(loc, model.get_latent(adata))
    assert loc.shape == scale.shape == (adata.n_obs, 3) and (scale > 0).all()
    # Closed-form KL(N(m, s^2) || N(0, 1)) per dimension, averaged over cells, is what fit wrote.
    m, s = loc.astype(np.float64), scale.astype(np.float64)
    kl = 0.5 * (s**2 + m**2 - 1.0 - 2.0 * np.log(s))
    np.testing.assert_allclose(kl.mean(0), adata.uns[KEY]["kl_per_dim"], rtol=1e-4, atol=1e-6)


def test_decode_latent_reproduces_normalized_expression(fitted):
    adata, model = fitted
    rho = model.decode_latent(model.get_latent(adata), batch_size=7)
    np.testing.assert_allclose(rho, model.get_normalized_expression(adata), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rho.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        model.decode_latent(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="batch=None"):
        model.decode_latent(np.zeros((4, 3)), batch="b0")
    # non-finite codes used to come back as rows of NaN proportions, without a word
    z = np.zeros((4, 3))
    z[2, 1] = np.nan
    z[3, 0] = -np.inf
    msg = r"2 row\(s\) with NaN or infinite values \(first: row 2\)"
    with pytest.raises(ValueError, match=msg):
        model.decode_latent(z)


def test_decode_latent_with_batches(fitted_batches):
    adata, model = fitted_batches
    z = model.get_latent(adata)
    labels = adata.obs["batch"].astype(str).to_numpy()
    np.testing.assert_allclose(
        model.decode_latent(z, batch=labels), model.get_normalized_expression(adata), rtol=1e-5
    )
    one = model.decode_latent(z[:5], batch="b1")
    np.testing.assert_array_equal(one, model.decode_latent(z[:5], batch=["b1"] * 5))
    assert not np.allclose(one, model.decode_latent(z[:5], batch="b0"))
    with pytest.raises(ValueError, match="pass batch="):
        model.decode_latent(z[:5])
    with pytest.raises(ValueError, match="unknown batch labels"):
        model.decode_latent(z[:5], batch="b9")


# ---------------------------------------------------------------------- latent_traversal


def test_traversal_matches_brute_force(fitted):
    base, model = fitted
    adata = base.copy()
    steps = np.linspace(-2.0, 2.0, 5)
    table = tl.latent_traversal(
        adata, model, dims=[0, 2], n_steps=5, span=2.0, n_cells=None, batch_size=7, n_top_genes=4
    )
    assert list(table.columns) == ["dim_0", "dim_2"] and list(table.index) == list(base.var_names)
    varm = adata.varm[KEY + "_traversal"]
    assert varm.shape == (adata.n_vars, 3) and varm.dtype == np.float32
    assert np.isnan(varm[:, 1]).all()
    info, top = adata.uns[KEY]["traversal"], adata.uns[KEY]["top_genes"]
    np.testing.assert_allclose(info["steps"], steps)
    for d in (0, 2):
        means = brute_force_means(model, base, d, steps)
        lfc = np.log(means[-1]) - np.log(means[0])  # natural log
        np.testing.assert_allclose(table[f"dim_{d}"], lfc, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(varm[:, d], lfc, rtol=1e-4, atol=1e-5)
        up = np.argsort(-lfc)[:4]
        down = np.argsort(lfc)[:4]
        entry = top[f"dim_{d}"]
        assert entry["up"] == [f"gene{g}" for g in up]
        assert entry["down"] == [f"gene{g}" for g in down]
        np.testing.assert_allclose(entry["up_lfc"], lfc[up], rtol=1e-4)
        assert (np.asarray(entry["up_lfc"]) > 0).all() and (np.asarray(entry["down_lfc"]) < 0).all()
        kept = np.concatenate([up, down])
        assert info["genes"][f"dim_{d}"] == [f"gene{g}" for g in kept]
        np.testing.assert_allclose(info["profiles"][f"dim_{d}"], means[:, kept].T, rtol=1e-4)
    # A different minibatch size decodes the same thing.
    again = tl.latent_traversal(
        adata.copy(), model, dims=[0, 2], n_steps=5, span=2.0, n_cells=None, batch_size=1000
    )
    np.testing.assert_allclose(again, table, rtol=1e-5, atol=1e-6)


def test_traversal_with_batches_decodes_each_cell_in_its_batch(fitted_batches):
    base, model = fitted_batches
    adata = base.copy()
    table = tl.latent_traversal(adata, model, dims=[1], n_steps=3, n_cells=None)
    labels = base.obs["batch"].astype(str).to_numpy()
    means = brute_force_means(model, base, 1, np.linspace(-3, 3, 3), labels)
    np.testing.assert_allclose(table["dim_1"], np.log(means[-1] / means[0]), rtol=1e-4, atol=1e-5)


def test_traversal_follows_the_adata_gene_order(fitted):
    base, model = fitted
    ref = tl.latent_traversal(base.copy(), model, dims=[0], n_cells=None)
    perm = np.random.default_rng(3).permutation(base.n_vars)
    shuffled = base[:, perm].copy()
    table = tl.latent_traversal(shuffled, model, dims=[0], n_cells=None)
    assert list(table.index) == list(shuffled.var_names)
    np.testing.assert_allclose(table["dim_0"], ref["dim_0"].to_numpy()[perm], rtol=1e-5)
    np.testing.assert_allclose(
        shuffled.varm[KEY + "_traversal"][:, 0], ref["dim_0"].to_numpy()[perm], rtol=1e-5
    )


def test_traversal_subsample_is_seeded(fitted):
    base, model = fitted
    runs = [
        (seed, tl.latent_traversal(a := base.copy(), model, dims=[0], n_cells=30, seed=seed), a)
        for seed in (0, 0, 1)
    ]
    assert runs[0][2].uns[KEY]["traversal"]["n_cells"] == 30
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    assert not np.allclose(runs[0][1], runs[2][1])


def test_traversal_defaults_to_active_dims(fitted):
    base, model = fitted
    adata = base.copy()
    adata.uns[KEY]["active_dims"] = np.array([1])
    table = tl.latent_traversal(adata, model, n_cells=50)
    assert list(table.columns) == ["dim_1"]
    assert np.isnan(adata.varm[KEY + "_traversal"][:, [0, 2]]).all()
    assert list(adata.uns[KEY]["top_genes"]) == ["dim_1"]
    adata.uns[KEY]["active_dims"] = np.array([], dtype=np.int64)
    with pytest.raises(ValueError, match="pass dims"):
        tl.latent_traversal(adata, model)


def test_traversal_model_from_a_folder_or_model_dir(fitted, tmp_path):
    base, model = fitted
    ref = tl.latent_traversal(base.copy(), model, dims=[0], n_cells=40)
    folder = model.save(tmp_path / "m")
    from_path = tl.latent_traversal(base.copy(), str(folder), dims=[0], n_cells=40)
    np.testing.assert_allclose(from_path, ref, rtol=1e-6)
    adata = base.copy()
    adata.uns[KEY]["model_dir"] = str(folder)
    np.testing.assert_allclose(tl.latent_traversal(adata, dims=[0], n_cells=40), ref, rtol=1e-6)
    adata.uns[KEY]["model_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="model.save"):
        tl.latent_traversal(adata, dims=[0])


def test_traversal_errors_write_nothing(fitted):
    base, model = fitted
    adata = base.copy()
    before = set(adata.uns[KEY])
    with pytest.raises(ValueError, match=r"model=<the FittedModel returned by scvae_beta.fit>"):
        tl.latent_traversal(adata)
    with pytest.raises(KeyError, match="key_added='other'"):
        tl.latent_traversal(adata, model, key="other")
    with pytest.raises(ValueError, match="out of range"):
        tl.latent_traversal(adata, model, dims=[5])
    with pytest.raises(ValueError, match="n_steps"):
        tl.latent_traversal(adata, model, n_steps=1)
    # span inf made every step inf (NaN profiles); "2" and seed None failed with bare
    # TypeErrors; a negative or fractional seed was taken silently
    with pytest.raises(ValueError, match="span must be finite"):
        tl.latent_traversal(adata, model, dims=[0], span=float("inf"))
    with pytest.raises(TypeError, match="span must be a number"):
        tl.latent_traversal(adata, model, dims=[0], span="2")
    with pytest.raises(ValueError, match=r"span must be > 0"):
        tl.latent_traversal(adata, model, dims=[0], span=0.0)
    for seed, error in ((1.5, TypeError), (None, TypeError), (-1, ValueError)):
        with pytest.raises(error, match="seed must be an integer"):
            tl.latent_traversal(adata, model, dims=[0], seed=seed)
    with pytest.raises(ValueError, match="n_cells must be an integer >= 2"):
        tl.latent_traversal(adata, model, dims=[0], n_cells=np.float64(20.0))
    with pytest.raises(ValueError, match="n_cells must be an integer >= 2"):
        tl.latent_traversal(adata, model, dims=[0], n_cells=1)
    # True was taken as n_top_genes=1; a bad batch_size failed only after the encoding pass
    with pytest.raises(ValueError, match="n_top_genes must be an integer"):
        tl.latent_traversal(adata, model, dims=[0], n_top_genes=True)
    with pytest.raises(ValueError, match="n_steps must be an integer"):
        tl.latent_traversal(adata, model, dims=[0], n_steps=np.bool_(True))
    for batch_size, error in ((0, ValueError), (2.5, TypeError), ("256", TypeError)):
        with pytest.raises(error, match="batch_size must be an integer"):
            tl.latent_traversal(adata, model, dims=[0], batch_size=batch_size)
    fewer = adata[:, :-1].copy()
    with pytest.raises(ValueError, match="1 missing"):
        tl.latent_traversal(fewer, model, dims=[0])
    assert KEY + "_traversal" not in fewer.varm and "traversal" not in fewer.uns[KEY]
    assert set(adata.uns[KEY]) == before and KEY + "_traversal" not in adata.varm


def test_traversal_outputs_survive_h5ad(fitted, tmp_path):
    base, model = fitted
    adata = base.copy()
    tl.latent_traversal(adata, model, dims=[0, 1], n_cells=40, n_top_genes=3)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.varm[KEY + "_traversal"], adata.varm[KEY + "_traversal"])
    for name in ("dim_0", "dim_1"):
        top, top_back = adata.uns[KEY]["top_genes"][name], back.uns[KEY]["top_genes"][name]
        assert list(top_back["up"]) == top["up"] and list(top_back["down"]) == top["down"]
        np.testing.assert_array_equal(top_back["down_lfc"], top["down_lfc"])
        np.testing.assert_array_equal(
            back.uns[KEY]["traversal"]["profiles"][name],
            adata.uns[KEY]["traversal"]["profiles"][name],
        )


# ---------------------------------------------------------------------- dimension_associations


def associations_data(n: int = 300, seed: int = 0) -> ad.AnnData:
    """Latents built from known obs columns: time, a 2-group indicator, noise, a monotone
    transform of time and the log library size."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.lognormal(0.0, 0.6, (n, 1)) * np.full((1, 12), 3.0))
    counts[:, 0] += 1
    names = [f"gene{j}" for j in range(10)] + ["MT-CO1", "mt-nd1"]
    time = rng.uniform(0, 1, n)
    group = rng.integers(0, 2, n)
    obs = pd.DataFrame(
        {
            "time": time,
            "group": pd.Categorical(np.array(["a", "b"])[group]),
            "ctype": pd.Categorical(rng.choice(["x", "y", "z"], n)),
            "noise": rng.normal(size=n),
            "flag": rng.random(n) < 0.5,
            "many": pd.Categorical([f"c{i}" for i in rng.integers(0, 60, n)]),
            "const": np.ones(n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs)
    adata.var_names = names
    log_lib = np.log(counts.sum(1))
    z = np.column_stack([time, group, rng.normal(size=n), np.exp(3 * time), log_lib])
    adata.obsm["X_" + KEY] = z.astype(np.float32)
    return adata


def stat(table: pd.DataFrame, dim: int, key: str, statistic: str) -> float:
    row = table[(table["dim"] == dim) & (table["obs_key"] == key)]
    return float(row.loc[row["statistic"] == statistic, "value"].iloc[0])


def test_associations_recover_the_columns_the_latents_were_built_from():
    adata = associations_data()
    table = tl.dimension_associations(adata)
    assert list(table.columns) == ["dim", "obs_key", "kind", "statistic", "value"]
    z = adata.obsm["X_" + KEY].astype(np.float64)
    assert stat(table, 0, "time", "pearson") == pytest.approx(1.0, abs=1e-6)
    assert stat(table, 0, "time", "spearman") == pytest.approx(1.0, abs=1e-9)
    # Monotone but not linear: rank correlation 1, Pearson below it (and equal to scipy's).
    assert stat(table, 3, "time", "spearman") == pytest.approx(1.0, abs=1e-9)
    r = pearsonr(z[:, 3], adata.obs["time"]).statistic
    assert stat(table, 3, "time", "pearson") == pytest.approx(r, abs=1e-6) and r < 0.97
    rho = spearmanr(z[:, 2], adata.obs["noise"]).statistic
    assert stat(table, 2, "noise", "spearman") == pytest.approx(rho, abs=1e-9)
    # A group indicator: eta = 1 and the binned dimension determines the label.
    assert stat(table, 1, "group", "eta") == pytest.approx(1.0, abs=1e-9)
    assert stat(table, 1, "group", "nmi") == pytest.approx(1.0, abs=1e-9)
    assert abs(stat(table, 2, "group", "eta")) < 0.2 and stat(table, 2, "group", "nmi") < 0.2
    assert stat(table, 4, "log_library", "pearson") == pytest.approx(1.0, abs=1e-6)
    kinds = table.drop_duplicates("obs_key").set_index("obs_key")["kind"]
    assert kinds["flag"] == "categorical" and kinds["time"] == "numeric"
    assert set(kinds.index) == {"time", "group", "ctype", "noise", "flag", "log_library"}

    best = adata.uns[KEY]["associations_best"].set_index("dim")
    assert list(best["best_key"]) == [
        "time",
        "group",
        best.loc[2, "best_key"],
        "time",
        "log_library",
    ]
    assert best.loc[2, "score"] < 0.3 and best["active"].all()
    pd.testing.assert_frame_equal(adata.uns[KEY]["associations"], table)


def test_eta_and_nmi_match_independent_computations():
    adata = associations_data(seed=1)
    table = tl.dimension_associations(adata, obs_keys=["ctype", "group"], n_bins=7)
    z = adata.obsm["X_" + KEY].astype(np.float64)
    for d in range(z.shape[1]):
        labels = adata.obs["ctype"].to_numpy()
        groups = [z[labels == c, d] for c in np.unique(labels)]
        between = sum(g.size * (g.mean() - z[:, d].mean()) ** 2 for g in groups)
        eta = np.sqrt(between / ((z[:, d] - z[:, d].mean()) ** 2).sum())
        assert stat(table, d, "ctype", "eta") == pytest.approx(eta, rel=1e-9)
        edges = np.histogram_bin_edges(z[:, d], bins=7)
        bins = np.digitize(z[:, d], edges[1:-1])
        mi = mutual_info_score(bins, labels)
        h = entropy(np.unique(labels, return_counts=True)[1])
        assert stat(table, d, "ctype", "nmi") == pytest.approx(mi / h, rel=1e-6)
        # With two categories eta is |Pearson| with the 0/1 indicator.
        indicator = (adata.obs["group"] == "b").to_numpy(dtype=float)
        r = abs(pearsonr(z[:, d], indicator).statistic)
        assert stat(table, d, "group", "eta") == pytest.approx(r, rel=1e-6)


def test_qc_covariates_and_missing_values():
    adata = associations_data()
    counts = adata.X.toarray().astype(np.float64)
    adata.obs.loc[adata.obs_names[:5], "time"] = np.nan
    adata.obs["group"] = adata.obs["group"].cat.add_categories("zz")
    adata.obs.loc[adata.obs_names[:5], "group"] = np.nan
    adata.uns[KEY] = {"active_dims": np.array([0, 1])}
    table = tl.dimension_associations(adata, obs_keys=["time", "group", "pct_mito", "log_n_genes"])
    assert stat(table, 0, "time", "pearson") == pytest.approx(1.0, abs=1e-6)
    assert stat(table, 1, "group", "eta") == pytest.approx(1.0, abs=1e-9)
    pct = 100 * counts[:, 10:].sum(1) / counts.sum(1)
    r = pearsonr(adata.obsm["X_" + KEY][:, 4], pct).statistic
    assert stat(table, 4, "pct_mito", "pearson") == pytest.approx(r, abs=1e-6)
    r = spearmanr(adata.obsm["X_" + KEY][:, 4], np.log((counts > 0).sum(1))).statistic
    assert stat(table, 4, "log_n_genes", "spearman") == pytest.approx(r, abs=1e-9)
    best = adata.uns[KEY]["associations_best"]
    assert list(best["active"]) == [True, True, False, False, False]
    # A constant column asked for explicitly gives NaN, not an error.
    const = tl.dimension_associations(adata, obs_keys=["const"])
    assert const["value"].isna().all() and len(const) == 10


def test_associations_survive_h5ad(tmp_path):
    adata = associations_data()
    table = tl.dimension_associations(adata)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns[KEY]
    pd.testing.assert_frame_equal(back["associations"], table, check_index_type=False)
    pd.testing.assert_frame_equal(
        back["associations_best"], adata.uns[KEY]["associations_best"], check_index_type=False
    )


def test_associations_errors():
    adata = associations_data()
    with pytest.raises(KeyError, match="key_added='nope'"):
        tl.dimension_associations(adata, key="nope")
    with pytest.raises(KeyError, match="neither a column"):
        tl.dimension_associations(adata, obs_keys=["missing"])
    with pytest.raises(ValueError, match="n_bins"):
        tl.dimension_associations(adata, n_bins=1)
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    with pytest.raises(ValueError, match="pct_counts_mt"):
        tl.dimension_associations(adata, obs_keys=["pct_mito"])
    assert KEY not in adata.uns
