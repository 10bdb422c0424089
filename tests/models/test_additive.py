"""The additive decoder: shapes, the batched computation against a per-dimension loop,
gradients, weight surgery for pruning, and fits with every model (save/load included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scvae_beta
from scvae_beta.config import ModelConfig
from scvae_beta.models import DECODERS, CountVAE
from scvae_beta.nn import (
    AdditiveDecoder,
    CountDecoder,
    FastAdditiveDecoder,
    GaussianEncoder,
    GlobalAdditiveDecoder,
)
from tests.conftest import FAST

CLASSES = [AdditiveDecoder, FastAdditiveDecoder, GlobalAdditiveDecoder]


def _z(n=11, d=5, seed=0, dtype=torch.float32):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _onehot(n=11, c=3, seed=1):
    b = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(b, c).float()


def _trained_norms(dec: AdditiveDecoder, d=5) -> None:
    """Move BatchNorm statistics and affine parameters away from their initial values."""
    with torch.no_grad():
        for bn in (dec.norm1, dec.norm2):
            if bn is not None:
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.normal_(1.0, 0.2)
                bn.bias.normal_(0.0, 0.2)


def _combine(programs, n_global: int):
    """The logits of log-space programs ``(B, D, G)`` whose last ``n_global`` are global:
    ``logsumexp`` over the others plus the sum of the global ones."""
    n_or = programs.shape[1] - n_global
    out = programs[:, n_or:].sum(1)
    return out + torch.logsumexp(programs[:, :n_or], 1) if n_or else out


def _loop_reference(dec: AdditiveDecoder, z):
    """Each dimension's network evaluated on its own, in a Python loop: its log contribution
    ``(B, D, G)``, and the combined logits without covariates ``(B, G)``."""
    h = dec.n_hidden
    expression = dec.output_space == "expression"
    out = []
    for d in range(dec.n_latent):
        a = z[:, d : d + 1] @ dec.w1[d : d + 1] + dec.b1[d]  # (B, h)
        for i, (w, b) in enumerate(((None, None), (dec.w2[d], dec.b2[d, 0]))):
            if w is not None:
                a = a @ w + b
            bn = (dec.norm1, dec.norm2)[i]
            if bn is not None:
                sl = slice(d * h, (d + 1) * h)
                a = (a - bn.running_mean[sl]) / torch.sqrt(bn.running_var[sl] + bn.eps)
                a = a * bn.weight[sl] + bn.bias[sl]
            elif dec.norm == "layer":
                a = F.layer_norm(a, (h,))
            a = F.softplus(a) if (i == 1 and expression) else torch.relu(a)
        if expression:
            out.append(torch.log(a @ torch.exp(dec.w3[d])))
        else:
            out.append(a @ dec.w3[d] + dec.b3[d, 0])
    programs = torch.stack(out, 1)
    if expression:  # the background is one more term of the sum in expression space
        terms = torch.cat([programs, dec.background.expand(len(z), 1, -1)], 1)
        return programs, torch.logsumexp(terms, 1)
    return programs, _combine(programs, dec.n_global)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("n_cov", [0, 3])
@pytest.mark.parametrize("zero_inflated", [False, True])
def test_shapes(cls, norm, n_cov, zero_inflated):
    dec = cls(5, 17, n_covariates=n_cov, n_hidden=6, norm=norm, zero_inflated=zero_inflated)
    cov = _onehot() if n_cov else None
    logits, zi = dec(_z(), cov)
    assert logits.shape == (11, 17)
    assert (zi is None) != zero_inflated and (zi is None or zi.shape == (11, 17))
    assert dec.programs(_z()).shape == (11, 5, 17)
    assert dec.gene_program(2, torch.linspace(-1, 1, 4)).shape == (4, 17)


def test_gene_program_takes_numpy_and_refuses_fractional_dimensions():
    dec = AdditiveDecoder(5, 17, n_hidden=6).eval()
    values = np.linspace(-1, 1, 4)
    expected = dec.gene_program(2, torch.as_tensor(values, dtype=torch.float32))
    # NumPy values (float64) and a NumPy integer dimension give the same program
    torch.testing.assert_close(dec.gene_program(np.int64(2), values), expected)
    torch.testing.assert_close(dec.gene_program(2, list(values)), expected)
    # a reversed view (negative strides) used to raise torch's "stride ... is negative"
    torch.testing.assert_close(
        dec.gene_program(2, values.astype(np.float32)[::-1]), expected.flip(0)
    )
    # a fractional dimension used to be truncated silently (1.7 -> dimension 1)
    with pytest.raises(TypeError, match="d must be an integer"):
        dec.gene_program(1.7, values)
    with pytest.raises(TypeError, match="d must be an integer"):
        dec.gene_program(True, values)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_batched_equals_a_loop_over_dimensions(cls, norm):
    torch.manual_seed(0)
    dec = cls(5, 17, n_covariates=3, n_hidden=6, norm=norm).eval()
    _trained_norms(dec)
    if cls is FastAdditiveDecoder:
        with torch.no_grad():
            dec.background.normal_()
    z, cov = _z(), _onehot()
    with torch.no_grad():
        ref, combined = _loop_reference(dec, z)
        torch.testing.assert_close(dec.programs(z), ref, rtol=1e-5, atol=1e-5)
        logits, _ = dec(z, cov)
        expected = combined + cov @ dec.covariates.weight.T
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        # each dimension's program depends on its own coordinate only
        for d in range(5):
            torch.testing.assert_close(
                dec.gene_program(d, z[:, d]), ref[:, d], rtol=1e-5, atol=1e-5
            )
        z2 = z.clone()
        z2[:, 3] += 1.0
        torch.testing.assert_close(dec.programs(z2)[:, [0, 1, 2, 4]], ref[:, [0, 1, 2, 4]])


@pytest.mark.parametrize("cls", CLASSES)
def test_gradients_match_finite_differences_and_reach_every_parameter(cls):
    torch.manual_seed(0)
    dec = cls(3, 4, n_covariates=2, n_hidden=3, norm="layer", zero_inflated=True)
    dec = dec.double()
    z = _z(6, 3, dtype=torch.float64).requires_grad_(True)
    cov = _onehot(6, 2).double()
    assert torch.autograd.gradcheck(lambda z_: dec(z_, cov)[0], (z,))
    logits, zi = dec(z, cov)
    (F.log_softmax(logits, -1)[:, 0].sum() + zi.sum()).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", CLASSES)
def test_batch_norm_training_mode_gradients(cls):
    dec = cls(4, 9, n_hidden=5, norm="batch")
    logits, _ = dec(_z(16, 4))
    F.log_softmax(logits, -1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dec.parameters())


@pytest.mark.parametrize("cls", CLASSES)
def test_keep_latents_keeps_each_dimensions_network(cls):
    torch.manual_seed(0)
    dec = cls(6, 13, n_covariates=2, n_hidden=4, zero_inflated=True).eval()
    _trained_norms(dec)
    keep = torch.tensor([4, 1, 5])
    small = dec.keep_latents(keep).eval()
    assert type(small) is cls
    z, cov = _z(9, 6), _onehot(9, 2)
    with torch.no_grad():
        torch.testing.assert_close(small.programs(z[:, keep]), dec.programs(z)[:, keep])
        terms = dec.programs(z)[:, keep]
        if cls is FastAdditiveDecoder:
            terms = torch.cat([terms, dec.background.expand(9, 1, -1)], 1)
        ref = _combine(terms, small.n_global) + dec.covariates(cov)
        logits, zi = small(z[:, keep], cov)
        torch.testing.assert_close(logits, ref)
        z0 = z.clone()
        z0[:, [0, 2, 3]] = 0.0  # the dropped columns of the zero-inflation map are gone
        torch.testing.assert_close(zi, dec.zi_logits(torch.cat([z0, cov], -1)))


def test_global_dimensions_scale_every_program_and_survive_pruning():
    torch.manual_seed(0)
    dec = GlobalAdditiveDecoder(4, 7, n_hidden=3, norm="none").eval()
    assert (dec.n_global, AdditiveDecoder(4, 7).n_global) == (1, 0)
    z = _z(5, 4)
    with torch.no_grad():
        logits = dec(z)[0]
        z2 = z.clone()
        z2[:, 3] += 1.0  # the global dimension adds its own program's change to every gene
        shift = dec.gene_program(3, z2[:, 3]) - dec.gene_program(3, z[:, 3])
        torch.testing.assert_close(dec(z2)[0] - logits, shift)
        # the same weights with no global dimension: the last program enters the logsumexp
        plain = AdditiveDecoder(4, 7, n_hidden=3, norm="none").eval()
        plain.load_state_dict(dec.state_dict())
        torch.testing.assert_close(plain(z)[0], torch.logsumexp(dec.programs(z), 1))
        assert not torch.allclose(plain(z)[0], logits)
        # pruning: a kept global dimension stays global; dropping it leaves none
        assert dec.keep_latents(torch.tensor([0, 3])).n_global == 1
        assert dec.keep_latents(torch.tensor([0, 2])).n_global == 0
        only = dec.keep_latents(torch.tensor([3]))
        torch.testing.assert_close(only(z[:, 3:])[0], dec.programs(z)[:, 3])
    with pytest.raises(ValueError, match="list them last"):
        dec.keep_latents(torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="n_global"):
        AdditiveDecoder(3, 5, n_global=4)
    with pytest.raises(ValueError, match="log-space"):
        FastAdditiveDecoder(3, 5, n_global=1)


def test_mlp_decoder_and_encoder_keep_latents():
    torch.manual_seed(0)
    dec = CountDecoder(5, 8, n_covariates=2, n_hidden=7).eval()
    keep = torch.tensor([0, 3])
    z, cov = _z(6, 5), _onehot(6, 2)
    z0 = torch.zeros_like(z)
    z0[:, keep] = z[:, keep]
    with torch.no_grad():
        torch.testing.assert_close(dec.keep_latents(keep)(z[:, keep], cov)[0], dec(z0, cov)[0])
    enc = GaussianEncoder(8, 5, n_hidden=7).eval()
    x = torch.poisson(torch.full((6, 8), 2.0))
    with torch.no_grad():
        loc, scale = enc(x)
        loc2, scale2 = enc.keep_latents(keep)(x)
    torch.testing.assert_close(loc2, loc[:, keep])
    torch.testing.assert_close(scale2, scale[:, keep])


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_count_vae_keep_latents_rejects_bad_indices(decoder):
    vae = CountVAE(ModelConfig(n_genes=8, n_latent=4, n_hidden=6, decoder=decoder))
    assert vae.keep_latents([2, 0]).config.n_latent == 2
    for bad in ([], [0, 0], [4]):
        with pytest.raises(ValueError):
            vae.keep_latents(bad)


def test_expression_space_output_starts_near_uniform():
    dec = FastAdditiveDecoder(32, 500).eval()
    with torch.no_grad():
        logits, _ = dec(_z(64, 32))
    assert torch.isfinite(logits).all() and logits.std(-1).max() < 0.5


def test_decoder_hidden_sets_the_width():
    assert CountVAE(ModelConfig(n_genes=8, decoder="additive")).decoder.n_hidden == 16
    vae = CountVAE(ModelConfig(n_genes=8, decoder="additive", decoder_hidden=5))
    assert vae.decoder.n_hidden == 5
    mlp = CountVAE(ModelConfig(n_genes=8, n_hidden=9, decoder_hidden=4))
    assert mlp.decoder.logits.in_features == 4 and mlp.encoder.loc.in_features == 9


@pytest.mark.parametrize(
    "model, extra",
    [
        ("beta_vae", {}),
        ("beta_tcvae", {"beta": 2.0}),
        ("factor_vae", {}),
        ("beta_vae", {"capacity": (0.0, 5.0)}),
    ],
)
@pytest.mark.parametrize("decoder", ["additive", "additive_fast", "additive_global"])
def test_fit_with_every_model(toy, model, extra, decoder):
    m = scvae_beta.fit(toy, model=model, decoder=decoder, n_latent=4, **extra, **FAST)
    u = toy.uns["scvae_beta"]
    assert u["params"]["decoder"] == decoder and toy.obsm["X_scvae_beta"].shape == (240, 4)
    assert np.isfinite(u["elbo"]) and np.isfinite(u["history"]["train_loss"]).all()
    assert isinstance(m.module.decoder, DECODERS[decoder])


@pytest.mark.parametrize("decoder", ["additive", "additive_fast", "additive_global"])
def test_save_load_round_trip_with_batches_and_zinb(toy_batches, tmp_path, decoder):
    m = scvae_beta.fit(
        toy_batches,
        decoder=decoder,
        batch_key="batch",
        likelihood="zinb",
        n_latent=3,
        **FAST,
    )
    m.save(tmp_path / "m")
    loaded = scvae_beta.load(tmp_path / "m")
    assert loaded.module.config.decoder == decoder
    np.testing.assert_array_equal(loaded.get_latent(toy_batches), m.get_latent(toy_batches))
    np.testing.assert_allclose(
        loaded.get_normalized_expression(toy_batches),
        m.get_normalized_expression(toy_batches),
        rtol=1e-6,
    )
    z = np.zeros((2, 3), dtype=np.float32)
    np.testing.assert_allclose(
        loaded.decode_latent(z, batch="b1"), m.decode_latent(z, batch="b1"), rtol=1e-6
    )


def test_traversal_reads_the_gene_programs(toy):
    from scvae_beta import tl

    m = scvae_beta.fit(toy, decoder="additive", n_latent=3, **FAST)
    table = tl.latent_traversal(toy, m, dims=[0, 2], n_cells=60, span=2.0)
    trav = toy.uns["scvae_beta"]["traversal"]
    assert trav["lfc"] == "gene_program"
    # the LFC of a dimension is the mean change of its own program over the cells
    idx = np.sort(np.random.default_rng(0).choice(toy.n_obs, 60, replace=False))
    loc = m.get_latent(toy[idx])
    dec = m.module.decoder.eval()
    sd = loc[:, 2].astype(np.float64).std()
    z = torch.from_numpy(loc[:, 2])
    expected = (dec.gene_program(2, z + 2 * sd) - dec.gene_program(2, z - 2 * sd)).mean(0)
    np.testing.assert_allclose(table["dim_2"].to_numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    assert trav["profiles"]["dim_0"].shape[1] == 11


def test_gene_block_follows_the_cache_rule(monkeypatch):
    from scvae_beta.nn import additive

    # the measured cases (benchmarks/RESULTS.md): D 32 at batch 128 and 1024, D 10 and D 64
    assert additive.gene_block(32, 128) == 128
    assert additive.gene_block(32, 1024) == 32  # the floor: narrower blocks were slower
    assert additive.gene_block(10, 128) == 256  # the ceiling
    assert additive.gene_block(64, 128) == 64
    assert additive.gene_block(np.int64(32), np.int64(256)) == 64
    assert additive.gene_block(32, 1024, "cuda") == 256  # other devices: fewer, larger kernels
    monkeypatch.setattr(additive, "GENE_BLOCK", 7)
    assert additive.gene_block(32, 128) == 7
    monkeypatch.setattr(additive, "GENE_BLOCK", 0)
    with pytest.raises(ValueError, match="GENE_BLOCK must be a positive"):
        additive.gene_block(32, 128)


def test_automatic_gene_blocks_equal_autograd():
    from scvae_beta.nn import additive

    gen = torch.Generator().manual_seed(1)
    d, b_, g = 32, 128, 300  # blocks of 128 genes, the last one ragged (44)
    assert additive.gene_block(d, b_) == 128
    h = torch.randn(d, b_, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(d, 4, g, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d, 1, g, generator=gen, dtype=torch.float64, requires_grad=True)
    out = additive.logsumexp_output(h, w, b)
    ref_out = torch.logsumexp(torch.baddbmm(b, h, w), 0)
    torch.testing.assert_close(out, ref_out)
    grad = torch.randn(b_, g, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, (h, w, b), grad)
    ref = torch.autograd.grad(ref_out, (h, w, b), grad)
    for a, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, r)


def test_blocked_logsumexp_output_equals_autograd(monkeypatch):
    from scvae_beta.nn import additive

    monkeypatch.setattr(additive, "GENE_BLOCK", 3)  # several blocks and a ragged last one
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 1, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    out = additive.logsumexp_output(h, w, b)
    torch.testing.assert_close(out, torch.logsumexp(torch.baddbmm(b, h, w), 0))
    assert torch.autograd.gradcheck(additive.logsumexp_output, (h, w, b))
    g = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, (h, w, b), g)
    ref = torch.autograd.grad(torch.logsumexp(torch.baddbmm(b, h, w), 0), (h, w, b), g)
    for a, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, r)


def test_logsumexp_output_under_bf16_autocast_runs_both_passes_in_bf16():
    # A custom backward runs outside the autocast context: with the float32 parameters next to
    # the bfloat16 activations it used to fail ("Input dtypes must be the same").
    from scvae_beta.nn import additive

    gen = torch.Generator().manual_seed(2)
    h = torch.randn(6, 20, 8, generator=gen).relu().requires_grad_()
    w = (0.3 * torch.randn(6, 8, 50, generator=gen)).requires_grad_()
    b = torch.randn(6, 1, 50, generator=gen).requires_grad_()
    grad = torch.randn(20, 50, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = additive.logsumexp_output(h.bfloat16(), w, b)
    assert out.dtype == torch.bfloat16
    got = torch.autograd.grad(out, (h, w, b), grad)
    assert [g.dtype for g in got] == [torch.float32] * 3  # each input's own dtype
    # the same layer computed by autograd on the bf16-rounded inputs, in float64
    rounded = [t.detach().bfloat16().double().requires_grad_() for t in (h, w, b)]
    ref_out = torch.logsumexp(torch.baddbmm(rounded[2], rounded[0], rounded[1]), 0)
    ref = torch.autograd.grad(ref_out, rounded, grad.double())
    torch.testing.assert_close(out.double(), ref_out, rtol=0.02, atol=0.03)
    for g, r in zip(got, ref, strict=True):
        scale = r.abs().max()
        assert (g.double() - r).abs().max() < 0.03 * scale


@pytest.mark.parametrize("decoder", ["additive", "additive_fast", "additive_global"])
def test_bf16_fit_with_every_additive_decoder(toy, decoder):
    a, b = toy.copy(), toy.copy()
    kw = dict(FAST, decoder=decoder, n_latent=4, max_epochs=6, kl_warmup=0)
    scvae_beta.fit(a, **kw)
    scvae_beta.fit(b, precision="bf16", **kw)
    assert np.isfinite(b.obsm["X_scvae_beta"]).all()
    va = a.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    vb = b.uns["scvae_beta"]["history"]["val_loss"].iloc[-1]
    assert abs(va - vb) / abs(va) < 0.02


def test_pruning_away_the_global_dimension_saves_and_loads_the_same_model(
    toy, tmp_path, monkeypatch
):
    # The configuration names the decoder class; a pruned "additive_global" decoder without
    # its global dimension used to be rebuilt on load with its last ordinary dimension global.
    dec = GlobalAdditiveDecoder(4, 7, n_hidden=3)
    assert type(dec.keep_latents(torch.tensor([0, 2]))) is AdditiveDecoder
    assert type(dec.keep_latents(torch.tensor([0, 3]))) is GlobalAdditiveDecoder
    m = scvae_beta.fit(toy, decoder="additive_global", n_latent=4, **FAST)
    kept = CountVAE.keep_latents(m.module, [0, 1, 2])  # drops the global dimension (3)
    assert kept.config.decoder == "additive" and type(kept.decoder) is AdditiveDecoder
    assert CountVAE.keep_latents(m.module, [1, 3]).config.decoder == "additive_global"
    from scvae_beta import pruning

    # the global dimension (3) is the one on the prior
    monkeypatch.setattr(pruning, "mean_kl_per_dim", lambda *a: np.array([1.0, 1.0, 1.0, 0.0]))
    pruned = scvae_beta.tl.prune_dimensions(toy, m, active_threshold=0.5, epochs=1)
    assert pruned.module.config.decoder == "additive"
    pruned.save(tmp_path / "p")
    loaded = scvae_beta.load(tmp_path / "p")
    assert type(loaded.module.decoder) is type(pruned.module.decoder)
    np.testing.assert_allclose(
        loaded.get_normalized_expression(toy), pruned.get_normalized_expression(toy), rtol=1e-6
    )
