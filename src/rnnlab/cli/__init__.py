"""The ``rnnlab`` command: ``main`` dispatches; one module per command group parses its options,
calls the library and prints."""

from rnnlab.cli.main import main

__all__ = ["main"]
