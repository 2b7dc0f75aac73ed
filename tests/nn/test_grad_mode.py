"""rnnlab.nn.no_grad: inference forwards store only what they return (the kernels' ``keep``
false), give the same numbers bit for bit on every kernel set, use less memory, keep no cache
(so a backward says why it cannot run), and the switch behaves as a context variable."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import rnnlab.nn as nn
from rnnlab.nn import kernels
from rnnlab.nn.kernels.numpy import state_rows

CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _layer(kind, dtype, **kw):
    return CLASSES[kind](5, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=3, **kw)


def _inputs(kind, dtype, T=9, B=4):
    g = np.random.default_rng(5)
    x = g.standard_normal((T, B, 5)).astype(dtype)
    states = [(0.5 * g.standard_normal((4, B, 6))).astype(dtype)
              for _ in range(2 if kind == "lstm" else 1)]
    return x, (tuple(states) if kind == "lstm" else states[0])


def _as_list(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("lengths", [None, [9, 4, 1, 6]])
@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inference_forward_equals_the_training_forward(kernel_set, dtype, kind, lengths):
    """Both directions, two layers, an odd and an even number of steps: the cell state's two
    rows end where the full history ends (row -1 forward, row 0 reverse), so the final
    states, which the layers read from there, are the training forward's."""
    m = _layer(kind, dtype)
    for T in (9, 8):
        x, state = _inputs(kind, dtype, T=T)
        lens = None if lengths is None else [min(n, T) for n in lengths]
        out, final = m(x, state, lengths=lens)
        with nn.no_grad():
            out_i, final_i = m(x, state, lengths=lens)
        np.testing.assert_array_equal(out_i, out)
        for got, want in zip(_as_list(final_i), _as_list(final), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", list(CLASSES))
def test_no_cache_is_kept_and_backward_says_why(kind):
    m = _layer(kind, np.float64)
    x, state = _inputs(kind, np.float64)
    out, _ = m(x, state)
    with nn.no_grad():
        m(x, state)
    assert m._cache is None  # the training forward's cache is gone too: it is not this one's
    with pytest.raises(RuntimeError, match=r"ran under rnnlab\.nn\.no_grad\(\)"):
        m.backward(np.ones_like(out))


def test_internals_are_kept_under_no_grad():
    """return_internals needs the whole cache (every step's c, gates): it keeps it."""
    m = nn.LSTM(5, 6, dtype=np.float64, seed=0)
    x, _ = _inputs("lstm", np.float64)
    want = m(x, return_internals=True)[2]
    with nn.no_grad():
        got = m(x, return_internals=True)[2]
    assert got.keys() == want.keys() == {"l0"}
    assert got["l0"].keys() == want["l0"].keys() >= {"i", "f", "g", "o", "c", "h"}
    for k in want["l0"]:
        np.testing.assert_array_equal(got["l0"][k], want["l0"][k])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_kept_nothing_cache_refuses_backward(kernel_set, kind):
    T, B, H = 6, 3, 4
    g = np.random.default_rng(0)
    G = 4 * H if kind == "lstm" else 3 * H
    XW, W = g.standard_normal((T, B, G)), g.standard_normal((G, H))
    h0 = np.zeros((B, H))
    if kind == "lstm":
        run = kernels.lstm_forward(XW, W, h0, h0, keep=False)
        call = lambda: kernels.lstm_backward(run, W, None, h0, h0)  # noqa: E731
    else:
        run = kernels.gru_forward(XW, W, None, h0, keep=False)
        call = lambda: kernels.gru_backward(run, W, None, h0)  # noqa: E731
    with pytest.raises(ValueError, match="got one of an inference forward"):
        call()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_state_rows_alternate_and_end_where_the_history_ends(T, reverse):
    rows = state_rows(T, reverse, keep=False)
    steps = [(t + 1, t) for t in range(T - 1, -1, -1)] if reverse else [(t, t + 1) for t in
                                                                          range(T)]
    for p, q in steps:
        assert rows[p] != rows[q]  # a step never overwrites the state it reads
    assert rows[0 if reverse else T] == (0 if reverse else 1)  # the layers read s[0] / s[-1]
    np.testing.assert_array_equal(state_rows(T, reverse, keep=True), np.arange(T + 1))


def _peak_bytes(f):
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind, saved", [("lstm", 2), ("gru", 1)])
def test_inference_needs_less_memory(kernel_set, kind, saved):
    """Peak memory of one forward (NumPy reports its buffers to tracemalloc): under no_grad an
    LSTM layer stores neither c for every step nor tanh(c) (2 (T, B, H) buffers), a GRU layer
    not h W_hn^T + b_hn (1)."""
    T, B, H = 64, 8, 32
    m = CLASSES[kind](H, H, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, H))
    m(x)  # compile, allocate once
    full = _peak_bytes(lambda: m(x))
    m._cache = None

    def inference():
        with nn.no_grad():
            m(x)

    lean = _peak_bytes(inference)
    buffer = T * B * H * 8
    assert full - lean >= (saved - 0.1) * buffer, (full, lean, buffer)


def test_no_grad_restores_nests_decorates_and_is_per_thread():
    assert nn.is_grad_enabled()
    with nn.no_grad():
        assert not nn.is_grad_enabled()
        with nn.no_grad():
            assert not nn.is_grad_enabled()
        assert not nn.is_grad_enabled()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(nn.is_grad_enabled()))
        thread.start()
        thread.join()
        assert seen == [True]  # another thread's forwards are not affected
    assert nn.is_grad_enabled()
    with pytest.raises(KeyError), nn.no_grad():
        raise KeyError("x")
    assert nn.is_grad_enabled()

    @nn.no_grad()
    def inside():
        return nn.is_grad_enabled()

    assert inside() is False and nn.is_grad_enabled()
