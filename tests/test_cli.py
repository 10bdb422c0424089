"""The scvae-beta console script: fit, errors as one line, input never modified."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pytest

from scvae_beta.cli import main


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_writes_output_and_model(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    before = _sha(src)
    code = main(
        [
            "fit",
            str(src),
            "-o",
            str(tmp_path / "out.h5ad"),
            "--max-epochs",
            "2",
            "--n-latent",
            "3",
            "--beta",
            "2",
            "--model-dir",
            str(tmp_path / "m"),
            "--no-progress",
        ]
    )
    assert code == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_scvae_beta"].shape == (240, 3)
    assert out.uns["scvae_beta"]["params"]["beta"] == 2.0
    assert (tmp_path / "m" / "model.json").exists()
    assert _sha(src) == before
    assert "ELBO" in capsys.readouterr().out


def test_errors_are_one_line_with_nonzero_exit(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    code = main(["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--layer", "counts"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("scvae-beta: error: layer 'counts' not found")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o.h5ad").exists()
    assert main(["fit", str(tmp_path / "nope.h5ad"), "-o", str(tmp_path / "o.h5ad")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_output_may_not_overwrite_input(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    assert main(["fit", str(src), "-o", str(src)]) == 1
    assert "never modified" in capsys.readouterr().err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "fit" in out


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    code = main(
        ["demo", "--out", str(tmp_path), "--max-epochs", "3", "--n-cells", "600", "--no-progress"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "ELBO per cell" in text and "ARI vs FACS labels" in text
    out = ad.read_h5ad(tmp_path / "pbmc_sorted_scvae_beta.h5ad")
    assert out.n_obs == 600 and "X_umap" in out.obsm and "leiden" in out.obs
    assert (tmp_path / "umap.png").stat().st_size > 10_000
    assert np.isfinite(out.uns["scvae_beta"]["elbo"])
