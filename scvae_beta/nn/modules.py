"""MLP, Gaussian encoder q(z | x) and count decoder p(x | z): plain ``torch.nn`` modules."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# BatchNorm settings as in common single-cell VAEs (slow running statistics).
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3
#: Lower bound on the posterior standard deviation.
MIN_SCALE = 1e-4


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width, momentum=_BN_MOMENTUM, eps=_BN_EPS)
    if kind == "layer":
        return nn.LayerNorm(width, elementwise_affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r} is not supported; choose 'batch', 'layer' or 'none'")


class MLP(nn.Sequential):
    """``n_layers`` blocks of Linear -> norm -> ReLU -> Dropout.

    Parameters
    ----------
    n_in, n_hidden
        Input width and width of every hidden layer.
    n_layers
        Number of blocks.
    dropout
        Dropout rate after each activation (0 disables).
    norm
        ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(
        self, n_in: int, n_hidden: int, n_layers: int = 1, dropout: float = 0.0, norm: str = "batch"
    ) -> None:
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(n_layers):
            layers += [nn.Linear(width, n_hidden), _norm(norm, n_hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = n_hidden
        super().__init__(*layers)


def log1p_dense(x: Tensor) -> Tensor:
    """``log1p(x)`` as a dense tensor; for a sparse COO ``x`` only the nonzeros are computed."""
    if x.is_sparse:
        return torch.sparse_coo_tensor(
            x._indices(),
            torch.log1p(x._values()),
            x.shape,
            is_coalesced=True,
            check_invariants=False,
        ).to_dense()
    return torch.log1p(x)


class _SparseInputLinear(torch.autograd.Function):
    """``F.linear(cat([log1p(x), covariates], -1), weight, bias)`` for a sparse COO ``x``.

    The forward looks up one weight column per nonzero entry (``F.embedding_bag`` with the
    ``log1p`` counts as per-sample weights): ~10x less work than the dense matmul on
    ~90 %-zero counts. The weight gradient ``grad.T @ [log1p(x), covariates]`` stays one
    dense matmul: the sparse alternatives (embedding_bag's own backward, a transposed
    sparse matmul) were slower on CPU. No gradient flows to ``x`` or the covariates.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, bias: Tensor | None, x: Tensor, covariates: Tensor | None):
        n_cells, n_genes = x.shape
        ind = x._indices()
        rows, cols = ind[0], ind[1]
        values = torch.log1p(x._values())
        offsets = torch.zeros(n_cells, dtype=torch.int64, device=x.device)
        torch.cumsum(torch.bincount(rows, minlength=n_cells)[:-1], 0, out=offsets[1:])
        w_genes = weight[:, :n_genes].t().contiguous()  # (G, H): one row per gene
        h = F.embedding_bag(cols, w_genes, offsets, mode="sum", per_sample_weights=values)
        if covariates is not None:
            h.addmm_(covariates, weight[:, n_genes:].t())
        if bias is not None:
            h += bias
        ctx.save_for_backward(rows, cols, values, covariates)
        ctx.shape = (n_cells, weight.shape[1])
        ctx.n_genes = n_genes
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, cols, values, covariates = ctx.saved_tensors
        grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dense = values.new_zeros(ctx.shape)
            dense.view(-1).scatter_(0, rows * ctx.shape[1] + cols, values)  # unique positions
            if covariates is not None:
                dense[:, ctx.n_genes :] = covariates
            grad_w = grad.t().mm(dense)
        if ctx.needs_input_grad[1]:
            grad_b = grad.sum(0)
        return grad_w, grad_b, None, None


def sparse_input_linear(x: Tensor, covariates: Tensor | None, linear: nn.Linear) -> Tensor:
    """``linear(cat([log1p(x), covariates], -1))`` for a sparse COO ``x`` without densifying
    it in the forward pass (see :class:`_SparseInputLinear`)."""
    if covariates is not None and covariates.requires_grad:
        # not needed by the models here; keep exact autograd semantics
        return linear(torch.cat([log1p_dense(x), covariates], dim=-1))
    if not x.is_coalesced():
        x = x.coalesce()  # embedding_bag needs each cell's entries together, in row order
    return _SparseInputLinear.apply(linear.weight, linear.bias, x, covariates)


class GaussianEncoder(nn.Module):
    """Map ``log1p(counts)`` (and optional covariates) to a diagonal Normal's loc and scale.

    ``forward(x, covariates)`` takes counts ``x`` of shape ``(B, G)`` (dense or sparse COO)
    and an optional
    ``(B, C)`` one-hot and returns ``loc, scale`` of shape ``(B, n_latent)``. For a sparse
    ``x`` on the CPU the first layer is computed from the nonzeros
    (:func:`sparse_input_linear`); the parameters are the same either way.
    """

    def __init__(
        self,
        n_genes: int,
        n_latent: int,
        *,
        n_covariates: int = 0,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout: float = 0.1,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.body = MLP(n_genes + n_covariates, n_hidden, n_layers, dropout, norm)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.raw_scale = nn.Linear(n_hidden, n_latent)

    def forward(self, x: Tensor, covariates: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.is_sparse and x.device.type == "cpu":
            # first Linear straight from the nonzeros (on GPUs the dense matmul is cheap)
            h = sparse_input_linear(x, covariates, self.body[0])
            for i, layer in enumerate(self.body):
                if i:
                    h = layer(h)
        else:
            h = log1p_dense(x)
            if covariates is not None:
                h = torch.cat([h, covariates], dim=-1)
            h = self.body(h)
        return self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE

    def keep_latents(self, keep: Tensor) -> GaussianEncoder:
        """A copy that outputs only the latent dimensions ``keep`` ``(K,)``."""
        new = copy.deepcopy(self)
        keep = torch.as_tensor(keep, dtype=torch.long, device=self.loc.weight.device)
        for name in ("loc", "raw_scale"):
            old = getattr(self, name)
            lin = nn.Linear(old.in_features, len(keep)).to(old.weight.device)
            with torch.no_grad():
                lin.weight.copy_(old.weight[keep])
                lin.bias.copy_(old.bias[keep])
            setattr(new, name, lin)
        return new


class CountDecoder(nn.Module):
    """Map ``z`` (and optional covariates) to gene logits (and zero-inflation logits).

    ``forward(z, covariates)`` returns ``(logits, zi_logits)``, each ``(B, G)``;
    ``zi_logits`` is ``None`` unless ``zero_inflated``. ``log_softmax(logits)`` are the
    log proportions of the library that each gene receives.
    """

    def __init__(
        self,
        n_latent: int,
        n_genes: int,
        *,
        n_covariates: int = 0,
        n_hidden: int = 128,
        n_layers: int = 1,
        norm: str = "batch",
        zero_inflated: bool = False,
    ) -> None:
        super().__init__()
        self.n_covariates = n_covariates
        self.body = MLP(n_latent + n_covariates, n_hidden, n_layers, 0.0, norm)
        self.logits = nn.Linear(n_hidden, n_genes)
        self.zi_logits = nn.Linear(n_hidden, n_genes) if zero_inflated else None

    def forward(self, z: Tensor, covariates: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = z if covariates is None else torch.cat([z, covariates], dim=-1)
        h = self.body(h)
        zi = self.zi_logits(h) if self.zi_logits is not None else None
        return self.logits(h), zi

    def keep_latents(self, keep: Tensor) -> CountDecoder:
        """A copy that reads only the latent dimensions ``keep`` ``(K,)``: the first layer
        keeps those columns of its weight (and the covariate columns); the rest is copied."""
        new = copy.deepcopy(self)
        first: nn.Linear = self.body[0]
        keep = torch.as_tensor(keep, dtype=torch.long, device=first.weight.device)
        n_latent = first.in_features - self.n_covariates
        cols = torch.cat([keep, torch.arange(n_latent, first.in_features, device=keep.device)])
        lin = nn.Linear(len(cols), first.out_features).to(first.weight.device)
        with torch.no_grad():
            lin.weight.copy_(first.weight[:, cols])
            lin.bias.copy_(first.bias)
        new.body[0] = lin
        return new
