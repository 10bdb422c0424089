"""Data-set manifests: one YAML file per public data set, parsed and checked here.

The manifests ship inside the package (``scvae_beta/datasets/manifests/*.yaml``) so that an
installed wheel can find them; ``data_manifests/*.yaml`` at the repository root is the
human-facing copy. The two are byte-identical (a test checks it); edit ``data_manifests/``
and copy the file over.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = [
    "FORMATS",
    "Manifest",
    "ManifestError",
    "get_manifest",
    "list_datasets",
    "manifest_from_dict",
    "package_manifests",
    "read_manifest",
]

#: File formats ``load`` can read: h5ad, a 10x Genomics HDF5 matrix, a tarball of a 10x
#: matrix-market folder, and the HDF5 layout of scanpy's ``paul15`` source file.
FORMATS = ("h5ad", "10x-h5", "10x-mtx-tar", "paul15-h5")

_REQUIRED = (
    "name",
    "title",
    "bundled",
    "url",
    "sha256",
    "size_bytes",
    "format",
    "shape",
    "labels",
    "preprocessing",
    "licence",
    "citation",
)
_OPTIONAL = ("package_file", "fname", "md5", "mtx_dir", "source")
_NAME = re.compile(r"^[a-z0-9_]+$")
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}
_URL = re.compile(r"^(https?|ftp|file)://\S+$|^doi:\S+$")
_DOI = re.compile(r"doi:10\.|doi\.org/10\.")


class ManifestError(ValueError):
    """A manifest is malformed: the message names the file or data set and the field."""


@dataclass(frozen=True)
class Manifest:
    """One data set: where it lives, how to check and read it, what it contains.

    Attributes mirror the YAML fields (see ``data_manifests/*.yaml``). ``shape`` is
    ``(n_cells, n_genes)`` of the AnnData that ``load`` returns; ``labels`` maps ``obs``
    columns holding labels or known factors to a description.
    """

    name: str
    title: str
    bundled: bool
    url: str | None
    sha256: str | None
    size_bytes: int | None
    format: str
    shape: tuple[int, int]
    labels: dict[str, str]
    preprocessing: str
    licence: str
    citation: tuple[str, ...]
    package_file: str | None = None
    fname: str | None = None
    md5: str | None = None
    mtx_dir: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def known_hash(self) -> str | None:
        """``"sha256:<hex>"``, else ``"md5:<hex>"``, else None (pooch's ``known_hash``)."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return None

    @property
    def file_name(self) -> str:
        """Name of the cached download: ``fname`` or the last part of ``url``."""
        if self.fname:
            return self.fname
        if self.url is None:
            raise ManifestError(f"data set {self.name!r} has no url")
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _fail(where: str, message: str) -> None:
    raise ManifestError(f"{where}: {message}")


def _check_str(where: str, data: Mapping[str, Any], key: str, *, optional: bool) -> None:
    value = data.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        _fail(where, f"{key!r} must be a non-empty string, got {value!r}")


def manifest_from_dict(data: Mapping[str, Any], *, where: str | None = None) -> Manifest:
    """Check a manifest mapping (as parsed from YAML) and return a :class:`Manifest`.

    Parameters
    ----------
    data
        The fields of one manifest: required ``name, title, bundled, url, sha256,
        size_bytes, format, shape, labels, preprocessing, licence, citation``; optional
        ``package_file`` (required when bundled), ``fname``, ``md5``, ``mtx_dir`` (required
        for ``format: 10x-mtx-tar``), ``source``.
    where
        Name used in error messages (a file path); defaults to the data set's name.

    Raises
    ------
    ManifestError
        Naming the field that is missing, unknown or of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where or 'manifest'}: expected a mapping, got {type(data)}")
    where = where or f"manifest {data.get('name', '?')!r}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        _fail(where, f"missing required fields {missing} (use null for an unknown value)")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        _fail(where, f"unknown fields {unknown}; allowed: {sorted(_REQUIRED + _OPTIONAL)}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(where, f"'name' must match [a-z0-9_]+, got {name!r}")
    for key in ("title", "preprocessing", "licence"):
        _check_str(where, data, key, optional=False)
    for key in ("package_file", "fname", "mtx_dir"):
        _check_str(where, data, key, optional=True)
    if not isinstance(data["bundled"], bool):
        _fail(where, f"'bundled' must be true or false, got {data['bundled']!r}")
    url = data["url"]
    if url is not None and (not isinstance(url, str) or not _URL.match(url)):
        _fail(where, f"'url' must be an http(s)/ftp/file URL, a doi: or null, got {url!r}")
    if data["bundled"] and not data.get("package_file"):
        _fail(where, "a bundled data set needs 'package_file' (file name inside the package)")
    if not data["bundled"] and url is None:
        _fail(where, "a data set that is not bundled needs a 'url'")
    for key, pattern in _HEX.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            _fail(where, f"{key!r} must be lower-case hex of the right length or null")
    size = data["size_bytes"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        _fail(where, f"'size_bytes' must be a positive integer or null, got {size!r}")
    if data["format"] not in FORMATS:
        _fail(where, f"'format' must be one of {FORMATS}, got {data['format']!r}")
    if data["format"] == "10x-mtx-tar" and not data.get("mtx_dir"):
        _fail(where, "format 10x-mtx-tar needs 'mtx_dir' (folder of matrix.mtx in the tarball)")
    shape = data["shape"]
    if not (
        isinstance(shape, list | tuple)
        and len(shape) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        _fail(where, f"'shape' must be [n_cells, n_genes] of positive integers, got {shape!r}")
    labels = data["labels"]
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        _fail(where, "'labels' must map obs column names to descriptions ({} if none)")
    citation = data["citation"]
    if (
        not isinstance(citation, list)
        or not citation
        or not all(isinstance(c, str) and c.strip() for c in citation)
    ):
        _fail(where, "'citation' must be a non-empty list of strings")
    if not any(_DOI.search(c) for c in citation):
        _fail(where, "at least one 'citation' must give a DOI as 'doi:10.…'")
    source = data.get("source") or {}
    if not isinstance(source, Mapping):
        _fail(where, f"'source' must be a mapping, got {source!r}")
    return Manifest(
        name=name,
        title=data["title"],
        bundled=data["bundled"],
        url=url,
        sha256=data["sha256"],
        size_bytes=size,
        format=data["format"],
        shape=(shape[0], shape[1]),
        labels=dict(labels),
        preprocessing=data["preprocessing"],
        licence=data["licence"],
        citation=tuple(citation),
        package_file=data.get("package_file"),
        fname=data.get("fname"),
        md5=data.get("md5"),
        mtx_dir=data.get("mtx_dir"),
        source=dict(source),
    )


def read_manifest(path: str | Path) -> Manifest:
    """Parse and check one manifest YAML file; its ``name`` must equal the file's stem."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    manifest = manifest_from_dict(data, where=str(path))
    if manifest.name != path.stem:
        raise ManifestError(f"{path}: 'name' is {manifest.name!r} but the file is {path.name}")
    return manifest


def package_manifests() -> dict[str, Manifest]:
    """All manifests shipped in the package, by name (sorted)."""
    folder = resources.files(__package__) / "manifests"
    found: dict[str, Manifest] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as path:
                manifest = read_manifest(path)
            found[manifest.name] = manifest
    return found


def get_manifest(name: str) -> Manifest:
    """The shipped manifest called ``name``; the error lists the available names."""
    manifests = package_manifests()
    if name not in manifests:
        raise ValueError(
            f"unknown data set {name!r}; available: {sorted(manifests)}. "
            "See scvae_beta.datasets.list_datasets() for details."
        )
    return manifests[name]


def list_datasets() -> pd.DataFrame:
    """Table of the data sets ``scvae_beta.datasets.load`` knows, one row each.

    Returns
    -------
    DataFrame with columns ``name``, ``title``, ``n_cells``, ``n_genes``, ``size_bytes``
    (nullable integer; missing where the manifest does not know the exact size),
    ``bundled`` (loads offline), ``format``, ``labels`` (comma-separated ``obs`` columns
    holding labels or known factors; empty if none) and ``checksum`` (``sha256``, ``md5`` or
    ``none``: a data set without one only loads with ``verify=False``).
    """
    rows = [
        {
            "name": m.name,
            "title": m.title,
            "n_cells": m.shape[0],
            "n_genes": m.shape[1],
            "size_bytes": m.size_bytes,
            "bundled": m.bundled,
            "format": m.format,
            "labels": ", ".join(m.labels),
            "checksum": "sha256" if m.sha256 else "md5" if m.md5 else "none",
        }
        for m in package_manifests().values()
    ]
    table = pd.DataFrame(rows)
    table["size_bytes"] = table["size_bytes"].astype("Int64")
    return table
