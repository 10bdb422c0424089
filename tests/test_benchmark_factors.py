"""The simulator's factor scoring in ``benchmarks/disentanglement_real.py`` (issue 10).

The benchmark's claims about MIG on the simulator rest on three helpers: one binary factor per
cell type, dropping the cyclic phase, and a supervised readout that bounds what MIG can show.
"""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest

from scvae_beta import metrics
from tests.conftest import load_benchmark

pytest.importorskip("sklearn")
pytest.importorskip("scanpy")

#: The gene selection these tests can run here (seurat_v3 needs scikit-misc).
_GENES = "seurat_v3" if importlib.util.find_spec("skmisc") else "dispersion"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("disentanglement_real")


@pytest.fixture(scope="module")
def sim(bench):
    return bench.load_sim(SimpleNamespace(sim_cells=800, sim_genes=300, data_seed=0))


def test_scalar_factors_one_hot_the_types_and_drop_the_phase(bench, sim):
    adata, (codes, names, cyclic) = sim
    assert cyclic == ("phase",) and "phase" in names
    onehot = bench.one_hot_types(adata)
    scalar = bench.scalar_factors(adata)
    n_types = adata.obs["cell_type"].nunique()
    assert onehot.shape[1] == n_types + len(names) - 1
    assert scalar.shape[1] == onehot.shape[1] - 1  # the phase column is gone
    types = adata.obs["cell_type"].cat.codes.to_numpy()
    np.testing.assert_array_equal(scalar[:, :n_types].argmax(1), types)
    np.testing.assert_array_equal(scalar[:, :n_types].sum(1), 1)
    kept = [n for n in names if n not in ("cell_type", "phase")]
    np.testing.assert_array_equal(scalar[:, n_types:], codes[:, [names.index(n) for n in kept]])


def test_one_dimension_per_type_meets_the_closed_form_cap_of_indicator_mig():
    """Four equally frequent, mutually exclusive types, each in its own dimension: the MIG of
    every indicator is 1 - I(ind_j; ind_k) / H(ind_k), the cap quoted in RESULTS.md."""
    types = np.repeat(np.arange(4), 50)
    ind = (types[:, None] == np.arange(4)[None, :]).astype(np.int64)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    i = 2 * 0.25 * math.log(0.25 / (0.25 * 0.75)) + 0.5 * math.log(0.5 / (0.75 * 0.75))
    cap = 1 - i / h
    assert cap == pytest.approx(0.8489, abs=1e-4)
    assert metrics.mig(ind.astype(float), ind) == pytest.approx(cap, abs=1e-12)


def test_oracle_reads_out_every_factor_and_bounds_the_phase(bench, sim):
    adata, factors = sim
    codes, names, cyclic = factors
    res = bench.run_oracle(adata, factors, seed=0)
    z = res["z"]
    n_types = adata.obs["cell_type"].nunique()
    assert z.shape == (adata.n_obs, n_types + (len(names) - 2) + 2)  # cos and sin for the phase
    # each type is recovered by its own out-of-fold column, near the cap of the metric
    onehot = bench.one_hot_types(adata)
    for k in range(n_types):
        assert metrics.mig(z, onehot[:, [k]]) > 0.7
    # the phase is known (cos, sin) yet one dimension cannot carry it: MIG stays low
    assert metrics.mig(z, codes[:, [names.index("phase")]]) < 0.3


def _tiny_data_set(bench, tmp_path, monkeypatch, counts, **obs) -> None:
    """``counts`` (40 cells) as the benchmark's data set ``"tiny"``, labels ``a`` / ``b``;
    ``obs``: further obs columns."""
    import anndata as ad
    import scipy.sparse as sp

    tiny = ad.AnnData(X=sp.csr_matrix(counts))
    tiny.obs["kind"] = np.repeat(["a", "b"], 20)
    for column, values in obs.items():
        tiny.obs[column] = values
    tiny.write_h5ad(tmp_path / "tiny.h5ad")
    monkeypatch.setitem(bench.DATASETS, "tiny", ("tiny.h5ad", "kind"))


def test_load_real_keeps_every_expressed_gene_of_a_small_panel(bench, tmp_path, monkeypatch):
    """A data set with fewer genes than the variable-gene selection (``pbmc68k``: 765) keeps
    every gene with a count and its labels; a larger one is cut to ``N_HVG`` genes."""
    counts = np.random.default_rng(0).poisson(2.0, (40, 60)).astype(np.int32)
    counts[:, 7] = 0  # a gene never seen
    _tiny_data_set(bench, tmp_path, monkeypatch, counts)
    adata, factors = bench.load_real("tiny", tmp_path, _GENES)
    assert factors is None
    assert adata.n_vars == 59 and str(7) not in adata.var_names
    assert list(adata.obs["label"].cat.categories) == ["a", "b"]
    np.testing.assert_array_equal(adata.X.toarray(), np.delete(counts, 7, axis=1))
    monkeypatch.setattr(bench, "N_HVG", 20)
    assert bench.load_real("tiny", tmp_path, _GENES)[0].n_vars == 20


