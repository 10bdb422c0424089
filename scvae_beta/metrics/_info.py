"""Plug-in (maximum-likelihood) entropy and mutual information of discrete codes, in nats.

These equal ``sklearn.metrics.mutual_info_score`` (which disentanglement_lib uses); they are
written on a contingency table here so a whole (dims x factors) matrix costs one
``numpy.bincount`` per pair and no sklearn input checks.
"""

from __future__ import annotations

import numpy as np


def _inverse(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive codes ``0..C-1`` for arbitrary discrete values, and ``C``."""
    uniques, inverse = np.unique(codes, return_inverse=True)
    return inverse.ravel(), uniques.size


def entropy(codes: np.ndarray) -> float:
    """Plug-in entropy ``-sum_c p_c log p_c`` of a discrete vector ``(n,)``, in nats."""
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(max(0.0, -(p * np.log(p)).sum()))


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information ``I(a; b)`` of two discrete vectors ``(n,)``, in nats.

    ``sum_ij p_ij log(p_ij / (p_i p_j))`` over the non-empty cells of the contingency table.
    Exactly 0 when either vector takes a single value; tiny negative rounding is clipped to 0.
    """
    ai, na = _inverse(np.asarray(a))
    bi, nb = _inverse(np.asarray(b))
    if na == 1 or nb == 1:
        return 0.0
    n = ai.size
    table = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb).astype(np.float64)
    row = table.sum(axis=1, keepdims=True)
    col = table.sum(axis=0, keepdims=True)
    nz = table > 0
    terms = table * (np.log(n * table, where=nz, out=np.zeros_like(table)) - np.log(row * col))
    return float(max(0.0, terms[nz].sum() / n))


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information of every (code, factor) pair.

    Parameters
    ----------
    codes
        Discretised latents, shape ``(n_cells, n_dims)``.
    factors
        Discrete factors, shape ``(n_cells, n_factors)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_dims, n_factors)``, nats.
    """
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            m[i, j] = mutual_info(codes[:, i], factors[:, j])
    return m
