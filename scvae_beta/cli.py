"""``scvae-beta`` console script: a thin wrapper over :func:`scvae_beta.fit`,
:func:`scvae_beta.tune_beta`, the data sets and the demo.

Subcommands: ``demo``, ``fit``, ``tune-beta``, ``datasets list``, ``datasets fetch``.
Errors print as one line on stderr with a non-zero exit code; input files are never modified.
``fit`` saves the model next to the output as ``<OUTPUT stem>_model/`` unless ``--model-dir``
names another folder (or ``--no-save-model``), and records the folder's absolute path in
``uns[key]["model_dir"]`` so ``scvae_beta.tl.latent_traversal(adata)`` finds the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scvae_beta.config import LIKELIHOODS, MODELS, SCHEDULES, TC_ESTIMATORS

_ERRORS = (ValueError, KeyError, TypeError, RuntimeError, OSError)


def _data_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``fit`` and ``tune-beta``: where the counts are, and the model size."""
    p.add_argument("--layer", default=None, help="layer with raw counts (default: .X)")
    p.add_argument("--batch-key", default=None, help="obs column with batch labels")
    p.add_argument("--n-latent", type=int, default=10, help="latent dimensions (default: 10)")
    p.add_argument("--n-hidden", type=int, default=128, help="hidden units (default: 128)")
    p.add_argument(
        "--max-epochs", type=int, default=None, help="epoch budget (default: by data size)"
    )
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default: 128)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scvae-beta",
        description="Disentangled latent spaces (beta-VAE in Pyro, NB decoder) for single cells.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="fit the default model on the bundled sorted PBMCs")
    d.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--max-epochs", type=int, default=None, help="epoch budget (default: auto)")
    d.add_argument("--n-cells", type=int, default=None, help="subsample cells (quick runs)")
    d.add_argument("--seed", type=int, default=0, help="seed of fit, subsample, Leiden, UMAP")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    f = sub.add_parser("fit", help="fit a model to an .h5ad file of raw counts")
    f.add_argument("input", help="input .h5ad with raw counts (never modified)")
    f.add_argument("-o", "--output", required=True, help="annotated output .h5ad")
    f.add_argument(
        "--model-dir",
        default=None,
        help="folder to save the model in (default: <OUTPUT stem>_model next to the output)",
    )
    f.add_argument("--no-save-model", action="store_true", help="do not save the model")
    f.add_argument("--model", default="beta_vae", choices=MODELS, help="model (default: beta_vae)")
    f.add_argument(
        "--beta", type=float, default=1.0, help="KL weight; TC weight for beta_tcvae (default: 1)"
    )
    f.add_argument("--alpha", type=float, default=None, help="beta_tcvae: weight of the MI")
    f.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="beta_tcvae: dimension-wise KL weight (default 1); factor_vae: TC weight (default 10)",
    )
    f.add_argument(
        "--tc-estimator", default="mss", choices=TC_ESTIMATORS, help="TC estimator (default: mss)"
    )
    f.add_argument(
        "--capacity", default=None, help="capacity control CMIN,CMAX in nats, e.g. 0,25 (off)"
    )
    f.add_argument(
        "--likelihood", default="nb", choices=LIKELIHOODS, help="count likelihood (default: nb)"
    )
    f.add_argument(
        "--kl-schedule", default=None, choices=SCHEDULES, help="KL annealing (default: linear)"
    )
    f.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    _data_options(f)
    f.add_argument("--key-added", default="scvae_beta", help="obsm/uns key (default: scvae_beta)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    t = sub.add_parser("tune-beta", help="fit a beta sweep, write a table, recommend a beta")
    t.add_argument("input", help="input .h5ad with raw counts (never modified)")
    t.add_argument("-o", "--output", required=True, help="output table (.csv), one row per fit")
    t.add_argument(
        "--betas", default="0.5,1,2,4,8,16", help="comma-separated betas (default: 0.5,...,16)"
    )
    t.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: 0,1)")
    t.add_argument(
        "--model", default="beta_tcvae", choices=MODELS, help="model (default: beta_tcvae)"
    )
    t.add_argument(
        "--factor-keys",
        default=None,
        help="comma-separated obs columns of known factors (default: none; knee rule)",
    )
    t.add_argument("--metric", default="mig", help="metric the rule maximises (default: mig)")
    t.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metrics: mig, modularity, sap, dci, latent_matching, "
        "cluster_agreement (default: all that apply)",
    )
    t.add_argument(
        "--max-distortion-increase",
        type=float,
        default=0.05,
        help="relative distortion tolerance of the rule (default: 0.05)",
    )
    t.add_argument("--n-jobs", type=int, default=1, help="parallel processes (default: 1)")
    _data_options(t)

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


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise FileNotFoundError(f"input file {src} does not exist")
    if dst.resolve() == src.resolve():
        raise ValueError("the output must differ from the input (the input is never modified)")
    return src, dst


