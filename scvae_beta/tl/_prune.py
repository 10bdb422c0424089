"""Dimension pruning of a fitted model: drop the dimensions on the prior, fine-tune the rest."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvae_beta._utils import cells_digest, seeded
from scvae_beta.data import sampler_for
from scvae_beta.evaluation import encode_cells, summarise_fit, summary_fields
from scvae_beta.fitted import FittedModel
from scvae_beta.pruning import check_prune_args, prune_and_finetune
from scvae_beta.tl._utils import check_n_latent, fit_entry, resolve_model, write_entry
from scvae_beta.train import pinned_threads

#: Entries of ``uns[key]`` that describe the dimensions of the unpruned model.
_STALE = ("top_genes", "traversal", "associations", "associations_best", "model_dir")
#: Largest difference, ``ATOL + RTOL * |recorded|``, between a cell's posterior mean from the
#: model and its ``obsm["X_" + key]`` row that still counts as the same cell (float32 encoders
#: on different devices or thread counts agree to about 1e-5).
ATOL, RTOL = 1e-2, 1e-2


def prune_dimensions(
    adata: AnnData,
    model: FittedModel | str | None = None,
    *,
    key: str = "scvae_beta",
    layer: str | None = "model",
    active_threshold: float | None = None,
    epochs: int | None = None,
) -> FittedModel:
    """Drop the latent dimensions whose mean KL is at most ``active_threshold`` and fine-tune.

    The kept dimensions' encoder outputs and decoder weights (the MLP decoder's first-layer
    columns; the additive decoder's per-dimension networks) are copied into a model with
    fewer dimensions, which is fine-tuned for ``epochs`` epochs on the fit's training cells at
    the full KL weight (early stopping on the validation cells). ``fit(..., prune=True)``
    does the same at the end of training.

    Parameters
    ----------
    adata
        The AnnData the model was fit on (the same cells in the same order: the fit's split is
        reused), annotated by :func:`scvae_beta.fit` under ``key``. Refused when its validation
        split differs from ``uns[key]["validation_indices"]`` or the model's posterior means of
        its cells differ from ``obsm["X_" + key]`` (other cells, other counts or another
        model), and when its ``obs_names`` (in order) are not the fit's
        (``uns[key]["cells_digest"]``, not recorded by fits of earlier versions).
    model
        The :class:`~scvae_beta.FittedModel` (left unchanged), a saved model folder, or
        ``None`` for ``uns[key]["model_dir"]``; its ``n_latent`` must be the fit's
        (``uns[key]["params"]["n_latent"]``).
    key
        The ``key_added`` of the fit.
    layer
        Layer with the counts; ``"model"``: the layer the model was fit on.
    active_threshold
        Nats; ``None``: the fit's ``active_threshold``.
    epochs
        Fine-tuning epochs; ``None``: the fit's ``prune_epochs`` (20 by default).

    Returns
    -------
    The smaller :class:`~scvae_beta.FittedModel` (its ``active_threshold`` setting is the
    threshold used). Also overwrites, once everything has been computed:

    ``adata.obsm["X_" + key]``
        ``(n_cells, n_kept)`` posterior means of the pruned model.
    ``adata.uns[key]``
        ``params`` (``n_latent`` = kept count, ``active_threshold`` = the threshold used),
        ``kl_per_dim``, ``active_dims`` (KL above that threshold),
        ``n_active``, ``elbo``, ``reconstruction``, ``kl``, ``kl_decomposition`` of the
        pruned model and ``pruning``: ``kept_dims`` (indices in the original model, the
        mapping of the new columns), ``n_latent_before``, ``kl_per_dim_before``,
        ``active_threshold``, ``elbo_before`` (full model), ``elbo_pruned`` (kept dims
        before fine-tuning), ``elbo_after`` (mean ELBO per cell on ``elbo_cells``),
        ``epochs``, ``best_epoch``, ``history``. Entries about the old dimensions
        (``top_genes``, ``traversal``, ``associations``, ``associations_best``, ``model_dir``)
        are removed.
    """
    entry = fit_entry(adata, key)
    fitted = resolve_model(model, entry, key)
    n_latent = check_n_latent(fitted, entry, key)
    s = fitted.settings
    active_threshold, epochs = check_prune_args(active_threshold, epochs, s)
    data = fitted._data(adata, layer)
    sampler = sampler_for(data, s.validation_fraction, s.batch_size, s.seed)
    recorded = entry.get("validation_indices")
    if recorded is not None and not np.array_equal(np.asarray(recorded), sampler.val_idx):
        training = entry.get("training")
        n_fit = training.get("n_cells") if isinstance(training, dict) else None
        sizes = "" if n_fit is None else f": adata has {data.n_cells} cells, the fit had {n_fit}"
        raise ValueError(
            f"adata is not the data set the model of uns[{key!r}] was fit on (its validation "
            f"split differs{sizes}); pass the AnnData given to fit"
        )
    digest = entry.get("cells_digest")  # fits of earlier versions record none
    if digest is not None and str(digest) != cells_digest(adata.obs_names):
        raise ValueError(
            f"adata's cells (obs_names, in order) are not those the model of uns[{key!r}] was "
            "fit on: the fine-tuning would mix the fit's held-out cells into its training cells. "
            "Pass the AnnData given to fit, with its cells in the same order"
        )
    dev = fitted.device
    with pinned_threads(s.n_threads):  # one encoding pass: for the check and for the KL
        encoded = encode_cells(fitted.module, data, np.arange(data.n_cells), dev)
    _check_same_cells(adata, key, n_latent, encoded[0])
    with pinned_threads(s.n_threads), seeded(s.seed, dev):
        pr = prune_and_finetune(
            fitted.module,
            data,
            sampler,
            s,
            dev,
            active_threshold=active_threshold,
            epochs=epochs,
            encoded=encoded,
        )
        vae = pr.vae.eval()
        summary = summarise_fit(vae, pr.objective, data, sampler, s, dev)
    loc, decomposition = summary.loc, summary.decomposition
    settings = pr.settings.replace(active_threshold=pr.record["active_threshold"])
    pruned = FittedModel(
        module=vae,
        settings=settings,
        var_names=fitted.var_names,
        batch_categories=fitted.batch_categories,
        history=fitted.history,
        objective=pr.objective,
    )
    old = entry.get("kl_decomposition", {})
    updates = {
        "params": settings.to_dict(),
        **summary_fields(summary, pr.record["active_threshold"]),
        "kl_decomposition": {**{k: v for k, v in old.items() if k not in decomposition}},
        "pruning": pr.record,
    }
    updates["kl_decomposition"].update(decomposition)
    adata.obsm["X_" + key] = loc.astype(np.float32)  # on a view: makes it a copy first
    write_entry(adata, key, updates, drop=_STALE)
    adata.varm.pop(key + "_traversal", None)
    return pruned


def _check_same_cells(adata: AnnData, key: str, n_latent: int, loc: np.ndarray) -> None:
    """Refuse cells whose posterior means ``loc`` under the model are not their recorded
    ``obsm["X_" + key]`` rows: other cells (or changed counts) than the fit's.

    A reordering of the fit's cells (``adata[perm].copy()``) moves ``obsm`` along with them
    and is not seen here; ``uns[key]["cells_digest"]`` catches it.
    """
    name = "X_" + key
    if name not in adata.obsm:
        return
    recorded = np.asarray(adata.obsm[name], dtype=np.float64)
    if recorded.ndim != 2 or recorded.shape[1] != n_latent:
        raise ValueError(
            f"adata.obsm[{name!r}] has shape {recorded.shape} but the model has {n_latent} "
            f"latent dims; pass the model that fit key_added={key!r}"
        )
    diff = np.abs(loc.astype(np.float64) - recorded)
    off = (diff > ATOL + RTOL * np.abs(recorded)).any(axis=1)
    if off.any():
        first = int(np.argmax(off))
        raise ValueError(
            f"adata holds other cells (or other counts) than the model of uns[{key!r}] was fit "
            f"on: for {int(off.sum())} of {off.size} cells (first: {adata.obs_names[first]!r}) "
            f"the model's posterior mean differs from adata.obsm[{name!r}] (by up to "
            f"{float(diff[first].max()):.3g}); pass the AnnData given to fit, with its cells in "
            "the same order, or the model that fit it"
        )
