"""Batch normalisation over the minibatch parts of all ranks of a process group.

Under ``torch.distributed`` each rank holds a part of every minibatch. Synchronised batch
normalisation computes each feature's batch mean and variance over the union of the parts
(of unequal sizes too), so that the ranks together normalise as one process would on the
whole minibatch, with the gradients of that computation:

- on CUDA, :class:`torch.nn.SyncBatchNorm` (torch's own kernels);
- elsewhere (torch's refuses CPU tensors), :class:`SyncBatchNorm1d`: each rank sums its
  cells' values and squares per feature and counts its cells, the sums are added over the
  ranks with the differentiable ``torch.distributed.nn.functional.all_reduce`` (whose
  backward adds the gradients of the sums over the ranks), and the rank normalises its part.

:func:`convert_sync_batchnorm` swaps every :class:`~torch.nn.BatchNorm1d` of a module for
one of these and :func:`revert_sync_batchnorm` swaps them back. Both keep the parameter and
buffer objects, so the state dict's keys stay those of ``BatchNorm1d`` (a model trained by
several processes saves and loads in one) and an optimiser built before the swap still holds
the parameters.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SyncBatchNorm1d", "convert_sync_batchnorm", "revert_sync_batchnorm"]


def _all_reduce_sum(t: Tensor, group) -> Tensor:
    """``t`` summed over the ranks of ``group``, differentiably (the backward sums the
    gradients over the ranks); ``t`` itself outside a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in torch 2.10+ for a private replacement
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t, group=dist.group.WORLD if group is None else group)


class SyncBatchNorm1d(nn.BatchNorm1d):
    """:class:`~torch.nn.BatchNorm1d` whose training statistics cover every rank's cells.

    In training mode (or without running statistics) the mean and the biased variance of
    each feature are those of the union of the inputs of all ranks of ``process_group``
    (the default group when ``None``; the rank's own input outside a process group): the
    per-feature sum, sum of squares and the cell count are added over the ranks in one
    differentiable all-reduce, in float64 (``E[x^2] - E[x]^2`` cancels badly in float32).
    The running statistics are updated as :class:`~torch.nn.BatchNorm1d` updates them
    (``momentum``, or the cumulative mean when it is ``None``; the unbiased variance of the
    union), identically on every rank. In eval mode it is ``BatchNorm1d`` with the running
    statistics (nothing is exchanged). Every rank must call it in step, in training mode.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats
        As for :class:`~torch.nn.BatchNorm1d`.
    process_group
        The ranks whose inputs are normalised together (``None``: the default group).

    Inputs are ``(N, C)`` or ``(N, C, L)``; the parts of a minibatch may have different
    ``N`` (even 0), as long as the union has more than one value per feature.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training and self.running_mean is not None:
            return super().forward(x)  # running statistics: nothing to synchronise
        dims = [0, *range(2, x.dim())]
        x64 = x.double()
        count = x64.new_tensor([x.numel() // x.shape[1]])
        sums = _all_reduce_sum(
            torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]), self.process_group
        )
        c = self.num_features
        n = float(sums[2 * c].detach())  # the same count on every rank, so every rank raises alike
        if n <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {n:.0f} over all ranks"
            )
        mean = sums[:c] / n
        var = (sums[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        shape = (1, c) + (1,) * (x.dim() - 2)
        invstd = torch.rsqrt(var + self.eps)
        scale = invstd if self.weight is None else invstd * self.weight
        shift = -mean * scale if self.bias is None else self.bias - mean * scale
        return torch.addcmul(shift.to(x.dtype).view(shape), x, scale.to(x.dtype).view(shape))

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: float) -> None:
        """``BatchNorm1d``'s update from the union's mean and biased variance."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        for running, batch in ((self.running_mean, mean), (self.running_var, var * (n / (n - 1)))):
            running.mul_(1.0 - factor).add_(batch.to(running.dtype), alpha=factor)


def _copy_state(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` holding ``old``'s parameter and buffer objects and mode."""
    new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var = old.running_mean, old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)
    return new


def convert_sync_batchnorm(module: nn.Module, device_type: str, process_group=None) -> nn.Module:
    """Replace every :class:`~torch.nn.BatchNorm1d` under ``module`` by its synchronised
    version, in place: :class:`torch.nn.SyncBatchNorm` when ``device_type`` is ``"cuda"``
    (torch's converter), else :class:`SyncBatchNorm1d`. Parameters and buffers are kept (the
    same objects). Returns ``module`` (the new layer when ``module`` itself is one)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, SyncBatchNorm1d):
        m = module
        new = SyncBatchNorm1d(
            m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, process_group
        )
        return _copy_state(m, new)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device_type, process_group))
    return module


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm`: every :class:`SyncBatchNorm1d` and
    :class:`torch.nn.SyncBatchNorm` under ``module`` becomes a plain
    :class:`~torch.nn.BatchNorm1d` with the same parameter and buffer objects, in place.
    Returns ``module`` (the new layer when ``module`` itself is one)."""
    if isinstance(module, SyncBatchNorm1d | nn.SyncBatchNorm):
        m = module
        new = nn.BatchNorm1d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        return _copy_state(m, new)
    for name, child in module.named_children():
        module.add_module(name, revert_sync_batchnorm(child))
    return module
