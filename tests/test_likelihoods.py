"""The count likelihoods against scipy, dense vs sparse-aware, and numerical stability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import scvae_beta.likelihoods as lik
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


# --------------------------------------------------------------------------- gradients (issue 9)
# The *_cells functions have hand-written / scatter-free backward passes; their gradients
# must equal those of the dense reference ``*_log_prob(...).sum(-1)``.


def _grad_case(seed, per_cell_theta, integer=True, shape=(40, 25)):
    g = np.random.default_rng(seed)
    mu = g.lognormal(0.5, 1.5, shape)
    theta = g.lognormal(0.0, 1.5, shape if per_cell_theta else shape[-1])
    x = g.negative_binomial(theta, theta / (theta + mu)).astype(float)
    x[g.random(shape) < 0.5] = 0
    # counts above the per-gene tables (TABLE_MAX_COUNT), and at its edges
    x[0, :6] = [lik.TABLE_MAX_COUNT, lik.TABLE_MAX_COUNT + 1, 40, 300, 1e4, 1]
    if not integer:
        x = x * 1.37
    zl = g.normal(0.0, 2.0, shape if per_cell_theta else shape[-1])
    weights = g.uniform(0.5, 2.0, shape[0])  # a cotangent that differs between cells
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return t(x), t(np.log(mu)), t(np.log(theta)), t(zl), t(weights)


def _value_and_grads(likelihood, x, lm, lt, zl, w, cells):
    params = [lm.clone().requires_grad_()]
    if likelihood != "poisson":
        params.append(lt.clone().requires_grad_())
    if likelihood == "zinb":
        params.append(zl.clone().requires_grad_())
    if cells:
        f = {"nb": nb_log_prob_cells, "zinb": zinb_log_prob_cells}.get(
            likelihood, poisson_log_prob_cells
        )
        value = f(x, *params)
    else:
        f = {"nb": nb_log_prob, "zinb": zinb_log_prob}.get(likelihood, poisson_log_prob)
        value = f(x.to_dense() if x.is_sparse else x, *params).sum(-1)
    grads = torch.autograd.grad((value * w).sum(), params)
    return value.detach(), grads


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
@pytest.mark.parametrize("per_cell_theta", [False, True], ids=["theta_gene", "theta_cell_gene"])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("integer", [True, False], ids=["int", "nonint"])
def test_cells_gradients_equal_dense_reference(likelihood, per_cell_theta, layout, integer):
    x, lm, lt, zl, w = _grad_case(10, per_cell_theta, integer)
    if layout == "sparse":
        x = x.to_sparse()
    v_ref, g_ref = _value_and_grads(likelihood, x, lm, lt, zl, w, cells=False)
    v, grads = _value_and_grads(likelihood, x, lm, lt, zl, w, cells=True)
    torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-9)
    for a, b in zip(grads, g_ref, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
@pytest.mark.parametrize("per_cell_theta", [False, True], ids=["theta_gene", "theta_cell_gene"])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_cells_gradcheck_float64(likelihood, per_cell_theta, layout):
    g = torch.Generator().manual_seed(3)
    x = torch.tensor(
        [[0.0, 3, 0, 1, 20], [2, 0, 0, 0, 0], [0, 0, 1, 7, 0], [5, 1, 0, 0, 2]],
        dtype=torch.float64,
    )
    theta_shape = x.shape if per_cell_theta else x.shape[1:]
    lm = torch.randn(x.shape, generator=g, dtype=torch.float64).requires_grad_()
    lt = torch.randn(theta_shape, generator=g, dtype=torch.float64).requires_grad_()
    zl = torch.randn(theta_shape, generator=g, dtype=torch.float64).requires_grad_()
    xx = x.to_sparse() if layout == "sparse" else x
    w = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64)
    if likelihood == "nb":
        fn, inputs = (lambda a, b: nb_log_prob_cells(xx, a, b) * w), (lm, lt)
    elif likelihood == "zinb":
        fn, inputs = (lambda a, b, c: zinb_log_prob_cells(xx, a, b, c) * w), (lm, lt, zl)
    else:
        fn, inputs = (lambda a: poisson_log_prob_cells(xx, a) * w), (lm,)
    assert torch.autograd.gradcheck(fn, inputs)


def test_nb_cells_gradient_wrt_one_input_only():
    x, lm, lt, _, w = _grad_case(11, False)
    for which in (0, 1):
        a = lm.clone().requires_grad_(which == 0)
        b = lt.clone().requires_grad_(which == 1)
        (grad,) = torch.autograd.grad(
            (nb_log_prob_cells(x.to_sparse(), a, b) * w).sum(), [a, b][which]
        )
        a2, b2 = lm.clone().requires_grad_(), lt.clone().requires_grad_()
        ref = torch.autograd.grad((nb_log_prob(x, a2, b2).sum(-1) * w).sum(), [a2, b2][which])[0]
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-10)


def test_sparse_explicit_zeros_are_harmless_for_nb_and_poisson():
    x, lm, lt, _, w = _grad_case(12, False)
    x[1] = 0.0
    listed = x != 0
    listed[:3] = True  # rows 0-2 list every entry, zeros included (row 1 only zeros)
    ind = listed.nonzero().T
    sparse = torch.sparse_coo_tensor(ind, x[ind[0], ind[1]], x.shape, check_invariants=True)
    sparse = sparse.coalesce()
    assert (sparse._values() == 0).sum() > x.shape[1]
    for likelihood in ("nb", "poisson"):
        v_ref, g_ref = _value_and_grads(likelihood, x, lm, lt, None, w, cells=False)
        v, grads = _value_and_grads(likelihood, sparse, lm, lt, None, w, cells=True)
        torch.testing.assert_close(v, v_ref)
        for a, b in zip(grads, g_ref, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rising_tables_equal_lgamma_and_digamma(dtype):
    theta64 = torch.logspace(-4, 5, 60, dtype=torch.float64)
    counts = torch.arange(1, lik.TABLE_MAX_COUNT + 1, dtype=torch.float64).unsqueeze(1)
    lg = torch.lgamma(counts + theta64) - torch.lgamma(theta64) - torch.lgamma(counts + 1)
    dg = theta64 * (torch.digamma(counts + theta64) - torch.digamma(theta64))
    lg_tab = lik._rising_tables(theta64.to(dtype), True).double()
    dg_tab = lik._rising_tables(theta64.to(dtype), False).double()
    tol = dict(rtol=1e-11, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-5)
    torch.testing.assert_close(lg_tab, lg, **tol)
    torch.testing.assert_close(dg_tab, dg, **tol)


def test_large_sparse_batch_float32_gradients_close_to_float64():
    # big enough for multi-threaded kernels; compares the hand-written backward in float32
    g = np.random.default_rng(13)
    shape = (300, 400)
    mu = g.lognormal(0.0, 1.5, shape)
    theta = g.lognormal(0.0, 1.0, shape[1])
    x = g.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    xs = torch.tensor(x).to_sparse()
    grads = {}
    for dtype in (torch.float32, torch.float64):
        a = torch.tensor(np.log(mu), dtype=dtype, requires_grad=True)
        b = torch.tensor(np.log(theta), dtype=dtype, requires_grad=True)
        nb_log_prob_cells(xs.to(dtype), a, b).sum().backward()
        grads[dtype] = (a.grad.double(), b.grad.double())
    torch.testing.assert_close(
        grads[torch.float32][0], grads[torch.float64][0], rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        grads[torch.float32][1], grads[torch.float64][1], rtol=1e-4, atol=1e-2
    )


# -- bfloat16 (mixed precision): the *_cells likelihoods evaluate in float32 -----------------


def _bf16_case(seed=0, n_cells=64, n_genes=3000):
    """Deep cells (library ~50,000, counts up to thousands) over many genes: a per-cell sum
    of 3,000 terms of size ~1e2, which bfloat16 (8-bit mantissa) cannot hold accurately."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_cells, n_genes, generator=gen)
    log_mu = torch.log_softmax(logits, -1) + np.log(5e4)
    log_theta = torch.randn(n_genes, generator=gen) * 0.5
    theta = log_theta.exp()
    lam = torch.distributions.Gamma(theta, theta / log_mu.exp()).sample()
    x = torch.poisson(lam)
    return x.to_sparse_coo().coalesce(), log_mu, log_theta


