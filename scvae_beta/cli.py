"""``scvae-beta`` console script: a thin wrapper over :func:`scvae_beta.fit` and the demo.

Errors print as one line on stderr with a non-zero exit code; input files are never modified.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    f = sub.add_parser("fit", help="fit a model to an .h5ad file of raw counts")
    f.add_argument("input", help="input .h5ad with raw counts (never modified)")
    f.add_argument("-o", "--output", required=True, help="annotated output .h5ad")
    f.add_argument("--model-dir", default=None, help="also save the model to this folder")
    f.add_argument("--model", default="beta_vae", choices=["beta_vae"])
    f.add_argument("--beta", type=float, default=1.0)
    f.add_argument("--n-latent", type=int, default=10)
    f.add_argument("--layer", default=None, help="layer with raw counts (default: .X)")
    f.add_argument("--batch-key", default=None, help="obs column with batch labels")
    f.add_argument("--likelihood", default="nb", choices=["nb", "zinb", "poisson"])
    f.add_argument("--max-epochs", type=int, default=None)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--key-added", default="scvae_beta")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto", help="auto, cpu or cuda")
    f.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _fit(args: argparse.Namespace) -> None:
    import anndata as ad

    import scvae_beta

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise FileNotFoundError(f"input file {src} does not exist")
    if dst.resolve() == src.resolve():
        raise ValueError("the output must differ from the input (the input is never modified)")
    adata = ad.read_h5ad(src)
    model = scvae_beta.fit(
        adata,
        model=args.model,
        beta=args.beta,
        n_latent=args.n_latent,
        layer=args.layer,
        batch_key=args.batch_key,
        likelihood=args.likelihood,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        key_added=args.key_added,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(dst, compression="gzip")
    if args.model_dir:
        model.save(args.model_dir, overwrite=True)
    u = adata.uns[args.key_added]
    print(
        f"fitted {adata.n_obs} cells x {adata.n_vars} genes: ELBO {u['elbo']:.2f} nats/cell, "
        f"{u['n_active']} active dims; wrote {dst}"
    )


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
    except (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"scvae-beta: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
