"""The count likelihoods against scipy, dense vs sparse-aware, and numerical stability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from scvae_beta.likelihoods import (
    NegativeBinomialCounts,
    PoissonCounts,
    ZeroInflatedNegativeBinomialCounts,
    count_distribution,
    nb_log_prob,
    nb_log_prob_cells,
    poisson_log_prob,
    poisson_log_prob_cells,
    zinb_log_prob,
    zinb_log_prob_cells,
)


def _random_inputs(seed=0, shape=(50, 30), dtype=torch.float64):
    g = np.random.default_rng(seed)
    mu = g.lognormal(0.0, 2.0, shape)
    theta = g.lognormal(0.0, 1.5, shape[-1])
    x = g.negative_binomial(theta, theta / (theta + mu))
    x[g.random(shape) < 0.5] = 0  # plenty of zeros, as in real data
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    return x, mu, theta, t(x), t(np.log(mu)), t(np.log(theta))


def test_nb_matches_scipy():
    x, mu, theta, xt, lm, lt = _random_inputs()
    ours = nb_log_prob(xt, lm, lt).numpy()
    # scipy: n = theta (successes), p = theta / (theta + mu)
    ref = stats.nbinom.logpmf(x, theta[None, :], theta[None, :] / (theta[None, :] + mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_nb_cells_is_exact_sum_of_dense():
    x, mu, theta, xt, lm, lt = _random_inputs(seed=1)
    dense = nb_log_prob(xt, lm, lt).sum(-1)
    sparse = nb_log_prob_cells(xt, lm, lt)
    assert sparse.shape == (x.shape[0],)
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-9)


def test_nb_cells_per_cell_dispersion_matches_scipy():
    x, mu, theta, xt, lm, _ = _random_inputs(seed=2)
    theta_bg = np.random.default_rng(3).lognormal(0, 1, x.shape)
    ours = nb_log_prob_cells(xt, lm, torch.tensor(np.log(theta_bg))).numpy()
    ref = stats.nbinom.logpmf(x, theta_bg, theta_bg / (theta_bg + mu)).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_nb_cells_gradient_equals_dense_gradient():
    _, _, _, xt, lm, lt = _random_inputs(seed=4)
    grads = []
    for f in (
        lambda a, b: nb_log_prob(xt, a, b).sum(),
        lambda a, b: nb_log_prob_cells(xt, a, b).sum(),
    ):
        a, b = lm.clone().requires_grad_(), lt.clone().requires_grad_()
        f(a, b).backward()
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_zinb_matches_mixture_and_sparse_sum():
    x, mu, theta, xt, lm, lt = _random_inputs(seed=5)
    zl = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pi = torch.sigmoid(zl).numpy()
    nb = stats.nbinom.pmf(x, theta[None, :], theta[None, :] / (theta[None, :] + mu))
    ref = np.log(np.where(x == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    ours = zinb_log_prob(xt, lm, lt, zl).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    torch.testing.assert_close(zinb_log_prob_cells(xt, lm, lt, zl), torch.tensor(ref.sum(-1)))


def test_poisson_matches_scipy_and_sparse_sum():
    x, mu, _, xt, lm, _ = _random_inputs(seed=6)
    ref = stats.poisson.logpmf(x, mu)
    np.testing.assert_allclose(poisson_log_prob(xt, lm).numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(poisson_log_prob_cells(xt, lm), torch.tensor(ref.sum(-1)))


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_extremes_are_finite_in_float32(likelihood):
    # zero counts, huge counts, tiny and huge means, small and large dispersions
    x = torch.tensor([[0.0, 0.0, 1e6, 3.0, 0.0, 5e4], [1.0, 0.0, 0.0, 2e5, 7.0, 0.0]])
    log_mu = torch.tensor(
        [[-40.0, 15.0, 13.8, -30.0, -80.0, 0.0], [-50.0, -1.0, 14.0, 12.0, 2.0, 11]]
    )
    log_theta = torch.tensor([-6.0, 8.0, 0.0, 3.0, -3.0, 10.0], requires_grad=True)
    lm = log_mu.clone().requires_grad_()
    zl = torch.tensor([[-20.0, 5.0, 0.0, 2.0, -3.0, 30.0]] * 2)
    d = count_distribution(likelihood, lm, log_theta, zl)
    lp = d.log_prob(x)
    assert lp.shape == (2,)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(lm.grad).all()
    if likelihood != "poisson":
        assert torch.isfinite(log_theta.grad).all()


def test_float32_agrees_with_float64():
    _, _, _, xt, lm, lt = _random_inputs(seed=7)
    lp64 = nb_log_prob_cells(xt, lm, lt)
    lp32 = nb_log_prob_cells(xt.float(), lm.float(), lt.float())
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-4, atol=1e-2)


def test_distribution_shapes_and_sampling_moments():
    torch.manual_seed(0)
    log_mu = torch.log(torch.tensor([[2.0, 50.0, 0.5]])).expand(20000, 3)
    log_theta = torch.log(torch.tensor([1.0, 10.0, 3.0]))
    d = NegativeBinomialCounts(log_mu, log_theta)
    assert d.batch_shape == (20000,) and d.event_shape == (3,)
    s = d.sample()
    mu, th = torch.tensor([2.0, 50.0, 0.5]), torch.tensor([1.0, 10.0, 3.0])
    torch.testing.assert_close(s.mean(0), mu, rtol=0.05, atol=0.02)
    torch.testing.assert_close(s.var(0), mu + mu**2 / th, rtol=0.1, atol=0.05)
    zi = ZeroInflatedNegativeBinomialCounts(log_mu, log_theta, torch.zeros(3))
    assert abs(float((zi.sample()[:, 1] == 0).float().mean()) - 0.5) < 0.03
    p = PoissonCounts(log_mu)
    torch.testing.assert_close(p.sample().mean(0), mu, rtol=0.05, atol=0.02)


def test_unknown_likelihood_names_choices():
    with pytest.raises(ValueError, match="'nb', 'zinb' or 'poisson'"):
        count_distribution("gaussian", torch.zeros(1, 2))


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_sparse_coo_counts_give_the_dense_result(likelihood):
    x, _, _, xt, lm, lt = _random_inputs(seed=8)
    zl = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dense = count_distribution(likelihood, lm, lt, zl).log_prob(xt)
    sparse = count_distribution(likelihood, lm, lt, zl).log_prob(xt.to_sparse())
    torch.testing.assert_close(sparse, dense)
