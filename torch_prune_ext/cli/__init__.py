"""The command line interface (``torch-prune-ext``), kept apart from the library."""

from .main import main

__all__ = ["main"]
