"""Conventions, enforced: Scanpy signatures of the public AnnData-facing functions, and the
package layout (public functions live in private modules; nothing imports the package root)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import scvae_beta
from scvae_beta import pl, tl

#: Parameters allowed to be positional besides the first (the data).
POSITIONAL_OK = {"latent_traversal": {"model"}, "prune_dimensions": {"model"}}
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


#: ``pl`` functions that draw no Axes: ``report`` writes an HTML page and returns its path.
NOT_AXES = {"report"}
PLOTS = [(n, f) for n, f in _public(pl) if n not in NOT_AXES]


@pytest.mark.parametrize("name, func", PLOTS, ids=[n for n, _ in PLOTS])
def test_plots_take_an_ax_or_axes_and_default_it_to_none(name, func):
    params = inspect.signature(func).parameters
    key = "ax" if "ax" in params else "axes"
    assert key in params and params[key].default is None


@pytest.mark.parametrize("name, func", _public(tl), ids=[n for n, _ in _public(tl)])
def test_tools_write_under_a_key_and_document_returns(name, func):
    params = inspect.signature(func).parameters
    assert params["key"].default == "scvae_beta"
    assert "Returns" in (func.__doc__ or "")


# ---------------------------------------------------------------------- package layout

#: Packages whose public functions each live in a private module and are re-exported.
REEXPORTING = ["tl", "pl", "metrics", "datasets", "tune"]
PACKAGE_DIR = Path(scvae_beta.__file__).parent
#: Files allowed to import the package root for now (paths relative to ``scvae_beta/``).
#: Each is a known exception waiting for its owner to switch to submodule imports:
ROOT_IMPORT_ALLOWED: set[str] = set()  # none: every module imports submodules only


def _submodules(pkg) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(pkg.__path__)}


def _public_names(pkg) -> set[str]:
    return set(pkg.__all__) | {n for n in vars(pkg) if not n.startswith("_")}


@pytest.mark.parametrize("name", REEXPORTING)
def test_no_public_name_shadows_a_submodule(name):
    pkg = importlib.import_module(f"scvae_beta.{name}")
    clash = _public_names(pkg) & _submodules(pkg)
    assert not clash, f"scvae_beta.{name}: {sorted(clash)} are both a submodule and a name"


@pytest.mark.parametrize("name", REEXPORTING)
def test_public_functions_live_in_private_modules(name):
    pkg = importlib.import_module(f"scvae_beta.{name}")
    assert all(m.startswith("_") for m in _submodules(pkg)), (
        f"scvae_beta.{name} has public submodules: {sorted(_submodules(pkg))}"
    )
    for public in pkg.__all__:
        obj = getattr(pkg, public)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__module__.startswith(f"{pkg.__name__}._"), (public, obj.__module__)


def _root_imports(path: Path, root: Path = PACKAGE_DIR.parent) -> list[str]:
    """``import scvae_beta`` / ``from scvae_beta import ...`` (or relative ones) in a file."""
    package = path.relative_to(root).parts[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "scvae_beta"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module
            if target == "scvae_beta":
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''}")
    return found


def test_no_module_imports_the_package_root():
    offenders = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if rel == "__init__.py" or rel in ROOT_IMPORT_ALLOWED:
            continue
        if found := _root_imports(path):
            offenders[rel] = found
    assert not offenders, f"import submodules, not the package root: {offenders}"


@pytest.mark.parametrize(
    "source, n",
    [
        ("import scvae_beta\n", 1),
        ("from scvae_beta import metrics as M\n", 1),
        ("def f():\n    from scvae_beta import __version__\n", 1),
        ("from .. import tl\n", 1),
        ("import scvae_beta.metrics\nfrom scvae_beta.metrics import mig\nfrom . import _x\n", 0),
    ],
)
def test_the_root_import_check_sees_every_form(tmp_path, source, n):
    probe = tmp_path / "scvae_beta" / "tl" / "_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert len(_root_imports(probe, root=tmp_path)) == n
