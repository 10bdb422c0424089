"""The scvae-beta console script: fit, tune-beta, datasets; errors one line; input untouched."""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
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
    params = out.uns["scvae_beta"]["params"]  # the demo fits the recommended preset
    assert (params["preset"], params["decoder"], params["model"], params["beta"]) == (
        "disentangle",
        "additive",
        "beta_vae",
        1.0,
    )
    assert "preset 'disentangle' = beta_vae (β = 1 on the KL)" in text


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
    expected = {("demo",), ("fit",), ("tune-beta",), ("datasets",), ("report",)}
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


# -- outputs are written atomically: a failure leaves neither output nor model --------------------


def _fit_args(src, dst, *extra):
    return ["fit", str(src), "-o", str(dst), "--max-epochs", "1", "--n-hidden", "8", *extra]


def test_output_that_is_a_directory_fails_before_fitting(toy, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    (tmp_path / "out").mkdir()
    never = functools.wraps(scvae_beta.fit)(lambda *a, **k: pytest.fail("fit ran"))
    monkeypatch.setattr(scvae_beta, "fit", never)
    assert main(_fit_args(src, tmp_path / "out", "--no-progress")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvae-beta: error: the output ") and "is a directory" in err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out"]
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("failing", ["write_h5ad", "save"])
def test_a_failed_write_leaves_neither_output_nor_model(
    toy, tmp_path, capsys, monkeypatch, failing
):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    target = ad.AnnData if failing == "write_h5ad" else scvae_beta.FittedModel
    monkeypatch.setattr(target, failing, fail)
    dst = tmp_path / "new" / "out.h5ad"
    assert main(_fit_args(src, dst, "--no-progress")) == 1
    assert capsys.readouterr().err.strip() == "scvae-beta: error: No space left on device"
    assert [p.name for p in tmp_path.iterdir()] == ["in.h5ad"]  # no output, model, temp, folder


def test_a_failed_rename_restores_the_previous_model(toy, tmp_path, capsys, monkeypatch):
    import scvae_beta.cli as cli

    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text("old model")
    (folder / "notes.txt").write_text("mine")
    dst = tmp_path / "out.h5ad"
    real_replace = cli.os.replace

    def replace(a, b):
        if Path(b) == dst:
            raise PermissionError("cannot rename onto the output")
        real_replace(a, b)

    monkeypatch.setattr(cli.os, "replace", replace)
    args = _fit_args(src, dst, "--model-dir", str(folder), "--no-progress")
    assert main(args) == 1
    assert "cannot rename onto the output" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "m"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "notes.txt"]
    assert (folder / "model.json").read_text() == "old model"
    monkeypatch.setattr(cli.os, "replace", real_replace)
    assert main(args) == 0  # success replaces the model's files and keeps the others
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pt", "notes.txt"]
    assert scvae_beta.load(folder).var_names == list(toy.var_names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "m", "out.h5ad"]


# -- only the options given are passed on; defaults live in the signatures -----------------------


def _capture(monkeypatch, module, name):
    """Replace ``module.name`` by a stub (same signature) that records its keywords and fails
    the way fit does on a bad key: a ValueError."""
    real = getattr(module, name)
    seen = {}

    @functools.wraps(real)
    def stub(adata, **kwargs):
        seen.update(kwargs)
        raise ValueError("key_added='a/b' contains '/'; \n pass a key without '/'")

    monkeypatch.setattr(module, name, stub)
    return seen


