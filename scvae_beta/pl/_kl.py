"""Bar chart of the KL of each latent dimension: which knobs the model uses."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvae_beta.pl._utils import new_axes, uns_entry

#: Bar colours of active and collapsed dimensions.
ACTIVE_COLOR = "C0"
INACTIVE_COLOR = "0.75"


def kl_per_dim(
    adata: AnnData,
    *,
    key: str = "scvae_beta",
    threshold: float | None = None,
    log: bool = False,
    ax=None,
):
    """Bar chart of ``adata.uns[key]["kl_per_dim"]`` (mean KL per cell, nats).

    Bars above the activity threshold (active dimensions) are coloured, the others grey; a
    dashed line marks the threshold.

    Parameters
    ----------
    adata
        Annotated by :func:`scvae_beta.fit` under ``key``.
    key
        The ``key_added`` of the fit.
    threshold
        Activity threshold in nats; ``None`` uses the fit's ``active_threshold``
        (``uns[key]["params"]``, default 0.05).
    log
        Logarithmic y axis (collapsed dimensions sit orders of magnitude below active ones).
    ax
        Axes to draw into; ``None`` makes a new figure (returned Axes' figure; not shown).

    Returns
    -------
    The matplotlib ``Axes``: one bar per latent dimension (``ax.patches``).
    """
    entry = uns_entry(adata, key)
    kl = np.asarray(uns_entry(adata, key, "kl_per_dim"), dtype=np.float64)
    if threshold is None:
        threshold = float(entry.get("params", {}).get("active_threshold", 0.05))
    active = kl > threshold
    ax = new_axes(ax, figsize=(max(3.0, 0.35 * kl.size + 1.5), 3.0))
    dims = np.arange(kl.size)
    colors = [ACTIVE_COLOR if a else INACTIVE_COLOR for a in active]
    ax.bar(dims, kl, color=colors, edgecolor="none")
    ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"{threshold:g} nats")
    if log:
        ax.set_yscale("log")
    ax.set_xticks(dims)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats per cell)")
    ax.set_title(f"{int(active.sum())} of {kl.size} dimensions active")
    ax.legend(loc="upper right", frameon=False)
    return ax
