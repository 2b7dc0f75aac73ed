"""Attention (dot, general, additive): PyTorch parity, gradient checks, masking, errors.

The PyTorch oracle is written with plain tensor ops (einsum, masked_fill with -inf, softmax,
autograd) from the layer's ``state_dict``; the central-difference checks evaluate a fresh layer
(loaded with ``load_state_dict``) at every perturbed point, so no cache is reused.
"""

from __future__ import annotations

import numerics
import numpy as np
import pytest
from numerics import numeric_grad

from rnnlab.nn.attention import SCORES, Attention

F64, F32 = np.float64, np.float32
RTOL, ATOL = 1e-10, 1e-12
F32_TOL = 1e-5
GC_RTOL, GC_ATOL = 1e-6, 1e-8

# Tq, B, Tk, value size, attention size
TQ, B, TK, HV, A = 3, 4, 5, 3, 6
LENGTHS = np.array([5, 2, 1, 4])  # a full row, a single valid key, two partial rows


def assert_close(got, exp, rtol=RTOL, atol=ATOL, what=""):
    numerics.assert_close(got, exp, rtol, atol, what)



def sizes(score):
    """(query_size, key_size): different sizes wherever the score allows them."""
    return (4, 4) if score == "dot" else (4, 7)


def make(score, dtype=F64, seed=0):
    Hq, Hk = sizes(score)
    return Attention(Hq, Hk, score=score, attn_size=A, dtype=dtype, seed=seed)


def inputs(rng, score, dtype=F64, Tq=TQ, Tk=TK, shared=False):
    Hq, Hk = sizes(score)
    q = rng.standard_normal((Tq, B, Hq)).astype(dtype)
    k = rng.standard_normal((Tk, B, Hk)).astype(dtype)
    v = None if shared else rng.standard_normal((Tk, B, HV)).astype(dtype)
    return q, k, v


def torch_reference(torch, attn, q, k, v, lengths, G, G2=None):
    """context, weights and the gradients of sum(G * context) [+ sum(G2 * weights)]."""

    def t(a):
        return torch.tensor(np.asarray(a, F64), dtype=torch.float64, requires_grad=True)

    params = {name: t(p) for name, p in attn.state_dict().items()}
    tq, tk = t(q), t(k)
    tv = tk if v is None else t(v)
    if attn.score == "dot":
        s = torch.einsum("tbh,jbh->tbj", tq, tk)
    elif attn.score == "general":
        s = torch.einsum("tbh,hk,jbk->tbj", tq, params["weight"], tk)
    else:
        pre = (tq @ params["weight_query"].T)[:, None] + (tk @ params["weight_key"].T)[None]
        s = torch.einsum("tjba,a->tbj", torch.tanh(pre), params["v"])
    if lengths is not None:
        pad = torch.arange(k.shape[0])[None, :] >= torch.tensor(lengths)[:, None]  # (B, Tk)
        s = s.masked_fill(pad[None], float("-inf"))
    a = torch.softmax(s, dim=-1)
    ctx = torch.einsum("tbj,jbv->tbv", a, tv)
    loss = (ctx * torch.tensor(G)).sum()
    if G2 is not None:
        loss = loss + (a * torch.tensor(G2)).sum()
    loss.backward()
    out = {"context": ctx, "weights": a, "dquery": tq.grad, "dkeys": tk.grad,
           "dvalues": None if v is None else tv.grad}
    out = {name: None if x is None else x.detach().numpy() for name, x in out.items()}
    out.update({name: p.grad.numpy() for name, p in params.items()})
    return out


def run(attn, q, k, v, lengths, G, G2=None):
    ctx, a = attn(q, k, v, lengths)
    dq, dk, dv = attn.backward(G.astype(attn.dtype),
                               None if G2 is None else G2.astype(attn.dtype))
    out = {"context": ctx, "weights": a, "dquery": dq, "dkeys": dk, "dvalues": dv}
    out.update({name: g.copy() for name, g in attn.grads.items()})
    return out


def compare(got, exp, rtol, atol):
    assert got.keys() == exp.keys()
    for name, e in exp.items():
        if e is None:
            assert got[name] is None, name
        else:
            assert_close(got[name], e, rtol, atol, name)


# ============================================================================================
# PyTorch parity
# ============================================================================================


