"""One settings object whose field names are :func:`scvae_beta.fit`'s keywords.

:class:`Settings` is the single schema of a fit: ``fit`` builds it from its keywords (checking
every value once, here), writes ``Settings.to_dict()`` to ``uns[key]["params"]``, ``save``
stores it and ``load``, ``tl`` and ``tune`` read it back with :meth:`Settings.from_dict`.
Values the user leaves to ``fit`` (``gamma=None``, ``max_epochs=None``, ``kl_schedule=None``,
``device="auto"``) are resolved by :meth:`Settings.resolve` before training, so the stored
settings say exactly what was used.

The option types (``ModelName``, ``DecoderName``, ...) are the ``Literal`` types used in the
public signatures; the tables that map them to classes live with the classes
(:data:`scvae_beta.objectives.OBJECTIVES`, :data:`scvae_beta.models.DECODERS`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

ModelName = Literal["beta_vae", "beta_tcvae", "factor_vae"]
DecoderName = Literal["mlp", "additive", "additive_fast", "additive_global"]
PresetName = Literal["disentangle"]
Likelihood = Literal["nb", "zinb", "poisson"]
Dispersion = Literal["gene", "gene-batch"]
Norm = Literal["batch", "layer", "none"]
ScheduleName = Literal["linear", "cyclical", "sigmoid", "constant"]
TCEstimator = Literal["mss", "mws"]
KLTerm = Literal["mi", "tc", "dw_kl"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]

KL_TERMS: tuple[str, ...] = get_args(KLTerm)

#: Default threshold (nats) above which a latent dimension counts as active.
ACTIVE_THRESHOLD = 0.05

#: Characters that cannot appear in an ``obsm``/``uns`` key written to ``.h5ad``.
_BAD_KEY_CHARS = ("/", "\x00")


def _choices(name: str, value: Any, literal) -> str:
    choices = get_args(literal)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}")
    return value


def check_number(name: str, value: Any, *, low: float | None = 0.0, strict: bool = False) -> float:
    """A finite real number (NumPy scalars included) as a Python float, checked against ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v <= low if strict else v < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low:g}, got {value!r}")
    return v


