"""Cost of one epoch of beta-TCVAE (and FactorVAE), and of each decoder, relative to beta-VAE
with the default MLP decoder, measured in one run.

Same synthetic NB data (default 20,000 cells x 2,000 genes, ``_synthetic.make_counts``), same
architecture and settings (``scvae_beta.fit`` defaults: one hidden layer of 128, n_latent 10,
NB, 10 % validation; KL schedule constant, no early stopping), same batch size and epochs.
Runs alternate between the models, each in a fresh subprocess on ``--threads`` threads.

Reported per batch size: the median over ``--repeats`` runs of the mean seconds per epoch
(from the fit's history, epochs after the first, so one-off start-up is excluded; each epoch
includes its validation pass), the ratio to beta-VAE measured in the same run, and the same
ratio paired by round (median and range over rounds of each round's ratio: every round runs
all models back to back, so this one is spared the machine's slow drifts). The target
of issue 3 is beta-TCVAE <= 1.3 x beta-VAE at batch sizes 128 and 1024; that of issue 10 is
the additive decoder <= 2 x the MLP decoder (``--decoders mlp,additive``; ``--n-latent``
sets the latent size of every fit, ``--decoder-hidden`` the additive decoder's width). A
decoder name ending in ``@torch`` or ``@native`` runs that fit with ``SCVAE_BETA_NATIVE`` 0 or
1: the additive decoder's output layer on its PyTorch path or on the fused native kernel
(``additive`` alone: the package's default, the kernel where it builds); ``:N`` after the name
sets that decoder's width (``additive:8,additive:16``: both widths in one run, paired).

Run on an otherwise idle machine, without ``OMP_WAIT_POLICY=PASSIVE`` (with it, every
parallel region pays a thread wake-up, which penalises the estimator's many mid-sized ops)::

    .venv/bin/python benchmarks/model_cost.py                    # about 8 minutes
    .venv/bin/python benchmarks/model_cost.py --epochs 3 --repeats 1 --n-cells 5000  # quick
    .venv/bin/python benchmarks/model_cost.py --models beta_vae,beta_tcvae \
        --decoders mlp,additive --n-latent 32 --batch-sizes 128   # issue 10
    .venv/bin/python benchmarks/model_cost.py --models beta_vae \
        --decoders mlp,additive@torch,additive@native --n-latent 32   # the two output layers
    .venv/bin/python benchmarks/model_cost.py --models beta_vae --n-latent 32 \
        --decoders mlp,additive:8,additive:16 --batch-sizes 128 --repeats 5   # widths 8 and 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("beta_vae", "beta_tcvae", "factor_vae")


def _worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    import anndata as ad
    from _synthetic import make_counts

    import scvae_beta

    torch.set_num_threads(args.threads)
    X = make_counts(args.n_cells, args.n_genes, seed=0)
    adata = ad.AnnData(X=X)
    scvae_beta.fit(
        adata,
        model=args.model,
        beta=1.0 if args.model == "beta_vae" else 6.0,
        kl_schedule="constant",
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        early_stopping=False,
        progress=False,
        device="cpu",
        seed=0,
        n_latent=args.n_latent,
        decoder=args.decoder,
        decoder_hidden=None if args.decoder == "mlp" else args.decoder_hidden,
        **({"tc_block_size": args.tc_block_size or None} if args.model == "beta_tcvae" else {}),
    )
    sec = np.diff(adata.uns["scvae_beta"]["history"]["seconds"].to_numpy())
    print(json.dumps({"sec_per_epoch": float(np.mean(sec)), "epochs": len(sec) + 1}))


def decoder_spec(name: str) -> tuple[str, int | None, str]:
    """A ``--decoders`` entry, ``decoder[:width][@torch|@native]``, as ``(decoder, width,
    kernel)``: ``"additive:8@native"`` -> ``("additive", 8, "native")``; ``width`` ``None``
    takes ``--decoder-hidden``, ``kernel`` ``""`` the package's default output layer."""
    rest, _, kernel = name.partition("@")
    if kernel not in ("", "torch", "native"):
        raise SystemExit(f"decoder suffix @{kernel}: use @torch or @native")
    decoder, colon, width = rest.partition(":")
    if not colon:
        return decoder, None, kernel
    if decoder == "mlp":
        raise SystemExit(f"decoder {name!r}: the MLP baseline takes no width")
    if not width.isdigit() or int(width) < 1:
        raise SystemExit(f"decoder {name!r}: the width after ':' must be a positive integer")
    return decoder, int(width), kernel


