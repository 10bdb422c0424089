"""``load(name)``: fetch a manifest's file with a verified checksum, cache it, read it.

Downloads go through :func:`pooch.retrieve`, which writes to a temporary file next to the
cache entry and moves it into place only when the checksum matches, so a failed check leaves
no file behind. ``file://`` URLs (local mirrors, tests) are copied by a small downloader of
our own because pooch only speaks HTTP(S), FTP, SFTP and DOI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import IO, Any

import anndata as ad
import numpy as np
import pandas as pd
import pooch
import scipy.sparse as sp

from scvae_beta.datasets._manifests import Manifest, get_manifest, manifest_from_dict

__all__ = ["ChecksumError", "load", "resolve_cache_dir"]

#: Environment variable that moves the download cache (the ``cache_dir`` argument wins).
CACHE_ENV = "SCVAE_BETA_DATA_DIR"


class ChecksumError(ValueError):
    """A downloaded file's checksum differs from its manifest; the file was discarded."""


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder for downloads: ``cache_dir``, else ``$SCVAE_BETA_DATA_DIR``, else the OS cache.

    The OS cache is ``pooch.os_cache("scvae_beta")`` (e.g. ``~/.cache/scvae_beta`` on Linux).
    Each data set gets its own sub-folder named after it.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("scvae_beta"))


