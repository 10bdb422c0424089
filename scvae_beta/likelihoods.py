"""Count likelihoods (NB, ZINB, Poisson), written once, in log space and sparse-aware.

All functions take the mean in log space, ``log_mu = log(library) + log_softmax(logits)``,
so tiny means never produce ``log(0)``, and the inverse dispersion as ``log_theta``.

The negative-binomial log-pmf with mean ``mu`` and inverse dispersion ``theta`` is::

    log NB(x; mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
                           + theta * log(theta / (theta + mu)) + x * log(mu / (theta + mu))
                         = [lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
                            - x * softplus(log_theta - log_mu)]          (zero when x == 0)
                           - theta * softplus(log_mu - log_theta)         (every entry)

Single-cell count matrices are ~90 % zeros, and the first bracket vanishes for ``x == 0``.
The ``*_cells`` functions therefore evaluate the cheap last term densely and the
``lgamma`` terms only on the nonzero entries; the result is exact, not an approximation.
They accept the counts either dense or as a *sparse COO* tensor (what the minibatch loader
passes: positions and values of the nonzeros straight from the CSR matrix, no dense copy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

__all__ = [
    "nb_log_prob",
    "nb_log_prob_cells",
    "zinb_log_prob",
    "zinb_log_prob_cells",
    "poisson_log_prob",
    "poisson_log_prob_cells",
    "NegativeBinomialCounts",
    "ZeroInflatedNegativeBinomialCounts",
    "PoissonCounts",
    "count_distribution",
]


# --------------------------------------------------------------------------- elementwise


def nb_log_prob(x: Tensor, log_mu: Tensor, log_theta: Tensor) -> Tensor:
    """Elementwise NB log-pmf (dense reference implementation).

    Parameters
    ----------
    x
        Counts, shape ``(..., G)``.
    log_mu
        Log mean, broadcastable to ``x``.
    log_theta
        Log inverse dispersion, broadcastable to ``x``.

    Returns
    -------
    Tensor of the broadcast shape, log-probabilities in nats.
    """
    theta = log_theta.exp()
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        - theta * F.softplus(log_mu - log_theta)
        - x * F.softplus(log_theta - log_mu)
    )


def zinb_log_prob(x: Tensor, log_mu: Tensor, log_theta: Tensor, zi_logits: Tensor) -> Tensor:
    """Elementwise zero-inflated NB log-pmf; ``sigmoid(zi_logits)`` is the dropout probability."""
    softplus_zi = F.softplus(zi_logits)
    log_nb0 = -log_theta.exp() * F.softplus(log_mu - log_theta)
    zero = torch.logaddexp(zi_logits, log_nb0) - softplus_zi
    nonzero = nb_log_prob(x, log_mu, log_theta) - softplus_zi
    return torch.where(x > 0, nonzero, zero)


def poisson_log_prob(x: Tensor, log_mu: Tensor) -> Tensor:
    """Elementwise Poisson log-pmf with log rate ``log_mu``."""
    return x * log_mu - log_mu.exp() - torch.lgamma(x + 1.0)


# --------------------------------------------------------------------------- per cell, sparse


def _nonzero(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows, columns and values of the nonzero entries of ``x`` (dense or sparse COO).

    A sparse ``x`` must be coalesced and list no explicit zeros (the loader guarantees
    both); for NB and Poisson an explicit zero would be harmless, for ZINB it would not.
    """
    if x.is_sparse:
        ind = x._indices()
        return ind[0], ind[1], x._values()
    rows, cols = torch.nonzero(x, as_tuple=True)
    return rows, cols, x[rows, cols]


