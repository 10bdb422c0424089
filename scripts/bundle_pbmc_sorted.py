"""Build the bundled default data set from ../shared/data/pbmc_sorted_3k5_zheng17.h5ad.

Run once by a developer (not at run time):

    python scripts/bundle_pbmc_sorted.py ../shared/data/pbmc_sorted_3k5_zheng17.h5ad

Keeps all 3500 cells and the 2000 most highly variable genes (scanpy's "seurat" flavour on a
log-normalised *copy*), stores the untouched raw integer counts as CSR int32, and writes a
gzip h5ad into scvae_beta/datasets/.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

OUT = Path(__file__).resolve().parents[1] / "scvae_beta" / "datasets" / "pbmc_sorted_2k_hvg.h5ad"
EXPECTED_SHA256 = "d32be1496d4076b6518d2986e37d13911761207f55c40f3bce1f98dde951d384"


def main(src: str) -> None:
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    if digest != EXPECTED_SHA256:
        raise SystemExit(f"checksum mismatch for {src}: {digest}")
    full = ad.read_h5ad(src)
    norm = full.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    sc.pp.highly_variable_genes(norm, flavor="seurat", n_top_genes=2000)
    keep = norm.var["highly_variable"].to_numpy()
    out = ad.AnnData(
        X=sp.csr_matrix(full.X[:, keep], dtype=np.int32),
        obs=full.obs[["trueLabel", "trueLabel_full", "nUMI_original_allgenes", "pctMito"]].copy(),
        var=full.var.loc[keep, ["GeneSymbol"]].copy(),
    )
    out.obs["trueLabel"] = out.obs["trueLabel"].astype("category")
    out.obs["trueLabel_full"] = out.obs["trueLabel_full"].astype("category")
    out.uns["source"] = (
        str(full.uns["source"])
        + "; reduced by scvae_beta to the 2000 most highly variable genes (scanpy seurat flavour"
        " on log-normalised counts), raw integer counts kept"
    )
    out.write_h5ad(OUT, compression="gzip")
    print(out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
    print("sha256", hashlib.sha256(OUT.read_bytes()).hexdigest())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pbmc_sorted_3k5_zheng17.h5ad")
