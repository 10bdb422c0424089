"""Training throughput of ``scvae_beta.fit`` against scvi-tools' ``SCVI``, measured in one run.

Same synthetic NB data (default 20,000 cells x 2,000 genes, ~90 % zeros), same architecture
(one hidden layer of 128 in encoder and decoder, BatchNorm, dropout 0.1 in the encoder,
n_latent 10, NB likelihood with gene-wise dispersion, observed library size, no batch key),
same batch size, same number of epochs, 90 % of the cells for training, KL weight 1 from the
first step (no warm-up) in both. Runs alternate between the two tools, each in a fresh
subprocess, on ``--threads`` torch threads.

Reported per batch size (median over ``--repeats`` runs):

* per-epoch cost: the slope ``(T(epochs) - T(short)) / (epochs - short)`` between a
  ``--short-epochs`` run and the full run in the same worker process (after a warm-up on four
  batches, the same procedure for both tools), so fixed costs (setup, scvae_beta's final
  encoding, ELBO and decomposition of all cells) cancel; the ratio is SCVI's over ours.

* cells/s = training cells x epochs / seconds. For scvae_beta the seconds are the *whole*
  ``fit`` call (input checks, training with a validation pass every epoch, and the final
  latents and ELBO of all cells); for SCVI only ``model.train()`` (no validation). The ratio
  is therefore conservative for scvae_beta.
* final training loss per cell (last epoch's mean of reconstruction + KL, train mode) and the
  negative ELBO per training cell after training (eval mode, one posterior sample).
* scvae_beta's peak memory during ``fit``: increase of the process's peak RSS over the RSS
  before the call (taken after ``malloc_trim``), against 3 x the sparse count matrix
  (data + indices + indptr) plus the model parameters; min / median / max over repeats,
  since glibc's heap makes it vary from run to run. Before it, a one-epoch warm-up fit on
  4 batches of cells with the same batch size loads torch's kernels, thread pools and
  per-shape workspaces, so the peak measures what fit itself needs.

Run (needs scvi-tools; see DEVELOPERS.md for ``.venv-bench``)::

    .venv-bench/bin/python benchmarks/throughput.py                 # about 10 minutes
    .venv-bench/bin/python benchmarks/throughput.py --epochs 3 --repeats 1   # quick look

Without scvi-tools installed it measures scvae_beta alone and says so. Run it on an otherwise
idle machine: with two busy-waiting OpenMP pools on two cores, timings are meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- memory


def _status(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS, then reset the kernel's peak-RSS counter (Linux >= 4.0).

    Without ``malloc_trim`` the baseline RSS would include memory the warm-up freed but
    glibc kept, and the fit would "reuse" it for free: the peak would be understated.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- workers


def _worker_ours(data_path: str, batch_size: int, epochs: int, seed: int, short: int) -> dict:
    import gc

    import anndata as ad
    import numpy as np

    import scvae_beta

    adata = ad.read_h5ad(data_path)
    common = dict(
        beta=1.0,
        n_latent=10,
        n_hidden=128,
        n_layers=1,
        dropout=0.1,
        likelihood="nb",
        kl_schedule="constant",
        early_stopping=False,
        validation_fraction=0.1,
        progress=False,
        seed=seed,
    )
    # Warm-up on a few batches of cells with the same batch size: loads torch's kernels,
    # thread pools and GEMM workspaces for these shapes outside the measured peak.
    warm = adata[: 4 * batch_size].copy()
    scvae_beta.fit(warm, batch_size=batch_size, max_epochs=1, **common)
    del warm
    # Per-epoch cost: the slope between a short and the full fit (fixed costs cancel).
    t0 = time.perf_counter()
    scvae_beta.fit(adata.copy(), batch_size=batch_size, max_epochs=short, **common)
    short_seconds = time.perf_counter() - t0
    gc.collect()
    peak_reset = _reset_peak_rss()
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    model = scvae_beta.fit(adata, batch_size=batch_size, max_epochs=epochs, **common)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") - rss0 if peak_reset else float("nan")
    u = adata.uns["scvae_beta"]
    n_train = int(u["training"]["n_train"])
    train_idx = np.setdiff1d(np.arange(adata.n_obs), u["validation_indices"])
    X = adata.X
    return {
        "tool": "scvae_beta",
        "batch_size": batch_size,
        "seconds": seconds,
        "epoch_seconds": (seconds - short_seconds) / (epochs - short),
        "loop_seconds": float(u["training"]["seconds"]),
        "n_train_cells": n_train,
        "cells_per_s": n_train * epochs / seconds,
        "final_train_loss": float(u["history"]["train_loss"].iloc[-1]),
        "neg_elbo_per_cell": -model.get_elbo(adata[train_idx]),
        "peak_bytes": peak,
        "sparse_bytes": int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes),
        "model_bytes": int(sum(p.numel() * p.element_size() for p in model.module.parameters())),
    }


def _worker_scvi(data_path: str, batch_size: int, epochs: int, seed: int, short: int) -> dict:
    import anndata as ad

    sys.path.insert(0, str(HERE))
    from _scvi_baseline import train_scvi

    adata = ad.read_h5ad(data_path)
    # Same procedure as for scvae_beta: a warm-up on 4 batches, a short run, the full run.
    train_scvi(adata[: 4 * batch_size].copy(), batch_size=batch_size, max_epochs=1, seed=seed)
    short_seconds = train_scvi(adata, batch_size=batch_size, max_epochs=short, seed=seed)["seconds"]
    res = train_scvi(adata, batch_size=batch_size, max_epochs=epochs, seed=seed)
    return {
        "tool": "scvi",
        "batch_size": batch_size,
        "seconds": res["seconds"],
        "epoch_seconds": (res["seconds"] - short_seconds) / (epochs - short),
        "n_train_cells": res["n_train_cells"],
        "cells_per_s": res["cells_per_s"],
        "final_train_loss": res["final_train_loss"],
        "neg_elbo_per_cell": res["neg_elbo_per_cell"],
        "version": res["scvi_version"],
    }


def _run_worker(tool: str, args, data_path: str, batch_size: int, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--data",
        data_path,
        "--batch-size",
        str(batch_size),
        "--epochs",
        str(args.epochs),
        "--seed",
        str(seed),
        "--short-epochs",
        str(args.short_epochs),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{tool} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver


def _scvi_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("scvi") is not None
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=20000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--short-epochs", type=int, default=1, help="short run for the per-epoch slope")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=["ours", "scvi"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        fn = _worker_ours if args.worker == "ours" else _worker_scvi
        print(json.dumps(fn(args.data, args.batch_size, args.epochs, args.seed, args.short_epochs)))
        return

    sys.path.insert(0, str(HERE))
    from _synthetic import make_counts

    tools = ["scvi", "ours"] if _scvi_available() else ["ours"]
    if tools == ["ours"]:
        print("scvi-tools is not installed: measuring scvae_beta alone (no ratio)")
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "counts.h5ad")
        adata = make_counts(args.cells, args.genes, seed=args.seed)
        zeros = 1 - adata.X.nnz / (adata.n_obs * adata.n_vars)
        adata.write_h5ad(data_path)
        print(
            f"data: {adata.n_obs} cells x {adata.n_vars} genes, {zeros:.1%} zeros; "
            f"{args.epochs} epochs; {args.threads} threads; repeats {args.repeats}"
        )
        results: dict[tuple[str, int], list[dict]] = {}
        for rep in range(args.repeats):
            for bs in args.batch_sizes:
                order = tools if rep % 2 == 0 else tools[::-1]  # alternate who goes first
                for tool in order:
                    r = _run_worker(tool, args, data_path, bs, args.seed)
                    results.setdefault((tool, bs), []).append(r)
                    print(
                        f"  run {rep + 1} batch {bs:5d} {r['tool']:10s} "
                        f"{r['cells_per_s']:8.0f} cells/s  {r['seconds']:6.1f} s  "
                        f"{r['epoch_seconds']:5.2f} s/epoch  "
                        f"train loss {r['final_train_loss']:.2f}  "
                        f"-ELBO {r['neg_elbo_per_cell']:.2f}",
                        flush=True,
                    )
    _summary(results, args, tools)


def _summary(results, args, tools) -> None:
    med = statistics.median
    if "scvi" in tools:
        print(
            f"\nper-epoch cost (slope between {args.short_epochs}- and {args.epochs}-epoch runs, "
            "median over repeats)"
        )
        for bs in args.batch_sizes:
            o = med(r["epoch_seconds"] for r in results[("ours", bs)])
            sc = med(r["epoch_seconds"] for r in results[("scvi", bs)])
            print(f"  batch {bs:5d}: scvae_beta {o:.2f} s, SCVI {sc:.2f} s -> {sc / o:.2f}x SCVI")
    print("\nsummary (median over repeats)")
    print(
        f"{'batch':>6} {'scvae_beta cells/s':>19} {'SCVI cells/s':>13} {'ratio':>6} "
        f"{'loss ours':>10} {'loss SCVI':>10} {'diff':>7} {'-ELBO ours':>11} {'-ELBO SCVI':>11}"
    )
    for bs in args.batch_sizes:
        ours = results[("ours", bs)]
        o_cps = med(r["cells_per_s"] for r in ours)
        o_loss = med(r["final_train_loss"] for r in ours)
        o_elbo = med(r["neg_elbo_per_cell"] for r in ours)
        if "scvi" in tools:
            sc = results[("scvi", bs)]
            s_cps = med(r["cells_per_s"] for r in sc)
            s_loss = med(r["final_train_loss"] for r in sc)
            s_elbo = med(r["neg_elbo_per_cell"] for r in sc)
            print(
                f"{bs:>6} {o_cps:>19.0f} {s_cps:>13.0f} {o_cps / s_cps:>5.2f}x "
                f"{o_loss:>10.2f} {s_loss:>10.2f} {100 * (o_loss / s_loss - 1):>+6.2f}% "
                f"{o_elbo:>11.2f} {s_elbo:>11.2f}"
            )
        else:
            print(f"{bs:>6} {o_cps:>19.0f} {'-':>13} {'-':>6} {o_loss:>10.2f}")
    print("\npeak memory of scvae_beta.fit (increase over the RSS before the call)")
    for bs in args.batch_sizes:
        runs = results[("ours", bs)]
        peaks = sorted(r["peak_bytes"] for r in runs)
        r = runs[0]
        budget = 3 * r["sparse_bytes"] + r["model_bytes"]
        mib = " / ".join(f"{p / 2**20:.1f}" for p in (peaks[0], med(peaks), peaks[-1]))
        print(
            f"  batch {bs:5d}: peak min / median / max {mib} MiB; budget 3 x sparse "
            f"{r['sparse_bytes'] / 2**20:.1f} MiB + model {r['model_bytes'] / 2**20:.1f} MiB = "
            f"{budget / 2**20:.1f} MiB -> median {med(peaks) / budget:.2f}, "
            f"max {peaks[-1] / budget:.2f} of budget"
        )


if __name__ == "__main__":
    main()
