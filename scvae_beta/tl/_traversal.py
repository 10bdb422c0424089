"""Latent traversals: which genes each latent dimension turns up or down."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from scvae_beta.fitted import FittedModel
from scvae_beta.settings import check_integer, check_number
from scvae_beta.tl._utils import check_n_latent, fit_entry, resolve_model, select_dims, write_entry


def _not_integer(value) -> bool:
    """True unless ``value`` is a Python or NumPy integer (``True``/``False`` are not)."""
    return isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer)


def _check_count(name: str, value, low: int, extra: str = ""):
    """``value`` if it is an integer >= ``low``, else a ValueError saying so (with ``extra``
    after the bound, and the integer to pass for a whole float such as ``50.0``)."""
    if _not_integer(value) or value < low:
        whole = isinstance(value, float | np.floating) and float(value).is_integer()
        hint = f"; pass {int(value)}" if whole and value >= low else ""
        raise ValueError(f"{name} must be an integer >= {low}{extra}, got {value!r}{hint}")
    return value


def latent_traversal(
    adata: AnnData,
    model: FittedModel | str | None = None,
    *,
    key: str = "scvae_beta",
    layer: str | None = "model",
    dims=None,
    n_steps: int = 11,
    span: float = 3.0,
    n_cells: int | None = 500,
    n_top_genes: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> pd.DataFrame:
    """Move each latent dimension across its range and record how decoded expression changes.

    For every traversed dimension ``d`` and every step ``t`` in
    ``linspace(-span, span, n_steps)``, each (subsampled) cell's posterior mean has its
    coordinate ``d`` shifted by ``t * sd_d``, all other coordinates held at the cell's own
    values; the shifted codes are decoded to expression *proportions* (library-free: the
    softmax of the decoder, so library size plays no part; a batch-aware model decodes each
    cell in its own batch) and averaged over the cells. The log-fold change of a gene is the
    natural log of its mean proportion at ``+span`` over that at ``-span``. For a model with
    the additive decoder (``decoder="additive"``) the log-fold changes are read from each
    dimension's own gene program instead (:meth:`AdditiveDecoder.gene_program
    <scvae_beta.nn.AdditiveDecoder.gene_program>`): the mean over the cells of
    ``f_d(z_d + span sd_d) - f_d(z_d - span sd_d)``, what the dimension itself turns up or
    down, free of the other dimensions and of the softmax; the profiles stay decoded means.

    Units of the step, ``sd_d``: the standard deviation over the traversed cells of dimension
    ``d``'s posterior means (how far apart cells actually lie along the axis), not each cell's
    posterior sd. With these units ``span=3`` covers about the range the data occupy, so the
    LFC answers "what differs between cells at the two ends of this axis", and LFCs are
    comparable across dimensions. Per-cell posterior sds would instead shrink as a dimension
    becomes more informative (a well-determined dimension would hardly move) and would push a
    collapsed dimension (sd about 1) far out where the decoder ignores it; in the aggregate
    units a collapsed dimension barely moves and shows LFCs near 0, as it should.

    Parameters
    ----------
    adata
        Raw counts over the model's genes (the same genes; order may differ), annotated by
        :func:`scvae_beta.fit` under ``key``.
    model
        The :class:`~scvae_beta.FittedModel` returned by ``fit``, or a folder written by
        ``model.save(...)``. ``None`` uses ``adata.uns[key]["model_dir"]`` when recorded.
    key
        The ``key_added`` of the fit.
    layer
        Layer with the counts; ``"model"`` uses the layer the model was fit on.
    dims
        Dimensions to traverse; ``None`` uses ``adata.uns[key]["active_dims"]``.
    n_steps, span
        Number of steps (>= 2) and their extent in units of ``sd_d`` (> 0).
    n_cells
        Cells in a seeded subsample (``None`` or more than ``adata.n_obs``: all cells).
    n_top_genes
        Up- and down-regulated genes kept per dimension in ``uns[key]["top_genes"]``.
    batch_size
        Decoded (cell, step) rows per decoder pass; memory is about
        ``batch_size * n_genes`` floats plus ``len(dims) * n_steps * n_genes`` running sums.
    seed
        Seed of the subsample (decoding is deterministic).

    Returns
    -------
    ``pandas.DataFrame`` of log-fold changes, genes (``adata.var_names``) x ``"dim_<d>"`` for
    the traversed dimensions. Also writes, only once everything has been computed:

    ``adata.varm[key + "_traversal"]``
        ``(n_genes, n_latent)`` float32 natural-log fold changes; NaN in the columns of
        dimensions not traversed (0 would claim "no effect").
    ``adata.uns[key]["top_genes"]``
        ``{"dim_<d>": {"up", "up_lfc", "down", "down_lfc"}}``: up to ``n_top_genes`` genes
        with the largest positive and the most negative LFCs, strongest first.
    ``adata.uns[key]["traversal"]``
        ``steps`` ``(n_steps,)`` (units of ``sd_d``), ``dims``, ``step_sd`` (``sd_d`` per
        traversed dim), ``span``, ``n_cells``, ``seed``, ``units``, ``lfc`` (``"decoded"`` or
        ``"gene_program"``: where the log-fold changes come from), and per dimension
        ``genes["dim_<d>"]`` (the up then the down genes) with ``profiles["dim_<d>"]``
        ``(n_genes_kept, n_steps)`` float32 mean proportions at each step, for
        :func:`scvae_beta.pl.traversal`.
    """
    entry = fit_entry(adata, key)
    fitted = resolve_model(model, entry, key)
    n_latent = check_n_latent(fitted, entry, key)
    dims = select_dims(dims, entry, n_latent, key)
    _check_count("n_steps", n_steps, 2)
    span = check_number("span", span, low=0.0, strict=True)
    seed = check_integer("seed", seed, low=0)
    _check_count("n_top_genes", n_top_genes, 1)
    if n_cells is not None:
        _check_count("n_cells", n_cells, 2, " (or None for all cells)")
    batch_size = check_integer("batch_size", batch_size, low=1)  # before the encoding pass

    # Subsample, encode (this also checks genes and counts), and look up batch labels.
    if n_cells is None or n_cells >= adata.n_obs:
        idx = np.arange(adata.n_obs)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(adata.n_obs, n_cells, replace=False))
    sub = adata if idx.size == adata.n_obs else adata[idx]  # no view: data on disk stay there
    loc, _ = fitted.encode(sub, layer=layer)
    labels = None
    if fitted.batch_categories:
        labels = sub.obs[fitted.params["batch_key"]].astype(str).to_numpy()

    steps = np.linspace(-span, span, n_steps)
    step_sd = loc[:, dims].astype(np.float64).std(axis=0)
    means = _traverse(fitted, loc, labels, dims, steps * step_sd[:, None], batch_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log(means[:, -1]) - np.log(means[:, 0])  # (n_dims, n_genes), model order
    lfc_source = "decoded"
    if hasattr(fitted.module.decoder, "gene_program"):  # additive: each dimension's program
        lfc, lfc_source = _program_lfc(fitted, loc, dims, span * step_sd), "gene_program"

    # Results in adata's gene order (the model's genes are a permutation of them).
    pos = pd.Index(map(str, adata.var_names)).get_indexer(fitted.var_names)
    varm = np.full((adata.n_vars, n_latent), np.nan, dtype=np.float32)
    varm[np.ix_(pos, dims)] = lfc.T
    genes = np.asarray(fitted.var_names, dtype=object)
    top, gene_lists, profiles = {}, {}, {}
    for j, d in enumerate(dims):
        up = [g for g in np.argsort(-lfc[j], kind="stable") if lfc[j, g] > 0][:n_top_genes]
        down = [g for g in np.argsort(lfc[j], kind="stable") if lfc[j, g] < 0][:n_top_genes]
        name = f"dim_{d}"
        top[name] = {
            "up": [str(s) for s in genes[up]],
            "up_lfc": lfc[j, up].astype(np.float64),
            "down": [str(s) for s in genes[down]],
            "down_lfc": lfc[j, down].astype(np.float64),
        }
        kept = up + down
        gene_lists[name] = [str(s) for s in genes[kept]]
        profiles[name] = means[j][:, kept].T.astype(np.float32)
    traversal = {
        "steps": steps,
        "dims": dims,
        "step_sd": step_sd,
        "span": float(span),
        "n_cells": int(idx.size),
        "seed": int(seed),
        "units": "sd of the dimension's posterior means over the traversed cells",
        "lfc": lfc_source,
        "genes": gene_lists,
        "profiles": profiles,
    }
    table = pd.DataFrame(varm[:, dims], index=adata.var_names.copy(), columns=list(top))

    adata.varm[key + "_traversal"] = varm  # on a view: makes it a copy, the parent unchanged
    write_entry(adata, key, {"top_genes": top, "traversal": traversal})
    return table


def _program_lfc(
    fitted: FittedModel, loc: np.ndarray, dims: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Mean change of each dimension's own log contribution (its gene program) between
    ``z_d + shift_d`` and ``z_d - shift_d`` over the cells: ``(n_dims, n_genes)``."""
    import torch

    decoder = fitted.module.decoder
    was_training = decoder.training
    decoder.eval()
    try:
        out = np.empty((len(dims), decoder.n_genes))
        for j, d in enumerate(dims):
            z = torch.from_numpy(loc[:, d].astype(np.float32))
            up = decoder.gene_program(int(d), z + float(shift[j]))
            down = decoder.gene_program(int(d), z - float(shift[j]))
            out[j] = (up - down).double().mean(0).cpu().numpy()
    finally:
        decoder.train(was_training)
    return out


def _traverse(
    fitted: FittedModel,
    loc: np.ndarray,
    labels: np.ndarray | None,
    dims: np.ndarray,
    offsets: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """Mean decoded proportions of the traversed cells, ``(n_dims, n_steps, n_genes)``.

    ``loc`` is ``(n_cells, n_latent)``; ``offsets[j]`` ``(n_steps,)`` are the shifts of
    dimension ``dims[j]``. Cells go through the decoder in chunks of about
    ``batch_size // n_steps`` cells times all steps; sums are kept in float64.
    """
    n_cells, n_steps = loc.shape[0], offsets.shape[1]
    out = np.zeros((len(dims), n_steps, len(fitted.var_names)), dtype=np.float64)
    per_chunk = max(1, batch_size // n_steps)
    for j, d in enumerate(dims):
        for s in range(0, n_cells, per_chunk):
            block = loc[s : s + per_chunk]
            z = np.repeat(block, n_steps, axis=0)  # cell-major: (b * n_steps, n_latent)
            z[:, d] += np.tile(offsets[j], block.shape[0])
            batch = None if labels is None else np.repeat(labels[s : s + per_chunk], n_steps)
            rho = fitted.decode_latent(z, batch=batch, batch_size=batch_size)
            out[j] += rho.reshape(block.shape[0], n_steps, -1).sum(0, dtype=np.float64)
    return out / n_cells
