"""Per-epoch history: sums of the step results on the device, one row of floats per epoch."""

from __future__ import annotations

import numpy as np
import torch

from scvae_beta.models.loss import StepLoss


class EpochSums:
    """Running sums over one epoch's training steps, kept on the device (no host syncs).

    ``add(out, n)`` adds a step's per-cell log-likelihoods and KLs and ``n`` times its
    per-cell penalty and objective parts; ``add_aux`` adds auxiliary per-step values (e.g.
    the discriminator's loss), averaged over steps in :meth:`row`.
    """

    def __init__(self, n_latent: int, device: torch.device) -> None:
        f64 = torch.float64
        self.log_lik = torch.zeros((), device=device, dtype=f64)
        self.penalty = torch.zeros((), device=device, dtype=f64)
        self.kl = torch.zeros(n_latent, device=device, dtype=f64)
        self.parts: dict[str, torch.Tensor] = {}
        self.aux: dict[str, float] = {}
        self.steps = 0

    def add(self, out: StepLoss, n: int) -> None:
        self.log_lik += out.terms.log_lik.sum()
        self.kl += out.terms.kl.sum(0)
        self.penalty += out.parts["penalty"] * n
        for k, v in out.parts.items():
            if k != "penalty":
                self.parts[k] = self.parts.get(k, 0.0) + v * n
        self.steps += 1

    def add_aux(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.aux[k] = self.aux.get(k, 0.0) + v

    def all_reduce(self) -> None:
        """Sum the epoch's sums over the ranks of a process group (no-op without one)."""
        from scvae_beta.train.distributed import all_reduce_sum, rank_and_world

        if rank_and_world()[1] == 1:
            return
        all_reduce_sum(self.log_lik, self.penalty, self.kl)
        if self.parts:
            names = sorted(self.parts)
            stacked = torch.stack([torch.as_tensor(self.parts[k]).double() for k in names])
            all_reduce_sum(stacked)
            self.parts = {k: stacked[i] for i, k in enumerate(names)}

    def row(self, n_train: int) -> dict[str, float]:
        """``train_loss``, ``train_reconstruction``, ``train_kl``, ``train_<part>`` per cell,
        and the auxiliary means per step."""
        recon = -float(self.log_lik) / n_train
        row = {
            "train_loss": recon + float(self.penalty) / n_train,
            "train_reconstruction": recon,
            "train_kl": float(self.kl.sum()) / n_train,
        }
        row.update({"train_" + k: float(v) / n_train for k, v in self.parts.items()})
        row.update({k: v / max(self.steps, 1) for k, v in self.aux.items()})
        return row

    def kl_per_dim(self, n_train: int) -> np.ndarray:
        """``(n_latent,)`` mean KL per training cell of each dimension this epoch."""
        return (self.kl / n_train).cpu().numpy()


class History:
    """Rows of floats, one per epoch, turned into ``column -> (n_epochs,)`` arrays."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}
        self.kl_per_dim: list[np.ndarray] = []

    def append(self, row: dict[str, float], kl_per_dim: np.ndarray) -> None:
        for k, v in row.items():
            self.columns.setdefault(k, []).append(v)
        self.kl_per_dim.append(kl_per_dim)

    def __len__(self) -> int:
        return len(self.kl_per_dim)

    def state_dict(self) -> dict:
        """Rows so far as plain lists and one float64 tensor (for a checkpoint)."""
        kl = np.vstack(self.kl_per_dim) if self.kl_per_dim else np.zeros((0, 0))
        return {
            "columns": {k: list(map(float, v)) for k, v in self.columns.items()},
            "kl_per_dim": torch.from_numpy(np.asarray(kl, dtype=np.float64)),
        }

    def load_state_dict(self, state: dict) -> None:
        self.columns = {k: list(v) for k, v in state["columns"].items()}
        self.kl_per_dim = list(state["kl_per_dim"].numpy())

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"epoch": np.arange(1, len(self) + 1)}
        out.update({c: np.asarray(v, dtype=np.float64) for c, v in self.columns.items()})
        return out
