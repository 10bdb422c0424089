"""Progress feedback over epochs (tqdm; silent with ``progress=False``)."""

from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """An epoch bar showing the training loss and the KL weight."""

    def __init__(self, max_epochs: int, enabled: bool, initial: int = 0) -> None:
        self.bar = tqdm(
            total=max_epochs,
            initial=initial,
            desc="scvae_beta",
            unit="epoch",
            disable=not enabled,
        )

    def update(self, row: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['train_loss']:.4g}", w=f"{row['kl_weight']:.3g}")

    def close(self) -> None:
        self.bar.close()
