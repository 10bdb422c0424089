"""``scvae_beta.pl.report`` and ``scvae-beta report``: one self-contained HTML page per fit."""

from __future__ import annotations

import base64
import copy
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scvae_beta
from scvae_beta.cli import main
from scvae_beta.pl._report import FIGURES, SECTIONS, label_contrasts
from tests.conftest import load_script, simulate_counts

TINY = dict(max_epochs=2, n_hidden=16, batch_size=64, progress=False)
MODELS = ["beta_vae", "beta_tcvae", "factor_vae"]
CHROMIUM = Path("/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects section ids, images, notes and anything that would reach the network."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: dict[str, str] = {}
        self.external: list[str] = []
        self.tags: list[str] = []
        self.notes = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images[a.get("id", "")] = a["src"]
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)
        for name in ("src", "href"):
            if str(a.get(name, "")).startswith(("http:", "https:", "//")):
                self.external.append(a[name])
        if tag == "p" and "note" in (a.get("class") or ""):
            self.notes += 1


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _state(adata) -> dict:
    """Everything a report must leave alone."""
    return {
        "obs": list(adata.obs.columns),
        "obsm": sorted(adata.obsm),
        "varm": sorted(adata.varm),
        "obsp": sorted(adata.obsp),
        "uns": sorted(adata.uns),
        "entry": sorted(adata.uns["scvae_beta"]),
        "z": adata.obsm["X_scvae_beta"].copy(),
    }


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """One tiny fit per model, each with its model saved and recorded in ``model_dir``."""
    out = {}
    for name in MODELS:
        adata = simulate_counts(n_cells=200, n_genes=30)
        model = scvae_beta.fit(adata, model=name, beta=2.0, seed=0, **TINY)
        folder = tmp_path_factory.mktemp(name) / "model"
        model.save(folder)
        adata.uns["scvae_beta"]["model_dir"] = str(folder)
        out[name] = (adata, model)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_section_and_figure_for_each_model(fits, name, tmp_path):
    adata = fits[name][0].copy()
    before = _state(adata)
    path = scvae_beta.pl.report(adata, labels="group", path=tmp_path / "sub" / "r.html")
    assert path == tmp_path / "sub" / "r.html" and path.exists()
    page = _parse(path)
    assert page.sections == list(SECTIONS)
    assert not page.external, page.external
    # Every figure but the sweep (none stored) is there, as an embedded, decodable PNG.
    assert set(page.images) == set(FIGURES) - {"fig-sweep"}
    for src in page.images.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    text = path.read_text()
    for word in ("index-code mutual information", "total correlation", name):
        assert word in text
    if name == "factor_vae":
        assert "discriminator" in text
    assert page.notes == 1  # only the missing sweep
    # Top genes: one table row per active dimension, with the model from uns["model_dir"].
    genes = text.split('id="genes"')[1].split("</section>")[0]
    assert genes.count("<tr") == 1 + len(adata.uns["scvae_beta"]["active_dims"])
    # The user's AnnData is untouched (no UMAP, neighbours or traversal written into it).
    after = _state(adata)
    np.testing.assert_array_equal(after.pop("z"), before.pop("z"))
    assert after == before


def test_a_stored_sweep_gives_the_rate_distortion_plot(fits, tmp_path):
    adata = fits["beta_tcvae"][0].copy()
    table = pd.DataFrame(
        {
            "beta": [1.0, 1.0, 4.0, 4.0],
            "seed": [0, 1, 0, 1],
            "rate": [5.0, 5.2, 2.0, 2.1],
            "distortion": [100.0, 100.5, 101.0, 101.2],
            "n_active": [8, 8, 4, 5],
            "mig": [0.1, 0.12, 0.2, 0.22],
        }
    )
    adata.uns["scvae_beta_tune"] = {"table": table, "metric": "mig", "reason": "beta=4: best mig"}
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2))
    path = scvae_beta.pl.report(adata, path=tmp_path / "r.html")
    page = _parse(path)
    assert set(page.images) == set(FIGURES)
    assert page.notes == 0
    assert "beta=4: best mig" in path.read_text()
    assert "the stored obsm[&#x27;X_umap&#x27;]" in path.read_text()


def test_without_a_model_the_genes_section_says_why(fits, tmp_path):
    adata = fits["beta_vae"][0].copy()
    del adata.uns["scvae_beta"]["model_dir"]
    text = scvae_beta.pl.report(adata, path=tmp_path / "a.html").read_text()
    assert "records no model folder" in text
    adata.uns["scvae_beta"]["model_dir"] = str(tmp_path / "moved_away")
    text = scvae_beta.pl.report(adata, path=tmp_path / "b.html").read_text()
    assert "which is not there" in text
    # A model passed explicitly (object or folder) is used instead.
    model = fits["beta_vae"][1]
    page = _parse(scvae_beta.pl.report(adata, model=model, path=tmp_path / "c.html"))
    assert page.notes == 1  # the sweep only


