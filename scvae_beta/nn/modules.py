"""MLP, Gaussian encoder q(z | x) and count decoder p(x | z): plain ``torch.nn`` modules."""

from __future__ import annotations

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


class GaussianEncoder(nn.Module):
    """Map ``log1p(counts)`` (and optional covariates) to a diagonal Normal's loc and scale.

    ``forward(x, covariates)`` takes counts ``x`` of shape ``(B, G)`` (dense or sparse COO)
    and an optional
    ``(B, C)`` one-hot and returns ``loc, scale`` of shape ``(B, n_latent)``.
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
        h = log1p_dense(x)
        if covariates is not None:
            h = torch.cat([h, covariates], dim=-1)
        h = self.body(h)
        return self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE


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
        self.body = MLP(n_latent + n_covariates, n_hidden, n_layers, 0.0, norm)
        self.logits = nn.Linear(n_hidden, n_genes)
        self.zi_logits = nn.Linear(n_hidden, n_genes) if zero_inflated else None

    def forward(self, z: Tensor, covariates: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = z if covariates is None else torch.cat([z, covariates], dim=-1)
        h = self.body(h)
        zi = self.zi_logits(h) if self.zi_logits is not None else None
        return self.logits(h), zi
