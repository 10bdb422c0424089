"""Synchronised batch norm: one rank equals ``BatchNorm1d`` (values, gradients, running
statistics); two ranks with unequal parts equal ``BatchNorm1d`` on their union; conversion
keeps the parameters and the state dict's keys."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from scvae_beta.nn import SyncBatchNorm1d
from scvae_beta.nn.additive import AdditiveDecoder
from scvae_beta.nn.modules import MLP
from scvae_beta.nn.sync_norm import convert_sync_batchnorm, revert_sync_batchnorm
from scvae_beta.train.distributed import shutdown

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

PARTS = (3, 0, 7)  # cells on each rank: unequal, one rank with none


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pair(momentum, affine=True, c=4):
    """A ``BatchNorm1d`` and a ``SyncBatchNorm1d`` with the same random affine parameters."""
    ref = nn.BatchNorm1d(c, eps=1e-3, momentum=momentum, affine=affine)
    sync = SyncBatchNorm1d(c, eps=1e-3, momentum=momentum, affine=affine)
    if affine:
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0, generator=gen)
            ref.bias.normal_(generator=gen)
        sync.load_state_dict(ref.state_dict())
    return ref, sync


def _batches(n_steps=4, n=12, c=4, extra=()):
    gen = torch.Generator().manual_seed(0)
    return [3.0 + 2.0 * torch.randn(n, c, *extra, generator=gen) for _ in range(n_steps)]


def _compare(ref, sync, x, upstream):
    outs, grads = [], []
    for m in (ref, sync):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        (y * upstream).sum().backward()
        outs.append(y.detach())
        grads.append((xi.grad, *(p.grad for p in m.parameters())))
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b)


@pytest.fixture(params=[False, True], ids=["no_group", "group_of_one"])
def group(request, tmp_path):
    """Outside any process group, or inside a gloo group of one rank (the all-reduce runs)."""
    if request.param:
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
        )
    yield request.param
    if request.param:
        dist.destroy_process_group()


@pytest.mark.parametrize("momentum, affine", [(0.01, True), (None, True), (0.1, False)])
def test_one_rank_equals_batchnorm1d(group, momentum, affine):
    ref, sync = _pair(momentum, affine)
    gen = torch.Generator().manual_seed(1)
    for x in _batches():
        upstream = torch.randn(x.shape, generator=gen)
        _compare(ref, sync, x, upstream)
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(getattr(sync, name), buf, msg=name)
    assert int(sync.num_batches_tracked) == 4
    ref.eval()
    sync.eval()  # running statistics, nothing exchanged
    _compare(ref, sync, _batches(1, n=5)[0], torch.randn(5, 4, generator=gen))
    assert list(sync.state_dict()) == list(ref.state_dict())


def test_one_rank_equals_batchnorm1d_on_three_dimensional_input(group):
    ref, sync = _pair(0.1)
    for x in _batches(2, n=6, extra=(3,)):
        _compare(ref, sync, x, torch.ones_like(x))
    torch.testing.assert_close(sync.running_var, ref.running_var)


def test_one_cell_in_all_is_refused_like_batchnorm1d(group):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        SyncBatchNorm1d(4)(torch.randn(1, 4))


def _ranks_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    ref, sync = _pair(0.1)
    x_all = _batches(1, n=sum(PARTS))[0]
    upstream_all = torch.randn(x_all.shape, generator=torch.Generator().manual_seed(3))
    lo = sum(PARTS[:rank])
    x = x_all[lo : lo + PARTS[rank]].clone().requires_grad_(True)
    y = sync(x)
    (y * upstream_all[lo : lo + PARTS[rank]]).sum().backward()
    grads = torch.cat([sync.weight.grad, sync.bias.grad])
    dist.all_reduce(grads)  # each rank holds its cells' share of the parameter gradients
    torch.save(
        {
            "y": y.detach(),
            "x_grad": x.grad,
            "param_grads": grads,
            "buffers": dict(sync.named_buffers()),
        },
        f"{out}.{rank}",
    )
    shutdown()  # a barrier, then destroy: no rank tears down while a peer talks


def test_ranks_with_unequal_parts_equal_batchnorm1d_on_their_union(tmp_path):
    out = str(tmp_path / "bn")
    world = len(PARTS)
    torch.multiprocessing.spawn(_ranks_worker, args=(world, _free_port(), out), nprocs=world)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(world)]
    ref, _ = _pair(0.1)
    x = _batches(1, n=sum(PARTS))[0].requires_grad_(True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    y = ref(x)
    (y * upstream).sum().backward()
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad)
    for r in ranks:
        torch.testing.assert_close(r["param_grads"], torch.cat([ref.weight.grad, ref.bias.grad]))
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(r["buffers"][name], buf, msg=name)


def _model() -> nn.Module:
    return nn.ModuleDict(
        {"mlp": MLP(6, 5, n_layers=2, norm="batch"), "additive": AdditiveDecoder(2, 7, n_hidden=3)}
    )


@pytest.mark.parametrize("device_type, cls", [("cpu", SyncBatchNorm1d), ("cuda", nn.SyncBatchNorm)])
def test_conversion_keeps_parameters_and_state_dict_keys(device_type, cls):
    model = _model()
    model.eval()
    params = list(model.parameters())
    buffers = list(model.buffers())
    keys = list(model.state_dict())
    assert convert_sync_batchnorm(model, device_type) is model
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 4 and all(type(m) is cls and not m.training for m in norms)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(a is b for a, b in zip(model.buffers(), buffers, strict=True))
    fresh = _model()
    fresh.load_state_dict(model.state_dict())  # a converted model's weights load unconverted
    assert revert_sync_batchnorm(model) is model
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(type(m) is nn.BatchNorm1d for m in norms)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
