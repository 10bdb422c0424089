"""CUDA path (skipped on machines without a GPU; code must run on both)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvae_beta
from tests.conftest import FAST

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_fit_on_cuda_matches_cpu_closely(toy, tmp_path):
    gpu = toy.copy()
    model = scvae_beta.fit(gpu, device="cuda", **FAST)
    assert model.device.type == "cuda"
    assert gpu.uns["scvae_beta"]["params"]["device"].startswith("cuda")
    z = gpu.obsm["X_scvae_beta"]
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(model.get_latent(gpu), z, atol=1e-5)
    model.save(tmp_path / "m")
    on_cpu = scvae_beta.load(tmp_path / "m", device="cpu")
    np.testing.assert_allclose(on_cpu.get_latent(gpu), z, atol=1e-4)


@cuda
def test_auto_picks_cuda(toy):
    scvae_beta.fit(toy, device="auto", **FAST)
    assert toy.uns["scvae_beta"]["params"]["device"].startswith("cuda")


def test_auto_falls_back_to_cpu_without_cuda(toy, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    scvae_beta.fit(toy, device="auto", **FAST)
    assert toy.uns["scvae_beta"]["params"]["device"] == "cpu"


# -- issue 11: pinned copies, the matrix on the GPU, bf16, data on disk, resume ------------------


@cuda
def test_pinned_minibatch_to_cuda_equals_cpu(toy_batches):
    from scvae_beta.data import count_data

    data, _ = count_data(toy_batches, batch_key="batch")
    idx = np.random.default_rng(0).permutation(data.n_cells)[:100]
    cpu, gpu = data.minibatch(idx, "cpu"), data.minibatch(idx, "cuda")
    torch.cuda.synchronize()
    assert gpu.x.device.type == "cuda" and gpu.x.is_coalesced()
    torch.testing.assert_close(gpu.x.to_dense().cpu(), cpu.x.to_dense(), rtol=0, atol=0)
    for name in ("log_library", "batch_index", "indices"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=0, atol=0)


@cuda
def test_matrix_on_gpu_gives_the_same_minibatches_and_fit(toy):
    from scvae_beta.data import count_data
    from scvae_beta.data.on_device import DeviceCountData
    from scvae_beta.train.device import place_data

    data, _ = count_data(toy)
    dev = place_data(data, torch.device("cuda"), None)  # tiny: fits
    assert isinstance(dev, DeviceCountData) and dev.values.device.type == "cuda"
    idx = np.random.default_rng(1).permutation(data.n_cells)[:64]
    torch.testing.assert_close(
        dev.minibatch(idx, "cuda").x.to_dense().cpu(), data.minibatch(idx).x.to_dense()
    )
    a, b = toy.copy(), toy.copy()
    scvae_beta.fit(a, device="cuda", data_on_device=True, **FAST)
    scvae_beta.fit(b, device="cuda", data_on_device=False, **FAST)
    np.testing.assert_allclose(a.obsm["X_scvae_beta"], b.obsm["X_scvae_beta"], atol=1e-4)


@cuda
def test_bf16_fit_on_cuda_is_finite_and_close(toy):
    a, b = toy.copy(), toy.copy()
    kw = dict(FAST, max_epochs=8, kl_warmup=0)
    scvae_beta.fit(a, device="cuda", **kw)
    scvae_beta.fit(b, device="cuda", precision="bf16", **kw)
    assert np.isfinite(b.obsm["X_scvae_beta"]).all()
    va = a.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    vb = b.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    assert abs(va - vb) / va < 0.02


@cuda
def test_nb_likelihood_in_bf16_on_cuda_is_finite():
    from scvae_beta.likelihoods import nb_log_prob_cells

    gen = torch.Generator().manual_seed(0)
    log_mu = (torch.log_softmax(torch.randn(32, 2000, generator=gen), -1) + 10.0).cuda()
    log_theta = torch.zeros(2000, device="cuda")
    x = torch.poisson(log_mu.exp()).to_sparse_coo().coalesce()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = nb_log_prob_cells(x, log_mu.bfloat16(), log_theta.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@cuda
def test_backed_fit_on_cuda(toy, tmp_path):
    from scvae_beta.data import read_backed

    toy.write_h5ad(tmp_path / "d.h5ad")
    disk = read_backed(tmp_path / "d.h5ad")
    model = scvae_beta.fit(disk, device="cuda", **FAST)
    assert model.device.type == "cuda" and np.isfinite(disk.obsm["X_scvae_beta"]).all()
    with pytest.raises(ValueError, match="needs the counts in memory"):
        scvae_beta.fit(disk, device="cuda", data_on_device=True, **FAST)


@cuda
def test_resume_on_cuda_restores_the_cuda_rng(toy, tmp_path):
    import torch as t

    whole, part = toy.copy(), toy.copy()
    kw = dict(FAST, device="cuda")
    scvae_beta.fit(whole, **kw)
    scvae_beta.fit(part, **kw, checkpoint_dir=tmp_path / "c", checkpoint_every=2)
    state = t.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)
    assert "cuda" in state["rng"]
    np.testing.assert_allclose(part.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"], atol=1e-5)
    again = toy.copy()  # resuming the finished run redoes only the outputs (ELBO sampled on GPU)
    scvae_beta.fit(again, **kw, checkpoint_dir=tmp_path / "c", resume=True)
    np.testing.assert_allclose(again.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"], atol=1e-5)
    assert again.uns["scvae_beta"]["elbo"] == pytest.approx(part.uns["scvae_beta"]["elbo"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (NCCL)")
def test_torchrun_two_gpus_nccl_with_synchronised_batch_norm(tmp_path):
    """2 ranks on 2 GPUs (NCCL, torch's SyncBatchNorm): the fit ends, rank 0 writes the
    outputs, and the saved model loads in one process with plain BatchNorm1d state."""
    import os
    import socket
    import subprocess
    import sys

    import anndata as ad

    from tests.conftest import simulate_counts

    adata = simulate_counts(n_cells=600, n_genes=40)
    src = tmp_path / "in.h5ad"
    adata.write_h5ad(src)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(port), "-m", "scvae_beta.cli", "fit", str(src)]
    cmd += ["-o", str(tmp_path / "two.h5ad"), "--device", "cuda", "--max-epochs", "5"]
    cmd += ["--norm", "batch", "--no-progress", "--seed", "0"]
    run = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = ad.read_h5ad(tmp_path / "two.h5ad")
    assert np.isfinite(out.obsm["X_scvae_beta"]).all()
    model = scvae_beta.load(tmp_path / "two_model")
    norms = [
        m for m in model.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert norms and all(type(m) is torch.nn.BatchNorm1d for m in norms)


@cuda
@pytest.mark.parametrize("decoder", ["additive", "additive_fast", "additive_global"])
def test_additive_decoders_on_cuda_in_fp32_and_bf16(toy, decoder):
    a, b = toy.copy(), toy.copy()
    kw = dict(FAST, decoder=decoder, n_latent=4, max_epochs=6, kl_warmup=0, device="cuda")
    scvae_beta.fit(a, **kw)
    scvae_beta.fit(b, precision="bf16", **kw)
    assert np.isfinite(a.obsm["X_scvae_beta"]).all() and np.isfinite(b.obsm["X_scvae_beta"]).all()
    va = a.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    vb = b.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    assert abs(va - vb) / abs(va) < 0.02
