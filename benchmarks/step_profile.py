"""Cost of one training step of the default β-VAE, and where it goes (issue 9).

Synthetic negative-binomial counts (default 20,000 cells x 2,000 genes, ~90 % zeros, CSR built
with numpy/scipy), a ``CountVAE`` with ``ModelConfig(n_genes=2000)`` (one hidden layer of 128,
BatchNorm, dropout 0.1, NB with one dispersion per gene), minibatches from
``CountData.minibatch`` (sparse COO), ``MeanFieldELBO`` + ``backward`` + ``torch.optim.Adam``:
the same step as the training loop, without the loop's bookkeeping.

Every variant owns its own copy of the module and optimiser (same initial weights) and the
variants are timed *alternately* in one process, ``--repeats`` rounds of ``--steps`` steps
each, so that the noise of a shared machine hits them alike. Reported: the median (and
min-max over rounds) wall-clock ms/step and the median process CPU ms/step (the CPU time is
the steadier number when other processes share the cores).

Variants (``--variants``, comma-separated):

* ``current``: the package as it is, Adam with ``foreach=True`` (what training uses).
* ``legacy``: the step before issue 9: the likelihood as it was (nonzero entries gathered with
  ``t[rows, cols]`` / ``t[cols]``, whose backward is ``index_put_(accumulate=True)``; kept below
  for same-process comparisons) and the encoder's first layer on the densified ``log1p(x)``.
* ``legacy-lik``: only the likelihood as before; ``dense-enc``: only the encoder as before.
* ``fused``: as ``current`` with ``torch.optim.Adam(fused=True)``.

``--profile`` prints a ``torch.profiler`` table (self CPU time by op) of ``current`` (and
``legacy`` when listed) at each batch size.

Run::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/step_profile.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/step_profile.py \\
        --variants current,legacy,fused --profile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import scvae_beta.likelihoods as lik
import scvae_beta.nn.modules as modules
from scvae_beta.config import ModelConfig
from scvae_beta.data.counts import CountData
from scvae_beta.models.base import CountVAE
from scvae_beta.models.elbo import MeanFieldELBO
from scvae_beta.nn.modules import log1p_dense

# --------------------------------------------------------------------------- data


def make_counts(n_cells: int, n_genes: int, seed: int = 0) -> sp.csr_matrix:
    """NB counts (gamma-Poisson), 10 latent factors, median library ~1,200, ~90 % zeros."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.8, (10, n_genes))
    base = 2.2 * rng.standard_normal(n_genes)
    theta = 1.5 * np.exp(0.7 * rng.standard_normal(n_genes))
    blocks = []
    for start in range(0, n_cells, 2048):
        n = min(2048, n_cells - start)
        logits = base + rng.standard_normal((n, 10)) @ loadings
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        mu = p * (1200.0 * np.exp(0.35 * rng.standard_normal(n)))[:, None]
        counts = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)
        counts[counts.sum(1) == 0, 0] = 1.0
        blocks.append(sp.csr_matrix(counts))
    return sp.vstack(blocks, format="csr")


# --------------------------------------------------------------------------- legacy likelihood


def _legacy_nb_log_prob_cells(x, log_mu, log_theta):
    """``nb_log_prob_cells`` before issue 9 (autograd through fancy-index gathers)."""
    theta = log_theta.exp()
    dense = -(theta * F.softplus(log_mu - log_theta)).sum(-1)
    if x.is_sparse:
        ind = x._indices()
        rows, cols, xv = ind[0], ind[1], x._values()
    else:
        rows, cols = torch.nonzero(x, as_tuple=True)
        xv = x[rows, cols]
    lm = log_mu[rows, cols]
    if log_theta.dim() == 1:
        lt, th, lg_th = log_theta[cols], theta[cols], torch.lgamma(theta)[cols]
    else:
        lt, th = log_theta[rows, cols], theta[rows, cols]
        lg_th = torch.lgamma(th)
    nz = torch.lgamma(xv + th) - lg_th - torch.lgamma(xv + 1.0) - xv * F.softplus(lt - lm)
    return dense.index_add(0, rows, nz)


