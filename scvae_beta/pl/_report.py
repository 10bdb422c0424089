"""One self-contained HTML page about a fit: settings, training, KL, latent space, genes."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from scvae_beta.fitted import FittedModel
from scvae_beta.pl import _report_html as h

#: Section ids and titles, in page order (every report has all of them).
SECTIONS = {
    "settings": "Settings and versions",
    "summary": "Fit summary",
    "history": "Training history",
    "kl": "KL per dimension",
    "decomposition": "KL decomposition",
    "umap": "UMAP",
    "genes": "Top genes of each active dimension",
    "sweep": "β sweep: rate and distortion",
}
#: Figure ids (``<img id=...>``); the UMAP and sweep figures appear when there is data for them.
FIGURES = ("fig-history", "fig-kl", "fig-umap", "fig-sweep")
#: A numeric ``labels`` column with more distinct values is continuous: no per-label contrasts.
MAX_CATEGORIES = 50


def report(
    adata: AnnData,
    *,
    key: str = "scvae_beta",
    model: FittedModel | str | os.PathLike | None = None,
    labels: str | None = None,
    path: str | os.PathLike = "report.html",
) -> Path:
    """Write one self-contained HTML page that summarises a fit.

    The page embeds its figures as PNG (no network, no scripts) and has these sections:
    settings and versions (``uns[key]["params"]``, ``["versions"]``); a fit summary (ELBO,
    reconstruction, KL, training and early stopping); the training history
    (:func:`scvae_beta.pl.training_history`); the KL per dimension with the active ones
    (:func:`scvae_beta.pl.kl_per_dim`, and with ``labels`` the label each dimension separates
    best); the KL decomposition (MI, TC, dimension-wise KL); a UMAP coloured by ``labels``
    and by each active dimension (:func:`scvae_beta.pl.latent_dims`); the top genes of each
    active dimension from :func:`scvae_beta.tl.latent_traversal` (a stored traversal, else one
    computed with the model);
    and the rate–distortion plot (:func:`scvae_beta.pl.rate_distortion`) when a β sweep from
    :func:`scvae_beta.tune_beta` is stored in ``adata.uns``. A section without data says why.

    ``adata`` is never modified: the UMAP (when ``obsm["X_umap"]`` is absent: neighbours and
    UMAP on ``obsm["X_" + key]``, seed 0) and the traversal run on a light copy.

    Parameters
    ----------
    adata
        Annotated by :func:`scvae_beta.fit` under ``key``.
    key
        The ``key_added`` of the fit.
    model
        The :class:`~scvae_beta.FittedModel` of the fit or its saved folder, for the top genes
        (not needed when ``uns[key]["top_genes"]`` covers the active dimensions: that stored
        traversal is used). ``None`` uses ``uns[key]["model_dir"]`` when recorded and present
        (else the section says that no model was found). A folder given here that does not
        exist is an error.
    labels
        ``adata.obs`` column to colour the UMAP by and to relate each dimension to
        (e.g. ``"cell_type"``).
    path
        Output ``.html`` file (its folder is created; an existing file is replaced).

    Returns
    -------
    The path of the written file (``pathlib.Path``).
    """
    entry = _fit_entry(adata, key)
    if labels is not None and labels not in adata.obs.columns:
        raise KeyError(
            f"labels={labels!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}"
        )
    if isinstance(model, str | os.PathLike) and not Path(model).is_dir():
        raise FileNotFoundError(
            f"model folder {os.fspath(model)} does not exist; pass the folder that "
            "FittedModel.save (or scvae-beta fit) wrote, or no model"
        )
    path = Path(path)
    light = _light_copy(adata, key, entry, labels)
    z = np.asarray(adata.obsm["X_" + key], dtype=np.float64)
    kl = np.asarray(entry["kl_per_dim"], dtype=np.float64)
    active = [int(d) for d in entry.get("active_dims", np.flatnonzero(kl > 0.05))]
    label_values = None if labels is None else adata.obs[labels]

    body = {
        "settings": _settings(entry),
        "summary": _summary(adata, entry),
        "history": _history(light, key),
        "kl": _kl(light, key, kl, active, z, _categories(label_values), labels),
        "decomposition": _decomposition(entry, kl),
        "umap": _umap(light, key, active, label_values, labels, "X_umap" in adata.obsm),
        "genes": _genes(light, key, entry, model, active),
        "sweep": _sweep(adata, key),
    }
    page = h.page(adata, key, entry, body, SECTIONS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- inputs


def _fit_entry(adata: AnnData, key: str) -> dict:
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "kl_per_dim" not in entry:
        found = [k for k, v in adata.uns.items() if isinstance(v, dict) and "kl_per_dim" in v]
        raise KeyError(
            f"adata.uns has no {key!r} entry from scvae_beta.fit; fit a model first "
            f"(scvae_beta.fit or scvae-beta fit) or pass the key_added used (fits found: {found})"
        )
    if "X_" + key not in adata.obsm:
        raise KeyError(f"adata.obsm has no 'X_{key}'; the fit's latent space is missing")
    return entry


def _light_copy(adata: AnnData, key: str, entry: dict, labels: str | None) -> AnnData:
    """The fit's latents, counts, needed obs columns and a shallow copy of its ``uns`` entry."""
    params = entry.get("params", {})
    layer = params.get("layer")
    cols = [c for c in (labels, params.get("batch_key")) if c and c in adata.obs.columns]
    counts = {}
    if layer is not None and layer in adata.layers:
        counts["layers"] = {layer: adata.layers[layer]}
    elif layer is None and adata.X is not None:
        counts["X"] = adata.X
    obsm = {"X_" + key: np.asarray(adata.obsm["X_" + key])}
    if "X_umap" in adata.obsm:
        obsm["X_umap"] = np.asarray(adata.obsm["X_umap"])
    return AnnData(
        obs=adata.obs[list(dict.fromkeys(cols))].copy(),
        var=pd.DataFrame(index=adata.var_names.copy()),
        obsm=obsm,
        uns={key: dict(entry)},
        **counts,
    )


