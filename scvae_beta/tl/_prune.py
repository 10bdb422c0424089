"""Dimension pruning of a fitted model: drop the dimensions on the prior, fine-tune the rest."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scvae_beta._utils import seeded
from scvae_beta.data import sampler_for
from scvae_beta.evaluation import summarise_fit, summary_fields
from scvae_beta.fitted import FittedModel
from scvae_beta.pruning import check_prune_args, prune_and_finetune
from scvae_beta.tl._utils import fit_entry, resolve_model
from scvae_beta.train import pinned_threads

#: Entries of ``uns[key]`` that describe the dimensions of the unpruned model.
_STALE = ("top_genes", "traversal", "associations", "associations_best", "model_dir")


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
        The AnnData the model was fit on (same cells: the fit's split is reused), annotated
        by :func:`scvae_beta.fit` under ``key``.
    model
        The :class:`~scvae_beta.FittedModel` (left unchanged), a saved model folder, or
        ``None`` for ``uns[key]["model_dir"]``.
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
    The smaller :class:`~scvae_beta.FittedModel`. Also overwrites, once everything has been
    computed:

    ``adata.obsm["X_" + key]``
        ``(n_cells, n_kept)`` posterior means of the pruned model.
    ``adata.uns[key]``
        ``params`` (``n_latent`` = kept count), ``kl_per_dim``, ``active_dims``,
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
    s = fitted.settings
    active_threshold, epochs = check_prune_args(active_threshold, epochs, s)
    data = fitted._data(adata, layer)
    sampler = sampler_for(data, s.validation_fraction, s.batch_size, s.seed)
    recorded = entry.get("validation_indices")
    if recorded is not None and not np.array_equal(np.asarray(recorded), sampler.val_idx):
        raise ValueError(
            f"adata is not the data set the model of uns[{key!r}] was fit on (its validation "
            "split differs); pass the AnnData given to fit"
        )
    dev = fitted.device
    with pinned_threads(s.n_threads), seeded(s.seed, dev):
        pr = prune_and_finetune(
            fitted.module, data, sampler, s, dev, active_threshold=active_threshold, epochs=epochs
        )
        vae = pr.vae.eval()
        summary = summarise_fit(vae, pr.objective, data, sampler, s, dev)
    loc, decomposition = summary.loc, summary.decomposition
    pruned = FittedModel(
        module=vae,
        settings=pr.settings,
        var_names=fitted.var_names,
        batch_categories=fitted.batch_categories,
        history=fitted.history,
        objective=pr.objective,
    )
    old = entry.get("kl_decomposition", {})
    updates = {
        "params": pr.settings.to_dict(),
        **summary_fields(summary, pr.record["active_threshold"]),
        "kl_decomposition": {**{k: v for k, v in old.items() if k not in decomposition}},
        "pruning": pr.record,
    }
    updates["kl_decomposition"].update(decomposition)
    adata.obsm["X_" + key] = loc.astype(np.float32)
    entry = adata.uns[key]
    for name in _STALE:
        entry.pop(name, None)
    adata.varm.pop(key + "_traversal", None)
    entry.update(updates)
    return pruned
