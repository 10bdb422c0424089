"""Disentanglement evidence for issue 3 (beta-TCVAE) and issue 4 (metrics against baselines).

``--issue tcvae``: on :func:`scvae_beta.datasets.simulate` counts with 4 independent factors
(4 cell types, differentiation, interferon, cell-cycle phase; codes from ``obs_factor_codes``),
beta-VAE beta = 1 (the baseline) against beta-TCVAE beta = ``--tc-beta`` (default 6, alpha =
gamma = 1), same architecture and epochs, one fit per seed. Per model, mean +- sd over seeds of
the KL decomposition of the aggregate posterior (MI, TC, dw-KL: ``uns`` ``kl_decomposition``,
MSS over all cells), held-out NLL and KL per cell, MIG (overall, per factor), active dims; then
per-seed (paired) ratios / differences against beta = 1.

``--issue metrics``: on the simulator and on the bundled sorted PBMCs (``obs["trueLabel"]`` as
the single factor): beta-VAE beta = 1 (the baseline); the best beta-TCVAE of a
:func:`scvae_beta.tune.tune_beta` sweep over ``--betas`` on ``--sweep-seeds`` (not evaluation
seed), rule: highest MIG among the betas whose held-out NLL is within 5 % of the sweep's best
(an oracle choice: it uses the ground truth; cross-checked by :func:`choose_beta`); and PCA of
log-normalised counts (``_pca_baseline.py``). MIG, DCI, SAP, modularity, ARI / NMI of Leiden
clusters and the latent matching score (against cell type / label), held-out NLL, over seeds.
With one factor (PBMC), DCI disentanglement is 1 and modularity the fraction of informative
dims by construction. The published Splatter numbers (4 factors: MIG 0.72 beta-TCVAE, 0.48
VAE, 0.54 PCA) are printed as context only (other simulator, model and factor coding).

Metrics use the posterior means of all cells. Every fit: one hidden layer of 128, n_latent 10,
NB, batch 128, linear KL warm-up (25 % of planned steps), early stopping (patience 20), on
``--threads`` torch threads. Tables go to stdout and ``benchmarks/results/
disentanglement_<issue>.md`` (every run's numbers to the ``.json`` beside it), progress to
stderr. Settings, fitting, scoring and table formatting shared by both issues live in
``_disentanglement_common.py``. See ``benchmarks/README.md``. Run::

    .venv/bin/python benchmarks/disentanglement.py --issue tcvae --quick     # smoke test
    .venv/bin/python benchmarks/disentanglement.py --issue tcvae             # ~6 min
    .venv/bin/python benchmarks/disentanglement.py --issue metrics           # ~25 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # thread pools are sized when numpy / torch load
    _t = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), None)
    if _t is None and "--threads" in sys.argv[:-1]:
        _t = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _t or "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _-prefixed sibling modules

import numpy as np  # noqa: E402
from _disentanglement_common import (  # noqa: E402
    ARCH,
    HERE,
    KEY,
    NLL_TOLERANCE,
    PUBLISHED_MIG,
    THREADS,
    fit_latents,
    fmt_run,
    log,
    md_table,
    mean_sd,
    score,
    simulated,
)
from anndata import AnnData  # noqa: E402

# ----------------------------------------------------------------------------- issue 3


def run_tcvae(args: argparse.Namespace) -> str:
    """Issue 3: beta-VAE beta = 1 vs beta-TCVAE on the simulator; markdown."""
    adata, codes, names, labels = simulated(args)
    models = {"vae": ("beta_vae", 1.0), "tcvae": ("beta_tcvae", args.tc_beta)}
    title = {"vae": "β-VAE β=1 (baseline)", "tcvae": f"β-TCVAE β={args.tc_beta:g}"}
    runs: dict[str, list[dict]] = {k: [] for k in models}
    for seed in args.seeds:
        for key, (model, beta) in models.items():
            z, rec = fit_latents(
                adata, model=model, beta=beta, seed=seed, max_epochs=args.max_epochs
            )
            rec.update(score(z, codes, names, labels, seed, full=False))
            runs[key].append(rec)
            args.records.append({"method": title[key], "seed": seed, **rec})
            log(fmt_run(title[key], seed, rec))

    cols = [("tc", 3), ("mi", 3), ("dw_kl", 3), ("kl", 2), ("nll", 2), ("mig", 3)]
    rows = [
        [title[k], *(mean_sd([r[c] for r in runs[k]], dg) for c, dg in cols)]
        + [mean_sd([r["n_active"] for r in runs[k]], 1), mean_sd([r["epochs"] for r in runs[k]], 0)]
        for k in models
    ]
    header = ["model", "TC", "MI", "dw-KL", "held-out KL", "held-out NLL", "MIG"]
    main = md_table(header + ["active dims", "epochs"], rows)

    v, t = runs["vae"], runs["tcvae"]
    n = len(v)
    tc_ratio = [b["tc"] / a["tc"] for a, b in zip(v, t, strict=True)]
    tc_diff = [b["tc"] - a["tc"] for a, b in zip(v, t, strict=True)]
    nll_pct = [100 * (b["nll"] / a["nll"] - 1) for a, b in zip(v, t, strict=True)]
    mig_diff = [b["mig"] - a["mig"] for a, b in zip(v, t, strict=True)]
    kl_ratio = [b["kl"] / a["kl"] for a, b in zip(v, t, strict=True)]
    n_tc = sum(x < 0 for x in tc_diff)
    n_nll = sum(abs(x) <= 100 * NLL_TOLERANCE for x in nll_pct)
    n_mig = sum(x > 0 for x in mig_diff)
    paired = md_table(
        ["quantity (β-TCVAE vs β=1, paired by seed)", "mean ± sd", "claim", "seeds where it holds"],
        [
            ["TC ratio", mean_sd(tc_ratio), "(context)", "-"],
            ["TC difference, nats", mean_sd(tc_diff), "< 0", f"{n_tc}/{n}"],
            ["held-out NLL difference, %", mean_sd(nll_pct, 2), "within ±5 %", f"{n_nll}/{n}"],
            ["MIG difference", mean_sd(mig_diff), "> 0", f"{n_mig}/{n}"],
            ["held-out KL ratio", mean_sd(kl_ratio), "(context)", "-"],
        ],
    )
    per_factor = md_table(
        ["model", *names],
        [[title[k], *(mean_sd([r["mig:" + f] for r in runs[k]]) for f in names)] for k in models],
    )
    holds = n_tc == n and n_nll == n and n_mig == n
    verdict = (
        "**Claim holds in every seed**"
        if holds
        else "**Claim does not hold in every seed** (see the last column)"
    )
    return "\n\n".join(
        [
            f"### Simulator: {adata.n_obs} cells x {adata.n_vars} genes, factors {names}",
            "Mean ± sd over seeds " + ", ".join(map(str, args.seeds)) + ". TC, MI, dw-KL: nats "
            "per cell (MSS, all cells; the true TC is >= 0, the minibatch estimate can dip "
            "slightly below); NLL, KL: nats per held-out cell.",
            main,
            paired,
            f"{verdict}: β-TCVAE β={args.tc_beta:g} has lower TC than β=1, held-out NLL within "
            "±5 %, and higher MIG.",
            "MIG per factor:",
            per_factor,
        ]
    )


# ----------------------------------------------------------------------------- issue 4


def choose_beta(sweep: list[dict], tolerance: float = NLL_TOLERANCE) -> float:
    """Beta with the highest MIG among sweep runs whose NLL <= (1 + tolerance) x the best NLL.

    An independent re-implementation of the rule, to cross-check ``tune_beta``'s choice.
    """
    best_nll = min(r["nll"] for r in sweep)
    ok = [r for r in sweep if r["nll"] <= (1 + tolerance) * best_nll]
    return max(ok, key=lambda r: (r["mig"], -r["nll"]))["beta"]


def sweep_betas(
    args: argparse.Namespace, adata: AnnData, names: list[str], max_epochs: int
) -> tuple[list[dict], float, str]:
    """One beta-TCVAE fit per beta with ``scvae_beta.tune.tune_beta``.

    Returns the sweep rows, the chosen beta and a note (empty unless ``tune_beta``'s choice
    differs from :func:`choose_beta`'s).
    """
    from scvae_beta.tune import tune_beta

    table = tune_beta(
        adata,
        betas=args.betas,
        model="beta_tcvae",
        factor_keys=names,
        seeds=args.sweep_seeds,
        metric="mig",
        metrics=["mig"],
        max_distortion_increase=NLL_TOLERANCE,
        progress=False,
        key_added=KEY + "_tune",
        max_epochs=max_epochs,
        **ARCH,
    )
    del adata.uns[KEY + "_tune"]
    # per-beta means over the sweep seeds (what tune_beta's rule compares)
    means = table.groupby("beta", sort=True)[["distortion", "mig", "tc"]].mean()
    sweep = [
        {"beta": float(b), "nll": float(r.distortion), "mig": float(r.mig), "tc": float(r.tc)}
        for b, r in means.iterrows()
    ]
    best, mine = float(table.attrs["recommended_beta"]), choose_beta(sweep)
    note = "" if mine == best else f"**tune_beta chose β={best:g}; the rule above gives {mine:g}**"
    if note:
        log(note)
    return sweep, best, note


def _compare(
    args: argparse.Namespace,
    label: str,
    adata: AnnData,
    codes: np.ndarray,
    names: list[str],
    labels: np.ndarray,
    max_epochs: int,
) -> str:
    """Issue 4 on one data set: sweep, then VAE / best beta-TCVAE / PCA over seeds; markdown."""
    from _pca_baseline import pca_latents

    log(f"{label}: tune_beta sweep of beta-TCVAE, betas {args.betas} (seeds {args.sweep_seeds})")
    sweep, best, note = sweep_betas(args, adata, names, max_epochs)
    args.records += [{"dataset": label, "method": "sweep", **r} for r in sweep]
    for r in sweep:
        log(f"  sweep beta={r['beta']:g}: NLL {r['nll']:.2f} TC {r['tc']:.3f} MIG {r['mig']:.3f}")
    best_nll = min(r["nll"] for r in sweep)
    sweep_rows = [
        [
            f"{r['beta']:g}",
            f"{r['nll']:.2f}",
            "yes" if r["nll"] <= (1 + NLL_TOLERANCE) * best_nll else "no",
            f"{r['tc']:.3f}",
            f"{r['mig']:.3f}",
            "**chosen**" if r["beta"] == best else "",
        ]
        for r in sweep
    ]
    methods = {
        "vae": ("β-VAE β=1 (baseline)", "beta_vae", 1.0),
        "tcvae": (f"β-TCVAE β={best:g} (best of sweep)", "beta_tcvae", best),
        "pca": ("PCA, log-normalised", None, None),
    }
    runs: dict[str, list[dict]] = {k: [] for k in methods}
    for seed in args.seeds:
        for key, (title, model, beta) in methods.items():
            t0 = time.perf_counter()
            if model is None:
                z, rec = pca_latents(adata, ARCH["n_latent"], seed=seed), {}
            else:
                z, rec = fit_latents(
                    adata, model=model, beta=beta, seed=seed, max_epochs=max_epochs
                )
            rec.update(score(z, codes, names, labels, seed, full=True))
            rec["seconds"] = time.perf_counter() - t0
            runs[key].append(rec)
            args.records.append({"dataset": label, "method": title, "seed": seed, **rec})
            log(fmt_run(title, seed, rec))

    cols = [("mig", 3), ("dci_d", 3), ("dci_c", 3), ("dci_i", 3), ("sap", 3)]
    cols += [("modularity", 3), ("ari", 3), ("nmi", 3), ("lms", 3), ("n_clusters", 1)]
    vae_mig = np.mean([r["mig"] for r in runs["vae"]])
    rows = []
    for key, (title, _, _) in methods.items():
        rs = runs[key]
        nll = mean_sd([r.get("nll") for r in rs], 2)
        ratio = np.mean([r["mig"] for r in rs]) / vae_mig if vae_mig > 0 else float("nan")
        row = [title, *(mean_sd([r[c] for r in rs], dg) for c, dg in cols), nll, f"{ratio:.2f}x"]
        if args.published:
            row.append(f"{PUBLISHED_MIG[key]:.2f}" if len(names) > 1 else "-")
        rows.append(row)
    header = ["method", "MIG", "DCI-D", "DCI-C", "DCI-I", "SAP", "modularity", "ARI", "NMI"]
    header += ["LMS", "Leiden clusters", "held-out NLL", "MIG / baseline MIG"]
    if args.published:
        header.append("published MIG (Splatter, 4 factors)")
    per_factor = ""
    if len(names) > 1:
        per_factor = "MIG per factor:\n\n" + md_table(
            ["method", *names],
            [
                [methods[k][0], *(mean_sd([r["mig:" + f] for r in runs[k]]) for f in names)]
                for k in methods
            ],
        )
    return "\n\n".join(
        [
            f"### {label}: {adata.n_obs} cells x {adata.n_vars} genes, factors {names}",
            f"`scvae_beta.tune_beta` sweep (seeds {', '.join(map(str, args.sweep_seeds))}, "
            f"means per β, max {max_epochs} epochs); "
            f"rule: highest MIG among betas with held-out NLL within "
            f"{100 * NLL_TOLERANCE:.0f} % of the best.",
            md_table(["β", "held-out NLL", "within 5 %", "TC", "MIG", ""], sweep_rows) + note,
            "Mean ± sd over seeds " + ", ".join(map(str, args.seeds)) + ":",
            md_table(header, rows),
            per_factor,
        ]
    ).rstrip()


def run_metrics(args: argparse.Namespace) -> str:
    """Issue 4 on the simulator and / or the sorted PBMCs; markdown."""
    out = []
    if "sim" in args.datasets:
        adata, codes, names, labels = simulated(args)
        out.append(_compare(args, "Simulator", adata, codes, names, labels, args.max_epochs))
    if "pbmc" in args.datasets:
        from scvae_beta.datasets import obs_factor_codes, pbmc_sorted

        adata = pbmc_sorted()
        if args.pbmc_cells and args.pbmc_cells < adata.n_obs:
            rng = np.random.default_rng(args.data_seed)
            adata = adata[np.sort(rng.choice(adata.n_obs, args.pbmc_cells, replace=False))].copy()
        codes, names = obs_factor_codes(adata, ["trueLabel"])
        labels = adata.obs["trueLabel"].to_numpy()
        published, args.published = args.published, False
        out.append(
            _compare(args, "Sorted PBMCs", adata, codes, names, labels, args.pbmc_max_epochs)
        )
        args.published = published
    return "\n\n".join(out)


# ----------------------------------------------------------------------------- driver


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--issue", choices=["tcvae", "metrics"], required=True)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated model seeds")
    p.add_argument("--n-cells", type=int, default=3000, help="simulated cells")
    p.add_argument("--n-genes", type=int, default=500, help="simulated genes")
    p.add_argument("--data-seed", type=int, default=0, help="simulator / subsampling seed")
    p.add_argument("--max-epochs", type=int, default=150, help="simulator epoch budget")
    p.add_argument("--tc-beta", type=float, default=6.0, help="beta of beta-TCVAE (--issue tcvae)")
    p.add_argument("--betas", default="2,4,6,8", help="beta-TCVAE sweep (--issue metrics)")
    p.add_argument(
        "--sweep-seeds",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 1001],
        help="seeds of the tune_beta sweep (not evaluation seeds); per-beta means decide",
    )
    p.add_argument("--datasets", default="sim,pbmc", help="--issue metrics: sim, pbmc or both")
    p.add_argument("--pbmc-cells", type=int, default=0, help="subsample PBMCs (0: all 3,500)")
    p.add_argument("--pbmc-max-epochs", type=int, default=80)
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (minutes at most)")
    p.add_argument("--out", type=Path, default=None, help="markdown output file")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.betas = _floats(args.betas)
    args.datasets = {d.strip() for d in args.datasets.split(",") if d.strip()}
    if unknown := args.datasets - {"sim", "pbmc"}:
        p.error(f"--datasets: unknown {sorted(unknown)}; use sim, pbmc or sim,pbmc")
    if args.quick:
        args.n_cells, args.n_genes, args.max_epochs, args.pbmc_max_epochs = 400, 300, 3, 3
        args.pbmc_cells = args.pbmc_cells or 700
        args.seeds, args.betas = args.seeds[:2] or [0, 1], args.betas[:2]
    if len(args.seeds) < 2:
        p.error("--seeds needs at least two seeds for a standard deviation")
    args.published, args.records = True, []
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    import platform

    import torch

    THREADS[0] = args.threads
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    body = run_tcvae(args) if args.issue == "tcvae" else run_metrics(args)
    wall = time.perf_counter() - t0
    cmd = "python benchmarks/disentanglement.py " + " ".join(sys.argv[1:] if argv is None else argv)
    head = (
        f"## Disentanglement benchmark, issue {'3' if args.issue == 'tcvae' else '4'} "
        f"(`--issue {args.issue}`){' [QUICK smoke run]' if args.quick else ''}\n\n"
        f"`{cmd}`: {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} thread(s), "
        f"wall time {wall:.0f} s ({wall / 60:.1f} min)."
    )
    text = head + "\n\n" + body + "\n"
    print(text)
    out = args.out or HERE / "results" / (
        f"disentanglement_{args.issue}{'_quick' if args.quick else ''}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"argv": sys.argv[1:] if argv is None else argv, "wall_s": wall, "runs": args.records}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=float))
    log(f"written to {out} and {out.with_suffix('.json').name} (every run)")
    return text


if __name__ == "__main__":
    main()
