"""Scanpy-style progress messages: ``computing ...`` then ``finished (0:00:12)`` with what was
added. Through ``scanpy.logging`` when Scanpy is loaded (so ``sc.settings.verbosity`` and
``sc.settings.logfile`` apply), else the ``scvae_beta`` standard-library logger at INFO."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timedelta

_LOGGER = logging.getLogger("scvae_beta")


def start(msg: str) -> datetime:
    """Log ``msg`` (e.g. ``"fitting beta_vae"``); returns the start time for :func:`finish`."""
    if "scanpy" in sys.modules:
        from scanpy import logging as logg

        return logg.info(msg)
    _LOGGER.info(msg)
    return datetime.now()


def finish(started: datetime, added: str) -> None:
    """``    finished (elapsed)`` with ``added`` (e.g. ``"added\\n    .obsm['X_...']"``)."""
    if "scanpy" in sys.modules:
        from scanpy import logging as logg

        logg.info("    finished", time=started, deep=added)
        return
    elapsed = timedelta(seconds=round((datetime.now() - started).total_seconds()))
    _LOGGER.info("    finished (%s): %s", elapsed, added)


__all__ = ["start", "finish"]
