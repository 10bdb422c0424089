"""Heat map of the top genes of one latent dimension along its traversal."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvae_beta.pl._utils import new_axes, uns_entry


def traversal(
    adata: AnnData,
    *,
    key: str = "scvae_beta",
    dim: int,
    n_genes: int = 10,
    cmap: str = "RdBu_r",
    ax=None,
):
    """Heat map of genes x traversal steps for one dimension, from ``tl.latent_traversal``.

    Shows the ``n_genes`` genes with the largest absolute log-fold change among those stored
    (up- and down-regulated), ordered from most up to most down. Each cell is the natural log
    of the gene's mean decoded proportion at that step minus its mean over the steps
    (row-centred log expression), on a colour scale symmetric around 0.

    Parameters
    ----------
    adata
        After :func:`scvae_beta.tl.latent_traversal` with the same ``key``.
    key
        The ``key_added`` of the fit.
    dim
        The latent dimension (one of those traversed).
    n_genes
        Number of genes (rows).
    cmap
        Diverging colour map.
    ax
        Axes to draw into; ``None`` makes a new figure (not shown).

    Returns
    -------
    The Axes; its image (``ax.images[0]``) has shape ``(n_genes, n_steps)`` and the y tick
    labels are the genes.
    """
    fix = f"scvae_beta.tl.latent_traversal(adata, model, key={key!r})"
    info = uns_entry(adata, key, "traversal", fix=fix)
    name = f"dim_{int(dim)}"
    if name not in info.get("profiles", {}):
        done = [int(d) for d in np.asarray(info.get("dims", []))]
        raise KeyError(
            f"dimension {dim} was not traversed (traversed: {done}); run {fix[:-1]}, "
            f"dims=[{int(dim)}]) first"
        )
    if not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes must be an integer >= 1, got {n_genes!r}")
    genes = np.asarray(info["genes"][name]).astype(str)
    profiles = np.asarray(info["profiles"][name], dtype=np.float64)  # (genes, steps)
    steps = np.asarray(info["steps"], dtype=np.float64)
    if genes.size == 0:
        raise ValueError(f"no gene changes along dimension {dim}; nothing to draw")
    with np.errstate(divide="ignore"):
        log_p = np.log(profiles)
    lfc = log_p[:, -1] - log_p[:, 0]
    keep = np.argsort(-np.abs(lfc), kind="stable")[:n_genes]
    keep = keep[np.argsort(-lfc[keep], kind="stable")]
    values = log_p[keep] - log_p[keep].mean(1, keepdims=True)
    lim = float(np.abs(values).max()) or 1.0

    ax = new_axes(ax, figsize=(4.5, 0.3 * keep.size + 1.5))
    image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim)
    ax.figure.colorbar(image, ax=ax, label="log expression (row-centred)")
    ax.set_yticks(np.arange(keep.size), labels=list(genes[keep]))
    ticks = np.unique(np.round(np.linspace(0, steps.size - 1, min(steps.size, 5))).astype(int))
    ax.set_xticks(ticks, labels=[f"{steps[i]:+.3g}" for i in ticks])
    ax.set_xlabel("step (sd of the dimension)")
    ax.set_title(f"dim {int(dim)} traversal")
    return ax
