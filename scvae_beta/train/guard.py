"""The NaN guard: a non-finite training loss stops the fit with advice, nothing written."""

from __future__ import annotations

import torch


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; nothing was written to the AnnData."""


def check_finite(step_losses: torch.Tensor, epoch: int, kl_weight_at) -> None:
    """Raise :class:`TrainingDivergedError` if any of an epoch's step losses is not finite.

    ``step_losses`` is ``(steps_per_epoch,)``; ``kl_weight_at(i)`` gives the KL weight of the
    epoch's step ``i`` (for the message). Checked once per epoch: no per-step host sync.
    """
    finite = torch.isfinite(step_losses)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0])
    raise TrainingDivergedError(
        f"training loss became non-finite at epoch {epoch + 1} (step {bad + 1} of "
        f"{len(step_losses)}, KL weight {kl_weight_at(bad):.3g})."
        " Try a lower lr (e.g. lr=1e-4), a smaller beta, a longer kl_warmup or "
        "clip_norm=1.0, and check the counts for extreme values. Nothing was written "
        "to the AnnData."
    )
