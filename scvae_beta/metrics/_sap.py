"""Separated attribute predictability (SAP), Kumar et al. 2018, "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", Sec. 3, as in disentanglement_lib
(``evaluation/metrics/sap_score.py``)."""

from __future__ import annotations

import warnings

import numpy as np

from scvae_beta.metrics._inputs import (
    check_latents,
    check_same_n,
    check_train_classes,
    continuous_factors,
    drop_constant,
    factor_codes,
    split_indices,
)

_MIN_VAR = 1e-12  # a code with variance at or below this is constant and scores 0


def _gap_top_two(scores: np.ndarray) -> float:
    """Mean over factors (columns) of the best minus the second-best code score (rows).

    With a single code the second-best score is taken as 0.
    """
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean(top[0] - second))


def _r2_matrix(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation of every (code, factor) pair; 0 for constant codes."""
    zc = z - z.mean(axis=0)
    yc = y - y.mean(axis=0)
    var_z = (zc**2).mean(axis=0)
    var_y = (yc**2).mean(axis=0)
    cov = zc.T @ yc / z.shape[0]
    r2 = np.zeros_like(cov)
    ok = var_z > _MIN_VAR
    r2[ok] = cov[ok] ** 2 / (var_z[ok, None] * var_y[None, :])
    return r2


def _svm_accuracy_matrix(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, seed: int
) -> np.ndarray:
    """Test accuracy of a linear SVM fitted on each single code, for each factor."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((z_train.shape[1], y_train.shape[1]))
    for j in range(y_train.shape[1]):
        check_train_classes(y_train[:, j], j, "sap")
    for i in range(z_train.shape[1]):
        if z_train[:, i].var() <= _MIN_VAR:
            continue
        for j in range(y_train.shape[1]):
            clf = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():
                # A one-feature SVM at C=0.01 may stop at max_iter; the fit is still usable
                # and disentanglement_lib ignores the warning too.
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(z_train[:, i : i + 1], y_train[:, j])
            scores[i, j] = np.mean(clf.predict(z_test[:, i : i + 1]) == y_test[:, j])
    return scores


def sap(
    latents,
    factors,
    *,
    continuous: bool = False,
    test_size: float = 0.25,
    shuffle: bool = True,
    seed: int = 0,
) -> float:
    """SAP score: the gap in predictability of each factor between its two best dimensions.

    A score matrix ``S`` (codes x factors) is built from single-dimension predictors, then::

        SAP = mean_k (S_(1)k - S_(2)k)

    where ``S_(1)k >= S_(2)k`` are the two largest scores for factor ``k``.

    - ``continuous=False`` (discrete factors): ``S[i, k]`` is the test accuracy of
      ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` trained to predict factor
      ``k`` from dimension ``i`` alone on the training cells (disentanglement_lib's choice;
      the dimension is not standardised). An uninformative dimension still scores about
      chance accuracy (about 1/C for C balanced classes), so a perfect representation scores
      about ``1 - 1/C``, not 1 (0.5 for binary factors). With several classes the SVM is
      one-vs-rest, so a single dimension rarely reaches accuracy 1 even when it determines
      the factor; discrete SAP values are comparable only between representations scored on
      the same factors.
    - ``continuous=True`` (continuous factors): ``S[i, k]`` is the R^2 of a linear fit of
      factor ``k`` on dimension ``i``, i.e. their squared Pearson correlation, computed on
      all cells (there is nothing to fit, so no split; ``test_size``, ``shuffle`` and ``seed``
      are unused).

    Edge cases: a constant dimension (variance <= 1e-12 on the cells used for fitting) scores
    0 in both modes (disentanglement_lib does so only for continuous factors; a constant
    dimension's SVM would otherwise score the accuracy of a constant guess). So with discrete
    factors, collapsed dimensions score below noisy ones: one perfect dimension beside
    collapsed ones gives SAP 1, beside noise dimensions about ``1 - 1/C``. With one latent
    dimension the second-best score is 0. Constant factors are left out (``UserWarning``).

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    factors
        Shape ``(n_cells, n_factors)`` or ``(n_cells,)``: integer codes or labels, or finite
        floats when ``continuous=True``.
    continuous
        Treat the factors as continuous (R^2) instead of discrete (SVM accuracy).
    test_size
        Fraction of cells held out to score the SVMs (``ceil(test_size * n)``).
    shuffle
        If False the first ``n - n_test`` rows train and the rest test; if True the split is
        a permutation drawn from ``numpy.random.default_rng(seed)``.
    seed
        Seeds the split and the SVM solver.

    Returns
    -------
    float
        SAP in [0, 1].
    """
    z = check_latents(latents)
    y = continuous_factors(factors) if continuous else factor_codes(factors)
    check_same_n(z, y)
    y, _ = drop_constant(y, "sap")
    if continuous:
        return _gap_top_two(_r2_matrix(z, y))
    train, test = split_indices(z.shape[0], test_size=test_size, shuffle=shuffle, seed=seed)
    return _gap_top_two(_svm_accuracy_matrix(z[train], y[train], z[test], y[test], seed))
