"""Several processes (torch.distributed, gloo on CPU): two ranks equal one process that sees
the union of their minibatches; a 2-process torchrun fit writes the usual outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.conftest import simulate_counts

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

N_CELLS, VAL = 240, 24  # 216 training cells: 4 global minibatches of 54 = 2 x 27
_EMPTY = torch.Size()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank: int, world: int, batch_size: int, model: str) -> dict:
    """Train 2 epochs (8 steps) and return the VAE's weights; z without sampling noise and
    no dropout, so that one process and two are the same computation."""

    def loc_only(self, sample_shape=_EMPTY):
        return self.loc.expand(self._extended_shape(sample_shape)) + 0.0 * self.scale

    real_rsample = torch.distributions.Normal.rsample
    torch.distributions.Normal.rsample = loc_only  # restored below (same process in one case)
    try:
        return _train_without_noise(rank, world, batch_size, model)
    finally:
        torch.distributions.Normal.rsample = real_rsample


def _train_without_noise(rank: int, world: int, batch_size: int, model: str) -> dict:
    import pyro
    import scipy.sparse as sp

    from scvae_beta._utils import seeded
    from scvae_beta.data import CountData, Sampler
    from scvae_beta.models import CountVAE, LossModule
    from scvae_beta.objectives import build_objective
    from scvae_beta.settings import Settings
    from scvae_beta.train import train

    torch.set_num_threads(1)
    adata = simulate_counts(n_cells=N_CELLS, n_genes=20)
    settings = Settings(
        model=model,
        n_latent=3,
        n_hidden=8,
        norm="layer",
        dropout=0.0,
        max_epochs=2,
        batch_size=batch_size,
        validation_fraction=VAL / N_CELLS,
        kl_warmup=0,
        early_stopping=False,
        progress=False,
    ).resolve(n_train=N_CELLS - VAL, device="cpu")
    data = CountData(sp.csr_matrix(adata.X))
    sampler = Sampler(N_CELLS, settings.validation_fraction, batch_size, settings.seed)
    sampler.shard(rank, world)
    assert sampler.steps_per_epoch == 4
    pyro.clear_param_store()
    with seeded(0, torch.device("cpu")):
        vae = CountVAE(settings.model_config(20, 0)).register()
        loss = LossModule(vae, build_objective(settings, 3))
        result = train(loss, data, sampler, settings, torch.device("cpu"))
    return {
        "weights": {k: v.detach().clone() for k, v in vae.state_dict().items()},
        "train_loss": torch.as_tensor(result.history["train_loss"]),
    }


def _worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        res = _train(rank, world, batch_size=27, model=model)
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("model", ["beta_vae", "beta_tcvae"])
def test_two_ranks_equal_one_process_on_the_union_of_their_minibatches(tmp_path, model):
    single = _train(0, 1, batch_size=54, model=model)
    out = str(tmp_path / "ddp")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), model, out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    for k, v in single["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][k], ranks[1]["weights"][k], rtol=0, atol=0)
        if model == "beta_vae":  # the estimator of beta-TCVAE is per minibatch: not additive
            torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-4, atol=1e-5)
    if model == "beta_vae":  # the history's sums are all-reduced: the union's loss
        torch.testing.assert_close(ranks[0]["train_loss"], single["train_loss"], rtol=1e-5, atol=0)


def _factor_vae_worker(rank: int, world: int, port: int, out: str) -> None:
    import scvae_beta

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        scvae_beta.fit(simulate_counts(), model="factor_vae", max_epochs=1, progress=False)
    except ValueError as e:
        with open(f"{out}.{rank}", "w") as f:
            f.write(str(e))
    finally:
        dist.destroy_process_group()


def test_factor_vae_under_torch_distributed_is_a_clear_error(tmp_path):
    out = str(tmp_path / "err")
    torch.multiprocessing.spawn(_factor_vae_worker, args=(2, _free_port(), out), nprocs=2)
    for rank in range(2):
        with open(f"{out}.{rank}") as f:
            assert "model='factor_vae' is not supported under torch.distributed" in f.read()


def test_sampler_shards_each_global_minibatch():
    from scvae_beta.data import Sampler

    parts = []
    for rank in range(3):
        s = Sampler(100, 0.0, 10, seed=2)
        s.shard(rank, 3)
        parts.append(list(s.epoch()))
    whole = list(Sampler(100, 0.0, 30, seed=2).epoch())
    assert len(whole) == len(parts[0]) == 4
    for b, union in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[b] for p in parts]), union)
    with pytest.raises(ValueError, match="rank 3"):
        Sampler(100, 0.0, 10, seed=2).shard(3, 3)


@pytest.mark.slow
def test_torchrun_fit_writes_the_outputs_of_a_single_process_fit(tmp_path):
    import anndata as ad
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    adata = simulate_counts(n_cells=600, n_genes=40)
    src = tmp_path / "in.h5ad"
    adata.write_h5ad(src)
    common = ["--max-epochs", "15", "--n-hidden", "32", "--no-progress", "--seed", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "scvae_beta.cli",
            "fit",
            str(src),
            "-o",
            str(tmp_path / "one.h5ad"),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            "-m",
            "scvae_beta.cli",
            "fit",
            str(src),
            "-o",
            str(tmp_path / "two.h5ad"),
            *common,
            "--batch-size",
            "64",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("one", "two"))
    assert set(b.uns["scvae_beta"]) == set(a.uns["scvae_beta"])
    assert b.obsm["X_scvae_beta"].shape == a.obsm["X_scvae_beta"].shape
    assert (tmp_path / "two_model" / "model.json").exists()
    labels = adata.obs["group"].to_numpy()

    def ari(z):
        return adjusted_rand_score(labels, KMeans(3, n_init=10, random_state=0).fit_predict(z))

    ari_one, ari_two = ari(a.obsm["X_scvae_beta"]), ari(b.obsm["X_scvae_beta"])
    assert ari_two >= ari_one - 0.05, (ari_one, ari_two)