def _fit(args: argparse.Namespace) -> None:
    import anndata as ad

    import scvae_beta

    src, dst = _paths(args)
    extra = {}
    if args.alpha is not None:
        extra["alpha"] = args.alpha
    if args.capacity is not None:
        cap = _numbers("--capacity", args.capacity, float)
        if len(cap) != 2:
            raise ValueError(f"--capacity must be CMIN,CMAX, e.g. 0,25; got {args.capacity!r}")
        extra["capacity"] = tuple(cap)
    adata = ad.read_h5ad(src)
    model = scvae_beta.fit(
        adata,
        model=args.model,
        beta=args.beta,
        gamma=args.gamma,
        tc_estimator=args.tc_estimator,
        n_latent=args.n_latent,
        n_hidden=args.n_hidden,
        layer=args.layer,
        batch_key=args.batch_key,
        likelihood=args.likelihood,
        kl_schedule=args.kl_schedule,
        lr=args.lr,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        key_added=args.key_added,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        **extra,
    )
    u = adata.uns[args.key_added]
    saved = ""
    if not args.no_save_model:
        folder = Path(args.model_dir) if args.model_dir else dst.with_name(dst.stem + "_model")
        model.save(folder, overwrite=True)
        u["model_dir"] = str(folder.resolve())
        saved = f" and the model to {folder}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(dst, compression="gzip")
    print(
        f"fitted {adata.n_obs} cells x {adata.n_vars} genes: ELBO {u['elbo']:.2f} nats/cell, "
        f"{u['n_active']} active dims; wrote {dst}{saved}"
    )


def _tune(args: argparse.Namespace) -> None:
    import anndata as ad

    from scvae_beta.tune import tune_beta

    src, dst = _paths(args)
    if dst.suffix.lower() == ".h5ad":
        raise ValueError(f"the output is a CSV table; got {dst} (use e.g. -o tune.csv)")
    metrics = _names(args.metrics)
    table = tune_beta(
        ad.read_h5ad(src),
        betas=_numbers("--betas", args.betas, float),
        seeds=_numbers("--seeds", args.seeds, int),
        model=args.model,
        factor_keys=_names(args.factor_keys),
        metric=args.metric,
        metrics=metrics,
        max_distortion_increase=args.max_distortion_increase,
        n_jobs=args.n_jobs,
        progress=not args.no_progress,
        layer=args.layer,
        batch_key=args.batch_key,
        n_latent=args.n_latent,
        n_hidden=args.n_hidden,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(dst, index=False)
    print(f"recommended beta: {table.attrs['recommended_beta']:g}; wrote {dst}")
    if args.no_progress:  # tune_beta prints the reason itself when progress is on
        print(table.attrs["reason"])


def _datasets(args: argparse.Namespace) -> None:
    from scvae_beta import datasets

    if args.datasets_command == "list":
        print(datasets.list_datasets().to_string(index=False))
        return
    adata = datasets.load(
        args.name, cache_dir=args.cache_dir, url=args.url, verify=not args.no_verify
    )
    msg = f"{args.name}: {adata.n_obs} cells x {adata.n_vars} genes"
    if args.output:
        dst = Path(args.output)
        dst.parent.mkdir(parents=True, exist_ok=True)
        adata.write_h5ad(dst, compression="gzip")
        msg += f"; wrote {dst}"
    print(msg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scvae-beta`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from scvae_beta.demo import run_demo

            run_demo(
                args.out,
                max_epochs=args.max_epochs,
                n_cells=args.n_cells,
                seed=args.seed,
                progress=not args.no_progress,
            )
        elif args.command == "fit":
            _fit(args)
        elif args.command == "tune-beta":
            _tune(args)
        elif args.command == "datasets":
            _datasets(args)
    except _ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"scvae-beta: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