@pytest.mark.parametrize("shared", [False, True], ids=["values", "values=keys"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("score", SCORES)
def test_matches_torch_float64(torch, rng, score, masked, shared):
    attn = make(score)
    q, k, v = inputs(rng, score, shared=shared)
    lengths = LENGTHS if masked else None
    G = rng.standard_normal((TQ, B, HV if not shared else k.shape[2]))
    got = run(attn, q, k, v, lengths, G)
    exp = torch_reference(torch, attn, q, k, v, lengths, G)
    compare(got, exp, RTOL, ATOL)
    assert set(attn.grads) == {"dot": set(), "general": {"weight"},
                               "additive": {"weight_query", "weight_key", "v"}}[score]


@pytest.mark.parametrize("score", SCORES)
def test_dweights_matches_torch(torch, rng, score):
    attn = make(score)
    q, k, v = inputs(rng, score)
    G, G2 = rng.standard_normal((TQ, B, HV)), rng.standard_normal((TQ, B, TK))
    got = run(attn, q, k, v, LENGTHS, G, G2)
    exp = torch_reference(torch, attn, q, k, v, LENGTHS, G, G2)
    compare(got, exp, RTOL, ATOL)
    # the dweights term really changed the gradient
    without = run(make(score), q, k, v, LENGTHS, G)
    assert not np.allclose(without["dquery"], got["dquery"])


@pytest.mark.parametrize("score", SCORES)
def test_matches_torch_float32(torch, rng, score):
    attn = make(score, dtype=F32)
    q, k, v = inputs(rng, score, dtype=F32)
    G = rng.standard_normal((TQ, B, HV)).astype(F32)
    got = run(attn, q, k, v, LENGTHS, G)
    for name, x in got.items():
        assert x.dtype == F32, name
    exp = torch_reference(torch, attn, q, k, v, LENGTHS, G)  # float64 from the same values
    compare(got, exp, F32_TOL, F32_TOL)


def test_single_query_steps_match_full_sequence(rng):
    """Step-by-step decoding (Tq = 1 per call) gives the rows of one call over all steps."""
    attn = make("additive")
    q, k, v = inputs(rng, "additive")
    G = rng.standard_normal((TQ, B, HV))
    full = run(attn, q, k, v, LENGTHS, G)
    attn.zero_grad()
    dk, dv = np.zeros_like(k), np.zeros_like(v)
    for t in range(TQ):
        step = run(attn, q[t:t + 1], k, v, LENGTHS, G[t:t + 1])
        assert step["context"].shape == (1, B, HV) and step["weights"].shape == (1, B, TK)
        assert_close(step["context"], full["context"][t:t + 1], what=f"context step {t}")
        assert_close(step["weights"], full["weights"][t:t + 1], what=f"weights step {t}")
        assert_close(step["dquery"], full["dquery"][t:t + 1], what=f"dquery step {t}")
        dk += step["dkeys"]
        dv += step["dvalues"]
    assert_close(dk, full["dkeys"], what="summed dkeys")
    assert_close(dv, full["dvalues"], what="summed dvalues")
    for name in ("weight_query", "weight_key", "v"):  # accumulated over the steps
        assert_close(attn.grads[name], full[name], what=name)


# ============================================================================================
# Central differences
# ============================================================================================


@pytest.mark.parametrize("shared", [False, True], ids=["values", "values=keys"])
@pytest.mark.parametrize("score", SCORES)
def test_numerical_gradient(rng, score, shared):
    Tq, Tk, lengths = 2, 3, np.array([3, 2, 1, 3])
    attn = make(score, seed=3)
    q, k, v = inputs(rng, score, Tq=Tq, Tk=Tk, shared=shared)
    Hv = k.shape[2] if shared else HV
    G, G2 = rng.standard_normal((Tq, B, Hv)), rng.standard_normal((Tq, B, Tk))
    got = run(attn, q, k, v, lengths, G, G2)

    state = {name: p.copy() for name, p in attn.state_dict().items()}

    def loss():
        fresh = make(score, seed=99)
        fresh.load_state_dict(state)
        ctx, a = fresh(q, k, v, lengths)
        return float(np.sum(G * ctx) + np.sum(G2 * a))

    assert_close(got["dquery"], numeric_grad(loss, q), GC_RTOL, GC_ATOL, "dquery")
    assert_close(got["dkeys"], numeric_grad(loss, k), GC_RTOL, GC_ATOL, "dkeys")
    if not shared:
        assert_close(got["dvalues"], numeric_grad(loss, v), GC_RTOL, GC_ATOL, "dvalues")
    for name, p in state.items():
        assert_close(got[name], numeric_grad(loss, p), GC_RTOL, GC_ATOL, name)


# ============================================================================================
# Masking, accumulation, extremes
# ============================================================================================


@pytest.mark.parametrize("shared", [False, True], ids=["values", "values=keys"])
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("score", SCORES)
def test_padding_has_no_effect(rng, score, dtype, shared):
    q, k, v = inputs(rng, score, dtype=dtype, shared=shared)
    G = rng.standard_normal((TQ, B, k.shape[2] if shared else HV))
    pad = np.arange(TK)[:, None] >= LENGTHS[None, :]  # (Tk, B)
    base = run(make(score, dtype), q, k, v, LENGTHS, G)

    k2 = k.copy()
    k2[pad] = (rng.standard_normal(k2[pad].shape) * 1e8).astype(dtype)
    v2 = None
    if not shared:
        v2 = v.copy()
        v2[pad] = (rng.standard_normal(v2[pad].shape) * 1e8).astype(dtype)
    wild = run(make(score, dtype), q, k2, v2, LENGTHS, G)

    for name, x in base.items():
        if x is None:
            continue
        if name in ("dkeys", "dvalues"):
            assert np.all(x[pad] == 0) and np.all(wild[name][pad] == 0), name
            x, y = x[~pad], wild[name][~pad]
        else:
            y = wild[name]
        np.testing.assert_array_equal(y, x, err_msg=name)
    a = base["weights"]
    assert np.all(a.transpose(2, 1, 0)[pad] == 0)  # (Tk, B, Tq) indexed by the (Tk, B) mask
    assert np.all(a.transpose(2, 1, 0)[~pad] > 0)
    assert_close(a.sum(axis=-1), np.ones((TQ, B)), 1e-6 if dtype == F32 else RTOL, 0,
                 "row sums")


@pytest.mark.parametrize("score", ["general", "additive"])
def test_grads_accumulate_until_zero_grad(rng, score):
    attn = make(score)
    q, k, v = inputs(rng, score)
    G = rng.standard_normal((TQ, B, HV))
    once = run(attn, q, k, v, LENGTHS, G)
    twice = run(attn, q, k, v, LENGTHS, G)
    for name in attn.grads:
        assert np.any(once[name] != 0), name
        assert_close(twice[name], 2 * once[name], what=name)
    attn.zero_grad()
    assert all(np.all(g == 0) for g in attn.grads.values())


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("score", SCORES)
def test_extreme_scores_stay_finite(rng, score, dtype):
    attn = make(score, dtype)
    q, k, v = inputs(rng, score, dtype=dtype)
    q *= dtype(1e3)
    G = rng.standard_normal((TQ, B, HV)).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        out = run(attn, q, k, v, LENGTHS, G)
    for name, x in out.items():
        assert np.all(np.isfinite(x)), name
    a = out["weights"]
    assert_close(a.sum(axis=-1), np.ones((TQ, B)), 1e-5, 0, "row sums")
    if score != "additive":  # tanh bounds the additive score; the others saturate the softmax
        assert np.isclose(a.max(), 1.0)


def test_single_key_gets_all_the_weight(rng):
    attn = make("dot")
    q, k, v = inputs(rng, "dot", Tk=1)
    ctx, a = attn(q, k, v)
    np.testing.assert_array_equal(a, np.ones((TQ, B, 1)))
    assert_close(ctx, np.broadcast_to(v[0], ctx.shape), what="context = the only value")
    dq, dk, dv = attn.backward(np.ones_like(ctx))
    assert np.all(dq == 0) and np.all(dk == 0)  # a softmax over one key is constant


def test_init_ranges_and_shapes():
    attn = Attention(16, 9, score="additive", attn_size=25, seed=0)
    expected = {"weight_query": ((25, 16), 16), "weight_key": ((25, 9), 9), "v": ((25,), 25)}
    for name, p in attn.state_dict().items():
        shape, fan_in = expected.pop(name)
        assert p.shape == shape and p.dtype == F32, name
        bound = 1 / np.sqrt(fan_in)
        assert np.all(np.abs(p) <= bound) and np.abs(p).max() > 0.8 * bound, name
    assert not expected
    general = Attention(8, 4, score="general", seed=0)
    w = general.state_dict()["weight"]
    assert w.shape == (8, 4) and np.all(np.abs(w) <= 0.5) and np.abs(w).max() > 0.4
    assert Attention(5).key_size == 5 and Attention(5, 3, "additive").attn_size == 3


# ============================================================================================
# Errors
# ============================================================================================

Q, K, V = np.zeros((2, 3, 4)), np.zeros((5, 3, 4)), np.zeros((5, 3, 2))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"score": "cosine"}, ValueError, r"expected one of \('dot', 'general', 'additive'\)"),
    ({"key_size": 5}, ValueError, r"key_size == query_size \(4\) for score='dot'"),
    ({"key_size": 0, "score": "general"}, ValueError, "key_size: expected a positive integer"),
    ({"attn_size": -1, "score": "additive"}, ValueError, "attn_size: expected a positive"),
    ({"dtype": np.int32}, TypeError, "expected np.float32 or np.float64"),
])
def test_bad_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Attention(4, **kwargs)


