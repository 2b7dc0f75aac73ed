"""The fast layers (rnnlab.nn.kernels, every kernel set) equal a plain loop over the readable
cells (cells.py).

No PyTorch here: this is the house rule that the fast path and the readable path compute the
same function. Each sequence is run through the cell on its own, over its valid steps only, in
its own direction, layer by layer (the next layer's input is the concatenated outputs, times the
layer's own dropout mask), and forward values, input/state gradients and weight gradients must
agree. The reference always runs in float64 (cells loaded with the layer's weights); a float32
layer is compared to it at float32's tolerance.

The cases cover what a single small float64 layer leaves out: several layers, dropout between
them (the masks the layer drew, read back from its cache), float32 with B*H >= ops.SMALL (the
exp-based tanh and the one-exp LSTM gates of the NumPy set), and backward time blocks split
(the NumPy set's CHUNK_BYTES made small). Every case runs on each kernel set, both directions,
with unsorted lengths.
"""

from __future__ import annotations

import numpy as np
import pytest
from numerics import assert_close

import rnnlab
from rnnlab.nn import kernels, ops

KINDS = {
    "lstm": (rnnlab.LSTM, rnnlab.LSTMCell, {}),
    "gru": (rnnlab.GRU, rnnlab.GRUCell, {}),
    "rnn_tanh": (rnnlab.RNN, rnnlab.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, rnnlab.RNNCell, {"nonlinearity": "relu"}),
}

# name -> layers, dtype, dropout, (T, B, D, H), lengths (unsorted), time steps per backward block
CASES = {
    "1layer": (1, np.float64, 0.0, (6, 4, 3, 5), [6, 2, 4, 1], None),
    "3layers-dropout": (3, np.float64, 0.4, (7, 5, 3, 4), [3, 7, 1, 5, 7], None),
    "2layers-blocks": (2, np.float64, 0.0, (9, 4, 3, 5), [9, 3, 6, 1], 2),
    "2layers-float32-dropout-exp": (2, np.float32, 0.3, (4, 64, 3, 64), "random", None),
}
TOL = {np.float64: (1e-11, 1e-12), np.float32: (2e-4, 2e-5)}


def _cell_for(layer, cell_cls, extra, suffix):
    cell = cell_cls(layer.input_size if suffix.startswith("_l0") else
                    layer.hidden_size * layer.num_directions, layer.hidden_size,
                    dtype=np.float64, **extra)
    cell.load_state_dict({k: layer.parameters()[k + suffix] for k in cell.state_dict()})
    return cell


def _reference(layer, cell_cls, extra, lstm, x, h0, c0, lengths, masks, dout, dh_n, dc_n):
    """The layer's forward and backward as loops over float64 cells: (out, h_n, c_n, dx, dh0,
    dc0, grads). Inputs are (T, B, ...) float64 arrays in the caller's batch order."""
    T, B, _ = x.shape
    L, K, H = layer.num_layers, layer.num_directions, layer.hidden_size
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    cells, inp = [], x
    for lay in range(L):
        if masks[lay] is not None:
            inp = inp * masks[lay]
        out = np.zeros((T, B, K * H))
        cells.append([])
        for d in range(K):
            suffix = f"_l{lay}" + ("_reverse" if d else "")
            cells[lay].append([])
            for b in range(B):
                cell = _cell_for(layer, cell_cls, extra, suffix)
                order = np.arange(lengths[b])[::-1] if d else np.arange(lengths[b])
                h, c = h0[lay * K + d, b][None], c0[lay * K + d, b][None]
                for t in order:
                    if lstm:
                        h, c = cell(inp[t, b][None], (h, c))
                    else:
                        h = cell(inp[t, b][None], h)
                    out[t, b, d * H:(d + 1) * H] = h[0]
                h_n[lay * K + d, b], c_n[lay * K + d, b] = h[0], c[0]
                cells[lay][d].append((cell, order))
        inp = out
    grads, dh0, dc0, d_out = {}, np.zeros_like(h0), np.zeros_like(c0), dout
    for lay in reversed(range(L)):
        dinp = None
        for d in range(K):
            suffix = f"_l{lay}" + ("_reverse" if d else "")
            for b, (cell, order) in enumerate(cells[lay][d]):
                dh, dc = dh_n[lay * K + d, b][None], dc_n[lay * K + d, b][None]
                for t in order[::-1]:
                    dh = dh + d_out[t, b, d * H:(d + 1) * H][None]
                    if lstm:
                        dx, (dh, dc) = cell.backward(dh, dc)
                    else:
                        dx, dh = cell.backward(dh)
                    if dinp is None:
                        dinp = np.zeros((T, B, dx.shape[1]))
                    dinp[t, b] += dx[0]
                dh0[lay * K + d, b], dc0[lay * K + d, b] = dh[0], dc[0]
                for name, g in cell.grads.items():  # accumulated over every sequence
                    grads[name + suffix] = grads.get(name + suffix, 0.0) + g
        if masks[lay] is not None:
            dinp = dinp * masks[lay]
        d_out = dinp
    return inp, h_n, c_n, d_out, dh0, dc0, grads