def test_fit_passes_on_only_the_options_given(toy, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    seen = _capture(monkeypatch, scvae_beta.api, "fit")
    assert main(["fit", str(src), "-o", str(tmp_path / "o.h5ad")]) == 1
    assert seen == {}
    err = capsys.readouterr().err.strip()
    assert err == "scvae-beta: error: key_added='a/b' contains '/'; pass a key without '/'"
    args = ["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--beta", "2", "--n-layers", "2"]
    args += ["--dropout", "0.2", "--dispersion", "gene-batch", "--kl-warmup", "100"]
    args += ["--patience", "5", "--validation-fraction", "0.2", "--no-progress"]
    args += ["--capacity", "0,5", "--key-added", "a/b", "--batch-key", "group"]
    assert main(args) == 1
    assert seen == {
        "beta": 2.0,
        "n_layers": 2,
        "dropout": 0.2,
        "dispersion": "gene-batch",
        "kl_warmup": 100,
        "patience": 5,
        "validation_fraction": 0.2,
        "progress": False,
        "capacity": (0.0, 5.0),
        "key_added": "a/b",
        "batch_key": "group",
    }
    seen.clear()
    assert main(["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--kl-warmup", "0.5"]) == 1
    assert seen == {"kl_warmup": 0.5}
    assert main(["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--kl-warmup", "x"]) == 1
    assert "--kl-warmup must be an int (steps) or a float" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["in.h5ad"]


def test_key_added_with_a_slash_is_one_line_and_writes_nothing(toy, tmp_path, capsys):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    assert main(_fit_args(src, tmp_path / "o.h5ad", "--key-added", "a/b", "--no-progress")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("scvae-beta: error: ") and "key_added" in err
    assert len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["in.h5ad"]


def test_tune_beta_and_demo_pass_on_only_the_options_given(toy, tmp_path, monkeypatch):
    import scvae_beta.demo
    import scvae_beta.tune

    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    seen = _capture(monkeypatch, scvae_beta.tune, "tune_beta")
    assert main(["tune-beta", str(src), "-o", str(tmp_path / "t.csv")]) == 1
    assert seen == {}
    args = ["tune-beta", str(src), "-o", str(tmp_path / "t.csv"), "--betas", "1,2"]
    args += ["--seeds", "3", "--factor-keys", "group", "--n-latent", "3", "--dropout", "0"]
    assert main([*args, "--no-progress"]) == 1
    assert seen == {
        "betas": [1.0, 2.0],
        "seeds": [3],
        "factor_keys": ["group"],
        "n_latent": 3,
        "dropout": 0.0,
        "progress": False,
    }
    demo_seen = {}
    real_demo = scvae_beta.demo.run_demo
    monkeypatch.setattr(
        scvae_beta.demo, "run_demo", functools.wraps(real_demo)(lambda **kw: demo_seen.update(kw))
    )
    assert main(["demo", "--n-cells", "50"]) == 0
    assert demo_seen == {"n_cells": 50}


def test_help_shows_the_defaults_of_the_signatures():
    from scvae_beta.cli import _show
    from scvae_beta.tune import tune_beta

    subs = dict(_subparsers(_parser()))
    for path, func in [(("fit",), scvae_beta.fit), (("tune-beta",), tune_beta)]:
        params = inspect.signature(func).parameters
        fit_params = inspect.signature(scvae_beta.fit).parameters
        n = 0
        for action in subs[path]._actions:
            if action.default is argparse.SUPPRESS and action.nargs != 0:  # not flags
                p = params.get(action.dest) or fit_params.get(action.dest)
                if p is not None:  # --no-progress maps to progress=False
                    assert action.help.endswith(f"(default: {_show(p.name, p.default)})")
                    n += 1
        assert n >= 8, path
    fit_opts = {o for a in subs[("fit",)]._actions for o in a.option_strings}
    new = {"--n-layers", "--dropout", "--dispersion", "--kl-warmup", "--patience"}
    assert new | {"--validation-fraction"} <= fit_opts
    fit_help = subs[("fit",)].format_help()
    assert "(default: 1.0)" in fit_help and "(default: 0.25)" in fit_help
    assert "(default: 0.5,1,2,4,8,16)" in subs[("tune-beta",)].format_help()


def test_fit_checkpoint_and_resume(toy, tmp_path, capsys, monkeypatch):
    import scvae_beta.train.loop as loop_mod

    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    ckpt = ["--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "1"]
    assert main(_fit_args(src, tmp_path / "whole.h5ad", "--max-epochs", "3")) == 0

    real, calls = loop_mod.validation_pass, []

    def preempted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "validation_pass", preempted)
    part = _fit_args(src, tmp_path / "part.h5ad", "--max-epochs", "3", *ckpt)
    with pytest.raises(KeyboardInterrupt):
        main(part)
    assert not (tmp_path / "part.h5ad").exists()
    monkeypatch.undo()
    assert main(part) == 1  # a checkpoint is there: refused without --resume
    assert "pass resume=True" in capsys.readouterr().err
    assert main([*part, "--resume"]) == 0
    whole, part = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("whole", "part"))
    np.testing.assert_array_equal(part.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"])
    assert part.uns["scvae_beta"]["params"]["resume"]


def test_fit_passes_on_preset_decoder_and_prune(toy, tmp_path, monkeypatch):
    src = tmp_path / "in.h5ad"
    toy.write_h5ad(src)
    seen = _capture(monkeypatch, scvae_beta.api, "fit")
    args = ["fit", str(src), "-o", str(tmp_path / "o.h5ad"), "--preset", "disentangle"]
    assert main([*args, "--decoder", "mlp", "--prune"]) == 1
    assert seen == {"preset": "disentangle", "decoder": "mlp", "prune": True}
    # the pruning threshold and epochs, and the decoder's width, were not reachable from here
    seen.clear()
    extra = ["--active-threshold", "0.2", "--prune-epochs", "5", "--decoder-hidden", "8"]
    assert main([*args, "--prune", *extra]) == 1
    assert seen == {
        "preset": "disentangle",
        "prune": True,
        "active_threshold": 0.2,
        "prune_epochs": 5,
        "decoder_hidden": 8,
    }
    with pytest.raises(SystemExit):
        main([*args[:-1], "fast"])  # not a preset: argparse lists the choices


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data")
@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_fit_backed_writes_an_annotated_copy(toy, tmp_path, capsys, fmt):
    src = tmp_path / f"in.{fmt}"
    toy.obsm["X_old"] = np.ones((toy.n_obs, 2), dtype=np.float32)
    toy.write_h5ad(src) if fmt == "h5ad" else toy.write_zarr(src)
    dst = tmp_path / f"out.{fmt}"
    args = _fit_args(src, dst, "--backed", "--no-progress", "--n-latent", "3")
    assert main([*args[:3], str(tmp_path / "out.csv"), *args[4:]]) == 1  # format must match
    assert "must be a" in capsys.readouterr().err
    assert main(args) == 0
    read = ad.read_h5ad if fmt == "h5ad" else ad.read_zarr
    out = read(dst)
    assert out.obsm["X_scvae_beta"].shape == (240, 3)
    np.testing.assert_array_equal(out.obsm["X_old"], 1.0)
    assert out.uns["scvae_beta"]["params"]["n_latent"] == 3
    assert out.uns["scvae_beta"]["model_dir"] == str((tmp_path / "out_model").resolve())
    np.testing.assert_array_equal(out.X.toarray(), toy.X.toarray())
    model = scvae_beta.load(tmp_path / "out_model")
    np.testing.assert_allclose(model.get_latent(toy), out.obsm["X_scvae_beta"], atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))