@pytest.mark.parametrize("args, exc, match", [
    ((Q[0], K), ValueError, r"query: expected a 3-D array \(Tq, B, query_size=4\)"),
    ((np.zeros((2, 3, 5)), K), ValueError, r"query: expected shape .*query_size=4.*\(2, 3, 5\)"),
    ((Q, np.zeros((5, 2, 4))), ValueError, r"keys: expected shape \(Tk, B=3, key_size=4\)"),
    ((Q, np.zeros((0, 3, 4))), ValueError, r"keys: expected at least one key step"),
    ((Q, K, np.zeros((4, 3, 2))), ValueError, r"values: expected shape \(Tk=5, B=3, value"),
    ((Q, K, np.zeros((5, 1, 2))), ValueError, r"values: expected shape \(Tk=5, B=3, value"),
    ((Q.astype(F32), K), TypeError, "query: expected dtype float64, got float32"),
    ((Q, K, V.astype(F32)), TypeError, "values: expected dtype float64, got float32"),
    ((Q, K, V, [1, 2]), ValueError, "lengths: expected one length per sequence, 3 in all"),
    ((Q, K, V, [1, 2, 6]), ValueError, r"lengths: expected values in \[1, 5\]"),
    ((Q, K, V, [0, 2, 5]), ValueError, r"lengths: expected values in \[1, 5\]"),
    ((Q, K, V, [1.5, 2.0, 3.0]), TypeError, "lengths: expected integers"),
    ((Q, K, V, np.ones((3, 1), int)), ValueError, "lengths: expected one length per"),
    ((Q * np.nan, K), ValueError, "query: expected finite values"),
])
def test_bad_forward_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        Attention(4, dtype=F64)(*args)


