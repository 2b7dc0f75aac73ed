"""The fast layers (kernels.py) equal a plain loop over the readable cells (cells.py).

No PyTorch here: this is the house rule that the fast path and the readable path compute the
same function. Each sequence is run through the cell on its own, over its valid steps only, in
its own direction, and forward values, input/state gradients and weight gradients must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnlab

KINDS = {
    "lstm": (rnnlab.LSTM, rnnlab.LSTMCell, {}),
    "gru": (rnnlab.GRU, rnnlab.GRUCell, {}),
    "rnn_tanh": (rnnlab.RNN, rnnlab.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, rnnlab.RNNCell, {"nonlinearity": "relu"}),
}


def _cell_for(layer, cell_cls, extra, suffix):
    cell = cell_cls(layer.input_size, layer.hidden_size, dtype=np.float64, **extra)
    cell.load_state_dict({k: layer.parameters()[k + suffix] for k in cell.state_dict()})
    return cell


def _run_cell(cell, x, h0, c0, dout, dh_n, dc_n, lstm):
    """One sequence (T, D) through the cell; returns out, final state, dx, dstate0, grads."""
    h, c = h0[None], c0[None]
    outs = []
    for x_t in x:
        if lstm:
            h, c = cell(x_t[None], (h, c))
        else:
            h = cell(x_t[None], h)
        outs.append(h[0])
    dh, dc = dh_n[None], dc_n[None]
    dxs = []
    for t in reversed(range(len(x))):
        dh = dh + dout[t][None]
        if lstm:
            dx, (dh, dc) = cell.backward(dh, dc)
        else:
            dx, dh = cell.backward(dh)
        dxs.append(dx[0])
    return np.array(outs), (h[0], c[0]), np.array(dxs[::-1]), (dh[0], dc[0])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_equals_cell_loop(kind, bidirectional):
    layer_cls, cell_cls, extra = KINDS[kind]
    rng = np.random.default_rng(5)
    T, B, D, H = 6, 4, 3, 5
    K = 2 if bidirectional else 1
    layer = layer_cls(D, H, bidirectional=bidirectional, dtype=np.float64, seed=2, **extra)
    lstm = kind == "lstm"
    lengths = np.array([6, 2, 4, 1])
    x = rng.standard_normal((T, B, D))
    h0, c0 = rng.standard_normal((K, B, H)), rng.standard_normal((K, B, H))
    out, state = layer(x, (h0, c0) if lstm else h0, lengths=lengths)
    dout = rng.standard_normal(out.shape)
    dh_n, dc_n = rng.standard_normal((K, B, H)), rng.standard_normal((K, B, H))
    dx, dstate0 = layer.backward(dout, (dh_n, dc_n) if lstm else dh_n)
    h_n = state[0] if lstm else state
    dh0 = dstate0[0] if lstm else dstate0

    want_dx = np.zeros_like(x)
    for d in range(K):
        suffix = "_l0" + ("_reverse" if d else "")
        cell = _cell_for(layer, cell_cls, extra, suffix)
        for b in range(B):
            n = lengths[b]
            order = np.arange(n)[::-1] if d else np.arange(n)  # reverse starts at its own end
            cols = slice(d * H, (d + 1) * H)
            o, (hT, cT), dxb, (dhb, dcb) = _run_cell(
                cell, x[order, b], h0[d, b], c0[d, b], dout[order, b, cols], dh_n[d, b],
                dc_n[d, b], lstm)
            np.testing.assert_allclose(out[order, b, cols], o, rtol=1e-12, atol=1e-13)
            assert np.all(out[n:, b, cols] == 0)
            np.testing.assert_allclose(h_n[d, b], hT, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(dh0[d, b], dhb, rtol=1e-11, atol=1e-12)
            if lstm:
                np.testing.assert_allclose(state[1][d, b], cT, rtol=1e-12, atol=1e-13)
                np.testing.assert_allclose(dstate0[1][d, b], dcb, rtol=1e-11, atol=1e-12)
            want_dx[order, b] += dxb
        for name, g in cell.grads.items():  # accumulated over every sequence
            np.testing.assert_allclose(layer.grads[name + suffix], g, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-11, atol=1e-12)
