"""Small helpers shared by the tools: the ``uns`` entry of a fit and the model behind it."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
from anndata import AnnData

from scvae_beta.fitted import FittedModel, load


def fit_entry(adata: AnnData, key: str) -> dict:
    """``adata.uns[key]`` as written by :func:`scvae_beta.fit`, or an error naming the fix."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    entry = adata.uns.get(key)
    if not isinstance(entry, dict):
        found = [k for k, v in adata.uns.items() if isinstance(v, dict) and "kl_per_dim" in v]
        raise KeyError(
            f"adata.uns has no {key!r} entry from scvae_beta.fit; run "
            f"scvae_beta.fit(adata, key_added={key!r}) first, or pass key=<the key_added used> "
            f"(fits found: {found})"
        )
    return entry


def latent(adata: AnnData, key: str) -> np.ndarray:
    """``adata.obsm["X_" + key]`` as a float64 ``(n_cells, n_latent)`` array."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    name = "X_" + key
    if name not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {name!r}; run scvae_beta.fit(adata, key_added={key!r}) first, "
            f"or pass key=<the key_added used> (obsm keys: {list(adata.obsm)})"
        )
    z = np.asarray(adata.obsm[name], dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"adata.obsm[{name!r}] must be 2-D (cells x latent dims)")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        first = adata.obs_names[int(np.argmax(bad))]
        raise ValueError(
            f"adata.obsm[{name!r}] has {int(bad.sum())} cell(s) with NaN or infinite values "
            f"(first: {first!r}); refit, or leave those cells out with "
            f"adata[np.isfinite(adata.obsm[{name!r}]).all(axis=1)]"
        )
    return z


def check_n_latent(fitted: FittedModel, entry: dict, key: str) -> int:
    """The model's ``n_latent``, or an error when the fit of ``uns[key]`` had another one."""
    n_latent = int(fitted.module.config.n_latent)
    params = entry.get("params")
    fit_n_latent = params.get("n_latent", n_latent) if isinstance(params, dict) else n_latent
    if int(fit_n_latent) != n_latent:
        raise ValueError(
            f"the model has {n_latent} latent dims but adata.uns[{key!r}] comes from a fit with "
            f"{int(fit_n_latent)}; pass the model that fit key_added={key!r}"
        )
    return n_latent


def write_entry(adata: AnnData, key: str, updates: dict, drop: tuple[str, ...] = ()) -> None:
    """Update ``adata.uns[key]``: drop the entries ``drop``, then add ``updates``.

    An AnnData's own dict is updated in place (references to it held by the caller see the
    results). A view's dict is the parent's, so editing it in place would write into the
    parent: on a view a new dict (the old entries deep-copied) is assigned instead, which makes
    anndata turn the view into a copy first (it warns) and leaves the parent unchanged.
    """
    old = adata.uns.get(key)
    if not adata.is_view and isinstance(old, dict):
        for name in drop:
            old.pop(name, None)
        old.update(updates)
        return
    new = {k: v for k, v in old.items() if k not in drop} if isinstance(old, dict) else {}
    new = copy.deepcopy(new)
    new.update(updates)
    adata.uns[key] = new


def resolve_model(model, entry: dict, key: str) -> FittedModel:
    """A :class:`FittedModel` from ``model`` (a model or a folder) or ``uns[key]["model_dir"]``."""
    if isinstance(model, FittedModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load(model)
    if model is not None:
        raise TypeError(
            f"model must be a FittedModel or a path to a saved model, got {type(model).__name__}"
        )
    folder = entry.get("model_dir")
    if folder is None:
        raise ValueError(
            f"no model given and adata.uns[{key!r}] records no 'model_dir'; pass "
            "model=<the FittedModel returned by scvae_beta.fit> or a path saved with "
            "model.save(...)"
        )
    if not (Path(str(folder)) / "model.json").exists():
        raise FileNotFoundError(
            f"adata.uns[{key!r}]['model_dir'] points to {folder!s}, which holds no saved model; "
            "pass model=<the FittedModel returned by scvae_beta.fit> or a path saved with "
            "model.save(...)"
        )
    return load(str(folder))


def select_dims(dims, entry: dict, n_latent: int, key: str) -> np.ndarray:
    """Validated dimension indices; ``None`` means the active ones of ``uns[key]``."""
    if dims is None:
        if "active_dims" not in entry:
            raise KeyError(f"adata.uns[{key!r}] has no 'active_dims'; pass dims=[...]")
        dims = np.asarray(entry["active_dims"], dtype=np.int64)
        if dims.size == 0:
            raise ValueError(
                f"adata.uns[{key!r}] lists no active dimension (all collapsed onto the prior); "
                "pass dims=[...] to traverse some anyway, or refit with a smaller beta"
            )
    dims = np.atleast_1d(np.asarray(dims))
    if dims.size == 0 or not np.issubdtype(dims.dtype, np.integer):
        raise ValueError(f"dims must be a non-empty list of integers, got {dims.tolist()!r}")
    bad = dims[(dims < 0) | (dims >= n_latent)]
    if bad.size:
        raise ValueError(f"dims {bad.tolist()} out of range; the model has {n_latent} dims")
    if np.unique(dims).size != dims.size:
        raise ValueError(f"dims has repeated entries: {dims.tolist()}")
    return dims.astype(np.int64)
