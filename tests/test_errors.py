"""Bad input is rejected loudly, with a message naming what was expected and what came.

Nothing may be silently broadcast, cast or truncated.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import rnnlab

T, B, D, H, L = 6, 3, 5, 4, 2
LAYER_KINDS = ["lstm", "gru", "rnn"]
NONFINITE = r"(?i)nan|inf|finite"


# ----------------------------------------------------------------------------- helpers


def _raises(exc, fn, *patterns):
    """fn() raises exc and its message matches every regex in patterns."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"error message {msg!r} does not match {pat!r}"


def _shape(shape):
    """Regex for a shape as Python prints a tuple, e.g. (3, 4, 7)."""
    return re.escape(str(tuple(shape)))


def _rank(shape):
    """Regex accepting either the offending shape or its number of dimensions."""
    n = len(shape)
    return rf"{_shape(shape)}|\b{n}-?[dD]\b|ndim\W{{0,3}}{n}\b|\b{n} dim"


def _expected(want, got):
    """Regex naming the expected shape: the full tuple, or the expected value of each axis that
    differs (e.g. 'B=3'), or the expected rank when the ranks differ (e.g. '3-D')."""
    alts = [_shape(want)]
    if len(want) != len(got):
        alts.append(rf"\b{len(want)}-?[dD]\b")
    else:
        alts += [rf"=\s*{w}\b" for w, g in zip(want, got, strict=True) if w != g]
    return "|".join(alts)


def _num(value):
    return rf"(?<![\d.]){re.escape(str(value))}(?![\d.])"


def _layer(kind, **kw):
    cls = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}[kind]
    kw.setdefault("num_layers", L)
    return cls(D, H, **kw)


def _cell(kind, **kw):
    cls = {"lstm": rnnlab.LSTMCell, "gru": rnnlab.GRUCell, "rnn": rnnlab.RNNCell}[kind]
    return cls(D, H, **kw)


