"""The fitted model's AnnData face: latents and decoded expression for any AnnData, save/load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scvae_beta._utils import versions
from scvae_beta.config import ModelConfig
from scvae_beta.data import count_data
from scvae_beta.data.counts import CountData
from scvae_beta.evaluation import EVAL_BATCH_SIZE, encode_cells, eval_batches, evaluate
from scvae_beta.models import build_module
from scvae_beta.models.base import CountVAE
from scvae_beta.train import resolve_device

_WEIGHTS = "model.pt"
_META = "model.json"
_FORMAT_VERSION = 1


class FittedModel:
    """A trained model plus what is needed to apply it to new cells.

    Created by :func:`scvae_beta.fit` or :func:`scvae_beta.load`.

    Attributes
    ----------
    module
        The Pyro ``nn.Module`` (``model``/``guide``), in eval mode after fitting.
    params
        Every setting used for the fit.
    var_names
        Genes the model was trained on, in order.
    batch_categories
        Batch labels in code order (empty without ``batch_key``).
    history
        One row per epoch (see :func:`scvae_beta.fit`).
    """

    def __init__(
        self,
        module: CountVAE,
        params: dict,
        var_names: list[str],
        batch_categories: list[str],
        history: pd.DataFrame,
    ) -> None:
        self.module = module.eval()
        self.params = params
        self.var_names = list(var_names)
        self.batch_categories = list(batch_categories)
        self.history = history

    def __repr__(self) -> str:
        p = self.params
        return (
            f"FittedModel({p['model']}, beta={p['beta']}, n_latent={p['n_latent']}, "
            f"likelihood={p['likelihood']!r}, genes={len(self.var_names)}, "
            f"epochs={len(self.history)})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # ------------------------------------------------------------------ data

    def _data(self, adata: AnnData, layer: str | None) -> CountData:
        """Check genes (reordering a permuted gene set) and counts of a new AnnData."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
        genes = pd.Index(map(str, adata.var_names))
        if list(genes) != self.var_names:
            missing = [g for g in self.var_names if g not in set(genes)]
            extra = genes.size - (len(self.var_names) - len(missing))
            if missing or extra:
                raise ValueError(
                    f"adata's genes differ from the {len(self.var_names)} genes the model was "
                    f"trained on: {len(missing)} missing (e.g. {missing[:3]}), {extra} extra. "
                    "Subset to the model's genes with adata[:, model.var_names] (all must be "
                    "present), in that order."
                )
            adata = adata[:, self.var_names]
        layer = self.params.get("layer") if layer == "model" else layer
        data, _ = count_data(
            adata,
            layer=layer,
            batch_key=self.params.get("batch_key"),
            batch_categories=self.batch_categories or None,
        )
        return data

    # ------------------------------------------------------------------ inference

    def get_latent(
        self,
        adata: AnnData,
        *,
        layer: str | None = "model",
        give_mean: bool = True,
        seed: int = 0,
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> np.ndarray:
        """Latent representation of the cells of ``adata``.

        Parameters
        ----------
        adata
            Raw counts over the model's genes (same genes; order may differ).
        layer
            Where the counts are; ``"model"`` (default) uses the layer the model was fit on.
        give_mean
            Posterior means (default); otherwise one sample from q(z | x) per cell.
        seed
            Seed of the sample when ``give_mean=False``.
        batch_size
            Cells per inference batch (bounds memory).

        Returns
        -------
        ``(n_cells, n_latent)`` float32 array.
        """
        loc, scale = self.encode(adata, layer=layer, batch_size=batch_size)
        if give_mean:
            return loc.astype(np.float32)
        rng = np.random.default_rng(seed)
        return (loc + scale * rng.standard_normal(loc.shape)).astype(np.float32)

    @torch.no_grad()
    def get_normalized_expression(
        self,
        adata: AnnData,
        *,
        layer: str | None = "model",
        library_size: float | str | None = None,
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> np.ndarray:
        """Decoded expression at the posterior mean of each cell.

        Parameters
        ----------
        adata, layer
            As in :meth:`get_latent`.
        library_size
            ``None``: proportions per cell (rows sum to 1); a number: proportions times that
            number (e.g. ``1e4``); ``"observed"``: times each cell's own total count (the NB
            mean the model uses).

        Returns
        -------
        ``(n_cells, n_genes)`` float32 array (for ZINB, the NB mean without dropout).
        """
        if isinstance(library_size, str) and library_size != "observed":
            raise ValueError("library_size must be None, a number or 'observed'")
        data = self._data(adata, layer)
        module = self.module
        out = np.empty((data.n_cells, data.n_genes), dtype=np.float32)
        cells = np.arange(data.n_cells)
        for rows, mb in eval_batches(module, data, cells, self.device, batch_size):
            loc, _ = module.encode(mb.x, mb.batch_index)
            log_lib = (
                mb.log_library if library_size == "observed" else torch.zeros_like(mb.log_library)
            )
            rho = module.decode(loc, log_lib, mb.batch_index).log_mu.exp()
            if isinstance(library_size, int | float):
                rho = rho * float(library_size)
            out[rows] = rho.cpu().numpy()
        return out

    def encode(
        self,
        adata: AnnData,
        *,
        layer: str | None = "model",
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of q(z | x) for the cells of ``adata``.

        Parameters
        ----------
        adata, layer, batch_size
            As in :meth:`get_latent`.

        Returns
        -------
        ``loc, scale``: two ``(n_cells, n_latent)`` float32 arrays (``loc`` is what
        :meth:`get_latent` returns).
        """
        data = self._data(adata, layer)
        return encode_cells(self.module, data, np.arange(data.n_cells), self.device, batch_size)

    def _batch_codes(self, batch, n: int) -> torch.Tensor | None:
        """Batch codes ``(n,)`` for :meth:`decode_latent` from labels (or ``None``)."""
        cats = self.batch_categories
        if not cats:
            if batch is not None:
                raise ValueError("this model was trained without batch_key; pass batch=None")
            return None
        if batch is None:
            raise ValueError(
                f"this model was trained with batch_key={self.params.get('batch_key')!r}; pass "
                f"batch=<one label or one label per cell> from {cats}"
            )
        labels = np.full(n, str(batch)) if np.ndim(batch) == 0 else np.asarray(batch).astype(str)
        if labels.shape != (n,):
            raise ValueError(f"batch has shape {labels.shape}; expected one label or ({n},)")
        unknown = sorted(set(labels) - set(cats))
        if unknown:
            raise ValueError(f"unknown batch labels {unknown[:5]}; known: {cats}")
        lookup = {c: i for i, c in enumerate(cats)}
        return torch.as_tensor([lookup[s] for s in labels], dtype=torch.int64)

    @torch.no_grad()
    def decode_latent(
        self,
        z: np.ndarray,
        *,
        batch=None,
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> np.ndarray:
        """Decoded expression proportions at given latent codes (library-free).

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes (e.g. posterior means from :meth:`get_latent`,
            edited).
        batch
            For a model trained with ``batch_key``: one batch label for all rows or an
            ``(n,)`` array of labels; ``None`` otherwise.
        batch_size
            Rows decoded at a time (bounds memory).

        Returns
        -------
        ``(n, n_genes)`` float32 array of proportions, rows summing to 1 (the softmax of the
        decoder, i.e. the NB mean divided by the library size; for ZINB without dropout).
        """
        z = np.asarray(z, dtype=np.float32)
        n_latent = self.module.config.n_latent
        if z.ndim != 2 or z.shape[1] != n_latent:
            raise ValueError(f"z must have shape (n, {n_latent}), got {z.shape}")
        codes = self._batch_codes(batch, z.shape[0])
        module, device = self.module, self.device
        was_training = module.training
        module.eval()
        out = np.empty((z.shape[0], len(self.var_names)), dtype=np.float32)
        bs = max(1, int(batch_size))
        try:
            for s in range(0, z.shape[0], bs):
                zb = torch.from_numpy(z[s : s + bs]).to(device)
                bi = None if codes is None else codes[s : s + bs].to(device)
                log_lib = torch.zeros(zb.shape[0], device=device)
                out[s : s + zb.shape[0]] = module.decode(zb, log_lib, bi).log_mu.exp().cpu().numpy()
        finally:
            module.train(was_training)
        return out

    def get_elbo(self, adata: AnnData, *, layer: str | None = "model") -> float:
        """Mean ELBO per cell (beta = 1, one posterior sample, nats; higher is better)."""
        data = self._data(adata, layer)
        log_lik, kl = evaluate(self.module, data, np.arange(data.n_cells), self.device)
        return float(np.mean(log_lik - kl.sum(1)))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model to the folder ``path`` (``model.pt`` weights, ``model.json`` rest).

        Returns the folder path. Refuses to replace an existing model unless ``overwrite``.
        """
        folder = Path(path)
        if (folder / _META).exists() and not overwrite:
            raise FileExistsError(f"{folder} already holds a model; pass overwrite=True")
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        torch.save(state, folder / _WEIGHTS)
        meta = {
            "format_version": _FORMAT_VERSION,
            "model_config": self.module.config.to_dict(),
            "params": _jsonable(self.params),
            "var_names": self.var_names,
            "batch_categories": self.batch_categories,
            "history": _jsonable(self.history.to_dict(orient="list")),
            "versions": versions(),
        }
        (folder / _META).write_text(json.dumps(meta, indent=1))
        return folder


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else str(obj)
    return obj


def load(path: str | os.PathLike, *, device: str = "auto") -> FittedModel:
    """Load a model written by :meth:`FittedModel.save`.

    Parameters
    ----------
    path
        The folder passed to ``save``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """
    folder = Path(path)
    if not (folder / _META).exists():
        raise FileNotFoundError(f"no scvae_beta model in {folder} (missing {_META})")
    meta = json.loads((folder / _META).read_text())
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"unsupported model format {meta.get('format_version')!r} in {folder}")
    config = ModelConfig(**meta["model_config"])
    module = build_module(meta["params"]["model"], config)
    state = torch.load(folder / _WEIGHTS, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.to(resolve_device(device))
    history = pd.DataFrame(
        {k: [np.nan if v is None else v for v in vals] for k, vals in meta["history"].items()}
    )
    return FittedModel(
        module=module,
        params=meta["params"],
        var_names=meta["var_names"],
        batch_categories=meta["batch_categories"],
        history=history,
    )
