"""beta-TCVAE, FactorVAE and capacity control: the Objective, the training loop and fit()."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pyro
import pytest
import scipy.sparse as sp
import torch

import scvae_beta
from scvae_beta.config import ModelConfig
from scvae_beta.data import CountData
from scvae_beta.models import CountVAE, LossModule
from scvae_beta.objectives import build_objective, kl_decomposition
from scvae_beta.settings import Settings
from scvae_beta.train import Schedules
from tests.conftest import FAST, simulate_counts

N_CELLS = 500


def make_objective(settings: Settings, n_latent: int = 4):
    """The objective of ``settings`` (resolved as fit resolves it)."""
    return build_objective(settings.resolve(n_train=N_CELLS, device="cpu"), n_latent)


def _module_and_batch(model="beta_tcvae", n=64, seed=0):
    adata = simulate_counts(n_cells=n, n_genes=30, seed=seed)
    data = CountData(sp.csr_matrix(adata.X))
    torch.manual_seed(seed)
    module = CountVAE(ModelConfig(n_genes=30, n_latent=4, n_hidden=16))
    objective = make_objective(Settings(model=model))
    module.eval()  # deterministic encoder: only z is random
    mb = data.minibatch(np.arange(n), torch.device("cpu"))
    return module, objective, mb


def _loss(objective, module, mb, seed, **kw):
    torch.manual_seed(seed)
    with pyro.validation_enabled(False):
        return LossModule(module, objective)(mb, N_CELLS, **kw)


def test_tcvae_with_unit_weights_equals_the_vae_loss_in_expectation():
    module, _, mb = _module_and_batch()
    tc = make_objective(Settings(model="beta_tcvae", beta=1.0, alpha=1.0, gamma=1.0))
    vae = make_objective(Settings(model="beta_vae", beta=1.0))
    diffs = []
    with torch.no_grad():
        for s in range(300):
            a, b = _loss(tc, module, mb, s), _loss(vae, module, mb, s)
            # same seed -> same z -> same reconstruction; only KL estimate differs
            torch.testing.assert_close(a.terms.reconstruction, b.terms.reconstruction)
            diffs.append(float(a.loss - b.loss) / N_CELLS)
    diffs = np.asarray(diffs)
    se = diffs.std() / math.sqrt(len(diffs))
    assert abs(diffs.mean()) < 4 * se + 1e-3, (diffs.mean(), se)
    assert diffs.std() > 0  # a Monte Carlo estimate, not the closed form


def test_tcvae_loss_is_reconstruction_plus_weighted_decomposition():
    module, _, mb = _module_and_batch()
    cfg = Settings(model="beta_tcvae", beta=6.0, alpha=0.5, gamma=2.0, tc_estimator="mws")
    out = _loss(make_objective(cfg), module, mb, 1, anneal=1.0)
    t = out.terms
    d = kl_decomposition(t.z, t.loc, t.scale, dataset_size=N_CELLS, estimator="mws")
    expected = t.reconstruction + N_CELLS * (0.5 * d.mi + 6.0 * d.tc + 2.0 * d.dw_kl)
    torch.testing.assert_close(out.loss, expected)
    for k in ("mi", "tc", "dw_kl"):
        torch.testing.assert_close(out.parts[k], getattr(d, k).detach())


def test_annealing_applies_to_the_chosen_terms_only():
    cfg = Settings(model="beta_tcvae", beta=6.0, alpha=1.0, gamma=2.0, kl_anneal_terms=("tc",))
    parts = {k: torch.tensor(v) for k, v in dict(mi=1.0, tc=0.5, dw_kl=0.25).items()}
    pen = make_objective(cfg).penalty(None, parts, anneal=0.1)
    assert float(pen) == pytest.approx(1.0 * 1.0 + 0.1 * 6.0 * 0.5 + 2.0 * 0.25)


def test_capacity_penalties():
    kl = torch.tensor(3.0)
    vae = make_objective(Settings(model="beta_vae", beta=20.0, capacity=(0.0, 25.0)))
    assert float(vae.penalty(kl, {}, capacity=5.0)) == pytest.approx(20.0 * 2.0)
    assert float(vae.penalty(kl, {}, capacity=1.0)) == pytest.approx(20.0 * 2.0)
    parts = {k: torch.tensor(v) for k, v in dict(mi=1.0, tc=0.5, dw_kl=0.25).items()}
    cfg = dict(model="beta_tcvae", beta=6.0, alpha=1.0, gamma=2.0)
    with_c = make_objective(Settings(**cfg, capacity=(0.0, 10.0)))
    without = make_objective(Settings(**cfg))
    # at C = 0 the capacity form is the usual beta-TCVAE loss
    assert float(with_c.penalty(None, parts, capacity=0.0)) == pytest.approx(
        float(without.penalty(None, parts))
    )
    assert float(with_c.penalty(None, parts, capacity=2.0)) == pytest.approx(
        abs(1.75 - 2.0) + 5.0 * 0.5 + 1.0 * 0.25
    )
    fac = make_objective(Settings(model="factor_vae", beta=2.0, gamma=10.0, capacity=(0, 9)))
    assert float(fac.penalty(kl, {"tc_disc": torch.tensor(0.2)}, capacity=4.0)) == pytest.approx(
        2.0 * 1.0 + 10.0 * 0.2
    )


def test_capacity_schedule_is_linear_then_constant():
    cfg = Settings(capacity=(2.0, 12.0), capacity_fraction=0.5)
    sch = Schedules(cfg.resolve(n_train=100, device="cpu"), total_steps=100, steps_per_epoch=10)
    assert sch.capacity_at(0) == 2.0
    assert sch.capacity_at(25) == pytest.approx(7.0)
    assert sch.capacity_at(50) == 12.0 and sch.capacity_at(99) == 12.0
    assert sch.settle_step == 50 and sch.settle_epoch == 5
    assert sch(10) == (1.0, pytest.approx(4.0))  # constant schedule with a capacity
    plain = Schedules(Settings().resolve(n_train=100, device="cpu"), 100, 10)
    assert plain.capacity_at(10) is None


def test_capacity_loss_in_the_objective():
    module, _, mb = _module_and_batch("beta_vae")
    cfg = Settings(model="beta_vae", beta=20.0, capacity=(0.0, 25.0))
    out = _loss(make_objective(cfg), module, mb, 2, capacity=4.0)
    t = out.terms
    kl = module.kl_to_prior(t.loc, t.scale).sum(-1).mean()
    torch.testing.assert_close(out.loss, t.reconstruction + N_CELLS * 20.0 * (kl - 4.0).abs())


def test_factor_vae_discriminator_has_its_own_parameters():
    module, objective, mb = _module_and_batch("factor_vae")
    loss = LossModule(module, objective)
    names = {id(p) for p in loss.vae_parameters()}
    disc = list(objective.discriminator.parameters())
    assert disc and not any(id(p) in names for p in disc)
    assert len(names) + len(disc) == len(list(loss.parameters()))
    out = _loss(objective, module, mb, 3)
    t = out.terms
    kl = module.kl_to_prior(t.loc, t.scale).sum(-1).mean()
    tc = objective.discriminator.tc(t.z)
    torch.testing.assert_close(out.loss, t.reconstruction + N_CELLS * (kl + 10.0 * tc))


# ---------------------------------------------------------------------- fit()


@pytest.mark.parametrize("model", ["beta_vae", "beta_tcvae", "factor_vae"])
def test_fit_writes_the_kl_decomposition_and_per_epoch_terms(toy, tmp_path, model):
    kw = dict(FAST, max_epochs=3)
    scvae_beta.fit(toy, model=model, beta=3.0, **kw)
    u = toy.uns["scvae_beta"]
    dec = u["kl_decomposition"]
    assert dec["estimator"] == "mss" and dec["n_cells"] == toy.n_obs
    for k in ("mi", "tc", "dw_kl"):
        assert np.isfinite(dec[k])
        assert k in u["history"].columns
    # the three terms add up to the (Monte Carlo) KL to the prior: close to the closed form
    assert dec["mi"] + dec["tc"] + dec["dw_kl"] == pytest.approx(u["kl_per_dim"].sum(), abs=0.5)
    assert u["params"]["model"] == model
    if model == "beta_tcvae":
        assert {"train_mi", "train_tc", "train_dw_kl"} <= set(u["history"].columns)
    if model == "factor_vae":
        assert {"tc_disc", "train_tc_disc", "disc_loss"} <= set(u["history"].columns)
        assert u["params"]["gamma"] == 10.0
    path = tmp_path / "a.h5ad"
    toy.write_h5ad(path)
    back = ad.read_h5ad(path).uns["scvae_beta"]
    assert back["kl_decomposition"]["tc"] == pytest.approx(dec["tc"])


def test_fit_factor_vae_trains_the_discriminator_and_saves_it(toy, tmp_path):
    model = scvae_beta.fit(toy, model="factor_vae", gamma=5.0, **FAST)
    h = toy.uns["scvae_beta"]["history"]
    assert np.all(np.isfinite(h["disc_loss"]))
    assert h["disc_loss"].iloc[-1] < math.log(2) + 0.05  # no worse than chance (BCE log 2)
    model.save(tmp_path / "m")
    loaded = scvae_beta.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.get_latent(toy), model.get_latent(toy), atol=1e-6)
    sd = loaded.objective.discriminator.state_dict()
    for k, v in model.objective.discriminator.state_dict().items():
        torch.testing.assert_close(sd[k].cpu(), v.cpu())


def test_fit_capacity_rises_and_defaults_to_a_constant_weight(toy):
    scvae_beta.fit(toy, beta=20.0, capacity=(0.0, 5.0), **dict(FAST, max_epochs=6))
    u = toy.uns["scvae_beta"]
    h = u["history"]
    assert u["params"]["kl_schedule"] == "constant"
    assert u["params"]["capacity"] == [0.0, 5.0]
    assert np.all(h["kl_weight"] == 20.0)
    cap = h["capacity"].to_numpy()
    assert cap[0] < cap[2] and cap[-1] == 5.0 and np.all(np.diff(cap) >= 0)
    # validation loss uses the final capacity
    v = h["val_reconstruction"] + 20.0 * (h["val_kl"] - 5.0).abs()
    np.testing.assert_allclose(h["val_loss"], v, rtol=1e-9)


def test_fit_without_capacity_records_nan_capacity(toy):
    scvae_beta.fit(toy, **FAST)
    assert np.all(np.isnan(toy.uns["scvae_beta"]["history"]["capacity"]))


def test_tcvae_validation_loss_uses_the_target_weights(toy):
    scvae_beta.fit(toy, model="beta_tcvae", beta=6.0, alpha=0.5, gamma=2.0, **FAST)
    h = toy.uns["scvae_beta"]["history"]
    v = h["val_reconstruction"] + 0.5 * h["mi"] + 6.0 * h["tc"] + 2.0 * h["dw_kl"]
    np.testing.assert_allclose(h["val_loss"], v, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="beta_vae", alpha=2.0), "alpha and gamma"),
        (dict(model="beta_vae", gamma=2.0), "alpha and gamma"),
        (dict(model="factor_vae", alpha=2.0), "alpha is a weight"),
        (dict(model="beta_tcvae", gamma=-1.0), "gamma must be"),
        (dict(tc_estimator="exact"), "tc_estimator"),
        (dict(capacity=(5.0, 1.0)), "capacity must be"),
        (dict(capacity=(0.0, 5.0), capacity_fraction=0.0), "capacity_fraction"),
        (dict(model="beta_tcvae", kl_anneal_terms=("kl",)), "anneal_terms"),
    ],
)
def test_bad_objective_arguments_write_nothing(toy, kwargs, match):
    before = set(toy.uns), set(toy.obsm)
    with pytest.raises(ValueError, match=match):
        scvae_beta.fit(toy, **FAST, **kwargs)
    assert (set(toy.uns), set(toy.obsm)) == before


def test_tcvae_fit_is_deterministic(toy):
    a = toy.copy()
    scvae_beta.fit(toy, model="beta_tcvae", beta=4.0, **FAST)
    scvae_beta.fit(a, model="beta_tcvae", beta=4.0, **FAST)
    np.testing.assert_array_equal(toy.obsm["X_scvae_beta"], a.obsm["X_scvae_beta"])
    assert toy.uns["scvae_beta"]["kl_decomposition"] == a.uns["scvae_beta"]["kl_decomposition"]


def test_decompose_cells_averages_seeded_minibatch_estimates():
    from scvae_beta.evaluation import decompose_cells

    rng = np.random.default_rng(0)
    loc = rng.normal(size=(300, 4)).astype(np.float32)
    scale = rng.uniform(0.2, 1.0, size=(300, 4)).astype(np.float32)
    out = decompose_cells(loc, scale, estimator="mws", batch_size=128, seed=5)
    order = np.random.default_rng([5, 3]).permutation(300)
    gen = torch.Generator().manual_seed(5)
    expected = np.zeros(3)
    for idx in (order[:128], order[128:256], order[256:]):
        m, s = torch.from_numpy(loc[idx]), torch.from_numpy(scale[idx])
        z = m + s * torch.randn(m.shape, generator=gen)
        d = kl_decomposition(z, m, s, dataset_size=300, estimator="mws")
        expected += len(idx) * np.array([float(v) for v in d])
    np.testing.assert_allclose([out["mi"], out["tc"], out["dw_kl"]], expected / 300, rtol=1e-6)
