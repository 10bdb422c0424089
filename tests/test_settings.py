"""Presets: a named set of settings, each value overridable by an explicit keyword."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import scvae_beta
from scvae_beta.settings import PRESETS, Settings, check_integer, check_number
from tests.conftest import FAST


def test_preset_fills_only_the_keywords_not_given():
    s = Settings.from_keywords({"preset": "disentangle", "beta": 3.0, "n_latent": 10}, {"beta"})
    assert s.beta == 3.0  # given explicitly: overrides the preset's 1.0
    for k, v in PRESETS["disentangle"].items():
        if k != "beta":
            assert getattr(s, k) == v
    assert s.preset == "disentangle"


def test_without_given_every_keyword_passed_counts_as_explicit():
    s = Settings.from_keywords({"preset": "disentangle", "n_latent": 10, "decoder": "mlp"})
    assert s.n_latent == 10 and s.decoder == "mlp" and s.model == PRESETS["disentangle"]["model"]


def test_the_presets_decoder_width_goes_with_its_decoder():
    assert PRESETS["disentangle"]["decoder_hidden"] == 8
    # another decoder keeps its own default width: an MLP decoder of 8 units would be a
    # different model, not the preset's width carried over
    for other in ("mlp", "additive_fast"):
        s = Settings.from_keywords({"preset": "disentangle", "decoder": other})
        assert s.decoder == other and s.decoder_hidden is None
    s = Settings.from_keywords({"preset": "disentangle", "decoder": "additive"})
    assert s.decoder_hidden == 8  # the preset's own decoder, named explicitly
    s = Settings.from_keywords({"preset": "disentangle", "decoder": "mlp", "decoder_hidden": 64})
    assert s.decoder_hidden == 64  # given explicitly: used as given
    s = Settings.from_keywords({"preset": "disentangle", "decoder_hidden": 16})
    assert s.decoder == "additive" and s.decoder_hidden == 16


def test_the_preset_keeps_the_capacity_schedule():
    # The preset named a linear schedule, so with a capacity the KL weight's warm-up and the
    # rising capacity both applied, where fit's default for a capacity is a constant weight.
    def schedule(**kw):
        s = Settings.from_keywords({"preset": "disentangle", **kw})
        return s.resolve(n_train=100, device="cpu").kl_schedule

    assert schedule() == "linear"
    assert schedule(capacity=(0.0, 5.0)) == "constant"
    assert schedule(capacity=(0.0, 5.0), kl_schedule="linear") == "linear"  # given: kept


def test_a_decoder_that_is_not_a_name_gets_a_message():
    with pytest.raises(ValueError, match="decoder=.'additive'. is not supported; choose one of"):
        Settings(decoder=["additive"])


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="disentangle"):
        Settings.from_keywords({"preset": "fast"})
    with pytest.raises(ValueError, match="disentangle"):
        Settings(preset="fast")


def test_fit_applies_the_preset_and_records_it(toy):
    scvae_beta.fit(toy, preset="disentangle", n_latent=4, model="beta_tcvae", **FAST)
    p = toy.uns["scvae_beta"]["params"]
    assert p["preset"] == "disentangle" and p["n_latent"] == 4 and p["model"] == "beta_tcvae"
    assert p["decoder"] == "additive" and p["kl_warmup"] == 0.5 and p["beta"] == 1.0
    assert Settings.from_dict(p).decoder == "additive"  # params reload without re-applying


def test_fit_signature_hides_the_given_keywords():
    params = inspect.signature(scvae_beta.fit).parameters
    assert "_given" not in params and params["preset"].default is None
    with pytest.raises(TypeError, match="_given"):
        scvae_beta.fit(None, _given=frozenset())


# ------------------------------------------------- the validators other modules use


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_check_integer_takes_numpy_integers_as_python_int(value):
    out = check_integer("n", value, low=1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, "must be an integer"),
        (3.0, TypeError, "pass 3"),
        (1.5, TypeError, "must be an integer"),
        ("3", TypeError, "must be an integer"),
        (0, ValueError, ">= 1"),
    ],
)
def test_check_integer_refuses(value, error, match):
    with pytest.raises(error, match=match):
        check_integer("n", value, low=1)


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), np.float64(0.5), 1])
def test_check_number_takes_real_scalars_as_python_float(value):
    out = check_number("x", value)
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "match"),
    [
        (False, {}, TypeError, "must be a number"),
        ("0.5", {}, TypeError, "must be a number"),
        (float("nan"), {"low": None}, ValueError, "finite"),
        (np.float64("inf"), {"low": None}, ValueError, "finite"),
        (-0.1, {}, ValueError, ">= 0"),
        (0.0, {"strict": True}, ValueError, "> 0"),
    ],
)
def test_check_number_refuses(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_number("x", value, **kwargs)


def test_check_number_without_bound_takes_negatives():
    assert check_number("x", -2.5, low=None) == -2.5
