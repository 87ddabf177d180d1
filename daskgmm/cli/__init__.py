"""The ``daskgmm`` command: argument parsing, run configurations, clusters, commands."""

from daskgmm.cli.main import main

__all__ = ["main"]
