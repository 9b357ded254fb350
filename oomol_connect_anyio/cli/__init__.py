"""The ``oomol-connect`` command line (the ``cli`` extra, which brings rich)."""

from ._app import main

__all__ = ["main"]