def test_load_real_keeps_only_the_cells_its_filter_names(bench, tmp_path, monkeypatch):
    """A data set in ``CELL_FILTERS`` (the cell lines: demuxlet singlets) keeps only the cells
    whose column has the value, with their labels; genes seen only in dropped cells go."""
    counts = np.random.default_rng(2).poisson(2.0, (40, 30)).astype(np.int32)
    counts[:, 3] = 0
    counts[0, 3] = 9  # a gene seen only in a doublet
    keep = np.arange(40) % 4 != 0
    _tiny_data_set(bench, tmp_path, monkeypatch, counts, cls=np.where(keep, "SNG", "DBL"))
    monkeypatch.setitem(bench.CELL_FILTERS, "tiny", ("cls", "SNG"))
    adata, _ = bench.load_real("tiny", tmp_path, _GENES)
    assert adata.n_obs == 30 and list(adata.obs_names) == [str(i) for i in np.flatnonzero(keep)]
    assert "3" not in adata.var_names and adata.n_vars == 29
    np.testing.assert_array_equal(adata.X.toarray(), np.delete(counts[keep], 3, axis=1))
    assert adata.obs["label"].tolist() == np.repeat(["a", "b"], 20)[keep].tolist()


def test_every_data_set_names_its_file_and_label_in_the_shared_folder(bench):
    """Each entry of ``DATASETS`` (and each filter) points at a file of ``../shared/data``
    with that label column, when the folder is present."""
    import anndata as ad

    if not bench.DATA_DIR.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    assert set(bench.CELL_FILTERS) <= set(bench.DATASETS)
    for name, (file, label) in bench.DATASETS.items():
        backed = ad.read_h5ad(bench.DATA_DIR / file, backed="r")
        obs = backed.obs
        backed.file.close()  # only obs is read; no handle left open per file
        assert label in obs.columns, name
        if name in bench.CELL_FILTERS:
            column, value = bench.CELL_FILTERS[name]
            assert (obs[column].astype(str) == value).sum() > 0, name


def test_load_real_retries_the_selection_without_rare_genes(bench, tmp_path, monkeypatch):
    """When seurat_v3's loess fails (a ``ValueError``, as on the very sparse worm neurons), the
    genes seen in fewer than 3 cells are dropped and the selection runs again."""
    import scanpy as sc

    counts = np.random.default_rng(1).poisson(2.0, (40, 60)).astype(np.int32)
    counts[:, :5] = 0
    counts[:2, :5] = 50  # five highly variable genes, each seen in only 2 cells
    _tiny_data_set(bench, tmp_path, monkeypatch, counts)
    monkeypatch.setattr(bench, "N_HVG", 20)
    real, calls = sc.pp.highly_variable_genes, []

    def flaky(adata, **kw):
        calls.append(adata.n_vars)
        if len(calls) == 1:
            raise ValueError("reciprocal condition number")
        return real(adata, **kw)

    monkeypatch.setattr(sc.pp, "highly_variable_genes", flaky)
    adata, _ = bench.load_real("tiny", tmp_path, _GENES)
    assert calls == [60, 55]  # the retry saw the data without the five rare genes
    assert adata.n_vars == 20 and not {"0", "1", "2", "3", "4"} & set(adata.var_names)


def test_refine_labels_re_annotates_one_label_by_markers_in_rule_order():
    """``label_anatomy.refine_labels`` changes only the named label's cells, each to the first
    rule whose conditions all hold on log-normalised counts (a gene list averaged), and names
    a missing marker."""
    import anndata as ad

    anatomy = load_benchmark("label_anatomy")
    # 7 cells x genes A, B, C, filler: library 1e4 each, so log-normalised = log1p(count)
    counts = np.array(
        [
            [100, 0, 0, 9900],  # DC, A high -> "a-high"
            [100, 100, 0, 9800],  # DC, A and B high: the first rule wins
            [0, 100, 0, 9900],  # DC, B high, C low -> "b-high"
            [0, 100, 100, 9800],  # DC, B high but C too -> stays "DC"
            [100, 100, 0, 9800],  # another label: untouched
            [0, 0, 0, 10000],  # DC, nothing high -> "DC"
            [0, 20, 0, 9980],  # DC, B alone > 2 but the mean of A and B is not -> "DC"
        ],
        dtype=float,
    )
    adata = ad.AnnData(X=counts)
    adata.var_names = ["A", "B", "C", "F"]
    adata.obs["label"] = ["DC", "DC", "DC", "DC", "T", "DC", "DC"]
    rules = [
        ("a-high", {("A",): (">", 2.0)}),
        ("b-high", {("B", "A"): (">", 2.0), ("C",): ("<", 1.0)}),
    ]
    got = anatomy.refine_labels(adata, "DC", rules)
    assert list(got) == ["a-high", "a-high", "b-high", "DC", "T", "DC", "DC"]
    with pytest.raises(KeyError, match="GNLY"):
        anatomy.refine_labels(adata, "DC", [("NK", {("GNLY",): (">", 2.0)})])


