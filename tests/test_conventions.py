"""Scanpy signature conventions of the public AnnData-facing functions, enforced."""

from __future__ import annotations

import inspect

import pytest

import scvae_beta
from scvae_beta import pl, tl

#: Parameters allowed to be positional besides the first (the data).
POSITIONAL_OK = {"latent_traversal": {"model"}}
#: The first parameter's name: the AnnData, or what stands for it.
FIRST = {"rate_distortion": "table"}


def _public(mod):
    return [(name, getattr(mod, name)) for name in mod.__all__]


FUNCS = [*_public(tl), *_public(pl), ("fit", scvae_beta.fit), ("tune_beta", scvae_beta.tune_beta)]


@pytest.mark.parametrize("name, func", FUNCS, ids=[n for n, _ in FUNCS])
def test_adata_first_and_everything_else_keyword_only(name, func):
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name == FIRST.get(name, "adata")
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for p in params[1:]:
        if p.name in POSITIONAL_OK.get(name, set()):
            continue
        assert p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD), (
            f"{name}: parameter {p.name!r} must be keyword-only"
        )


@pytest.mark.parametrize("name, func", _public(pl), ids=[n for n, _ in _public(pl)])
def test_plots_take_an_ax_or_axes_and_default_it_to_none(name, func):
    params = inspect.signature(func).parameters
    key = "ax" if "ax" in params else "axes"
    assert key in params and params[key].default is None


@pytest.mark.parametrize("name, func", _public(tl), ids=[n for n, _ in _public(tl)])
def test_tools_write_under_a_key_and_document_returns(name, func):
    params = inspect.signature(func).parameters
    assert params["key"].default == "scvae_beta"
    assert "Returns" in (func.__doc__ or "")