def _arr(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _state(kind, rng, *shape, dtype=np.float32):
    """A valid-looking state for kind: h for GRU/RNN, (h, c) for LSTM."""
    h = _arr(rng, *shape, dtype=dtype)
    return (h, _arr(rng, *shape, dtype=dtype)) if kind == "lstm" else h


# ----------------------------------------------------------------------------- layers: x


@pytest.mark.parametrize("shape", [(T,), (2, T, B, D)], ids=["1d", "4d"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_x_wrong_rank(kind, shape, rng):
    m = _layer(kind)
    _raises(ValueError, lambda: m(_arr(rng, *shape)), _rank(shape))


@pytest.mark.parametrize(
    "batch_first, shape",
    [(False, (T, B, 7)), (True, (B, T, 7)), (False, (T, 7))],
    ids=["tbd", "btd", "unbatched"],
)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_x_wrong_feature_size(kind, batch_first, shape, rng):
    m = _layer(kind, batch_first=batch_first)
    _raises(ValueError, lambda: m(_arr(rng, *shape)), _num(7), _num(D))


@pytest.mark.parametrize(
    "module_dtype, x_dtype", [(np.float32, np.float64), (np.float64, np.float32)]
)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_x_wrong_float_dtype(kind, module_dtype, x_dtype, rng):
    m = _layer(kind, dtype=module_dtype)
    x = _arr(rng, T, B, D, dtype=x_dtype)
    _raises(TypeError, lambda: m(x), np.dtype(x_dtype).name, np.dtype(module_dtype).name)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_h0_float64_into_float32_module(kind, rng):
    m = _layer(kind)
    state = _state(kind, rng, L, B, H, dtype=np.float64)
    _raises(TypeError, lambda: m(_arr(rng, T, B, D), state), "float64", "float32")


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_x_integer(kind, rng):
    m = _layer(kind)
    x = rng.integers(-3, 3, size=(T, B, D))
    _raises((TypeError, ValueError), lambda: m(x), r"int")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_x_nonfinite(kind, bad, rng):
    m = _layer(kind)
    x = _arr(rng, T, B, D)
    x[2, 1, 3] = bad
    _raises(ValueError, lambda: m(x), NONFINITE)


# ----------------------------------------------------------------------------- layers: state

BAD_STATE_SHAPES = {
    "layers": (1, B, H),
    "batch": (L, 2, H),
    "batch_broadcast": (L, 1, H),
    "hidden": (L, B, 5),
    "rank2": (B, H),
    "rank4": (1, L, B, H),
}


@pytest.mark.parametrize("case", list(BAD_STATE_SHAPES))
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_h0_wrong_shape(kind, case, rng):
    m = _layer(kind)
    x = _arr(rng, T, B, D)
    bad = BAD_STATE_SHAPES[case]
    h0 = _arr(rng, *bad)
    state = (h0, _arr(rng, L, B, H)) if kind == "lstm" else h0
    _raises(ValueError, lambda: m(x, state), _shape(bad), _expected((L, B, H), bad))


@pytest.mark.parametrize("case", ["layers", "batch_broadcast", "hidden"])
def test_lstm_c0_wrong_shape(case, rng):
    m = _layer("lstm")
    bad = BAD_STATE_SHAPES[case]
    state = (_arr(rng, L, B, H), _arr(rng, *bad))
    _raises(
        ValueError, lambda: m(_arr(rng, T, B, D), state), _shape(bad), _expected((L, B, H), bad)
    )


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_single_layer_h0_is_not_broadcast_over_batch(kind, rng):
    m = _layer(kind, num_layers=1)
    x = _arr(rng, T, B, D)
    h0 = _arr(rng, 1, 1, H)
    state = (h0, _arr(rng, 1, B, H)) if kind == "lstm" else h0
    _raises(ValueError, lambda: m(x, state), _shape((1, 1, H)), _expected((1, B, H), (1, 1, H)))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_unbatched_x_with_batched_state(kind, rng):
    m = _layer(kind)
    state = _state(kind, rng, L, 1, H)
    _raises(
        ValueError,
        lambda: m(_arr(rng, T, D), state),
        _shape((L, 1, H)),
        _expected((L, H), (L, 1, H)),
    )


def test_lstm_h0_only_instead_of_tuple(rng):
    m = _layer("lstm")
    h0 = _arr(rng, L, B, H)
    _raises((TypeError, ValueError), lambda: m(_arr(rng, T, B, D), h0), r"(?i)tuple|c0|pair")


@pytest.mark.parametrize(
    "kind, which", [("lstm", 0), ("lstm", 1), ("gru", None), ("rnn", None)], ids=str
)
def test_layer_state_nan(kind, which, rng):
    m = _layer(kind)
    state = _state(kind, rng, L, B, H)
    target = state if which is None else state[which]
    target[1, 2, 0] = np.nan
    _raises(ValueError, lambda: m(_arr(rng, T, B, D), state), NONFINITE)


# ----------------------------------------------------------------------------- layers: lengths


@pytest.mark.parametrize("bad", [0, T + 1, -1], ids=["zero", "T+1", "negative"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_lengths_out_of_range(kind, bad, rng):
    m = _layer(kind)
    _raises(
        ValueError,
        lambda: m(_arr(rng, T, B, D), lengths=[T, bad, 2]),
        _num(bad) if bad >= 0 else r"-1\b",
        _num(T),
    )


@pytest.mark.parametrize("lengths", [[T, 2], [T, 2, 3, 1]], ids=["too_few", "too_many"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_lengths_wrong_count(kind, lengths, rng):
    m = _layer(kind)
    _raises(
        ValueError,
        lambda: m(_arr(rng, T, B, D), lengths=lengths),
        _num(len(lengths)),
        _num(B),
    )


# ----------------------------------------------------------------------------- layers: backward


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_backward_before_forward(kind, rng):
    m = _layer(kind)
    _raises((ValueError, RuntimeError), lambda: m.backward(_arr(rng, T, B, H)), r"(?i)forward")


@pytest.mark.parametrize("bad", [(T, B, 5), (T, 1, H), (T - 1, B, H), (B, H)])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_dout_wrong_shape(kind, bad, rng):
    m = _layer(kind)
    m(_arr(rng, T, B, D))
    dout = _arr(rng, *bad)
    _raises(ValueError, lambda: m.backward(dout), _shape(bad), _expected((T, B, H), bad))


@pytest.mark.parametrize("bad", [(L, B, 5), (L, 1, H), (1, B, H)])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_dh_n_wrong_shape(kind, bad, rng):
    m = _layer(kind)
    m(_arr(rng, T, B, D))
    dh = _arr(rng, *bad)
    dstate = (dh, _arr(rng, L, B, H)) if kind == "lstm" else dh
    dout = _arr(rng, T, B, H)
    _raises(ValueError, lambda: m.backward(dout, dstate), _shape(bad), _expected((L, B, H), bad))


def test_lstm_dc_n_wrong_shape(rng):
    m = _layer("lstm")
    m(_arr(rng, T, B, D))
    dstate = (_arr(rng, L, B, H), _arr(rng, L, 1, H))
    dout = _arr(rng, T, B, H)
    _raises(
        ValueError,
        lambda: m.backward(dout, dstate),
        _shape((L, 1, H)),
        _expected((L, B, H), (L, 1, H)),
    )


# ----------------------------------------------------------------------------- state dicts


def _module(family, kind):
    return _layer(kind) if family == "layer" else _cell(kind)


@pytest.mark.parametrize("family", ["layer", "cell"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_load_state_dict_missing_key(family, kind):
    m = _module(family, kind)
    sd = m.state_dict()
    key = sorted(sd)[-1]
    del sd[key]
    _raises(ValueError, lambda: m.load_state_dict(sd), re.escape(key))


@pytest.mark.parametrize("family", ["layer", "cell"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_load_state_dict_unexpected_key(family, kind):
    m = _module(family, kind)
    sd = m.state_dict()
    sd["weight_hh_l7_bogus"] = np.zeros((H, H), dtype=np.float32)
    _raises(ValueError, lambda: m.load_state_dict(sd), r"weight_hh_l7_bogus")


@pytest.mark.parametrize("family", ["layer", "cell"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_load_state_dict_wrong_shape(family, kind):
    m = _module(family, kind)
    sd = m.state_dict()
    key = "weight_hh_l1" if family == "layer" else "weight_hh"
    good = sd[key].shape
    bad = (good[0], good[1] + 1)
    sd[key] = np.zeros(bad, dtype=np.float32)
    _raises(ValueError, lambda: m.load_state_dict(sd), re.escape(key), _shape(bad), _shape(good))


@pytest.mark.parametrize("family", ["layer", "cell"])
def test_load_state_dict_same_size_wrong_rank(family):
    """A bias of the right size but wrong rank must be rejected too (no silent reshape)."""
    m = _module(family, "gru")
    sd = m.state_dict()
    key = "bias_ih_l0" if family == "layer" else "bias_ih"
    sd[key] = sd[key].reshape(1, -1)
    _raises(ValueError, lambda: m.load_state_dict(sd), re.escape(key))


# ----------------------------------------------------------------------------- constructors

BAD_CTOR = [
    ("LSTM", dict(hidden_size=0), "hidden_size"),
    ("GRU", dict(hidden_size=-1), "hidden_size"),
    ("RNN", dict(hidden_size=0), "hidden_size"),
    ("LSTM", dict(num_layers=0), "num_layers"),
    ("GRU", dict(num_layers=0), "num_layers"),
    ("LSTM", dict(dropout=1.5), "dropout"),
    ("GRU", dict(dropout=-0.1), "dropout"),
    ("RNN", dict(dropout=1.5), "dropout"),
    ("RNN", dict(nonlinearity="sigmoid"), "sigmoid|nonlinearity"),
    ("LSTMCell", dict(hidden_size=0), "hidden_size"),
    ("GRUCell", dict(hidden_size=0), "hidden_size"),
    ("RNNCell", dict(hidden_size=0), "hidden_size"),
    ("RNNCell", dict(nonlinearity="sigmoid"), "sigmoid|nonlinearity"),
]


@pytest.mark.parametrize(
    "cls_name, kwargs, pattern", BAD_CTOR, ids=[f"{c}-{next(iter(k))}" for c, k, _ in BAD_CTOR]
)
def test_constructor_rejects_invalid_args(cls_name, kwargs, pattern):
    kw = dict(input_size=D, hidden_size=H)
    kw.update(kwargs)
    cls = getattr(rnnlab, cls_name)
    _raises(ValueError, lambda: cls(**kw), pattern)


# ----------------------------------------------------------------------------- cells


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_x_wrong_rank(kind, rng):
    cell = _cell(kind)
    shape = (2, B, D)
    _raises(ValueError, lambda: cell(_arr(rng, *shape)), _rank(shape))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_x_wrong_feature_size(kind, rng):
    cell = _cell(kind)
    _raises(ValueError, lambda: cell(_arr(rng, B, 7)), _num(7), _num(D))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_x_float64_into_float32(kind, rng):
    cell = _cell(kind)
    x = _arr(rng, B, D, dtype=np.float64)
    _raises(TypeError, lambda: cell(x), "float64", "float32")


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_h_float64_into_float32(kind, rng):
    cell = _cell(kind)
    state = _state(kind, rng, B, H, dtype=np.float64)
    _raises(TypeError, lambda: cell(_arr(rng, B, D), state), "float64", "float32")


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_x_integer(kind, rng):
    cell = _cell(kind)
    _raises((TypeError, ValueError), lambda: cell(rng.integers(0, 3, size=(B, D))), r"int")


@pytest.mark.parametrize("bad", [(2, H), (1, H), (B, 5), (1, B, H)], ids=str)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_state_wrong_shape(kind, bad, rng):
    cell = _cell(kind)
    h = _arr(rng, *bad)
    state = (h, _arr(rng, B, H)) if kind == "lstm" else h
    _raises(ValueError, lambda: cell(_arr(rng, B, D), state), _shape(bad), _expected((B, H), bad))


def test_lstm_cell_c_wrong_shape(rng):
    cell = _cell("lstm")
    state = (_arr(rng, B, H), _arr(rng, 1, H))
    _raises(
        ValueError, lambda: cell(_arr(rng, B, D), state), _shape((1, H)), _expected((B, H), (1, H))
    )


def test_lstm_cell_h_only_instead_of_tuple(rng):
    cell = _cell("lstm")
    h = _arr(rng, B, H)
    _raises((TypeError, ValueError), lambda: cell(_arr(rng, B, D), h), r"(?i)tuple|\bc\b|pair")


@pytest.mark.parametrize("where", ["x", "h"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_nonfinite(kind, where, rng):
    cell = _cell(kind)
    x = _arr(rng, B, D)
    state = _state(kind, rng, B, H)
    if where == "x":
        x[0, 1] = np.inf
    else:
        (state[0] if kind == "lstm" else state)[2, 3] = np.nan
    _raises(ValueError, lambda: cell(x, state), NONFINITE)


def _cell_backward(cell, kind, dh):
    return cell.backward(dh, None) if kind == "lstm" else cell.backward(dh)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_backward_with_empty_tape(kind, rng):
    cell = _cell(kind)
    dh = _arr(rng, B, H)
    _raises((ValueError, RuntimeError), lambda: _cell_backward(cell, kind, dh), r"(?i)forward")


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_backward_more_often_than_forward(kind, rng):
    cell = _cell(kind)
    cell(_arr(rng, B, D))
    dh = _arr(rng, B, H)
    _cell_backward(cell, kind, dh)
    _raises((ValueError, RuntimeError), lambda: _cell_backward(cell, kind, dh), r"(?i)forward")


@pytest.mark.parametrize("bad", [(B, 5), (1, H), (B,)], ids=str)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cell_dh_wrong_shape(kind, bad, rng):
    cell = _cell(kind)
    cell(_arr(rng, B, D))
    dh = _arr(rng, *bad)
    _raises(ValueError, lambda: _cell_backward(cell, kind, dh), _shape(bad), _expected((B, H), bad))


def test_lstm_cell_dc_wrong_shape(rng):
    cell = _cell("lstm")
    cell(_arr(rng, B, D))
    dh, dc = _arr(rng, B, H), _arr(rng, 1, H)
    _raises(ValueError, lambda: cell.backward(dh, dc), _shape((1, H)), _expected((B, H), (1, H)))
