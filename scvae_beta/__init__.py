"""scvae_beta: disentangled latent spaces (beta-VAE in Pyro) for single-cell counts.

Public surface::

    scvae_beta.fit(adata, ...) -> FittedModel      # train, write obsm/uns
    scvae_beta.load(path) -> FittedModel           # a model saved with FittedModel.save
    scvae_beta.datasets.pbmc_sorted()              # bundled default data
    scvae_beta.datasets.simulate(...)              # NB counts from known factors
    scvae_beta.datasets.load(name)                 # manifests: checksum-verified downloads
    scvae_beta.metrics.mig / dci / sap / ...       # disentanglement metrics
    scvae_beta.tl.latent_traversal / ...           # interpretation tools (write into adata)
    scvae_beta.pl.kl_per_dim / ...                 # plots returning Axes
"""

from __future__ import annotations

from scvae_beta import datasets, metrics, pl, tl  # noqa: E402
from scvae_beta._version import __version__  # noqa: E402
from scvae_beta.api import fit  # noqa: E402
from scvae_beta.fitted import FittedModel, load  # noqa: E402
from scvae_beta.tune import tune_beta  # noqa: E402

__all__ = [
    "fit",
    "load",
    "FittedModel",
    "tune_beta",
    "datasets",
    "metrics",
    "pl",
    "tl",
    "__version__",
]