def _lengths(spec, T, B, rng):
    if spec != "random":
        return np.array(spec)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[rng.integers(B)] = T
    return lengths


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_equals_cell_loop(kind, bidirectional, case, kernel_set, monkeypatch):
    layer_cls, cell_cls, extra = KINDS[kind]
    L, dtype, dropout, (T, B, D, H), lengths, block_steps = CASES[case]
    rng = np.random.default_rng(5)
    K = 2 if bidirectional else 1
    G = layer_cls.gates * H
    if block_steps is not None:  # a backward block holds `block_steps` steps (the NumPy set)
        step_bytes = B * G * np.dtype(dtype).itemsize
        monkeypatch.setattr(kernels.numpy, "CHUNK_BYTES", block_steps * step_bytes)
        assert len(list(kernels.numpy._backward_chunks(T, False, step_bytes))) > 2
    if dtype == np.float32:
        assert B * H >= ops.SMALL  # the exp-based tanh runs inside the layer
    layer = layer_cls(D, H, num_layers=L, dropout=dropout, bidirectional=bidirectional,
                      dtype=dtype, seed=2, **extra)
    lstm = kind == "lstm"
    lengths = _lengths(lengths, T, B, rng)
    x = rng.standard_normal((T, B, D))
    h0, c0 = rng.standard_normal((2, L * K, B, H))
    dout = rng.standard_normal((T, B, K * H))
    dh_n, dc_n = rng.standard_normal((2, L * K, B, H))
    as_dtype = [a.astype(dtype) for a in (x, h0, c0, dout, dh_n, dc_n)]
    x, h0, c0, dout, dh_n, dc_n = (a.astype(np.float64) for a in as_dtype)  # the same values
    xl, h0l, c0l, doutl, dh_nl, dc_nl = as_dtype

    out, state = layer(xl, (h0l, c0l) if lstm else h0l, lengths=lengths)
    cache = layer._cache  # the dropout masks it drew, in its sorted batch order
    masks = [None if m is None else (m if cache.inverse is None else m[:, cache.inverse])
             for m in cache.masks]
    assert sum(m is not None for m in masks) == (L - 1 if dropout > 0 else 0)
    dx, dstate0 = layer.backward(doutl, (dh_nl, dc_nl) if lstm else dh_nl)

    want = _reference(layer, cell_cls, extra, lstm, x, h0, c0, lengths,
                      [None if m is None else m.astype(np.float64) for m in masks],
                      dout, dh_n, dc_n)
    rtol, atol = TOL[dtype]
    names = ["out", "h_n", "c_n", "dx", "dh0", "dc0"]
    got = [out, state[0] if lstm else state, state[1] if lstm else None,
           dx, dstate0[0] if lstm else dstate0, dstate0[1] if lstm else None]
    for name, g, w in zip(names, got, want[:6], strict=True):
        if g is not None:
            assert g.dtype == dtype, name
            assert_close(g, w, rtol, atol, name)
    for b, n in enumerate(lengths):
        assert np.all(out[n:, b] == 0) and np.all(dx[n:, b] == 0)
    assert set(layer.grads) == set(want[6])
    for name, g in want[6].items():
        assert_close(layer.grads[name], g, rtol, atol, name)
