"""``scanpy.pp.neighbors`` for the package's own neighbour graphs (``metrics.cluster_agreement``,
the report's UMAP), working around a version clash of scanpy's dependencies.

From :data:`APPROXIMATE_FROM` cells on, scanpy searches neighbours with pynndescent's
transformer. pynndescent 0.7 returns a ``scipy.sparse.csr_array`` there, and scanpy 1.11 then
calls ``getnnz(axis=1)``, which SciPy's sparse *arrays* no longer have: ``sc.pp.neighbors``
fails with ``AttributeError`` on any data set of 8,192 cells or more (the newest versions that
install on Python 3.11, the project's pins). Passing scanpy the same transformer, with the same
settings scanpy would choose, whose output is a ``csr_matrix``, gives scanpy's own graph.

The package requires ``pynndescent<0.7`` (so users' own ``sc.pp.neighbors`` works too); this
module keeps the package's calls working where that bound is not honoured (``--no-deps``,
environments assembled by hand).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

#: scanpy's threshold for the approximate search (euclidean metric, ``knn=True``): below it an
#: exact search (scikit-learn) runs and no workaround is needed.
APPROXIMATE_FROM = 8192


@contextlib.contextmanager
def keep_torch_threads():
    """Restore torch's thread count on exit: numba's OpenMP layer (used by the neighbour search,
    UMAP and Leiden's helpers) resets the process-wide count that torch reads, which would make
    later fits run at another thread count (and give other floats)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def neighbors(adata: AnnData, *, use_rep: str, n_neighbors: int, random_state: int) -> None:
    """``sc.pp.neighbors(adata, use_rep=..., n_neighbors=..., random_state=...)`` with scanpy's
    default search (callers wrap it in :func:`keep_torch_threads`)."""
    import scanpy as sc

    kwargs = {}
    if adata.n_obs >= APPROXIMATE_FROM:
        kwargs["transformer"] = nndescent_transformer(adata.n_obs, n_neighbors, random_state)
    sc.pp.neighbors(
        adata, use_rep=use_rep, n_neighbors=n_neighbors, random_state=random_state, **kwargs
    )


def nndescent_transformer(n_obs: int, n_neighbors: int, random_state: int):
    """pynndescent's transformer with the settings scanpy 1.11 gives it by default (UMAP's:
    ``n_trees``, ``n_iters`` from the number of cells), returning a ``csr_matrix``."""
    import scanpy as sc

    return _matrix_transformer()(
        n_neighbors=n_neighbors,
        metric="euclidean",
        metric_kwds={},
        random_state=random_state,
        n_jobs=sc.settings.n_jobs,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n_obs))),
    )


@functools.cache
def _matrix_transformer():
    """The subclass, made on first use so that importing this module does not import
    pynndescent (and numba)."""
    import scipy.sparse as sp
    from pynndescent import PyNNDescentTransformer

    class MatrixNNDescentTransformer(PyNNDescentTransformer):
        """``PyNNDescentTransformer`` whose ``fit_transform`` returns a ``csr_matrix``."""

        def fit_transform(self, X, y=None, **fit_params):
            return sp.csr_matrix(super().fit_transform(X, y, **fit_params))

    return MatrixNNDescentTransformer
