"""Disentanglement and label metrics: numpy in, float (or small dict) out.

Rows are cells. ``latents`` is ``(n_cells, n_dims)``; ``factors`` is ``(n_cells, n_factors)``
or ``(n_cells,)`` of integer codes or labels (see :func:`factor_codes`). Definitions and
defaults follow google-research/disentanglement_lib so values are comparable with the
literature; each function's docstring states the formula and how edge cases are handled.

=============================  =================================================================
:func:`mig`                    mutual information gap (Chen et al. 2018)
:func:`modularity`             modularity (Ridgeway & Mozer 2018)
:func:`dci`                    DCI disentanglement, completeness, informativeness (Eastwood 2018)
:func:`sap`                    separated attribute predictability (Kumar et al. 2018)
:func:`latent_matching_score`  one-to-one matching of dimensions to label categories
:func:`cluster_agreement`      ARI / NMI of Leiden clusters of the latents vs labels
:data:`RESOLUTIONS`            the resolutions of ``cluster_agreement(resolution="optimal")``
:data:`RESOLUTIONS_WIDE`       the same grid extended down to 0.01
:func:`quantile_bins`          equal-count codes for a continuous factor
:func:`histogram_bins`         the equal-width discretisation used by the MI metrics
:func:`factor_codes`           labels / codes -> integer codes, one column per factor
=============================  =================================================================
"""

from __future__ import annotations

from scvae_beta.metrics import _labels
from scvae_beta.metrics._dci import dci
from scvae_beta.metrics._discretize import histogram_bins, quantile_bins
from scvae_beta.metrics._inputs import factor_codes
from scvae_beta.metrics._labels import cluster_agreement, latent_matching_score
from scvae_beta.metrics._mig import mig
from scvae_beta.metrics._modularity import modularity
from scvae_beta.metrics._sap import sap

#: The Leiden resolutions of ``cluster_agreement(resolution="optimal")``: scIB's grid, 0.1,
#: 0.2, ..., 2.0 (Luecken et al. 2022).
RESOLUTIONS = _labels.RESOLUTIONS
#: :data:`RESOLUTIONS` extended down to 0.01 (0.01, 0.02, 0.03, 0.05, 0.07, then scIB's grid), for
#: latent spaces whose neighbour graph is so modular that resolution 0.1 still cuts large cell
#: types; pass it as ``cluster_agreement(resolution=RESOLUTIONS_WIDE)``.
RESOLUTIONS_WIDE = _labels.RESOLUTIONS_WIDE

__all__ = [
    "mig",
    "modularity",
    "dci",
    "sap",
    "quantile_bins",
    "histogram_bins",
    "latent_matching_score",
    "cluster_agreement",
    "RESOLUTIONS",
    "RESOLUTIONS_WIDE",
    "factor_codes",
]
