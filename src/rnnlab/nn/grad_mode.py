"""Inference without the backward's memory: ``with rnnlab.nn.no_grad(): out, state = lstm(x)``.

A recurrent layer's forward normally keeps what its backward reads: every step's cell state and
tanh(c) (LSTM) or h W_hn^T + b_hn (GRU), the gate activations, each layer's input. Under
:func:`no_grad` its time loop stores only the hidden states it returns (the cell state in two
rows used in turn) and the layer keeps no cache, so an LSTM forward needs about 5 instead of 7
(T, B, H)-sized buffers per layer and direction and frees them when it returns; ``backward``
after such a forward is an error that says so. Outputs and final states are the same numbers,
bit for bit (tests/nn/test_grad_mode.py).

The recurrent layers (RNN, LSTM, GRU, and the models built on them) honour it; the other
layers' caches are references to arrays that exist anyway. The engine's validation and the
generation, decoding and forecasting paths run under it. The switch is a context variable:
per thread, restored when the block ends (an exception included), nestable, and usable as a
decorator (``@no_grad()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_enabled: ContextVar[bool] = ContextVar("rnnlab_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """Whether forwards keep what their backward needs (false inside :func:`no_grad`)."""
    return _enabled.get()


@contextmanager
def no_grad() -> Iterator[None]:
    """Run forwards inside the block for inference only: nothing kept for backward."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


__all__ = ["is_grad_enabled", "no_grad"]
