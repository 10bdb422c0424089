"""Resumable checkpoints of a fit, written atomically and checked against the fit on resume.

A checkpoint is one file, ``<checkpoint_dir>/checkpoint.pt`` (``torch.save`` of plain values
and tensors, read back with ``weights_only=True``), written at the end of an epoch to a
temporary name in the same folder and renamed over the previous one (``os.replace``), so an
interruption at any moment leaves either the old or the new checkpoint, never half of one.

It holds everything the epoch loop carries from one epoch to the next:

- the weights of the :class:`~scvae_beta.models.LossModule` (VAE and objective, e.g.
  FactorVAE's discriminator; batch-norm running statistics included);
- the optimiser states (the main Adam and the objective's own, e.g. the discriminator's);
- the loop position (epochs done, optimisation step, so the KL/capacity schedules go on where
  they were), whether early stopping already ended training, and the seconds spent;
- early stopping's state (best value, best epoch, best weights, epochs waited);
- the history so far;
- the RNG states: the sampler's (split is derived from the seed, the minibatch order from
  this state), torch's CPU (and CUDA) generator and the auxiliary generator;
- a fingerprint of the fit: its settings (all but those that may differ between the
  interrupted run and its resumption, :data:`FREE_SETTINGS`) and of the data (cells, genes,
  hashes of the library sizes and batch codes, in memory or chunked order on disk, number of
  processes), so resuming another fit fails clearly.

Resuming on CPU at the same thread count continues bit for bit: the latents of an
interrupted and resumed fit equal those of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Version of the checkpoint layout.
FORMAT = 1
#: File name of the checkpoint inside ``checkpoint_dir``.
FILENAME = "checkpoint.pt"
#: Settings that may change between an interrupted run and its resumption (they do not
#: change what is trained: a different ``n_threads`` or device continues, but not bit for bit).
FREE_SETTINGS = frozenset(
    {
        "progress",
        "n_threads",
        "device",
        "data_on_device",
        "key_added",
        "checkpoint_dir",
        "checkpoint_every",
        "resume",
    }
)
_KEYS = frozenset(
    {
        "format",
        "settings",
        "data",
        "loop",
        "weights",
        "optimizer",
        "auxiliary",
        "early_stopping",
        "history",
        "rng",
    }
)


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed: corrupt, or written by a different fit."""


def data_fingerprint(data) -> dict[str, Any]:
    """``n_cells``, ``n_genes`` and short hashes of the library sizes and batch codes of a
    :class:`~scvae_beta.data.CountSource` (cheap: one pass over ``n_cells`` numbers)."""

    def digest(a: np.ndarray | None) -> str | None:
        if a is None:
            return None
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    from scvae_beta.train.distributed import rank_and_world

    chunk_rows = getattr(data, "chunk_rows", None)  # data on disk: the chunked order
    return {
        "n_cells": int(data.n_cells),
        "n_genes": int(data.n_genes),
        "library": digest(np.asarray(data.log_library, dtype=np.float32)),
        "batch": digest(
            None if data.batch_index is None else np.asarray(data.batch_index, dtype=np.int64)
        ),
        "order": "cells" if chunk_rows is None else f"chunks {chunk_rows} x {data.buffer_chunks}",
        "processes": rank_and_world()[1],  # global minibatches: batch_size x processes
    }


def _settings_fingerprint(settings) -> dict[str, Any]:
    return {k: v for k, v in settings.to_dict().items() if k not in FREE_SETTINGS}


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in state.items()}


