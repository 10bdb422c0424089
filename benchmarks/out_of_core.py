"""Training from disk: one epoch of ``scvae_beta.fit`` on backed h5ad and zarr data sets of
250,000, 500,000 and 1,000,000 cells x 2,000 genes, beside in-memory training on a
200,000-cell slice of the same data, in one run.

1. A synthetic NB data set (the generative model of ``benchmarks/_synthetic.py``: 10 latent
   factors, log-normal library sizes with median 1,200 UMIs, ~90 % zeros) is written chunk by
   chunk (2,048 cells at a time, each chunk from its own seeded stream), never held whole, to
   an ``.h5ad`` file and a ``.zarr`` store at once (anndata's ``write_elem`` and
   ``sparse_dataset(...).append``; no compression in h5ad, zarr's default compressor). The
   smaller sizes are the first rows of the largest, copied in chunks.
2. Each fit runs in a fresh process (so its peak RSS is its own): ``fit(read_backed(path),
   max_epochs=1)`` with the default model (beta-VAE, NB, n_latent 10, one hidden layer of 128,
   batch 128, 10 % validation), and for the in-memory baseline ``fit`` on the first 200,000
   rows read into a CSR matrix in memory.

Printed per run: cells, training cells/s (training cells / the loop's seconds, validation
pass included), whole-fit cells/s (all cells / the whole ``fit`` call: the chunked checking
pass, one epoch, the latents, ELBO and KL decomposition of all cells), and the peak RSS of the
worker process (``ru_maxrss``: includes ~0.4 GiB of imported libraries) and its increase
during ``fit``. Targets (issue 11): peak RSS of the backed fits below 2 GiB and independent of
the number of cells; training throughput from disk >= 70 % of in memory.

Run::

    .venv/bin/python benchmarks/out_of_core.py                     # 1M cells: ~15 minutes
    .venv/bin/python benchmarks/out_of_core.py --sizes 50000 100000 --memory-cells 40000

The data go to ``--workdir`` (default: a temporary folder, removed afterwards; ~1.7 GB per
million cells and format). Files just written are mostly in the OS page cache, so on a
machine with enough RAM "disk" reads are memory copies; the RSS numbers do not count the
page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = 2048


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- data


def _params(n_genes: int, seed: int):
    """Gene-level parameters and the baseline scale calibrated to ~90 % zeros."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _synthetic import _LIB_LOG_SD, _LIB_MEDIAN, _expected_zero_fraction

    rng = np.random.default_rng([seed, 0])
    loadings = rng.normal(0.0, 0.8, size=(10, n_genes))
    base = rng.standard_normal(n_genes)
    theta = 1.5 * np.exp(0.7 * rng.standard_normal(n_genes))
    z = rng.standard_normal((1000, 10))
    lib = _LIB_MEDIAN * np.exp(_LIB_LOG_SD * rng.standard_normal(1000))
    lo, hi = 0.0, 6.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _expected_zero_fraction(mid, base, z @ loadings, lib, theta) < 0.9:
            lo = mid
        else:
            hi = mid
    return loadings, base, theta, 0.5 * (lo + hi)


def _chunk(i: int, n: int, params, seed: int):
    """Counts of chunk ``i`` (``n`` cells) as int32 CSR, from its own stream."""
    import numpy as np
    import scipy.sparse as sp

    sys.path.insert(0, str(HERE))
    from _synthetic import _LIB_LOG_SD, _LIB_MEDIAN, _softmax_rows

    loadings, base, theta, scale = params
    rng = np.random.default_rng([seed, 1, i])
    z = rng.standard_normal((n, 10))
    lib = _LIB_MEDIAN * np.exp(_LIB_LOG_SD * rng.standard_normal(n))
    mu = _softmax_rows(scale * base[None, :] + z @ loadings) * lib[:, None]
    counts = rng.poisson(rng.gamma(theta[None, :], mu / theta[None, :])).astype(np.int32)
    counts[counts.sum(1) == 0, 0] = 1
    return sp.csr_matrix(counts)


class _Writers:
    """An ``.h5ad`` file and a ``.zarr`` store written chunk by chunk."""

    def __init__(self, stem: Path, n_cells: int, n_genes: int) -> None:
        import anndata as ad
        import h5py
        import pandas as pd
        import zarr

        obs = pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str))
        var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
        self.zarr_path = stem.with_suffix(".zarr")
        self.h5 = h5py.File(stem.with_suffix(".h5ad"), "w")
        self.zr = zarr.open_group(str(self.zarr_path), mode="w", zarr_format=2)
        for root in (self.h5, self.zr):
            ad.io.write_elem(root, "/", ad.AnnData(obs=obs, var=var))
        self.datasets = None

    def append(self, X) -> None:
        import anndata as ad

        if self.datasets is None:
            for root in (self.h5, self.zr):
                ad.io.write_elem(root, "X", X)
            self.datasets = [ad.io.sparse_dataset(r["X"]) for r in (self.h5, self.zr)]
        else:
            for ds in self.datasets:
                ds.append(X)

    def close(self) -> None:
        import zarr

        self.h5.close()
        zarr.consolidate_metadata(str(self.zarr_path))


