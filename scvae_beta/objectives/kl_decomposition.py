"""Minibatch estimators of the KL decomposition of Chen et al. (2018).

Averaged over the data, the KL term of the ELBO splits exactly into three parts::

    E_p(x)[KL(q(z|x) || p(z))] = I_q(x; z)                       index-code mutual information
                               + KL(q(z) || prod_d q(z_d))       total correlation (TC)
                               + sum_d KL(q(z_d) || p(z_d))      dimension-wise KL

where ``q(z) = (1/N) sum_n q(z | x_n)`` is the aggregate posterior over the ``N`` cells of the
data set. With one sample ``z_i ~ q(z | x_i)`` per minibatch cell, each part is an average of
log-density differences::

    MI    = mean_i[ log q(z_i | x_i) - log q(z_i) ]
    TC    = mean_i[ log q(z_i) - sum_d log q(z_id) ]
    dw_kl = mean_i[ sum_d log q(z_id) - log p(z_i) ]

so ``MI + TC + dw_kl = mean_i[log q(z_i | x_i) - log p(z_i)]`` holds exactly on the same
samples, for any estimate of ``log q(z_i)`` and ``log q(z_id)``. Those two aggregate
densities are the only approximation, estimated from the minibatch mixture:

``"mws"`` (minibatch-weighted sampling)
    ``log q(z_i) ~= logsumexp_j log q(z_i | x_j) - log(N M)``, and per dimension alike. Its
    weights sum to ``1/N``, not 1; at ``N = M`` it underestimates each log density by
    exactly ``log M``, which biases TC by ``+(D - 1) log M``.
``"mss"`` (minibatch-stratified sampling, Chen et al. 2018, appendix C.2)
    A normalised importance-weighted mixture: each sample's *own* component has weight
    ``1/N``; one other component (the next cell of the minibatch, cyclically) stands for
    the cells outside the minibatch with weight ``(N - M + 1) / (N (M - 1))``; the
    remaining ``M - 2`` components have weight ``1 / (M - 1)``. Every row of weights sums to
    one, and over random minibatch orders the mixture is an unbiased estimate of ``q(z_i)``.
    (The widely copied reference code fills the ``1/N`` weights with a stride of ``M`` instead
    of ``M + 1``, which puts them in column 0 rather than on the diagonal; this follows the
    paper's definition.)

The prior is the model's ``p(z) = N(0, I)``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from scvae_beta.objectives._mixture import mixture_log_densities

__all__ = [
    "ESTIMATORS",
    "KLDecomposition",
    "kl_decomposition",
    "log_density_matrix",
    "log_importance_weights",
    "aggregate_log_densities",
]

Estimator = Literal["mss", "mws"]
ESTIMATORS: tuple[str, ...] = ("mss", "mws")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class KLDecomposition(NamedTuple):
    """Mean per cell, in nats: ``mi + tc + dw_kl`` is the Monte Carlo KL to the prior."""

    mi: Tensor
    tc: Tensor
    dw_kl: Tensor


def _check(z: Tensor, loc: Tensor, scale: Tensor, dataset_size: int, estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not supported; choose one of {ESTIMATORS}")
    if z.dim() != 2 or z.shape != loc.shape or z.shape != scale.shape:
        raise ValueError(
            "z, loc and scale must all have shape (M, D); got "
            f"{tuple(z.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    m = z.shape[0]
    if m < 2:
        raise ValueError(f"the estimators need a minibatch of at least 2 cells, got {m}")
    if dataset_size < m:
        raise ValueError(
            f"dataset_size={dataset_size} is smaller than the minibatch ({m} cells); pass the "
            "number of cells the minibatch was drawn from"
        )


def log_density_matrix(z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """``out[i, j, d] = log N(z[i, d]; loc[j, d], scale[j, d]^2)``, shape ``(M, M, D)``."""
    t = (z.unsqueeze(1) - loc.unsqueeze(0)) / scale.unsqueeze(0)
    return -0.5 * t.square() - scale.log().unsqueeze(0) - _HALF_LOG_2PI


def log_importance_weights(
    batch_size: int,
    dataset_size: int,
    estimator: Estimator = "mss",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Log weights ``(M, M)`` of component ``j`` in the estimate of ``q(z_i)``.

    ``"mws"``: every entry ``-log(N M)``. ``"mss"``: ``1/N`` on the diagonal (each sample's own
    component), ``(N - M + 1) / (N (M - 1))`` at ``(i, (i + 1) mod M)`` and ``1 / (M - 1)``
    elsewhere, so each row sums to one.
    """
    m, n = int(batch_size), int(dataset_size)
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), dtype=dtype, device=device)
    if estimator != "mss":
        raise ValueError(f"estimator={estimator!r} is not supported; choose one of {ESTIMATORS}")
    w = torch.full((m, m), 1.0 / (m - 1), dtype=torch.float64, device=device)
    rows = torch.arange(m, device=device)
    w[rows, (rows + 1) % m] = (n - m + 1) / (n * (m - 1))
    w[rows, rows] = 1.0 / n
    return w.log().to(dtype)


