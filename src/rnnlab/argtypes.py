"""Shared by the command-line parsers (``cli.py``, ``cli_seq2seq.py``, ``diagnostics``): argparse
value types and the error for user mistakes."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1, or a usage error that names what came."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0, or a usage error that names what came."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


class UserError(Exception):
    """A mistake on the command line or in the data: one line on stderr, exit status 2."""
