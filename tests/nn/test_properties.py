"""Hypothesis property tests of rnnlab's RNN / LSTM / GRU over random shapes.

Properties: torch parity of the forward pass and of dx (float64), shape / dtype invariants,
consistency of h_n with the output at each sequence's last valid step, lengths == T behaving like
no lengths, and batch-permutation equivariance with lengths.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnlab

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def configs(draw, lengths=None):
    kind = draw(st.sampled_from(KINDS))
    T = draw(st.integers(1, 6))
    B = draw(st.integers(1, 4))
    cfg = dict(
        kind=kind, T=T, B=B, D=draw(st.integers(1, 5)), H=draw(st.integers(1, 5)),
        L=draw(st.integers(1, 2)), bidir=draw(st.booleans()), bf=draw(st.booleans()),
        bias=draw(st.booleans()), state=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )
    use_len = draw(st.booleans()) if lengths is None else lengths
    cfg["lengths"] = None
    if use_len:
        lens = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        lens[draw(st.integers(0, B - 1))] = T
        cfg["lengths"] = lens
    return cfg


def build(kind, D, H, **kw):
    if kind == "lstm":
        return rnnlab.LSTM(D, H, **kw)
    if kind == "gru":
        return rnnlab.GRU(D, H, **kw)
    return rnnlab.RNN(D, H, nonlinearity=kind.split("_")[1], **kw)


def build_torch(torch, kind, D, H, **kw):
    if kind == "lstm":
        return torch.nn.LSTM(D, H, dtype=torch.float64, **kw)
    if kind == "gru":
        return torch.nn.GRU(D, H, dtype=torch.float64, **kw)
    return torch.nn.RNN(D, H, nonlinearity=kind.split("_")[1], dtype=torch.float64, **kw)


def module_kwargs(cfg):
    return dict(num_layers=cfg["L"], bias=cfg["bias"], batch_first=cfg["bf"],
                bidirectional=cfg["bidir"])


def make_pair(torch, cfg):
    torch.manual_seed(cfg["seed"])
    tm = build_torch(torch, cfg["kind"], cfg["D"], cfg["H"], **module_kwargs(cfg))
    m = build(cfg["kind"], cfg["D"], cfg["H"], dtype=np.float64, **module_kwargs(cfg))
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    return m, tm


def make_data(cfg, dtype=np.float64):
    g = np.random.default_rng(cfg["seed"])
    T, B, D, H = cfg["T"], cfg["B"], cfg["D"], cfg["H"]
    dirs = 2 if cfg["bidir"] else 1
    x = g.standard_normal((B, T, D) if cfg["bf"] else (T, B, D)).astype(dtype)
    n_state = 2 if cfg["kind"] == "lstm" else 1
    state = None
    if cfg["state"]:
        state = [(0.5 * g.standard_normal((cfg["L"] * dirs, B, H))).astype(dtype)
                 for _ in range(n_state)]
    dout = g.standard_normal((B, T, dirs * H) if cfg["bf"] else (T, B, dirs * H)).astype(dtype)
    return x, state, dout


def forward(m, kind, x, state, lengths):
    if state is None:
        out, hs = m(x, lengths=lengths)
    else:
        out, hs = m(x, tuple(state) if kind == "lstm" else state[0], lengths=lengths)
    return out, (list(hs) if kind == "lstm" else [hs])


def backward(m, kind, dout):
    dx, ds0 = m.backward(dout)
    return dx, (list(ds0) if kind == "lstm" else [ds0])


def close(got, exp, rtol=1e-10, atol=1e-12, what=""):
    got, exp = np.asarray(got), np.asarray(exp)
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    scale = max(1.0, float(np.max(np.abs(exp)))) if exp.size else 1.0
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol * scale, err_msg=what)


def time_major(a, bf):
    return a.swapaxes(0, 1) if bf else a


@SETTINGS
@given(cfg=configs())
def test_forward_and_dx_match_torch(torch, cfg):
    kind, bf, lengths = cfg["kind"], cfg["bf"], cfg["lengths"]
    m, tm = make_pair(torch, cfg)
    x, state, dout = make_data(cfg)
    T = cfg["T"]

    xt = torch.tensor(x, requires_grad=True)
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
    if state is None:
        out_t, hs_t = tm(inp)
    else:
        st_t = [torch.tensor(s) for s in state]
        out_t, hs_t = tm(inp, tuple(st_t) if kind == "lstm" else st_t[0])
    if lengths is not None:
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=bf, total_length=T)
    hs_t = list(hs_t) if kind == "lstm" else [hs_t]
    (out_t * torch.tensor(dout)).sum().backward()

    out, hs = forward(m, kind, x, state, lengths)
    close(out, out_t.detach().numpy(), what="out")
    for name, s, s_t in zip(("h_n", "c_n"), hs, hs_t, strict=False):
        close(s, s_t.detach().numpy(), what=name)
    dx, _ = backward(m, kind, dout)
    close(dx, xt.grad.numpy(), what="dx")


@SETTINGS
@given(cfg=configs(), dtype=st.sampled_from([np.float32, np.float64]))
def test_shape_and_dtype_invariants(cfg, dtype):
    kind, bf, lengths = cfg["kind"], cfg["bf"], cfg["lengths"]
    T, B, H, L = cfg["T"], cfg["B"], cfg["H"], cfg["L"]
    dirs = 2 if cfg["bidir"] else 1
    m = build(kind, cfg["D"], H, dtype=dtype, seed=cfg["seed"], **module_kwargs(cfg))
    x, state, dout = make_data(cfg, dtype)
    out, hs = forward(m, kind, x, state, lengths)
    assert out.shape == ((B, T, dirs * H) if bf else (T, B, dirs * H))
    assert out.dtype == np.dtype(dtype)
    assert len(hs) == (2 if kind == "lstm" else 1)
    for s in hs:
        assert s.shape == (L * dirs, B, H)
        assert s.dtype == np.dtype(dtype)

    # h_n is the top layer's output at each sequence's last valid step (forward direction) and
    # at step 0 (reverse direction); outputs past a sequence's end are exactly 0
    out_tm = time_major(out, bf)
    lens = lengths if lengths is not None else [T] * B
    h_n = hs[0]
    for b, n in enumerate(lens):
        np.testing.assert_array_equal(out_tm[n - 1, b, :H], h_n[(L - 1) * dirs, b])
        if dirs == 2:
            np.testing.assert_array_equal(out_tm[0, b, H:], h_n[(L - 1) * dirs + 1, b])
        assert np.all(out_tm[n:, b] == 0)

    dx, ds0 = backward(m, kind, dout)
    assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
    for s in ds0:
        if s is not None or state is not None:
            assert s.shape == (L * dirs, B, H) and s.dtype == np.dtype(dtype)
    dx_tm = time_major(dx, bf)
    for b, n in enumerate(lens):
        assert np.all(dx_tm[n:, b] == 0)
    params = m.parameters()
    assert set(m.grads) == set(params)
    for k, p in params.items():
        assert m.grads[k].shape == p.shape and m.grads[k].dtype == np.dtype(dtype), k
        assert np.all(np.isfinite(m.grads[k])), k


@SETTINGS
@given(cfg=configs(lengths=False))
def test_full_lengths_equal_no_lengths(cfg):
    kind = cfg["kind"]
    m = build(kind, cfg["D"], cfg["H"], dtype=np.float64, seed=cfg["seed"], **module_kwargs(cfg))
    x, state, dout = make_data(cfg)
    out_a, hs_a = forward(m, kind, x, state, None)
    dx_a, ds_a = backward(m, kind, dout)
    grads_a = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    out_b, hs_b = forward(m, kind, x, state, [cfg["T"]] * cfg["B"])
    dx_b, ds_b = backward(m, kind, dout)
    close(out_b, out_a, what="out")
    for a, b in zip(hs_a, hs_b, strict=True):
        close(b, a, what="state_n")
    close(dx_b, dx_a, what="dx")
    for a, b in zip(ds_a, ds_b, strict=True):
        if a is not None and b is not None:
            close(b, a, what="dstate0")
    for k, v in grads_a.items():
        close(m.grads[k], v, what=k)


@SETTINGS
@given(data=st.data(), cfg=configs(lengths=True))
def test_batch_permutation_equivariance(data, cfg):
    kind, bf, lengths = cfg["kind"], cfg["bf"], cfg["lengths"]
    B = cfg["B"]
    perm = np.array(data.draw(st.permutations(range(B))), dtype=np.intp)
    m = build(kind, cfg["D"], cfg["H"], dtype=np.float64, seed=cfg["seed"], **module_kwargs(cfg))
    x, state, dout = make_data(cfg)
    bax = 0 if bf else 1  # batch axis of x / out

    out_a, hs_a = forward(m, kind, x, state, lengths)
    dx_a, ds_a = backward(m, kind, dout)
    grads_a = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()

    x_p = np.take(x, perm, axis=bax)
    state_p = None if state is None else [s[:, perm] for s in state]
    lengths_p = [lengths[i] for i in perm]
    out_b, hs_b = forward(m, kind, x_p, state_p, lengths_p)
    dx_b, ds_b = backward(m, kind, np.take(dout, perm, axis=bax))

    close(out_b, np.take(out_a, perm, axis=bax), what="out")
    for a, b in zip(hs_a, hs_b, strict=True):
        close(b, a[:, perm], what="state_n")
    close(dx_b, np.take(dx_a, perm, axis=bax), what="dx")
    for a, b in zip(ds_a, ds_b, strict=True):
        if a is not None and b is not None:
            close(b, a[:, perm], what="dstate0")
    for k, v in grads_a.items():
        close(m.grads[k], v, what=f"grad {k}")
