"""Module.zero_grad(lazy=True): the gradients after backward are exactly those of the eager
zero_grad, for every layer that writes gradients; marked gradients read as zeros."""

from __future__ import annotations

import numpy as np
import pytest

import rnnlab
from rnnlab import GRU, LSTM, RNN, Attention, GRUCell, LSTMCell, RNNCell
from rnnlab.models import LanguageModel, LMConfig
from rnnlab.nn.layers import Embedding, Linear
from rnnlab.nn.module import Module

T, B, D, H, V = 4, 3, 5, 6, 11


def _lm(tie):
    cfg = LMConfig(vocab_size=V, cell="lstm", embed_size=H, hidden_size=H, num_layers=2,
                   tie_weights=tie, dtype="float64")
    return LanguageModel(cfg, seed=3)


def _lm_step(model, rng):
    ids = rng.integers(0, V, (T + 1, B))
    model.forward_loss(ids[:-1], ids[1:], scale=1.0 / B)
    model.backward_loss()


def _lm_unfused_step(model, rng):  # the Linear decoder's backward instead of the fused one
    ids = rng.integers(0, V, (T, B))
    logits, _ = model.forward(ids)
    model.backward(rng.standard_normal(logits.shape))


def _layer_step(cls, **kw):
    def step(m, rng):
        out, _ = m(rng.standard_normal((T, B, D)))
        m.backward(rng.standard_normal(out.shape))
    return (lambda: cls(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1, **kw),
            step)


def _cell_step(cls):
    def step(m, rng):
        x = rng.standard_normal((B, D))
        if cls is LSTMCell:
            h, c = m(x)
            m.backward(rng.standard_normal(h.shape), rng.standard_normal(c.shape))
        else:
            h = m(x)
            m.backward(rng.standard_normal(h.shape))
    return lambda: cls(D, H, dtype=np.float64, seed=2), step


def _attention_step(score):
    Hq = Hk = H

    def step(m, rng):
        ctx, _ = m(rng.standard_normal((T, B, Hq)), rng.standard_normal((T + 1, B, Hk)),
                   rng.standard_normal((T + 1, B, 3)))
        m.backward(rng.standard_normal(ctx.shape))
    return lambda: Attention(Hq, Hk, score=score, attn_size=4, dtype=np.float64, seed=4), step


def _seq2seq_step(**kw):
    from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig

    def step(m, rng):
        B, Ts, Tt = 3, 5, 4
        src_len, tgt_len = np.array([5, 3, 2]), np.array([4, 4, 1])
        src = rng.integers(4, 9, size=(Ts, B))
        tgt_in, tgt_out = rng.integers(4, 7, size=(2, Tt, B))
        m.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=0.5)
        m.backward_loss()
    return (lambda: Seq2Seq(Seq2SeqConfig(9, 7, embed_size=3, hidden_size=4, dtype="float64",
                                          **kw), seed=9), step)


def _longdep_step(task):
    from rnnlab.data.synthetic import adding_problem, copy_task
    from rnnlab.tasks.longdep import LongDepModel

    def step(m, rng):
        x, y = adding_problem(4, 6, rng) if task == "adding" else copy_task(4, 3, rng, 3, 2)
        m.loss(x, y)
        m.backward()
    return (lambda: LongDepModel(task, "lstm", 5, symbols=3, dtype=np.float64, seed=10), step)


def _linear_step(m, rng):
    y = m(rng.standard_normal((T, B, D)))
    m.backward(rng.standard_normal(y.shape))


def _embedding_step(m, rng):
    ids = np.array([[1, 1, 3], [3, 0, 1]])  # repeated ids
    m(ids)
    m.backward(rng.standard_normal((*ids.shape, H)))


CASES = {
    "lm": (lambda: _lm(False), _lm_step),
    "lm-tied": (lambda: _lm(True), _lm_step),
    "lm-unfused": (lambda: _lm(False), _lm_unfused_step),
    "lm-unfused-tied": (lambda: _lm(True), _lm_unfused_step),
    "lstm": _layer_step(LSTM),
    "gru": _layer_step(GRU),
    "rnn": _layer_step(RNN),
    "lstm-cell": _cell_step(LSTMCell),
    "gru-cell": _cell_step(GRUCell),
    "rnn-cell": _cell_step(RNNCell),
    "attention-general": _attention_step("general"),
    "attention-additive": _attention_step("additive"),
    "seq2seq-peeky-bidirectional": _seq2seq_step(peeky=True, bidirectional=True),
    "seq2seq-additive-gru": _seq2seq_step(attention="additive", cell="gru", num_layers=2),
    "longdep-adding": _longdep_step("adding"),
    "longdep-copy": _longdep_step("copy"),
    "linear": (lambda: Linear(D, H, dtype=np.float64, seed=5), _linear_step),
    "embedding": (lambda: Embedding(V, H, dtype=np.float64, seed=6), _embedding_step),
}


def _grads_after(make, step, lazy, backward_calls):
    m = make()
    step(m, np.random.default_rng(0))  # leave non-zero gradients behind
    m.zero_grad(lazy=lazy)
    rng = np.random.default_rng(1)
    for _ in range(backward_calls):
        step(m, rng)
    return {k: v.copy() for k, v in m.grads.items()}


@pytest.mark.parametrize("calls", [1, 2], ids=["one-backward", "accumulated"])
@pytest.mark.parametrize("case", list(CASES))
def test_lazy_zero_grad_gives_the_eager_gradients_exactly(case, calls):
    make, step = CASES[case]
    eager = _grads_after(make, step, False, calls)
    lazy = _grads_after(make, step, True, calls)
    assert eager.keys() == lazy.keys()
    assert any(np.any(g != 0) for g in eager.values())
    for k in eager:
        np.testing.assert_array_equal(lazy[k], eager[k], err_msg=k)


