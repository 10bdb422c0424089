"""Early stopping on a monitored loss, keeping the weights of the best epoch."""

from __future__ import annotations

import math

from torch import nn


class EarlyStopping:
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs.

    Epochs before ``start_epoch`` (0-based; the first epoch at the final KL weight and
    capacity) are not judged. The best epoch's ``state_dict`` is copied and restored by
    :meth:`restore`.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, start_epoch: int = 0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.start_epoch = start_epoch
        self.best = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.wait = 0

    def step(self, epoch: int, value: float, module: nn.Module) -> bool:
        """Record epoch ``epoch``'s ``value``; ``True`` when training should stop."""
        if epoch < self.start_epoch:
            return False
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict:
        """The progress so far (best value and epoch, the best weights on the CPU, epochs
        waited), for a checkpoint."""
        best_state = None
        if self.best_state is not None:
            best_state = {k: v.detach().cpu().clone() for k, v in self.best_state.items()}
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_state": best_state,
            "wait": self.wait,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (``start_epoch`` and ``patience`` stay as built)."""
        self.best = float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.best_state = state["best_state"]
        self.wait = int(state["wait"])

    def restore(self, module: nn.Module) -> None:
        """Load the best epoch's weights into ``module`` (no-op when none was recorded)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
