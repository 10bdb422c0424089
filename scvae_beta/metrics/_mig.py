"""Mutual information gap (MIG), Chen et al. 2018, "Isolating Sources of Disentanglement in
VAEs", in disentanglement_lib's discrete form (``evaluation/metrics/mig.py``)."""

from __future__ import annotations

import numpy as np

from scvae_beta.metrics._discretize import histogram_bins
from scvae_beta.metrics._info import entropy, mutual_info_matrix
from scvae_beta.metrics._inputs import (
    check_latents,
    check_n_bins,
    check_same_n,
    drop_constant,
    factor_codes,
)


def _mig_from_mi(mi: np.ndarray, factor_entropy: np.ndarray) -> float:
    """MIG from an MI matrix ``(n_dims, n_factors)`` and factor entropies ``(n_factors,)``.

    With a single latent dimension the second-largest MI is taken as 0.
    """
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean((top[0] - second) / factor_entropy))


def mig(latents, factors, *, n_bins: int = 20) -> float:
    """Mutual information gap between latent dimensions and discrete ground-truth factors.

    Each latent dimension is discretised on its own into ``n_bins`` equal-width bins
    (:func:`~scvae_beta.metrics.histogram_bins`). For factor ``k`` let
    ``I_(1) >= I_(2)`` be the two largest plug-in mutual informations (nats) between a
    discretised dimension and the factor, and ``H_k`` the factor's plug-in entropy; then::

        MIG = mean_k (I_(1) - I_(2)) / H_k

    This is disentanglement_lib's ``discrete_mig`` with its default histogram discretiser.
    It lies in [0, 1]: 1 when exactly one dimension determines each factor and no other
    dimension carries information about it.

    Edge cases (disentanglement_lib leaves them undefined):

    - one latent dimension: ``I_(2) = 0``, so the score is ``I_(1) / H_k``;
    - a constant factor (``H_k = 0``) is left out of the mean with a ``UserWarning``; if every
      factor is constant a ``ValueError`` is raised;
    - a constant latent dimension has zero MI with every factor.

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    factors
        Shape ``(n_cells, n_factors)`` or ``(n_cells,)``: integer codes or labels (see
        :func:`~scvae_beta.metrics.factor_codes`). Continuous factors must be discretised first
        (:func:`~scvae_beta.metrics.quantile_bins`).
    n_bins
        Bins per latent dimension (disentanglement_lib's studies use 20).

    Returns
    -------
    float
        MIG in [0, 1].
    """
    z = check_latents(latents)
    y = factor_codes(factors)
    check_same_n(z, y)
    y, _ = drop_constant(y, "mig")
    mi = mutual_info_matrix(histogram_bins(z, check_n_bins(n_bins)), y)
    h = np.array([entropy(y[:, j]) for j in range(y.shape[1])])
    return _mig_from_mi(mi, h)
