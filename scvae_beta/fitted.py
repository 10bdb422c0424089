"""The fitted model's AnnData face: latents and decoded expression for any AnnData, save/load."""

from __future__ import annotations

import json
import numbers
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from scvae_beta._utils import seeded, versions
from scvae_beta.config import ModelConfig
from scvae_beta.data import count_data, counts_matrix
from scvae_beta.data.backed import is_on_disk
from scvae_beta.data.source import CountSource
from scvae_beta.evaluation import EVAL_BATCH_SIZE, encode_cells, eval_batches, evaluate
from scvae_beta.models import CountVAE
from scvae_beta.objectives import Objective, build_objective
from scvae_beta.settings import Settings
from scvae_beta.train import resolve_device

_WEIGHTS = "model.pt"
_META = "model.json"
#: 2: ``model.json`` holds ``settings`` (:class:`Settings`) and ``model_config`` with the
#: decoder; ``model.pt`` holds ``{"vae": ..., "objective": ...}`` state dicts.
#: 1 (release 0.1.0): ``params`` and one state dict (FactorVAE's discriminator inside).
_FORMAT_VERSION = 2
_READABLE_FORMATS = (1, 2)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


class FittedModel:
    """A trained model plus what is needed to apply it to new cells.

    Created by :func:`scvae_beta.fit` or :func:`scvae_beta.load`.

    Attributes
    ----------
    module
        The Pyro ``nn.Module`` (``model``/``guide``), in eval mode after fitting.
    settings
        Every setting used for the fit (:class:`~scvae_beta.settings.Settings`, resolved);
        ``params`` is its ``to_dict()``.
    objective
        The objective the model was trained with (FactorVAE: with its discriminator).
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
        settings: Settings,
        var_names: list[str],
        batch_categories: list[str],
        history: pd.DataFrame,
        objective: Objective | None = None,
    ) -> None:
        self.module = module.eval()
        self.settings = settings
        self.objective = (
            objective
            if objective is not None
            else build_objective(settings, module.config.n_latent)
        )
        self.var_names = list(var_names)
        self.batch_categories = list(batch_categories)
        self.history = history

    @property
    def params(self) -> dict:
        """Every setting of the fit as a plain dict (``uns[key]["params"]``)."""
        return self.settings.to_dict()

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

    def _data(self, adata: AnnData, layer: str | None) -> CountSource:
        """Check genes (reordering a permuted gene set) and counts of a new AnnData."""
        if not isinstance(adata, AnnData):
            raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
        genes = pd.Index(map(str, adata.var_names))
        if genes.has_duplicates:
            dup = genes[genes.duplicated()].unique()[:3].tolist()
            raise ValueError(
                f"adata.var_names has duplicates (e.g. {dup}); the genes cannot be matched to "
                "the model's. Run adata.var_names_make_unique() first."
            )
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
        layer = self.params.get("layer") if layer == "model" else layer
        columns = None
        if list(genes) != self.var_names:
            if is_on_disk(counts_matrix(adata, layer)):  # read the model's genes, in order
                columns = genes.get_indexer(self.var_names)
            else:
                if adata.isbacked and adata.is_view:  # anndata makes no view of a backed view
                    adata = adata.to_memory()  # the view's cells, which .X would read anyway
                adata = adata[:, self.var_names]
        data, _ = count_data(
            adata,
            layer=layer,
            batch_key=self.params.get("batch_key"),
            batch_categories=self.batch_categories or None,
            columns=columns,
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
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        loc, scale = self.encode(adata, layer=layer, batch_size=batch_size)
        if give_mean:
            return loc.astype(np.float32)
        rng = np.random.default_rng(int(seed))
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
        ``(n_cells, n_genes)`` float32 array whose columns follow ``adata.var_names`` (also
        when the genes are in another order than the model's); for ZINB, the NB mean without
        dropout.
        """
        if isinstance(library_size, str):
            if library_size != "observed":
                raise ValueError("library_size must be None, a number or 'observed'")
        elif library_size is not None:
            if isinstance(library_size, bool) or not isinstance(library_size, numbers.Real):
                raise TypeError(
                    f"library_size must be None, a number or 'observed', got {library_size!r}"
                )
            if not (np.isfinite(library_size) and library_size > 0):
                raise ValueError(f"library_size must be a finite number > 0, got {library_size}")
            library_size = float(library_size)
        batch_size = _check_batch_size(batch_size)
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
            if isinstance(library_size, float):
                rho = rho * library_size
            out[rows] = rho.cpu().numpy()
        return out[:, self._column_order(adata)]

    def _column_order(self, adata: AnnData) -> np.ndarray | slice:
        """Positions of ``adata``'s genes among the model's (a slice when identical)."""
        genes = list(map(str, adata.var_names))
        if genes == self.var_names:
            return slice(None)
        return pd.Index(self.var_names).get_indexer(genes)

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
        batch_size = _check_batch_size(batch_size)
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
        z = np.ascontiguousarray(z, dtype=np.float32)  # torch takes no negative strides
        n_latent = self.module.config.n_latent
        if z.ndim != 2 or z.shape[1] != n_latent:
            raise ValueError(f"z must have shape (n, {n_latent}), got {z.shape}")
        bad = ~np.isfinite(z).all(axis=1)
        if bad.any():
            raise ValueError(
                f"z has {int(bad.sum())} row(s) with NaN or infinite values (first: row "
                f"{int(np.flatnonzero(bad)[0])}); their proportions would be NaN. Pass finite "
                "codes."
            )
        codes = self._batch_codes(batch, z.shape[0])
        module, device = self.module, self.device
        was_training = module.training
        module.eval()
        out = np.empty((z.shape[0], len(self.var_names)), dtype=np.float32)
        bs = _check_batch_size(batch_size)
        try:
            for s in range(0, z.shape[0], bs):
                zb = torch.from_numpy(z[s : s + bs]).to(device)
                bi = None if codes is None else codes[s : s + bs].to(device)
                log_lib = torch.zeros(zb.shape[0], device=device)
                out[s : s + zb.shape[0]] = module.decode(zb, log_lib, bi).log_mu.exp().cpu().numpy()
        finally:
            module.train(was_training)
        return out

    def get_elbo(self, adata: AnnData, *, layer: str | None = "model", seed: int = 0) -> float:
        """Mean ELBO per cell (beta = 1, one posterior sample per cell, nats; higher is
        better). The sample is seeded by ``seed`` (the caller's RNG is left alone)."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        data = self._data(adata, layer)
        with seeded(int(seed), self.device):
            log_lik, kl = evaluate(self.module, data, np.arange(data.n_cells), self.device)
        return float(np.mean(log_lik - kl.sum(1)))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model to the folder ``path`` (``model.pt`` weights, ``model.json`` rest).

        The folder is written under a temporary name beside it and renamed, so a failure
        leaves any earlier model intact and no half-written folder. Returns the folder path.

        Raises
        ------
        FileExistsError
            ``path`` exists and holds anything but a model, or a model and not
            ``overwrite``.
        """
        folder = Path(path)
        if folder.exists():
            if not folder.is_dir():
                raise FileExistsError(f"{folder} is a file; pass a folder path")
            contents = {p.name for p in folder.iterdir()}
            if contents - {_WEIGHTS, _META}:
                raise FileExistsError(
                    f"{folder} holds other files ({sorted(contents)[:5]}); save the model into "
                    "a new or empty folder"
                )
            if contents and not overwrite:
                raise FileExistsError(f"{folder} already holds a model; pass overwrite=True")
        folder.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "model_config": self.module.config.to_dict(),
            "settings": _jsonable(self.settings.to_dict()),
            "var_names": self.var_names,
            "batch_categories": self.batch_categories,
            "history": _jsonable(self.history.to_dict(orient="list")),
            "versions": versions(),
        }
        state = {
            "vae": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "objective": {k: v.detach().cpu() for k, v in self.objective.state_dict().items()},
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            torch.save(state, tmp / _WEIGHTS)
            (tmp / _META).write_text(json.dumps(meta, indent=1))
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
                tmp.rename(folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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


def _corrupt(folder: Path, name: str, why: str) -> ValueError:
    return ValueError(
        f"the model in {folder} is corrupt: {name} {why}. Save the model again (or restore the "
        "folder from a copy)."
    )


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / _META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(folder, _META, f"is not valid JSON ({e})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version not in _READABLE_FORMATS:
        raise ValueError(
            f"unsupported model format {version!r} in {folder}; this release of scvae_beta "
            f"reads formats {list(_READABLE_FORMATS)} (a newer release may have written it)"
        )
    need = {"model_config", "var_names", "batch_categories", "history"}
    need |= {"params"} if version == 1 else {"settings"}
    missing = sorted(need - set(meta))
    if missing:
        raise _corrupt(folder, _META, f"lacks {missing}")
    return meta


def _read_state(folder: Path, version: int) -> tuple[dict, dict]:
    path = folder / _WEIGHTS
    if not path.exists():
        raise _corrupt(folder, _WEIGHTS, "is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        OSError,
        EOFError,
        RuntimeError,
        zipfile.BadZipFile,
        ValueError,
        pickle.UnpicklingError,
    ) as e:
        raise _corrupt(folder, _WEIGHTS, f"cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise _corrupt(folder, _WEIGHTS, "does not hold a state dict")
    if version == 1:  # one state dict; FactorVAE's discriminator under "discriminator."
        prefix = "discriminator."
        vae = {k: v for k, v in state.items() if not k.startswith(prefix)}
        aux = {k: v for k, v in state.items() if k.startswith(prefix)}
        return vae, aux
    if set(state) != {"vae", "objective"}:
        raise _corrupt(folder, _WEIGHTS, "does not hold the 'vae' and 'objective' weights")
    return state["vae"], state["objective"]


def load(path: str | os.PathLike, *, device: str = "auto") -> FittedModel:
    """Load a model written by :meth:`FittedModel.save` (this release or 0.1.0).

    Parameters
    ----------
    path
        The folder passed to ``save``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    FileNotFoundError
        No model in ``path``.
    ValueError
        A file of the model is corrupt or inconsistent (the message names it).
    """
    folder = Path(path)
    if not (folder / _META).exists():
        raise FileNotFoundError(f"no scvae_beta model in {folder} (missing {_META})")
    meta = _read_meta(folder)
    version = meta["format_version"]
    try:
        settings = Settings.from_dict(meta["params"] if version == 1 else meta["settings"])
        config = ModelConfig(**meta["model_config"])
    except (TypeError, ValueError) as e:
        raise _corrupt(folder, _META, f"has invalid settings ({e})") from None
    if len(meta["var_names"]) != config.n_genes:
        raise _corrupt(
            folder,
            _META,
            f"lists {len(meta['var_names'])} genes but the model has {config.n_genes}",
        )
    vae_state, aux_state = _read_state(folder, version)
    module = CountVAE(config)
    objective = build_objective(settings, config.n_latent)
    try:
        module.load_state_dict(vae_state)
        objective.load_state_dict(aux_state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise _corrupt(folder, _WEIGHTS, f"does not match {_META} ({first})") from None
    dev = resolve_device(device)
    module.to(dev)
    objective.to(dev)
    history = pd.DataFrame(
        {k: [np.nan if v is None else v for v in vals] for k, vals in meta["history"].items()}
    )
    return FittedModel(
        module=module,
        settings=settings,
        var_names=meta["var_names"],
        batch_categories=meta["batch_categories"],
        history=history,
        objective=objective,
    )