def test_stored_top_genes_are_reused_without_a_model(fits, tmp_path):
    adata, model = fits["beta_tcvae"]
    adata = adata.copy()
    scvae_beta.tl.latent_traversal(adata, model, n_top_genes=3)
    del adata.uns["scvae_beta"]["model_dir"]
    text = scvae_beta.pl.report(adata, path=tmp_path / "r.html").read_text()
    assert "From the stored traversal" in text
    first = adata.uns["scvae_beta"]["top_genes"][f"dim_{adata.uns['scvae_beta']['active_dims'][0]}"]
    assert first["up"][0] in text


def test_bad_inputs_raise_errors_that_name_the_fix(fits, tmp_path):
    with pytest.raises(KeyError, match="fit a model first"):
        scvae_beta.pl.report(simulate_counts(n_cells=50), path=tmp_path / "r.html")
    adata = fits["beta_vae"][0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scvae_beta.pl.report(adata, model=tmp_path / "nope", path=tmp_path / "r.html")
    with pytest.raises(KeyError, match="not a column of adata.obs"):
        scvae_beta.pl.report(adata, labels="cell_type", path=tmp_path / "r.html")
    with pytest.raises(TypeError, match="expected an AnnData"):
        scvae_beta.pl.report(adata.obsm["X_scvae_beta"], path=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_label_contrasts_finds_the_label_a_dimension_separates():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 100)
    z = rng.normal(size=(300, 3))
    z[labels == "b", 0] += 4.0
    z[labels == "c", 2] -= 4.0
    best = label_contrasts(z, labels)
    assert list(best["dim"]) == [0, 1, 2]
    assert best["label"][0] == "b" and best["effect"][0] > 1.5
    assert best["label"][2] == "c" and best["effect"][2] < -1.5
    assert abs(best["effect"][1]) < 0.5


# ---------------------------------------------------------------------- command line


def test_cli_fit_report_and_report_subcommand(tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    simulate_counts(n_cells=150, n_genes=30).write_h5ad(src)
    dst = tmp_path / "out" / "fitted.h5ad"
    args = ["fit", str(src), "-o", str(dst), "--max-epochs", "2", "--n-hidden", "16"]
    assert main([*args, "--no-progress", "--report"]) == 0
    beside = tmp_path / "out" / "fitted_report.html"
    assert beside.exists() and f"wrote {beside}" in capsys.readouterr().out
    assert _parse(beside).sections == list(SECTIONS)

    out = tmp_path / "r" / "labels.html"
    assert main(["report", str(dst), "--labels", "group", "-o", str(out)]) == 0
    assert set(_parse(out).images) == set(FIGURES) - {"fig-sweep"}
    # Without -o the report goes beside the input; --model names the folder explicitly.
    assert main(["report", str(dst), "--model", str(tmp_path / "out" / "fitted_model")]) == 0
    assert (tmp_path / "out" / "fitted_report.html").exists()


@pytest.mark.parametrize(
    "case, needle",
    [
        ("no_fit", "fit a model first"),
        ("missing_model", "does not exist"),
        ("missing_input", "does not exist"),
        ("bad_labels", "not a column"),
    ],
)
def test_cli_bad_inputs_give_one_line_and_exit_1(fits, tmp_path, capsys, case, needle):
    fitted = tmp_path / "fitted.h5ad"
    unfitted = tmp_path / "raw.h5ad"
    adata = fits["beta_vae"][0].copy()
    adata.uns = copy.deepcopy(dict(adata.uns))
    adata.write_h5ad(fitted)
    simulate_counts(n_cells=50).write_h5ad(unfitted)
    argv = {
        "no_fit": ["report", str(unfitted)],
        "missing_model": ["report", str(fitted), "--model", str(tmp_path / "gone")],
        "missing_input": ["report", str(tmp_path / "absent.h5ad")],
        "bad_labels": ["report", str(fitted), "--labels", "nope"],
    }[case]
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scvae-beta: error:") and needle in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------- a real browser


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
def test_renders_in_headless_chromium(fits, tmp_path):
    import matplotlib.image

    page = scvae_beta.pl.report(
        fits["beta_tcvae"][0].copy(), labels="group", path=tmp_path / "r.html"
    )
    # the docs' screenshot script, at a window large enough for the whole header and figures
    shot = load_script("report_screenshot").screenshot(
        page, tmp_path / "shot.png", width=1280, height=2400, chromium=CHROMIUM
    )
    assert shot.stat().st_size > 30_000
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # Not a blank page: the header's dark band and the figures give many distinct colours.
    assert pixels.std() > 0.05
    assert len(np.unique((pixels[::8, ::8] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_numeric_labels_colour_the_umap_without_per_label_contrasts(fits, tmp_path):
    adata = fits["beta_vae"][0].copy()
    adata.obs["depth"] = np.log1p(np.asarray(adata.X.sum(axis=1)).ravel())
    text = scvae_beta.pl.report(adata, labels="depth", path=tmp_path / "r.html").read_text()
    assert "best separated depth" not in text and "coloured by the labels" in text
