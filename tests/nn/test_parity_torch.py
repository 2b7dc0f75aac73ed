"""PyTorch parity of rnnlab's RNN / LSTM / GRU layers and cells.

PyTorch (torch.nn.LSTM / GRU / RNN and the *Cell variants) is the oracle. Every case builds the
torch module, copies its state dict into the rnnlab module, and compares the forward outputs, the
final states, the input / initial-state gradients and every parameter gradient. Every layer test
runs once on each kernel set (the ``kernel_set`` fixture: numpy and compiled).
"""

from __future__ import annotations

import numpy as np
import pytest
from numerics import assert_close

import rnnlab

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

RTOL64, ATOL64 = 1e-10, 1e-12
RTOL32, ATOL32 = 1e-5, 1e-5


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _tdtype(torch, dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def make_pair(torch, kind, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
              bidirectional=False, dtype=np.float64, seed=0):
    """(rnnlab module, torch module) with identical parameters (copied from torch)."""
    torch.manual_seed(seed)
    common = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
                  bidirectional=bidirectional)
    tdt = _tdtype(torch, dtype)
    if kind == "lstm":
        tm = torch.nn.LSTM(input_size, hidden_size, dtype=tdt, **common)
        m = rnnlab.LSTM(input_size, hidden_size, dtype=dtype, seed=seed + 1, **common)
    elif kind == "gru":
        tm = torch.nn.GRU(input_size, hidden_size, dtype=tdt, **common)
        m = rnnlab.GRU(input_size, hidden_size, dtype=dtype, seed=seed + 1, **common)
    else:
        nl = kind.split("_")[1]
        tm = torch.nn.RNN(input_size, hidden_size, nonlinearity=nl, dtype=tdt, **common)
        m = rnnlab.RNN(input_size, hidden_size, nonlinearity=nl, dtype=dtype, seed=seed + 1,
                       **common)
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    m.load_state_dict(sd)
    loaded = m.state_dict()
    assert list(loaded) == list(sd), "state_dict keys/order differ from torch"
    for k in sd:
        np.testing.assert_array_equal(loaded[k], sd[k], err_msg=k)
    return m, tm


def make_cell_pair(torch, kind, input_size, hidden_size, bias=True, dtype=np.float64, seed=0):
    torch.manual_seed(seed)
    tdt = _tdtype(torch, dtype)
    if kind == "lstm":
        tc = torch.nn.LSTMCell(input_size, hidden_size, bias=bias, dtype=tdt)
        c = rnnlab.LSTMCell(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed + 1)
    elif kind == "gru":
        tc = torch.nn.GRUCell(input_size, hidden_size, bias=bias, dtype=tdt)
        c = rnnlab.GRUCell(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed + 1)
    else:
        nl = kind.split("_")[1]
        tc = torch.nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=nl, dtype=tdt)
        c = rnnlab.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=nl, dtype=dtype,
                           seed=seed + 1)
    c.load_state_dict({k: v.detach().numpy().copy() for k, v in tc.state_dict().items()})
    return c, tc


def random_lengths(g, T, B):
    """B lengths in [1, T], at least one == T, not sorted (when that is possible)."""
    lens = g.integers(1, T + 1, size=B)
    lens[g.integers(B)] = T
    if B > 1 and T > 1 and np.all(lens == T):
        j = (int(np.argmax(lens == T)) + 1) % B
        lens[j] = g.integers(1, T)
    if B > 1 and np.all(np.diff(lens) <= 0) and not np.all(lens == lens[0]):
        lens = lens[::-1].copy()  # descending -> ascending: enforce_sorted=True would reject it
    return [int(v) for v in lens]


def make_data(cfg, dtype=np.float64):
    """Random x, initial state, lengths, dout, dstate for one configuration."""
    g = np.random.default_rng(10_000 + cfg["seed"])
    T, B, D, H, L = cfg["T"], cfg["B"], cfg["D"], cfg["H"], cfg["L"]
    dirs = 2 if cfg["bidir"] else 1
    x = g.standard_normal((B, T, D) if cfg["bf"] else (T, B, D)).astype(dtype)
    state = None
    if cfg["state"]:
        state = [(0.5 * g.standard_normal((L * dirs, B, H))).astype(dtype)]
        if cfg["kind"] == "lstm":
            state.append((0.5 * g.standard_normal((L * dirs, B, H))).astype(dtype))
    lengths = random_lengths(g, T, B) if cfg["lengths"] else None
    out_shape = (B, T, dirs * H) if cfg["bf"] else (T, B, dirs * H)
    dout = g.standard_normal(out_shape).astype(dtype)
    dstate = None
    if cfg["dstate"]:
        dstate = [g.standard_normal((L * dirs, B, H)).astype(dtype)]
        if cfg["kind"] == "lstm":
            dstate.append(g.standard_normal((L * dirs, B, H)).astype(dtype))
    return x, state, lengths, dout, dstate


