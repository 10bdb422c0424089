"""Mixed precision: ``precision="bf16"`` runs the training step under bfloat16 autocast (the
likelihood in float32) and trains as well as float32, here on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scvae_beta
from tests.conftest import simulate_counts

KW = dict(max_epochs=6, n_hidden=16, batch_size=64, progress=False, kl_warmup=0)


def test_bf16_training_step_runs_in_bfloat16_and_matches_fp32(monkeypatch):
    from scvae_beta.models.base import CountVAE

    dtypes = []
    real = CountVAE.decode

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.training:
            dtypes.append(torch.is_autocast_enabled("cpu"))
        return out

    monkeypatch.setattr(CountVAE, "decode", spy)
    fp32, bf16 = simulate_counts(), simulate_counts()
    scvae_beta.fit(fp32, **KW)
    assert dtypes and not any(dtypes)
    dtypes.clear()
    scvae_beta.fit(bf16, **KW, precision="bf16")
    assert dtypes and all(dtypes)
    a, b = (x.uns["scvae_beta"] for x in (fp32, bf16))
    assert b["params"]["precision"] == "bf16"
    assert np.isfinite(b["history"]["train_loss"]).all()
    assert np.isfinite(bf16.obsm["X_scvae_beta"]).all()
    assert bf16.obsm["X_scvae_beta"].dtype == np.float32
    va, vb = a["history"]["val_loss"].iloc[-1], b["history"]["val_loss"].iloc[-1]
    assert abs(va - vb) / va < 0.02, (va, vb)


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision='fp16' is not supported"):
        scvae_beta.fit(simulate_counts(), **KW, precision="fp16")
    with pytest.raises(TypeError, match="data_on_device must be True or False"):
        scvae_beta.fit(simulate_counts(), **KW, data_on_device="yes")
