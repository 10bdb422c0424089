"""Data-set manifests and ``scvae_beta.datasets.load``: all offline, on tiny fixture files."""

from __future__ import annotations

import hashlib
import io
import tarfile
from importlib import resources
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pooch
import pytest
import scipy.io
import scipy.sparse as sp
import yaml

from scvae_beta import datasets
from scvae_beta.datasets import ChecksumError, list_datasets, load
from scvae_beta.datasets._download import CACHE_ENV, resolve_cache_dir
from scvae_beta.datasets._manifests import (
    ManifestError,
    manifest_from_dict,
    package_manifests,
    read_manifest,
)

REPO = Path(__file__).resolve().parents[2]
HUMAN_DIR = REPO / "data_manifests"
PACKAGE_DIR = REPO / "scvae_beta" / "datasets" / "manifests"
REQUIRED = {
    "name", "title", "bundled", "url", "sha256", "size_bytes", "format", "shape", "labels",
    "preprocessing", "licence", "citation",
}  # fmt: skip
ISSUE_SETS = {"pbmc3k", "pbmc10k_v3", "paul15", "pancreas", "pbmc_sorted", "paul15_subset"}


def _digest(path: Path, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def _counts(n_cells: int = 6, n_genes: int = 4, seed: int = 0) -> np.ndarray:
    counts = np.random.default_rng(seed).poisson(3.0, (n_cells, n_genes)).astype(np.int32)
    counts[:, 0] += 1  # no empty cell
    return counts


def _manifest(path: Path, name: str = "tiny", **changes) -> dict:
    data = {
        "name": name,
        "title": "tiny fixture",
        "bundled": False,
        "url": path.as_uri(),
        "sha256": _digest(path),
        "size_bytes": path.stat().st_size,
        "format": "h5ad",
        "shape": [6, 4],
        "labels": {"group": "fixture groups"},
        "preprocessing": "none",
        "licence": "CC0",
        "citation": ["Nobody (2024) Fixture. doi:10.0000/fixture"],
    }
    data.update(changes)
    return data


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def tiny_h5ad(tmp_path: Path) -> tuple[Path, ad.AnnData]:
    counts = _counts()
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"group": pd.Categorical(list("aabbcc"))}, index=[f"c{i}" for i in range(6)]
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(4)]),
    )
    path = tmp_path / "src" / "tiny.h5ad"
    path.parent.mkdir()
    adata.write_h5ad(path)
    return path, adata


# -- download, cache, checksum -------------------------------------------------------------


def test_download_from_file_url_then_from_cache(tmp_path, tiny_h5ad):
    path, expected = tiny_h5ad
    cache = tmp_path / "cache"
    adata = load(_manifest(path), cache_dir=cache)
    np.testing.assert_array_equal(adata.X.toarray(), expected.X.toarray())
    assert list(adata.obs["group"]) == list("aabbcc")
    cached = cache / "tiny" / "tiny.h5ad"
    assert _files(cache) == [cached]
    assert _digest(cached) == _digest(path)
    manifest = _manifest(path)
    path.unlink()  # the source is gone: the second load must come from the cache
    again = load(manifest, cache_dir=cache)
    np.testing.assert_array_equal(again.X.toarray(), expected.X.toarray())


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path, tiny_h5ad):
    path, _ = tiny_h5ad
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match="verify=False") as info:
        load(_manifest(path, sha256=wrong), cache_dir=cache)
    assert wrong in str(info.value) and "tiny" in str(info.value)
    assert _files(cache) == []


def test_url_override_is_still_verified_against_the_shipped_md5(tmp_path, tiny_h5ad):
    path, _ = tiny_h5ad  # not the pbmc3k tarball, so its MD5 cannot match
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="md5:f76d73bf7a582aaf32b798bcae9574d3"):
        load("pbmc3k", url=path.as_uri(), cache_dir=cache)
    assert _files(cache) == []