def _gather(t: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Values of ``t`` (shape ``(G,)`` or ``(B, G)``) at the given entries of a ``(B, G)`` grid."""
    return t[cols] if t.dim() == 1 else t[rows, cols]


def _nb_nonzero_terms(
    xv: Tensor, lm: Tensor, log_theta: Tensor, theta: Tensor, rows: Tensor, cols: Tensor
) -> Tensor:
    """The part of the NB log-pmf that vanishes at ``x == 0``, on the listed entries only.

    With a per-gene ``log_theta`` of shape ``(G,)``, ``lgamma(theta)`` is computed once per
    gene and gathered, instead of once per nonzero entry.
    """
    lt = _gather(log_theta, rows, cols)
    th = _gather(theta, rows, cols)
    lg_th = torch.lgamma(theta)[cols] if theta.dim() == 1 else torch.lgamma(th)
    return torch.lgamma(xv + th) - lg_th - torch.lgamma(xv + 1.0) - xv * F.softplus(lt - lm)


def nb_log_prob_cells(x: Tensor, log_mu: Tensor, log_theta: Tensor) -> Tensor:
    """NB log-likelihood of each cell (summed over genes), exploiting zeros.

    Parameters
    ----------
    x
        Counts, shape ``(B, G)``: dense, or a coalesced sparse COO tensor of the nonzeros.
    log_mu
        Log means, shape ``(B, G)``.
    log_theta
        Log inverse dispersion, shape ``(G,)`` or ``(B, G)``.

    Returns
    -------
    Tensor of shape ``(B,)`` in nats; equal to ``nb_log_prob(x, log_mu, log_theta).sum(-1)``.
    """
    theta = log_theta.exp()
    dense = -(theta * F.softplus(log_mu - log_theta)).sum(-1)
    rows, cols, xv = _nonzero(x)
    nz = _nb_nonzero_terms(xv, log_mu[rows, cols], log_theta, theta, rows, cols)
    return dense.index_add(0, rows, nz)


def zinb_log_prob_cells(x: Tensor, log_mu: Tensor, log_theta: Tensor, zi_logits: Tensor) -> Tensor:
    """ZINB log-likelihood of each cell, exploiting zeros; shapes as :func:`nb_log_prob_cells`.

    ``zi_logits`` has shape ``(B, G)`` or ``(G,)``.
    """
    theta = log_theta.exp()
    log_nb0 = -theta * F.softplus(log_mu - log_theta)
    log_zero = torch.logaddexp(zi_logits, log_nb0) - F.softplus(zi_logits)
    out = log_zero.expand_as(x).sum(-1)
    rows, cols, xv = _nonzero(x)
    zl = _gather(zi_logits, rows, cols)
    # At a nonzero entry: log(1 - pi) + log NB(x) replaces the zero-entry term.
    nz = (
        _nb_nonzero_terms(xv, log_mu[rows, cols], log_theta, theta, rows, cols)
        + _gather(log_nb0.expand_as(x), rows, cols)
        - F.softplus(zl)
        - _gather(log_zero.expand_as(x), rows, cols)
    )
    return out.index_add(0, rows, nz)


def poisson_log_prob_cells(x: Tensor, log_mu: Tensor) -> Tensor:
    """Poisson log-likelihood of each cell, exploiting zeros (shapes: see ``nb_log_prob_cells``)."""
    dense = -log_mu.exp().sum(-1)
    rows, cols, xv = _nonzero(x)
    nz = xv * log_mu[rows, cols] - torch.lgamma(xv + 1.0)
    return dense.index_add(0, rows, nz)


# --------------------------------------------------------------------------- distributions

_EMPTY = torch.Size()


class _CountsBase(TorchDistribution):
    """A vector of gene counts per cell: batch shape ``(B,)``, event shape ``(G,)``."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, log_mu: Tensor, validate_args: bool | None = False) -> None:
        self.log_mu = log_mu
        super().__init__(log_mu.shape[:-1], log_mu.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        return self.log_mu.exp()


class NegativeBinomialCounts(_CountsBase):
    """NB over genes: mean ``exp(log_mu)``, inverse dispersion ``exp(log_theta)``.

    ``log_prob(x)`` is sparse-aware (see :func:`nb_log_prob_cells`) and returns shape ``(B,)``.
    """

    def __init__(self, log_mu: Tensor, log_theta: Tensor, validate_args: bool | None = False):
        self.log_theta = log_theta
        super().__init__(log_mu, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        return nb_log_prob_cells(value, self.log_mu, self.log_theta)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            theta = self.log_theta.exp().expand(shape)
            rate = theta / self.log_mu.exp().expand(shape)  # Gamma(theta, rate) has mean mu
            lam = torch.distributions.Gamma(theta, rate, validate_args=False).sample()
            return torch.poisson(lam)


class ZeroInflatedNegativeBinomialCounts(NegativeBinomialCounts):
    """NB with per-entry dropout probability ``sigmoid(zi_logits)``; sparse-aware ``log_prob``."""

    def __init__(
        self,
        log_mu: Tensor,
        log_theta: Tensor,
        zi_logits: Tensor,
        validate_args: bool | None = False,
    ):
        self.zi_logits = zi_logits
        super().__init__(log_mu, log_theta, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        return zinb_log_prob_cells(value, self.log_mu, self.log_theta, self.zi_logits)

    @property
    def mean(self) -> Tensor:
        return self.log_mu.exp() * torch.sigmoid(-self.zi_logits)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        counts = super().sample(sample_shape)
        with torch.no_grad():
            keep = torch.bernoulli(torch.sigmoid(-self.zi_logits).expand(counts.shape))
        return counts * keep


class PoissonCounts(_CountsBase):
    """Poisson over genes with rate ``exp(log_mu)``; sparse-aware ``log_prob``."""

    def log_prob(self, value: Tensor) -> Tensor:
        return poisson_log_prob_cells(value, self.log_mu)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        with torch.no_grad():
            return torch.poisson(self.log_mu.exp().expand(self._extended_shape(sample_shape)))


def count_distribution(
    likelihood: str,
    log_mu: Tensor,
    log_theta: Tensor | None = None,
    zi_logits: Tensor | None = None,
) -> _CountsBase:
    """The count distribution named by ``likelihood``: ``"nb"``, ``"zinb"`` or ``"poisson"``."""
    if likelihood == "nb":
        return NegativeBinomialCounts(log_mu, log_theta)
    if likelihood == "zinb":
        return ZeroInflatedNegativeBinomialCounts(log_mu, log_theta, zi_logits)
    if likelihood == "poisson":
        return PoissonCounts(log_mu)
    raise ValueError(f"unknown likelihood {likelihood!r}; choose 'nb', 'zinb' or 'poisson'")