@pytest.mark.parametrize("name", ["nb", "zinb", "poisson"])
def test_cells_likelihoods_in_bfloat16_stay_finite_and_float32(name):
    x, log_mu, log_theta = _bf16_case()
    zi = torch.full_like(log_mu, -2.0)
    fns = {
        "nb": lambda m, t, z: nb_log_prob_cells(x, m, t),
        "zinb": lambda m, t, z: zinb_log_prob_cells(x, m, t, z),
        "poisson": lambda m, t, z: poisson_log_prob_cells(x, m),
    }
    fn = fns[name]
    args_bf16 = [t.bfloat16().requires_grad_() for t in (log_mu, log_theta, zi)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*args_bf16)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # Exactly the float32 evaluation of the (bf16-rounded) inputs: nothing ran in bf16.
    ref = fn(*[t.detach().float() for t in args_bf16])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.sum().backward()
    used = args_bf16[:1] if name == "poisson" else args_bf16[: 2 + (name == "zinb")]
    for t in used:
        assert t.grad is not None and t.grad.dtype == torch.bfloat16
        assert torch.isfinite(t.grad.float()).all()
    # Whereas summing the same per-gene terms in bfloat16 loses the cell totals (~1e5 nats).
    if name == "nb":
        terms = lik.nb_log_prob(x.to_dense(), log_mu, log_theta)
        naive = terms.bfloat16().sum(-1, dtype=torch.bfloat16).float()
        assert (naive - ref).abs().max() > 10 * (terms.sum(-1) - ref).abs().max()
