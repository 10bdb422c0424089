"""The bundled default data set, :func:`pbmc_sorted` (loads offline)."""

from __future__ import annotations

from importlib import resources

import anndata as ad

_PBMC_FILE = "pbmc_sorted_2k_hvg.h5ad"
#: SHA-256 of the bundled file (see PROVENANCE.md next to it).
PBMC_SHA256 = "703e001044c21dfc61ff95a58027b6212743c016532bb3872f5cc8e86f0a4be6"


def pbmc_sorted() -> ad.AnnData:
    """3,500 FACS-sorted human PBMCs (Zheng et al. 2017), 7 types x 500 cells, 2,000 genes.

    Bundled with the package, loads offline. Raw integer UMI counts (CSR int32) in ``.X``
    over the 2,000 most highly variable of the 8,846 genes in the source.

    Returns
    -------
    AnnData with ``obs["trueLabel"]`` (B, CD4TCM, CD4TN, CD4Treg, CD8TN, Monocyte, NK; from
    the FACS sort, not from clustering), ``obs["trueLabel_full"]`` (10x sort names),
    ``obs["nUMI_original_allgenes"]``, ``obs["pctMito"]``, ``var["GeneSymbol"]`` and
    ``uns["source"]``. Provenance and licence: ``scvae_beta/datasets/PROVENANCE.md``.
    """
    with resources.as_file(resources.files(__package__) / _PBMC_FILE) as path:
        return ad.read_h5ad(path)
