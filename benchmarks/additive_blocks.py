"""Cost of the additive decoder's output layer by gene block size (issue 10).

Times ``scvae_beta.nn.additive.logsumexp_output`` (forward + backward, the layer that computes
``logsumexp_d(h_d @ W_d + b_d)`` block by block of genes) for ``D`` latent dimensions and ``B``
cells, with hidden width ``--hidden`` and ``--genes`` genes, at fixed blocks of genes and at
the automatic choice (``nn.additive.gene_block``), all on the PyTorch path
(``KERNEL="torch"``), and the fused native kernel (``native``, ``KERNEL="native"``; left out
with ``--no-native`` or where it is not available, with the reason printed). The variants are
timed *alternately*, one call each per round, ``--repeats`` rounds after ``--warmup`` untimed
ones, so that a shared machine's noise hits them alike. Prints the median ms per call and its
ratio to the baseline ``auto`` (the PyTorch path's choice); ``256`` is the fixed block used
before.

Run alone on the machine, under the default OpenMP policy::

    .venv/bin/python benchmarks/additive_blocks.py
    .venv/bin/python benchmarks/additive_blocks.py --shapes 32x128,32x1024 --blocks 32,128,256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scvae_beta.nn import additive


def _inputs(n_latent: int, batch: int, hidden: int, genes: int):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n_latent, batch, hidden, generator=gen).relu_().requires_grad_()
    w = (0.3 * torch.randn(n_latent, hidden, genes, generator=gen)).requires_grad_()
    b = (0.3 * torch.randn(n_latent, 1, genes, generator=gen)).requires_grad_()
    return h, w, b, torch.randn(batch, genes, generator=gen)


def _call(h, w, b, grad, block: int | None | str) -> float:
    if block == "native":
        additive.KERNEL = "native"
    else:
        additive.KERNEL, additive.GENE_BLOCK = "torch", block
    t0 = time.perf_counter()
    torch.autograd.grad(additive.logsumexp_output(h, w, b), (h, w, b), grad)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="32x128,10x128,64x128,32x1024", help="DxB, comma-separated")
    p.add_argument("--blocks", default="32,64,128,256", help="fixed gene blocks to compare")
    p.add_argument("--hidden", type=int, default=16, help="per-dimension width h (default 16)")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-native", action="store_true", help="leave out the native kernel")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    blocks = [int(x) for x in args.blocks.split(",")]
    variants: list[tuple[str, int | None | str]] = [("auto", None)]
    variants += [(str(k), k) for k in blocks]
    if not args.no_native:
        from scvae_beta.nn import _native

        if _native.library() is not None:
            variants.append(("native", "native"))
        else:
            print(f"native kernel left out: {_native.unavailable_reason()}")
    before = additive.GENE_BLOCK, additive.KERNEL
    print(
        f"logsumexp_output forward + backward, h {args.hidden}, {args.genes} genes, "
        f"{args.threads} threads, median of {args.repeats} alternating rounds; "
        "ms (ratio to auto)\n"
    )
    print("| D | batch | auto block | " + " | ".join(name for name, _ in variants) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in variants) + " |")
    try:
        for shape in args.shapes.split(","):
            n_latent, batch = (int(x) for x in shape.lower().split("x"))
            h, w, b, grad = _inputs(n_latent, batch, args.hidden, args.genes)
            times: dict[str, list[float]] = {name: [] for name, _ in variants}
            for r in range(args.warmup + args.repeats):
                for name, block in variants:
                    t = _call(h, w, b, grad, block)
                    if r >= args.warmup:
                        times[name].append(t)
            med = {name: 1000 * statistics.median(v) for name, v in times.items()}
            additive.GENE_BLOCK, additive.KERNEL = None, "torch"
            auto = additive.gene_block(n_latent, batch)
            cells = " | ".join(f"{med[n]:.1f} ({med[n] / med['auto']:.2f}x)" for n, _ in variants)
            print(f"| {n_latent} | {batch} | {auto} | {cells} |", flush=True)
    finally:
        additive.GENE_BLOCK, additive.KERNEL = before


if __name__ == "__main__":
    main()