# ---------------------------------------------------------------------- sections


def _settings(entry: dict) -> str:
    params = entry.get("params", {})
    versions = entry.get("versions", {})
    if not params:
        return h.note("The fit records no settings (uns[key]['params']).")
    return (
        "<h3>Settings</h3>"
        + h.kv(params)
        + "<h3>Versions</h3>"
        + (h.kv(versions) if versions else h.note("No versions recorded."))
    )


def _summary(adata: AnnData, entry: dict) -> str:
    fields = {
        "cells × genes": f"{adata.n_obs:,} × {adata.n_vars:,}",
        "ELBO (nats per cell)": entry.get("elbo"),
        "reconstruction (nats per cell)": entry.get("reconstruction"),
        "KL (nats per cell)": entry.get("kl"),
        "evaluated on": entry.get("elbo_cells"),
        "active dimensions": entry.get("n_active"),
    }
    fields.update(entry.get("training", {}))
    return h.kv({k: v for k, v in fields.items() if v is not None})


def _history(light: AnnData, key: str) -> str:
    from scvae_beta.pl import training_history

    history = light.uns[key].get("history")
    if not isinstance(history, pd.DataFrame) or history.empty:
        return h.note("The fit records no training history.")
    fig, axes = h.figure((13.0, 3.6), 1, 3)
    training_history(light, key=key, axes=list(axes.ravel()))
    caption = (
        "Training (solid) and validation (dashed) reconstruction and KL, nats per cell; the KL "
        "weight of the annealing schedule in red; the KL of each dimension per epoch. The "
        "dotted line marks the epoch whose weights were kept."
    )
    return h.img(fig, "fig-history", "training history") + h.caption(caption)


def _kl(light, key, kl, active, z, label_values, labels) -> str:
    from scvae_beta.pl import kl_per_dim

    fig, ax = h.figure((max(4.0, 0.4 * kl.size + 2.0), 3.2), 1, 1)
    kl_per_dim(light, key=key, ax=ax[0, 0])
    table = pd.DataFrame(
        {
            "dim": np.arange(kl.size),
            "KL (nats per cell)": kl,
            "active": np.isin(np.arange(kl.size), active),
        }
    )
    if label_values is not None:
        best = label_contrasts(z, label_values)
        table[f"best separated {labels}"] = best["label"].to_numpy()
        table["effect (sd)"] = best["effect"].to_numpy()
    text = (
        f"{len(active)} of {kl.size} dimensions are active (KL above the threshold); the "
        "others collapsed onto the prior and carry no information about the cells."
    )
    if label_values is not None:
        text += (
            f" <i>effect</i>: mean of the dimension in that {html.escape(labels)} minus its mean "
            "in all other cells, in sd of the dimension."
        )
    return h.img(fig, "fig-kl", "KL per dimension") + h.caption(text) + h.table(table)


