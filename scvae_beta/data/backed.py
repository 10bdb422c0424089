"""Counts on disk: a count source over anndata's on-disk matrices, never loaded whole.

:class:`BackedCountData` serves cells from the count matrix of a backed AnnData
(``anndata.read_h5ad(path, backed="r")``) or of an AnnData whose ``X`` is
``anndata.io.sparse_dataset(zarr_group["X"])`` (see
:func:`~scvae_beta.data.from_anndata.read_backed`): anndata's on-disk
CSR datasets (``anndata.abc.CSRDataset``, h5ad or zarr) or a dense on-disk array.

- **One chunked pass** when it is built: the input checks (the same errors, with the same
  totals, as in memory: :class:`~scvae_beta.data.checks.CountCheck`) and the library sizes,
  reading :data:`PASS_ROWS` rows at a time.
- **Reads are contiguous row chunks**: rows ``[c * chunk_rows, (c + 1) * chunk_rows)`` in one
  call (random single-row reads from HDF5 are slow), kept in a small least-recently-used cache
  of ``cache_chunks`` chunks; a minibatch is gathered from the cached chunks.
- Training order (:class:`~scvae_beta.data.sampler.ChunkedSampler`): chunks in a seeded
  random order, the training cells of ``buffer_chunks`` chunks at a time shuffled together.
  Each chunk is read once per epoch; memory is bounded by the cache, whatever the number of
  cells (besides a few numbers per cell: library sizes, indices and the outputs).
- Several processes (``torchrun``): the chunks are dealt out to the ranks each epoch and a
  rank trains only on, so reads only, its own (:meth:`ChunkedSampler.shard
  <scvae_beta.data.sampler.ChunkedSampler.shard>`); the per-epoch validation pass runs on
  rank 0 alone and reads the validation cells, which lie in every chunk. The passes after
  training (latents and the ELBO of all cells) read all chunks on every rank.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import torch

from scvae_beta.data.checks import CountCheck, check_library_sizes
from scvae_beta.data.counts import Minibatch, csr_minibatch

#: Rows per chunk read from disk in training and inference (one contiguous read each).
CHUNK_ROWS = 1024
#: Chunks whose training cells are shuffled together (the shuffle buffer, 16,384 cells).
BUFFER_CHUNKS = 16
#: Rows read at a time in the checking pass.
PASS_ROWS = 8192


def is_on_disk(X) -> bool:
    """Whether ``X`` is an on-disk matrix this module reads (sparse dataset, h5py/zarr array)."""
    from anndata.abc import CSCDataset, CSRDataset

    if isinstance(X, CSRDataset | CSCDataset):
        return True
    mod = type(X).__module__
    return mod.startswith(("h5py", "zarr")) and hasattr(X, "shape") and len(X.shape) == 2


def _canonical(sub: sp.csr_matrix) -> tuple[sp.csr_matrix, bool]:
    """``sub`` with duplicates summed (narrow integers as int64) and stored zeros dropped;
    whether it already was canonical."""
    if sub.has_canonical_format and np.count_nonzero(sub.data) == sub.nnz:
        return sub, True
    narrow = np.issubdtype(sub.dtype, np.integer) and sub.dtype.itemsize < 8
    sub = sub.astype(np.int64 if narrow else sub.dtype)  # a copy
    sub.sum_duplicates()
    sub.eliminate_zeros()
    return sub, False


class BackedCountData:
    """A :class:`~scvae_beta.data.source.CountSource` over an on-disk count matrix.

    Parameters
    ----------
    X
        ``anndata.abc.CSRDataset`` (h5ad or zarr) or a dense 2-D h5py/zarr array, cells x
        genes of raw counts.
    batch_index
        ``(n_cells,)`` integer batch codes, or ``None``.
    where, hint
        How errors name the matrix (``"adata.X"``) and an extra hint for the non-integer
        error.
    columns
        Gene positions to use, in order (``None``: all, as stored): how a fitted model reads
        its own genes from data with the genes in another order.
    chunk_rows, buffer_chunks
        Rows per disk read, and chunks shuffled together in training (see the module).

    Raises
    ------
    ValueError
        The same errors as the in-memory checks (non-integer, negative, non-finite or too
        large counts; cells with zero total counts), after one chunked pass.
    """

    def __init__(
        self,
        X,
        batch_index: np.ndarray | None = None,
        *,
        where: str = "adata.X",
        hint: str = "",
        columns: np.ndarray | None = None,
        chunk_rows: int | None = None,
        buffer_chunks: int | None = None,
    ) -> None:
        from anndata.abc import CSCDataset

        if isinstance(X, CSCDataset):
            raise ValueError(
                f"{where} is stored on disk as CSC (genes by column), so every cell would need "
                "a read of the whole matrix; write it as CSR first, e.g. with "
                "adata.X = adata.X.tocsr() in memory before write_h5ad, or train in memory "
                "with adata.to_memory()"
            )
        self.X = X
        self.where = where
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self.chunk_rows = int(chunk_rows or CHUNK_ROWS)
        self.buffer_chunks = int(buffer_chunks or BUFFER_CHUNKS)
        self.cache_chunks = 2 * self.buffer_chunks + 2  # a minibatch may straddle two buffers
        self._cache: OrderedDict[int, sp.csr_matrix] = OrderedDict()
        self.batch_index = batch_index
        self.log_library = self._check_pass(hint)
        check_library_sizes(self.log_library, where)
        self._log_library_t = torch.from_numpy(self.log_library)
        self._batch_t = (
            None if batch_index is None else torch.from_numpy(batch_index.astype(np.int64))
        )

    # ------------------------------------------------------------------ reading

    @property
    def n_cells(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.X.shape[1] if self.columns is None else len(self.columns))

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix | np.ndarray:
        """Rows ``[start, stop)`` as stored (CSR, or dense for a dense array), in one read,
        with :attr:`columns` applied."""
        sub = self.X[start:stop]
        if self.columns is not None:
            sub = sub[:, self.columns]
        return sub

    def _check_pass(self, hint: str) -> np.ndarray:
        """Check the counts and sum each cell's, :data:`PASS_ROWS` rows at a time."""
        check = CountCheck(self.X.dtype, self.where, hint)
        summed = None  # checks of the sums of duplicate entries, when there are any
        library = np.empty(self.n_cells, dtype=np.float64)
        self.canonical = True
        for start in range(0, self.n_cells, PASS_ROWS):
            stop = min(start + PASS_ROWS, self.n_cells)
            sub = self.read_rows(start, stop)
            if sp.issparse(sub):
                check.update(sub.data)
                sub, canonical = _canonical(sp.csr_matrix(sub))
                if not canonical:
                    self.canonical = False
                    if summed is None:
                        where = "the counts after summing duplicate sparse entries"
                        summed = CountCheck(sub.dtype, where)
                    summed.update(sub.data)
            else:
                check.update(sub)
            library[start:stop] = np.asarray(sub.sum(axis=1, dtype=np.float64)).ravel()
        check.finish()
        if summed is not None:
            summed.finish()
        with np.errstate(divide="ignore"):
            return np.log(library).astype(np.float32)

    def _chunk(self, c: int) -> sp.csr_matrix:
        """Chunk ``c`` as canonical float32 CSR, from the cache or one read."""
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        start = c * self.chunk_rows
        sub = self.read_rows(start, min(start + self.chunk_rows, self.n_cells))
        if sp.issparse(sub):
            sub = sp.csr_matrix(sub)
            if not self.canonical:
                sub, _ = _canonical(sub)
            sub = sp.csr_matrix(
                (sub.data.astype(np.float32, copy=False), sub.indices, sub.indptr),
                shape=sub.shape,
            )
        else:
            sub = sp.csr_matrix(np.asarray(sub, dtype=np.float32))
        self._cache[c] = sub
        if len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return sub

    def rows(self, idx: np.ndarray) -> sp.csr_matrix:
        """Canonical float32 CSR rows ``idx`` (in that order), gathered from row chunks."""
        idx = np.asarray(idx, dtype=np.int64)
        chunk = idx // self.chunk_rows
        if idx.size and chunk[0] == chunk[-1] and (chunk == chunk[0]).all():
            return self._chunk(int(chunk[0]))[idx - chunk[0] * self.chunk_rows]
        order = np.argsort(chunk, kind="stable")
        sorted_chunks = chunk[order]
        cuts = np.flatnonzero(np.diff(sorted_chunks)) + 1
        pieces = []
        for part in np.split(order, cuts):
            c = int(chunk[part[0]])
            pieces.append(self._chunk(c)[idx[part] - c * self.chunk_rows])
        stacked = sp.vstack(pieces, format="csr")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return stacked[inverse]

    def minibatch(self, idx: np.ndarray, device: torch.device | str = "cpu") -> Minibatch:
        """Rows ``idx`` as a sparse COO tensor on ``device``."""
        return csr_minibatch(self.rows(idx), idx, self._log_library_t, self._batch_t, device)
