"""Where a method's clusters and the labels disagree, and whether marker genes side with the
clusters (issue 10's held-out pbmc68k).

Reads the latents that ``disentanglement_real.py`` saved (``results/latents``; no refitting),
clusters each one as the benchmark does (Leiden at the NMI-optimal resolution,
:func:`scvae_beta.metrics.cluster_agreement`) and prints, for the first seed of each method,
the labels x clusters table and the genes most raised in each cluster inside ``--inspect``
(a label the clusters split). Then it scores every seed twice: against the data set's labels
and against *refined* labels, where the cells of one label are re-annotated by canonical
marker genes (:data:`REFINEMENTS`; log-normalised counts, thresholds fixed in the table,
independent of any model). If a method loses ARI only because it separates populations that a
coarse label merges, its ARI against the refined labels catches up::

    .venv-bench/bin/python benchmarks/label_anatomy.py --dataset pbmc68k \\
        --methods ours_disentangle,scvi --seeds 0,1,2,3,4,5,6,7 --inspect Dendritic
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

#: Per data set: the label to refine and ordered rules ``(new label, {gene: (op, threshold)})``
#: on log-normalised counts (``log1p(1e4 * x / library)``); a cell takes the first rule whose
#: every condition holds (a list of genes is averaged), else keeps its label. pbmc68k's
#: "Dendritic" bulk label holds NK cells (GNLY, NKG7), CD16+ monocytes (FCGR3A) and
#: IRF8-high, FCER1A-low dendritic cells besides the FCER1A+ conventional DCs.
REFINEMENTS = {
    "pbmc68k": (
        "Dendritic",
        [
            ("NK-like", {("GNLY", "NKG7"): (">", 2.0)}),
            ("CD16+ monocyte", {("FCGR3A",): (">", 2.0)}),
            ("IRF8+ DC", {("IRF8",): (">", 2.0), ("FCER1A",): ("<", 1.0)}),
        ],
    ),
}


def log_normalised(adata) -> np.ndarray:
    """``log1p(1e4 * x / library)`` as a dense array (small data sets only)."""
    import scipy.sparse as sp

    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X, dtype=float)
    lib = x.sum(1, keepdims=True)
    return np.log1p(x / np.maximum(lib, 1) * 1e4)


def refine_labels(adata, label: str, rules, x: np.ndarray | None = None) -> np.ndarray:
    """The labels ``adata.obs["label"]`` with the cells of ``label`` re-annotated by ``rules``
    (see :data:`REFINEMENTS`); ``x``: :func:`log_normalised` counts when already computed.
    Raises ``KeyError`` naming a marker gene that is missing."""
    genes = list(adata.var_names)
    needed = {g for _, conds in rules for names in conds for g in names}
    missing = sorted(needed - set(genes))
    if missing:
        raise KeyError(f"marker genes {missing} are not in the data")
    x = log_normalised(adata) if x is None else x
    out = adata.obs["label"].astype(str).to_numpy().astype(object)
    todo = out == label
    for new, conds in rules:
        hit = todo.copy()
        for names, (op, thr) in conds.items():
            v = x[:, [genes.index(g) for g in names]].mean(1)
            hit &= v > thr if op == ">" else v < thr
        out[hit] = new
        todo &= ~hit
    return out.astype(str)


def _mean_sd(values) -> str:
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def main(argv=None) -> None:
    sys.path.insert(0, str(HERE))  # the benchmark's loader, for the same cells and genes
    import disentanglement_real as R
    import pandas as pd

    from scvae_beta import metrics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="pbmc68k", choices=sorted(REFINEMENTS))
    p.add_argument("--methods", default="ours_disentangle,scvi")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--inspect", default=None, help="a label whose clusters to describe")
    p.add_argument("--data-dir", type=Path, default=R.DATA_DIR)
    p.add_argument("--latents", type=Path, default=HERE / "results" / "latents")
    p.add_argument("--stem", default="disentanglement_real")
    args = p.parse_args(argv)

    adata, _ = R.load_real(args.dataset, args.data_dir)
    labels = adata.obs["label"].astype(str).to_numpy()
    label, rules = REFINEMENTS[args.dataset]
    x = log_normalised(adata)
    refined = refine_labels(adata, label, rules, x)
    print(f"'{label}' re-annotated by markers:")
    print(pd.Series(refined[labels == label]).value_counts().to_string(), "\n")
    seeds = [int(s) for s in args.seeds.split(",")]
    pd.set_option("display.width", 250)
    for method in args.methods.split(","):
        ari, ari_ref = [], []
        for seed in seeds:
            z = np.load(R.latent_file(args.latents, args.stem, args.dataset, method, seed))
            best = metrics.cluster_agreement(z, labels, seed=seed, resolution="optimal")
            ari.append(best["ari"])
            ari_ref.append(
                metrics.cluster_agreement(z, refined, seed=seed, resolution="optimal")["ari"]
            )
            if seed != seeds[0]:
                continue
            cl = best["clusters"]
            print(f"{method}, seed {seed}: labels x clusters (resolution {best['resolution']})")
            print(pd.crosstab(pd.Series(labels, name="label"), pd.Series(cl, name="cluster")))
            if args.inspect:
                inside = labels == args.inspect
                for c in np.unique(cl[inside]):
                    m, rest = inside & (cl == c), inside & (cl != c)
                    if m.sum() < 5 or not rest.any():
                        continue
                    up = x[m].mean(0) - x[rest].mean(0)
                    top = [adata.var_names[i] for i in np.argsort(-up)[:8]]
                    print(f"  cluster {c} ({m.sum()} '{args.inspect}' cells) up: {', '.join(top)}")
            print()
        print(
            f"{method}: ARI opt. vs labels {_mean_sd(ari)}, vs refined labels {_mean_sd(ari_ref)} "
            f"(per seed {', '.join(f'{a:.3f}' for a in ari_ref)})\n"
        )


if __name__ == "__main__":
    main()
