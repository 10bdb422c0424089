"""Which cells are trained on and in what order: the split and the minibatch order.

:class:`Sampler` owns the seeded train/validation split and the seeded shuffling of the
training cells into minibatches; the training loop only asks it for an epoch's batches.
(Sharding by rank for several processes plugs in here.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from scvae_beta.data.checks import split_sizes
from scvae_beta.data.counts import minibatch_indices, n_minibatches


class Sampler:
    """Seeded split of ``n_cells`` into training and validation cells, and minibatch order.

    Parameters
    ----------
    n_cells
        Cells in the data set.
    validation_fraction
        Fraction held out (0: none).
    batch_size
        Cells per training minibatch.
    seed
        Seeds the split (stream ``[seed, 0]``) and the minibatch order (stream ``[seed, 1]``),
        so the same seed gives the same split and order.

    Attributes
    ----------
    train_idx, val_idx
        Sorted row indices of the training and validation cells.
    """

    def __init__(self, n_cells: int, validation_fraction: float, batch_size: int, seed: int):
        n_train, n_val = split_sizes(n_cells, validation_fraction)
        perm = np.random.default_rng([seed, 0]).permutation(n_cells)
        self.val_idx = np.sort(perm[:n_val])
        self.train_idx = np.sort(perm[n_val:])
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng([seed, 1])

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def n_val(self) -> int:
        return len(self.val_idx)

    @property
    def steps_per_epoch(self) -> int:
        """Minibatches per epoch (a last batch of one cell is merged into the one before)."""
        return n_minibatches(self.n_train, self.batch_size)

    def epoch(self) -> Iterator[np.ndarray]:
        """The next epoch's minibatches of training-cell indices, freshly shuffled."""
        return minibatch_indices(self.train_idx, self.batch_size, self.rng)

    def probe_cells(self, max_cells: int) -> np.ndarray:
        """Cells for the per-epoch validation pass: the validation cells, or without a split a
        seeded sample of at most ``max_cells`` training cells (drawn from the order stream,
        before the first epoch)."""
        if self.n_val:
            return self.val_idx
        n = min(self.n_train, max_cells)
        return np.sort(self.rng.choice(self.train_idx, n, replace=False))
