"""The count-source protocol: what training and inference need from a data set.

Anything with these members can be trained on: the in-memory CSR
:class:`~scvae_beta.data.counts.CountData` is one implementation; an on-disk source (backed
h5ad / zarr) is another. Nothing below this protocol knows where the counts live.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from scvae_beta.data.counts import Minibatch


@runtime_checkable
class CountSource(Protocol):
    """Cells x genes of raw counts, served as minibatches.

    Attributes
    ----------
    n_cells, n_genes
        Shape of the count matrix.
    log_library
        ``(n_cells,)`` float32 log total count of each cell.
    batch_index
        ``(n_cells,)`` integer batch codes, or ``None`` without a batch key.
    """

    @property
    def n_cells(self) -> int: ...

    @property
    def n_genes(self) -> int: ...

    log_library: np.ndarray
    batch_index: np.ndarray | None

    def minibatch(self, idx: np.ndarray, device: torch.device | str = "cpu") -> Minibatch:
        """Rows ``idx`` (in that order) as a :class:`Minibatch` on ``device``."""
        ...