def check_integer(name: str, value: Any, *, low: int) -> int:
    """An integer (NumPy integers included) as a Python int, ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = f"; pass {int(value)}" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){hint}")
    if int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_key(key_added: Any) -> str:
    """``key_added`` as a str that ``write_h5ad``/``read_h5ad`` can round-trip."""
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    bad = [c for c in _BAD_KEY_CHARS if c in key_added]
    if bad:
        raise ValueError(
            f"key_added={key_added!r} contains {bad!r}, which .h5ad files cannot store in a key; "
            "use letters, digits and '_' (e.g. key_added='scvae_beta_run1')"
        )
    return key_added


@dataclass(frozen=True)
class Settings:
    """Every setting of a fit; field names and defaults are :func:`scvae_beta.fit`'s keywords.

    See :func:`scvae_beta.fit` for the meaning of each field. ``Settings(**kwargs)`` checks
    and normalises every value (NumPy scalars become Python numbers, ``capacity`` a tuple of
    floats) and raises an error naming the fix.
    """

    preset: PresetName | None = None
    model: ModelName = "beta_vae"
    beta: float = 1.0
    alpha: float = 1.0
    gamma: float | None = None
    tc_estimator: TCEstimator = "mss"
    tc_block_size: int | None = 128
    capacity: tuple[float, float] | None = None
    capacity_fraction: float = 0.5
    n_latent: int = 10
    decoder: DecoderName = "mlp"
    decoder_hidden: int | None = None
    layer: str | None = None
    batch_key: str | None = None
    key_added: str = "scvae_beta"
    likelihood: Likelihood = "nb"
    dispersion: Dispersion = "gene"
    n_hidden: int = 128
    n_layers: int = 1
    dropout: float = 0.1
    norm: Norm = "batch"
    encode_batch: bool = False
    kl_schedule: ScheduleName | None = None
    kl_anneal_terms: tuple[KLTerm, ...] = KL_TERMS
    kl_warmup: int | float = 0.25
    kl_cycles: int = 4
    max_epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = 10.0
    validation_fraction: float = 0.1
    early_stopping: bool = True
    patience: int = 20
    active_threshold: float = ACTIVE_THRESHOLD
    prune: bool = False
    prune_epochs: int = 20
    device: str = "auto"
    seed: int = 0
    n_threads: int | None = None
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    data_on_device: bool | None = None
    precision: Precision = "fp32"
    #: Not keywords of ``fit``: fixed settings recorded for completeness.
    min_delta: float = field(default=0.0, repr=False)
    kl_cycle_ratio: float = field(default=0.5, repr=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        # Imported here: objectives import this module for the option types.
        from scvae_beta.objectives.registry import objective_class

        if self.preset is not None:
            _choices("preset", self.preset, PresetName)
        _choices("model", self.model, ModelName)
        cls = objective_class(self.model)
        s(self, "beta", check_number("beta", self.beta))
        s(self, "alpha", check_number("alpha", self.alpha))
        if self.gamma is not None:
            s(self, "gamma", check_number("gamma", self.gamma))
        cls.check_weights(self)
        _choices("tc_estimator", self.tc_estimator, TCEstimator)
        if self.tc_block_size is not None:
            s(self, "tc_block_size", check_integer("tc_block_size", self.tc_block_size, low=2))
        if self.capacity is not None:
            c = self.capacity
            if isinstance(c, str) or not hasattr(c, "__len__") or len(c) != 2:
                raise ValueError(f"capacity must be (C_min, C_max) in nats, got {c!r}")
            lo, hi = (check_number(f"capacity[{i}]", v) for i, v in enumerate(c))
            if lo > hi:
                raise ValueError(
                    f"capacity must be (C_min, C_max) with 0 <= C_min <= C_max nats, got {c!r}"
                )
            s(self, "capacity", (lo, hi))
        cf = check_number("capacity_fraction", self.capacity_fraction, strict=True)
        if cf > 1:
            raise ValueError(f"capacity_fraction must be in (0, 1], got {self.capacity_fraction}")
        s(self, "capacity_fraction", cf)
        s(self, "n_latent", check_integer("n_latent", self.n_latent, low=1))
        from scvae_beta.models.decoders import DECODERS

        if not isinstance(self.decoder, str) or self.decoder not in DECODERS:
            raise ValueError(
                f"decoder={self.decoder!r} is not supported; choose one of {list(DECODERS)}"
            )
        if self.decoder_hidden is not None:
            s(self, "decoder_hidden", check_integer("decoder_hidden", self.decoder_hidden, low=1))
        for name in ("layer", "batch_key"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{name} must be a string or None, got {v!r}")
        check_key(self.key_added)
        _choices("likelihood", self.likelihood, Likelihood)
        _choices("dispersion", self.dispersion, Dispersion)
        if self.dispersion == "gene-batch" and self.batch_key is None:
            raise ValueError(
                "dispersion='gene-batch' needs a batch_key; pass batch_key=... or dispersion='gene'"
            )
        s(self, "n_hidden", check_integer("n_hidden", self.n_hidden, low=1))
        s(self, "n_layers", check_integer("n_layers", self.n_layers, low=1))
        d = check_number("dropout", self.dropout)
        if d >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        s(self, "dropout", d)
        _choices("norm", self.norm, Norm)
        s(self, "encode_batch", _flag("encode_batch", self.encode_batch))
        if self.kl_schedule is not None:
            _choices("kl_schedule", self.kl_schedule, ScheduleName)
        terms = self.kl_anneal_terms
        if isinstance(terms, str):
            raise TypeError(
                f"kl_anneal_terms must be a list of terms, got the string {terms!r}; "
                f"pass e.g. kl_anneal_terms=({terms!r},)"
            )
        terms = tuple(terms)
        bad = [t for t in terms if t not in KL_TERMS]
        if bad:
            raise ValueError(f"kl_anneal_terms {bad} not understood; choose from {list(KL_TERMS)}")
        s(self, "kl_anneal_terms", terms)
        w = self.kl_warmup
        if isinstance(w, numbers.Integral) and not isinstance(w, bool):
            s(self, "kl_warmup", check_integer("kl_warmup", w, low=0))
        elif isinstance(w, numbers.Real) and not isinstance(w, bool):
            w = float(w)
            if not 0.0 <= w <= 1.0:
                raise ValueError(
                    f"kl_warmup={w} as a fraction must be in [0, 1]; "
                    "pass an int for a number of steps"
                )
            s(self, "kl_warmup", w)
        else:
            raise TypeError(f"kl_warmup must be an int (steps) or a float fraction, got {w!r}")
        s(self, "kl_cycles", check_integer("kl_cycles", self.kl_cycles, low=1))
        if self.max_epochs is not None:
            s(self, "max_epochs", check_integer("max_epochs", self.max_epochs, low=1))
        s(self, "batch_size", check_integer("batch_size", self.batch_size, low=2))
        s(self, "lr", check_number("lr", self.lr, strict=True))
        s(self, "weight_decay", check_number("weight_decay", self.weight_decay))
        if self.clip_norm is not None:
            s(self, "clip_norm", check_number("clip_norm", self.clip_norm, strict=True))
        vf = check_number("validation_fraction", self.validation_fraction)
        if vf >= 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {vf}")
        s(self, "validation_fraction", vf)
        s(self, "early_stopping", _flag("early_stopping", self.early_stopping))
        s(self, "patience", check_integer("patience", self.patience, low=1))
        s(
            self,
            "active_threshold",
            check_number("active_threshold", self.active_threshold, low=None),
        )
        s(self, "prune", _flag("prune", self.prune))
        s(self, "prune_epochs", check_integer("prune_epochs", self.prune_epochs, low=1))
        if not isinstance(self.device, str) or self.device.split(":")[0] not in get_args(Device):
            raise ValueError(
                f"device={self.device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N' "
                "(lower case)"
            )
        s(self, "seed", check_integer("seed", self.seed, low=0))
        if self.n_threads is not None:
            s(self, "n_threads", check_integer("n_threads", self.n_threads, low=1))
        s(self, "progress", _flag("progress", self.progress))
        self._check_checkpoints()
        if self.data_on_device is not None:
            s(self, "data_on_device", _flag("data_on_device", self.data_on_device))
        _choices("precision", self.precision, Precision)
        s(self, "min_delta", check_number("min_delta", self.min_delta))
        cr = check_number("kl_cycle_ratio", self.kl_cycle_ratio, strict=True)
        if cr > 1:
            raise ValueError(f"kl_cycle_ratio must be in (0, 1], got {cr}")
        s(self, "kl_cycle_ratio", cr)

    def _check_checkpoints(self) -> None:
        s = object.__setattr__
        folder = self.checkpoint_dir
        if folder is not None:
            if not isinstance(folder, str | os.PathLike) or not os.fspath(folder):
                raise TypeError(f"checkpoint_dir must be a folder path or None, got {folder!r}")
            s(self, "checkpoint_dir", os.fspath(folder))
        if self.checkpoint_every is not None:
            s(
                self,
                "checkpoint_every",
                check_integer("checkpoint_every", self.checkpoint_every, low=1),
            )
        s(self, "resume", _flag("resume", self.resume))
        if self.checkpoint_dir is None and (self.resume or self.checkpoint_every is not None):
            given = "resume=True" if self.resume else "checkpoint_every"
            raise ValueError(f"{given} needs checkpoint_dir=...: the folder of the checkpoints")

    # ------------------------------------------------------------------ resolution

    @property
    def resolved(self) -> bool:
        """Whether every ``None``/``"auto"`` left to ``fit`` has been replaced."""
        return (
            self.gamma is not None
            and self.kl_schedule is not None
            and self.max_epochs is not None
            and self.device != "auto"
        )

    def resolve(self, *, n_train: int, device: str) -> Settings:
        """Fill in what ``fit`` decides: the model's default ``gamma``, the KL schedule
        (``"constant"`` with a capacity, else ``"linear"``), the epoch budget
        (:func:`default_max_epochs` of ``n_train``) and the resolved ``device``."""
        from scvae_beta.objectives.registry import objective_class

        return self.replace(
            gamma=objective_class(self.model).default_gamma if self.gamma is None else self.gamma,
            kl_schedule=self.kl_schedule or ("constant" if self.capacity is not None else "linear"),
            max_epochs=self.max_epochs or default_max_epochs(n_train),
            device=device,
        )

    def model_config(self, n_genes: int, n_batches: int):
        """The :class:`~scvae_beta.config.ModelConfig` of these settings for the data's size."""
        from scvae_beta.config import ModelConfig

        return ModelConfig(
            n_genes=n_genes,
            n_latent=self.n_latent,
            n_hidden=self.n_hidden,
            n_layers=self.n_layers,
            dropout=self.dropout,
            norm=self.norm,
            likelihood=self.likelihood,
            dispersion=self.dispersion,
            n_batches=n_batches,
            encode_batch=self.encode_batch,
            decoder=self.decoder,
            decoder_hidden=self.decoder_hidden,
        )

    @classmethod
    def from_keywords(cls, kwargs: dict, given=None) -> Settings:
        """Settings from ``fit``'s keywords with ``kwargs["preset"]`` applied: each of the
        preset's values (:data:`PRESETS`) is used unless its keyword is in ``given`` (the
        keywords the caller passed explicitly; ``None``: all of ``kwargs``). The preset's
        ``decoder_hidden`` is a width for the preset's decoder: with another ``decoder`` given
        explicitly it is not applied (that decoder keeps its own default width)."""
        kwargs = dict(kwargs)
        preset = kwargs.get("preset")
        if preset is not None:
            _choices("preset", preset, PresetName)
            given = set(kwargs) if given is None else set(given)
            values = dict(PRESETS[preset])
            if "decoder" in given and kwargs.get("decoder") != values.get("decoder"):
                values.pop("decoder_hidden", None)
            kwargs.update({k: v for k, v in values.items() if k not in given})
        return cls(**kwargs)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        """Plain, ``.h5ad``- and JSON-safe values (tuples become lists, ``None`` stays)."""
        d = dataclasses.asdict(self)
        d["kl_anneal_terms"] = list(self.kl_anneal_terms)
        d["capacity"] = None if self.capacity is None else list(self.capacity)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        """Settings from :meth:`to_dict` output, or from the ``params`` of an older release
        (which used ``anneal_terms`` and had derived entries such as ``n_cells``; values read
        back from ``.h5ad`` may be NumPy scalars or arrays)."""
        d = dict(d)
        if "anneal_terms" in d and "kl_anneal_terms" not in d:
            d["kl_anneal_terms"] = d.pop("anneal_terms")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for k, v in d.items():
            if k not in names:
                continue
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            if k == "kl_anneal_terms":
                v = tuple(v)
            kwargs[k] = v
        # .h5ad stores None entries as missing keys; fill the defaults that mean "None".
        return cls(**kwargs)


