"""Several processes (torch.distributed, gloo on CPU): two ranks equal one process that sees
the union of their minibatches (layer norm or synchronised batch norm); FactorVAE keeps the
same discriminator on every rank; on disk each rank reads only its own chunks and rank 0 alone
validates; a 2-process torchrun fit writes the usual outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from scvae_beta.train.distributed import shutdown
from tests.conftest import simulate_counts

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

N_CELLS, VAL = 240, 24  # 216 training cells: 4 global minibatches of 54 = 2 x 27
_EMPTY = torch.Size()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank: int, world: int, batch_size: int, model: str, norm: str) -> dict:
    """Train 2 epochs (8 steps) and return the VAE's and the objective's weights and the
    history; z without sampling noise and no dropout, so that one process and two are the
    same computation."""

    def loc_only(self, sample_shape=_EMPTY):
        return self.loc.expand(self._extended_shape(sample_shape)) + 0.0 * self.scale

    real_rsample = torch.distributions.Normal.rsample
    torch.distributions.Normal.rsample = loc_only  # restored below (same process in one case)
    try:
        return _train_without_noise(rank, world, batch_size, model, norm)
    finally:
        torch.distributions.Normal.rsample = real_rsample


def _train_without_noise(rank: int, world: int, batch_size: int, model: str, norm: str) -> dict:
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
        norm=norm,
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
        initial = {k: v.detach().clone() for k, v in loss.objective.state_dict().items()}
        result = train(loss, data, sampler, settings, torch.device("cpu"))
    norms = {type(m).__name__ for m in vae.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    return {
        "weights": {k: v.detach().clone() for k, v in vae.state_dict().items()},
        "objective": {k: v.detach().clone() for k, v in loss.objective.state_dict().items()},
        "initial_objective": initial,
        "history": {k: torch.as_tensor(v) for k, v in result.history.items()},
        "norm_types": sorted(norms),
    }


def _worker(rank: int, world: int, port: int, model: str, norm: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    res = _train(rank, world, batch_size=27, model=model, norm=norm)
    torch.save(res, f"{out}.{rank}")
    shutdown()  # a barrier, then destroy: no rank tears down while a peer talks


def _two_ranks(tmp_path, model: str, norm: str) -> list[dict]:
    out = str(tmp_path / "ddp")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), model, norm, out), nprocs=2)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]


def _assert_same_on_both_ranks(ranks: list[dict]) -> None:
    for part in ("weights", "objective", "history"):
        for k, v in ranks[0][part].items():
            if k == "seconds":
                continue
            torch.testing.assert_close(ranks[1][part][k], v, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    "model, norm", [("beta_vae", "layer"), ("beta_vae", "batch"), ("beta_tcvae", "layer")]
)
def test_two_ranks_equal_one_process_on_the_union_of_their_minibatches(tmp_path, model, norm):
    single = _train(0, 1, batch_size=54, model=model, norm=norm)
    ranks = _two_ranks(tmp_path, model, norm)
    _assert_same_on_both_ranks(ranks)
    # Synchronised only while training: plain BatchNorm1d again afterwards.
    assert ranks[0]["norm_types"] == (["BatchNorm1d"] if norm == "batch" else [])
    if model == "beta_vae":  # the estimator of beta-TCVAE is per minibatch: not additive
        noise = _set_by_rounding(single["weights"]) if norm == "batch" else set()
        for k, v in single["weights"].items():  # batch norm: also the running variances
            if k not in noise:
                torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-4, atol=1e-5)
        # The history's sums are all-reduced (the union's loss); rank 0's validation (in
        # eval mode, so with the running means).
        for col, rtol in (("train_loss", 1e-5), ("val_loss", 1e-4 if noise else 1e-5)):
            torch.testing.assert_close(
                ranks[0]["history"][col], single["history"][col], rtol=rtol, atol=0
            )


def _set_by_rounding(weights: dict) -> set[str]:
    """The biases of the linear layers just before a batch norm and the running means.

    Batch norm subtracts the batch mean, so those biases' true gradient is 0: what each
    computation gets is rounding noise (~1e-9), which Adam turns into steps of about ``lr``,
    so their values (and the running means, which follow them) depend on the order of float
    sums, here different with one process and two.
    """
    out = {k for k in weights if k.endswith("running_mean")}
    for k in weights:
        prefix, _, layer = k.removesuffix(".bias").rpartition(".")
        if (
            k.endswith(".bias")
            and layer.isdigit()
            and f"{prefix}.{int(layer) + 1}.running_var" in weights
        ):
            out.add(k)
    return out


def test_factor_vae_keeps_the_same_discriminator_on_every_rank(tmp_path):
    ranks = _two_ranks(tmp_path, "factor_vae", "batch")
    _assert_same_on_both_ranks(ranks)  # VAE, discriminator and history
    history = ranks[0]["history"]
    for col in ("train_loss", "train_tc_disc", "disc_loss", "val_loss", "tc_disc"):
        assert torch.isfinite(history[col]).all(), col
    # The discriminator was trained (its Adam moved every weight).
    for k, v in ranks[0]["initial_objective"].items():
        assert not torch.equal(ranks[0]["objective"][k], v), k


def _on_disk_worker(rank: int, world: int, port: int, path: str, out: str) -> None:
    """Train 2 epochs on a backed h5ad in chunks of 16 rows; record the chunks of the rank's
    minibatches, the chunks it read and its validation passes."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    import scvae_beta.data.backed as backed_mod
    import scvae_beta.train.loop as loop_mod
    from scvae_beta.data import count_data, read_backed, sampler_for
    from scvae_beta.models import CountVAE, LossModule
    from scvae_beta.objectives import build_objective
    from scvae_beta.settings import Settings
    from scvae_beta.train import train

    torch.set_num_threads(1)
    backed_mod.CHUNK_ROWS, backed_mod.BUFFER_CHUNKS, backed_mod.PASS_ROWS = 16, 2, 64
    data, _ = count_data(read_backed(path))
    sampler = sampler_for(data, 0.1, 8, 0)
    sampler.shard(rank, world)
    record = {"reads": set(), "own": [], "validations": 0}
    read_rows, epoch, validation_pass = data.read_rows, sampler.epoch, loop_mod.validation_pass

    def reading(start, stop):
        record["reads"].add(start // 16)
        return read_rows(start, stop)

    def recorded_epoch():
        batches = list(epoch())
        record["own"].append(sorted(set(np.concatenate(batches) // 16)))
        return iter(batches)

    def counted(*args, **kwargs):
        record["validations"] += 1
        return validation_pass(*args, **kwargs)

    data.read_rows, sampler.epoch, loop_mod.validation_pass = reading, recorded_epoch, counted
    data._cache.clear()  # the checking pass read everything
    record["reads"].clear()
    settings = Settings(
        n_latent=2,
        n_hidden=8,
        max_epochs=2,
        batch_size=8,
        validation_fraction=0.1,
        early_stopping=False,
        progress=False,
    ).resolve(n_train=sampler.n_train, device="cpu")
    vae = CountVAE(settings.model_config(data.n_genes, 0)).register()
    result = train(
        LossModule(vae, build_objective(settings, 2)),
        data,
        sampler,
        settings,
        torch.device("cpu"),
    )
    record["reads"] = sorted(record["reads"])
    record["history"] = {k: torch.as_tensor(v) for k, v in result.history.items()}
    record["own_chunks"] = sampler.own_chunks
    torch.save(record, f"{out}.{rank}")
    shutdown()  # a barrier, then destroy: no rank tears down while a peer talks


def test_on_disk_each_rank_reads_its_own_chunks_and_rank_0_validates(tmp_path):
    path = tmp_path / "x.h5ad"
    simulate_counts(n_cells=320, n_genes=20).write_h5ad(path)  # 20 chunks of 16 rows
    out = str(tmp_path / "disk")
    torch.multiprocessing.spawn(_on_disk_worker, args=(2, _free_port(), str(path), out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    assert all(r["own_chunks"] for r in ranks)
    for epoch in range(2):  # each epoch the ranks train on disjoint chunks, together all
        own = [set(r["own"][epoch]) for r in ranks]
        assert not own[0] & own[1] and own[0] | own[1] == set(range(20))
    # Rank 1 runs no validation pass and reads only chunks it trains on; rank 0 validates
    # (the validation cells lie in every chunk).
    assert [r["validations"] for r in ranks] == [2, 0]
    from scvae_beta.data import Sampler

    val_chunks = set(Sampler(320, 0.1, 8, 0).val_idx // 16)
    assert set(ranks[1]["reads"]) == set().union(*map(set, ranks[1]["own"]))
    assert set(ranks[0]["reads"]) == set().union(*map(set, ranks[0]["own"])) | val_chunks
    for k, v in ranks[0]["history"].items():  # rank 0's validation row on every rank
        if k == "seconds":
            continue
        torch.testing.assert_close(ranks[1]["history"][k], v, rtol=0, atol=0, equal_nan=True)


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


def test_shutdown_ends_the_group_after_a_barrier_and_is_a_no_op_outside_one(tmp_path, monkeypatch):
    shutdown()  # no group: nothing to do
    assert not dist.is_initialized()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    calls = []
    real_barrier = dist.barrier
    monkeypatch.setattr(
        dist,
        "barrier",
        lambda *a, **k: calls.append(dist.is_initialized()) or real_barrier(*a, **k),
    )
    try:
        shutdown()
        assert calls == [True]  # the barrier ran while the group was still up
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():  # leave no group behind for the other tests
            dist.destroy_process_group()
