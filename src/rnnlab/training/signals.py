"""Ctrl-C (SIGINT) and SIGTERM during training: noted, then acted on where the state is whole."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped :meth:`Trainer.fit`. ``signum`` says which signal;
    ``at_once`` is True for a second signal, which stops wherever the loop is and saves nothing
    (the checkpoint on disk stays as it was)."""

    def __init__(self, signum: int, at_once: bool = False) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.at_once = signum, at_once


def signal_number(signum: int | None) -> int:
    """The signal that stops a run: this process's, or SIGTERM when another rank of a
    data-parallel run received it."""
    return signum if signum is not None else int(signal.SIGTERM)


class DeferredSignals:
    """While active (in the main thread), SIGINT and SIGTERM only set :attr:`signum`, and the
    loop that owns this object stops where its state is whole: before a step, or instead of an
    evaluation (which it gives up). So a checkpoint never holds half a step (weights updated,
    counters not; a dropout generator advanced), a metrics record twice, or half an epoch's
    bookkeeping. A second signal raises :class:`Interrupted` (``at_once``) wherever the loop is.
    A signal the process ignores (a background job's SIGINT), or one handled from C, is left
    alone; outside the main thread (where handlers cannot be set) nothing changes."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def pending(self) -> bool:
        return self.signum is not None

    def raise_if_pending(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def active(self):
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):  # no print here: it could re-enter a write in progress
            if self.signum is not None:
                raise Interrupted(signum, at_once=True)
            self.signum = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is not None and old is not signal.SIG_IGN:
                previous[sig] = old
                signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
