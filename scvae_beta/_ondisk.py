"""Annotated copies of on-disk inputs (for ``scvae-beta fit --backed``): the input file or
store is copied byte for byte and the fit's ``obsm``/``uns`` entries are added to the copy,
so the count matrix is never read into memory."""

from __future__ import annotations

import shutil
from pathlib import Path

from anndata import AnnData


def output_kind(src: Path, dst: Path) -> None:
    """Raise unless ``dst`` has the on-disk format of ``src`` (``.h5ad`` or ``.zarr``)."""
    kind = "zarr" if src.is_dir() or src.suffix == ".zarr" else "h5ad"
    if dst.suffix != f".{kind}":
        raise ValueError(
            f"with --backed the output is an annotated copy of the input, so it must be a "
            f".{kind} like the input; got -o {dst}"
        )
    if kind == "zarr" and dst.exists():
        raise FileExistsError(f"the output store {dst} exists; remove it or name another")


def annotated_copy(src: Path, dst: Path, adata: AnnData, key: str) -> None:
    """Copy ``src`` (``.h5ad`` file or ``.zarr`` store) to ``dst`` and write
    ``adata.obsm["X_" + key]`` and ``adata.uns[key]`` into the copy (replacing entries of the
    same name)."""
    import anndata as ad

    if src.is_dir():
        import zarr

        shutil.copytree(src, dst)
        root = zarr.open_group(str(dst), mode="r+", use_consolidated=False)
    else:
        import h5py

        shutil.copyfile(src, dst)
        root = h5py.File(dst, "r+")
    try:
        obsm_key = "X_" + key
        for group, name, value in (
            ("obsm", obsm_key, adata.obsm[obsm_key]),
            ("uns", key, adata.uns[key]),
        ):
            if group not in root:
                ad.io.write_elem(root, group, {})
            if name in root[group]:
                del root[group][name]
            ad.io.write_elem(root[group], name, value)
    finally:
        if hasattr(root, "close"):
            root.close()
    if src.is_dir():
        import zarr

        zarr.consolidate_metadata(str(dst))  # anndata writes (and reads) consolidated stores