#: Named sets of settings for ``fit(preset=...)``; an explicit keyword overrides its entry.
#: ``"disentangle"``: an additive decoder (a gene program per dimension, combined in log
#: space) with 8 hidden units per dimension, under the plain VAE objective (β-VAE, β = 1), a
#: generous latent size and a linear KL warm-up over half of training (``fit``'s default
#: schedule: with a ``capacity`` it is constant, as without the preset); chosen from the
#: measurements in ``benchmarks/RESULTS.md`` (with this decoder a total-correlation penalty,
#: β-TCVAE β = 2, spread cell types over more dimensions and did not raise LMS on any data
#: set; 8 hidden units instead of the decoder's default 16 disentangled as well on nine real
#: data sets and cut the epoch from ~2.3x to ~1.9x the MLP decoder's, but clustered lower on
#: three of them, the pancreas among them, and higher on two).
PRESETS: dict[str, dict[str, Any]] = {
    "disentangle": {
        "model": "beta_vae",
        "beta": 1.0,
        "decoder": "additive",
        "decoder_hidden": 8,
        "n_latent": 32,
        "kl_warmup": 0.5,
    },
}


def default_max_epochs(n_cells: int) -> int:
    """Epoch budget: about 4 million cell passes, between 20 and 400 epochs.

    ``clip(round(4_000_000 / n_cells), 20, 400)``: 400 epochs up to 10,000 training cells,
    about 200 at 20,000, 40 at 100,000 and at least 20. Early stopping usually ends sooner.
    """
    return int(np.clip(round(4_000_000 / max(n_cells, 1)), 20, 400))
