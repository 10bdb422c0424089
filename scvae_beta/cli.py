"""``scvae-beta`` console script: a thin wrapper over :func:`scvae_beta.fit`,
:func:`scvae_beta.tune_beta`, :func:`scvae_beta.pl.report`, the data sets and the demo.

Subcommands: ``demo``, ``fit``, ``tune-beta``, ``report``, ``datasets list``,
``datasets fetch``.
Only the options given on the command line are passed on, so every default lives in one place:
the signature of the function called (``--help`` shows it from there). Errors print as one line
on stderr with a non-zero exit code; input files are never modified, and on error nothing is
written. ``fit`` saves the model next to the output as ``<OUTPUT stem>_model/`` unless
``--model-dir`` names another folder (or ``--no-save-model``), and records the folder's absolute
path in ``uns[key]["model_dir"]`` so ``scvae_beta.tl.latent_traversal(adata)`` finds the model.
Outputs are written under temporary names and renamed into place (model folder, then output), so
a failure leaves neither behind.
"""

from __future__ import annotations

import argparse
import inspect
import os
import secrets
import shutil
import sys
import typing
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

_ERRORS = (ValueError, KeyError, TypeError, RuntimeError, OSError)

#: How ``--help`` describes a ``None`` default of a keyword.
_NONE_DEFAULT = {
    "layer": ".X",
    "batch_key": "none",
    "max_epochs": "by data size",
    "gamma": "1 for beta_tcvae, 10 for factor_vae",
    "capacity": "off",
    "kl_schedule": "linear; constant with --capacity",
    "factor_keys": "none; knee rule",
    "metrics": "all that apply",
    "checkpoint_dir": "no checkpoints",
    "checkpoint_every": "every epoch",
    "decoder_hidden": "--n-hidden for mlp, 16 for the additive decoders",
}


