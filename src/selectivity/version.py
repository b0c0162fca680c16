"""The package version (one definition; ``selectivity.__version__`` re-exports it)."""

__version__ = "0.1.0"
