"""``tune_beta(adata, ...)``: a beta sweep (one fit per beta and seed), scored and summarised.

``_tune.py`` runs the sweep, ``_args.py`` checks every argument before any fit, ``_scoring.py``
computes the metric columns and ``_rules.py`` holds the recommendation rule.
"""

from __future__ import annotations

from scvae_beta.tune._rules import recommend_beta
from scvae_beta.tune._scoring import (
    DEFAULT_METRIC_KWARGS,
    LABEL_METRICS,
    METRIC_COLUMNS,
    score_latents,
)
from scvae_beta.tune._tune import tune_beta

__all__ = [
    "DEFAULT_METRIC_KWARGS",
    "LABEL_METRICS",
    "METRIC_COLUMNS",
    "recommend_beta",
    "score_latents",
    "tune_beta",
]
