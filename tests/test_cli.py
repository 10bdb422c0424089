"""The scvae-beta console script: fit, tune-beta, datasets; errors one line; input untouched."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scvae_beta
from scvae_beta.cli import _parser, main


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
    assert out.uns["scvae_beta"]["model_dir"] == str((tmp_path / "m").resolve())
    assert not (tmp_path / "out_model").exists()
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


def test_fit_saves_model_next_to_output_for_traversal(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    before = _sha(src)
    args = ["fit", str(src), "-o", str(tmp_path / "sub" / "out.h5ad"), "--max-epochs", "2"]
    args += ["--model", "beta_tcvae", "--beta", "3", "--alpha", "0.5", "--gamma", "2"]
    args += ["--tc-estimator", "mws", "--capacity", "0,5", "--n-latent", "3", "--n-hidden", "16"]
    assert main([*args, "--key-added", "vae", "--seed", "2", "--no-progress"]) == 0
    out = ad.read_h5ad(tmp_path / "sub" / "out.h5ad")
    folder = tmp_path / "sub" / "out_model"
    assert out.uns["vae"]["model_dir"] == str(folder.resolve()) and Path(folder).is_absolute()
    p = out.uns["vae"]["params"]
    assert (p["model"], p["beta"], p["alpha"], p["gamma"]) == ("beta_tcvae", 3.0, 0.5, 2.0)
    assert p["tc_estimator"] == "mws" and list(p["capacity"]) == [0.0, 5.0] and p["seed"] == 2
    assert p["n_hidden"] == 16 and out.obsm["X_vae"].shape == (240, 3)
    lfc = scvae_beta.tl.latent_traversal(out, key="vae", dims=[0], n_cells=40, n_steps=3)
    assert lfc.shape == (40, 1) and np.isfinite(lfc.to_numpy()).all()
    assert _sha(src) == before
    assert f"the model to {folder}" in capsys.readouterr().out


def test_fit_no_save_model_and_bad_capacity(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    base = ["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--max-epochs", "1"]
    assert main([*base, "--capacity", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "scvae-beta: error: --capacity must be CMIN,CMAX, e.g. 0,25; got '5'"
    assert main([*base, "--capacity", "0,x"]) == 1
    assert "--capacity must be comma-separated floats" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()
    assert main([*base, "--n-hidden", "8", "--no-save-model", "--no-progress"]) == 0
    assert "model_dir" not in ad.read_h5ad(tmp_path / "o.h5ad").uns["scvae_beta"]
    assert not (tmp_path / "o_model").exists()


def test_tune_beta_writes_table_equal_to_the_api(toy, tmp_path, capsys):
    from scvae_beta.tune import tune_beta

    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    before = _sha(src)
    args = ["tune-beta", str(src), "-o", str(tmp_path / "t.csv"), "--betas", "1,4"]
    args += ["--seeds", "0", "--factor-keys", "group", "--metrics", "mig,sap"]
    args += ["--max-epochs", "2", "--n-hidden", "16", "--n-latent", "3", "--no-progress"]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    api = tune_beta(
        toy.copy(),
        betas=[1, 4],
        seeds=[0],
        factor_keys=["group"],
        metrics=["mig", "sap"],
        max_epochs=2,
        n_hidden=16,
        n_latent=3,
        batch_size=128,
        progress=False,
    )
    cols = [c for c in api.columns if c != "train_seconds"]
    pd.testing.assert_frame_equal(table[cols], api[cols], check_dtype=False, rtol=1e-12)
    out = capsys.readouterr().out
    assert f"recommended beta: {api.attrs['recommended_beta']:g}" in out
    assert api.attrs["reason"] in out
    assert _sha(src) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--betas", "1,x"], "--betas must be comma-separated floats, e.g. 1,2,4,8; got '1,x'"),
        (["--seeds", "0.5"], "--seeds must be comma-separated ints"),
        (["--factor-keys", "nope"], "factor keys ['nope'] not in adata.obs; available columns"),
        (["--betas", "-1"], "every beta must be a number >= 0"),
    ],
)
def test_tune_beta_errors_are_one_line(toy, tmp_path, capsys, extra, message):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    assert main(["tune-beta", str(src), "-o", str(tmp_path / "t.csv"), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvae-beta: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "t.csv").exists()


def test_tune_beta_refuses_h5ad_output(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    assert main(["tune-beta", str(src), "-o", str(tmp_path / "t.h5ad")]) == 1
    assert "CSV" in capsys.readouterr().err


def test_datasets_list_and_fetch_bundled(tmp_path, capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in scvae_beta.datasets.list_datasets()["name"]:
        assert name in out
    dst = tmp_path / "d" / "pbmc.h5ad"
    args = ["datasets", "fetch", "pbmc_sorted", "--cache-dir", str(tmp_path), "-o", str(dst)]
    assert main(args) == 0
    assert "pbmc_sorted: 3500 cells x 2000 genes" in capsys.readouterr().out
    adata = ad.read_h5ad(dst)
    assert adata.shape == (3500, 2000) and "trueLabel" in adata.obs
    assert main(["datasets", "fetch", "no_such_set"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvae-beta: error: unknown data set 'no_such_set'; available:")
    assert "pbmc_sorted" in err and len(err.splitlines()) == 1


def _subparsers(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


def test_every_option_of_every_subcommand_has_help(capsys):
    subs = dict(_subparsers(_parser()))
    expected = {("demo",), ("fit",), ("tune-beta",), ("datasets",)}
    assert expected | {("datasets", "list"), ("datasets", "fetch")} == set(subs)
    for path, sub in subs.items():
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help.strip(), (path, action.dest)
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text, (path, opt)
    fit_opts = {o for a in subs[("fit",)]._actions for o in a.option_strings}
    assert {"--alpha", "--gamma", "--tc-estimator", "--capacity", "--model-dir"} <= fit_opts
