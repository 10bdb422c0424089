"""Device placement (of the model, the data and mixed precision) and the torch thread count
for the duration of a fit."""

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


#: With ``data_on_device=None``, the matrix goes to the GPU when it takes less than this
#: share of the free GPU memory (the rest is left to activations and the optimiser).
DEVICE_DATA_SHARE = 0.25


def place_data(data, device: torch.device, data_on_device: bool | None):
    """The count source to train on: on CUDA, the in-memory matrix copied to the GPU
    (:class:`~scvae_beta.data.on_device.DeviceCountData`) when ``data_on_device`` is true,
    or is ``None`` and it fits in :data:`DEVICE_DATA_SHARE` of the free GPU memory; else
    ``data`` (on CPU it is on the device already)."""
    from scvae_beta.data.counts import CountData
    from scvae_beta.data.on_device import DeviceCountData, device_bytes

    if device.type != "cuda" or data_on_device is False:
        return data
    if not isinstance(data, CountData):
        if data_on_device:
            raise ValueError(
                "data_on_device=True needs the counts in memory, but they are on disk (a backed "
                "AnnData); pass data_on_device=None, or load them with adata.to_memory()"
            )
        return data
    need = device_bytes(data)
    if data_on_device is None:
        free, _ = torch.cuda.mem_get_info(device)
        if need > DEVICE_DATA_SHARE * free:
            return data
    return DeviceCountData(data, device)


def autocast(device: torch.device, precision: str):
    """The training step's autocast context: bfloat16 for ``precision="bf16"``, else none."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