def _dense_input_linear(x, covariates, linear):
    """The encoder's first layer before issue 9: densify ``log1p(x)``, then ``linear``."""
    h = log1p_dense(x)
    if covariates is not None:
        h = torch.cat([h, covariates], dim=-1)
    return linear(h)


#: variant -> (legacy likelihood, dense first encoder layer, Adam keyword)
VARIANTS = {
    "current": (False, False, "foreach"),
    "legacy": (True, True, "foreach"),
    "legacy-lik": (True, False, "foreach"),
    "dense-enc": (False, True, "foreach"),
    "fused": (False, False, "fused"),
}


@contextlib.contextmanager
def _patched(variant: str):
    legacy_lik, dense_enc, _ = VARIANTS[variant]
    saved = lik.nb_log_prob_cells, modules.sparse_input_linear
    if legacy_lik:
        lik.nb_log_prob_cells = _legacy_nb_log_prob_cells
    if dense_enc:
        modules.sparse_input_linear = _dense_input_linear
    try:
        yield
    finally:
        lik.nb_log_prob_cells, modules.sparse_input_linear = saved


# --------------------------------------------------------------------------- steps


class Runner:
    """One variant: its module, optimiser and a fixed sequence of minibatches."""

    def __init__(self, variant: str, module: CountVAE, batches: list, n_cells: int) -> None:
        self.variant = variant
        self.module = copy.deepcopy(module).train()
        params = list(self.module.parameters())
        self.opt = torch.optim.Adam(params, lr=1e-3, **{VARIANTS[variant][2]: True})
        self.batches = batches
        self.n_cells = n_cells
        self.elbo = MeanFieldELBO()
        self.i = 0

    def step(self) -> None:
        mb = self.batches[self.i % len(self.batches)]
        self.i += 1
        m = self.module
        with _patched(self.variant):
            out = self.elbo(
                m.model,
                m.guide,
                mb.x,
                mb.log_library,
                mb.batch_index,
                n_cells=self.n_cells,
                subsample=mb.indices,
            )
        loss = out.loss / self.n_cells
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def time(self, steps: int) -> tuple[float, float]:
        """Wall-clock and process CPU milliseconds per step."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        return (
            (time.perf_counter() - t0) / steps * 1e3,
            (time.process_time() - c0) / steps * 1e3,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--batch-sizes", default="128,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="current,legacy,fused")
    ap.add_argument("--steps", type=int, default=40, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds per variant")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    ap.add_argument("--rows", type=int, default=18, help="rows of each profiler table")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    X = make_counts(args.cells, args.genes)
    data = CountData(X)
    print(
        f"{args.cells} cells x {args.genes} genes, {1 - X.nnz / np.prod(X.shape):.1%} zeros, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    module = CountVAE(ModelConfig(n_genes=args.genes))
    variants = args.variants.split(",")
    rng = np.random.default_rng(0)
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        batches = [
            data.minibatch(np.sort(rng.choice(args.cells, bs, replace=False))) for _ in range(16)
        ]
        runners = [Runner(v, module, batches, args.cells) for v in variants]
        for r in runners:  # warm-up: kernels, thread pools, Adam state
            r.time(5)
        wall: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(args.repeats):
            order = runners if rep % 2 == 0 else runners[::-1]
            for r in order:
                w, c = r.time(args.steps)
                wall[r.variant].append(w)
                cpu[r.variant].append(c)
        nnz = statistics.mean(b.x._nnz() for b in batches)
        print(
            f"\nbatch {bs} (mean nnz {nnz:.0f}), {args.repeats} alternating rounds of "
            f"{args.steps} steps: ms/step wall median [min-max], process CPU median"
        )
        base = statistics.median(wall[variants[0]])
        for v in variants:
            med = statistics.median(wall[v])
            print(
                f"  {v:10s} {med:7.2f} [{min(wall[v]):6.2f}-{max(wall[v]):6.2f}]  "
                f"cpu {statistics.median(cpu[v]):7.2f}   x{med / base:.2f} of {variants[0]}"
            )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for r in runners:
                if r.variant not in ("current", "legacy"):
                    continue
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    r.time(30)
                print(f"\n  profile: {r.variant}, batch {bs}, 30 steps")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
