"""Device placement and the torch thread count for the duration of a fit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: torch's intra-op thread count when scvae_beta was imported: the default of ``n_threads``.
#: (``sc.pp.neighbors``/numba may change the process-wide count later, behind the user's back.)
THREADS_AT_IMPORT = torch.get_num_threads()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; checks that CUDA exists when asked for."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={str(device)!r} is not supported; use 'auto', 'cpu' or 'cuda'"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not supported; use 'auto', 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but CUDA is not available here; "
            "pass device='auto' or device='cpu'"
        )
    return dev


@contextlib.contextmanager
def pinned_threads(n_threads: int | None) -> Iterator[int]:
    """Run with ``n_threads`` torch threads (``None``: the count at import) and restore the
    caller's count afterwards. Float sums depend on the thread count, so a fixed count is
    what makes the same seed give the same result."""
    before = torch.get_num_threads()
    n = THREADS_AT_IMPORT if n_threads is None else int(n_threads)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
