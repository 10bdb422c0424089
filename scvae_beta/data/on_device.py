"""The whole count matrix on the training device: minibatches gathered there.

On a GPU the per-step host work (slicing CSR rows, building index tensors, a host-to-device
copy) can starve the device at large batch sizes. :class:`DeviceCountData` copies the CSR
arrays to the device once (``int32`` column indices, ``float32`` values, ``int64`` row
pointers: about 8 bytes per nonzero) and gathers a minibatch's nonzeros with a few index
operations on the device. It works on any device (the tests run it on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from scvae_beta.data.counts import CountData, Minibatch


def device_bytes(data: CountData) -> int:
    """Bytes the matrix takes on the device (values, column indices, row pointers)."""
    return int(data.X.nnz) * 8 + (data.n_cells + 1) * 8


class DeviceCountData:
    """:class:`~scvae_beta.data.counts.CountData` with its CSR arrays on ``device``.

    Parameters
    ----------
    data
        The in-memory source (its checks and library sizes are reused).
    device
        Where the matrix lives and minibatches are built.
    """

    def __init__(self, data: CountData, device: torch.device | str) -> None:
        self.device = torch.device(device)
        X = data.X
        self._n_cells, self._n_genes = X.shape
        self.log_library = data.log_library
        self.batch_index = data.batch_index
        self.indptr = torch.from_numpy(X.indptr.astype(np.int64)).to(self.device)
        self.indices = torch.from_numpy(X.indices.astype(np.int32)).to(self.device)
        self.values = torch.from_numpy(X.data.astype(np.float32)).to(self.device)
        self._log_library_t = torch.from_numpy(self.log_library).to(self.device)
        self._batch_t = (
            None
            if self.batch_index is None
            else torch.from_numpy(self.batch_index.astype(np.int64)).to(self.device)
        )

    @property
    def n_cells(self) -> int:
        return self._n_cells

    @property
    def n_genes(self) -> int:
        return self._n_genes

    def minibatch(self, idx: np.ndarray, device: torch.device | str | None = None) -> Minibatch:
        """Rows ``idx`` as a coalesced sparse COO tensor, built on the data's device.

        ``device`` must be the data's device (or ``None``).
        """
        if device is not None and torch.device(device) != self.device:
            raise ValueError(f"the counts are on {self.device}; minibatches cannot go to {device}")
        dev = self.device
        idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        if dev.type == "cuda":
            idx_t = idx_t.pin_memory()
        idx_t = idx_t.to(dev, non_blocking=True)
        starts = self.indptr[idx_t]
        lengths = self.indptr[idx_t + 1] - starts
        nnz = int(lengths.sum())  # one host sync: the size of the batch's tensors
        b = idx_t.numel()
        rows = torch.repeat_interleave(torch.arange(b, device=dev), lengths, output_size=nnz)
        first = torch.cumsum(lengths, 0) - lengths  # where each row's entries begin
        pos = torch.arange(nnz, device=dev) - first[rows] + starts[rows]
        x = torch.sparse_coo_tensor(
            torch.stack([rows, self.indices[pos].long()]),
            self.values[pos],
            (b, self._n_genes),
            is_coalesced=True,  # rows in batch order, columns sorted within a CSR row
            check_invariants=False,
        )
        batch = None if self._batch_t is None else self._batch_t[idx_t]
        return Minibatch(x, self._log_library_t[idx_t], batch, idx_t)
