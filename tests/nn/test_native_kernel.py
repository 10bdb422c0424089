"""The fused native CPU kernel of the additive decoder's output layer (``nn._native``).

Checked against float64 autograd of ``torch.logsumexp(torch.baddbmm(b, h, w), 0)``: values and
all three gradients, ragged tiles of genes and odd numbers of cells, the exp floor, NaN and
+inf propagated like the PyTorch path, the same bits at 1 and 2 threads, and a whole decoder.
The loader: the cache is reused, a missing compiler falls back to the PyTorch path, and the
settings (``KERNEL``, ``SCVAE_BETA_NATIVE``) are checked. Where the kernel cannot be built the
kernel's tests skip; CI sets ``SCVAE_BETA_REQUIRE_NATIVE=1`` so that there they fail instead.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from scvae_beta.nn import _native, additive

REQUIRED = os.environ.get("SCVAE_BETA_REQUIRE_NATIVE") == "1"


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    """The tests set ``KERNEL`` themselves: no ``SCVAE_BETA_NATIVE`` from outside."""
    monkeypatch.delenv("SCVAE_BETA_NATIVE", raising=False)


def _lib():
    lib = _native.library()
    if lib is None:
        if REQUIRED:
            pytest.fail(f"SCVAE_BETA_REQUIRE_NATIVE=1 but the kernel is not available: "
                        f"{_native.unavailable_reason()}")  # fmt: skip
        pytest.skip(f"native kernel not available: {_native.unavailable_reason()}")
    return lib


def _inputs(d, n, k, g, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(d, n, k, generator=gen).relu_()
    w = scale * torch.randn(d, k, g, generator=gen)
    b = scale * torch.randn(d, 1, g, generator=gen)
    grad = torch.randn(n, g, generator=gen)
    return h, w, b, grad


def _reference(h, w, b, grad):
    h64, w64, b64 = (t.double().requires_grad_() for t in (h, w, b))
    out = torch.logsumexp(torch.baddbmm(b64, h64, w64), 0)
    grads = torch.autograd.grad(out, (h64, w64, b64), grad.double())
    return (out.detach(), *grads)


def _assert_close(got, want, tol=2e-6):
    for name, x, y in zip(("out", "grad h", "grad w", "grad b"), got, want, strict=True):
        assert x.shape == y.shape, name
        err = (x.double() - y).abs().max().item()
        assert err <= tol * max(1.0, y.abs().max().item()), (name, err)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 1, 1, 1),  # one of everything: all padding
        (3, 5, 4, 37),  # ragged: 5 cells (pairs and groups of 4), 37 genes (tiles of 16 / 32)
        (10, 7, 16, 100),
        (32, 130, 16, 300),  # the decoder's width and many dimensions
        (2, 64, 8, 64),  # whole tiles only
        # hidden widths that are not multiples of 16: grad_h of the last 8 units in groups of
        # 8 cells, then of 4 (10 cells: one group of 8, one of 4 with padding)
        (2, 10, 8, 20),
        (4, 13, 24, 50),
        (3, 7, 12, 49),
    ],
)
def test_kernel_equals_float64_autograd(shape):
    lib = _lib()
    h, w, b, grad = _inputs(*shape)
    _assert_close(_native.run(lib, h, w, b, grad), _reference(h, w, b, grad))


def test_kernel_through_logsumexp_output_and_autograd(monkeypatch):
    _lib()
    h, w, b, grad = _inputs(6, 9, 5, 50, seed=3)
    h, w, b = (t.requires_grad_() for t in (h, w, b))
    monkeypatch.setattr(additive, "KERNEL", "native")
    assert additive.uses_native(h, w, b)
    out = additive.logsumexp_output(h, w, b)
    assert out.grad_fn.name().endswith("_NativeLogSumExpOutputBackward")
    got = (out.detach(), *torch.autograd.grad(out, (h, w, b), grad))
    _assert_close(got, _reference(h, w, b, grad))
    # non-contiguous inputs are made contiguous (a transposed view of h)
    ht = h.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not ht.is_contiguous()
    torch.testing.assert_close(additive.logsumexp_output(ht, w, b), out.detach())


def test_exp_floor_and_large_values_match_the_pytorch_path():
    lib = _lib()
    h, w, b, grad = _inputs(4, 6, 3, 40, seed=1, scale=30.0)  # entries spread over +-200
    b[1] -= 500.0  # one dimension far below the others: below the exp floor everywhere
    got = _native.run(lib, h, w, b, grad)
    want = _reference(h, w, b, grad)
    _assert_close(got, want, tol=1e-5)
    assert torch.isfinite(got[0]).all()


def test_exp_is_accurate_over_its_whole_range():
    """Two dimensions whose entries differ by delta in [-60, 1]: out = log(e^b0 + e^b1) (closed
    form), and grad_bias of the second is its softmax weight. A wrong polynomial coefficient or
    range reduction shows here at 1e-5 or worse; the kernel's exp is good to 2.2e-7."""
    lib = _lib()
    g = 4001
    delta = torch.linspace(-60.0, 1.0, g, dtype=torch.float64)
    base = torch.linspace(-3.0, 3.0, g, dtype=torch.float64)
    b = torch.stack([base, base + delta]).unsqueeze(1).float()  # (2, 1, G)
    h = torch.zeros(2, 3, 1)  # entries are the biases alone
    w = torch.randn(2, 1, g)
    grad = torch.ones(3, g)
    out, _, _, gb = _native.run(lib, h, w, b, grad)
    b64 = b.double().squeeze(1)
    want = torch.logaddexp(b64[0], b64[1])
    assert (out.double() - want).abs().max().item() < 1e-6
    # grad_bias of the second dimension (3 cells, incoming gradient 1) / 3 = its softmax weight
    # exp(b1 - out), here with the kernel's own out: what is left is exp's error and the float32
    # rounding of b1 - out (half an ulp of the difference, relative to the weight)
    x = b64[1] - out[0].double()
    ok = x > -50  # below, the entry is clamped at -50
    rel = (gb[1, 0].double() / 3 - x.exp()).abs() / x.exp()
    bound = 4e-7 + 2.0**-24 * x.abs()
    assert (rel[ok] <= bound[ok]).all(), (rel[ok] / bound[ok]).max()
    floor = torch.tensor(-50.0, dtype=torch.float64).exp()
    assert torch.allclose(gb[1, 0, ~ok].double() / 3, floor.expand(int((~ok).sum())), rtol=1e-5)


