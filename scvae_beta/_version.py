"""The version of scvae_beta: written here only (pyproject.toml and __init__ read it)."""

__version__ = "0.1.0"
