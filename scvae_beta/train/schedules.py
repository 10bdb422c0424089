"""The annealing factor and the capacity ``C`` at each step, resolved together."""

from __future__ import annotations

import math

from scvae_beta.annealing import Schedule, make_schedule


class Schedules:
    """``step -> (factor, C)`` for a fit: the KL schedule (a factor in [0, 1] on the penalty)
    and the capacity of capacity control, both resolved against the planned steps.

    Parameters
    ----------
    settings
        Resolved :class:`~scvae_beta.settings.Settings` (``kl_schedule``, ``kl_warmup``,
        ``kl_cycles``, ``kl_cycle_ratio``, ``capacity``, ``capacity_fraction``).
    total_steps, steps_per_epoch
        Planned optimisation steps and steps per epoch.
    """

    def __init__(self, settings, total_steps: int, steps_per_epoch: int) -> None:
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.kl: Schedule = make_schedule(
            settings.kl_schedule,
            beta=1.0,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            warmup=settings.kl_warmup,
            n_cycles=settings.kl_cycles,
            cycle_ratio=settings.kl_cycle_ratio,
        )
        self.capacity = settings.capacity
        self._ramp = max(1, round(settings.capacity_fraction * total_steps))

    def capacity_at(self, step: int) -> float | None:
        """``C(step)``: linear from ``C_min`` to ``C_max``, then constant; ``None`` without."""
        if self.capacity is None:
            return None
        lo, hi = self.capacity
        return float(hi) if step >= self._ramp else lo + (hi - lo) * step / self._ramp

    def __call__(self, step: int) -> tuple[float, float | None]:
        return self.kl(step), self.capacity_at(step)

    @property
    def final_capacity(self) -> float | None:
        """``C`` at the end of training (what validation uses)."""
        return self.capacity_at(self.total_steps)

    @property
    def settle_step(self) -> int:
        """First step from which both the factor and ``C`` are at their final values."""
        cap = 0 if self.capacity is None else self._ramp
        return max(self.kl.settle_step, cap)

    @property
    def settle_epoch(self) -> int:
        """First epoch all of whose steps use the final weights (early stopping waits)."""
        return max(
            math.ceil(self.kl.settle_step / self.steps_per_epoch),
            math.ceil((0 if self.capacity is None else self._ramp) / self.steps_per_epoch),
        )