def _decomposition(entry: dict, kl: np.ndarray) -> str:
    dec = entry.get("kl_decomposition")
    if not isinstance(dec, dict) or not {"mi", "tc", "dw_kl"} <= set(dec):
        return h.note("The fit records no KL decomposition.")
    names = {
        "mi": "index-code mutual information (MI)",
        "tc": "total correlation (TC)",
        "dw_kl": "dimension-wise KL",
    }
    rows = [(names[k], float(dec[k])) for k in ("mi", "tc", "dw_kl")]
    rows.append(("MI + TC + dimension-wise KL", sum(v for _, v in rows)))
    rows.append(("sum of the KL per dimension", float(kl.sum())))
    if "tc_disc" in dec:
        rows.append(("TC from the FactorVAE discriminator", float(dec["tc_disc"])))
    table = pd.DataFrame(rows, columns=["part", "nats per cell"])
    how = ", ".join(f"{k} {dec[k]}" for k in ("estimator", "batch_size", "n_cells") if k in dec)
    text = (
        "Averaged over the cells, the KL to the prior splits into MI + TC + dimension-wise KL "
        "(Chen et al. 2018); a small TC means the dimensions are close to independent."
        + (f" Estimated with {html.escape(how)}." if how else "")
    )
    return h.caption(text) + h.table(table)


