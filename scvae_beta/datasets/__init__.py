"""Data sets: the bundled default (offline), manifest-driven downloads and simulated counts."""

from __future__ import annotations

from scvae_beta.datasets._download import ChecksumError, load
from scvae_beta.datasets._manifests import list_datasets
from scvae_beta.datasets._pbmc import PBMC_SHA256 as PBMC_SHA256  # checksum of the bundled file
from scvae_beta.datasets._pbmc import pbmc_sorted
from scvae_beta.datasets._simulate import obs_factor_codes, simulate

__all__ = [
    "pbmc_sorted",
    "simulate",
    "obs_factor_codes",
    "load",
    "list_datasets",
    "ChecksumError",
]
