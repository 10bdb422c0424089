"""Small helpers shared by the AnnData-facing modules."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
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


def cells_digest(obs_names) -> str:
    """SHA-256 (hex) of the cell names in order: what a fit records so that a tool can tell
    that it is given the same cells in the same order (``uns[key]["cells_digest"]``)."""
    h = hashlib.sha256()
    for name in obs_names:
        h.update(str(name).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def caller_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that points at the
    first frame outside this package (the user's line), however deep in the package (and
    behind whichever wrappers) the warning is raised."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # the function that warns is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside a forked RNG so the caller's global RNG state is left untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