def _umap(light, key, active, label_values, labels, stored: bool) -> str:
    from scvae_beta.pl import latent_dims

    if "X_umap" not in light.obsm:
        _compute_umap(light, key)
    n = len(active) + (label_values is not None)
    if n == 0:
        return h.note("No active dimension and no labels: nothing to colour the UMAP by.")
    ncols = min(4, n)
    nrows = int(np.ceil(n / ncols))
    fig, grid = h.figure((3.6 * ncols, 3.1 * nrows), nrows, ncols)
    flat = list(grid.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    if label_values is not None:
        _scatter_labels(flat.pop(0), light.obsm["X_umap"], label_values, labels)
    if active:
        latent_dims(light, key=key, basis="umap", dims=active, axes=flat[: len(active)])
    source = (
        "the stored obsm['X_umap']"
        if stored
        else f"computed for this report: 15 neighbours on obsm['X_{key}'], seed 0"
    )
    text = (
        f"UMAP ({source}) coloured by {'the labels and ' if labels else ''}each active "
        "dimension (posterior means, colour scale symmetric around the prior mean 0)."
    )
    return h.img(fig, "fig-umap", "UMAP") + h.caption(html.escape(text))


def _genes(light, key, entry, model, active) -> str:
    from scvae_beta.tl import latent_traversal

    if not active:
        return h.note("No active dimension to traverse.")
    stored = entry.get("top_genes")
    if isinstance(stored, dict) and all(f"dim_{d}" in stored for d in active):
        top, info, source = stored, entry.get("traversal", {}), "the stored traversal"
    else:
        if model is None:
            folder = entry.get("model_dir")
            if folder is None:
                return h.note(
                    "No model given and the fit records no model folder (uns[key]['model_dir']); "
                    "pass model= (or --model DIR) to list the top genes."
                )
            if not Path(str(folder)).is_dir():
                return h.note(
                    f"The fit records the model folder {folder}, which is not there; pass "
                    "model= (or --model DIR) to list the top genes."
                )
            try:
                latent_traversal(light, key=key, dims=active, n_top_genes=8)
            except (OSError, ValueError, KeyError) as e:
                return h.note(f"The model recorded in {folder} could not be used: {e}")
        else:
            latent_traversal(light, model, key=key, dims=active, n_top_genes=8)
        top, info, source = light.uns[key]["top_genes"], light.uns[key]["traversal"], "a traversal"
    rows = []
    for d in active:
        t = top[f"dim_{d}"]
        rows.append(
            {
                "dim": d,
                "up (log-fold change)": h.genes_text(t["up"], t["up_lfc"]),
                "down (log-fold change)": h.genes_text(t["down"], t["down_lfc"]),
            }
        )
    span, n_cells = info.get("span", 3.0), info.get("n_cells", "the")
    text = (
        f"From {source}: each active dimension moved from −{span:g} to +{span:g} sd of its "
        f"posterior means (other dimensions kept), decoded and averaged over {n_cells} cells; the "
        "genes it turns up and down, ranked by natural-log fold change between the two ends "
        "(a ranking, not effect sizes: the ends lie at the edges of the data)."
    )
    return h.caption(html.escape(text)) + h.table(pd.DataFrame(rows))


def _sweep(adata: AnnData, key: str) -> str:
    from scvae_beta.pl import rate_distortion

    found = _find_sweep(adata, key)
    if found is None:
        return h.note(
            "No β sweep stored in adata.uns; run scvae_beta.tune_beta (or scvae-beta tune-beta) "
            "to see where this β sits on the rate–distortion curve."
        )
    name, sweep = found
    table = sweep["table"]
    metric = str(sweep.get("metric") or "")
    if metric not in table.columns:
        metric = "n_active"
    fig, axes = h.figure((10.0, 3.8), 1, 2)
    rate_distortion(table, metric=metric, axes=list(axes.ravel()))
    text = f"From adata.uns[{name!r}]: distortion (held-out negative log-likelihood) against "
    text += "rate (KL), nats per cell; lower left is better."
    if sweep.get("reason"):
        text += f" Recommendation: {sweep['reason']}"
    return h.img(fig, "fig-sweep", "rate-distortion") + h.caption(html.escape(text))


# ---------------------------------------------------------------------- computations


def label_contrasts(z: np.ndarray, labels) -> pd.DataFrame:
    """Per latent dimension, the label whose cells lie furthest from the others along it.

    ``effect`` is (mean in the label - mean in all other cells) / sd of the dimension over all
    cells; the label with the largest ``|effect|`` wins. ``z`` is ``(n_cells, n_latent)``.
    Returns a DataFrame with columns ``dim``, ``label``, ``effect`` (one row per dimension).
    """
    codes = pd.Categorical(np.asarray(labels, dtype=object))
    ok = codes.codes >= 0
    z, c = np.asarray(z, dtype=np.float64)[ok], codes.codes[ok]
    sd = z.std(axis=0)
    sd[sd == 0] = 1.0
    rows = []
    for d in range(z.shape[1]):
        effects = []
        for k in range(len(codes.categories)):
            inside = c == k
            if inside.all() or not inside.any():
                effects.append(0.0)
                continue
            effects.append((z[inside, d].mean() - z[~inside, d].mean()) / sd[d])
        k = int(np.argmax(np.abs(effects)))
        rows.append((d, str(codes.categories[k]), float(effects[k])))
    return pd.DataFrame(rows, columns=["dim", "label", "effect"])


def _categories(values: pd.Series | None) -> pd.Series | None:
    """``values`` when they are labels (not a continuous column), else ``None``."""
    if values is None:
        return None
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return None if numeric and values.nunique() > MAX_CATEGORIES else values


def _compute_umap(light: AnnData, key: str) -> None:
    import scanpy as sc

    from scvae_beta._neighbors import keep_torch_threads, neighbors

    with keep_torch_threads():
        neighbors(light, use_rep="X_" + key, n_neighbors=15, random_state=0)
        sc.tl.umap(light, random_state=0)


def _scatter_labels(ax, xy: np.ndarray, values: pd.Series, name: str) -> None:
    """UMAP coloured by an obs column: categories with a legend, numbers with a colour bar."""
    xy = np.asarray(xy)[:, :2]
    size = float(np.clip(12000 / max(len(xy), 1), 1, 40))
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        points = ax.scatter(*xy.T, c=values.to_numpy(float), s=size, linewidths=0, rasterized=True)
        ax.figure.colorbar(points, ax=ax, shrink=0.8)
    else:
        cat = pd.Categorical(values.astype(object))
        colors = _palette(len(cat.categories))
        for k, label in enumerate(cat.categories):
            inside = cat.codes == k
            ax.scatter(
                *xy[inside].T,
                s=size,
                color=colors[k],
                linewidths=0,
                label=str(label),
                rasterized=True,
            )
        ax.legend(
            fontsize=6,
            markerscale=8 / max(size, 1) ** 0.5,
            frameon=False,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
        )
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _find_sweep(adata: AnnData, key: str):
    """``(uns key, entry)`` of a stored ``tune_beta`` sweep, preferring ``key + "_tune"``."""
    names = [key + "_tune", *sorted(k for k in adata.uns if k != key + "_tune")]
    for name in names:
        entry = adata.uns.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("table"), pd.DataFrame):
            if {"beta", "rate", "distortion"} <= set(entry["table"].columns):
                return name, entry
    return None
