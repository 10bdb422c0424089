"""Shared parts of ``disentanglement.py``: settings, fitting, scoring and table formatting.

Imported by ``disentanglement.py`` after it has sized the thread pools (``OMP_NUM_THREADS`` and
friends must be set before numpy loads).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from anndata import AnnData

HERE = Path(__file__).resolve().parent
ARCH = dict(n_latent=10, n_hidden=128, n_layers=1, dropout=0.1, likelihood="nb", batch_size=128)
SIM_FACTORS = dict(n_cell_types=4, programs=("differentiation", "interferon"), cell_cycle=True)
NLL_TOLERANCE = 0.05  # "comparable reconstruction": within 5 % of the reference NLL
#: Published single-cell MIG (Splatter simulation, 4 factors), quoted in issue 4; context only.
PUBLISHED_MIG = {"vae": 0.48, "tcvae": 0.72, "pca": 0.54}
KEY = "bench"
THREADS = [1]  # torch threads per fit, set by main from --threads


def log(msg: str) -> None:
    """Progress line to stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def mean_sd(values, digits: int = 3) -> str:
    """``mean ± sd`` (sample sd, ddof 1) of the values; ``-`` when there are none."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "-"
    sd = v.std(ddof=1) if v.size > 1 else float("nan")
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table with one header row and the given rows (cells as strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def simulated(args: argparse.Namespace) -> tuple:
    """Simulated AnnData, factor codes ``(n_cells, 4)``, factor names, cell-type labels."""
    from scvae_beta.datasets import obs_factor_codes, simulate

    adata = simulate(args.n_cells, args.n_genes, seed=args.data_seed, **SIM_FACTORS)
    codes, names = obs_factor_codes(adata)
    return adata, codes, names, adata.obs["cell_type"].to_numpy()


def fit_latents(
    adata: AnnData, *, model: str, beta: float, seed: int, max_epochs: int
) -> tuple[np.ndarray, dict]:
    """Fit one model; return posterior means ``(n_cells, n_latent)`` and a record of ``uns``."""
    import torch

    import scvae_beta

    torch.set_num_threads(THREADS[0])  # Leiden's dependencies may have changed it
    t0 = time.perf_counter()
    scvae_beta.fit(
        adata,
        model=model,
        beta=beta,
        seed=seed,
        max_epochs=max_epochs,
        progress=False,
        key_added=KEY,
        **ARCH,
    )
    u = adata.uns.pop(KEY)
    z = np.asarray(adata.obsm.pop("X_" + KEY), dtype=np.float64)
    d = u["kl_decomposition"]
    rec = {
        "tc": float(d["tc"]),
        "mi": float(d["mi"]),
        "dw_kl": float(d["dw_kl"]),
        "kl": float(u["kl"]),
        "nll": float(u["reconstruction"]),
        "n_active": int(u["n_active"]),
        "epochs": int(u["training"]["epochs_trained"]),
        "seconds": time.perf_counter() - t0,
    }
    return z, rec


def score(
    z: np.ndarray,
    codes: np.ndarray,
    names: list[str],
    labels: np.ndarray,
    seed: int,
    *,
    full: bool,
) -> dict:
    """Metrics of latents ``z`` ``(n_cells, n_latent)`` against ``codes`` ``(n_cells, K)``.

    MIG overall and per factor; with ``full`` also DCI, SAP, modularity and the label scores
    (Leiden ARI / NMI, latent matching score) against ``labels`` ``(n_cells,)``.
    """
    from scvae_beta import metrics

    out = {"mig": metrics.mig(z, codes)}
    for k, name in enumerate(names):
        out["mig:" + name] = metrics.mig(z, codes[:, k])
    if full:
        d = metrics.dci(z, codes, seed=seed)
        clusters = metrics.cluster_agreement(z, labels, seed=seed)
        out.update(
            dci_d=d["disentanglement"],
            dci_c=d["completeness"],
            dci_i=d["informativeness_test"],
            sap=metrics.sap(z, codes, seed=seed),
            modularity=metrics.modularity(z, codes),
            ari=clusters["ari"],
            nmi=clusters["nmi"],
            n_clusters=clusters["n_clusters"],
            lms=metrics.latent_matching_score(z, labels)["score"],
        )
    return out


def fmt_run(name: str, seed: int, r: dict) -> str:
    """One progress line for a run record ``r`` (NLL and TC only for fitted models)."""
    nll = f"NLL {r['nll']:.2f} TC {r['tc']:.3f} " if "nll" in r else ""
    return f"  {name:24s} seed {seed}: {nll}MIG {r['mig']:.3f} ({r.get('seconds', 0):.0f} s)"
