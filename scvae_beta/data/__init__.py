"""AnnData -> count sources: input checks, the count-source protocol, the in-memory CSR
source, and the sampler (split and minibatch order)."""

from scvae_beta.data.backed import BackedCountData
from scvae_beta.data.checks import check_counts, check_library_sizes, split_sizes
from scvae_beta.data.counts import CountData, Minibatch, minibatch_indices, n_minibatches, to_csr
from scvae_beta.data.from_anndata import batch_codes, count_data, counts_matrix, read_backed
from scvae_beta.data.sampler import ChunkedSampler, Sampler, sampler_for
from scvae_beta.data.source import CountSource

__all__ = [
    "BackedCountData",
    "ChunkedSampler",
    "CountData",
    "CountSource",
    "Minibatch",
    "Sampler",
    "batch_codes",
    "check_counts",
    "check_library_sizes",
    "count_data",
    "counts_matrix",
    "minibatch_indices",
    "n_minibatches",
    "read_backed",
    "sampler_for",
    "split_sizes",
    "to_csr",
]
