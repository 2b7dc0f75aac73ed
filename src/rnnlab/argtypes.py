"""Shared by the command-line parsers (``cli.py``, ``cli_seq2seq.py``, ``diagnostics``): argparse
value types, the error for user mistakes, and SIGTERM handling for the training commands."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading


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
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0, or a usage error that names what came."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, or a usage error that names what came."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1) (a dropout rate), or a usage error that names what came."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


class UserError(Exception):
    """A mistake on the command line or in the data: one line on stderr, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a job scheduler's time limit): treated as Ctrl-C."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the
    main thread, so ``kill PID`` ends ``train seq2seq`` the way Ctrl-C does (its checkpoint
    holds the last finished epoch); a second SIGTERM acts at once. (``train lm`` needs no
    wrapper: its Trainer defers both signals to the next step boundary and saves that step.)
    The previous handler comes back afterwards; outside
    the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM stops at once
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit_code(err: KeyboardInterrupt) -> int:
    """The shell's convention, 128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C (an
    interrupt that names no signal)."""
    return 128 + int(getattr(err, "signum", signal.SIGINT))
