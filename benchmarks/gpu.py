"""GPU throughput: ``scvae_beta.fit`` against scvi-tools' ``SCVI`` on one GPU, in one short run.

Same synthetic NB data (``benchmarks/_synthetic.py``; default 100,000 cells x 2,000 genes,
~90 % zeros), same architecture (one hidden layer of 128, n_latent 10, NB, gene dispersion,
observed library size; see ``_scvi_baseline.SCVI_MODEL_KWARGS``), KL weight 1 throughout,
90 % of the cells for training. For each batch size, runs alternate between the tools
(``--repeats`` rounds). Per-epoch seconds are the slope between a 1-epoch and an
``--epochs``-epoch run, so fixed costs (set-up, the final encoding) cancel; cells/s = training
cells / per-epoch seconds. Reported beside it:

- scvae_beta variants: the matrix kept on the GPU (``data_on_device``, the default when it
  fits) vs minibatches copied from pinned host memory (``data_on_device=False``), and
  ``precision="bf16"``;
- the beta-TCVAE / beta-VAE per-epoch ratio;
- peak GPU memory allocated by torch in each run, and the mean GPU utilisation over the
  longer run (``torch.cuda.utilization``, when ``pynvml`` is installed).

Target (issue 11): >= 3x SCVI's throughput at batch 1024, the GPU not starved by the loader.
Meant to finish in under 8 minutes on a recent GPU::

    .venv-bench/bin/python benchmarks/gpu.py
    .venv/bin/python benchmarks/gpu.py --device cpu --cells 3000 --genes 200 --epochs 2  # smoke

Without scvi-tools it measures scvae_beta alone and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class _Utilisation:
    """Mean GPU utilisation (%) sampled every 50 ms while in the ``with`` block."""

    def __init__(self, device) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.05):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no pynvml / not supported
                return

    def __enter__(self):
        if self.device.type == "cuda":
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def _ours(adata, device, batch_size: int, epochs: int, **kw) -> dict:
    import torch

    import scvae_beta

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    with _Utilisation(device) as util:
        t0 = time.perf_counter()
        scvae_beta.fit(
            adata,
            device=str(device),
            max_epochs=epochs,
            batch_size=batch_size,
            kl_warmup=0,
            early_stopping=False,
            progress=False,
            **kw,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "gpu_mib": mem, "util": util.mean}


def _scvi(adata, device, batch_size: int, epochs: int) -> dict:
    import torch
    from _scvi_baseline import train_scvi

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _Utilisation(device) as util:
        res = train_scvi(
            adata,
            batch_size=batch_size,
            max_epochs=epochs,
            accelerator="gpu" if device.type == "cuda" else "cpu",
        )
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": res["seconds"], "gpu_mib": mem, "util": util.mean}


def _per_epoch(run, epochs: int) -> dict:
    short, full = run(1), run(epochs)
    return {
        "epoch_s": (full["seconds"] - short["seconds"]) / (epochs - 1),
        "gpu_mib": full["gpu_mib"],
        "util": full["util"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 128])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()

    import torch
    from _synthetic import make_counts

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; pass --device cpu for a smoke run")
    has_scvi = importlib.util.find_spec("scvi") is not None
    if not has_scvi:
        print("scvi-tools is not installed: measuring scvae_beta alone (no ratio)")
    t0 = time.perf_counter()
    adata = make_counts(args.cells, args.genes, seed=0)
    n_train = args.cells - round(0.1 * args.cells)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; {args.cells:,} cells x {args.genes:,} genes; torch {torch.__version__}")

    variants = {
        "scvae_beta": {},
        "scvae_beta, pinned host copies": {"data_on_device": False},
        "scvae_beta, bf16": {"precision": "bf16"},
        "scvae_beta beta_tcvae": {"model": "beta_tcvae"},
    }
    rows = []
    for bs in args.batch_sizes:
        results: dict[str, list[dict]] = {}
        warm = adata[: 4 * bs].copy()  # load kernels and workspaces before timing
        _ours(warm.copy(), device, bs, 1)
        if has_scvi:
            _scvi(warm, device, bs, 1)
        for _ in range(args.repeats):  # alternate the tools
            if has_scvi:
                res = _per_epoch(lambda e, bs=bs: _scvi(adata, device, bs, e), args.epochs)
                results.setdefault("SCVI", []).append(res)
            for label, kw in variants.items():
                res = _per_epoch(
                    lambda e, bs=bs, kw=kw: _ours(adata.copy(), device, bs, e, **kw), args.epochs
                )
                results.setdefault(label, []).append(res)
            print(f"  batch {bs}: round done at {time.perf_counter() - t0:.0f} s", flush=True)
        for label, runs in results.items():
            epoch_s = statistics.median(r["epoch_s"] for r in runs)
            rows.append((bs, label, epoch_s, runs[-1]["gpu_mib"], runs[-1]["util"]))

    print("\n| batch | run | s/epoch | cells/s | vs SCVI | peak GPU MiB | GPU util % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for bs, label, epoch_s, mib, util in rows:
        ref = next((r[2] for r in rows if r[0] == bs and r[1] == "SCVI"), None)
        ratio = f"{ref / epoch_s:.2f}x" if ref else "-"
        mib = "-" if mib is None else f"{mib:,.0f}"
        util = "-" if util is None else f"{util:.0f}"
        print(
            f"| {bs} | {label} | {epoch_s:.2f} | {n_train / epoch_s:,.0f} | {ratio} "
            f"| {mib} | {util} |"
        )
    for bs in args.batch_sizes:
        vae = next(r[2] for r in rows if r[0] == bs and r[1] == "scvae_beta")
        tc = next(r[2] for r in rows if r[0] == bs and r[1] == "scvae_beta beta_tcvae")
        print(f"batch {bs}: beta-TCVAE / beta-VAE epoch ratio {tc / vae:.2f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