@pytest.mark.parametrize("case", list(CASES))
def test_marked_gradients_read_as_zero(case):
    make, step = CASES[case]
    m = make()
    step(m, np.random.default_rng(0))
    m.zero_grad(lazy=True)
    for k, g in m.grads.items():
        assert np.all(g == 0), k


class _Pair(Module):
    """Two layers, of which a step may use only the first."""

    def __init__(self):
        super().__init__()
        self.a = self._add_child("a", Linear(D, H, dtype=np.float64, seed=7))
        self.b = self._add_child("b", Linear(H, H, dtype=np.float64, seed=8))


def test_a_gradient_no_backward_wrote_is_zero_after_a_lazy_zero_grad():
    rng = np.random.default_rng(0)
    m = _Pair()
    y = m.b(m.a(rng.standard_normal((B, D))))
    m.a.backward(m.b.backward(rng.standard_normal(y.shape)))
    assert np.any(m.grads["b.weight"] != 0)
    m.zero_grad(lazy=True)
    _linear_step(m.a, rng)  # only the first layer this time
    grads = m.grads
    assert np.all(grads["b.weight"] == 0) and np.all(grads["b.bias"] == 0)
    assert np.any(grads["a.weight"] != 0)


# ----------------------------------------------------------------------------- embedding rows


def _lm_grads_after_steps(tie, lazy, steps=3, read_grads_and_write=False):
    """Train-loop gradient reads after ``steps`` windows with different ids each time."""
    m = _lm(tie)
    rng = np.random.default_rng(5)
    out = []
    for _ in range(steps):
        m.zero_grad(lazy=lazy)
        _lm_step(m, rng)
        grads, rows = m.grads_and_rows()
        out.append(({k: v.copy() for k, v in grads.items()}, rows))
        if read_grads_and_write:
            m.grads["embedding.weight"] += 1.0  # someone who holds the arrays writes into them
    return out


def test_grads_and_rows_names_the_embedding_rows_and_stays_exact():
    lazy = _lm_grads_after_steps(tie=False, lazy=True)
    eager = _lm_grads_after_steps(tie=False, lazy=False)
    for (g_lazy, rows), (g_eager, _) in zip(lazy, eager, strict=True):
        assert set(rows) == {"embedding.weight"}
        r = rows["embedding.weight"]
        assert r.ndim == 1 and np.all(np.diff(r) > 0)  # sorted, unique
        emb = g_eager["embedding.weight"]
        assert np.all(np.delete(emb, r, axis=0) == 0)  # zero outside the rows
        assert set(np.flatnonzero(np.any(emb != 0, axis=1))) <= set(r)
        for k in g_eager:
            np.testing.assert_array_equal(g_lazy[k], g_eager[k], err_msg=k)


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_rows_are_forgotten_once_grads_is_read(lazy):
    """Writes through arrays handed out by ``grads`` are cleared by the next zero_grad: each
    window's gradient equals that of a fresh model on the same ids (no step changes weights)."""
    got = _lm_grads_after_steps(tie=False, lazy=lazy, read_grads_and_write=True)
    rng = np.random.default_rng(5)
    for grads, _ in got:
        m = _lm(False)
        _lm_step(m, rng)  # the same ids as that window
        for k, ref in m.grads.items():
            np.testing.assert_array_equal(grads[k], ref, err_msg=k)
        assert np.any(grads["embedding.weight"] != 0)


def test_tied_embedding_has_no_rows():
    for _, rows in _lm_grads_after_steps(tie=True, lazy=True):
        assert rows == {}


def test_norm_and_sgd_step_over_rows_equal_the_dense_ones():
    from rnnlab import optim

    m = _lm(False)
    m.zero_grad(lazy=True)
    _lm_step(m, np.random.default_rng(2))
    grads, rows = m.grads_and_rows()
    assert optim.grad_norm(grads, rows) == pytest.approx(optim.grad_norm(grads), rel=1e-14)
    # plain SGD updates the rows only; with momentum or weight decay every row moves, so the
    # rows must be ignored there (the same numbers either way is what is checked)
    for kw, row_updates in (({}, True), ({"momentum": 0.9}, False), ({"weight_decay": 0.1},
                                                                      False)):
        dense = {k: v.copy() for k, v in m.parameters().items()}
        sparse = {k: v.copy() for k, v in dense.items()}
        optim.SGD(dense, lr=0.5, **kw).step(grads, grad_scale=0.3)
        opt = optim.SGD(sparse, lr=0.5, **kw)
        assert opt._row_updates == row_updates
        opt.step(grads, grad_scale=0.3, rows=rows)
        for k in dense:
            np.testing.assert_array_equal(sparse[k], dense[k], err_msg=f"{kw} {k}")


def test_bad_rows_are_rejected():
    from rnnlab import optim

    grads = {"w": np.zeros((4, 2))}
    with pytest.raises(ValueError, match=r"rows\['w'\]: expected rows in \[0, 4\)"):
        optim.grad_norm(grads, {"w": np.array([1, 4])})
    with pytest.raises(TypeError, match=r"rows\['w'\]: expected a 1-D integer array"):
        optim.SGD({"w": np.zeros((4, 2))}, lr=1.0).step(grads, rows={"w": np.array([0.5])})


def test_the_public_api_is_the_same_objects_at_the_top_and_in_nn():
    import rnnlab.nn as nn

    for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "Attention", "Module"):
        assert getattr(rnnlab, name) is getattr(nn, name), name
        assert name in rnnlab.__all__ and name in nn.__all__