def torch_run(torch, tm, kind, x, state, lengths, dout, dstate, batch_first, H):
    """Forward + backward of the loss (out*dout).sum() + sum(state_n * dstate_n) in torch.

    With no explicit initial state, the state is a zero tensor that requires grad (mathematically
    identical to torch's default), so that its gradient is available too.
    """
    nn_utils = torch.nn.utils.rnn
    tdt = next(tm.parameters()).dtype
    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    T = x.shape[1] if batch_first else x.shape[0]
    B = x.shape[0] if batch_first else x.shape[1]
    n_state = 2 if kind == "lstm" else 1
    nld = tm.num_layers * (2 if tm.bidirectional else 1)
    if state is None:
        st = [torch.zeros(nld, B, H, dtype=tdt, requires_grad=True) for _ in range(n_state)]
    else:
        st = [torch.tensor(s, dtype=tdt, requires_grad=True) for s in state]
    inp = xt
    if lengths is not None:
        inp = nn_utils.pack_padded_sequence(xt, torch.tensor(lengths, dtype=torch.int64),
                                            batch_first=batch_first, enforce_sorted=False)
    out, hs = tm(inp, tuple(st) if kind == "lstm" else st[0])
    if lengths is not None:
        out, _ = nn_utils.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    hs = list(hs) if kind == "lstm" else [hs]
    loss = (out * torch.tensor(dout, dtype=tdt)).sum()
    if dstate is not None:
        for s, ds in zip(hs, dstate, strict=True):
            loss = loss + (s * torch.tensor(ds, dtype=tdt)).sum()
    loss.backward()
    params = dict(tm.named_parameters())
    return {
        "out": out.detach().numpy(),
        "state_n": [s.detach().numpy() for s in hs],
        "dx": xt.grad.numpy(),
        "dstate0": [s.grad.numpy() for s in st],
        "grads": {k: params[k].grad.numpy() for k in tm.state_dict()},
    }


def rnnlab_run(m, kind, x, state, lengths, dout, dstate):
    if state is None:
        res = m(x, lengths=lengths)
    else:
        res = m(x, tuple(state) if kind == "lstm" else state[0], lengths=lengths)
    out, hs = res
    hs = list(hs) if kind == "lstm" else [hs]
    if dstate is None:
        dx, ds0 = m.backward(dout)
    else:
        dx, ds0 = m.backward(dout, tuple(dstate) if kind == "lstm" else dstate[0])
    ds0 = list(ds0) if kind == "lstm" else [ds0]
    return {"out": out, "state_n": hs, "dx": dx, "dstate0": ds0, "grads": m.grads}


def check_parity(torch, cfg, dtype):
    rtol, atol = (RTOL64, ATOL64) if dtype == np.float64 else (RTOL32, ATOL32)
    kind = cfg["kind"]
    m, tm = make_pair(torch, kind, cfg["D"], cfg["H"], num_layers=cfg["L"], bias=cfg["bias"],
                      batch_first=cfg["bf"], bidirectional=cfg["bidir"], dtype=dtype,
                      seed=cfg["seed"])
    x, state, lengths, dout, dstate = make_data(cfg, dtype)
    x_copy, dout_copy = x.copy(), dout.copy()
    ref = torch_run(torch, tm, kind, x, state, lengths, dout, dstate, cfg["bf"], cfg["H"])
    # lengths as a list for some cases, as an int ndarray for others
    rl_lengths = np.asarray(lengths) if lengths is not None and cfg["seed"] % 2 else lengths
    got = rnnlab_run(m, kind, x, state, rl_lengths, dout, dstate)
    # inputs are not modified in place
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)

    assert got["out"].dtype == np.dtype(dtype), f"out dtype {got['out'].dtype}"
    assert_close(got["out"], ref["out"], rtol, atol, "out")
    names = ["h_n", "c_n"]
    for i, (s, r) in enumerate(zip(got["state_n"], ref["state_n"], strict=True)):
        assert_close(s, r, rtol, atol, names[i])
    assert_close(got["dx"], ref["dx"], rtol, atol, "dx")
    dnames = ["dh0", "dc0"]
    for i, (s, r) in enumerate(zip(got["dstate0"], ref["dstate0"], strict=True)):
        if state is None and s is None:
            continue  # no initial state given: returning None for its gradient is acceptable
        assert_close(s, r, rtol, atol, dnames[i])
    assert set(got["grads"]) == set(ref["grads"]), "grads keys differ from state_dict keys"
    for k, r in ref["grads"].items():
        assert_close(got["grads"][k], r, rtol, atol, f"grad {k}")

    if lengths is not None:
        out_tm = got["out"].swapaxes(0, 1) if cfg["bf"] else got["out"]
        dx_tm = got["dx"].swapaxes(0, 1) if cfg["bf"] else got["dx"]
        for b, n in enumerate(lengths):
            assert np.all(out_tm[n:, b] == 0), f"out not exactly 0 past length {n} (batch {b})"
            assert np.all(dx_tm[n:, b] == 0), f"dx not exactly 0 past length {n} (batch {b})"


