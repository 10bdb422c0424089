"""The beta recommendation of a ``tune_beta`` sweep table: :func:`recommend_beta`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def recommend_beta(
    table: pd.DataFrame, *, metric: str | None = "mig", max_distortion_increase: float = 0.05
) -> tuple[float, str, str]:
    """The recommended beta of a sweep table, the rule used and a one-line reason.

    Values are first averaged over seeds, per beta.

    - ``"metric_within_distortion"`` (``metric`` given and not all NaN): among the betas whose
      mean ``distortion`` is at most ``best + max_distortion_increase * |best|`` (``best`` the
      lowest mean distortion), the one with the highest mean ``metric``; ties go to the lower
      distortion. Betas whose metric is NaN are skipped.
    - ``"knee"`` (no metric): the knee of the mean rate-distortion curve. Points are sorted by
      rate and both axes scaled to [0, 1]; the knee is the point farthest below the chord
      joining the first and last point (beyond it, more rate buys little less distortion).
    - ``"lowest_distortion"``: the fallback when there is no knee (fewer than three betas,
      distortion not falling from the lowest to the highest rate, or no point below the
      chord).

    Parameters
    ----------
    table
        Columns ``beta``, ``rate``, ``distortion`` and ``metric`` (when given).
    metric
        Column to maximise, or ``None`` for the knee rule.
    max_distortion_increase
        Relative tolerance on the mean distortion (>= 0).

    Returns
    -------
    ``(beta, rule, reason)``.
    """
    if max_distortion_increase < 0 or not math.isfinite(max_distortion_increase):
        raise ValueError(f"max_distortion_increase must be >= 0, got {max_distortion_increase!r}")
    cols = ["rate", "distortion"] + ([metric] if metric else [])
    missing = [c for c in ["beta", *cols] if c not in table.columns]
    if missing:
        raise KeyError(f"the sweep table lacks columns {missing}; it has {list(table.columns)}")
    if len(table) == 0:
        raise ValueError("the sweep table is empty")
    mean = table.astype({"beta": np.float64}).groupby("beta", sort=True)[cols].mean()
    d = mean["distortion"]
    if metric and mean[metric].notna().any():
        best = float(d.min())
        limit = best + max_distortion_increase * abs(best)
        ok = mean[(d <= limit) & mean[metric].notna()]
        if not ok.empty:
            pick = ok.sort_values([metric, "distortion"], ascending=[False, True]).index[0]
            return (
                float(pick),
                "metric_within_distortion",
                f"β={pick:g}: highest mean {metric} ({ok.loc[pick, metric]:.3g}) among β "
                f"{[float(b) for b in ok.index]} whose mean held-out distortion is within "
                f"{max_distortion_increase:.0%} of the lowest ({best:.4g} nats/cell at "
                f"β={d.idxmin():g})",
            )
    pts = mean.reset_index().sort_values(["rate", "beta"])
    x, y = (_unit(pts[c].to_numpy(dtype=np.float64)) for c in ("rate", "distortion"))
    if len(pts) >= 3:
        dx, dy = x[-1] - x[0], y[-1] - y[0]
        below = (dx * (y - y[0]) - dy * (x - x[0])) / max(math.hypot(dx, dy), 1e-12)
        if dx > 0 and dy < 0 and below.min() < -1e-9:
            i = int(np.argmin(below))
            b = float(pts["beta"].iloc[i])
            return (
                b,
                "knee",
                f"β={b:g}: knee of the rate-distortion curve (mean rate "
                f"{pts['rate'].iloc[i]:.3g} nats, distortion {pts['distortion'].iloc[i]:.4g} "
                f"nats/cell), the point farthest below the chord from β="
                f"{pts['beta'].iloc[0]:g} to β={pts['beta'].iloc[-1]:g}",
            )
    b = float(d.idxmin())
    return (
        b,
        "lowest_distortion",
        f"β={b:g}: lowest mean held-out distortion ({d.min():.4g} nats/cell); the "
        "rate-distortion curve has no knee",
    )


def _unit(v: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant vector becomes zeros)."""
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)
