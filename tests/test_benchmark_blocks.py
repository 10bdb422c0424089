"""``benchmarks/additive_blocks.py`` (issue 10): one row per shape, a ratio of 1.00x for the
baseline, the automatic block named, the native kernel's column where it is available, and
``GENE_BLOCK`` and ``KERNEL`` left as they were."""

from __future__ import annotations

import torch

from scvae_beta.nn import _native, additive
from tests.conftest import load_benchmark


def test_block_benchmark_prints_one_row_per_shape_and_restores_the_setting(capsys):
    bench = load_benchmark("additive_blocks")
    threads = torch.get_num_threads()
    assert additive.GENE_BLOCK is None and additive.KERNEL == "auto"
    try:
        bench.main(
            [
                "--shapes",
                "4x16,32x1024",
                "--blocks",
                "8,64",
                "--genes",
                "40",
                "--hidden",
                "2",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--threads",
                "1",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert additive.GENE_BLOCK is None and additive.KERNEL == "auto"
    native = _native.library() is not None
    rows = [
        r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r
    ]
    header = "| D | batch | auto block | auto | 8 | 64 |" + (" native |" if native else "")
    assert rows[0] == header
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]
    assert [c[:3] for c in cells] == [["4", "16", "256"], ["32", "1024", "32"]]
    assert all(c[3].endswith("(1.00x)") and len(c) == 6 + native for c in cells)
