"""The documentation site covers the package: every public name has an API entry, every
tutorial and page is reachable. (``make docs`` builds it with warnings as errors; these checks
need no Sphinx.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import scvae_beta

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Public sub-packages documented function by function, with their prefix in docs/api.md.
SUBPACKAGES = ["tl", "pl", "metrics", "datasets"]


def _api_entries() -> set[str]:
    """Names listed under ``.. autosummary::`` in docs/api.md (``fit``, ``tl.latent_traversal``)."""
    entries, inside = set(), False
    for line in (DOCS / "api.md").read_text().splitlines():
        if ".. autosummary::" in line:
            inside = True
        elif inside and line.startswith("```"):
            inside = False
        elif inside and line.strip() and not line.strip().startswith(":"):
            entries.add(line.strip())
    return entries


def _toctree_entries(page: Path) -> set[str]:
    entries = set()
    for block in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), flags=re.S):
        entries |= {ln.strip() for ln in block.splitlines() if ln.strip() and ":" not in ln}
    return entries


def test_every_public_function_has_an_api_entry():
    entries = _api_entries()
    expected = {n for n in scvae_beta.__all__ if n not in SUBPACKAGES and not n.startswith("__")}
    for sub in SUBPACKAGES:
        expected |= {f"{sub}.{n}" for n in getattr(scvae_beta, sub).__all__}
    assert not expected - entries, f"add to docs/api.md: {sorted(expected - entries)}"
    assert not entries - expected, f"not public (any more): {sorted(entries - expected)}"


def test_every_tutorial_and_page_is_in_a_toctree():
    listed = _toctree_entries(DOCS / "index.md")
    notebooks = {f"tutorials/{p.stem}" for p in (ROOT / "tutorials").glob("*.ipynb")}
    assert notebooks and notebooks <= listed, sorted(notebooks - listed)
    pages = {p.stem for p in DOCS.glob("*.md") if p.stem != "index"}
    assert pages <= listed, sorted(pages - listed)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_included_files_and_images_exist(page):
    text = (DOCS / page).read_text()
    for target in re.findall(r"```\{(?:include|image)\} (\S+)", text):
        if target.startswith("_generated/"):  # written by conf.py at build time
            continue
        assert (DOCS / target).resolve().exists(), f"{page}: {target} does not exist"


def test_docs_build_is_strict_and_renders_stored_notebook_outputs():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"sphinx-build -W --keep-going .* docs docs/_build/html", make)
    conf = (DOCS / "conf.py").read_text()
    assert 'nb_execution_mode = "off"' in conf
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