def test_rescore_adds_the_wide_grid_clusters_from_saved_latents_once(bench, tmp_path):
    """Runs scored before the wide grid get its columns from their saved latents (no refit):
    the NMI-optimal clusters over ``metrics.RESOLUTIONS_WIDE``; other data sets, runs without
    a saved latent and runs already scored are left alone."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(3), 40)
    z = np.array([[0, 0], [1.0, 0], [0, 1.0]])[group] + 0.4 * rng.normal(size=(120, 2))
    adata = ad.AnnData(obs=pd.DataFrame({"label": pd.Categorical(group.astype(str))}))
    np.save(bench.latent_file(tmp_path, "bench", "tiny", "pca", 3), z)
    runs = [
        {"dataset": "tiny", "method": "pca", "seed": 3},
        {"dataset": "tiny", "method": "ica", "seed": 0},  # no latent saved
        {"dataset": "other", "method": "pca", "seed": 3},
    ]
    assert bench.rescore(runs, adata, "tiny", tmp_path, "bench", sim=False)
    want = metrics.cluster_agreement(
        z, adata.obs["label"], seed=3, resolution=metrics.RESOLUTIONS_WIDE
    )
    assert runs[0]["ARI opt. wide"] == want["ari"]
    assert runs[0]["res. opt. wide"] == want["resolution"]
    assert runs[0]["NMI opt. wide"] == want["nmi"]
    assert "ARI opt. wide" not in runs[1] and "ARI opt. wide" not in runs[2]
    assert not bench.rescore(runs, adata, "tiny", tmp_path, "bench", sim=False)


def test_gene_flavour_without_scikit_misc_names_the_fix(bench, monkeypatch):
    """The tables use seurat_v3 genes; without scikit-misc the benchmark stops and says how to
    get them (or how to ask for the other, recorded gene set) instead of silently switching."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "skmisc" else real(name, *a)
    )
    with pytest.raises(SystemExit, match="scikit-misc.*--genes dispersion"):
        bench.check_gene_flavour("seurat_v3")
    bench.check_gene_flavour("dispersion")  # needs nothing beyond scanpy
    with pytest.raises(SystemExit, match="choose one of seurat_v3, dispersion"):
        bench.check_gene_flavour("cell_ranger")


def test_dispersion_genes_are_the_over_dispersed_ones_as_raw_counts(bench, monkeypatch):
    import anndata as ad

    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0.5, 10, 400), size=(300, 400)).astype(np.float32)
    counts[:, :5] = 40.0 * (rng.random((300, 5)) < 0.1)  # five on/off genes
    monkeypatch.setattr(bench, "N_HVG", 5)
    kept = bench._top_genes(ad.AnnData(counts), "dispersion")
    assert sorted(kept.var_names) == [str(i) for i in range(5)]
    np.testing.assert_array_equal(kept.X, counts[:, :5])  # raw counts, not normalised


def test_every_candidate_is_a_valid_fit_configuration(bench):
    from scvae_beta.settings import Settings

    for name, keywords in bench.CANDIDATES.items():
        settings = Settings.from_keywords(dict(keywords, n_latent=32, seed=0))
        assert settings.n_latent == 32, name
    widths = {
        name: Settings.from_keywords(dict(bench.CANDIDATES[name])).decoder_hidden
        for name in ("ours_disentangle", "ours_disentangle_h16", "ours_tcvae2_additive_h16")
    }
    assert widths == {
        "ours_disentangle": 8,
        "ours_disentangle_h16": 16,
        "ours_tcvae2_additive_h16": 16,
    }
    assert Settings.from_keywords(bench.CANDIDATES["ours_additive_default"]).decoder_hidden is None


@pytest.mark.parametrize(
    ("argv", "option", "name"),
    [
        (["--ours", "ours_disentangle,ours_typo"], "--ours", "ours_typo"),
        (["--methods", "ours,dvri"], "--methods", "dvri"),
        (["--datasets", "pancreas,lung"], "--datasets", "lung"),
    ],
)
def test_unknown_names_stop_before_anything_runs(bench, tmp_path, argv, option, name):
    out = tmp_path / "runs.json"
    with pytest.raises(SystemExit, match=f"{option}: unknown \\['{name}'\\]; choose from"):
        bench.main([*argv, "--out", str(out)])
    assert not out.exists()


def test_the_preset_is_the_default_candidate(bench, monkeypatch):
    seen = {}

    def stop(args):
        seen["ours"] = args.ours
        raise SystemExit(0)

    monkeypatch.setattr(bench, "check_names", stop)
    with pytest.raises(SystemExit):
        bench.main([])
    assert seen == {"ours": "ours_disentangle"}