# --------------------------------------------------------------------------------------------
# the randomized (deterministic) grid
# --------------------------------------------------------------------------------------------


def _gen_grid(seed, combos, n_repeat):
    g = np.random.default_rng(seed)
    cases = []
    i = 0
    for _ in range(n_repeat):
        for kind, L, bidir in combos:
            cfg = dict(
                kind=kind, L=int(L), bidir=bool(bidir),
                T=int(g.integers(1, 7)), B=int(g.integers(1, 5)),
                D=int(g.integers(1, 6)), H=int(g.integers(1, 6)),
                bf=bool(g.integers(2)), bias=bool(g.random() < 0.75),
                lengths=bool(g.integers(2)), state=bool(g.integers(2)),
                dstate=bool(g.random() < 0.75), seed=int(seed * 1000 + i),
            )
            # edge cases sprinkled deterministically over the grid
            if i % 8 == 3:
                cfg["T"] = 1
            if i % 8 == 5:
                cfg["B"] = 1
            if i % 8 == 6:
                cfg["H"] = 1
            if i % 12 == 7:
                cfg["D"] = 1
            if cfg["lengths"] and cfg["B"] > 1 and cfg["T"] == 1:
                cfg["T"] = 4  # lengths are only interesting with T > 1 (T=1 is covered elsewhere)
            cases.append(cfg)
            i += 1
    return cases


def _case_id(c):
    return (
        f"{c['kind']}-L{c['L']}-{'bi' if c['bidir'] else 'uni'}-T{c['T']}B{c['B']}D{c['D']}"
        f"H{c['H']}-{'bf' if c['bf'] else 'tf'}-{'bias' if c['bias'] else 'nobias'}"
        f"-{'len' if c['lengths'] else 'full'}-{'h0' if c['state'] else 'noh0'}"
        f"-{'dhn' if c['dstate'] else 'nodhn'}"
    )


_COMBOS = [(k, L, bd) for k in KINDS for L in (1, 2, 3) for bd in (False, True)]
GRID64 = _gen_grid(7, _COMBOS, 2)  # 48 cases: every (kind, layers, direction) twice
# explicit extreme edge cases
GRID64 += [
    dict(kind="lstm", L=2, bidir=True, T=1, B=1, D=1, H=1, bf=False, bias=True, lengths=True,
         state=True, dstate=True, seed=901),
    dict(kind="gru", L=3, bidir=True, T=5, B=3, D=2, H=1, bf=True, bias=False, lengths=True,
         state=True, dstate=True, seed=902),
    dict(kind="rnn_tanh", L=1, bidir=True, T=6, B=4, D=3, H=2, bf=False, bias=True, lengths=True,
         state=False, dstate=False, seed=903),
    dict(kind="rnn_relu", L=2, bidir=False, T=1, B=4, D=3, H=3, bf=True, bias=True, lengths=True,
         state=True, dstate=True, seed=904),
    # a batch larger than the rest: BLAS takes other code paths for larger GEMMs
    dict(kind="lstm", L=2, bidir=True, T=5, B=40, D=3, H=4, bf=False, bias=True, lengths=True,
         state=True, dstate=True, seed=905),
    dict(kind="lstm", L=1, bidir=False, T=3, B=33, D=2, H=3, bf=True, bias=True, lengths=False,
         state=False, dstate=True, seed=906),
]
_COMBOS32 = [(k, L, bd) for k, L, bd in _COMBOS if (L + bd + KINDS.index(k)) % 2 == 0]
GRID32 = _gen_grid(11, _COMBOS32, 1)[:10]
# float32 batches that kernels.numpy._gemm_rows pads to a multiple of 8 rows (20 -> 24; with
# lengths, 13 live rows -> 16, then 9 -> 9 unpadded, 10 -> 16 ...)
GRID32 += [
    dict(kind=kind, L=2, bidir=bidir, T=6, B=B, D=5, H=7, bf=False, bias=True, lengths=lengths,
         state=True, dstate=True, seed=950 + i)
    for i, (kind, bidir, B, lengths) in enumerate([
        ("lstm", False, 20, False), ("lstm", True, 13, True), ("gru", False, 20, False),
        ("gru", True, 13, True), ("rnn_tanh", False, 20, True), ("rnn_relu", True, 13, True),
    ])
]


