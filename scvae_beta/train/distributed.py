"""Several processes through ``torch.distributed`` (launched by ``torchrun``).

Inside a ``torchrun`` job (``WORLD_SIZE`` > 1 in the environment) :func:`init_from_env`
starts the default process group (gloo on CPU, NCCL on CUDA) unless the caller already did.
Then :func:`scvae_beta.fit`:

- shards each minibatch: the seeded global order (the same on every rank) is cut into global
  minibatches of ``batch_size * world_size`` cells, and rank ``r`` trains on the ``r``-th of
  their ``world_size`` near-equal parts (:meth:`~scvae_beta.data.Sampler.shard`);
- wraps the :class:`~scvae_beta.models.LossModule` in ``DistributedDataParallel``, which
  averages the gradients: with equal parts that is the gradient of one process training on
  the global minibatch (tested to float tolerance); estimators get the global number of
  training cells;
- all-reduces the history's sums, decides early stopping on rank 0 and broadcasts it;
- writes checkpoints from rank 0 only (the command line writes its outputs from rank 0 only).

Batch normalisation is per rank (each rank normalises by its own part of the minibatch;
``SyncBatchNorm`` needs CUDA): pass ``norm="layer"`` for results that do not depend on the
number of processes. FactorVAE's discriminator has its own optimiser outside DDP and is not
supported yet.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device) -> None:
    """Start the default process group from ``torchrun``'s environment, when there is one."""
    if not dist.is_available() or dist.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def setup(device: torch.device) -> tuple[torch.device, int, int]:
    """Join ``torchrun``'s process group if there is one; returns this rank's device (on
    CUDA ``cuda:LOCAL_RANK`` unless a device index was given), the rank and the world size."""
    init_from_env(device)
    rank, world = rank_and_world()
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, rank, world


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place (nothing outside a process group)."""
    if rank_and_world()[1] > 1:
        for t in tensors:
            dist.all_reduce(t)


def broadcast_value(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (so every rank's early stopping sees the same)."""
    if rank_and_world()[1] == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if rank_and_world()[1] == 1:
        return bool(flag)
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())
