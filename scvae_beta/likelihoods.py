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

import functools
from typing import NamedTuple

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
#
# The ``*_cells`` functions touch each nonzero entry through *linear* indices
# ``lin = row * G + col`` into flattened tensors. The old formulation gathered with
# ``t[rows, cols]`` / ``t[cols]``, whose backward is ``index_put_(accumulate=True)``: slow on
# CPU and, for the per-gene dispersion (many entries per gene), a parallel scatter with atomic
# float adds once it has >= 32768 entries and more than one thread, so gradients (and two
# fits with one seed) differed from run to run at 2 threads. Now the NB log-likelihood has a
# hand-written backward (:class:`_NBCells`) and the others gather with ``index_select`` on
# flat tensors, whose backward is ``index_add_``: a sequential loop, the same result at every
# run and any thread count.


class _Entries(NamedTuple):
    """The nonzero entries of a ``(B, G)`` count matrix in row-major order."""

    rows: Tensor  #: ``(k,)`` int64 row of each entry (sorted)
    cols: Tensor  #: ``(k,)`` int64 column of each entry
    lin: Tensor  #: ``(k,)`` int64 ``rows * G + cols``: unique positions in the flattened matrix
    values: Tensor  #: ``(k,)`` the counts


def _nonzero(x: Tensor) -> _Entries:
    """The nonzero entries of ``x`` (dense, or sparse COO).

    A sparse ``x`` should list no explicit zeros (the loader guarantees it): for NB and
    Poisson an explicit zero is harmless, for ZINB it is not. An uncoalesced one is coalesced.
    """
    n_genes = x.shape[1]
    if x.is_sparse:
        if not x.is_coalesced():
            x = x.coalesce()
        ind = x._indices()
        rows, cols = ind[0], ind[1]
        return _Entries(rows, cols, rows * n_genes + cols, x._values())
    flat = x.reshape(-1)
    lin = flat.nonzero().squeeze(1)
    return _Entries(lin // n_genes, lin % n_genes, lin, flat.index_select(0, lin))


def _entrywise(x: Tensor, log_mu: Tensor, *others: Tensor | None) -> bool:
    """Whether the per-entry (sparse-aware) path applies: a ``(B, G)`` matrix of counts that
    need no gradient, ``log_mu`` of the same shape, other parameters ``(G,)`` or ``(B, G)``.
    Anything else (extra batch dimensions, broadcasting) takes the dense reference path."""
    if x.dim() != 2 or x.requires_grad or log_mu.shape != x.shape:
        return False
    return all(t is None or t.shape in (x.shape, x.shape[1:]) for t in others)


def _dense(x: Tensor) -> Tensor:
    return x.to_dense() if x.is_sparse else x


def _flat_take(t: Tensor, lin: Tensor) -> Tensor:
    """``t.reshape(-1)[lin]``; its backward is ``index_add_`` (deterministic), not
    ``index_put_(accumulate=True)``."""
    return t.reshape(-1).index_select(0, lin)


#: Counts up to this value take the lgamma/digamma terms from per-gene tables (see
#: :func:`_rising_tables`); larger ones, and non-integer counts, evaluate them per entry.
TABLE_MAX_COUNT = 16


def _small_counts(xv: Tensor, cols: Tensor, n_genes: int) -> tuple[Tensor, Tensor] | None:
    """For the table lookups: positions ``(x - 1) * G + col`` in a ``(TABLE_MAX_COUNT, G)``
    table (``x`` clamped into the table) and the indices of the entries outside it (counts
    above ``TABLE_MAX_COUNT``, or explicit zeros), which are evaluated directly. ``None``
    unless every count is an integer."""
    xi = xv.to(torch.int64)
    if not torch.equal(xi.to(xv.dtype), xv):
        return None
    clamped = xi.clamp(1, TABLE_MAX_COUNT)
    others = (clamped != xi).nonzero().squeeze(1)
    return clamped.sub_(1).mul_(n_genes).add_(cols), others


def _rising_tables(theta: Tensor, log_terms: bool) -> Tensor:
    """``(TABLE_MAX_COUNT, G)`` tables, row ``x - 1`` for the count ``x``, of the per-gene

    * ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) = sum_{j<x} log((theta + j) / (j + 1))``
      (``log_terms``), or
    * ``theta * (digamma(x + theta) - digamma(theta)) = sum_{j<x} theta / (theta + j)``.

    Both are exact identities for integer ``x`` (``Gamma(x + t) = Gamma(t) t (t+1)...(t+x-1)``):
    one vectorised ``log`` or division per table cell instead of a scalar ``lgamma`` or
    ``digamma`` per nonzero entry, and no cancellation between two large ``lgamma`` values.
    """
    j = torch.arange(TABLE_MAX_COUNT, dtype=theta.dtype, device=theta.device).unsqueeze(1)
    t = theta + j
    if log_terms:
        terms = t.log_().sub_(torch.log1p(j))
    else:
        terms = torch.div(theta, t, out=t)
    return terms.cumsum_(0)


def _lgamma_terms(xv: Tensor, th: Tensor) -> Tensor:
    """``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` entry by entry."""
    return torch.lgamma(xv + th) - torch.lgamma(th) - torch.lgamma(xv + 1.0)


def _digamma_terms(xv: Tensor, th: Tensor) -> Tensor:
    """``theta * (digamma(x + theta) - digamma(theta))`` entry by entry."""
    return th * (torch.digamma(xv + th) - torch.digamma(th))


class _NBCells(torch.autograd.Function):
    """Per-cell NB log-likelihood from the nonzero entries, with a hand-written backward.

    ``forward(log_mu, log_theta, nz, zero_terms)`` returns ``(B,)``: the sum over each cell's
    nonzero entries of ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) - x * softplus(
    log_theta - log_mu)``, plus, if ``zero_terms``, ``-theta * softplus(log_mu - log_theta)``
    over *all* entries. ``log_theta`` is ``(G,)`` or ``(B, G)``.

    With ``d = log_mu - log_theta`` (``u = -d`` at the nonzeros) the gradients are

    * d/d log_mu: ``-theta * sigmoid(d)`` everywhere, ``+ x * sigmoid(u)`` at the nonzeros;
    * d/d log_theta: ``theta * (sigmoid(d) - softplus(d))`` everywhere,
      ``+ theta * (digamma(x + theta) - digamma(theta)) - x * sigmoid(u)`` at the nonzeros.

    The nonzero entries' part of the ``log_mu`` gradient is added with ``index_add_`` at the
    unique positions ``nz.lin`` (nothing accumulates: each position is written once); the
    per-gene ``log_theta`` gradient is reduced with ``index_add_`` over genes, a sequential
    loop, so the result does not depend on the thread count or the run. With a per-gene
    dispersion and integer counts the lgamma/digamma terms come from per-gene tables over
    the small counts (:func:`_rising_tables`).
    """

    @staticmethod
    def forward(ctx, log_mu: Tensor, log_theta: Tensor, nz: _Entries, zero_terms: bool):
        rows, cols, lin, xv = nz
        n_genes = log_mu.shape[-1]
        theta = log_theta.exp()
        lm_nz = _flat_take(log_mu, lin)
        small = None
        if log_theta.dim() == 1:
            lt_nz = log_theta.index_select(0, cols)
            small = _small_counts(xv, cols, n_genes)
        else:
            lt_nz = _flat_take(log_theta, lin)
        if small is not None:
            pos, others = small
            lg = _rising_tables(theta, True).view(-1).index_select(0, pos)
            if others.numel():
                x_o = xv.index_select(0, others)
                th_o = theta.index_select(0, cols.index_select(0, others))
                lg.index_copy_(0, others, _lgamma_terms(x_o, th_o))
        else:
            lg = _lgamma_terms(xv, lt_nz.exp())
        u = lt_nz - lm_nz
        per_entry = lg.sub_(xv * F.softplus(u))
        if zero_terms:
            d = log_mu - log_theta
            sp = F.softplus(d)
            out = -(sp @ theta) if theta.dim() == 1 else -(sp * theta).sum(-1)
        else:
            d = sp = None
            out = log_mu.new_zeros(log_mu.shape[0])
        out = out.index_add_(0, rows, per_entry)
        pos, others = small if small is not None else (None, None)
        ctx.save_for_backward(theta, d, sp, u, xv, rows, cols, lin, lt_nz, pos, others)
        ctx.shape = log_mu.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        theta, d, sp, u, xv, rows, cols, lin, lt_nz, pos, others = ctx.saved_tensors
        need_mu, need_theta = ctx.needs_input_grad[:2]
        per_gene = theta.dim() == 1
        g_r = g.index_select(0, rows)
        q = g_r * xv * torch.sigmoid(u)  # d/d log_mu of the nonzero-entry terms
        grad_mu = grad_theta = None
        if sp is not None:
            sig = torch.sigmoid(d)  # mu / (mu + theta)
            if need_theta:
                if per_gene:
                    grad_theta = theta * (g @ sig - g @ sp)
                else:
                    grad_theta = (sig - sp).mul_(theta).mul_(g.unsqueeze(-1))
            if need_mu:
                grad_mu = sig.mul_(theta).mul_(-g.unsqueeze(-1))
        else:
            if need_mu:
                grad_mu = g.new_zeros(ctx.shape)
            if need_theta:
                grad_theta = torch.zeros_like(theta)
        if need_mu:
            grad_mu.view(-1).index_add_(0, lin, q)
        if need_theta:
            if pos is not None:
                dg = _rising_tables(theta, False).view(-1).index_select(0, pos)
                if others.numel():
                    x_o = xv.index_select(0, others)
                    th_o = theta.index_select(0, cols.index_select(0, others))
                    dg.index_copy_(0, others, _digamma_terms(x_o, th_o))
            else:
                dg = _digamma_terms(xv, lt_nz.exp())
            w = dg.mul_(g_r).sub_(q)
            if per_gene:
                grad_theta.index_add_(0, cols, w)
            else:
                grad_theta.view(-1).index_add_(0, lin, w)
        return grad_mu, grad_theta, None, None


def _in_float32(fn):
    """Evaluate a ``*_cells`` likelihood in float32 whatever its inputs: half-precision
    tensors (bfloat16, float16: e.g. a decoder under autocast) are upcast first and autocast
    is off inside, so ``lgamma``, ``softplus`` and the sums over genes keep float32 precision
    and range (the NB log-likelihood of a cell is a sum of thousands of terms; in bfloat16
    its 8-bit mantissa would lose most of them). The gradient flows back to the inputs in
    their own dtype."""

    @functools.wraps(fn)
    def wrapper(x: Tensor, *args: Tensor) -> Tensor:
        low = (torch.bfloat16, torch.float16)
        args = tuple(a.float() if a.dtype in low else a for a in args)
        if not x.is_sparse and x.dtype in low:
            x = x.float()
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            return fn(x, *args)

    return wrapper


@_in_float32
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
    Tensor of shape ``(B,)`` in nats; equal to ``nb_log_prob(x, log_mu, log_theta).sum(-1)``,
    and so are its gradients (computed by a hand-written, deterministic backward).
    """
    if not _entrywise(x, log_mu, log_theta):
        return nb_log_prob(_dense(x), log_mu, log_theta).sum(-1)
    return _NBCells.apply(log_mu, log_theta, _nonzero(x), True)


@_in_float32
def zinb_log_prob_cells(x: Tensor, log_mu: Tensor, log_theta: Tensor, zi_logits: Tensor) -> Tensor:
    """ZINB log-likelihood of each cell, exploiting zeros; shapes as :func:`nb_log_prob_cells`.

    ``zi_logits`` has shape ``(B, G)`` or ``(G,)``.
    """
    if not _entrywise(x, log_mu, log_theta, zi_logits):
        return zinb_log_prob(_dense(x), log_mu, log_theta, zi_logits).sum(-1)
    nz = _nonzero(x)
    softplus_zi = F.softplus(zi_logits)
    log_nb0 = -log_theta.exp() * F.softplus(log_mu - log_theta)
    log_zero = torch.logaddexp(zi_logits, log_nb0) - softplus_zi
    # At a nonzero entry log(1 - pi) + log NB(x) = -softplus(zi) + log_nb0 + (the NB terms that
    # vanish at x == 0) replaces the zero-entry term.
    is_nz = torch.zeros(x.shape, dtype=torch.bool, device=log_mu.device)
    is_nz.view(-1)[nz.lin] = True
    per_entry = torch.where(is_nz, log_nb0 - softplus_zi, log_zero)
    return per_entry.sum(-1) + _NBCells.apply(log_mu, log_theta, nz, False)


@_in_float32
def poisson_log_prob_cells(x: Tensor, log_mu: Tensor) -> Tensor:
    """Poisson log-likelihood of each cell, exploiting zeros (shapes: see ``nb_log_prob_cells``)."""
    if not _entrywise(x, log_mu):
        return poisson_log_prob(_dense(x), log_mu).sum(-1)
    rows, _, lin, xv = _nonzero(x)
    per_entry = xv * _flat_take(log_mu, lin) - torch.lgamma(xv + 1.0)
    return (-log_mu.exp().sum(-1)).index_add(0, rows, per_entry)


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
