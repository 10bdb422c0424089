"""Training curves: loss parts, the KL weight, and the KL of each dimension per epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scvae_beta.pl._utils import panels, uns_entry


def training_history(adata: AnnData, *, key: str = "scvae_beta", axes=None) -> list:
    """Three panels over epochs: reconstruction, KL with the KL weight, KL per dimension.

    The first two show the training and validation (dashed) reconstruction loss and KL (nats
    per cell); the second also shows the KL weight (annealing schedule) on a right-hand
    axis. The third is a heat map of each dimension's KL per epoch: dimensions that stay
    near zero collapsed onto the prior. A dotted line marks the epoch whose weights were kept.

    Parameters
    ----------
    adata
        Annotated by :func:`scvae_beta.fit` under ``key`` (``uns[key]["history"]``).
    key
        The ``key_added`` of the fit.
    axes
        Three Axes to draw into; ``None`` makes a new figure (not shown).

    Returns
    -------
    List of the three panel Axes (the KL weight's twin axis is ``axes[1]``'s twin; the heat
    map's image is ``axes[2].images[0]``, shape ``(n_latent, n_epochs)``).
    """
    history = uns_entry(adata, key, "history")
    if not isinstance(history, pd.DataFrame) or "train_reconstruction" not in history:
        raise ValueError(
            f"adata.uns[{key!r}]['history'] is not a history table from scvae_beta.fit"
        )
    epoch = np.arange(1, len(history) + 1)
    best = uns_entry(adata, key).get("training", {}).get("best_epoch")
    ax_rec, ax_kl, ax_dim = panels(3, axes, ncols=3, size=(4.0, 3.2))

    for ax, part in ((ax_rec, "reconstruction"), (ax_kl, "kl")):
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}_{part}"
            if col in history and np.isfinite(history[col].to_numpy(dtype=float)).any():
                ax.plot(epoch, history[col], style, color="C0", label=split)
        ax.set_xlabel("epoch")
        ax.legend(frameon=False, loc="best")
    ax_rec.set_ylabel("reconstruction (nats per cell)")
    ax_kl.set_ylabel("KL (nats per cell)")
    if "kl_weight" in history:
        twin = ax_kl.twinx()
        twin.plot(epoch, history["kl_weight"], color="C3", linewidth=1)
        twin.set_ylim(0, None)
        twin.set_ylabel("KL weight", color="C3")
        twin.tick_params(axis="y", colors="C3")

    dim_cols = sorted(
        (c for c in history.columns if str(c).startswith("kl_dim_")),
        key=lambda c: int(str(c)[len("kl_dim_") :]),
    )
    if dim_cols:
        grid = history[dim_cols].to_numpy(dtype=np.float64).T  # (n_latent, n_epochs)
        extent = (0.5, len(epoch) + 0.5, len(dim_cols) - 0.5, -0.5)
        image = ax_dim.imshow(grid, aspect="auto", extent=extent, cmap="viridis")
        ax_dim.figure.colorbar(image, ax=ax_dim, label="KL (nats per cell)")
        ax_dim.set_yticks(np.arange(len(dim_cols)))
    ax_dim.set_xlabel("epoch")
    ax_dim.set_ylabel("latent dimension")
    if best is not None:
        for ax in (ax_rec, ax_kl, ax_dim):
            ax.axvline(float(best), color="0.4", linestyle=":", linewidth=1)
    return [ax_rec, ax_kl, ax_dim]
