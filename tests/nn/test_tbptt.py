"""Truncated BPTT: chunked forward / backward carrying the returned state between calls.

Every test runs once on each kernel set (numpy and compiled: the ``kernel_set`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest

import rnnlab

T, B, D, H, L = 12, 3, 3, 4, 2
KINDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
SPLITS = {"3x4": [4, 4, 4], "5+7": [5, 7], "7+1+4": [7, 1, 4]}
TIGHT = dict(rtol=1e-12, atol=1e-13)
TORCH_TOL = dict(rtol=1e-10, atol=1e-12)

pytestmark = pytest.mark.usefixtures("kernel_set")


# ----------------------------------------------------------------------------- helpers


def _layer(kind, **kw):
    kw.setdefault("dtype", np.float64)
    kw.setdefault("num_layers", L)
    if kind == "lstm":
        return rnnlab.LSTM(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRU(D, H, **kw)
    return rnnlab.RNN(D, H, nonlinearity=kind[4:], **kw)


def _n_state(kind):
    return 2 if kind == "lstm" else 1


def _fwd(m, kind, x, state):
    """Forward with a uniform signature: returns (out, [h_n] or [h_n, c_n])."""
    if kind == "lstm":
        out, (h, c) = m(x, tuple(state))
        return out, [h, c]
    out, h = m(x, state[0])
    return out, [h]


def _bwd(m, kind, dout, dstate):
    """Backward with a uniform signature: returns (dx, [dh0] or [dh0, dc0])."""
    if kind == "lstm":
        dx, (dh, dc) = m.backward(dout, tuple(dstate))
        return dx, [dh, dc]
    dx, dh = m.backward(dout, dstate[0])
    return dx, [dh]


def _chunks(x, sizes):
    assert sum(sizes) == x.shape[0]
    return np.split(x, np.cumsum(sizes)[:-1], axis=0)


def _random_state(kind, rng):
    return [0.5 * rng.standard_normal((L, B, H)) for _ in range(_n_state(kind))]


def _grads(m):
    return {k: g.copy() for k, g in m.grads.items()}


def _assert_dicts_close(got, want, **tol):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], err_msg=k, **tol)


def _assert_lists_close(got, want, **tol):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, **tol)


def _torch_pair(torch, kind):
    """A float64 torch module and an rnnlab module holding the same weights."""
    torch.manual_seed(0)
    if kind == "lstm":
        tm = torch.nn.LSTM(D, H, num_layers=L)
    elif kind == "gru":
        tm = torch.nn.GRU(D, H, num_layers=L)
    else:
        tm = torch.nn.RNN(D, H, num_layers=L, nonlinearity=kind[4:])
    tm = tm.double()
    m = _layer(kind)
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    return m, tm


def _torch_fwd(tm, kind, x, state):
    if kind == "lstm":
        out, (h, c) = tm(x, tuple(state))
        return out, [h, c]
    out, h = tm(x, state[0])
    return out, [h]


def _torch_leaves(torch, arrays):
    return [torch.from_numpy(a.copy()).requires_grad_(True) for a in arrays]


def _torch_weighted(out, final, w_out, w_state, torch):
    loss = (out * torch.from_numpy(w_out)).sum()
    for s, w in zip(final, w_state, strict=True):
        loss = loss + (s * torch.from_numpy(w)).sum()
    return loss


def _torch_grads(tm):
    return {k: p.grad.detach().numpy().copy() for k, p in tm.named_parameters()}


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_forward_equals_full_forward(kind, split, rng):
    m = _layer(kind, seed=3)
    x = rng.standard_normal((T, B, D))
    state0 = _random_state(kind, rng)
    out_full, final_full = _fwd(m, kind, x, state0)
    state, outs = state0, []
    for chunk in _chunks(x, SPLITS[split]):
        out, state = _fwd(m, kind, chunk, state)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=0), out_full, **TIGHT)
    _assert_lists_close(state, final_full, **TIGHT)
    assert not np.allclose(final_full[0], state0[0])


# ----------------------------------------------------------------------------- backward


@pytest.mark.parametrize("split", ["3x4", "5+7"])
@pytest.mark.parametrize("kind", KINDS)
def test_last_chunk_grads_match_torch_with_detached_state(torch, kind, split, rng):
    m, tm = _torch_pair(torch, kind)
    chunks = _chunks(rng.standard_normal((T, B, D)), SPLITS[split])
    state0 = _random_state(kind, rng)

    state = state0
    for chunk in chunks:
        out, state = _fwd(m, kind, chunk, state)
    w_out = rng.standard_normal(out.shape)
    w_state = [rng.standard_normal(s.shape) for s in state]
    m.zero_grad()
    dx, dstate0 = _bwd(m, kind, w_out, w_state)

    tstate = [torch.from_numpy(s) for s in state0]
    with torch.no_grad():
        for chunk in chunks[:-1]:
            _, tstate = _torch_fwd(tm, kind, torch.from_numpy(chunk), tstate)
    tstate = _torch_leaves(torch, [s.numpy() for s in tstate])  # detached chunk boundary
    tx = _torch_leaves(torch, [chunks[-1]])[0]
    tout, tfinal = _torch_fwd(tm, kind, tx, tstate)
    tm.zero_grad()
    _torch_weighted(tout, tfinal, w_out, w_state, torch).backward()

    np.testing.assert_allclose(out, tout.detach().numpy(), **TORCH_TOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    _assert_lists_close(dstate0, [s.grad.numpy() for s in tstate], **TORCH_TOL)
    _assert_dicts_close(_grads(m), _torch_grads(tm), **TORCH_TOL)


@pytest.mark.parametrize("split", ["3x4", "7+1+4"])
@pytest.mark.parametrize("kind", KINDS)
def test_tbptt_training_loop_accumulates_like_torch(torch, kind, split, rng):
    """Forward chunk k, backward chunk k, carry the state: grads accumulate over the chunks."""
    m, tm = _torch_pair(torch, kind)
    chunks = _chunks(rng.standard_normal((T, B, D)), SPLITS[split])
    state = _random_state(kind, rng)
    tstate = [torch.from_numpy(s.copy()) for s in state]
    m.zero_grad()
    tm.zero_grad()
    for chunk in chunks:
        out, state = _fwd(m, kind, chunk, state)
        w_out = rng.standard_normal(out.shape)
        w_state = [rng.standard_normal(s.shape) for s in state]
        dx, _ = _bwd(m, kind, w_out, w_state)

        tx = _torch_leaves(torch, [chunk])[0]
        tout, tfinal = _torch_fwd(tm, kind, tx, tstate)
        _torch_weighted(tout, tfinal, w_out, w_state, torch).backward()
        tstate = [s.detach() for s in tfinal]

        np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    _assert_lists_close(state, [s.numpy() for s in tstate], **TORCH_TOL)
    _assert_dicts_close(_grads(m), _torch_grads(tm), **TORCH_TOL)


def _full_gradient(m, kind, x, state0, w_out, w_state):
    m.zero_grad()
    _fwd(m, kind, x, state0)
    dx, dstate0 = _bwd(m, kind, w_out, w_state)
    return dx, dstate0, _grads(m)


def _chunk_initial_states(m, kind, chunks, state0):
    states = [state0]
    for chunk in chunks[:-1]:
        _, state = _fwd(m, kind, chunk, states[-1])
        states.append(state)
    return states


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("kind", KINDS)
def test_full_gradient_from_chunks_with_recomputation(kind, split, rng):
    """Full BPTT rebuilt from chunks: recompute chunk k's forward from its saved initial state,
    then backward it with dh_n := the dh0 returned by chunk k+1. Parameter grads accumulate to
    the full-sequence gradient, dx concatenates to the full dx, and the first chunk's dh0/dc0 is
    the full dh0/dc0. This shows that a chunk's backward returns the exact gradient wrt its
    initial state (the quantity truncated BPTT discards)."""
    m = _layer(kind, seed=13)
    x = rng.standard_normal((T, B, D))
    state0 = _random_state(kind, rng)
    w_out = rng.standard_normal((T, B, H))
    w_state = [rng.standard_normal((L, B, H)) for _ in state0]
    dx_full, dstate_full, g_full = _full_gradient(m, kind, x, state0, w_out, w_state)

    sizes = SPLITS[split]
    chunks, w_chunks = _chunks(x, sizes), _chunks(w_out, sizes)
    starts = _chunk_initial_states(m, kind, chunks, state0)
    m.zero_grad()
    dstate, dxs = w_state, []
    for chunk, w, start in reversed(list(zip(chunks, w_chunks, starts, strict=True))):
        _fwd(m, kind, chunk, start)  # recompute this chunk's cache
        dx, dstate = _bwd(m, kind, w, dstate)
        dxs.insert(0, dx)

    np.testing.assert_allclose(np.concatenate(dxs, axis=0), dx_full, **TIGHT)
    _assert_lists_close(dstate, dstate_full, **TIGHT)
    _assert_dicts_close(_grads(m), g_full, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_changes_gradient(kind, rng):
    """Sanity: the last chunk's truncated gradient differs from the full-sequence gradient, so the
    recomputation test above is not vacuous."""
    m = _layer(kind, seed=13)
    x = rng.standard_normal((T, B, D))
    state0 = _random_state(kind, rng)
    w_out = np.zeros((T, B, H))
    w_out[-4:] = rng.standard_normal((4, B, H))
    w_state = [rng.standard_normal((L, B, H)) for _ in state0]
    _, _, g_full = _full_gradient(m, kind, x, state0, w_out, w_state)
    starts = _chunk_initial_states(m, kind, _chunks(x, [8, 4]), state0)
    m.zero_grad()
    _fwd(m, kind, x[8:], starts[1])
    _bwd(m, kind, w_out[8:], w_state)
    assert not np.allclose(m.grads["weight_hh_l0"], g_full["weight_hh_l0"])