def _show(name: str, value) -> str:
    if value is None:
        return _NONE_DEFAULT.get(name, "none")
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _choices(annotation) -> tuple[str, ...] | None:
    """The strings of a ``Literal`` annotation (also inside ``X | None``), else ``None``."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return None


class _Options:
    """Adds options whose default (shown in ``--help``) and choices come from ``func``'s
    signature; the default is ``argparse.SUPPRESS``, so only given options reach ``args``."""

    def __init__(self, parser: argparse.ArgumentParser, func: Callable) -> None:
        self.parser = parser
        self.func = func
        self.params = inspect.signature(func).parameters

    def _annotation(self, name: str):
        ann = self.params[name].annotation
        if isinstance(ann, str):  # postponed annotations: evaluate as typing.get_type_hints does
            try:
                ann = eval(ann, getattr(inspect.unwrap(self.func), "__globals__", {}))
            except Exception:  # not resolvable here: no choices; the function checks values
                return None
        return ann

    def __call__(self, name: str, help: str, type: Callable | None = None, **kw) -> None:
        default = self.params[name].default  # KeyError: the option no longer maps to a keyword
        self.parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=type,
            choices=_choices(self._annotation(name)),
            default=argparse.SUPPRESS,
            help=f"{help} (default: {_show(name, default)})",
            **kw,
        )


def _data_options(opt: _Options) -> None:
    """Options of :func:`fit` shared by ``fit`` and ``tune-beta``."""
    opt("layer", "layer with raw counts")
    opt("batch_key", "obs column with batch labels")
    opt("n_latent", "latent dimensions", int)
    opt("n_hidden", "hidden units per layer", int)
    opt("n_layers", "hidden layers of the encoder and decoder", int)
    opt("dropout", "dropout rate of the encoder", float)
    opt("max_epochs", "epoch budget", int)
    opt("batch_size", "minibatch size", int)
    opt("device", "auto, cpu or cuda")
    _no_progress(opt.parser)


def _no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        default=argparse.SUPPRESS,
        help="hide the progress bars",
    )


def _parser() -> argparse.ArgumentParser:
    from scvae_beta.api import fit
    from scvae_beta.demo import run_demo
    from scvae_beta.tune import tune_beta

    p = argparse.ArgumentParser(
        prog="scvae-beta",
        description="Disentangled latent spaces (beta-VAE in Pyro, NB decoder) for single cells.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="fit the default model on the bundled sorted PBMCs")
    demo_defaults = inspect.signature(run_demo).parameters
    d.add_argument(
        "--out",
        default=argparse.SUPPRESS,
        help=f"output folder (default: {demo_defaults['out'].default})",
    )
    opt = _Options(d, run_demo)
    opt("max_epochs", "epoch budget", int)
    opt("n_cells", "subsample cells (quick runs)", int)
    opt("seed", "seed of fit, subsample, Leiden, UMAP", int)
    _no_progress(d)

    f = sub.add_parser("fit", help="fit a model to an .h5ad file of raw counts")
    f.add_argument("input", help="input .h5ad with raw counts (never modified)")
    f.add_argument("-o", "--output", required=True, help="annotated output .h5ad")
    f.add_argument(
        "--model-dir",
        default=None,
        help="folder to save the model in (default: <OUTPUT stem>_model next to the output)",
    )
    f.add_argument("--no-save-model", action="store_true", help="do not save the model")
    f.add_argument(
        "--backed",
        action="store_true",
        help="leave the counts on disk (INPUT .h5ad or .zarr, read in row chunks); the output "
        "is a copy of the input with the fit's obsm/uns entries added",
    )
    opt = _Options(f, fit)
    opt("preset", "named set of settings; options given explicitly override it")
    opt("model", "model")
    opt("decoder", "decoder family")
    f.add_argument(
        "--prune",
        dest="prune",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="drop latent dimensions on the prior after training and fine-tune",
    )
    opt("active_threshold", "mean KL (nats) above which a dimension is active and kept", float)
    opt("prune_epochs", "fine-tuning epochs after --prune", int)
    opt("decoder_hidden", "hidden width of the decoder", int)
    opt("beta", "KL weight; TC weight for beta_tcvae", float)
    opt("alpha", "beta_tcvae: weight of the MI", float)
    opt("gamma", "beta_tcvae: dimension-wise KL weight; factor_vae: TC weight", float)
    opt("tc_estimator", "TC estimator")
    opt("capacity", "capacity control CMIN,CMAX in nats, e.g. 0,25")
    opt("likelihood", "count likelihood")
    opt("dispersion", "dispersion per gene, or per gene and batch (needs --batch-key)")
    opt("kl_schedule", "KL annealing schedule")
    opt("kl_warmup", "KL warm-up: int steps or float fraction of training")
    opt("lr", "Adam learning rate", float)
    opt("patience", "early-stopping patience in epochs", int)
    opt("validation_fraction", "held-out fraction of cells (0: none)", float)
    _data_options(opt)
    opt("key_added", "obsm/uns key")
    opt("seed", "random seed", int)
    opt("norm", "normalisation in the encoder and decoder MLPs")
    opt("checkpoint_dir", "folder for a resumable checkpoint")
    opt("checkpoint_every", "epochs between checkpoints (needs --checkpoint-dir)", int)
    f.add_argument(
        "--resume",
        dest="resume",
        action="store_const",
        const=True,
        default=argparse.SUPPRESS,
        help="continue from the checkpoint in --checkpoint-dir (same data and settings)",
    )
    f.add_argument(
        "--report", action="store_true", help="also write <OUTPUT stem>_report.html beside it"
    )

    t = sub.add_parser("tune-beta", help="fit a beta sweep, write a table, recommend a beta")
    t.add_argument("input", help="input .h5ad with raw counts (never modified)")
    t.add_argument("-o", "--output", required=True, help="output table (.csv), one row per fit")
    opt = _Options(t, tune_beta)
    opt("betas", "comma-separated betas")
    opt("seeds", "comma-separated seeds")
    opt("model", "model")
    opt("factor_keys", "comma-separated obs columns of known factors")
    opt("metric", "metric the rule maximises")
    opt(
        "metrics",
        "comma-separated metrics: mig, modularity, sap, dci, latent_matching, cluster_agreement",
    )
    opt("max_distortion_increase", "relative distortion tolerance of the rule", float)
    opt("n_jobs", "parallel processes", int)
    _data_options(_Options(t, fit))

    ds = sub.add_parser("datasets", help="list or fetch public data sets")
    dsub = ds.add_subparsers(dest="datasets_command", required=True)
    dsub.add_parser("list", help="print the data sets scvae_beta.datasets.load knows")
    g = dsub.add_parser("fetch", help="download (checksum-verified) or load a data set")
    g.add_argument("name", help="data set name (see: scvae-beta datasets list)")
    g.add_argument("--cache-dir", default=None, help="download cache (default: pooch cache)")
    g.add_argument("-o", "--output", default=None, help="also write the AnnData to this .h5ad")
    g.add_argument("--url", default=None, help="download from this mirror or file:// path")
    g.add_argument(
        "--no-verify", action="store_true", help="skip the checksum (data sets without one)"
    )

    r = sub.add_parser("report", help="write a self-contained HTML report of a fitted .h5ad")
    r.add_argument("input", help=".h5ad written by scvae-beta fit or fit")
    r.add_argument(
        "-o", "--output", default=None, help="HTML file (default: <INPUT stem>_report.html)"
    )
    r.add_argument(
        "--model", default=None, help="saved model folder (default: the one the fit recorded)"
    )
    r.add_argument("--labels", default=None, help="obs column to colour the UMAP by")
    r.add_argument("--key", default="scvae_beta", help="key_added of the fit (default: scvae_beta)")
    return p


def _numbers(option: str, text: str, kind: type) -> list:
    """``"1,2,4"`` -> ``[1, 2, 4]``; a bad entry is an error naming the option."""
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        example = "0,1" if kind is int else "1,2,4,8"
        raise ValueError(
            f"{option} must be comma-separated {kind.__name__}s, e.g. {example}; got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _given(args: argparse.Namespace, func: Callable) -> dict:
    """The keywords of ``func`` given on the command line (others keep ``func``'s defaults)."""
    params = inspect.signature(func).parameters
    return {k: v for k, v in vars(args).items() if k in params}


def _fit_kwargs(args: argparse.Namespace, fit: Callable) -> dict:
    kwargs = _given(args, fit)
    if "capacity" in kwargs:
        cap = _numbers("--capacity", kwargs["capacity"], float)
        if len(cap) != 2:
            raise ValueError(f"--capacity must be CMIN,CMAX, e.g. 0,25; got {kwargs['capacity']!r}")
        kwargs["capacity"] = tuple(cap)
    if "kl_warmup" in kwargs:
        text = kwargs["kl_warmup"]
        try:
            kwargs["kl_warmup"] = int(text) if text.strip().lstrip("+").isdigit() else float(text)
        except ValueError:
            raise ValueError(
                "--kl-warmup must be an int (steps) or a float (fraction of training), "
                f"e.g. 2000 or 0.25; got {text!r}"
            ) from None
    return kwargs


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise FileNotFoundError(f"input file {src} does not exist")
    if dst.resolve() == src.resolve():
        raise ValueError("the output must differ from the input (the input is never modified)")
    _check_output(dst)
    return src, dst


def _check_output(dst: Path) -> None:
    if dst.is_dir():
        raise IsADirectoryError(
            f"the output {dst} is a directory; name a file in it, e.g. -o {dst / 'out.h5ad'}"
        )


def _temp(path: Path) -> Path:
    """A fresh hidden name next to ``path`` (same folder, so a rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _mkdirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _move_in(tmp: Path, folder: Path) -> Callable[[], None]:
    """Rename the files of ``tmp`` into ``folder`` (replacing same-named files, keeping any
    others); return a function that undoes it. ``tmp`` keeps the replaced files until removed."""
    if not folder.exists():
        os.replace(tmp, folder)
        return lambda: shutil.rmtree(folder, ignore_errors=True)
    old = tmp / ".replaced"
    old.mkdir()
    moved: list[str] = []

    def undo() -> None:
        for name in moved:
            with suppress(OSError):
                os.remove(folder / name)
            if (old / name).exists():
                os.replace(old / name, folder / name)

    try:
        for f in sorted(tmp.iterdir()):
            if f != old:
                moved.append(f.name)
                if (folder / f.name).exists():
                    os.replace(folder / f.name, old / f.name)
                os.replace(f, folder / f.name)
    except BaseException:
        undo()
        raise
    return undo


def _publish(
    dst: Path,
    write: Callable[[Path], object],
    folder: Path | None = None,
    save: Callable[[Path], object] | None = None,
) -> None:
    """``write(path)`` the output and ``save(path)`` the model under temporary names, then
    rename both into place (the model first); on any error remove everything written."""
    made: list[Path] = []
    tmp_out = tmp_model = None
    undo_model = None
    try:
        made += _mkdirs(dst.parent)
        tmp_out = _temp(dst)
        write(tmp_out)
        if folder is not None:
            made += _mkdirs(folder.parent)
            tmp_model = _temp(folder)
            save(tmp_model)
            undo_model = _move_in(tmp_model, folder)
        os.replace(tmp_out, dst)
    except BaseException:
        if undo_model is not None:
            undo_model()
        if tmp_out is not None:
            with suppress(OSError):
                if tmp_out.is_dir():  # a .zarr store
                    shutil.rmtree(tmp_out)
                else:
                    os.remove(tmp_out)
        for p in sorted(made, key=lambda p: len(p.parts), reverse=True):
            with suppress(OSError):
                p.rmdir()  # only the (empty) folders created here
        raise
    finally:
        if tmp_model is not None:
            shutil.rmtree(tmp_model, ignore_errors=True)


def _fit(args: argparse.Namespace) -> None:
    import anndata as ad

    from scvae_beta.api import fit

    src, dst = _paths(args)
    folder = None
    if not args.no_save_model:
        folder = Path(args.model_dir) if args.model_dir else dst.with_name(dst.stem + "_model")
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"the model folder {folder} is a file; pass another --model-dir")
        if folder.resolve() == dst.resolve() or folder.resolve() == src.resolve():
            raise ValueError(f"--model-dir {folder} must differ from the input and the output")
    kwargs = _fit_kwargs(args, fit)
    if args.backed:  # counts stay on disk; the output is an annotated copy of the input
        from scvae_beta._ondisk import output_kind
        from scvae_beta.data import read_backed

        output_kind(src, dst)
        adata = read_backed(src)
    else:
        adata = ad.read_h5ad(src)
    model = fit(adata, **kwargs)
    from scvae_beta.train.distributed import rank_and_world, shutdown

    rank = rank_and_world()[0]
    shutdown()  # under torchrun: every rank is done with the group before rank 0 writes
    if rank != 0:  # rank 0 writes the outputs
        return
    key = kwargs.get("key_added", inspect.signature(fit).parameters["key_added"].default)
    u = adata.uns[key]
    if folder is not None:
        u["model_dir"] = str(folder.resolve())
    if args.backed:
        from scvae_beta._ondisk import annotated_copy

        def write(path: Path) -> None:
            annotated_copy(src, path, adata, key)
    else:

        def write(path: Path) -> None:
            adata.write_h5ad(path, compression="gzip")

    _publish(dst, write, folder, lambda path: model.save(path))
    saved = "" if folder is None else f" and the model to {folder}"
    print(
        f"fitted {adata.n_obs} cells x {adata.n_vars} genes: ELBO {u['elbo']:.2f} nats/cell, "
        f"{u['n_active']} active dims; wrote {dst}{saved}"
    )
    if args.report:
        from scvae_beta.pl import report

        print(f"wrote {report(adata, key=key, model=model, path=_report_path(dst))}")


def _report_path(h5ad: Path) -> Path:
    return h5ad.with_name(h5ad.stem + "_report.html")


def _report(args: argparse.Namespace) -> None:
    import anndata as ad

    from scvae_beta.pl import report

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input file {src} does not exist")
    dst = Path(args.output) if args.output else _report_path(src)
    _check_output(dst)
    path = report(ad.read_h5ad(src), key=args.key, model=args.model, labels=args.labels, path=dst)
    print(f"wrote {path}")


def _tune(args: argparse.Namespace) -> None:
    import anndata as ad

    from scvae_beta.api import fit
    from scvae_beta.tune import tune_beta

    src, dst = _paths(args)
    if dst.suffix.lower() == ".h5ad":
        raise ValueError(f"the output is a CSV table; got {dst} (use e.g. -o tune.csv)")
    kwargs = {**_given(args, fit), **_given(args, tune_beta)}
    if "betas" in kwargs:
        kwargs["betas"] = _numbers("--betas", kwargs["betas"], float)
    if "seeds" in kwargs:
        kwargs["seeds"] = _numbers("--seeds", kwargs["seeds"], int)
    for name in ("factor_keys", "metrics"):
        if name in kwargs:
            kwargs[name] = _names(kwargs[name])
    table = tune_beta(ad.read_h5ad(src), **kwargs)
    _publish(dst, lambda path: table.to_csv(path, index=False))
    print(f"recommended beta: {table.attrs['recommended_beta']:g}; wrote {dst}")
    if not kwargs.get("progress", True):  # tune_beta prints the reason itself otherwise
        print(table.attrs["reason"])


def _datasets(args: argparse.Namespace) -> None:
    import scvae_beta.datasets as datasets

    if args.datasets_command == "list":
        print(datasets.list_datasets().to_string(index=False))
        return
    dst = None if args.output is None else Path(args.output)
    if dst is not None:
        _check_output(dst)
    adata = datasets.load(
        args.name, cache_dir=args.cache_dir, url=args.url, verify=not args.no_verify
    )
    msg = f"{args.name}: {adata.n_obs} cells x {adata.n_vars} genes"
    if dst is not None:
        _publish(dst, lambda path: adata.write_h5ad(path, compression="gzip"))
        msg += f"; wrote {dst}"
    print(msg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scvae-beta`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from scvae_beta.demo import run_demo

            run_demo(**_given(args, run_demo))
        elif args.command == "fit":
            _fit(args)
        elif args.command == "tune-beta":
            _tune(args)
        elif args.command == "datasets":
            _datasets(args)
        elif args.command == "report":
            _report(args)
    except _ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"scvae-beta: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