class Checkpoints:
    """Where and how often a fit writes checkpoints, and the one it resumes from.

    Parameters
    ----------
    folder
        ``checkpoint_dir``; created when the first checkpoint is written.
    every
        Write after every ``every`` epochs (and after the last epoch).
    settings
        The fit's resolved :class:`~scvae_beta.settings.Settings`.
    data
        The fit's count source (for the fingerprint).
    resume
        Continue from ``folder``'s checkpoint. Without one, training starts from the
        beginning (so that a preempted job can be relaunched with the same command).

    Raises
    ------
    FileExistsError
        ``folder`` holds a checkpoint and ``resume`` is false.
    CheckpointError
        The checkpoint is corrupt or was written by a fit with other settings or data.
    """

    def __init__(self, folder, every: int, settings, data, *, resume: bool) -> None:
        self.folder = Path(folder)
        self.path = self.folder / FILENAME
        self.every = int(every)
        self.settings = _settings_fingerprint(settings)
        self.data = data_fingerprint(data)
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(f"checkpoint_dir {self.folder} is a file; pass a folder")
        self.loaded: dict | None = None
        if self.path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} holds a checkpoint of an earlier fit; pass resume=True to "
                    "continue it, or another checkpoint_dir (or delete the file) to start over"
                )
            self.loaded = self._read()

    # ------------------------------------------------------------------ reading

    def _corrupt(self, why: str) -> CheckpointError:
        return CheckpointError(
            f"the checkpoint {self.path} cannot be resumed: it {why}. Delete it (or pass "
            "resume=False with another checkpoint_dir) to start the fit over."
        )

    def _read(self) -> dict:
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        except (
            OSError,
            EOFError,
            RuntimeError,
            ValueError,
            zipfile.BadZipFile,
            pickle.UnpicklingError,
        ) as e:
            why = f"is corrupt or not a scvae_beta checkpoint ({type(e).__name__})"
            raise self._corrupt(why) from None
        if not isinstance(ckpt, dict) or not _KEYS <= set(ckpt):
            raise self._corrupt("is not a scvae_beta checkpoint (entries missing)")
        if ckpt["format"] != FORMAT:
            raise self._corrupt(
                f"has format {ckpt['format']!r}; this release reads format {FORMAT}"
            )
        self._check_same_fit(ckpt)
        return ckpt

    def _check_same_fit(self, ckpt: dict) -> None:
        diffs = []
        for what, now, then in (
            ("data", self.data, ckpt["data"]),
            ("settings", self.settings, ckpt["settings"]),
        ):
            for k in sorted(set(now) | set(then)):
                a, b = then.get(k, "<absent>"), now.get(k, "<absent>")
                if a != b:
                    diffs.append(f"{what} {k}: {a!r} in the checkpoint, {b!r} now")
        if diffs:
            more = f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
            shown = "; ".join(diffs[:5]) + more
            raise CheckpointError(
                f"the checkpoint {self.path} was written by a different fit ({shown}). Resume "
                "with the same data and settings, or pass another checkpoint_dir to start over."
            )

    # ------------------------------------------------------------------ writing

    def due(self, epochs_done: int, last: bool) -> bool:
        """Whether to write after ``epochs_done`` epochs (``last``: training ends here)."""
        return last or epochs_done % self.every == 0

    def write(self, state: dict) -> None:
        """Write ``state`` (from :func:`snapshot`) atomically: temporary file, then rename."""
        state = {"format": FORMAT, "settings": self.settings, "data": self.data, **state}
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILENAME}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def _rng_states(sampler, aux_gen: torch.Generator, device: torch.device) -> dict:
    rng = {
        "sampler": sampler.state_dict(),
        "torch": torch.get_rng_state(),
        "aux": aux_gen.get_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def snapshot(
    *,
    loss,
    optimizer: torch.optim.Optimizer,
    stopper,
    history,
    sampler,
    aux_gen: torch.Generator,
    device: torch.device,
    epochs_done: int,
    step: int,
    stopped_early: bool,
    seconds: float,
) -> dict:
    """The loop's state at the end of an epoch, as plain values and CPU tensors."""
    return {
        "loop": {
            "epochs_done": int(epochs_done),
            "step": int(step),
            "stopped_early": bool(stopped_early),
            "seconds": float(seconds),
        },
        "weights": _cpu(loss.state_dict()),
        "optimizer": optimizer.state_dict(),
        "auxiliary": loss.objective.auxiliary_state_dict(),
        "early_stopping": stopper.state_dict(),
        "history": history.state_dict(),
        "rng": _rng_states(sampler, aux_gen, device),
    }


def restore(
    ckpt: dict,
    *,
    loss,
    optimizer: torch.optim.Optimizer,
    stopper,
    history,
    sampler,
    aux_gen: torch.Generator,
    device: torch.device,
) -> dict:
    """Load a checkpoint into the loop's objects; returns its ``loop`` entry (epochs done,
    step, whether training had stopped early, seconds spent)."""
    try:
        loss.load_state_dict(ckpt["weights"])
        optimizer.load_state_dict(ckpt["optimizer"])
        loss.objective.load_auxiliary_state_dict(ckpt["auxiliary"])
        stopper.load_state_dict(ckpt["early_stopping"])
        history.load_state_dict(ckpt["history"])
        rng = ckpt["rng"]
        sampler.load_state_dict(rng["sampler"])
        torch.set_rng_state(rng["torch"])
        aux_gen.set_state(rng["aux"])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"the checkpoint is inconsistent and cannot be resumed ({first}); delete it to "
            "start the fit over"
        ) from None
    return dict(ckpt["loop"])
