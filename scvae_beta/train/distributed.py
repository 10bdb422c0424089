"""Several processes through ``torch.distributed`` (launched by ``torchrun``).

Inside a ``torchrun`` job (``WORLD_SIZE`` > 1 in the environment) :func:`init_from_env`
starts the default process group (gloo on CPU, NCCL on CUDA) unless the caller already did.
Then :func:`scvae_beta.fit`:

- shards the training cells (:meth:`~scvae_beta.data.Sampler.shard`). In memory the seeded
  global order (the same on every rank) is cut into global minibatches of
  ``batch_size * world_size`` cells and rank ``r`` trains on the ``r``-th of their
  ``world_size`` near-equal parts. On disk (:class:`~scvae_beta.data.ChunkedSampler`) the
  seeded chunk order is dealt out to the ranks in turn and each rank cuts its own chunks'
  cells into the same number of minibatches, so a rank reads only its own chunks; its parts
  then differ in size from the other ranks' by up to about a chunk per epoch;
- converts the model's batch norms to synchronised ones for the length of training
  (:func:`~scvae_beta.nn.sync_norm.convert_sync_batchnorm`: torch's ``SyncBatchNorm`` on
  CUDA, :class:`~scvae_beta.nn.sync_norm.SyncBatchNorm1d` on CPU): the batch statistics are
  those of the union of the ranks' parts, with their gradients, and the running statistics
  are the same on every rank. Saved models and checkpoints hold plain ``BatchNorm1d`` state;
- wraps the :class:`~scvae_beta.models.LossModule` in ``DistributedDataParallel``
  (:func:`data_parallel`), which averages the gradients: with equal parts that is the
  gradient of one process training on the global minibatch (tested to float tolerance, with
  batch or layer norm); estimators get the global number of training cells;
- FactorVAE: the discriminator's gradients are averaged over the ranks too (an all-reduce
  before its Adam step, :meth:`~scvae_beta.objectives.factor_vae.FactorVAE.auxiliary_step`),
  so every rank keeps the same discriminator. Unlike one process on the global minibatch, the
  permuted codes the discriminator learns from are permuted within each rank's part, and
  the total-correlation estimates (``tc_disc``, and beta-TCVAE's minibatch estimators) are
  per part;
- all-reduces the history's sums; rank 0 alone runs the per-epoch validation pass (reading
  the validation cells, from every chunk on disk) and sends its row to the others; it decides
  early stopping and broadcasts it;
- writes checkpoints from rank 0 only (the command line writes its outputs from rank 0 only,
  after every rank has ended the process group, :func:`shutdown`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from scvae_beta.nn.sync_norm import convert_sync_batchnorm, revert_sync_batchnorm


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


def shutdown() -> None:
    """End the default process group, if there is one: a barrier, then
    ``destroy_process_group``.

    The barrier makes every rank finish its collectives before any rank closes its
    connections; a rank that tears down while a peer still talks to it can abort that peer
    (gloo: ``terminate called without an active exception``). Call it on every rank, on the
    success path only: after an error the other ranks may never reach the barrier.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


def broadcast_object(obj, device: torch.device):
    """Rank 0's picklable ``obj`` (e.g. a dict of floats) on every rank."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


@contextmanager
def data_parallel(loss: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The module a training step calls, for the length of the ``with`` block.

    Outside a process group of several ranks, ``loss`` itself. Under one, ``loss`` with
    every ``BatchNorm1d`` synchronised over the ranks (converted in place, the same
    parameter and buffer objects; plain ``BatchNorm1d`` again on exit, also on an error),
    wrapped in ``DistributedDataParallel`` (which broadcasts rank 0's weights first).
    ``loss`` must be on ``device`` already.
    """
    if rank_and_world()[1] == 1:
        yield loss
        return
    convert_sync_batchnorm(loss, device.type)
    try:
        yield nn.parallel.DistributedDataParallel(loss)
    finally:
        revert_sync_batchnorm(loss)
