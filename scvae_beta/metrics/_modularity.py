"""Modularity, Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings With the
F-Statistic Loss", as computed by disentanglement_lib (``modularity_explicitness.py``)."""

from __future__ import annotations

import numpy as np

from scvae_beta.metrics._discretize import histogram_bins
from scvae_beta.metrics._info import mutual_info_matrix
from scvae_beta.metrics._inputs import (
    check_latents,
    check_n_bins,
    check_same_n,
    drop_constant,
    factor_codes,
)


def _modularity_from_mi(mi: np.ndarray) -> float:
    """Modularity from a mutual-information matrix ``(n_codes, n_factors)``.

    Per code: ``theta = max_k m^2``, ``delta = (sum_k m^2 - theta) / (theta (K - 1))``, score
    ``1 - delta``, and 0 where ``theta == 0``. With ``K == 1`` the numerator is 0 and
    ``delta`` is taken as 0 (score 1 for every informative code). Mean over all codes.
    """
    sq = np.square(np.asarray(mi, dtype=np.float64))
    theta = sq.max(axis=1)
    informative = theta > 0
    n_factors = sq.shape[1]
    score = np.zeros(sq.shape[0])
    if n_factors == 1:
        score[informative] = 1.0
    else:
        rest = sq.sum(axis=1) - theta
        delta = rest[informative] / (theta[informative] * (n_factors - 1))
        score[informative] = 1.0 - delta
    return float(score.mean())


def modularity(latents, factors, *, n_bins: int = 20) -> float:
    """Modularity of a representation: does each latent dimension depend on one factor only?

    The mutual information ``m[i, k]`` (nats) between latent dimension ``i``, discretised into
    ``n_bins`` equal-width bins, and factor ``k`` is computed for every pair. For each
    dimension, with ``theta_i = max_k m[i, k]^2`` and ``K`` factors::

        delta_i = (sum_k m[i, k]^2 - theta_i) / (theta_i (K - 1))
        modularity = mean_i (1 - delta_i),    with 1 - delta_i := 0 where theta_i == 0

    so collapsed (constant) dimensions count as 0 and pull the mean down, exactly as in
    disentanglement_lib. Modularity ignores how *much* a dimension knows: a noise dimension
    whose small, spurious MI happens to favour one factor still scores high. Read it together
    with MIG or DCI.

    Edge cases: with a single factor (``K == 1``) every dimension with non-zero MI scores 1
    (the formula's 0/0 taken as ``delta = 0``), so the score is the fraction of informative
    dimensions and says little. A constant factor is left out (``UserWarning``) before ``K``
    is counted.

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    factors
        Shape ``(n_cells, n_factors)`` or ``(n_cells,)``: integer codes or labels.
    n_bins
        Bins per latent dimension.

    Returns
    -------
    float
        Modularity in [0, 1].
    """
    z = check_latents(latents)
    y = factor_codes(factors)
    check_same_n(z, y)
    y, _ = drop_constant(y, "modularity")
    return _modularity_from_mi(mutual_info_matrix(histogram_bins(z, check_n_bins(n_bins)), y))
