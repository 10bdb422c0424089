"""Plots (scanpy-style): each returns its Axes and never calls ``plt.show()``.

With ``ax=None`` / ``axes=None`` a new figure is made; the caller owns it (close it with
``plt.close(ax.figure)`` when done, or let Jupyter display it).
"""

from scvae_beta.pl._history import training_history
from scvae_beta.pl._kl import kl_per_dim
from scvae_beta.pl._latent import latent_dims
from scvae_beta.pl._rate_distortion import rate_distortion
from scvae_beta.pl._report import report
from scvae_beta.pl._traversal import traversal

__all__ = [
    "kl_per_dim",
    "latent_dims",
    "rate_distortion",
    "report",
    "training_history",
    "traversal",
]