def write_data(workdir: Path, sizes: list[int], n_genes: int, seed: int) -> None:
    """``data_<n>.h5ad`` and ``data_<n>.zarr`` for every size; the largest is generated, the
    others are its first rows."""
    import anndata as ad

    largest = max(sizes)
    params = _params(n_genes, seed)
    t0 = time.perf_counter()
    out = _Writers(workdir / f"data_{largest}", largest, n_genes)
    for i, start in enumerate(range(0, largest, CHUNK)):
        out.append(_chunk(i, min(CHUNK, largest - start), params, seed))
        if i % 50 == 0:
            log(f"  generated {start + CHUNK:,} / {largest:,} cells")
    out.close()
    log(f"generated {largest:,} cells in {time.perf_counter() - t0:.0f} s")
    src = ad.read_h5ad(workdir / f"data_{largest}.h5ad", backed="r")
    for n in sorted(set(sizes) - {largest}):
        part = _Writers(workdir / f"data_{n}", n, n_genes)
        for start in range(0, n, 8 * CHUNK):
            part.append(src.X[start : min(start + 8 * CHUNK, n)])
        part.close()
    src.file.close()


# ---------------------------------------------------------------------- workers


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> None:
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    import torch

    import scvae_beta
    from scvae_beta.data import read_backed

    torch.set_num_threads(args.threads)
    if args.mode == "memory":
        src = ad.read_h5ad(args.path, backed="r")
        n = args.memory_cells
        X = sp.vstack([src.X[s : min(s + 8 * CHUNK, n)] for s in range(0, n, 8 * CHUNK)])
        adata = ad.AnnData(X=sp.csr_matrix(X), var=src.var.copy())
        src.file.close()
    else:
        adata = read_backed(args.path)
    before = _rss_mib()
    t0 = time.perf_counter()
    scvae_beta.fit(
        adata,
        max_epochs=1,
        kl_warmup=0,
        progress=False,
        n_threads=args.threads,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - t0
    tr = adata.uns["scvae_beta"]["training"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "mode": args.mode,
        "n_cells": int(tr["n_cells"]),
        "train_cells_per_s": tr["n_train"] / tr["seconds"],
        "fit_cells_per_s": tr["n_cells"] / seconds,
        "fit_seconds": seconds,
        "val_loss": float(adata.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]),
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "finite": bool(np.isfinite(adata.obsm["X_scvae_beta"]).all()),
    }
    print(json.dumps(result))


def run_worker(path: Path, mode: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--path",
        str(path),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--memory-cells",
        str(args.memory_cells),
    ]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"{mode} {path.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    p.add_argument("--memory-cells", type=int, default=200_000)
    p.add_argument("--n-genes", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="keep the data here (default: temporary)")
    p.add_argument("--worker", choices=["memory", "h5ad", "zarr"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.mode = args.worker
        worker(args)
        return
    if args.memory_cells > max(args.sizes):
        p.error("--memory-cells must not exceed the largest size")
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tmp := tempfile.mkdtemp(prefix="scvae_ooc_"))
    try:
        if not all((workdir / f"data_{n}.zarr").exists() for n in args.sizes):
            write_data(workdir, args.sizes, args.n_genes, args.seed)
        largest = max(args.sizes)
        rows = [run_worker(workdir / f"data_{largest}.h5ad", "memory", args)]
        log(f"in memory: {rows[-1]}")
        for n in args.sizes:
            for fmt in ("h5ad", "zarr"):
                rows.append(run_worker(workdir / f"data_{n}.{fmt}", fmt, args))
                log(f"{fmt} {n}: {rows[-1]}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    mem = rows[0]["train_cells_per_s"]
    print(
        f"\none epoch, {args.n_genes} genes, batch {args.batch_size}, {args.threads} threads; "
        f"in memory: first {args.memory_cells:,} cells\n"
    )
    print(
        "| source | cells | train cells/s | vs memory | whole fit cells/s | val loss "
        "| peak RSS (MiB) | RSS increase in fit (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['mode']} | {r['n_cells']:,} | {r['train_cells_per_s']:,.0f} "
            f"| {r['train_cells_per_s'] / mem:.2f} | {r['fit_cells_per_s']:,.0f} "
            f"| {r['val_loss']:.2f} | {r['peak_rss_mib']:,.0f} "
            f"| {r['peak_rss_mib'] - r['rss_before_mib']:,.0f} |"
        )


if __name__ == "__main__":
    main()
