"""Packaging: the version lives in one place, and the built wheel works on its own.

The slow test builds the sdist and, from it, the wheel (no build isolation, so nothing is
downloaded), installs the wheel without dependencies into a fresh virtual environment whose
dependencies come from this environment's site-packages through a ``.pth`` file, and there
imports the package, loads the bundled data and runs a 2-epoch fit. A file missing from the
package data (the bundled ``.h5ad``, the manifests, ``py.typed``, the kernel's C++ source)
fails it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import scvae_beta

ROOT = Path(__file__).resolve().parents[1]
#: Files the wheel must carry besides the Python modules.
PACKAGE_DATA = [
    "scvae_beta/py.typed",
    "scvae_beta/datasets/pbmc_sorted_2k_hvg.h5ad",
    "scvae_beta/datasets/paul15_subset.h5ad",
    "scvae_beta/datasets/PROVENANCE.md",
    "scvae_beta/nn/_lse_native.cpp",  # the additive decoder's CPU kernel, built at first use
]
#: Not copied into the build tree (caches, environments, build outputs).
IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", "_build", "demo_output", "*.pyc", ".ipynb_checkpoints",
)  # fmt: skip

SMOKE = """
import sys, importlib.resources as res
from pathlib import Path
import scvae_beta
here = Path(scvae_beta.__file__).resolve()
assert here.is_relative_to(Path(sys.prefix).resolve()), here  # the wheel, not the checkout
assert res.files("scvae_beta").joinpath("py.typed").is_file()
from scvae_beta.nn import _native
assert _native.SOURCE.is_file() and _native.SOURCE.resolve().is_relative_to(here.parent)
assert scvae_beta.datasets.list_datasets().shape[0] >= 2
adata = scvae_beta.datasets.pbmc_sorted()
adata = adata[:300].copy()
model = scvae_beta.fit(adata, max_epochs=2, n_hidden=16, n_latent=4, progress=False)
assert adata.obsm["X_scvae_beta"].shape == (300, 4)
print("OK", scvae_beta.__version__, here)
"""


def test_the_version_is_written_once():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    attr = meta["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "scvae_beta._version.__version__"
    assert scvae_beta.__version__.count(".") == 2
    # the only literal version string in the package is in _version.py
    pkg = ROOT / "scvae_beta"
    hits = [p.name for p in pkg.rglob("*.py") if "__version__ = " in p.read_text()]
    assert hits == ["_version.py"]
    assert not re.search(r"^version:", (ROOT / "CITATION.cff").read_text(), flags=re.M)


@pytest.mark.parametrize("constraints", ["constraints.txt", "benchmarks/constraints-bench.txt"])
def test_every_pin_satisfies_the_package_requirements(constraints):
    # A pin outside a bound of pyproject.toml makes the documented install fail to resolve
    # (constraints-bench.txt kept pynndescent 0.7.0 after the requirement gained "<0.7").
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in meta["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    pins = {}
    for line in (ROOT / constraints).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    checked = 0
    for req in reqs:
        version = pins.get(canonicalize_name(req.name))
        if version is not None and req.marker is None:
            assert req.specifier.contains(version, prereleases=True), (
                f"{constraints} pins {req.name}=={version}, outside pyproject's {req}"
            )
            checked += 1
    assert checked >= 10  # the core requirements are pinned in both files


def test_changelog_citation_and_typing_marker():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog
    assert f"## {scvae_beta.__version__}" in changelog or "## Unreleased" in changelog
    assert "## 0.1.0" in changelog
    cff = (ROOT / "CITATION.cff").read_text()
    assert cff.startswith("cff-version: 1.2.0") and "title:" in cff and "authors:" in cff
    assert (ROOT / "scvae_beta" / "py.typed").exists()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["scvae_beta"]


def _run(cmd: list[str], **kw) -> str:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_fits(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check"]
        + ["--outdir", str(dist), str(src)]
    )
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    version = scvae_beta.__version__
    assert f"-{version}-" in wheels[0].name and sdists[0].name.endswith(f"-{version}.tar.gz")
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = [f for f in PACKAGE_DATA if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert any(n.startswith("scvae_beta/datasets/manifests/") for n in names)
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", str(wheels[0])])
    # Dependencies from this environment, after the venv's own site-packages (a plain path: the
    # .pth files there, such as the editable install of the checkout, are not processed).
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]))
    (Path(str(site).strip()) / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    assert (venv / "bin" / "scvae-beta").exists()
    out = _run([str(py), "-c", SMOKE], cwd=tmp_path)
    assert f"OK {version}" in out and str(venv.resolve()) in out
    assert "usage: scvae-beta" in _run([str(venv / "bin" / "scvae-beta"), "--help"])