def _run(args: argparse.Namespace, model: str, decoder: str, batch_size: int) -> float:
    env = dict(os.environ)
    decoder, hidden, kernel = decoder_spec(decoder)
    hidden = hidden or args.decoder_hidden
    if kernel:
        env["SCVAE_BETA_NATIVE"] = "1" if kernel == "native" else "0"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--model",
        model,
        "--decoder",
        decoder,
        "--n-latent",
        str(args.n_latent),
        *(["--decoder-hidden", str(hidden)] if hidden else []),
        "--batch-size",
        str(batch_size),
        "--epochs",
        str(args.epochs),
        "--n-cells",
        str(args.n_cells),
        "--n-genes",
        str(args.n_genes),
        "--threads",
        str(args.threads),
        "--tc-block-size",
        str(args.tc_block_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["sec_per_epoch"]


def paired_ratios(times: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``times[r] / base[r]``: each round runs every model
    once, back to back, so a slowdown of the whole round cancels in its ratio, and the range
    shows how far single rounds disagree (on a shared 2-core VM the same fit's epoch time
    wanders by 20-30 % over minutes)."""
    if len(times) != len(base) or not times:
        raise ValueError("one time per round for the run and the baseline")
    r = [t / b for t, b in zip(times, base, strict=True)]
    return statistics.median(r), min(r), max(r)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="beta_vae", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--batch-sizes", default="128,1024", help="comma-separated batch sizes")
    p.add_argument("--models", default=",".join(MODELS), help="models to compare")
    p.add_argument("--decoder", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--decoders", default="mlp", help="decoders to compare (e.g. mlp,additive)")
    p.add_argument("--n-latent", type=int, default=10, help="latent dimensions of every fit")
    p.add_argument(
        "--decoder-hidden", type=int, default=None, help="decoder_hidden of the additive fits"
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs per fit (first is excluded)")
    p.add_argument("--repeats", type=int, default=3, help="fits per model and batch size")
    p.add_argument("--n-cells", type=int, default=20_000)
    p.add_argument("--n-genes", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=2, help="torch threads per fit")
    p.add_argument(
        "--tc-block-size",
        type=int,
        default=128,
        help="beta-TCVAE cells per density matrix (0: the whole minibatch in one matrix)",
    )
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    models = args.models.split(",")
    decoders = args.decoders.split(",")
    for d in decoders:
        decoder_spec(d)  # a bad entry stops here, before any fit
    if "beta_vae" not in models or "mlp" not in decoders:
        raise SystemExit("the baseline beta_vae with the mlp decoder must be among the runs")
    runs = [(m, d) for d in decoders for m in models]
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        times: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        for _ in range(args.repeats):
            for m, d in runs:
                times[m, d].append(_run(args, m, d, bs))
        base = statistics.median(times["beta_vae", "mlp"])
        for m, d in runs:
            t = times[m, d]
            med = statistics.median(t)
            same_model = statistics.median(times[m, "mlp"])
            paired = paired_ratios(t, times["beta_vae", "mlp"])
            rows.append((bs, m, d, med, min(t), max(t), med / base, med / same_model, paired))
            print(
                f"batch {bs:5d} {m:11s} {d:16s} {med:7.3f} s/epoch  ratio {med / base:5.2f}"
                f"  (to {m} + mlp {med / same_model:5.2f}; paired by round {paired[0]:5.2f},"
                f" {paired[1]:.2f}-{paired[2]:.2f})",
                flush=True,
            )
    lines = [
        f"data {args.n_cells} x {args.n_genes}, n_latent {args.n_latent}, {args.epochs} epochs, "
        f"{args.repeats} repeats, {args.threads} threads, beta-TCVAE tc_block_size "
        f"{args.tc_block_size or None}, decoder_hidden {args.decoder_hidden}",
        "",
        "| batch | model | decoder | s/epoch (median) | min | max | ratio to beta_vae + mlp "
        "| ratio to the same model + mlp | ratio to beta_vae + mlp, paired by round (range) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for bs, m, d, med, lo, hi, r, r_same, (pm, plo, phi) in rows:
        lines.append(
            f"| {bs} | {m} | {d} | {med:.3f} | {lo:.3f} | {hi:.3f} | **{r:.2f}x** | {r_same:.2f}x "
            f"| {pm:.2f}x ({plo:.2f}-{phi:.2f}) |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    tag = "" if decoders == ["mlp"] else "_" + "-".join(decoders) + f"_latent{args.n_latent}"
    tag = tag.replace("@", "+").replace(":", "h")
    out = HERE / "results" / f"model_cost_block{args.tc_block_size}{tag}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