def aggregate_log_densities(
    z: Tensor, loc: Tensor, scale: Tensor, *, dataset_size: int, estimator: Estimator = "mss"
) -> tuple[Tensor, Tensor, Tensor]:
    """Estimates of ``log q(z_i)`` ``(M,)`` and ``log q(z_id)`` ``(M, D)``, plus the exact
    ``log q(z_i | x_i)`` ``(M,)``, from one minibatch (see the module docstring)."""
    _check(z, loc, scale, dataset_size, estimator)
    m = z.shape[0]
    log_w = log_importance_weights(m, dataset_size, estimator, dtype=z.dtype, device=z.device)
    log_q_joint, log_q_dims = mixture_log_densities(z, loc, scale, log_w)
    t = (z - loc) / scale
    log_q_cond = (-0.5 * t.square() - scale.log() - _HALF_LOG_2PI).sum(-1)
    return log_q_joint, log_q_dims, log_q_cond


def kl_decomposition(
    z: Tensor,
    loc: Tensor,
    scale: Tensor,
    *,
    dataset_size: int,
    estimator: Estimator = "mss",
    block_size: int | None = None,
) -> KLDecomposition:
    """Index-code MI, total correlation and dimension-wise KL, estimated on a minibatch.

    Parameters
    ----------
    z
        ``(M, D)``: one sample ``z_i ~ q(z | x_i)`` per minibatch cell.
    loc, scale
        ``(M, D)``: each cell's Gaussian posterior parameters.
    dataset_size
        ``N``, the number of cells the minibatch was drawn from (defines ``q(z)``).
    estimator
        ``"mss"`` (minibatch-stratified, default) or ``"mws"`` (minibatch-weighted).
    block_size
        ``None``: one ``(M, M, D)`` density matrix over the whole minibatch. An int caps the
        cells per matrix: a larger minibatch is cut, in order, into ``ceil(M / block_size)``
        nearly equal blocks, each estimated on its own (as a minibatch of that size drawn
        from the same ``N`` cells) and averaged weighted by size. This keeps the cost per cell
        constant instead of growing with ``M``; a random minibatch's consecutive blocks are
        random subsets too.

    Returns
    -------
    :class:`KLDecomposition` of scalar tensors (mean per cell, nats), differentiable with
    respect to ``z``, ``loc`` and ``scale``. Their sum equals
    ``mean_i[log q(z_i | x_i) - log p(z_i)]`` on the same samples.
    """
    m = z.shape[0]
    if block_size is not None and m > block_size:
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        k = -(-m // block_size)
        parts = [
            kl_decomposition(zb, lb, sb, dataset_size=dataset_size, estimator=estimator)
            for zb, lb, sb in zip(
                z.tensor_split(k), loc.tensor_split(k), scale.tensor_split(k), strict=True
            )
        ]
        sizes = [len(b) for b in torch.arange(m).tensor_split(k)]
        return KLDecomposition(
            *(
                sum(n * getattr(p, f) for n, p in zip(sizes, parts, strict=True)) / m
                for f in KLDecomposition._fields
            )
        )
    log_q_joint, log_q_dims, log_q_cond = aggregate_log_densities(
        z, loc, scale, dataset_size=dataset_size, estimator=estimator
    )
    log_q_prod = log_q_dims.sum(-1)
    log_prior = (-0.5 * z.square() - _HALF_LOG_2PI).sum(-1)
    return KLDecomposition(
        mi=(log_q_cond - log_q_joint).mean(),
        tc=(log_q_joint - log_q_prod).mean(),
        dw_kl=(log_q_prod - log_prior).mean(),
    )
