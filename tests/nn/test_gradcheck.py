"""Central-difference gradient checks in float64 for every cell and layer, plus dropout.

The numerical side never reuses the module under test: each loss evaluation builds a fresh
module and loads the (perturbed) parameters with ``load_state_dict``, so cell tapes and cached
activations of the analytic run are untouched. For dropout the fresh module is built with the same
seed, which replays the same initialisation and therefore the same mask stream. Every layer test
runs once on each kernel set (numpy and compiled: the ``kernel_set`` fixture).
"""

from __future__ import annotations

import numpy as np
import pytest

import rnnlab

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8
N_PROBE = 20
T, B, D, H = 5, 3, 3, 4

KINDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


# ----------------------------------------------------------------------------- helpers


def _layer(kind, **kw):
    kw.setdefault("dtype", np.float64)
    if kind == "lstm":
        return rnnlab.LSTM(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRU(D, H, **kw)
    return rnnlab.RNN(D, H, nonlinearity=kind[4:], **kw)


def _cell(kind, **kw):
    kw.setdefault("dtype", np.float64)
    if kind == "lstm":
        return rnnlab.LSTMCell(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRUCell(D, H, **kw)
    return rnnlab.RNNCell(D, H, nonlinearity=kind[4:], **kw)


def _state_names(kind):
    return ["h0", "c0"] if kind == "lstm" else ["h0"]


def _fwd(m, kind, x, state=None, lengths=None):
    """Layer forward with a uniform signature: returns (out, [h_n] or [h_n, c_n])."""
    if state is None:
        out, st = m(x, lengths=lengths)
    elif kind == "lstm":
        out, st = m(x, tuple(state), lengths=lengths)
    else:
        out, st = m(x, state[0], lengths=lengths)
    return out, (list(st) if kind == "lstm" else [st])


def _bwd(m, kind, dout, dstate):
    """Layer backward with a uniform signature: returns (dx, [dh0] or [dh0, dc0])."""
    if kind == "lstm":
        dx, (dh, dc) = m.backward(dout, tuple(dstate))
        return dx, [dh, dc]
    dx, dh = m.backward(dout, dstate[0])
    return dx, [dh]


def _cell_step(cell, kind, x, state):
    if kind == "lstm":
        h, c = cell(x, tuple(state))
        return [h, c]
    return [cell(x, state[0])]


def _cell_back(cell, kind, dstate):
    if kind == "lstm":
        dx, (dh, dc) = cell.backward(dstate[0], dstate[1])
        return dx, [dh, dc]
    dx, dh = cell.backward(dstate[0])
    return dx, [dh]


def _params(inputs):
    return {k[2:]: v for k, v in inputs.items() if k.startswith("p:")}


def _weighted_sum(arrays, weights):
    return float(sum(np.sum(a * w) for a, w in zip(arrays, weights, strict=True)))


def _numeric_grad(loss_fn, inputs, name, idx):
    """Central differences of loss_fn(inputs) wrt inputs[name] at the flat indices idx."""
    arr = inputs[name].copy()
    flat = arr.reshape(-1)
    trial = dict(inputs, **{name: arr})
    num = np.empty(len(idx))
    for j, i in enumerate(idx):
        orig = flat[i]
        flat[i] = orig + EPS
        up = loss_fn(trial)
        flat[i] = orig - EPS
        down = loss_fn(trial)
        flat[i] = orig
        num[j] = (up - down) / (2 * EPS)
    return num


def _check_all(loss_fn, inputs, analytic, rng):
    """Compare analytic gradients with central differences on a random subset of entries."""
    assert set(analytic) == set(inputs)
    for name in sorted(inputs):
        assert analytic[name].shape == inputs[name].shape, name
        size = inputs[name].size
        idx = rng.choice(size, size=min(N_PROBE, size), replace=False)
        num = _numeric_grad(loss_fn, inputs, name, idx)
        assert np.any(num != 0), f"{name}: loss does not depend on the probed entries"
        got = analytic[name].reshape(-1)[idx]
        np.testing.assert_allclose(got, num, rtol=RTOL, atol=ATOL, err_msg=name)


# ----------------------------------------------------------------------------- cells


def _cell_inputs(kind, rng, bias, seed):
    cell = _cell(kind, bias=bias, seed=seed)
    inputs = {"x": rng.standard_normal((T, B, D))}
    for name in _state_names(kind):
        inputs[name] = 0.5 * rng.standard_normal((B, H))
    inputs.update({"p:" + k: v for k, v in cell.state_dict().items()})
    return cell, inputs


def _cell_loss(kind, bias, weights):
    def loss(inputs):
        cell = _cell(kind, bias=bias)
        cell.load_state_dict(_params(inputs))
        state = [inputs[n] for n in _state_names(kind)]
        total = 0.0
        for t in range(T):
            state = _cell_step(cell, kind, inputs["x"][t], state)
            total += _weighted_sum(state, weights[t])
        return total

    return loss


def _cell_analytic(cell, kind, inputs, weights):
    """Unroll T steps, then T backward pops in reverse order (BPTT through the tape)."""
    state = [inputs[n] for n in _state_names(kind)]
    for t in range(T):
        state = _cell_step(cell, kind, inputs["x"][t], state)
    cell.zero_grad()
    carry = [np.zeros((B, H)) for _ in state]
    dx = np.zeros((T, B, D))
    for t in reversed(range(T)):
        dstate = [w + c for w, c in zip(weights[t], carry, strict=True)]
        dx[t], carry = _cell_back(cell, kind, dstate)
    grads = {"x": dx, **dict(zip(_state_names(kind), carry, strict=True))}
    grads.update({"p:" + k: g.copy() for k, g in cell.grads.items()})
    return grads


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_gradcheck_unrolled(kind, bias, rng):
    cell, inputs = _cell_inputs(kind, rng, bias, seed=21)
    n_state = len(_state_names(kind))
    weights = [[rng.standard_normal((B, H)) for _ in range(n_state)] for _ in range(T)]
    analytic = _cell_analytic(cell, kind, inputs, weights)
    _check_all(_cell_loss(kind, bias, weights), inputs, analytic, rng)


def test_lstm_cell_dc_none_equals_zero(rng):
    cell = _cell("lstm", seed=2)
    x, h, c = rng.standard_normal((B, D)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    dh = rng.standard_normal((B, H))
    cell(x, (h, c))
    cell(x, (h, c))
    dx_none, (dh_none, dc_none) = cell.backward(dh, None)
    dx_zero, (dh_zero, dc_zero) = cell.backward(dh, np.zeros((B, H)))
    np.testing.assert_array_equal(dx_none, dx_zero)
    np.testing.assert_array_equal(dh_none, dh_zero)
    np.testing.assert_array_equal(dc_none, dc_zero)
    assert np.any(dx_none != 0)


# ----------------------------------------------------------------------------- layers

# name -> (constructor kwargs, x layout, lengths)
LAYER_CONFIGS = {
    "2layer_bidir_lengths": (dict(num_layers=2, bidirectional=True), "tbd", [5, 1, 3]),
    "1layer_batch_first": (dict(batch_first=True), "btd", None),
    "nobias_bidir_bf_lengths": (
        dict(bias=False, bidirectional=True, batch_first=True),
        "btd",
        [2, 5, 4],
    ),
    "unbatched_2layer": (dict(num_layers=2), "td", None),
}


def _x_shape(layout):
    return {"tbd": (T, B, D), "btd": (B, T, D), "td": (T, D)}[layout]


def _state_shape(kw, layout):
    n = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    return (n, H) if layout == "td" else (n, B, H)


def _layer_inputs(kind, kw, layout, rng, seed):
    m = _layer(kind, seed=seed, **kw)
    inputs = {"x": rng.standard_normal(_x_shape(layout))}
    for name in _state_names(kind):
        inputs[name] = 0.5 * rng.standard_normal(_state_shape(kw, layout))
    inputs.update({"p:" + k: v for k, v in m.state_dict().items()})
    return m, inputs


def _layer_loss(kind, kw, lengths, weights, seed=None):
    """loss = sum(out * W1) + sum(h_n * W2) (+ sum(c_n * W3)), on a freshly built module."""

    def loss(inputs):
        m = _layer(kind, seed=seed, **kw)
        m.load_state_dict(_params(inputs))
        state = [inputs[n] for n in _state_names(kind)]
        out, final = _fwd(m, kind, inputs["x"], state, lengths)
        return _weighted_sum([out, *final], weights)

    return loss


def _layer_analytic(m, kind, inputs, lengths, rng):
    state = [inputs[n] for n in _state_names(kind)]
    out, final = _fwd(m, kind, inputs["x"], state, lengths)
    weights = [rng.standard_normal(a.shape) for a in [out, *final]]
    m.zero_grad()
    dx, dstate = _bwd(m, kind, weights[0], weights[1:])
    grads = {"x": dx, **dict(zip(_state_names(kind), dstate, strict=True))}
    grads.update({"p:" + k: g.copy() for k, g in m.grads.items()})
    return grads, weights, out


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("config", list(LAYER_CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradcheck(kind, config, rng):
    kw, layout, lengths = LAYER_CONFIGS[config]
    m, inputs = _layer_inputs(kind, kw, layout, rng, seed=5)
    analytic, weights, _ = _layer_analytic(m, kind, inputs, lengths, rng)
    _check_all(_layer_loss(kind, kw, lengths, weights), inputs, analytic, rng)


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("kind", KINDS)
def test_layer_backward_state_grads_none_equals_zero(kind, rng):
    m = _layer(kind, num_layers=2, bidirectional=True, seed=4)
    x = rng.standard_normal((T, B, D))
    out, final = _fwd(m, kind, x)
    dout = rng.standard_normal(out.shape)
    m.zero_grad()
    dx_zero, ds_zero = _bwd(m, kind, dout, [np.zeros_like(s) for s in final])
    g_zero = {k: g.copy() for k, g in m.grads.items()}
    for call in (lambda: m.backward(dout), lambda: m.backward(dout, None)):
        _fwd(m, kind, x)
        m.zero_grad()
        dx, dstate = call()
        dstate = list(dstate) if kind == "lstm" else [dstate]
        np.testing.assert_allclose(dx, dx_zero, rtol=1e-13, atol=1e-15)
        for a, b in zip(dstate, ds_zero, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
        for k, g in m.grads.items():
            np.testing.assert_allclose(g, g_zero[k], rtol=1e-13, atol=1e-15, err_msg=k)


# ----------------------------------------------------------------------------- accumulation


def _layer_grads_once(m, kind, x, dout):
    _fwd(m, kind, x)
    m.backward(dout)
    return {k: g.copy() for k, g in m.grads.items()}


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("kind", KINDS)
def test_layer_grads_accumulate_and_zero_grad_resets(kind, rng):
    m = _layer(kind, num_layers=2, bidirectional=True, seed=8)
    x = rng.standard_normal((T, B, D))
    dout = rng.standard_normal((T, B, 2 * H))
    assert set(m.grads) == set(m.state_dict())
    m.zero_grad()
    single = _layer_grads_once(m, kind, x, dout)
    assert all(np.any(g != 0) for g in single.values())
    double = _layer_grads_once(m, kind, x, dout)
    for k in single:
        np.testing.assert_allclose(double[k], 2 * single[k], rtol=1e-13, atol=1e-15, err_msg=k)
    m.zero_grad()
    assert all(np.all(g == 0) for g in m.grads.values())
    again = _layer_grads_once(m, kind, x, dout)
    for k in single:
        np.testing.assert_allclose(again[k], single[k], rtol=1e-13, atol=1e-15, err_msg=k)


def _cell_grads_once(cell, kind, x, state, dstate):
    _cell_step(cell, kind, x, state)
    _cell_back(cell, kind, dstate)
    return {k: g.copy() for k, g in cell.grads.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_cell_grads_accumulate_and_zero_grad_resets(kind, rng):
    cell = _cell(kind, seed=8)
    x = rng.standard_normal((B, D))
    state = [rng.standard_normal((B, H)) for _ in _state_names(kind)]
    dstate = [rng.standard_normal((B, H)) for _ in state]
    assert set(cell.grads) == set(cell.state_dict())
    cell.zero_grad()
    single = _cell_grads_once(cell, kind, x, state, dstate)
    assert all(np.any(g != 0) for g in single.values())
    double = _cell_grads_once(cell, kind, x, state, dstate)
    for k in single:
        np.testing.assert_allclose(double[k], 2 * single[k], rtol=1e-13, atol=1e-15, err_msg=k)
    cell.zero_grad()
    assert all(np.all(g == 0) for g in cell.grads.values())


# ----------------------------------------------------------------------------- dropout

DROP = dict(num_layers=3, dropout=0.5)


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("seed_kind", ["int", "generator"])
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_same_seed_same_output(kind, seed_kind, rng):
    def make():
        seed = 17 if seed_kind == "int" else np.random.default_rng(17)
        return _layer(kind, seed=seed, **DROP)

    x = rng.standard_normal((T, B, D))
    m1, m2 = make(), make()
    assert m1.training
    out1, _ = _fwd(m1, kind, x)
    out2, _ = _fwd(m2, kind, x)
    np.testing.assert_array_equal(out1, out2)
    out1_next, _ = _fwd(m1, kind, x)  # each forward draws fresh masks
    assert not np.allclose(out1_next, out1)


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_eval_equals_no_dropout(kind, rng):
    m = _layer(kind, seed=3, **DROP)
    ref = _layer(kind, num_layers=3, dropout=0.0)
    ref.load_state_dict(m.state_dict())
    x = rng.standard_normal((T, B, D))
    out_train, _ = _fwd(m, kind, x)
    m.eval()
    assert not m.training
    out_eval, st_eval = _fwd(m, kind, x)
    out_ref, st_ref = _fwd(ref, kind, x)
    np.testing.assert_allclose(out_eval, out_ref, rtol=1e-13, atol=1e-15)
    for a, b in zip(st_eval, st_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert not np.allclose(out_train, out_eval)
    m.train()
    assert m.training
    out_train2, _ = _fwd(m, kind, x)
    assert not np.allclose(out_train2, out_eval)


@pytest.mark.usefixtures("kernel_set")
def test_dropout_is_inverted_and_only_between_layers(rng):
    """2-layer ReLU RNN whose second layer is the identity: out = dropout(layer-0 output).

    With weight_ih_l1 = I, weight_hh_l1 = 0 and zero l1 biases, layer 1 computes relu(input) =
    input because the layer-0 output is already >= 0. So in eval mode out is the layer-0 output and
    in training mode each entry is either dropped (0) or scaled by 1 / (1 - p) = 2.
    """
    m = rnnlab.RNN(D, H, num_layers=2, nonlinearity="relu", dropout=0.5, seed=5, dtype=np.float64)
    sd = m.state_dict()
    sd["weight_ih_l1"] = np.eye(H)
    sd["weight_hh_l1"] = np.zeros((H, H))
    sd["bias_ih_l1"] = np.zeros(H)
    sd["bias_hh_l1"] = np.zeros(H)
    m.load_state_dict(sd)
    x = rng.standard_normal((T, B, D))
    m.eval()
    ref, _ = m(x)
    m.train()
    out, _ = m(x)
    live = ref > 1e-8
    assert live.sum() >= 10
    ratio = out[live] / ref[live]
    dropped = np.isclose(ratio, 0.0, atol=1e-12)
    kept = np.isclose(ratio, 2.0, rtol=1e-12)
    assert np.all(dropped | kept), np.unique(np.round(ratio, 6))
    assert dropped.any() and kept.any()
    np.testing.assert_array_equal(out[~live], 0.0)


@pytest.mark.usefixtures("kernel_set")
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_training_gradcheck_with_replayed_masks(kind, rng):
    """Masks are held fixed by rebuilding the module from the same seed for every evaluation."""
    seed = 29
    m, inputs = _layer_inputs(kind, DROP, "tbd", rng, seed=seed)
    analytic, weights, out = _layer_analytic(m, kind, inputs, None, rng)
    replay = _layer(kind, seed=seed, **DROP)
    replay.load_state_dict(m.state_dict())
    state = [inputs[n] for n in _state_names(kind)]
    out_replay, _ = _fwd(replay, kind, inputs["x"], state)
    np.testing.assert_array_equal(out_replay, out)  # a fresh same-seed module replays the masks
    replay.eval()
    out_eval, _ = _fwd(replay, kind, inputs["x"], state)
    assert not np.allclose(out, out_eval)  # dropout is really active in the checked forward
    _check_all(_layer_loss(kind, DROP, None, weights, seed=seed), inputs, analytic, rng)
