"""A beta sweep at a glance: the rate-distortion curve and a metric against beta."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.ticker import NullLocator

from scvae_beta.pl._utils import panels

#: Columns of a sweep table that are not metrics.
SWEEP_COLUMNS = "beta seed rate distortion n_active mi tc dw_kl train_seconds recommended".split()


def rate_distortion(
    table: pd.DataFrame | AnnData,
    *,
    metric: str = "mig",
    table_key: str = "scvae_beta_tune",
    recommended_beta: float | None = None,
    axes=None,
) -> list:
    """Two panels from a beta sweep: distortion vs rate, and ``metric`` vs beta.

    Left: one point per fit (colour = beta), the mean per beta joined by a line in order of
    beta and labelled. Lower-left is better; moving along the curve trades rate (KL, bits of
    information about each cell kept in the code) for distortion (reconstruction error).
    Right: mean +- sd over seeds of ``metric`` per beta, log beta axis (symlog when a beta is
    0). The recommended beta, when known, is marked by a star (left) and a dotted line
    (right).

    Parameters
    ----------
    table
        A sweep table with columns ``beta``, ``seed``, ``rate`` (mean KL per cell, nats),
        ``distortion`` (held-out negative log-likelihood per cell, nats), ``metric`` and
        optionally a boolean ``recommended``; or an AnnData whose ``uns[table_key]["table"]``
        holds it.
    metric
        Column to plot against beta (e.g. ``"mig"``, ``"dci_disentanglement"``, ``"n_active"``).
    table_key
        Where the table sits in ``adata.uns`` when an AnnData is given.
    recommended_beta
        Beta to mark; ``None`` looks in ``table.attrs["recommended_beta"]``, the rows with
        ``recommended == True``, then ``uns[table_key]["recommended_beta"]``.
    axes
        Two Axes to draw into; ``None`` makes a new figure (not shown).

    Returns
    -------
    List of the two Axes.
    """
    stored = None
    if isinstance(table, AnnData):
        entry = table.uns.get(table_key)
        if not isinstance(entry, dict) or "table" not in entry:
            raise KeyError(
                f"adata.uns has no {table_key!r} entry with a 'table'; run the beta sweep that "
                "writes it first, pass table_key=<where it is>, or pass the sweep DataFrame"
            )
        stored = entry.get("recommended_beta")
        table = entry["table"]
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a DataFrame or AnnData, got {type(table).__name__}")
    missing = [c for c in ("beta", "rate", "distortion") if c not in table.columns]
    if missing:
        raise KeyError(f"the sweep table lacks columns {missing}; it has {list(table.columns)}")
    if metric not in table.columns:
        options = [
            c
            for c in table.columns
            if c not in SWEEP_COLUMNS and pd.api.types.is_numeric_dtype(table[c])
        ]
        raise KeyError(
            f"metric {metric!r} is not a column of the sweep table; metrics there: {options} "
            "(or any of 'n_active', 'mi', 'tc', 'dw_kl', 'rate', 'distortion')"
        )
    best = _recommended(table, recommended_beta, stored)

    data = table.astype({"beta": np.float64})
    groups = data.groupby("beta", sort=True)
    betas = np.asarray(list(groups.groups), dtype=np.float64)
    mean = groups[["rate", "distortion", metric]].mean()
    sd = groups[metric].std(ddof=1).fillna(0.0)
    colours = _colours(betas)
    ax_rd, ax_m = panels(2, axes, ncols=2, size=(4.4, 3.6))

    for b, colour in zip(betas, colours, strict=True):
        rows = data[data["beta"] == b]
        ax_rd.scatter(rows["rate"], rows["distortion"], color=colour, s=18, alpha=0.6)
    ax_rd.plot(
        mean["rate"].to_numpy(),
        mean["distortion"].to_numpy(),
        "-o",
        color="0.3",
        markersize=4,
        zorder=3,
    )
    for b, (r, d) in zip(betas, mean[["rate", "distortion"]].to_numpy(), strict=True):
        ax_rd.annotate(f"β={b:g}", (r, d), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_rd.set_xlabel("rate: KL per cell (nats)")
    ax_rd.set_ylabel("distortion: held-out NLL per cell (nats)")

    ax_m.errorbar(
        betas,
        mean[metric].to_numpy(dtype=np.float64),
        yerr=sd.to_numpy(dtype=np.float64),
        fmt="-o",
        color="C0",
        capsize=3,
    )
    if (betas > 0).all():
        ax_m.set_xscale("log")
    else:
        positive = betas[betas > 0]
        ax_m.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax_m.set_xticks(betas, labels=[f"{b:g}" for b in betas])
    ax_m.xaxis.set_minor_locator(NullLocator())
    ax_m.set_xlabel("β")
    ax_m.set_ylabel(f"{metric} (mean ± sd over seeds)")

    if best is not None:
        label = f"recommended β={best:g}"
        if best in mean.index:
            r, d = mean.loc[best, ["rate", "distortion"]]
            ax_rd.scatter([r], [d], marker="*", s=220, color="C3", zorder=4, label=label)
            ax_rd.legend(frameon=False)
        ax_m.axvline(best, color="C3", linestyle=":", label=label)
        ax_m.legend(frameon=False)
    return [ax_rd, ax_m]


def _recommended(table: pd.DataFrame, given: float | None, stored) -> float | None:
    """The beta to mark, from the argument, the table's attrs, its column, or uns."""
    if given is not None:
        return float(given)
    if table.attrs.get("recommended_beta") is not None:
        return float(table.attrs["recommended_beta"])
    if "recommended" in table.columns:
        chosen = table.loc[table["recommended"].astype(bool), "beta"].unique()
        if chosen.size:
            return float(chosen[0])
    if stored is not None and np.isfinite(float(stored)):
        return float(stored)
    return None


def _colours(betas: np.ndarray) -> list:
    """One colour per beta, ordered along a sequential colour map."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    if betas.size == 1:
        return [cmap(0.5)]
    return [cmap(x) for x in np.linspace(0.0, 0.9, betas.size)]
