"""An embedding (e.g. UMAP) coloured by each latent dimension, one panel per dimension."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvae_beta.pl._utils import active_dims, panels


def latent_dims(
    adata: AnnData,
    *,
    key: str = "scvae_beta",
    basis: str = "umap",
    dims=None,
    ncols: int = 4,
    cmap: str = "RdBu_r",
    size: float | None = None,
    axes=None,
) -> list:
    """Scatter ``adata.obsm["X_" + basis]`` coloured by latent dimensions, one panel each.

    The colour scale of each panel is symmetric around 0 (the prior mean) at the largest
    absolute value of that dimension.

    Parameters
    ----------
    adata
        With ``obsm["X_" + key]`` (from :func:`scvae_beta.fit`) and ``obsm["X_" + basis]``.
    key
        The ``key_added`` of the fit.
    basis
        Embedding to draw, e.g. ``"umap"`` (from ``sc.tl.umap``) or ``"pca"``.
    dims
        Dimensions to show; ``None``: the active ones (``uns[key]["active_dims"]``; all
        dimensions when the fit records none).
    ncols
        Panels per row of a new figure.
    cmap, size
        Colour map and marker size (default: scaled to the number of cells).
    axes
        At least ``len(dims)`` Axes to draw into; ``None`` makes a new figure (not shown).

    Returns
    -------
    List of Axes, one per dimension, titled ``"dim <d>"``.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    name = "X_" + key
    if name not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {name!r}; run scvae_beta.fit(adata, key_added={key!r}) first, "
            "or pass key=<the key_added used>"
        )
    if "X_" + basis not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no 'X_{basis}'; compute the embedding first, e.g. "
            f"sc.pp.neighbors(adata, use_rep={name!r}); sc.tl.umap(adata) "
            f"(obsm keys: {list(adata.obsm)})"
        )
    z = np.asarray(adata.obsm[name], dtype=np.float64)
    xy = np.asarray(adata.obsm["X_" + basis])[:, :2]
    entry = adata.uns.get(key, {})
    dims = active_dims(entry, z.shape[1]) if dims is None else np.atleast_1d(dims).astype(int)
    if dims.size == 0:
        raise ValueError(f"no active dimension in adata.uns[{key!r}]; pass dims=[...]")
    bad = [int(d) for d in dims if not 0 <= d < z.shape[1]]
    if bad:
        raise ValueError(f"dims {bad} out of range; the latent space has {z.shape[1]} dims")
    size = size if size is not None else float(np.clip(12000 / max(adata.n_obs, 1), 1, 40))
    out = panels(int(dims.size), axes, ncols=ncols)
    for ax, d in zip(out, dims, strict=True):
        values = z[:, d]
        lim = float(np.abs(values).max()) or 1.0
        order = np.argsort(np.abs(values))  # strongest cells drawn last, on top
        points = ax.scatter(
            xy[order, 0],
            xy[order, 1],
            c=values[order],
            cmap=cmap,
            vmin=-lim,
            vmax=lim,
            s=size,
            linewidths=0,
            rasterized=True,
        )
        ax.figure.colorbar(points, ax=ax, shrink=0.8)
        ax.set_title(f"dim {d}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{basis.upper()}1")
        ax.set_ylabel(f"{basis.upper()}2")
    return out
