"""Simulated raw negative-binomial counts driven by independent, known factors.

The generative story of :func:`simulate`, for cell ``c`` and gene ``g``::

    cell_type_c ~ Uniform{0, ..., K-1}                 (discrete, if n_cell_types >= 2)
    s_pc        ~ Beta(a_p, b_p), one per program p    (continuous, in [0, 1])
    phase_c     ~ Uniform[0, 2 pi)                     (cyclic, if cell_cycle)
    batch_c     ~ Uniform{0, ..., B-1}                 (nuisance, if n_batches >= 2)
    L_c         ~ LogNormal(log(library_size), library_sdlog)       (nuisance)

    logit_cg = baseline_g + batch_lfc[batch_c, g] + sum over factors of its effect on g
    mu_cg    = L_c * softmax_g(logit_cg)               (as in the model's decoder)
    x_cg     ~ Poisson(Gamma(shape=theta_g, scale=mu_cg / theta_g))  = NB(mu_cg, theta_g)

All factors are drawn independently of each other and of ``L_c``. Each factor drives its own,
disjoint block of ``genes_per_factor`` genes (each cell type has its own block of markers):

- cell-type markers: ``+effect_size`` in cells of their type, 0 otherwise;
- ``"differentiation"``: ``effect_size * s`` for the first half of its genes (late genes) and
  ``effect_size * (1 - s)`` for the second half (early genes); other programs:
  ``effect_size * s``;
- cell cycle: ``effect_size * (1 + cos(phase - peak_g)) / 2`` with ``peak_g = pi`` (mid S) for
  the first half of its genes and ``5 pi / 3`` (mid G2/M) for the rest;
- background genes: no factor effect.

Because the mean is a softmax, the expected total of a cell is exactly ``L_c`` whatever its
factors: background genes keep fixed proportions *relative to each other*, while their share
of the total shrinks a little when program genes go up.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

__all__ = ["simulate", "obs_factor_codes"]

#: Beta(a, b) shapes of the known programs' activities; any other program name gets (1, 1).
PROGRAM_SHAPES = {"differentiation": (1.0, 1.0), "interferon": (1.0, 3.0), "stress": (1.0, 3.0)}
#: Equal-width cell-cycle stages over [0, 2 pi), in order, and the peaks of the two gene sets.
CYCLE_STAGES = ("G1", "S", "G2M")
CYCLE_PEAKS = {"S": np.pi, "G2M": 5 * np.pi / 3}
BASELINE_SD = 1.0  # gene baselines: log-scale logits ~ Normal(0, BASELINE_SD)
DISPERSION_SDLOG = 0.5  # theta_g ~ LogNormal(log(dispersion), DISPERSION_SDLOG)
MAX_REDRAWS = 100  # attempts at redrawing all-zero cells before placing one count
_RESERVED = ("cell_type", "phase", "cycle_stage", "batch", "library_size", "library_size_expected")
_CHUNK = 2**22  # matrix entries generated at a time (bounds memory; fixed, so seeds reproduce)


def _check_args(n_cells, n_genes, n_cell_types, programs, cell_cycle, n_batches, gpf, **pos):
    """Validate the arguments of :func:`simulate`; return the program names as a tuple."""
    for name, value in [("n_cells", n_cells), ("n_genes", n_genes), ("genes_per_factor", gpf)]:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in [("n_cell_types", n_cell_types), ("n_batches", n_batches)]:
        bad = isinstance(value, bool) or not isinstance(value, int | np.integer)
        if bad or value < 0 or value == 1:
            raise ValueError(f"{name} must be 0 (no such factor) or an integer >= 2, got {value!r}")
    if isinstance(programs, str):
        raise ValueError(f"programs must be a sequence of names; pass programs=({programs!r},)")
    programs = tuple(programs)
    for p in programs:
        if not isinstance(p, str) or not p or p in _RESERVED:
            raise ValueError(
                f"program name {p!r} is not allowed: use a non-empty string other than {_RESERVED}"
            )
    if len(set(programs)) != len(programs):
        raise ValueError(f"programs must be unique, got {programs}")
    if cell_cycle and gpf < 2:
        raise ValueError("cell_cycle=True needs genes_per_factor >= 2 (an S and a G2M gene set)")
    for name, value in pos.items():
        strict = name in ("library_size", "dispersion")
        if not np.isfinite(value) and not (name == "dispersion" and value == np.inf):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if value < 0 or (strict and value == 0):
            raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value!r}")
    n_types = n_cell_types if n_cell_types >= 2 else 0
    n_blocks = n_types + len(programs) + int(bool(cell_cycle))
    if gpf * n_blocks > n_genes:
        raise ValueError(
            f"n_genes={n_genes} is too small: genes_per_factor={gpf} x ({n_types} cell types + "
            f"{len(programs)} programs + {int(bool(cell_cycle))} cell cycle) = {gpf * n_blocks} "
            f"genes are needed; pass n_genes >= {gpf * n_blocks} or a smaller genes_per_factor"
        )
    return programs


def simulate(
    n_cells: int = 2000,
    n_genes: int = 500,
    *,
    n_cell_types: int = 4,
    programs: Sequence[str] = ("differentiation", "interferon"),
    cell_cycle: bool = True,
    n_batches: int = 0,
    genes_per_factor: int = 40,
    effect_size: float = 1.5,
    batch_effect: float = 0.5,
    library_size: float = 2000.0,
    library_sdlog: float = 0.4,
    dispersion: float = 5.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate raw NB counts whose genes are driven by independent, known factors.

    The generative story is in the module docstring. Same ``seed`` -> identical AnnData.

    Parameters
    ----------
    n_cells, n_genes
        Size of the count matrix.
    n_cell_types
        Number of discrete cell types, drawn uniformly; 0 disables the factor.
    programs
        Names of continuous programs, one activity in [0, 1] per cell each:
        ``"differentiation"`` (Beta(1, 1), genes split into early/late), ``"interferon"`` and
        ``"stress"`` (Beta(1, 3): most cells respond weakly); other names get Beta(1, 1)
        (:data:`PROGRAM_SHAPES`). ``()`` for none.
    cell_cycle
        Add a cyclic phase in [0, 2 pi) driving an S and a G2/M gene set.
    n_batches
        Number of batches, drawn uniformly; 0 for none. Each batch shifts the logits of *all*
        genes by its own gene-wise log-fold changes ~ Normal(0, ``batch_effect``).
    genes_per_factor
        Genes driven by each cell type (its markers), by each program and by the cell cycle.
        ``n_genes`` must be at least ``genes_per_factor * (n_cell_types + len(programs) +
        cell_cycle)``; the remaining genes are background.
    effect_size
        Log-fold change of a driven gene between a factor's extremes (see module docstring).
    batch_effect
        Standard deviation of the batch log-fold changes (used only if ``n_batches``).
    library_size, library_sdlog
        Expected library sizes are LogNormal with median ``library_size`` and log-scale
        standard deviation ``library_sdlog``, independent of all factors.
    dispersion
        Median inverse dispersion theta of the NB (variance ``mu + mu^2 / theta``); per gene
        ``theta_g ~ LogNormal(log(dispersion), 0.5)``. ``np.inf`` gives Poisson counts.
    seed
        Seed of ``np.random.default_rng``.

    Returns
    -------
    AnnData with

    - ``X``: CSR int32 counts, cells x genes; no cell has a zero total (all-zero cells are
      redrawn, i.e. counts are conditioned on a non-zero total; after ``MAX_REDRAWS`` failed
      attempts one count is put on a gene drawn from the cell's mean proportions);
    - ``obs``: ``cell_type`` (categorical ``type0``, ...), one float column per program,
      ``phase`` (radians) and ``cycle_stage`` (categorical G1/S/G2M, equal-width thirds of
      the circle), ``batch`` (categorical ``batch0``, ...), ``library_size`` (observed total,
      int) and ``library_size_expected`` (the LogNormal draw ``L_c``); discrete codes for
      metrics come from :func:`obs_factor_codes`;
    - ``var``: ``factor`` (the obs key driving the gene, or ``"background"``), ``program``
      (finer label, e.g. ``cell_type:type2``, ``cell_cycle:S``), ``effect`` (signed log-fold
      effect), ``peak_phase`` (cycle genes, else NaN), ``baseline`` (logit) and
      ``dispersion`` (theta_g);
    - ``varm["batch_lfc"]`` (genes x batches), if ``n_batches``;
    - ``uns["simulation"]``: every argument, the constants above, ``factors`` (obs keys of the
      known factors) and ``cyclic_factors``.
    """
    reals = dict(effect_size=effect_size, batch_effect=batch_effect, library_size=library_size)
    reals.update(library_sdlog=library_sdlog, dispersion=dispersion)
    args = (n_cells, n_genes, n_cell_types, programs, cell_cycle, n_batches, genes_per_factor)
    programs = _check_args(*args, **reals)
    rng = np.random.default_rng(seed)
    gpf, n = genes_per_factor, n_cells
    shapes = np.array([PROGRAM_SHAPES.get(p, (1.0, 1.0)) for p in programs]).reshape(-1, 2)

    # Factors, each drawn independently.
    obs = pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n)]))
    features, weights = [], []  # cell features (n,) and their gene weights (n_genes,)
    offset = rng.normal(0.0, BASELINE_SD, n_genes)  # baseline logits
    baseline = offset.copy()
    factor_of = np.full(n_genes, "background", dtype=object)
    program_of = factor_of.copy()
    effect = np.zeros(n_genes)
    peak = np.full(n_genes, np.nan)
    start = 0

    def block(factor: str, label: str, size: int) -> slice:
        nonlocal start
        genes = slice(start, start + size)
        factor_of[genes], program_of[genes] = factor, label
        start += size
        return genes

    if n_cell_types >= 2:
        types = rng.integers(0, n_cell_types, n)
        names = [f"type{k}" for k in range(n_cell_types)]
        obs["cell_type"] = pd.Categorical.from_codes(types, categories=names)
        for k in range(n_cell_types):
            genes = block("cell_type", f"cell_type:{names[k]}", gpf)
            effect[genes] = effect_size
            w = np.zeros(n_genes)
            w[genes] = effect_size
            features.append((types == k).astype(float))
            weights.append(w)
    for p, (a, b) in zip(programs, shapes, strict=True):
        s = rng.beta(a, b, n)
        obs[p] = s
        genes = block(p, p, gpf)
        w = np.zeros(n_genes)
        w[genes] = effect_size
        if p == "differentiation":  # second half: early genes, effect_size * (1 - s)
            early = slice(genes.start + gpf - gpf // 2, genes.stop)
            w[early] = -effect_size
            offset[early] += effect_size
            program_of[early] = "differentiation:early"
            program_of[genes.start : early.start] = "differentiation:late"
        effect[genes] = w[genes]
        features.append(s)
        weights.append(w)
    if cell_cycle:
        phase = rng.uniform(0.0, 2 * np.pi, n)
        obs["phase"] = phase
        stage = np.minimum((phase / (2 * np.pi / 3)).astype(int), 2)
        obs["cycle_stage"] = pd.Categorical.from_codes(stage, categories=list(CYCLE_STAGES))
        for name, size in [("S", gpf - gpf // 2), ("G2M", gpf // 2)]:
            genes = block("phase", f"cell_cycle:{name}", size)
            peak[genes], effect[genes] = CYCLE_PEAKS[name], effect_size
        # (1 + cos(phase - peak)) / 2 = 1/2 + (cos phase cos peak + sin phase sin peak) / 2
        cyc = ~np.isnan(peak)
        offset[cyc] += effect_size / 2
        for trig, f in [(np.cos, np.cos(phase)), (np.sin, np.sin(phase))]:
            w = np.zeros(n_genes)
            w[cyc] = effect_size / 2 * trig(peak[cyc])
            features.append(f)
            weights.append(w)
    batch_lfc = None
    if n_batches >= 2:
        batch = rng.integers(0, n_batches, n)
        obs["batch"] = pd.Categorical.from_codes(batch, [f"batch{b}" for b in range(n_batches)])
        batch_lfc = rng.normal(0.0, batch_effect, (n_genes, n_batches))
        features += [(batch == b).astype(float) for b in range(n_batches)]
        weights += list(batch_lfc.T)
    expected = rng.lognormal(np.log(library_size), library_sdlog, n)
    theta = np.exp(rng.normal(np.log(dispersion), DISPERSION_SDLOG, n_genes))

    # Counts, a bounded chunk of cells at a time.
    F = np.stack(features, axis=1) if features else np.zeros((n, 0))
    W = np.stack(weights) if weights else np.zeros((0, n_genes))
    rows = max(1, _CHUNK // n_genes)
    chunks = [
        _draw_counts(offset + F[i : i + rows] @ W, expected[i : i + rows], theta, rng)
        for i in range(0, n, rows)
    ]
    X = sp.vstack(chunks, format="csr", dtype=np.int32)
    obs["library_size"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    obs["library_size_expected"] = expected

    var = pd.DataFrame(
        {
            "factor": pd.Categorical(factor_of.astype(str)),
            "program": pd.Categorical(program_of.astype(str)),
            "effect": effect,
            "peak_phase": peak,
            "baseline": baseline,
            "dispersion": theta,
        },
        index=pd.Index([f"gene{j}" for j in range(n_genes)]),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    if batch_lfc is not None:
        adata.varm["batch_lfc"] = batch_lfc
    known = [k for k in ("cell_type", *programs, "phase", "batch") if k in obs]
    adata.uns["simulation"] = {
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "n_cell_types": int(n_cell_types),
        "programs": np.array(programs, dtype=str),
        "program_beta_shapes": shapes,
        "cell_cycle": int(bool(cell_cycle)),
        "cycle_stages": list(CYCLE_STAGES),
        "cycle_peaks": [float(CYCLE_PEAKS[s]) for s in ("S", "G2M")],
        "n_batches": int(n_batches),
        "genes_per_factor": int(genes_per_factor),
        "effect_size": float(effect_size),
        "batch_effect": float(batch_effect),
        "library_size": float(library_size),
        "library_sdlog": float(library_sdlog),
        "dispersion": float(dispersion),
        "dispersion_sdlog": DISPERSION_SDLOG,
        "baseline_sd": BASELINE_SD,
        "seed": int(seed),
        "mean": "library_size_expected * softmax over genes of the logits",
        "factors": np.array(known, dtype=str),
        "cyclic_factors": np.array(["phase"] if cell_cycle else [], dtype=str),
    }
    return adata


def _draw_counts(
    logits: np.ndarray, library: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> sp.csr_matrix:
    """NB counts (m, n_genes) with mean ``library * softmax(logits)``; no all-zero rows."""
    logits = logits - logits.max(axis=1, keepdims=True)
    props = np.exp(logits)
    props /= props.sum(axis=1, keepdims=True)
    mu = props * library[:, None]

    def draw(m: np.ndarray) -> np.ndarray:
        rate = m if np.isinf(theta).all() else rng.gamma(theta, m / theta)
        return rng.poisson(rate)

    counts = draw(mu)
    for _ in range(MAX_REDRAWS):
        zero = np.flatnonzero(counts.sum(axis=1) == 0)
        if zero.size == 0:
            break
        counts[zero] = draw(mu[zero])
    zero = np.flatnonzero(counts.sum(axis=1) == 0)
    if zero.size:  # extremely small libraries: one count on a gene drawn from the proportions
        cum = np.cumsum(props[zero], axis=1)
        genes = (cum < rng.uniform(0.0, 1.0, (zero.size, 1)) * cum[:, -1:]).sum(axis=1)
        counts[zero, np.minimum(genes, counts.shape[1] - 1)] = 1
    return sp.csr_matrix(counts.astype(np.int32))


def obs_factor_codes(
    adata: ad.AnnData,
    factor_keys: Sequence[str] | None = None,
    n_bins: int = 10,
    *,
    cyclic: Sequence[str] | None = None,
    one_hot: Sequence[str] = (),
) -> tuple[np.ndarray, list[str]]:
    """Discrete integer codes of the known factors in ``adata.obs``, for disentanglement metrics.

    Parameters
    ----------
    adata
        AnnData whose ``obs`` holds the factors, e.g. from :func:`simulate`.
    factor_keys
        ``obs`` columns to code; default ``adata.uns["simulation"]["factors"]``.
    n_bins
        Bins for continuous and cyclic factors (>= 2).
    cyclic
        Keys holding angles in radians; default ``adata.uns["simulation"]["cyclic_factors"]``
        (``["phase"]`` for simulations with a cell cycle), else none.
    one_hot
        Keys of discrete factors to replace, in place, by one binary factor per level that
        occurs, named ``"key=level"`` (e.g. ``one_hot=["cell_type"]``). A code that gives
        every cell type its own dimension, which
        :func:`scvae_beta.metrics.latent_matching_score` rewards, cannot also carry the whole
        categorical factor in one dimension, so MIG on the categorical factor is low by
        construction for it; MIG over the per-level indicators scores "one dimension per
        type" as disentangled instead.

    Returns
    -------
    codes
        ``(n_cells, n_factors)`` int64. Categorical, string and boolean columns, and integer
        columns with at most ``n_bins`` distinct values, give ``0 .. n_levels - 1`` (category
        order, else sorted values). Cyclic columns give equal-width angular bins of
        ``[0, 2 pi)`` (angles are taken modulo 2 pi). Other numeric columns give equal-count
        quantile bins ``0 .. n_bins - 1`` (by rank; tied values share a bin).
    names
        The factor keys, in column order (``"key=level"`` for the ``one_hot`` indicators).
    """
    sim = adata.uns.get("simulation", {})
    if factor_keys is None:
        if "factors" not in sim:
            raise ValueError(
                "adata.uns['simulation']['factors'] not found; pass factor_keys=[...] naming "
                "the obs columns that hold the factors"
            )
        factor_keys = sim["factors"]
    if isinstance(factor_keys, str):
        factor_keys = [factor_keys]
    names = [str(k) for k in factor_keys]
    cyclic = {str(k) for k in (sim.get("cyclic_factors", []) if cyclic is None else cyclic)}
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    missing = [k for k in names if k not in adata.obs]
    if missing:
        raise ValueError(f"factor keys {missing} not in adata.obs; available: {list(adata.obs)}")
    if isinstance(one_hot, str):
        one_hot = [one_hot]
    one_hot = [str(k) for k in one_hot]
    stray = [k for k in one_hot if k not in names]
    if stray:
        raise ValueError(f"one_hot keys {stray} are not among the factor keys {names}")
    codes = np.empty((adata.n_obs, len(names)), dtype=np.int64)
    levels: dict[str, np.ndarray] = {}  # level names of the discrete factors, by code
    for j, key in enumerate(names):
        col = adata.obs[key]
        if isinstance(col.dtype, pd.CategoricalDtype):
            c = col.cat.codes.to_numpy()
            if (c < 0).any():
                raise ValueError(f"obs[{key!r}] has missing values; fill or drop those cells")
            codes[:, j] = c
            levels[key] = col.cat.categories.astype(str).to_numpy()
            continue
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            if col.isna().any():
                raise ValueError(f"obs[{key!r}] has missing values; fill or drop those cells")
            levels[key], codes[:, j] = np.unique(col.astype(str).to_numpy(), return_inverse=True)
            continue
        x = col.to_numpy(dtype=float)
        if not np.isfinite(x).all():
            raise ValueError(f"obs[{key!r}] has NaN or infinite values; drop those cells first")
        if key in cyclic:
            width = 2 * np.pi / n_bins
            codes[:, j] = np.minimum(np.floor(np.mod(x, 2 * np.pi) / width), n_bins - 1)
        elif pd.api.types.is_integer_dtype(col) and np.unique(x).size <= n_bins:
            values, codes[:, j] = np.unique(x, return_inverse=True)
            levels[key] = values.astype(np.int64).astype(str)
        else:
            ranks = rankdata(x, method="average") - 1.0  # 0 .. n-1
            codes[:, j] = np.minimum(np.floor(ranks * n_bins / x.size), n_bins - 1)
    binned = [k for k in one_hot if k not in levels]
    if binned:
        raise ValueError(
            f"one_hot keys {binned} are continuous or cyclic; only discrete factors "
            "(categorical, string, boolean or small-integer columns) can be one-hot"
        )
    if not one_hot:
        return codes, names
    columns, out_names = [], []
    for j, key in enumerate(names):
        if key not in one_hot:
            columns.append(codes[:, j : j + 1])
            out_names.append(key)
            continue
        present = np.unique(codes[:, j])  # unused categories would give constant factors
        columns.append((codes[:, j : j + 1] == present[None, :]).astype(np.int64))
        out_names += [f"{key}={levels[key][c]}" for c in present]
    return np.concatenate(columns, axis=1), out_names
