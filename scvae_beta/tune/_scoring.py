"""Metric columns of one ``tune_beta`` fit: which metrics exist and :func:`score_latents`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from scvae_beta.metrics import cluster_agreement, dci, latent_matching_score, mig, modularity, sap

#: Metric name -> the table columns it fills.
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "mig": ("mig",),
    "modularity": ("modularity",),
    "sap": ("sap",),
    "dci": ("dci_disentanglement", "dci_completeness", "dci_informativeness_test"),
    "latent_matching": ("latent_matching",),
    "cluster_agreement": ("ari", "nmi"),
}
#: Metrics computed against the first factor key only, and only when it holds labels.
LABEL_METRICS = ("latent_matching", "cluster_agreement")
#: Fast defaults: DCI with 20 trees instead of disentanglement_lib's 100.
DEFAULT_METRIC_KWARGS: dict[str, dict] = {"dci": {"n_estimators": 20}}
METRIC_FUNCS = {
    "mig": mig,
    "modularity": modularity,
    "sap": sap,
    "dci": dci,
    "latent_matching": latent_matching_score,
    "cluster_agreement": cluster_agreement,
}


def score_latents(
    latents: np.ndarray,
    codes: np.ndarray | None,
    labels: np.ndarray | None,
    metrics: Sequence[str],
    metric_kwargs: Mapping[str, Mapping],
) -> dict[str, float]:
    """Metric columns of one fit (see :data:`METRIC_COLUMNS`).

    ``latents`` ``(n_cells, n_latent)``; ``codes`` ``(n_cells, n_factors)`` integer factor
    codes; ``labels`` ``(n_cells,)`` labels of the first factor (for the label metrics). A
    metric that fails with ``ValueError`` (e.g. a factor with one class among DCI's training
    cells) gives NaN and a warning instead of ending the sweep.
    """
    out: dict[str, float] = {}
    for name in metrics:
        kw = dict(metric_kwargs.get(name, {}))
        target = labels if name in LABEL_METRICS else codes
        try:
            res = METRIC_FUNCS[name](latents, target, **kw)
        except ValueError as err:
            msg = f"tune_beta: metric {name!r} failed ({err}); recorded as NaN"
            warnings.warn(msg, UserWarning, stacklevel=2)
            out.update(dict.fromkeys(METRIC_COLUMNS[name], float("nan")))
            continue
        if name == "dci":
            parts = ("disentanglement", "completeness", "informativeness_test")
            res = {f"dci_{k}": res[k] for k in parts}
        elif name == "latent_matching":
            res = {"latent_matching": res["score"]}
        elif name == "cluster_agreement":
            res = {"ari": res["ari"], "nmi": res["nmi"]}
        else:
            res = {name: res}
        out.update({k: float(v) for k, v in res.items()})
    return out