def test_md5_only_manifest_is_verified(tmp_path, tiny_h5ad):
    path, expected = tiny_h5ad
    manifest = _manifest(path, sha256=None, md5=_digest(path, "md5"))
    adata = load(manifest, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(adata.X.toarray(), expected.X.toarray())
    with pytest.raises(ChecksumError):
        load(_manifest(path, sha256=None, md5="0" * 32), cache_dir=tmp_path / "other")


def test_no_checksum_needs_verify_false_and_warns_with_the_sha256(tmp_path, tiny_h5ad):
    path, expected = tiny_h5ad
    cache = tmp_path / "cache"
    manifest = _manifest(path, sha256=None)
    with pytest.raises(ValueError, match="verify=False"):
        load(manifest, cache_dir=cache)
    assert _files(cache) == []  # refused before downloading
    with pytest.warns(UserWarning, match=_digest(path)):
        adata = load(manifest, cache_dir=cache, verify=False)
    assert adata.shape == expected.shape


def test_missing_local_file_is_reported(tmp_path, tiny_h5ad):
    path, _ = tiny_h5ad
    manifest = _manifest(path, url=(tmp_path / "gone.h5ad").as_uri())
    with pytest.raises(FileNotFoundError, match="gone.h5ad"):
        load(manifest, cache_dir=tmp_path / "cache")


def test_cache_dir_precedence(tmp_path, tiny_h5ad, monkeypatch):
    path, _ = tiny_h5ad
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    load(_manifest(path), cache_dir=None)
    assert _files(tmp_path / "env") == [tmp_path / "env" / "tiny" / "tiny.h5ad"]
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(CACHE_ENV)
    assert resolve_cache_dir(None) == Path(pooch.os_cache("scvae_beta"))


# -- readers ---------------------------------------------------------------------------------


def _tar_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    archive = tmp_path / "src" / "matrices.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


def test_10x_mtx_tarball(tmp_path):
    counts = _counts()
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(counts.T))  # 10x stores genes x cells
    genes = "".join(f"ENSG{j}\t{s}\n" for j, s in enumerate(["A", "B", "B", "C"]))
    barcodes = "".join(f"AAAC{i}-1\n" for i in range(6))
    folder = "filtered_gene_bc_matrices/hg19"
    archive = _tar_with(
        tmp_path,
        {
            f"{folder}/matrix.mtx": buffer.getvalue(),
            f"{folder}/genes.tsv": genes.encode(),
            f"{folder}/barcodes.tsv": barcodes.encode(),
        },
    )
    manifest = _manifest(archive, format="10x-mtx-tar", mtx_dir=folder, labels={})
    adata = load(manifest, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["A", "B", "B-1", "C"]
    assert list(adata.var["gene_ids"]) == [f"ENSG{j}" for j in range(4)]
    assert list(adata.obs_names) == [f"AAAC{i}-1" for i in range(6)]
    with pytest.raises(FileNotFoundError, match="no folder"):
        load({**manifest, "mtx_dir": "elsewhere"}, cache_dir=tmp_path / "cache")


def test_10x_mtx_tarball_with_unsafe_member_is_refused(tmp_path):
    archive = _tar_with(tmp_path, {"../escape.txt": b"x"})
    manifest = _manifest(archive, format="10x-mtx-tar", mtx_dir="m", labels={})
    with pytest.raises(ValueError, match="unsafe"):
        load(manifest, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()


def test_10x_h5(tmp_path):
    counts = _counts()
    csr = sp.csr_matrix(counts)  # CSR of cells x genes == CSC of genes x cells (10x layout)
    path = tmp_path / "src" / "filtered.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array([f"AAAC{i}-1" for i in range(6)], dtype="S")
        m["data"] = csr.data.astype(np.int32)
        m["indices"] = csr.indices.astype(np.int64)
        m["indptr"] = csr.indptr.astype(np.int64)
        m["shape"] = np.array([4, 6], dtype=np.int32)
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{j}" for j in range(4)], dtype="S")
        feats["name"] = np.array(["A", "B", "B", "C"], dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * 4, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * 4, dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    adata = load(_manifest(path, format="10x-h5", labels={}), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == ["A", "B", "B-1", "C"]
    assert list(adata.obs_names) == [f"AAAC{i}-1" for i in range(6)]


def test_paul15_h5_layout(tmp_path):
    counts = _counts(n_cells=5, n_genes=5)
    rows = ["Zfp1;Zfp1b", "Gata1;Gata1x", "Mpo", "Car2;Car2a", "Gata1;dup"]
    path = tmp_path / "src" / "paul15.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f["data.debatched"] = counts.T.astype(np.float64)  # genes x cells
        f["data.debatched_rownames"] = np.array(rows, dtype="S")
        f["data.debatched_colnames"] = np.array([f"W{i}" for i in range(5)], dtype="S")
        f["cluster.id"] = np.array([[1, 7, 8, 14, 19]])
        f["info.genes_strings"] = np.array(["Zfp1", "Gata1", "Car2", "Absent"], dtype="S")
    manifest = _manifest(path, format="paul15-h5", shape=[5, 3], labels={})
    adata = load(manifest, cache_dir=tmp_path / "cache")
    # informative genes, first name of each pair, first of duplicates, sorted by name
    assert list(adata.var_names) == ["Car2", "Gata1", "Zfp1"]
    assert list(adata.var["paul15_name"]) == ["Car2;Car2a", "Gata1;Gata1x", "Zfp1;Zfp1b"]
    np.testing.assert_array_equal(adata.X.toarray(), counts[:, [3, 1, 0]])
    assert list(adata.obs["paul15_clusters"]) == ["1Ery", "7MEP", "8Mk", "14Mo", "19Lymph"]
    assert list(adata.obs_names) == [f"W{i}" for i in range(5)]


# -- bundled data sets ------------------------------------------------------------------------


def test_bundled_pbmc_sorted_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a bundled data set must not be downloaded")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    adata = load("pbmc_sorted")
    reference = datasets.pbmc_sorted()
    assert adata.shape == package_manifests()["pbmc_sorted"].shape == (3500, 2000)
    assert (adata.X != reference.X).nnz == 0
    assert adata.obs["trueLabel"].value_counts().tolist() == [500] * 7
    with pytest.raises(ValueError, match="bundled"):
        load("pbmc_sorted", url="file:///nowhere.h5ad")


def test_bundled_manifests_match_the_package_files():
    package = resources.files("scvae_beta.datasets")
    manifests = package_manifests()
    assert manifests["pbmc_sorted"].sha256 == datasets.PBMC_SHA256
    for manifest in (m for m in manifests.values() if m.bundled):
        resource = package / manifest.package_file
        if not resource.is_file():
            assert manifest.name != "pbmc_sorted"  # the default data set must ship
            with pytest.raises(FileNotFoundError, match="missing"):
                load(manifest.name)
            continue
        with resources.as_file(resource) as path:
            assert _digest(path) == manifest.sha256, manifest.name
            assert path.stat().st_size == manifest.size_bytes, manifest.name
            adata = ad.read_h5ad(path, backed="r")
            assert adata.shape == manifest.shape
            assert set(manifest.labels) <= set(adata.obs.columns)
            adata.file.close()


# -- manifests ---------------------------------------------------------------------------------


def test_every_manifest_file_parses_with_required_fields():
    paths = sorted(HUMAN_DIR.glob("*.yaml"))
    assert ISSUE_SETS <= {p.stem for p in paths}
    for path in paths:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert REQUIRED <= set(raw), path.name
        manifest = read_manifest(path)
        assert manifest.name == path.stem
        assert all(n > 0 for n in manifest.shape)
        if manifest.bundled:
            assert manifest.url is None and manifest.package_file.endswith(".h5ad")
        else:
            assert manifest.url.startswith("https://"), path.name
        if manifest.sha256 is None and manifest.md5 is None:
            assert manifest.known_hash is None  # load() refuses without verify=False


def test_package_manifests_are_copies_of_data_manifests():
    human = {p.name: p.read_bytes() for p in HUMAN_DIR.glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in PACKAGE_DIR.glob("*.yaml")}
    assert sorted(shipped) == sorted(human), "run: cp data_manifests/*.yaml " + str(PACKAGE_DIR)
    for name, payload in human.items():
        assert shipped[name] == payload, f"{name} differs: cp data_manifests/{name} {PACKAGE_DIR}"
    assert set(package_manifests()) == {Path(n).stem for n in human}


_GOOD = {
    "name": "ok",
    "title": "t",
    "bundled": False,
    "url": "https://example.org/x.h5ad",
    "sha256": None,
    "size_bytes": None,
    "format": "h5ad",
    "shape": [2, 3],
    "labels": {},
    "preprocessing": "p",
    "licence": "l",
    "citation": ["A (2020) doi:10.1/x"],
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": None}, "title"),
        ({"colour": "red"}, "colour"),
        ({"sha256": "abc"}, "sha256"),
        ({"md5": "A" * 32}, "md5"),
        ({"bundled": "yes"}, "bundled"),
        ({"bundled": True}, "package_file"),
        ({"url": None}, "url"),
        ({"url": "www.example.org"}, "url"),
        ({"format": "loom"}, "format"),
        ({"format": "10x-mtx-tar"}, "mtx_dir"),
        ({"shape": [2]}, "shape"),
        ({"shape": [2, 0]}, "shape"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"labels": ["a"]}, "labels"),
        ({"citation": ["no identifier"]}, "DOI"),
        ({"name": "Bad-Name"}, "name"),
    ],
)
def test_invalid_manifests_are_rejected_naming_the_field(change, field):
    manifest_from_dict(_GOOD)  # the base is valid
    with pytest.raises(ManifestError, match=field):
        manifest_from_dict({**_GOOD, **change})


def test_missing_field_and_name_file_mismatch(tmp_path):
    with pytest.raises(ManifestError, match="licence"):
        manifest_from_dict({k: v for k, v in _GOOD.items() if k != "licence"})
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(_GOOD))
    with pytest.raises(ManifestError, match="other.yaml"):
        read_manifest(path)


def test_list_datasets_table():
    table = list_datasets().set_index("name")
    assert ISSUE_SETS <= set(table.index)
    assert list(table.columns) == [
        "title", "n_cells", "n_genes", "size_bytes", "bundled", "format", "labels", "checksum",
    ]  # fmt: skip
    assert table.loc["pbmc_sorted", "bundled"] and not table.loc["pbmc3k", "bundled"]
    assert (table.loc["pbmc3k", "n_cells"], table.loc["pbmc3k", "n_genes"]) == (2700, 32738)
    assert table.loc["pbmc_sorted", "size_bytes"] == 994936
    assert pd.isna(table.loc["pancreas", "size_bytes"])
    assert table.loc["pbmc3k", "checksum"] == "md5"
    assert table.loc["paul15", "checksum"] == "none"
    assert table.loc["pbmc10k_v3", "checksum"] == "sha256"
    assert "clusters" in table.loc["pancreas", "labels"].split(", ")
    assert table.loc["pbmc3k", "labels"] == ""


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown data set 'pbmc_3k'") as info:
        load("pbmc_3k")
    for name in ISSUE_SETS:
        assert name in str(info.value)