def test_grid_covers_every_feature():
    """The generated grid really exercises every flag and edge case."""
    for key in ("bidir", "bf", "bias", "lengths", "state", "dstate"):
        for kind in KINDS:
            vals = {c[key] for c in GRID64 if c["kind"] == kind}
            assert vals == {True, False}, (kind, key, vals)
    for dim in ("T", "B", "H", "D"):
        assert any(c[dim] == 1 for c in GRID64), dim
    assert {c["L"] for c in GRID64} == {1, 2, 3}
    assert 40 <= len(GRID64) <= 60
    assert {c["kind"] for c in GRID32} == set(KINDS)


@pytest.mark.parametrize("cfg", GRID64, ids=[_case_id(c) for c in GRID64])
def test_module_parity_float64(torch, kernel_set, cfg):
    check_parity(torch, cfg, np.float64)


@pytest.mark.parametrize("cfg", GRID32, ids=[_case_id(c) for c in GRID32])
def test_module_parity_float32(torch, kernel_set, cfg, monkeypatch):
    from rnnlab.nn.kernels import numpy as numpy_set

    monkeypatch.setattr(numpy_set, "PAD_ROWS", 8)  # the padded step rows, on every host
    check_parity(torch, cfg, np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_parity(torch, kernel_set, kind):
    """Unbatched (T, D) input with a (L*dirs, H) state matches torch's unbatched mode."""
    T, D, H, L = 5, 3, 4, 2
    m, tm = make_pair(torch, kind, D, H, num_layers=L, bidirectional=True, seed=77)
    g = np.random.default_rng(3)
    x = g.standard_normal((T, D))
    st = [0.5 * g.standard_normal((2 * L, H)) for _ in range(2 if kind == "lstm" else 1)]
    dout = g.standard_normal((T, 2 * H))
    xt = torch.tensor(x, requires_grad=True)
    stt = [torch.tensor(s, requires_grad=True) for s in st]
    if kind == "lstm":
        out_t, (h_t, c_t) = tm(xt, tuple(stt))
        out, (h, c) = m(x, tuple(st))
        assert_close(c, c_t.detach().numpy(), RTOL64, ATOL64, "c_n")
    else:
        out_t, h_t = tm(xt, stt[0])
        out, h = m(x, st[0])
    assert_close(out, out_t.detach().numpy(), RTOL64, ATOL64, "out")
    assert_close(h, h_t.detach().numpy(), RTOL64, ATOL64, "h_n")
    (out_t * torch.tensor(dout)).sum().backward()
    dx, ds0 = m.backward(dout)
    assert_close(dx, xt.grad.numpy(), RTOL64, ATOL64, "dx")
    ds0 = list(ds0) if kind == "lstm" else [ds0]
    for got, ref in zip(ds0, stt, strict=True):
        assert_close(got, ref.grad.numpy(), RTOL64, ATOL64, "dstate0")
    params = dict(tm.named_parameters())
    for k in tm.state_dict():
        assert_close(m.grads[k], params[k].grad.numpy(), RTOL64, ATOL64, f"grad {k}")


@pytest.mark.parametrize("kind", KINDS)
def test_grads_accumulate_and_zero_grad(torch, kernel_set, kind):
    """Two forward/backward passes accumulate (+=) like torch; zero_grad resets to 0."""
    cfg = dict(kind=kind, L=2, bidir=True, T=4, B=3, D=3, H=2, bf=False, bias=True, lengths=True,
               state=True, dstate=True, seed=55)
    m, tm = make_pair(torch, kind, 3, 2, num_layers=2, bidirectional=True, seed=55)
    x, state, lengths, dout, dstate = make_data(cfg)
    ref = torch_run(torch, tm, kind, x, state, lengths, dout, dstate, False, 2)
    for _ in range(2):
        rnnlab_run(m, kind, x, state, lengths, dout, dstate)
    for k, r in ref["grads"].items():
        assert_close(m.grads[k], 2 * r, RTOL64, ATOL64, f"accumulated grad {k}")
    m.zero_grad()
    for k, v in m.grads.items():
        assert v.shape == ref["grads"][k].shape
        assert np.all(v == 0), k
    rnnlab_run(m, kind, x, state, lengths, dout, dstate)
    for k, r in ref["grads"].items():
        assert_close(m.grads[k], r, RTOL64, ATOL64, f"grad after zero_grad {k}")


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------

CELL_CASES = [
    (kind, bias, B, D, H)
    for kind in KINDS
    for bias, B, D, H in ((True, 3, 4, 5), (False, 1, 2, 3), (True, 2, 1, 1))
]


def _cell_id(c):
    return f"{c[0]}-{'bias' if c[1] else 'nobias'}-B{c[2]}D{c[3]}H{c[4]}"


@pytest.mark.parametrize("case", CELL_CASES, ids=[_cell_id(c) for c in CELL_CASES])
def test_cell_forward_parity(torch, case):
    kind, bias, B, D, H = case
    cell, tc = make_cell_pair(torch, kind, D, H, bias=bias, seed=B * 100 + D * 10 + H)
    g = np.random.default_rng(21)
    x = g.standard_normal((B, D))
    h0 = 0.5 * g.standard_normal((B, H))
    c0 = 0.5 * g.standard_normal((B, H))
    with torch.no_grad():
        if kind == "lstm":
            h_t, c_t = tc(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
            h, c = cell(x, (h0, c0))
            assert_close(c, c_t.numpy(), RTOL64, ATOL64, "c")
            assert_close(h, h_t.numpy(), RTOL64, ATOL64, "h")
            h_t, c_t = tc(torch.tensor(x))
            h, c = cell(x)  # state optional -> zeros
            assert_close(c, c_t.numpy(), RTOL64, ATOL64, "c (zero state)")
            assert_close(h, h_t.numpy(), RTOL64, ATOL64, "h (zero state)")
        else:
            h_t = tc(torch.tensor(x), torch.tensor(h0))
            h = cell(x, h0)
            assert_close(h, h_t.numpy(), RTOL64, ATOL64, "h")
            h_t = tc(torch.tensor(x))
            h = cell(x)
            assert_close(h, h_t.numpy(), RTOL64, ATOL64, "h (zero state)")


@pytest.mark.parametrize("case", CELL_CASES, ids=[_cell_id(c) for c in CELL_CASES])
def test_cell_unrolled_bptt_parity(torch, case):
    """T forwards, then T backwards popping the tape == torch autograd through the unrolled loop."""
    kind, bias, B, D, H = case
    T = 5
    cell, tc = make_cell_pair(torch, kind, D, H, bias=bias, seed=B * 100 + D * 10 + H + 1)
    g = np.random.default_rng(22)
    xs = g.standard_normal((T, B, D))
    h0 = 0.5 * g.standard_normal((B, H))
    c0 = 0.5 * g.standard_normal((B, H))
    dhs = g.standard_normal((T, B, H))  # external gradient on every h_t
    dcs = g.standard_normal((T, B, H))  # and on every c_t (LSTM)

    # torch
    xt = torch.tensor(xs, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    ct = torch.tensor(c0, requires_grad=True)
    h, c = ht, ct
    loss = 0
    hs_t, cs_t = [], []
    for t in range(T):
        if kind == "lstm":
            h, c = tc(xt[t], (h, c))
            loss = loss + (c * torch.tensor(dcs[t])).sum()
            cs_t.append(c.detach().numpy())
        else:
            h = tc(xt[t], h)
        loss = loss + (h * torch.tensor(dhs[t])).sum()
        hs_t.append(h.detach().numpy())
    loss.backward()

    # rnnlab
    h, c = h0, c0
    for t in range(T):
        if kind == "lstm":
            h, c = cell(xs[t], (h, c))
            assert_close(c, cs_t[t], RTOL64, ATOL64, f"c[{t}]")
        else:
            h = cell(xs[t], h)
        assert_close(h, hs_t[t], RTOL64, ATOL64, f"h[{t}]")
    dh_carry = np.zeros((B, H))
    dc_carry = np.zeros((B, H))
    dxs = np.zeros_like(xs)
    for t in reversed(range(T)):
        if kind == "lstm":
            dxs[t], (dh_carry, dc_carry) = cell.backward(dhs[t] + dh_carry, dcs[t] + dc_carry)
        else:
            dxs[t], dh_carry = cell.backward(dhs[t] + dh_carry)
    assert_close(dxs, xt.grad.numpy(), RTOL64, ATOL64, "dx")
    assert_close(dh_carry, ht.grad.numpy(), RTOL64, ATOL64, "dh0")
    if kind == "lstm":
        assert_close(dc_carry, ct.grad.numpy(), RTOL64, ATOL64, "dc0")
    params = dict(tc.named_parameters())
    assert set(cell.grads) == set(params)
    for k, p in params.items():
        assert_close(cell.grads[k], p.grad.numpy(), RTOL64, ATOL64, f"grad {k}")


def test_lstm_cell_backward_dc_none(torch):
    """LSTMCell.backward(dh, None) == backward(dh, zeros)."""
    cell, tc = make_cell_pair(torch, "lstm", 3, 4, seed=5)
    g = np.random.default_rng(5)
    x = g.standard_normal((2, 3))
    h0, c0 = g.standard_normal((2, 4)), g.standard_normal((2, 4))
    dh = g.standard_normal((2, 4))
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    h_t, _ = tc(xt, (h0t, c0t))
    (h_t * torch.tensor(dh)).sum().backward()
    cell(x, (h0, c0))
    dx, (dh0, dc0) = cell.backward(dh, None)
    assert_close(dx, xt.grad.numpy(), RTOL64, ATOL64, "dx")
    assert_close(dh0, h0t.grad.numpy(), RTOL64, ATOL64, "dh0")
    assert_close(dc0, c0t.grad.numpy(), RTOL64, ATOL64, "dc0")


# --------------------------------------------------------------------------------------------
# internals (return_internals=True)
# --------------------------------------------------------------------------------------------


def _torch_cell_from(torch, kind, tm, layer, reverse, in_dim, H):
    """A torch *Cell carrying one (layer, direction) of a torch multi-layer module."""
    bias = tm.bias
    if kind == "lstm":
        cell = torch.nn.LSTMCell(in_dim, H, bias=bias, dtype=torch.float64)
    elif kind == "gru":
        cell = torch.nn.GRUCell(in_dim, H, bias=bias, dtype=torch.float64)
    else:
        cell = torch.nn.RNNCell(in_dim, H, bias=bias, nonlinearity=kind.split("_")[1],
                                dtype=torch.float64)
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    sd = tm.state_dict()
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(sd[name + sfx])
    return cell


def torch_reference_internals(torch, kind, tm, x, state, H):
    """Step-by-step torch reference for one sequence x (T, 1, D) with initial state `state`
    (list of (L*dirs, 1, H) arrays): per (layer, direction) dicts
    of gate activations (from the gate formulas) and h / c (from torch *Cell), shape (T, 1, H).
    Also returns the top output and final states, to validate the reference against torch."""
    F = torch.nn.functional
    L, dirs = tm.num_layers, (2 if tm.bidirectional else 1)
    T = x.shape[0]
    sd = tm.state_dict()
    layer_in = torch.tensor(x)
    ref, h_n, c_n = {}, [], []
    with torch.no_grad():
        for layer in range(L):
            outs = []
            for d in range(dirs):
                key = f"l{layer}" + ("_reverse" if d else "")
                sfx = "_" + key
                cell = _torch_cell_from(torch, kind, tm, layer, d == 1, layer_in.shape[2], H)
                idx = layer * dirs + d
                h = torch.tensor(state[0][idx])
                if kind == "lstm":
                    c = torch.tensor(state[1][idx])
                rec = {}
                steps = range(T) if d == 0 else range(T - 1, -1, -1)
                for t in steps:
                    xin = layer_in[t]
                    gi = F.linear(xin, sd["weight_ih" + sfx], sd.get("bias_ih" + sfx))
                    gh = F.linear(h, sd["weight_hh" + sfx], sd.get("bias_hh" + sfx))
                    # gate activations from the formulas (torch gate order), h / c from the
                    # torch cell; the update equations tie the two together
                    if kind == "lstm":
                        pre = (gi + gh).chunk(4, 1)
                        acts = dict(i=torch.sigmoid(pre[0]), f=torch.sigmoid(pre[1]),
                                    g=torch.tanh(pre[2]), o=torch.sigmoid(pre[3]))
                        c_prev = c
                        h, c = cell(xin, (h, c))
                        acts["c"] = c
                        torch.testing.assert_close(c, acts["f"] * c_prev + acts["i"] * acts["g"],
                                                   rtol=1e-13, atol=1e-14)
                        torch.testing.assert_close(h, acts["o"] * torch.tanh(c),
                                                   rtol=1e-13, atol=1e-14)
                    elif kind == "gru":
                        ir, iz, inn = gi.chunk(3, 1)
                        hr, hz, hn = gh.chunk(3, 1)
                        r = torch.sigmoid(ir + hr)
                        acts = dict(r=r, z=torch.sigmoid(iz + hz), n=torch.tanh(inn + r * hn))
                        h_prev = h
                        h = cell(xin, h)
                        torch.testing.assert_close(
                            h, (1 - acts["z"]) * acts["n"] + acts["z"] * h_prev,
                            rtol=1e-13, atol=1e-14)
                    else:
                        acts = {}
                        h = cell(xin, h)
                    acts["h"] = h
                    for name, v in acts.items():
                        rec.setdefault(name, [None] * T)[t] = v.numpy().copy()
                ref[key] = {name: np.stack(v) for name, v in rec.items()}
                outs.append(torch.tensor(ref[key]["h"]))
                h_n.append(h.numpy())
                if kind == "lstm":
                    c_n.append(c.numpy())
            layer_in = torch.cat(outs, dim=2)
    return ref, layer_in.numpy(), np.stack(h_n), (np.stack(c_n) if c_n else None)


INTERNAL_NAMES = {"lstm": ("i", "f", "g", "o", "c", "h"), "gru": ("r", "z", "n", "h"),
                  "rnn_tanh": ("h",), "rnn_relu": ("h",)}
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn_tanh": (), "rnn_relu": ()}
TANH_GATES = {"lstm": ("g",), "gru": ("n",), "rnn_tanh": ("h",), "rnn_relu": ()}

INTERNAL_CASES = [
    (kind, L, bidir, bf, lengths)
    for kind in KINDS
    for L, bidir, bf, lengths in ((2, True, False, True), (1, False, True, False),
                                  (2, False, False, False))
]


@pytest.mark.parametrize("case", INTERNAL_CASES,
                         ids=[f"{k}-L{L}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-"
                              f"{'len' if n else 'full'}" for k, L, b, f, n in INTERNAL_CASES])
def test_internals_step_by_step(torch, kernel_set, case):
    kind, L, bidir, bf, use_len = case
    T, B, D, H = 5, 3, 3, 4
    dirs = 2 if bidir else 1
    m, tm = make_pair(torch, kind, D, H, num_layers=L, bidirectional=bidir, batch_first=bf,
                      seed=31)
    g = np.random.default_rng(31)
    x_tm = g.standard_normal((T, B, D))
    state = [0.5 * g.standard_normal((L * dirs, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    lengths = [3, T, 1] if use_len else None
    x = x_tm.swapaxes(0, 1).copy() if bf else x_tm
    st_arg = tuple(state) if kind == "lstm" else state[0]
    out, hs, internals = m(x, st_arg, lengths=lengths, return_internals=True)
    out_plain, hs_plain = m(x, st_arg, lengths=lengths)
    assert_close(out, out_plain, 1e-14, 1e-15, "out with vs without internals")

    expected_keys = {f"l{layer}" + sfx for layer in range(L)
                     for sfx in (("", "_reverse") if bidir else ("",))}
    assert set(internals) == expected_keys
    out_tm = out.swapaxes(0, 1) if bf else out
    lens = lengths if lengths is not None else [T] * B
    for b, n in enumerate(lens):
        sb = [s[:, b:b + 1] for s in state]
        ref, ref_out, ref_h, ref_c = torch_reference_internals(
            torch, kind, tm, x_tm[:n, b:b + 1], sb, H)
        # validate the step-by-step reference against the torch module itself
        with torch.no_grad():
            tstate = tuple(torch.tensor(s) for s in sb)
            xb = x_tm[:n, b:b + 1]
            o_t, hs_t = tm(torch.tensor(xb.swapaxes(0, 1) if bf else xb),
                           tstate if kind == "lstm" else tstate[0])
        o_t = o_t.numpy().swapaxes(0, 1) if bf else o_t.numpy()
        np.testing.assert_allclose(ref_out, o_t, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ref_h, (hs_t[0] if kind == "lstm" else hs_t).numpy(),
                                   rtol=1e-12, atol=1e-13)
        if kind == "lstm":
            np.testing.assert_allclose(ref_c, hs_t[1].numpy(), rtol=1e-12, atol=1e-13)
        # the module's own output is consistent with the reference
        assert_close(out_tm[:n, b], ref_out[:, 0], RTOL64, ATOL64, f"out batch {b}")
        for key in expected_keys:
            assert set(internals[key]) == set(INTERNAL_NAMES[kind]), (key, set(internals[key]))
            for name in INTERNAL_NAMES[kind]:
                arr = internals[key][name]
                assert arr.shape == ((B, T, H) if bf else (T, B, H)), (key, name, arr.shape)
                arr = arr.swapaxes(0, 1) if bf else arr
                assert_close(arr[:n, b], ref[key][name][:, 0], RTOL64, ATOL64,
                             f"internals[{key}][{name}] batch {b}")
                assert np.all(arr[n:, b] == 0), f"internals[{key}][{name}] padded not 0"
                valid = arr[:n, b]
                if name in SIGMOID_GATES[kind]:
                    assert np.all((valid > 0) & (valid < 1)), (key, name)
                if name in TANH_GATES[kind]:
                    assert np.all((valid > -1) & (valid < 1)), (key, name)
                if kind == "rnn_relu":
                    assert np.all(valid >= 0), (key, name)

    # top-layer "h" is the output (both directions)
    top = f"l{L - 1}"
    assert_close(internals[top]["h"], out[..., :H], 1e-14, 1e-15, "top h vs out (forward)")
    if bidir:
        assert_close(internals[top + "_reverse"]["h"], out[..., H:], 1e-14, 1e-15,
                     "top h vs out (reverse)")


@pytest.mark.parametrize("L", [1, 2])
def test_lstm_internals_c_matches_prefix_runs(torch, kernel_set, L):
    """Unidirectional LSTM: internals c[t] / h[t] of every layer == torch c_n / h_n on x[:t+1]."""
    T, B, D, H = 6, 2, 3, 3
    m, tm = make_pair(torch, "lstm", D, H, num_layers=L, seed=41)
    g = np.random.default_rng(41)
    x = g.standard_normal((T, B, D))
    h0, c0 = 0.5 * g.standard_normal((2, L, B, H))
    _, _, internals = m(x, (h0, c0), return_internals=True)
    with torch.no_grad():
        for t in range(T):
            _, (h_t, c_t) = tm(torch.tensor(x[: t + 1]), (torch.tensor(h0), torch.tensor(c0)))
            for layer in range(L):
                assert_close(internals[f"l{layer}"]["c"][t], c_t[layer].numpy(), RTOL64, ATOL64,
                             f"c l{layer} t={t}")
                assert_close(internals[f"l{layer}"]["h"][t], h_t[layer].numpy(), RTOL64, ATOL64,
                             f"h l{layer} t={t}")


def test_gru_internals_h_equals_out_unidirectional(torch, kernel_set):
    m, _ = make_pair(torch, "gru", 3, 4, num_layers=1, seed=8)
    x = np.random.default_rng(8).standard_normal((5, 2, 3))
    out, h_n, internals = m(x, return_internals=True)
    assert_close(internals["l0"]["h"], out, 1e-14, 1e-15, "GRU h vs out")
    assert_close(internals["l0"]["h"][-1], h_n[0], 1e-14, 1e-15, "GRU h[-1] vs h_n")


# --------------------------------------------------------------------------------------------
# default initialisation
# --------------------------------------------------------------------------------------------


def _build(kind, D, H, **kw):
    if kind == "lstm":
        return rnnlab.LSTM(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRU(D, H, **kw)
    return rnnlab.RNN(D, H, nonlinearity=kind.split("_")[1], **kw)


def _build_cell(kind, D, H, **kw):
    if kind == "lstm":
        return rnnlab.LSTMCell(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRUCell(D, H, **kw)
    return rnnlab.RNNCell(D, H, nonlinearity=kind.split("_")[1], **kw)


def _check_init_values(sd, H):
    k = 1.0 / np.sqrt(H)
    for name, v in sd.items():
        assert np.all(np.abs(v) <= k), f"{name}: outside [-1/sqrt(H), 1/sqrt(H)]"
    allv = np.concatenate([v.ravel() for v in sd.values()])
    # uniform over the whole interval (not e.g. U(0, k) or a narrower range)
    assert allv.min() < -0.9 * k and allv.max() > 0.9 * k
    assert abs(allv.mean()) < 0.1 * k
    assert 0.45 < np.mean(np.abs(allv)) / k < 0.55  # E|U(-k,k)| = k/2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_default_init_matches_torch_layout(torch, kind, bias):
    D, H, L = 5, 16, 3
    tdt = torch.float32
    common = dict(num_layers=L, bias=bias, bidirectional=True)
    if kind == "lstm":
        tm = torch.nn.LSTM(D, H, dtype=tdt, **common)
    elif kind == "gru":
        tm = torch.nn.GRU(D, H, dtype=tdt, **common)
    else:
        tm = torch.nn.RNN(D, H, nonlinearity=kind.split("_")[1], dtype=tdt, **common)
    m = _build(kind, D, H, seed=0, **common)
    sd = m.state_dict()
    tsd = tm.state_dict()
    assert list(sd) == list(tsd), "keys / order differ from torch"
    for name, v in sd.items():
        assert v.shape == tuple(tsd[name].shape), name
        assert v.dtype == np.float32, f"{name}: default dtype {v.dtype}"
    assert list(m.parameters()) == list(tsd)
    assert set(m.grads) == set(tsd)
    for name, v in m.grads.items():
        assert v.shape == sd[name].shape and np.all(v == 0), name
    _check_init_values(sd, H)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_init_reproducible(kind):
    kw = dict(num_layers=2, bidirectional=True, dtype=np.float64)
    a = _build(kind, 4, 6, seed=123, **kw).state_dict()
    b = _build(kind, 4, 6, seed=123, **kw).state_dict()
    c = _build(kind, 4, 6, seed=124, **kw).state_dict()
    d = _build(kind, 4, 6, seed=np.random.default_rng(123), **kw).state_dict()
    e = _build(kind, 4, 6, seed=np.random.default_rng(123), **kw).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(d[name], e[name], err_msg=name)
        assert not np.array_equal(a[name], c[name]), f"{name}: different seeds, same init"
    # float64 init obeys the same bound
    _check_init_values(a, 6)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_default_init(torch, kind):
    D, H = 7, 25
    tc = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(kind, torch.nn.RNNCell)(D, H)
    cell = _build_cell(kind, D, H, seed=3)
    sd = cell.state_dict()
    assert list(sd) == list(tc.state_dict())
    for name, v in sd.items():
        assert v.shape == tuple(tc.state_dict()[name].shape), name
    _check_init_values(sd, H)
    again = _build_cell(kind, D, H, seed=3).state_dict()
    other = _build_cell(kind, D, H, seed=4).state_dict()
    for name in sd:
        np.testing.assert_array_equal(sd[name], again[name])
        assert not np.array_equal(sd[name], other[name])
