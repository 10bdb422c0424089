"""The one base class of the objectives: what a model adds to the reconstruction loss.

An objective is an ``nn.Module`` (so that auxiliary networks, such as FactorVAE's
discriminator, are its submodules and travel with it to a device, into a state dict and under
``DistributedDataParallel``). Each subclass lives in its own file and says:

- :meth:`parts`: its differentiable penalty terms on one minibatch (per cell, nats);
- :meth:`penalty`: how they combine with the annealing factor and the capacity ``C``;
- :meth:`report`: terms it adds to the per-epoch validation and the whole-data decomposition;
- :meth:`auxiliary_step`: the update of its own auxiliary network (if any);
- :attr:`history_columns`: the ``train_*`` columns it logs.

:data:`scvae_beta.objectives.registry.OBJECTIVES` maps each model name to its class: adding an
objective is one file plus one table entry.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from scvae_beta.models.elbo import ELBOTerms


class Objective(nn.Module):
    """Penalty of a model on top of ``-log p(x | z)``; subclasses set the class attributes.

    Parameters
    ----------
    settings
        The fit's :class:`~scvae_beta.settings.Settings` (weights ``beta``, ``alpha``,
        ``gamma``, the estimator, the annealed terms, the capacity). ``gamma`` must be
        resolved (see :meth:`Settings.resolve`).
    n_latent
        Latent dimensions (for auxiliary networks on ``z``).
    """

    #: Name in the table (``fit(model=...)``).
    name: ClassVar[str]
    #: ``gamma`` when the user gives none.
    default_gamma: ClassVar[float] = 1.0
    #: Whether the KL weight enters as ``poutine.scale`` on the latent site (no explicit term).
    pyro_scale: ClassVar[bool] = False
    #: Per-epoch training columns logged as ``"train_" + name`` (the names of :meth:`parts`).
    history_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings, n_latent: int) -> None:
        super().__init__()
        if settings.gamma is None:
            raise ValueError("Objective needs resolved settings (gamma); call Settings.resolve")
        self.beta = float(settings.beta)
        self.alpha = float(settings.alpha)
        self.gamma = float(settings.gamma)
        self.capacity = settings.capacity
        self.estimator = settings.tc_estimator
        self.block_size = settings.tc_block_size
        self.anneal_terms = tuple(settings.kl_anneal_terms)

    @classmethod
    def check_weights(cls, settings) -> None:
        """Raise when ``settings`` sets a weight this objective does not use."""

    @property
    def uses_pyro_scale(self) -> bool:
        """``beta * anneal`` goes in as ``poutine.scale`` on the latent site (no capacity)."""
        return self.pyro_scale and self.capacity is None

    def kl_weight(self, anneal: float) -> float:
        """Weight of the latent site in the ELBO: ``beta * anneal`` on the Pyro route, else 1."""
        return self.beta * anneal if self.uses_pyro_scale else 1.0

    def parts(self, terms: ELBOTerms, n_cells: int) -> dict[str, Tensor]:
        """Differentiable penalty terms on one minibatch (mean per cell); none by default."""
        return {}

    def penalty(
        self,
        kl: Tensor,
        parts: dict[str, Tensor],
        *,
        anneal: float = 1.0,
        capacity: float | None = None,
    ) -> Tensor:
        """Penalty per cell from the mean KL ``kl`` and the :meth:`parts`.

        ``anneal`` is the schedule's factor in [0, 1]; ``capacity`` the current ``C``
        (``None`` without capacity control). The default is ``anneal * beta * KL`` (or
        ``anneal * beta * |KL - C|``).
        """
        return anneal * self.beta * self._kl_term(kl, capacity)

    @staticmethod
    def _kl_term(kl: Tensor, capacity: float | None) -> Tensor:
        return kl if capacity is None else (kl - capacity).abs()

    def report(self, z: Tensor, loc: Tensor, scale: Tensor) -> dict[str, float]:
        """Terms reported beside MI, TC and dw-KL for a minibatch's posterior samples ``z``
        and parameters ``loc``, ``scale`` (each ``(B, D)``): per-epoch validation (where the
        validation loss's penalty reads them) and the whole-data decomposition. It must
        return every part :meth:`penalty` needs that is not ``mi``, ``tc`` or ``dw_kl``."""
        return {}

    def auxiliary_step(self, z: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Update auxiliary networks on the detached codes ``z`` of a training step.

        Returns per-step values to average into the epoch's history (e.g. ``disc_loss``).
        """
        return {}

    def auxiliary_state_dict(self) -> dict:
        """State of the auxiliary optimisers (the networks are in ``state_dict``), for a
        checkpoint; ``{}`` without any."""
        return {}

    def load_auxiliary_state_dict(self, state: dict) -> None:
        """Continue from :meth:`auxiliary_state_dict` (the module on its device already)."""
