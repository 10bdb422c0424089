"""Shared fixtures: tiny synthetic count data, one thread, no progress noise."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def load_benchmark(name: str, folder: str = "benchmarks"):
    """The script ``benchmarks/<name>.py`` (or ``<folder>/<name>.py``) as a module (the
    benchmarks and scripts are not a package): for tests of their helpers."""
    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(name: str):
    """The developer script ``scripts/<name>.py`` as a module."""
    return load_benchmark(name, folder="scripts")


def simulate_counts(
    n_cells: int = 240, n_genes: int = 40, n_groups: int = 3, seed: int = 0, n_batches: int = 0
) -> ad.AnnData:
    """Tiny NB counts: each group up-regulates its own block of genes; library sizes vary."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n_cells)
    base = rng.gamma(2.0, 1.0, n_genes)
    effect = np.zeros((n_groups, n_genes))
    block = n_genes // n_groups
    for g in range(n_groups):
        effect[g, g * block : (g + 1) * block] = 2.0
    logits = np.log(base)[None, :] + effect[group]
    props = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    library = rng.lognormal(np.log(200), 0.3, n_cells)
    mu = props * library[:, None]
    theta = 5.0
    counts = rng.poisson(rng.gamma(theta, mu / theta))
    counts[counts.sum(1) == 0, 0] = 1
    obs = pd.DataFrame(
        {"group": pd.Categorical([f"g{g}" for g in group])},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    if n_batches:
        obs["batch"] = pd.Categorical([f"b{b}" for b in rng.integers(0, n_batches, n_cells)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one torch thread: numba's OpenMP layer (scanpy's neighbour search)
    resets the process-wide thread count, and float sums (so exact comparisons between fits)
    depend on it."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def toy() -> ad.AnnData:
    return simulate_counts()


@pytest.fixture
def toy_batches() -> ad.AnnData:
    return simulate_counts(n_batches=2, seed=1)


#: Fast settings for fit() in tests.
FAST = dict(max_epochs=4, n_hidden=16, batch_size=64, progress=False)
