"""Training: the epoch loop and its small parts (schedules, early stopping, history, the
NaN guard, progress, device placement and thread pinning)."""

from scvae_beta.train.device import pinned_threads, resolve_device
from scvae_beta.train.guard import TrainingDivergedError
from scvae_beta.train.loop import TrainResult, train
from scvae_beta.train.schedules import Schedules

__all__ = [
    "Schedules",
    "TrainResult",
    "TrainingDivergedError",
    "pinned_threads",
    "resolve_device",
    "train",
]
