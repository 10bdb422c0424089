"""Checkpoint and resume: an interrupted and resumed fit equals an uninterrupted one bit for
bit (one thread, CPU); writes are atomic; corrupt or foreign checkpoints give clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import scvae_beta
import scvae_beta.train.checkpoint as ckpt_mod
import scvae_beta.train.loop as loop_mod
from scvae_beta.data import Sampler
from scvae_beta.train.checkpoint import FILENAME, CheckpointError
from scvae_beta.train.early_stopping import EarlyStopping
from tests.conftest import simulate_counts

BASE = dict(max_epochs=6, n_hidden=16, n_latent=3, batch_size=64, progress=False)


class Preempted(Exception):
    """Stands in for a job killed in the middle of an epoch."""


def _interrupt_at_validation(monkeypatch, n_calls: int) -> None:
    """Make the ``n_calls``-th per-epoch validation pass raise (mid-epoch, after training)."""
    real = loop_mod.validation_pass
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n_calls:
            raise Preempted
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "validation_pass", flaky)


def _history(adata):
    return adata.uns["scvae_beta"]["history"].drop(columns="seconds")


CASES = {
    "beta_vae": dict(model="beta_vae", beta=2.0),
    "factor_vae": dict(model="factor_vae"),  # the discriminator's Adam and generator
    "beta_tcvae_no_split": dict(
        model="beta_tcvae", capacity=(0.0, 5.0), validation_fraction=0.0
    ),  # capacity schedule; probe cells drawn from the sampler's stream
    "early_stopping": dict(max_epochs=10, patience=1, kl_warmup=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_and_resumed_fit_equals_uninterrupted(case, tmp_path, monkeypatch):
    kw = {**BASE, **CASES[case]}
    whole = simulate_counts()
    scvae_beta.fit(whole, **kw)

    ckpt = tmp_path / "ckpt"
    first = simulate_counts()
    _interrupt_at_validation(monkeypatch, 4)  # epoch 4 fails; last checkpoint after epoch 2
    with pytest.raises(Preempted):
        scvae_beta.fit(first, checkpoint_dir=ckpt, checkpoint_every=2, **kw)
    assert "X_scvae_beta" not in first.obsm
    saved = torch.load(ckpt / FILENAME, weights_only=True)
    assert saved["loop"]["epochs_done"] == 2
    monkeypatch.undo()

    resumed = simulate_counts()
    scvae_beta.fit(resumed, checkpoint_dir=ckpt, checkpoint_every=2, resume=True, **kw)
    np.testing.assert_array_equal(resumed.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"])
    a, b = resumed.uns["scvae_beta"], whole.uns["scvae_beta"]
    assert a["training"]["epochs_trained"] == b["training"]["epochs_trained"]
    assert a["training"]["best_epoch"] == b["training"]["best_epoch"]
    assert a["elbo"] == b["elbo"]
    assert a["kl_decomposition"] == b["kl_decomposition"]
    np.testing.assert_array_equal(_history(resumed).to_numpy(), _history(whole).to_numpy())
    # The last checkpoint is the end of training; resuming it only redoes the outputs.
    again = simulate_counts()
    scvae_beta.fit(again, checkpoint_dir=ckpt, resume=True, **kw)
    np.testing.assert_array_equal(again.obsm["X_scvae_beta"], whole.obsm["X_scvae_beta"])


def test_checkpoint_holds_the_loop_state(tmp_path):
    scvae_beta.fit(simulate_counts(), model="factor_vae", checkpoint_dir=tmp_path, **BASE)
    state = torch.load(tmp_path / FILENAME, weights_only=True)
    assert state["loop"]["epochs_done"] == 6 and state["loop"]["step"] == 6 * 4
    assert "discriminator" in state["auxiliary"]
    assert any(k.startswith("objective.discriminator") for k in state["weights"])
    assert set(state["early_stopping"]) == {"best", "best_epoch", "best_state", "wait"}
    assert state["history"]["kl_per_dim"].shape == (6, 3)
    assert set(state["rng"]) == {"sampler", "torch", "aux"}
    assert state["data"]["n_cells"] == 240 and state["data"]["n_genes"] == 40
    assert state["settings"]["model"] == "factor_vae"
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]  # no temporary files left


def test_write_is_atomic(tmp_path, monkeypatch):
    real = torch.save
    calls = {"n": 0}

    def dies_mid_write(obj, f):
        calls["n"] += 1
        if calls["n"] == 3:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise Preempted
        return real(obj, f)

    monkeypatch.setattr(ckpt_mod.torch, "save", dies_mid_write)
    with pytest.raises(Preempted):
        scvae_beta.fit(simulate_counts(), checkpoint_dir=tmp_path, **BASE)
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    assert torch.load(tmp_path / FILENAME, weights_only=True)["loop"]["epochs_done"] == 2


@pytest.fixture
def written(tmp_path):
    scvae_beta.fit(simulate_counts(), checkpoint_dir=tmp_path, **BASE)
    return tmp_path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_checkpoint"])
def test_corrupt_checkpoint_is_a_clear_error(written, damage):
    path = written / FILENAME
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    else:
        torch.save({"weights": {}}, path)
    adata = simulate_counts()
    with pytest.raises(CheckpointError, match="cannot be resumed.*Delete it"):
        scvae_beta.fit(adata, checkpoint_dir=written, resume=True, **BASE)
    assert "X_scvae_beta" not in adata.obsm and "scvae_beta" not in adata.uns


def test_checkpoint_of_another_fit_is_refused(written):
    with pytest.raises(ValueError, match=r"different fit \(settings beta: 1.0 in the checkpoint"):
        scvae_beta.fit(simulate_counts(), checkpoint_dir=written, resume=True, **BASE, beta=3.0)
    with pytest.raises(ValueError, match="data library"):
        scvae_beta.fit(simulate_counts(seed=5), checkpoint_dir=written, resume=True, **BASE)
    with pytest.raises(ValueError, match="data n_cells: 240 in the checkpoint, 200 now"):
        scvae_beta.fit(simulate_counts(n_cells=200), checkpoint_dir=written, resume=True, **BASE)
    # Settings that do not change what is trained may differ.
    adata = simulate_counts()
    scvae_beta.fit(adata, checkpoint_dir=written, resume=True, **{**BASE, "progress": True})
    assert adata.uns["scvae_beta"]["training"]["epochs_trained"] == 6


def test_existing_checkpoint_needs_resume(written):
    with pytest.raises(FileExistsError, match="pass resume=True"):
        scvae_beta.fit(simulate_counts(), checkpoint_dir=written, **BASE)


def test_resume_without_checkpoint_starts_over(tmp_path):
    a, b = simulate_counts(), simulate_counts()
    scvae_beta.fit(a, **BASE)
    scvae_beta.fit(b, checkpoint_dir=tmp_path / "new", resume=True, **BASE)
    np.testing.assert_array_equal(a.obsm["X_scvae_beta"], b.obsm["X_scvae_beta"])
    assert (tmp_path / "new" / FILENAME).exists()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(resume=True), "resume=True needs checkpoint_dir"),
        (dict(checkpoint_every=2), "checkpoint_every needs checkpoint_dir"),
        (dict(checkpoint_dir="d", checkpoint_every=0), "checkpoint_every must be"),
        (dict(checkpoint_dir=3), "checkpoint_dir must be a folder path"),
        (dict(checkpoint_dir="d", resume="yes"), "resume must be True or False"),
    ],
)
def test_checkpoint_settings_are_checked(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        scvae_beta.fit(simulate_counts(), **BASE, **kw)


def test_early_stopping_and_sampler_state_round_trip():
    module = torch.nn.Linear(2, 1)
    stop = EarlyStopping(patience=3)
    stop.step(0, 2.0, module)
    stop.step(1, 3.0, module)
    other = EarlyStopping(patience=3)
    other.load_state_dict(stop.state_dict())
    assert (other.best, other.best_epoch, other.wait) == (2.0, 0, 1)
    torch.testing.assert_close(other.best_state, stop.best_state)

    s1 = Sampler(100, 0.1, 16, seed=3)
    next(iter(s1.epoch()))
    s2 = Sampler(100, 0.1, 16, seed=3)
    s2.load_state_dict(s1.state_dict())
    for a, b in zip(s1.epoch(), s2.epoch(), strict=True):
        np.testing.assert_array_equal(a, b)