def _copy_file_url(
    url: str, output_file: str | IO[bytes], pooch_obj: Any = None, check_only: bool = False
) -> bool | None:
    """pooch downloader for ``file://`` URLs: copy the local file to ``output_file``."""
    parsed = urllib.parse.urlparse(url)
    source = Path(urllib.request.url2pathname(parsed.path))
    if check_only:
        return source.is_file()
    if not source.is_file():
        raise FileNotFoundError(f"{url}: no such local file ({source})")
    if isinstance(output_file, str | os.PathLike):
        shutil.copyfile(source, output_file)
    else:
        with source.open("rb") as handle:
            shutil.copyfileobj(handle, output_file)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(manifest: Manifest, url: str, folder: Path, verify: bool) -> Path:
    """Download ``url`` into ``folder`` (or reuse the cached copy) and return its path."""
    known_hash = manifest.known_hash if verify else None
    if verify and known_hash is None:
        raise ValueError(
            f"data set {manifest.name!r} has no published checksum in its manifest, so its "
            "download cannot be verified. Pass verify=False to download it anyway (a warning "
            "reports the file's SHA-256 so it can be added to the manifest)."
        )
    downloader = _copy_file_url if url.startswith("file://") else None
    try:
        path = pooch.retrieve(
            url,
            known_hash=known_hash,
            fname=manifest.file_name,
            path=folder,
            downloader=downloader,
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise ChecksumError(
            f"download of data set {manifest.name!r} from {url} failed its checksum check "
            f"(expected {known_hash}); the file was discarded. {exc} If the file changed "
            "upstream on purpose, update the manifest's checksum, or pass verify=False."
        ) from exc
    path = Path(path)
    if not verify:
        warnings.warn(
            f"data set {manifest.name!r} was loaded WITHOUT checksum verification from "
            f"{path}; its SHA-256 is {_sha256(path)}.",
            UserWarning,
            stacklevel=3,
        )
    return path


def _read_10x_mtx_tar(path: Path, mtx_dir: str) -> ad.AnnData:
    """Unpack a 10x matrix-market tarball into a temporary folder and read ``mtx_dir``."""
    import scanpy as sc

    with tempfile.TemporaryDirectory(prefix="scvae_beta_") as tmp, tarfile.open(path) as tar:
        for member in tar.getmembers():
            target = (Path(tmp) / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(
                Path(tmp).resolve()
            ):
                raise ValueError(f"{path}: refusing to extract unsafe tar member {member.name}")
        # Members were checked above; the "data" filter (Python >= 3.11.4) checks again.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp, **safe)
        folder = Path(tmp) / mtx_dir
        if not folder.is_dir():
            raise FileNotFoundError(f"{path}: the tarball has no folder {mtx_dir!r}")
        adata = sc.read_10x_mtx(folder, var_names="gene_symbols", make_unique=True)
    return adata


def _read_paul15_h5(path: Path) -> ad.AnnData:
    """Read the HDF5 file behind ``scanpy.datasets.paul15`` into cells x informative genes."""
    import h5py

    with h5py.File(path, "r") as f:
        counts = np.asarray(f["data.debatched"][()], dtype=np.float32)  # genes x cells
        genes = f["data.debatched_rownames"][()].astype(str)
        cells = f["data.debatched_colnames"][()].astype(str)
        cluster = np.asarray(f["cluster.id"][()]).ravel().astype(int)
        informative = set(f["info.genes_strings"][()].astype(str))
    # Names of the 19 clusters of Paul et al. 2015, cluster 1 first.
    types = ["Ery"] * 6 + "MEP Mk GMP GMP DC Baso Baso Mo Mo Neu Neu Eos Lymph".split()
    symbols = np.array([g.split(";")[0] for g in genes])
    first = ~pd.Index(symbols).duplicated()
    keep = np.flatnonzero(first & np.isin(symbols, list(informative)))
    keep = keep[np.argsort(symbols[keep], kind="stable")]
    labels = [f"{c}{types[c - 1]}" for c in cluster]
    adata = ad.AnnData(
        X=sp.csr_matrix(counts[keep].T),
        obs={"paul15_clusters": labels},
        var={"paul15_name": genes[keep]},  # the source's name, e.g. "Gata1;Gata1x"
    )
    adata.obs_names = cells
    adata.var_names = symbols[keep]
    adata.obs["paul15_clusters"] = adata.obs["paul15_clusters"].astype("category")
    return adata


def _read(manifest: Manifest, path: Path) -> ad.AnnData:
    """Read a fetched file according to ``manifest.format``."""
    if manifest.format == "h5ad":
        return ad.read_h5ad(path)
    if manifest.format == "10x-h5":
        import scanpy as sc

        with warnings.catch_warnings():  # gene symbols repeat; made unique just below
            warnings.filterwarnings("ignore", "Variable names are not unique", UserWarning)
            adata = sc.read_10x_h5(path)
        adata.var_names_make_unique()
        return adata
    if manifest.format == "10x-mtx-tar":
        return _read_10x_mtx_tar(path, manifest.mtx_dir or "")
    if manifest.format == "paul15-h5":
        return _read_paul15_h5(path)
    raise ValueError(f"data set {manifest.name!r}: unsupported format {manifest.format!r}")


def load(
    name: str | Mapping[str, Any],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    verify: bool = True,
) -> ad.AnnData:
    """Load a public single-cell data set as an AnnData of raw counts.

    Bundled data sets (``pbmc_sorted``; ``paul15_subset`` where the package ships it) load
    offline. The others are downloaded once from the URL in their manifest, checked against
    the manifest's SHA-256 (or MD5 where only that is published) and cached.
    ``scvae_beta.datasets.list_datasets()`` lists the names; ``data_manifests/*.yaml`` gives
    each one's source, licence, citation, label columns and preprocessing.

    Parameters
    ----------
    name
        A data set name (see ``list_datasets()``), or a manifest mapping with the same fields
        as ``data_manifests/*.yaml`` to load a data set that is not shipped.
    cache_dir
        Folder for downloads. Default: ``$SCVAE_BETA_DATA_DIR`` if set, else
        ``pooch.os_cache("scvae_beta")``. Each data set is cached in ``cache_dir/<name>/``;
        a cached file whose checksum still matches is not downloaded again.
    url
        Download from here instead of the manifest's URL (a mirror, or a ``file://`` path to
        a copy you already have). The checksum is still verified.
    verify
        If False, skip the checksum check (a warning reports the file's SHA-256). Needed for
        data sets whose manifest has no checksum (``checksum == "none"`` in
        ``list_datasets()``), or when a file changed upstream.

    Returns
    -------
    AnnData, cells x genes, with the manifest's ``shape``. Raw counts are in ``.X`` unless
    the manifest's ``preprocessing`` says otherwise; ``obs`` holds the columns named in its
    ``labels``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the available ones); a data set without a checksum
        and ``verify=True``; ``url`` given for a bundled data set.
    ChecksumError
        The downloaded file does not match the manifest (nothing is left in the cache).
    FileNotFoundError
        A bundled file missing from this installation.
    """
    manifest = manifest_from_dict(name) if isinstance(name, Mapping) else get_manifest(name)
    if manifest.bundled:
        if url is not None:
            raise ValueError(
                f"data set {manifest.name!r} is bundled with the package and is not "
                "downloaded; url= applies only to data sets that are not bundled."
            )
        resource = resources.files(__package__) / (manifest.package_file or "")
        if not resource.is_file():
            raise FileNotFoundError(
                f"bundled data set {manifest.name!r}: {manifest.package_file} is missing from "
                "this installation of scvae_beta; reinstall the package."
            )
        with resources.as_file(resource) as path:
            return ad.read_h5ad(path)
    source = url or manifest.url
    if source is None:
        raise ValueError(f"data set {manifest.name!r} has no url; pass url=")
    folder = resolve_cache_dir(cache_dir) / manifest.name
    path = _fetch(manifest, source, folder, verify)
    return _read(manifest, path)
