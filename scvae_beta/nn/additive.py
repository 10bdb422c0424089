"""Additive decoders: one small network per latent dimension, combined in log space.

Each latent dimension ``d`` has its own network ``f_d: R -> R^G`` (1 -> h -> h -> genes) whose
output is that dimension's *gene program*: its log contribution to every gene. The
contributions are combined by ``logsumexp`` over dimensions (additive in expression space, the
idea of DRVI, Moinfar et al. 2024), the batch covariates add a linear term, and the softmax over
genes gives the proportions::

    logits_bg = logsumexp_d f_d(z_bd)_g + (W_cov onehot(s_b))_g

All ``D`` networks run at once as batched matrix products (``torch.baddbmm`` over a leading
dimension axis): no Python loop over dimensions. Two output layers:

- :class:`AdditiveDecoder` (``decoder="additive"``): DRVI's form, linear in *log* space,
  ``f_d(z_d) = relu(h_d(z_d)) @ W_d + b_d``, combined by an explicit ``logsumexp`` over the
  ``(D, B, G)`` contributions (:func:`logsumexp_output`: on the CPU a fused C++ kernel,
  built at first use, that forms each entry in registers; elsewhere cache-sized blocks of
  genes in PyTorch). Every ``(d, b, g)`` entry costs an ``exp`` and ``h`` multiply-adds in the
  forward, three times that in the backward: on CPU an epoch is ~2.3x the MLP decoder's at
  n_latent 32 and batch 128 with the kernel (~1.9x at ``n_hidden=8``, the preset's width;
  3.2-4.5x on the PyTorch path; ~3.2x and 6.1-6.5x at batch 1024), but it disentangles
  best (LMS-SMI 0.85 vs 0.72 on the pancreas benchmark, ``benchmarks/RESULTS.md``).
- :class:`FastAdditiveDecoder` (``decoder="additive_fast"``): the last layer of each network
  is linear in *expression* space with positive weights, ``exp f_d(z_d) =
  softplus(h_d(z_d)) @ exp(W_d)``, plus a per-gene background ``exp(b_g)``. Then
  ``logsumexp_d f_d = log(sum_d exp f_d)`` is one ``(B, D h) @ (D h, G)`` matrix product: no
  ``(D, B, G)`` tensor is formed and an epoch costs ~1.9x the MLP decoder's.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from scvae_beta.nn import _native
from scvae_beta.nn.modules import _BN_EPS, _BN_MOMENTUM

#: Genes per block of the fused output layer; ``None``: chosen per call by :func:`gene_block`.
GENE_BLOCK: int | None = None
#: On CPU a ``(D, B, block)`` block of about this many entries (2 MiB of float32, one core's
#: L2 cache here) is formed, reduced and dropped while in cache (``benchmarks/RESULTS.md``).
BLOCK_ENTRIES = 2**19
#: Shifted log-weights are clamped here before ``exp`` (denormals are ~30x slower on CPU).
_EXP_FLOOR = -50.0
#: Which implementation :func:`logsumexp_output` uses for float32 tensors on the CPU:
#: ``"auto"`` the fused native kernel (:mod:`scvae_beta.nn._native`, built at first use with
#: the machine's C++ compiler) where it is available, else the PyTorch blocks; ``"native"``
#: the kernel or an error saying why it is not available; ``"torch"`` always the PyTorch
#: blocks. The environment variable ``SCVAE_BETA_NATIVE`` (``0`` / ``1``) overrides it with
#: ``"torch"`` / ``"native"``.
KERNEL = "auto"
_KERNELS = ("auto", "native", "torch")


def gene_block(n_latent: int, batch: int, device: torch.device | str = "cpu") -> int:
    """Genes per block of :func:`logsumexp_output` for ``n_latent`` dimensions and ``batch``
    cells: :data:`GENE_BLOCK` when set; on CPU the multiple of 32 in 32 ... 256 that keeps a
    ``(D, B, block)`` block near :data:`BLOCK_ENTRIES` entries (128 at D 32 and batch 128,
    32 at batch 1024: a block that outgrows the cache costs the layer up to 1.7x); 256 on
    other devices, where fewer, larger kernels are cheaper."""
    if GENE_BLOCK is not None:
        if int(GENE_BLOCK) < 1:
            raise ValueError(
                f"scvae_beta.nn.additive.GENE_BLOCK must be a positive number of genes or None "
                f"(chosen automatically), got {GENE_BLOCK!r}."
            )
        return int(GENE_BLOCK)
    if torch.device(device).type != "cpu":
        return 256
    return max(32, min(256, BLOCK_ENTRIES // max(n_latent * batch, 1) // 32 * 32))


def _block_lse(h: Tensor, w: Tensor, b: Tensor, sl: slice) -> Tensor:
    """Logsumexp over ``D`` of the contributions ``(D, B, n)`` of the genes ``sl``, shifted,
    exponentiated and summed in place (no second block-sized tensor)."""
    a = torch.baddbmm(b[:, :, sl], h, w[:, :, sl])
    m = a.amax(0)
    return a.sub_(m).clamp_min_(_EXP_FLOOR).exp_().sum(0).log_().add_(m)


class _LogSumExpOutput(torch.autograd.Function):
    """``logsumexp_d(h_d @ w_d + b_d)``: ``(B, G)`` from ``h`` ``(D, B, H)``, ``w``
    ``(D, H, G)``, ``b`` ``(D, 1, G)``, computed in blocks of genes.

    Neither pass materialises the ``(D, B, G)`` contributions: each block of genes
    (:func:`gene_block`) is formed, reduced and dropped while in cache; the backward recomputes it
    (``grad_a = exp(a - lse) * grad``, then one ``bmm`` each for ``w`` and ``h``). Plain
    autograd stores the whole tensor and makes several passes over it in memory.
    """

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        out = h.new_empty(h.shape[1], w.shape[2])
        ctx.block = block = gene_block(h.shape[0], h.shape[1], h.device)
        for s in range(0, w.shape[2], block):
            sl = slice(s, s + block)
            out[:, sl] = _block_lse(h, w, b, sl)
        ctx.save_for_backward(h, w, b, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w, b, out = ctx.saved_tensors
        gh = torch.zeros_like(h)
        gw = torch.empty_like(w)
        gb = torch.empty_like(b)
        ht = h.transpose(1, 2)
        for s in range(0, w.shape[2], ctx.block):
            sl = slice(s, s + ctx.block)
            a = torch.baddbmm(b[:, :, sl], h, w[:, :, sl])
            a.sub_(out[:, sl]).clamp_min_(_EXP_FLOOR).exp_().mul_(grad[:, sl])  # grad of a
            gw[:, :, sl] = torch.bmm(ht, a)
            gb[:, 0, sl] = a.sum(1)
            gh.baddbmm_(a, w[:, :, sl].transpose(1, 2))
        return gh, gw, gb


class _NativeLogSumExpOutput(torch.autograd.Function):
    """:class:`_LogSumExpOutput` by the fused CPU kernel (:mod:`scvae_beta.nn._native`):
    each pass forms every ``(d, b, g)`` entry in registers, once (float32, CPU)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        h, w, b = h.contiguous(), w.contiguous(), b.contiguous()
        lib = _native.library()
        out = _native.forward(lib, h, w, b)
        ctx.save_for_backward(h, w, b, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        h, w, b, out = ctx.saved_tensors
        return _native.backward(_native.library(), h, w, b, out, grad.contiguous())


def kernel_setting() -> str:
    """The effective :data:`KERNEL` (``SCVAE_BETA_NATIVE`` applied), checked."""
    env = os.environ.get("SCVAE_BETA_NATIVE", "").strip()
    if env:
        if env not in ("0", "1"):
            raise ValueError(
                f"SCVAE_BETA_NATIVE must be 0 (PyTorch path) or 1 (native kernel), got {env!r}"
            )
        return "native" if env == "1" else "torch"
    if KERNEL not in _KERNELS:
        raise ValueError(f"scvae_beta.nn.additive.KERNEL must be one of {_KERNELS}, got {KERNEL!r}")
    return KERNEL


def uses_native(h: Tensor, w: Tensor, b: Tensor) -> bool:
    """Whether :func:`logsumexp_output` takes the native kernel for these inputs: float32 on
    the CPU, no empty axis, and the kernel allowed (:data:`KERNEL`) and available. With
    ``KERNEL="native"`` an unavailable kernel raises a ``RuntimeError`` naming the reason."""
    setting = kernel_setting()
    if setting == "torch":
        return False
    eligible = (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (h, w, b))
        and h.dim() == 3
        and h.numel() > 0
        and w.numel() > 0
    )
    if not eligible:
        return False
    if _native.library() is None:
        if setting == "native":
            raise RuntimeError(
                "scvae_beta.nn.additive.KERNEL is 'native' (or SCVAE_BETA_NATIVE=1) but the "
                f"native CPU kernel is not available: {_native.unavailable_reason()}. Set "
                "KERNEL = 'auto' to fall back to the PyTorch path."
            )
        return False
    return True


