"""Disentanglement, completeness, informativeness (DCI), Eastwood & Williams 2018, "A
Framework for the Quantitative Evaluation of Disentangled Representations", with gradient
boosted trees as in disentanglement_lib (``evaluation/metrics/dci.py``)."""

from __future__ import annotations

import numpy as np

from scvae_beta.metrics._inputs import (
    check_latents,
    check_same_n,
    check_train_classes,
    drop_constant,
    factor_codes,
    split_indices,
)

_EPS = 1e-11  # added to importances before normalising, as disentanglement_lib does


def _entropy_rows(weights: np.ndarray, base: int) -> np.ndarray:
    """Entropy, in base ``base``, of each row of ``weights`` normalised to sum to 1.

    ``_EPS`` is added first, so an all-zero row is uniform (entropy 1 for ``base`` equal to
    the row length).
    """
    p = weights + _EPS
    p = p / p.sum(axis=1, keepdims=True)
    return -(p * np.log(p)).sum(axis=1) / np.log(base)


def _weighted_score(importance: np.ndarray) -> float:
    """``sum_i rho_i (1 - H_K(P_i.))`` over the rows ``i`` of ``importance`` (rows x K)."""
    n_rows, k = importance.shape
    if k == 1:  # one outcome: a row is perfectly specific if it has any importance at all
        per_row = (importance[:, 0] > 0).astype(np.float64)
    else:
        per_row = 1.0 - _entropy_rows(importance, base=k)
    total = importance.sum()
    weights = importance.sum(axis=1) / total if total > 0 else np.full(n_rows, 1.0 / n_rows)
    return float(np.sum(per_row * weights))


def _dci_aggregate(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness from an importance matrix ``(n_codes, n_factors)``.

    Disentanglement: ``sum_code rho_code (1 - H_K(P_code,.))`` with ``P_code,.`` the code's
    importances normalised over the ``K`` factors and ``rho_code`` its share of the total
    importance. Completeness: the same on the transpose, entropies in base ``D`` (number of
    codes), weights ``rho_factor``. As in disentanglement_lib: ``1e-11`` is added before
    normalising, and an all-zero matrix gets uniform weights (both scores then 0). With a
    single factor (or code) a row with any importance scores 1, an empty row 0.
    """
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    if importance.ndim != 2:
        raise ValueError(f"importance must be 2-D (n_codes, n_factors); got {importance.shape}")
    return _weighted_score(importance), _weighted_score(importance.T)


def _importance_gbt(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    n_estimators: int,
    max_depth: int,
) -> tuple[np.ndarray, float, float]:
    """Importance matrix ``(n_codes, n_factors)`` and mean train / test accuracies."""
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((z_train.shape[1], y_train.shape[1]))
    acc_train, acc_test = [], []
    for j in range(y_train.shape[1]):
        check_train_classes(y_train[:, j], j, "dci")
        model = GradientBoostingClassifier(
            n_estimators=n_estimators, max_depth=max_depth, random_state=seed
        )
        model.fit(z_train, y_train[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        acc_train.append(np.mean(model.predict(z_train) == y_train[:, j]))
        acc_test.append(np.mean(model.predict(z_test) == y_test[:, j]))
    return importance, float(np.mean(acc_train)), float(np.mean(acc_test))


def dci(
    latents,
    factors,
    *,
    test_size: float = 0.25,
    shuffle: bool = True,
    seed: int = 0,
    n_estimators: int = 100,
    max_depth: int = 3,
) -> dict[str, float]:
    """DCI scores from gradient-boosted-tree feature importances.

    For each factor a ``sklearn.ensemble.GradientBoostingClassifier`` (disentanglement_lib's
    defaults: 100 trees of depth 3, learning rate 0.1) predicts the factor from all latent
    dimensions on the training cells; its absolute feature importances form column ``k`` of
    the importance matrix ``R`` (codes x factors). Then (see ``_dci_aggregate``)::

        disentanglement = sum_i rho_i (1 - H_K(P[i, :])),  P[i, :] = R[i, :] / R[i, :].sum()
        completeness    = sum_k rho_k (1 - H_D(Q[:, k])),  Q[:, k] = R[:, k] / R[:, k].sum()
        rho_i = R[i, :].sum() / R.sum(),  rho_k = R[:, k].sum() / R.sum()

    with entropies in base ``K`` (factors) and ``D`` (codes). Informativeness is the mean
    classification accuracy over factors (disentanglement_lib reports accuracy under these
    names, not an error).

    Edge cases: constant factors are left out (``UserWarning``); a factor with a single value
    among the training cells raises ``ValueError``; constant latents get zero importance;
    with one factor, disentanglement is 1 if any code has importance.

    Parameters
    ----------
    latents
        Shape ``(n_cells, n_dims)``, finite floats.
    factors
        Shape ``(n_cells, n_factors)`` or ``(n_cells,)``: integer codes or labels.
    test_size
        Fraction of cells held out for ``informativeness_test`` (``ceil(test_size * n)``).
    shuffle
        If False the first ``n - n_test`` rows train and the rest test; if True the split is
        a permutation drawn from ``numpy.random.default_rng(seed)``.
    seed
        Seeds the split and the trees (``random_state``).
    n_estimators, max_depth
        Passed to ``GradientBoostingClassifier``; change them only to trade fidelity to the
        published numbers for speed.

    Returns
    -------
    dict
        ``disentanglement``, ``completeness`` (in [0, 1]), ``informativeness_train``,
        ``informativeness_test`` (mean accuracies), all floats.
    """
    z = check_latents(latents)
    y = factor_codes(factors)
    check_same_n(z, y)
    y, _ = drop_constant(y, "dci")
    train, test = split_indices(z.shape[0], test_size=test_size, shuffle=shuffle, seed=seed)
    importance, acc_train, acc_test = _importance_gbt(
        z[train],
        y[train],
        z[test],
        y[test],
        seed=seed,
        n_estimators=n_estimators,
        max_depth=max_depth,
    )
    d, c = _dci_aggregate(importance)
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness_train": acc_train,
        "informativeness_test": acc_test,
    }
