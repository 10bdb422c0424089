"""The SVI loop on its own: early stopping keeps the best weights, validation at target beta."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scvae_beta.train.loop as loop_mod
from scvae_beta.data import CountData, Sampler
from scvae_beta.models import CountVAE, LossModule
from scvae_beta.objectives import build_objective
from scvae_beta.settings import Settings
from scvae_beta.train import resolve_device
from tests.conftest import simulate_counts


def _setup(max_epochs=12, patience=2, warmup=0.0):
    adata = simulate_counts(n_cells=120, n_genes=20)
    data = CountData(sp.csr_matrix(adata.X))
    settings = Settings(
        beta=2.0,
        n_latent=3,
        n_hidden=8,
        max_epochs=max_epochs,
        batch_size=32,
        patience=patience,
        kl_warmup=warmup,
        validation_fraction=20 / 120,
        progress=False,
    ).resolve(n_train=100, device="cpu")
    module = CountVAE(settings.model_config(n_genes=20, n_batches=0))
    loss = LossModule(module, build_objective(settings, 3))
    sampler = Sampler(120, settings.validation_fraction, 32, settings.seed)
    assert sampler.n_train == 100 and sampler.n_val == 20
    return module, loss, data, sampler, settings


def _train(loss, data, sampler, settings):
    return loop_mod.train(loss, data, sampler, settings, torch.device("cpu"))


def test_early_stopping_restores_the_weights_of_the_best_epoch(monkeypatch):
    module, loss, data, sampler, settings = _setup(patience=2)
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 9.0, 9.0, 9.0])  # best at epoch 3
    snapshots = []

    def fake_evaluate(mod, data, idx, device, estimator="mss", report=None, batch_size=256):
        snapshots.append({k: v.clone() for k, v in mod.state_dict().items()})
        v = next(scripted)
        return np.full(len(idx), -v), np.zeros((len(idx), 3)), {}  # recon = v, kl = 0

    monkeypatch.setattr(loop_mod, "validation_pass", fake_evaluate)
    res = _train(loss, data, sampler, settings)
    assert res.best_epoch == 3 and res.stopped_early
    assert len(res.history["val_loss"]) == 5  # epochs 4 and 5 did not improve: stop
    final = module.state_dict()
    for k, v in snapshots[2].items():
        torch.testing.assert_close(final[k], v)
    assert not torch.equal(final["decoder.logits.weight"], snapshots[4]["decoder.logits.weight"])


def test_validation_loss_uses_target_beta_during_warmup(monkeypatch):
    module, loss, data, sampler, settings = _setup(max_epochs=6, warmup=0.5)

    def fake_evaluate(mod, data, idx, device, estimator="mss", report=None, batch_size=256):
        return np.full(len(idx), -10.0), np.full((len(idx), 3), 1.0), {}  # recon 10, kl 3

    monkeypatch.setattr(loop_mod, "validation_pass", fake_evaluate)
    res = _train(loss, data, sampler, settings)
    np.testing.assert_allclose(res.history["val_loss"], 10.0 + 2.0 * 3.0)
    assert res.history["kl_weight"][0] < 2.0 and res.history["kl_weight"][-1] == 2.0


def test_no_early_stopping_during_warmup(monkeypatch):
    module, loss, data, sampler, settings = _setup(max_epochs=10, patience=1, warmup=0.5)
    losses = iter(np.arange(10, 0, -1.0)[::-1])  # always getting worse

    def fake_evaluate(mod, data, idx, device, estimator="mss", report=None, batch_size=256):
        return np.full(len(idx), -next(losses)), np.zeros((len(idx), 3)), {}

    monkeypatch.setattr(loop_mod, "validation_pass", fake_evaluate)
    res = _train(loss, data, sampler, settings)
    settle_epoch = int(np.ceil(res.schedules.settle_step / 4))  # 4 steps per epoch
    assert res.best_epoch == settle_epoch + 1  # first epoch at full beta
    assert len(res.history["val_loss"]) == settle_epoch + 2


@pytest.mark.parametrize("bad", ["cpu:0x", "tpu"])
def test_resolve_device_rejects_unknown(bad):
    with pytest.raises((ValueError, RuntimeError)):
        resolve_device(bad)
