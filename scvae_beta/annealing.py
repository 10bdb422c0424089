"""KL annealing schedules: pure functions ``step -> weight``.

Every schedule starts low and *settles* at the target ``beta`` at a known step
(:attr:`Schedule.settle_step`), which :func:`make_schedule` guarantees to lie before the end of
training. This avoids the failure mode of a fixed warm-up in epochs that outlasts training on
large data sets and silently trains with a weight below the requested beta (scvi-tools #1569).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["linear", "sigmoid", "cyclical", "constant", "Schedule", "make_schedule"]

#: At least this fraction of the planned steps runs at the full beta.
MIN_SETTLED_FRACTION = 0.1


def linear(step: int, *, beta: float, warmup_steps: int) -> float:
    """Linear warm-up: ``beta * step / warmup_steps``, then ``beta``."""
    if step >= warmup_steps:
        return float(beta)
    return float(beta) * step / warmup_steps


def sigmoid(step: int, *, beta: float, warmup_steps: int, steepness: float = 10.0) -> float:
    """Sigmoid warm-up rescaled to be exactly 0 at step 0 and ``beta`` at ``warmup_steps``."""
    if step >= warmup_steps:
        return float(beta)

    def s(u: float) -> float:
        return 1.0 / (1.0 + math.exp(-steepness * (u - 0.5)))

    lo, hi = s(0.0), s(1.0)
    return float(beta) * (s(step / warmup_steps) - lo) / (hi - lo)


def cyclical(
    step: int, *, beta: float, total_steps: int, n_cycles: int = 4, ratio: float = 0.5
) -> float:
    """Cyclical schedule of Fu et al. (2019): ``n_cycles`` linear ramps from 0 to ``beta``.

    Training is split into ``n_cycles`` equal cycles; within each, the weight rises linearly
    over the first ``ratio`` of the cycle and stays at ``beta`` for the rest. From the last
    cycle's plateau on (and beyond ``total_steps``) it is ``beta``.
    """
    period = total_steps / n_cycles
    if step >= (n_cycles - 1) * period + ratio * period:
        return float(beta)
    tau = (step % period) / period
    return float(beta) * min(1.0, tau / ratio)


def constant(step: int, *, beta: float) -> float:
    """No annealing: ``beta`` at every step."""
    return float(beta)


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: call it with a step to get the KL weight.

    Attributes
    ----------
    name
        Schedule name.
    beta
        Target weight.
    settle_step
        First step from which the weight is ``beta`` for good.
    total_steps
        Planned optimisation steps.
    """

    name: str
    beta: float
    settle_step: int
    total_steps: int
    fn: Callable[[int], float]

    def __call__(self, step: int) -> float:
        return self.fn(step)


def _warmup_steps(warmup: int | float, total_steps: int, steps_per_epoch: int) -> int:
    requested = warmup if isinstance(warmup, int) else int(round(warmup * total_steps))
    settled = max(steps_per_epoch, math.ceil(MIN_SETTLED_FRACTION * total_steps))
    limit = max(0, total_steps - settled)
    # A fraction that leaves the last 10 % at full beta is only shortened when training is a
    # few epochs long (the one-epoch rule); that is expected and not worth a warning.
    explicit = isinstance(warmup, int) or warmup > 1.0 - MIN_SETTLED_FRACTION
    if requested > limit and explicit:
        warnings.warn(
            f"KL warm-up of {requested} steps would not finish before the end of training "
            f"({total_steps} steps); shortened to {limit} steps so the KL weight reaches beta. "
            "Pass a smaller kl_warmup or more max_epochs to silence this.",
            UserWarning,
            stacklevel=3,
        )
    return min(requested, limit)


def make_schedule(
    name: str,
    *,
    beta: float,
    total_steps: int,
    steps_per_epoch: int,
    warmup: int | float = 0.25,
    n_cycles: int = 4,
    cycle_ratio: float = 0.5,
) -> Schedule:
    """Resolve a named schedule against the planned length of training.

    Parameters
    ----------
    name
        ``"linear"``, ``"sigmoid"``, ``"cyclical"`` or ``"constant"``.
    beta
        Target KL weight.
    total_steps
        Planned optimisation steps (``max_epochs * steps_per_epoch``).
    steps_per_epoch
        Steps in one epoch.
    warmup
        ``int``: steps; ``float``: fraction of ``total_steps``. Clamped with a warning so the
        weight settles before the last ``max(1 epoch, 10 %)`` of training.
    n_cycles, cycle_ratio
        Shape of the cyclical schedule.

    Returns
    -------
    A :class:`Schedule` with ``settle_step < total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if name in ("linear", "sigmoid"):
        w = _warmup_steps(warmup, total_steps, steps_per_epoch)
        if w == 0:
            return Schedule(name, beta, 0, total_steps, lambda s: constant(s, beta=beta))
        f = linear if name == "linear" else sigmoid
        return Schedule(name, beta, w, total_steps, lambda s: f(s, beta=beta, warmup_steps=w))
    if name == "cyclical":
        # The last plateau must also leave room at the end (same rule as the warm-ups).
        span = total_steps
        settle = math.ceil((n_cycles - 1 + cycle_ratio) * span / n_cycles)
        limit = total_steps - max(steps_per_epoch, math.ceil(MIN_SETTLED_FRACTION * total_steps))
        if settle > limit and limit > 0:
            # Shrink the cycled span so the final ramp ends by `limit`.
            span = int(limit * n_cycles / (n_cycles - 1 + cycle_ratio))
            settle = math.ceil((n_cycles - 1 + cycle_ratio) * span / n_cycles)
        elif limit <= 0:
            return Schedule(name, beta, 0, total_steps, lambda s: constant(s, beta=beta))
        return Schedule(
            name,
            beta,
            settle,
            total_steps,
            lambda s: cyclical(
                s, beta=beta, total_steps=span, n_cycles=n_cycles, ratio=cycle_ratio
            ),
        )
    if name == "constant":
        return Schedule(name, beta, 0, total_steps, lambda s: constant(s, beta=beta))
    raise ValueError(
        f"kl_schedule={name!r} is not supported; choose 'linear', 'cyclical', 'sigmoid', 'constant'"
    )