def test_large_logits_with_padding_cells_and_genes_stay_finite():
    # exp of a padding entry (cell or gene beyond the tile) must never overflow into NaN
    lib = _lib()
    h, w, b, grad = _inputs(3, 5, 4, 37, seed=5)
    b.mul_(0.2).add_(88.9)  # a padding cell's entries are the biases: exp(88.9) overflows
    got = _native.run(lib, h, w, b, grad)
    assert all(torch.isfinite(t).all() for t in got)
    _assert_close(got, _reference(h, w, b, grad), tol=1e-5)


def test_nan_and_inf_propagate_like_the_pytorch_path(monkeypatch):
    lib = _lib()
    h, w, b, grad = _inputs(3, 6, 4, 20, seed=2)
    h[1, 2, 0] = float("nan")  # cell 2 of dimension 1
    b[0, 0, 5] = float("inf")  # gene 5 of dimension 0
    out = _native.forward(lib, h, w, b)
    monkeypatch.setattr(additive, "KERNEL", "torch")
    ref = additive.logsumexp_output(h, w, b)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.isnan(out[2]).any() and torch.isnan(out[:, 5]).all()
    grads = _native.backward(lib, h, w, b, out, grad)
    hr, wr, br = (t.clone().requires_grad_() for t in (h, w, b))
    refs = torch.autograd.grad(additive.logsumexp_output(hr, wr, br), (hr, wr, br), grad)
    for got, want in zip(grads, refs, strict=True):
        assert torch.isnan(got).any()
        assert torch.equal(torch.isnan(got), torch.isnan(want))