def logsumexp_output(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``torch.logsumexp(torch.baddbmm(b, h, w), 0)`` without the ``(D, B, G)`` tensor;
    shapes ``h`` ``(D, B, H)``, ``w`` ``(D, H, G)``, ``b`` ``(D, 1, G)`` -> ``(B, G)``.

    float32 on the CPU: the fused native kernel where available (:func:`uses_native`,
    :data:`KERNEL`; the layer ~2x faster than the PyTorch blocks at D 10-64, batch 128 or
    1024; its results do not depend on the thread count). Otherwise (CUDA,
    float64, no compiler): :class:`_LogSumExpOutput`, blocks of genes in PyTorch.

    Under autocast (``fit(precision="bf16")``) both passes run in the autocast dtype: the
    inputs are cast to it (their gradients come back in their own dtypes) and the layer runs
    with autocast off, since a custom backward runs outside the autocast context and would
    otherwise meet the float32 parameters next to the bfloat16 activations."""
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        h, w, b = h.to(dtype), w.to(dtype), b.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return logsumexp_output(h, w, b)
    if uses_native(h, w, b):
        return _NativeLogSumExpOutput.apply(h, w, b)
    return _LogSumExpOutput.apply(h, w, b)


class AdditiveDecoder(nn.Module):
    """Per-dimension networks ``1 -> h -> h -> n_genes`` combined by ``logsumexp`` (DRVI's
    additive decoder), plus a linear batch term.

    ``f_d(z_d) = relu(h2_d(z_d)) @ W_d + b_d`` (``(G,)``, log space), with ``h2_d`` the
    dimension's second hidden layer; ``logits = logsumexp_d f_d(z_d) + W_cov onehot(s)`` over
    the explicit ``(D, B, G)`` contributions (:func:`logsumexp_output`: the CPU kernel or
    blocks of genes). :class:`FastAdditiveDecoder` puts the last layer in expression space
    instead (one matrix product, ~1.2x cheaper per epoch on CPU). ``forward(z,
    covariates)`` takes ``z`` ``(B, D)`` and an optional one-hot ``(B, C)`` and returns
    ``(logits, zi_logits)``, each ``(B, G)`` (``zi_logits`` ``None`` unless
    ``zero_inflated``; then a linear map of ``[z, covariates]``). :meth:`programs` returns
    each dimension's own log contribution ``f_d(z_d)`` ``(B, D, G)``.

    Parameters
    ----------
    n_latent, n_genes
        ``D`` and ``G``.
    n_covariates
        Width of the batch one-hot (0: none).
    n_hidden
        Width ``h`` of each dimension's two hidden layers.
    n_layers
        Not used: every per-dimension network has two hidden layers (accepted for the
        decoder table's common signature).
    norm
        ``"batch"``: BatchNorm over the ``D * h`` hidden units; ``"layer"``: LayerNorm over
        each dimension's ``h`` units; ``"none"``.
    zero_inflated
        Also return zero-inflation logits.
    """

    #: Hidden width when the settings leave ``decoder_hidden`` to the decoder (16: as good as
    #: 32 on the pancreas benchmark and cheaper; ``benchmarks/RESULTS.md``).
    default_hidden = 16
    #: ``"log"``: last layer linear in log space; ``"expression"``: in expression space.
    output_space = "log"
    #: How many of the last latent dimensions are *global* when ``n_global`` is ``None``:
    #: their programs are added in log space (they scale every other program) instead of
    #: entering the ``logsumexp`` (:class:`GlobalAdditiveDecoder`).
    default_global = 0

    def __init__(
        self,
        n_latent: int,
        n_genes: int,
        *,
        n_covariates: int = 0,
        n_hidden: int = 32,
        n_layers: int = 1,
        norm: str = "batch",
        zero_inflated: bool = False,
        n_global: int | None = None,
    ) -> None:
        super().__init__()
        d, h, g = n_latent, n_hidden, n_genes
        self.n_latent, self.n_hidden, self.n_genes, self.norm = d, h, g, norm
        n_global = self.default_global if n_global is None else int(n_global)
        if not 0 <= n_global <= d:
            raise ValueError(f"n_global={n_global} must lie in 0 ... n_latent ({d})")
        if n_global and self.output_space != "log":
            raise ValueError("global dimensions need the log-space output layer")
        self.n_global = n_global
        # Layer 1 (1 -> h): an outer product per dimension; layers 2 and 3: batched matmuls.
        self.w1 = nn.Parameter(torch.empty(d, h))
        self.b1 = nn.Parameter(torch.empty(d, h))
        self.w2 = nn.Parameter(torch.empty(d, h, h))
        self.b2 = nn.Parameter(torch.empty(d, 1, h))
        self.w3 = nn.Parameter(torch.empty(d, h, g))
        if self.output_space == "log":
            self.b3 = nn.Parameter(torch.empty(d, 1, g))
        else:
            self.background = nn.Parameter(torch.zeros(g))
        if norm == "batch":
            self.norm1 = nn.BatchNorm1d(d * h, momentum=_BN_MOMENTUM, eps=_BN_EPS)
            self.norm2 = nn.BatchNorm1d(d * h, momentum=_BN_MOMENTUM, eps=_BN_EPS)
        elif norm in ("layer", "none"):
            self.norm1 = self.norm2 = None
        else:
            raise ValueError(f"norm={norm!r} is not supported; choose 'batch', 'layer' or 'none'")
        self.covariates = nn.Linear(n_covariates, g, bias=False) if n_covariates else None
        self.zi_logits = nn.Linear(d + n_covariates, g) if zero_inflated else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation, per dimension (fan-in 1, then ``h``); in
        expression space the log weights are shifted by ``-log(D h)`` so that the summed
        contributions start near the background."""
        with torch.no_grad():
            self.w1.uniform_(-1.0, 1.0)
            self.b1.uniform_(-1.0, 1.0)
            bound = 1.0 / math.sqrt(self.n_hidden)
            for p in (self.w2, self.b2, self.w3):
                p.uniform_(-bound, bound)
            if self.output_space == "log":
                self.b3.uniform_(-bound, bound)
            else:
                self.w3.sub_(math.log(self.n_latent * self.n_hidden))
                self.background.zero_()

    # ------------------------------------------------------------------ pieces

    def _hidden(self, h: Tensor, norm: nn.Module | None, last: bool = False) -> Tensor:
        """Norm and activation of hidden units ``(B, D, h)`` (softplus on the last hidden
        layer in expression space: positive weights of the positive basis, so every log
        contribution is finite)."""
        if norm is not None:
            h = norm(h.reshape(h.shape[0], -1)).view_as(h)
        elif self.norm == "layer":
            h = F.layer_norm(h, (self.n_hidden,))
        if last and self.output_space == "expression":
            return F.softplus(h)
        return F.relu(h)

    def _last_hidden(self, z: Tensor) -> Tensor:
        """Hidden units ``(B, D, h)`` that feed the output layer."""
        h = torch.addcmul(self.b1, z.unsqueeze(-1), self.w1)  # (B, D, h)
        h = self._hidden(h, self.norm1).transpose(0, 1)  # (D, B, h)
        h = torch.baddbmm(self.b2, h, self.w2).transpose(0, 1)  # (B, D, h)
        return self._hidden(h, self.norm2, last=True)

    def programs(self, z: Tensor) -> Tensor:
        """Each dimension's own log contribution ``f_d(z_d)``: ``(B, D, G)`` for ``z``
        ``(B, D)`` (forms the whole tensor: for interpretation, not training).

        In eval mode ``f_d`` depends on ``z_d`` alone (BatchNorm uses its running statistics),
        so ``programs(z)[:, d]`` is dimension ``d``'s gene program evaluated at ``z_d``.
        """
        h = self._last_hidden(z).transpose(0, 1)  # (D, B, h)
        if self.output_space == "log":
            return torch.baddbmm(self.b3, h, self.w3).transpose(0, 1)
        return torch.bmm(h, self.w3.exp()).log().transpose(0, 1)

    @torch.no_grad()
    def gene_program(self, d: int, values: Tensor) -> Tensor:
        """Dimension ``d``'s own log contribution at the values ``(n,)`` of ``z_d``:
        ``(n, G)``, natural log, up to the softmax over genes and the other dimensions'
        contributions. Uses the module's current mode (call ``eval()`` first, so BatchNorm
        uses its running statistics and the program depends on ``z_d`` alone)."""
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"d must be an integer (a latent dimension), got {d!r}")
        if not 0 <= int(d) < self.n_latent:
            raise ValueError(f"d={d} out of range for {self.n_latent} latent dimensions")
        one = self.keep_latents(torch.tensor([int(d)])).train(self.training)
        if not isinstance(values, Tensor):  # NumPy arrays (any strides) and lists as well
            values = torch.from_numpy(np.ascontiguousarray(values))
        values = values.to(self.w1)
        return one.programs(values.reshape(-1, 1))[:, 0]

    def _combined(self, z: Tensor) -> Tensor:
        """``logsumexp_d f_d(z_d)`` over the non-global dimensions plus ``sum_k f_k(z_k)``
        over the global ones (with the background in expression space): ``(B, G)``."""
        h = self._last_hidden(z)  # (B, D, h)
        if self.output_space == "log":
            if self.n_global == 0:
                return logsumexp_output(h.transpose(0, 1).contiguous(), self.w3, self.b3)
            n_or = self.n_latent - self.n_global  # the first n_or dimensions enter the logsumexp
            out = self.b3[n_or:].sum(0)  # (1, G): the global programs' biases
            if n_or:
                h_or = h[:, :n_or].transpose(0, 1).contiguous()  # (n_or, B, h)
                out = out + logsumexp_output(h_or, self.w3[:n_or], self.b3[:n_or])
            flat = h[:, n_or:].reshape(h.shape[0], -1)  # (B, K h): dimension-major like w3
            return torch.addmm(out, flat, self.w3[n_or:].reshape(-1, self.n_genes))
        flat = h.reshape(h.shape[0], -1)  # (B, D h): dimension-major like w3
        weights = self.w3.exp().reshape(-1, self.n_genes)  # (D h, G)
        return torch.addmm(self.background.exp(), flat, weights).log()

    def forward(self, z: Tensor, covariates: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = self._combined(z)
        if self.covariates is not None:
            if covariates is None:
                raise ValueError("this decoder was built with covariates; pass them")
            logits = logits + self.covariates(covariates)
        zi = None
        if self.zi_logits is not None:
            zi = self.zi_logits(z if covariates is None else torch.cat([z, covariates], -1))
        return logits, zi

    # ------------------------------------------------------------------ pruning

    def keep_latents(self, keep: Tensor) -> AdditiveDecoder:
        """A decoder over the latent dimensions ``keep`` ``(K,)`` (indices into ``D``) with
        those dimensions' networks, the background, the batch term and the kept
        zero-inflation columns. Kept global dimensions stay global and must come last in
        ``keep`` (any sorted ``keep`` does). A :class:`GlobalAdditiveDecoder` whose global
        dimension is dropped becomes a plain :class:`AdditiveDecoder` (the same function), so
        the decoder's class alone says how many dimensions are global, as a saved model's
        configuration (``decoder`` by name) needs."""
        keep = torch.as_tensor(keep, dtype=torch.long, device=self.w1.device)
        n_cov = 0 if self.covariates is None else self.covariates.in_features
        is_global = keep >= self.n_latent - self.n_global
        n_global = int(is_global.sum())
        if n_global and not bool(is_global[len(keep) - n_global :].all()):
            raise ValueError(
                f"keep {keep.tolist()}: the global dimensions (the last {self.n_global}) must "
                "stay at the end; list them last"
            )
        cls = type(self)
        if n_global == 0 and isinstance(self, GlobalAdditiveDecoder):
            cls = AdditiveDecoder
        new = cls(
            len(keep),
            self.n_genes,
            n_covariates=n_cov,
            n_hidden=self.n_hidden,
            norm=self.norm,
            zero_inflated=self.zi_logits is not None,
            n_global=n_global,
        ).to(self.w1.device)
        units = keep[:, None] * self.n_hidden + torch.arange(self.n_hidden, device=keep.device)
        units = units.reshape(-1)  # the kept dimensions' hidden units in the (D * h) layout
        per_dim = ("w1", "b1", "w2", "b2", "w3") + (("b3",) if self.output_space == "log" else ())
        with torch.no_grad():
            for name in per_dim:
                getattr(new, name).copy_(getattr(self, name)[keep])
            if self.output_space == "expression":
                new.background.copy_(self.background)
            for old_n, new_n in ((self.norm1, new.norm1), (self.norm2, new.norm2)):
                if old_n is None:
                    continue
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new_n, name).copy_(getattr(old_n, name)[units])
                new_n.num_batches_tracked.copy_(old_n.num_batches_tracked)
            if self.covariates is not None:
                new.covariates.weight.copy_(self.covariates.weight)
            if self.zi_logits is not None:
                extra = torch.arange(self.n_latent, self.n_latent + n_cov, device=keep.device)
                cols = torch.cat([keep, extra])
                new.zi_logits.weight.copy_(self.zi_logits.weight[:, cols])
                new.zi_logits.bias.copy_(self.zi_logits.bias)
        return new


class FastAdditiveDecoder(AdditiveDecoder):
    """The additive decoder with its last layer in expression space (``decoder="additive_fast"``).

    ``exp f_d(z_d) = softplus(h2_d(z_d)) @ exp(W_d)`` (positive), and
    ``logits = log(exp(b) + sum_d exp f_d(z_d)) + W_cov onehot(s)``: ``logsumexp`` over the
    dimensions' log contributions and a per-gene background ``b``, computed as one
    ``(B, D h) @ (D h, G)`` matrix product. An epoch costs ~1.9x the MLP decoder's (vs ~2.3x
    for :class:`AdditiveDecoder` with its CPU kernel) but disentangled less on the pancreas
    benchmark (``benchmarks/RESULTS.md``). Same interface as :class:`AdditiveDecoder`."""

    output_space = "expression"


class GlobalAdditiveDecoder(AdditiveDecoder):
    """The additive decoder with one *global* dimension (``decoder="additive_global"``).

    The last latent dimension's program is added in log space, so it scales the expression
    that every other dimension's program predicts; the other ``D - 1`` programs are combined
    by ``logsumexp`` as in :class:`AdditiveDecoder`::

        logits_bg = logsumexp_{d < D-1} f_d(z_bd)_g + f_{D-1}(z_b,D-1)_g + (W_cov onehot(s_b))_g

    ``logsumexp`` is a soft maximum: a dimension's program matters only for the genes it
    dominates, so an effect that runs through several cell types (sequencing depth, the
    quality of a cell, a broad lineage axis) cannot be one dimension, and a type with such an
    axis inside it can take two dimensions, one for each end. The global dimension is a place
    for one such axis. In the benchmark (``benchmarks/RESULTS.md``, seventh session) it learnt a
    dense axis (lineage and depth together), moved the pancreas clusters from behind scVI's to
    level with them but still split the beta cells on 3 of 8 seeds, and cost LMS-SMI on
    every real data set (PBMCs 0.62 instead of 0.73); with 2 or 4 global dimensions those
    dimensions took the cell types themselves into a dense code. Pass ``n_global`` to have
    more or none. Same interface as :class:`AdditiveDecoder`; the extra cost is one
    ``(B, h) @ (h, G)`` product.
    """

    default_global = 1