@pytest.mark.parametrize("score", SCORES)
def test_prepared_keys_give_the_same_forward_and_backward(rng, score):
    """Attention.prepare (keys checked, and projected for additive, once) changes nothing."""
    q, k, v = inputs(rng, score)
    G = rng.standard_normal((TQ, B, HV))
    plain = run(make(score), q, k, v, LENGTHS, G)
    attn = make(score)
    prepared = attn.prepare(k)
    assert (prepared.projected is None) == (score != "additive")
    got = run(attn, q, prepared, v, LENGTHS, G)
    for name, value in plain.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    sub = attn.prepare(k).rows(np.array([2, 0]))  # batch columns, as beam search takes them
    ctx, a = attn(q[:, [2, 0]], sub, v[:, [2, 0]], LENGTHS[[2, 0]])
    np.testing.assert_allclose(ctx, plain["context"][:, [2, 0]], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="keys: expected prepared keys for batch 2"):
        attn(q[:, :2], prepared, v[:, :2], LENGTHS[:2])


def test_bad_backward_calls():
    attn = Attention(4, dtype=F64)
    with pytest.raises(RuntimeError, match=r"expected a forward call before backward \(one "
                       r"backward per forward\), got none"):
        attn.backward(np.zeros((2, 3, 2)))
    attn(Q, K, V)
    with pytest.raises(ValueError, match=r"dcontext: expected shape \(Tq=2, B=3, value_size=2"):
        attn.backward(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="dcontext: expected dtype float64, got float32"):
        attn.backward(np.zeros((2, 3, 2), F32))
    with pytest.raises(ValueError, match=r"dweights: expected shape \(Tq=2, B=3, Tk=5\)"):
        attn.backward(np.zeros((2, 3, 2)), np.zeros((2, 3, 4)))
    attn.backward(np.zeros((2, 3, 2)))  # the failed calls left the cache in place
    with pytest.raises(RuntimeError, match=r"one backward per forward\), got none"):
        attn.backward(np.zeros((2, 3, 2)))
    attn(Q, K, V)  # a new forward makes backward valid again
    attn.backward(np.zeros((2, 3, 2)))
