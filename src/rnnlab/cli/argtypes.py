"""Shared by the command-line parsers (``rnnlab.cli``): argparse
value types, the error for user mistakes, and SIGTERM handling for the training commands."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading


def _number_type(convert, ok, expected: str):
    """An argparse type: ``convert(text)``, kept when ``ok(value)``, else a usage error that
    says what was expected and what came."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = expected  # argparse names the type in "invalid ... value" messages
    return parse


INF = float("inf")
positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda v: 0 < v < INF, "a finite number > 0")
non_negative_float = _number_type(float, lambda v: 0 <= v < INF, "a finite number >= 0")
probability = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")  # dropout rates


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
