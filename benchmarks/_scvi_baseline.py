"""scvi-tools SCVI baseline for the training-throughput benchmark.

``scvi`` is imported lazily inside :func:`train_scvi`, so this module can be
imported without scvi-tools installed. Run with the benchmark venv for a smoke
test::

    .venv-bench/bin/python benchmarks/_scvi_baseline.py            # 2000 x 2000, 2 epochs
    .venv-bench/bin/python benchmarks/_scvi_baseline.py --cells 20000 --batch-size 1024
"""

from __future__ import annotations

import time

#: Architecture compared against (SCVI defaults apart from gene_likelihood):
#: 1 hidden layer of 128 units in encoder and decoder, 10 latent dims,
#: NB likelihood with gene-wise dispersion, observed library size, no batch key.
SCVI_MODEL_KWARGS = {
    "n_hidden": 128,
    "n_layers": 1,
    "n_latent": 10,
    "dropout_rate": 0.1,
    "dispersion": "gene",
    "gene_likelihood": "nb",
    "use_observed_lib_size": True,
    "latent_distribution": "normal",
}


def train_scvi(
    adata,
    *,
    batch_size: int,
    max_epochs: int,
    seed: int = 0,
    n_epochs_kl_warmup: int | None = None,
    train_size: float | None = None,
    accelerator: str = "auto",
    n_threads: int | None = None,
    elbo_batch_size: int = 1024,
) -> dict:
    """Train scvi-tools' SCVI for a fixed number of epochs and time it.

    Parameters
    ----------
    adata
        AnnData with raw integer counts in ``.X`` (not modified: a copy is set up).
    batch_size
        Minibatch size.
    max_epochs
        Exact number of epochs (no early stopping, no validation passes).
    seed
        Passed to ``scvi.settings.seed`` (Lightning ``seed_everything``).
    n_epochs_kl_warmup
        Linear KL warm-up length in epochs. ``None`` (default here) means no
        warm-up: KL weight 1 from the first step. NB scvi's own default is 400
        epochs, i.e. KL weight 0 in epoch 0 and epoch/400 afterwards.
    train_size
        scvi's train fraction; ``None`` = scvi default (0.9, the held-out cells
        are never evaluated during training).
    accelerator
        Lightning accelerator ("auto", "cpu", "gpu").
    n_threads
        If given, ``torch.set_num_threads(n_threads)`` before training.
    elbo_batch_size
        Minibatch size for the post-training ``get_elbo`` /
        ``get_reconstruction_error`` passes (not timed).

    Returns
    -------
    dict
        ``seconds`` (wall time of ``model.train`` only), ``n_train_cells``,
        ``max_epochs``, ``batch_size``, ``cells_per_s``
        (n_train_cells * max_epochs / seconds), ``final_train_loss`` (last
        ``history["train_loss"]``, called ``train_loss_epoch`` in older
        scvi-tools: per-cell mean of
        reconstruction + kl_weight * KL(q(z|x)||p(z)) over the epoch),
        ``final_elbo_train`` (last ``history["elbo_train"]``, same but with KL
        weight 1), ``neg_elbo_per_cell`` (``-model.get_elbo(train cells)``: a
        positive per-cell loss, KL weight 1, eval mode, one z sample),
        ``reconstruction_per_cell`` (positive per-cell -log p(x|z)),
        ``kl_per_cell`` (their difference) and version info.
    """
    import scvi
    import torch

    if n_threads is not None:
        torch.set_num_threads(n_threads)
    scvi.settings.seed = seed
    scvi.settings.verbosity = "WARNING"

    adata = adata.copy()
    scvi.model.SCVI.setup_anndata(adata)  # no batch/labels/covariates
    model = scvi.model.SCVI(adata, **SCVI_MODEL_KWARGS)

    plan_kwargs = {
        # optimizer defaults made explicit: Adam(lr=1e-3, eps=1e-2, weight_decay=1e-6)
        "lr": 1e-3,
        "eps": 0.01,
        "weight_decay": 1e-6,
        "n_epochs_kl_warmup": n_epochs_kl_warmup,
        "n_steps_kl_warmup": None,
    }
    t0 = time.perf_counter()
    model.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_size=train_size,
        accelerator=accelerator,
        early_stopping=False,
        check_val_every_n_epoch=None,  # scvi maps None -> sys.maxsize: never validate
        enable_progress_bar=False,
        enable_checkpointing=False,
        plan_kwargs=plan_kwargs,
    )
    seconds = time.perf_counter() - t0

    train_idx = model.train_indices
    n_train = int(len(train_idx))
    hist = model.history
    # scvi 1.4.x logs train_loss with on_step=False/on_epoch=True, so Lightning
    # names it "train_loss"; older setups (on_step=True) give "train_loss_epoch".
    loss_key = "train_loss_epoch" if "train_loss_epoch" in hist else "train_loss"
    # Same torch RNG state before both passes -> the same single z sample per
    # cell (sequential loader), so kl_per_cell = neg_elbo - rec is consistent.
    torch.manual_seed(seed)
    # get_elbo returns +ELBO (mean over cells, higher is better); negate it.
    neg_elbo = -float(model.get_elbo(indices=train_idx, batch_size=elbo_batch_size))
    torch.manual_seed(seed)
    # get_reconstruction_error returns the positive mean of -log p(x|z)
    # (despite its docstring saying "higher is better").
    rec = model.get_reconstruction_error(indices=train_idx, batch_size=elbo_batch_size)
    rec = float(rec["reconstruction_loss"])
    return {
        "seconds": seconds,
        "n_train_cells": n_train,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "cells_per_s": n_train * max_epochs / seconds,
        "final_train_loss": float(hist[loss_key].iloc[-1, 0]),
        "final_elbo_train": float(hist["elbo_train"].iloc[-1, 0]),
        "neg_elbo_per_cell": neg_elbo,
        "reconstruction_per_cell": rec,
        "kl_per_cell": neg_elbo - rec,
        "torch_threads": torch.get_num_threads(),
        "scvi_version": scvi.__version__,
        "torch_version": torch.__version__,
    }


def _main(argv=None) -> None:
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _synthetic import make_counts

    adata = make_counts(args.cells, args.genes, seed=args.seed)
    for bs in args.batch_size:
        res = train_scvi(
            adata,
            batch_size=bs,
            max_epochs=args.epochs,
            seed=args.seed,
            n_threads=args.threads,
        )
        print(res, flush=True)


if __name__ == "__main__":
    _main()
