"""Small helpers shared by the AnnData-facing modules."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from importlib import metadata

import torch


def versions() -> dict[str, str]:
    """Versions of the libraries that shaped a fit (written into ``uns``)."""
    import numpy
    import pyro
    import scipy

    from scvae_beta._version import __version__

    return {
        "scvae_beta": __version__,
        "torch": str(torch.__version__),
        "pyro": pyro.__version__,
        "anndata": metadata.version("anndata"),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside a forked RNG so the caller's global RNG state is left untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
