"""Sphinx configuration of the scvae_beta documentation (``make docs``).

API pages come from the numpy-style docstrings (autodoc + autosummary + napoleon, type hints
from the signatures), prose pages are MyST markdown, and the tutorials are the committed
notebooks in ``../tutorials`` rendered with their stored outputs (never executed here). The CLI
page includes the ``--help`` of every subcommand, generated from the argparse parser at build
time, so it cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not whatever is installed

import scvae_beta  # noqa: E402
from scvae_beta.cli import _parser  # noqa: E402

project = "scvae_beta"
author = "scvae_beta developers"
copyright = "2026, scvae_beta developers"
release = version = scvae_beta.__version__

extensions = [
    "myst_nb",  # MyST markdown and notebooks (brings myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated", "jupyter_execute", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Docstrings: numpy style, types from the annotations.
autosummary_generate = True
autodoc_default_options = {"member-order": "bysource"}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
typehints_document_rtype = True
always_document_param_types = False

# Prose and notebooks.
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the stored outputs of the committed notebooks
nb_merge_streams = True

html_theme = "furo"
html_title = f"scvae_beta {release}"
html_static_path = ["_static"]
html_theme_options = {"navigation_with_keys": True}


def _copy_tutorials() -> None:
    """The notebooks live in ../tutorials (executed by the tests); copy them into the source."""
    dest = HERE / "tutorials"
    dest.mkdir(exist_ok=True)
    for old in dest.glob("*.ipynb"):
        old.unlink()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(nb, dest / nb.name)


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def _cli_help() -> None:
    """``--help`` of ``scvae-beta`` and of every subcommand, as MyST for docs/cli.md."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width
    parser = _parser()
    parts = ["## `scvae-beta`\n", "```text\n" + parser.format_help() + "```\n"]
    for path, sub in _subcommands(parser):
        parts.append(f"## `scvae-beta {' '.join(path)}`\n")
        parts.append("```text\n" + sub.format_help() + "```\n")
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    (out / "cli_help.md").write_text("\n".join(parts))


_copy_tutorials()
_cli_help()

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates: a Python warning per
# docstring, not a Sphinx warning, and nothing the docs can fix.
warnings.filterwarnings("ignore", message=".*sphinx_autodoc_typehints.*set_application")
