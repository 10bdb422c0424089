"""Helpers shared by the plots: the fit's ``uns`` entry, new axes, panel grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData


def uns_entry(adata: AnnData, key: str, field: str | None = None, fix: str | None = None):
    """``adata.uns[key]`` (or its ``field``) or an error naming the step that writes it."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    entry = adata.uns.get(key)
    if not isinstance(entry, dict):
        raise KeyError(
            f"adata.uns has no {key!r} entry; run scvae_beta.fit(adata, key_added={key!r}) "
            "first, or pass key=<the key_added used>"
        )
    if field is None:
        return entry
    if field not in entry:
        how = fix or f"scvae_beta.fit(adata, key_added={key!r})"
        raise KeyError(f"adata.uns[{key!r}] has no {field!r}; run {how} first")
    return entry[field]


def active_dims(entry: dict, n_latent: int) -> np.ndarray:
    """Active dimension indices of a fit (all of them when it records none)."""
    if "active_dims" in entry:
        return np.asarray(entry["active_dims"], dtype=np.int64)
    return np.arange(n_latent)


def new_axes(ax, figsize: tuple[float, float] = (5.0, 3.5)):
    """``ax`` itself, or the Axes of a new figure (the caller owns it) when ``ax`` is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def panels(
    n: int,
    axes: Sequence | np.ndarray | None,
    ncols: int,
    size: tuple[float, float] = (3.4, 3.0),
) -> list:
    """``n`` Axes: from ``axes`` (at least ``n`` of them) or a new ``ncols``-wide grid.

    Unused cells of a new grid are hidden.
    """
    if axes is not None:
        flat = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(flat) < n:
            raise ValueError(f"got {len(flat)} axes but {n} panels are drawn; pass at least {n}")
        return flat[:n]
    import matplotlib.pyplot as plt

    ncols = max(1, min(int(ncols), n))
    nrows = int(np.ceil(n / ncols))
    _, grid = plt.subplots(
        nrows,
        ncols,
        figsize=(size[0] * ncols, size[1] * nrows),
        squeeze=False,
        layout="constrained",
    )
    flat = list(grid.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return flat[:n]
