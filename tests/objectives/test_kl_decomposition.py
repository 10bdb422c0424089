"""KL decomposition estimators (MSS, MWS) and the FactorVAE discriminator."""

from __future__ import annotations

import math

import pytest
import torch

from scvae_beta.objectives import (
    TCDiscriminator,
    aggregate_log_densities,
    kl_decomposition,
    log_density_matrix,
    log_importance_weights,
    permute_dims,
)


def _posterior(n: int, d: int, seed: int = 0, dtype=torch.float64):
    """Overlapping Gaussian posteriors whose means share a factor (so TC > 0)."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 1, generator=g, dtype=dtype)
    w = torch.linspace(1.0, 0.0, d, dtype=dtype)
    loc = shared * w + 0.6 * torch.randn(n, d, generator=g, dtype=dtype)
    scale = 0.3 + 0.5 * torch.rand(n, d, generator=g, dtype=dtype)
    return loc, scale


def _sample(loc, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return loc + scale * torch.randn(loc.shape, generator=g, dtype=loc.dtype)


def _exact_by_brute_force(loc, scale, k=4000, seed=1):
    """MI, TC, dw-KL of the mixture q(z) = mean_n q(z|n) by plain Monte Carlo (+ std errors)."""
    n, d = loc.shape
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, k, d, generator=g, dtype=loc.dtype)
    z = (loc[:, None] + scale[:, None] * eps).reshape(-1, d)
    comp = torch.distributions.Normal(loc[None], scale[None])
    lp = comp.log_prob(z[:, None, :])  # (n*k, n, d)
    own = torch.arange(n).repeat_interleave(k)
    log_q_cond = lp[torch.arange(n * k), own].sum(-1)
    log_q = torch.logsumexp(lp.sum(-1), 1) - math.log(n)
    log_q_dims = (torch.logsumexp(lp, 1) - math.log(n)).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    parts = [log_q_cond - log_q, log_q - log_q_dims, log_q_dims - log_p]
    return [(float(p.mean()), float(p.std() / math.sqrt(p.numel()))) for p in parts]


def test_log_density_matrix_matches_torch_normal():
    loc, scale = _posterior(7, 3)
    z = _sample(loc, scale, 2)
    ref = torch.distributions.Normal(loc[None], scale[None]).log_prob(z[:, None, :])
    torch.testing.assert_close(log_density_matrix(z, loc, scale), ref)


def test_mss_weights_follow_the_paper_not_the_column_zero_bug():
    n, m = 1000, 6
    w = log_importance_weights(m, n, "mss", dtype=torch.float64).exp()
    torch.testing.assert_close(w.sum(1), torch.ones(m, dtype=torch.float64))
    # each sample's own component has weight 1/N (the diagonal, not column 0)
    torch.testing.assert_close(w.diagonal(), torch.full((m,), 1 / n, dtype=torch.float64))
    assert w[1:, 0].max() > 1 / n * 10
    strat = (n - m + 1) / (n * (m - 1))
    for i in range(m):
        row = w[i].tolist()
        assert row[(i + 1) % m] == pytest.approx(strat)
        others = [row[j] for j in range(m) if j not in (i, (i + 1) % m)]
        assert others == pytest.approx([1 / (m - 1)] * (m - 2))


def test_mws_weights():
    w = log_importance_weights(5, 100, "mws", dtype=torch.float64)
    torch.testing.assert_close(w, torch.full((5, 5), -math.log(500), dtype=torch.float64))


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_terms_sum_to_the_monte_carlo_kl_on_the_same_samples(estimator):
    loc, scale = _posterior(32, 4)
    z = _sample(loc, scale, 3)
    parts = kl_decomposition(z, loc, scale, dataset_size=500, estimator=estimator)
    q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(parts.mi + parts.tc + parts.dw_kl, (q - p).mean())


@pytest.mark.parametrize("n_data", [64, 10_000])
def test_same_factorised_posterior_for_every_cell_gives_zero_tc_and_mi_under_mss(n_data):
    m, d = 64, 5
    loc = torch.full((m, d), 0.4, dtype=torch.float64) * torch.arange(d)
    scale = torch.full((m, d), 0.7, dtype=torch.float64)
    z = _sample(loc, scale, 4)
    parts = kl_decomposition(z, loc, scale, dataset_size=n_data, estimator="mss")
    assert float(parts.tc) == pytest.approx(0.0, abs=1e-10)
    assert float(parts.mi) == pytest.approx(0.0, abs=1e-10)
    # dw-KL is then the KL of the one posterior to the prior, estimated on these samples
    q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(parts.dw_kl, (q - p).mean())


def test_mws_has_its_exact_log_m_biases_when_the_batch_is_the_data():
    """At N = M, MWS underestimates every log density by exactly log M."""
    m, d = 24, 4
    loc, scale = _posterior(m, d, seed=5)
    z = _sample(loc, scale, 6)
    mws = kl_decomposition(z, loc, scale, dataset_size=m, estimator="mws")
    lp = log_density_matrix(z, loc, scale)
    exact_q = torch.logsumexp(lp.sum(-1), 1) - math.log(m)
    exact_dims = (torch.logsumexp(lp, 1) - math.log(m)).sum(-1)
    exact_tc = (exact_q - exact_dims).mean()
    torch.testing.assert_close(mws.tc, exact_tc + (d - 1) * math.log(m))


def test_mss_matches_brute_force_when_the_batch_is_the_data_and_mws_is_biased():
    """N = M: the aggregate posterior is exactly the batch mixture.

    Averaged over many draws of epsilon, MSS agrees with a brute-force Monte Carlo of the exact
    MI, TC and dw-KL. The paper's MSS weights at N = M are 1/N (own), 1/(M-1) (M-2 others)
    and 1/(N(M-1)) (one), not exactly uniform, so the agreement is up to O(1/M) as well as the
    Monte Carlo error; MWS is off by about (D-1) log M on TC.
    """
    m, d, draws = 48, 3, 1500
    loc, scale = _posterior(m, d, seed=7)
    exact = _exact_by_brute_force(loc, scale)
    g = torch.Generator().manual_seed(8)
    eps = torch.randn(draws, m, d, generator=g, dtype=torch.float64)
    for estimator in ("mss", "mws"):
        vals = torch.stack(
            [
                torch.stack(
                    kl_decomposition(
                        loc + scale * e, loc, scale, dataset_size=m, estimator=estimator
                    )
                )
                for e in eps
            ]
        )
        mean, se = vals.mean(0), vals.std(0) / math.sqrt(draws)
        for k, (ex, ex_se) in enumerate(exact):
            tol = 4 * math.hypot(float(se[k]), ex_se) + 1.0 / m
            if estimator == "mss":
                assert abs(float(mean[k]) - ex) < tol, (k, float(mean[k]), ex, tol)
        if estimator == "mws":
            bias = float(mean[1]) - exact[1][0]
            assert bias == pytest.approx((d - 1) * math.log(m), abs=0.05)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_float32_and_float64_agree(estimator):
    loc, scale = _posterior(40, 6, seed=9)
    z = _sample(loc, scale, 10)
    p64 = kl_decomposition(z, loc, scale, dataset_size=2000, estimator=estimator)
    p32 = kl_decomposition(
        z.float(), loc.float(), scale.float(), dataset_size=2000, estimator=estimator
    )
    for a, b in zip(p32, p64, strict=True):
        assert a.dtype == torch.float32
        assert float(a) == pytest.approx(float(b), abs=2e-4)


def test_gradients_are_finite_and_match_finite_differences():
    loc, scale = _posterior(6, 2, seed=11)
    z = _sample(loc, scale, 12)
    inputs = [t.clone().requires_grad_() for t in (z, loc, scale)]

    def f(z_, loc_, scale_):
        p = kl_decomposition(z_, loc_, scale_, dataset_size=50)
        return 0.3 * p.mi + 1.7 * p.tc + 0.9 * p.dw_kl

    assert torch.autograd.gradcheck(f, inputs)


def test_aggregate_log_densities_shapes_and_conditional():
    loc, scale = _posterior(10, 3)
    z = _sample(loc, scale, 0)
    joint, dims, cond = aggregate_log_densities(z, loc, scale, dataset_size=10)
    assert joint.shape == (10,) and dims.shape == (10, 3) and cond.shape == (10,)
    torch.testing.assert_close(cond, torch.distributions.Normal(loc, scale).log_prob(z).sum(-1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dataset_size=5), "smaller than the minibatch"),
        (dict(dataset_size=100, estimator="xyz"), "not supported"),
    ],
)
def test_bad_arguments(kwargs, match):
    loc, scale = _posterior(10, 3)
    with pytest.raises(ValueError, match=match):
        kl_decomposition(loc, loc, scale, **kwargs)


def test_shapes_and_tiny_batches_are_rejected():
    loc, scale = _posterior(10, 3)
    with pytest.raises(ValueError, match="shape"):
        kl_decomposition(loc[:, :2], loc, scale, dataset_size=10)
    with pytest.raises(ValueError, match="at least 2"):
        kl_decomposition(loc[:1], loc[:1], scale[:1], dataset_size=10)


# ---------------------------------------------------------------------- discriminator


def test_permute_dims_permutes_each_column_independently():
    z = torch.arange(40.0).reshape(20, 2) * torch.tensor([1.0, 100.0])
    out = permute_dims(z, torch.Generator().manual_seed(0))
    for d in range(2):
        assert sorted(out[:, d].tolist()) == sorted(z[:, d].tolist())
    assert not torch.equal(out, z)
    rows_kept = (out[:, 1] / 100 == out[:, 0]).float().mean()
    assert rows_kept < 0.5


def _train_discriminator(sample, steps=400, seed=0):
    torch.manual_seed(seed)
    disc = TCDiscriminator(sample.shape[1], n_hidden=64, n_layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, sample.shape[0], (256,), generator=g)
        z = sample[idx]
        loss = disc.loss(z, permute_dims(z, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(disc.tc(sample))


def test_discriminator_tc_is_near_zero_for_independent_latents_and_positive_for_correlated():
    g = torch.Generator().manual_seed(1)
    n = 8000
    independent = torch.randn(n, 2, generator=g)
    rho = 0.9
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    correlated = torch.stack([a, rho * a + math.sqrt(1 - rho**2) * b], 1)
    true_tc = -0.5 * math.log(1 - rho**2)  # 0.83 nats for a bivariate Gaussian
    tc_ind = _train_discriminator(independent)
    tc_cor = _train_discriminator(correlated)
    assert abs(tc_ind) < 0.1
    assert tc_cor > 0.5
    assert tc_cor == pytest.approx(true_tc, abs=0.3)


# ---------------------------------------------------------------------- fused kernel, blocks


def test_fused_mixture_densities_match_plain_autograd_values_and_gradients():
    from scvae_beta.objectives._mixture import (
        mixture_log_densities,
        mixture_log_densities_reference,
    )

    loc, scale = _posterior(9, 3, seed=13)
    z = _sample(loc, scale, 14)
    log_w = log_importance_weights(9, 100, "mss", dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (z, loc, scale)]
    fused = mixture_log_densities(*inputs, log_w)
    ref = mixture_log_densities_reference(*inputs, log_w)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in ref]

    def grads(outs):
        total = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
        return torch.autograd.grad(total, inputs, retain_graph=True)

    for a, b in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads(fused), grads(ref), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda *x: mixture_log_densities(*x, log_w), inputs)


def test_blocks_average_the_estimates_of_each_block():
    loc, scale = _posterior(10, 3, seed=15)
    z = _sample(loc, scale, 16)
    whole = kl_decomposition(z, loc, scale, dataset_size=1000, block_size=None)
    same = kl_decomposition(z, loc, scale, dataset_size=1000, block_size=10)
    for a, b in zip(whole, same, strict=True):
        torch.testing.assert_close(a, b)
    blocks = kl_decomposition(z, loc, scale, dataset_size=1000, block_size=4)  # 4 + 3 + 3
    pieces = [
        kl_decomposition(z[s], loc[s], scale[s], dataset_size=1000)
        for s in (slice(0, 4), slice(4, 7), slice(7, 10))
    ]
    for k in range(3):
        expected = (4 * pieces[0][k] + 3 * pieces[1][k] + 3 * pieces[2][k]) / 10
        torch.testing.assert_close(blocks[k], expected)
    assert not torch.allclose(blocks.tc, whole.tc)
