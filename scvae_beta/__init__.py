"""scvae_beta: disentangled latent spaces (beta-VAE in Pyro) for single-cell counts.

Public surface::

    scvae_beta.fit(adata, ...) -> FittedModel      # train, write obsm/uns
    scvae_beta.load(path) -> FittedModel           # a model saved with FittedModel.save
    scvae_beta.datasets.pbmc_sorted()              # bundled default data
"""

from __future__ import annotations

__version__ = "0.1.0"

from scvae_beta import datasets  # noqa: E402
from scvae_beta.api import fit  # noqa: E402
from scvae_beta.fitted import FittedModel, load  # noqa: E402

__all__ = ["fit", "load", "FittedModel", "datasets", "__version__"]
