"""Count matrices below the AnnData edge: CSR storage, minibatches as sparse COO tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from scvae_beta.data.checks import check_counts


class Minibatch(NamedTuple):
    """Tensors of one minibatch on the training device.

    Attributes
    ----------
    x
        Float32 counts ``(B, G)`` as a coalesced sparse COO tensor whose indices and values
        come straight from the CSR rows (explicit zeros dropped); call ``.to_dense()`` for
        a dense copy.
    log_library
        ``(B,)`` log total count of each cell.
    batch_index
        ``(B,)`` int64 batch codes, or ``None``.
    indices
        ``(B,)`` int64 row indices of the cells in the data set.
    """

    x: Tensor
    log_library: Tensor
    batch_index: Tensor | None
    indices: Tensor


@dataclass
class CountData:
    """A cells x genes count matrix with per-cell library sizes and batch codes.

    The matrix stays sparse (CSR); a minibatch is handed on as a sparse COO tensor.

    Parameters
    ----------
    X
        CSR matrix ``(n_cells, n_genes)`` of non-negative integer counts (any numeric dtype).
    batch_index
        ``(n_cells,)`` integer batch codes in ``[0, n_batches)``, or ``None``.
    """

    X: sp.csr_matrix
    batch_index: np.ndarray | None = None
    log_library: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not sp.issparse(self.X) or self.X.format != "csr":
            raise TypeError("CountData needs a scipy CSR matrix; use to_csr() first")
        if not self.X.has_canonical_format or np.count_nonzero(self.X.data) < self.X.nnz:
            # Duplicates would be counted twice and stored zeros taken for nonzeros by the
            # likelihood: canonicalise a copy once (the caller's matrix is left alone). Integers
            # narrower than 64 bits are summed as int64 (int8: 100 + 100 is -56; a sum of many
            # int32 duplicates may pass 2**31), and the sums are checked again.
            narrow = np.issubdtype(self.X.dtype, np.integer) and self.X.dtype.itemsize < 8
            X = self.X.astype(np.int64 if narrow else self.X.dtype)  # a copy
            X.sum_duplicates()
            X.eliminate_zeros()
            check_counts(X, "the counts after summing duplicate sparse entries")
            self.X = X
        library = row_sums(self.X)
        with np.errstate(divide="ignore"):
            self.log_library = np.log(library).astype(np.float32)
        self._log_library_t = torch.from_numpy(self.log_library)
        self._batch_t = (
            None
            if self.batch_index is None
            else torch.from_numpy(self.batch_index.astype(np.int64))
        )

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def n_genes(self) -> int:
        return self.X.shape[1]

    def minibatch(self, idx: np.ndarray, device: torch.device | str = "cpu") -> Minibatch:
        """Rows ``idx`` as a sparse COO tensor on ``device`` (no dense copy is made)."""
        return csr_minibatch(self.X[idx], idx, self._log_library_t, self._batch_t, device)


def csr_minibatch(
    sub: sp.csr_matrix,
    idx: np.ndarray,
    log_library: Tensor,
    batch_index: Tensor | None,
    device: torch.device | str = "cpu",
) -> Minibatch:
    """A :class:`Minibatch` from the canonical CSR rows ``sub`` of the cells ``idx``.

    ``log_library`` and ``batch_index`` are the whole data set's ``(n_cells,)`` tensors.
    """
    n_genes = sub.shape[1]
    rows = np.repeat(np.arange(len(idx), dtype=np.int64), np.diff(sub.indptr))
    coords = torch.from_numpy(np.stack([rows, sub.indices.astype(np.int64)]))
    values = torch.from_numpy(sub.data.astype(np.float32))
    idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    log_lib = log_library[idx_t]
    batch = None if batch_index is None else batch_index[idx_t]
    if torch.device(device).type == "cuda":
        # Page-locked host copies go to the GPU asynchronously: the copy of this batch
        # overlaps the work already queued on the device.
        tensors = [coords, values, log_lib, idx_t] + ([] if batch is None else [batch])
        tensors = [t.pin_memory().to(device, non_blocking=True) for t in tensors]
        coords, values, log_lib, idx_t = tensors[:4]
        batch = None if batch is None else tensors[4]
    else:
        log_lib, idx_t = log_lib.to(device), idx_t.to(device)
        batch = None if batch is None else batch.to(device)
    x = torch.sparse_coo_tensor(
        coords.to(device),
        values.to(device),
        (len(idx), n_genes),
        is_coalesced=True,
        check_invariants=False,  # guaranteed by the canonical CSR rows
    )
    return Minibatch(x, log_lib, batch, idx_t)


def row_sums(X: sp.csr_matrix, chunk: int = 4096) -> np.ndarray:
    """Total count of each row as float64, in row chunks.

    ``X.sum(axis=1)`` on an int32 matrix upcasts a copy of the whole matrix first.
    """
    out = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], chunk):
        out[s : s + chunk] = np.asarray(X[s : s + chunk].sum(axis=1, dtype=np.float64)).ravel()
    return out


def to_csr(X) -> sp.csr_matrix:
    """Return ``X`` as a CSR matrix without copying when it already is one.

    Accepts scipy sparse matrices/arrays of any format and dense numpy arrays.
    """
    if sp.issparse(X):
        return X if (X.format == "csr" and isinstance(X, sp.csr_matrix)) else sp.csr_matrix(X)
    if isinstance(X, np.ndarray | np.matrix):
        return sp.csr_matrix(np.asarray(X))
    raise TypeError(
        f"counts of type {type(X).__name__} are not supported; "
        "pass a numpy array or a scipy sparse matrix (load backed/dask data into memory first)"
    )


def minibatch_indices(
    indices: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[np.ndarray]:
    """Split ``indices`` into minibatches, shuffled when ``rng`` is given.

    A last batch of a single cell is merged into the one before it (batch normalisation
    needs at least two cells), so every cell is visited once per pass.
    """
    order = rng.permutation(indices) if rng is not None else np.asarray(indices)
    n = len(order)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        yield order[s:end]


def n_minibatches(n: int, batch_size: int) -> int:
    """Number of minibatches :func:`minibatch_indices` yields for ``n`` cells."""
    k = -(-n // batch_size)
    return k - 1 if k > 1 and n % batch_size == 1 else k
