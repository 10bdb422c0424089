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