def test_results_do_not_depend_on_the_thread_count():
    lib = _lib()
    h, w, b, grad = _inputs(8, 33, 16, 257, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _native.run(lib, h, w, b, grad)
        torch.set_num_threads(2)
        two = _native.run(lib, h, w, b, grad)
    finally:
        torch.set_num_threads(before)
    for x, y in zip(one, two, strict=True):
        assert torch.equal(x, y)


def test_additive_decoder_native_equals_pytorch_path(monkeypatch):
    _lib()
    torch.manual_seed(0)
    dec = additive.AdditiveDecoder(6, 45, n_covariates=2, n_hidden=8)
    z = torch.randn(11, 6)
    cov = torch.nn.functional.one_hot(torch.arange(11) % 2, 2).float()
    results = {}
    for kernel in ("torch", "native"):
        monkeypatch.setattr(additive, "KERNEL", kernel)
        dec.zero_grad()
        logits, _ = dec(z, cov)
        (logits.sin().sum()).backward()
        results[kernel] = (logits.detach(), dec.w3.grad.clone(), dec.w1.grad.clone())
    for x, y in zip(results["torch"], results["native"], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_float64_and_empty_inputs_take_the_pytorch_path(monkeypatch):
    _lib()
    monkeypatch.setattr(additive, "KERNEL", "native")
    h, w, b, _ = _inputs(2, 3, 4, 5)
    assert additive.uses_native(h, w, b)
    assert not additive.uses_native(h.double(), w.double(), b.double())
    empty = h[:, :0]
    assert not additive.uses_native(empty, w, b)
    assert additive.logsumexp_output(empty, w, b).shape == (0, 5)


def test_kernel_setting_is_checked(monkeypatch):
    h, w, b, _ = _inputs(2, 3, 4, 5)
    monkeypatch.setattr(additive, "KERNEL", "fast")
    with pytest.raises(ValueError, match="KERNEL must be one of"):
        additive.logsumexp_output(h, w, b)
    monkeypatch.setattr(additive, "KERNEL", "auto")
    monkeypatch.setenv("SCVAE_BETA_NATIVE", "yes")
    with pytest.raises(ValueError, match="SCVAE_BETA_NATIVE must be 0"):
        additive.logsumexp_output(h, w, b)
    monkeypatch.setenv("SCVAE_BETA_NATIVE", "0")
    assert not additive.uses_native(h, w, b)  # the environment overrides KERNEL
    monkeypatch.setattr(additive, "KERNEL", "native")
    assert not additive.uses_native(h, w, b)


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """An empty cache folder and a forgotten library; the real state is restored after."""
    saved = dict(_native._STATE)
    _native.reset()
    monkeypatch.setenv("SCVAE_BETA_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache"
    _native.reset()
    _native._STATE.update(saved)


def test_missing_compiler_falls_back_to_pytorch(monkeypatch, fresh_loader, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(_native, "_check_platform", lambda: None)
    monkeypatch.delenv("SCVAE_BETA_NATIVE", raising=False)
    with caplog.at_level("INFO", logger="scvae_beta"):
        assert _native.library() is None
    assert "/nonexistent/c++" in _native.unavailable_reason()
    assert "PyTorch path" in caplog.text
    h, w, b, grad = _inputs(3, 4, 2, 9)
    monkeypatch.setattr(additive, "KERNEL", "auto")
    assert not additive.uses_native(h, w, b)
    out = additive.logsumexp_output(h, w, b)  # the PyTorch path still works
    _assert_close((out, *_reference(h, w, b, grad)[1:]), _reference(h, w, b, grad))
    monkeypatch.setattr(additive, "KERNEL", "native")
    with pytest.raises(RuntimeError, match="not available: .*nonexistent"):
        additive.logsumexp_output(h, w, b)
    assert not fresh_loader.exists() or not any(fresh_loader.iterdir())


def test_unsupported_platform_is_named(monkeypatch, fresh_loader):
    monkeypatch.setattr(_native.platform, "machine", lambda: "aarch64")
    assert _native.library() is None
    assert "x86-64" in _native.unavailable_reason()


def test_build_is_cached_and_reused(monkeypatch, fresh_loader):
    if _native._check_platform() or _native.compiler() is None:
        pytest.skip("no compiler or unsupported CPU")
    lib = _native.library()
    assert lib is not None, _native.unavailable_reason()
    built = sorted(p.name for p in fresh_loader.iterdir())
    assert len(built) == 1 and built[0].startswith("lse_native_v1_") and built[0].endswith(".so")
    _native.reset()

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the cache holds the library")

    monkeypatch.setattr(_native, "_build", no_build)
    assert _native.library() is not None
    assert sorted(p.name for p in fresh_loader.iterdir()) == built  # no temporary left


def test_a_failed_build_leaves_no_file(monkeypatch, fresh_loader, tmp_path):
    if _native._check_platform() or _native.compiler() is None:
        pytest.skip("no compiler or unsupported CPU")
    bad = tmp_path / "bad.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(_native, "SOURCE", bad)
    assert _native.library() is None
    assert "failed" in _native.unavailable_reason()
    assert not any(fresh_loader.iterdir())


def test_a_wrong_library_is_rejected_by_the_self_check(monkeypatch, fresh_loader):
    _lib()  # the real one builds here
    _native.reset()
    real_forward = _native.forward

    def off_by_one(lib, h, w, b):
        return real_forward(lib, h, w, b) + 1.0

    monkeypatch.setattr(_native, "forward", off_by_one)
    assert _native.library() is None
    assert "disagrees with PyTorch" in _native.unavailable_reason()


def test_numpy_backed_and_view_inputs():
    lib = _lib()
    arr = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    h = torch.from_numpy(arr)[:, 1:5]  # a view into NumPy memory, not contiguous over cells
    w = torch.from_numpy(np.ones((2, 3, 7), dtype=np.float32))
    b = torch.zeros(2, 1, 7)
    hc = h.contiguous()
    out = _native.forward(lib, hc, w, b)
    ref = torch.logsumexp(torch.baddbmm(b.double(), hc.double(), w.double()), 0)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
