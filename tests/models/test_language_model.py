"""LanguageModel: PyTorch parity of the whole model, gradient checks, dropout, state, init.

The torch oracle is nn.Embedding -> nn.LSTM / GRU / RNN -> nn.Linear (tied by
``decoder.weight = encoder.weight``), loaded with rnnlab's weights, trained on the summed
cross-entropy divided by the batch size.
"""

from __future__ import annotations

import json

import numerics
import numpy as np
import pytest
from numerics import central_difference

from rnnlab.models import LanguageModel, LMConfig
from rnnlab.nn.layers import SoftmaxCrossEntropy

CELLS = ["lstm", "gru", "rnn"]
RTOL, ATOL = 1e-10, 1e-12
EPS = 1e-6
GC_RTOL, GC_ATOL = 1e-5, 1e-8


def assert_close(got, exp, rtol=RTOL, atol=ATOL, what=""):
    numerics.assert_close(got, exp, rtol, atol, what)


def make_lm(cell="lstm", tie=False, V=11, E=5, H=6, L=2, dropout=0.0, init_range=0.1, seed=0):
    if tie:
        E = H
    cfg = LMConfig(vocab_size=V, cell=cell, embed_size=E, hidden_size=H, num_layers=L,
                   dropout=dropout, tie_weights=tie, init_range=init_range, dtype="float64")
    return LanguageModel(cfg, seed=seed)


def random_state(rng, m, B):
    shape = (m.config.num_layers, B, m.config.hidden_size)
    if m.config.cell == "lstm":
        return rng.standard_normal(shape) * 0.5, rng.standard_normal(shape) * 0.5
    return rng.standard_normal(shape) * 0.5


def torch_lm(torch, m):
    """The equivalent torch modules, holding copies of ``m``'s parameters."""
    c = m.config
    enc = torch.nn.Embedding(c.vocab_size, c.embed_size, dtype=torch.float64)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[c.cell]
    rnn = cls(c.embed_size, c.hidden_size, num_layers=c.num_layers, dtype=torch.float64)
    dec = torch.nn.Linear(c.hidden_size, c.vocab_size, dtype=torch.float64)
    if c.tie_weights:
        dec.weight = enc.weight
    params = {"embedding." + k: v for k, v in enc.named_parameters()}
    params.update({"rnn." + k: v for k, v in rnn.named_parameters()})
    params.update({"decoder." + k: v for k, v in dec.named_parameters(remove_duplicate=False)})
    if c.tie_weights:
        del params["decoder.weight"]
    sd = m.state_dict()
    assert set(sd) == set(params), f"keys {sorted(sd)} != torch {sorted(params)}"
    with torch.no_grad():
        for k, v in sd.items():
            params[k].copy_(torch.from_numpy(v.copy()))
    return enc, rnn, dec, params


@pytest.mark.parametrize("path", ["logits", "fused"])
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_torch(torch, rng, cell, tie, path):
    """Both training paths: forward -> SoftmaxCrossEntropy -> backward, and the fused
    forward_loss -> backward_loss the trainer uses."""
    T, B = 7, 3
    m = make_lm(cell, tie)
    enc, trnn, dec, tparams = torch_lm(torch, m)
    V = m.config.vocab_size
    ids = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    state = random_state(rng, m, B)

    if path == "logits":
        logits, final = m(ids, state)
        ce = SoftmaxCrossEntropy("sum")
        loss = ce(logits, targets)
        m.backward(ce.backward(scale=1 / B))
    else:
        loss, count, final = m.forward_loss(ids, targets, state, scale=1 / B)
        assert count == T * B
        m.backward_loss()
        logits = None  # the fused path never forms them; the logits path checks them

    tstate = (tuple(torch.from_numpy(s.copy()) for s in state) if cell == "lstm"
              else torch.from_numpy(state.copy()))
    tout, tfinal = trnn(enc(torch.from_numpy(ids)), tstate)
    tlogits = dec(tout)
    tloss = torch.nn.functional.cross_entropy(
        tlogits.reshape(-1, V), torch.from_numpy(targets.reshape(-1)), reduction="sum")
    (tloss / B).backward()

    assert loss == pytest.approx(float(tloss.detach()), rel=RTOL, abs=ATOL)
    if logits is not None:
        assert_close(logits, tlogits.detach().numpy(), what="logits")
    if cell == "lstm":
        for name, got, exp in zip("hc", final, tfinal, strict=True):
            assert_close(got, exp.detach().numpy(), what=f"final {name}")
    else:
        assert_close(final, tfinal.detach().numpy(), what="final h")

    grads = m.grads
    assert set(grads) == set(tparams)
    for name, p in tparams.items():
        assert p.grad is not None, name
        assert_close(grads[name], p.grad.numpy(), what=f"grad {name}")
    if tie:
        # The tied gradient carries the decoder's contribution: rows of words never fed in
        # are nonzero (the softmax touches every row).
        unseen = np.setdiff1d(np.arange(V), ids)
        assert unseen.size and np.all(np.abs(grads["embedding.weight"][unseen]).sum(1) > 0)


def test_grads_accumulate_and_zero(rng):
    m = make_lm("gru", tie=True)
    ids = rng.integers(0, 11, size=(4, 2))
    targets = rng.integers(0, 11, size=(4, 2))
    ce = SoftmaxCrossEntropy("sum")
    for _ in range(2):
        ce(m(ids)[0], targets)
        m.backward(ce.backward())
    twice = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    assert all(np.all(g == 0) for g in m.grads.values())
    ce(m(ids)[0], targets)
    m.backward(ce.backward())
    for k, g in m.grads.items():
        assert_close(twice[k], 2 * g, what=k)


# ============================================================================================
# numerical gradient of the whole model
# ============================================================================================


def _numeric_check(m, ids, targets, state, B, rng, n_probe=4, rng_states=None):
    """Compare m.grads (already computed) with central differences on a random subset."""
    cfg = m.config
    sd = m.state_dict()

    def loss():
        fresh = LanguageModel(cfg, seed=123)
        fresh.load_state_dict(sd)
        fresh.train(m.training)
        if rng_states is not None:
            fresh.set_rng_states(rng_states)
        logits, _ = fresh(ids, state)
        return SoftmaxCrossEntropy("sum")(logits, targets) / B

    grads = m.grads
    for name, arr in sd.items():
        flat = arr.reshape(-1)
        picks = rng.choice(flat.size, size=min(n_probe, flat.size), replace=False)
        for i in picks:
            num = central_difference(loss, flat, i, EPS)
            ana = grads[name].reshape(-1)[i]
            assert abs(ana - num) <= GC_ATOL + GC_RTOL * max(abs(num), abs(ana)), (
                f"{name}[{i}]: analytic {ana!r} vs numeric {num!r}")


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("cell", CELLS)
def test_numerical_gradient(rng, cell, tie):
    T, B = 4, 2
    m = make_lm(cell, tie, V=6, E=3, H=4, L=2, init_range=0.5, seed=3)
    ids = rng.integers(0, 6, size=(T, B))
    targets = rng.integers(0, 6, size=(T, B))
    state = random_state(rng, m, B)
    ce = SoftmaxCrossEntropy("sum")
    ce(m(ids, state)[0], targets)
    m.backward(ce.backward(scale=1 / B))
    _numeric_check(m, ids, targets, state, B, rng)


def test_numerical_gradient_with_dropout(rng):
    """Training-mode dropout (input, between layers, output): same masks replayed per eval."""
    T, B = 4, 2
    m = make_lm("lstm", False, V=6, E=3, H=4, L=2, dropout=0.3, init_range=0.5, seed=4)
    m.train()
    ids = rng.integers(0, 6, size=(T, B))
    targets = rng.integers(0, 6, size=(T, B))
    states = json.loads(json.dumps(m.rng_states()))
    ce = SoftmaxCrossEntropy("sum")
    ce(m(ids)[0], targets)
    m.backward(ce.backward(scale=1 / B))
    _numeric_check(m, ids, targets, None, B, rng, rng_states=states)


# ============================================================================================
# dropout, modes, random states
# ============================================================================================


def test_dropout_train_differs_from_eval_and_eval_matches_no_dropout(rng):
    m = make_lm("lstm", dropout=0.5, L=2, seed=7)
    ids = rng.integers(0, 11, size=(6, 4))
    assert m.training
    train_out, _ = m(ids)
    m.eval()
    assert not m.training and not m.rnn.training
    assert not m.drop_in.training and not m.drop_out.training
    eval_out, eval_state = m(ids)
    assert not np.allclose(train_out, eval_out)

    plain = make_lm("lstm", dropout=0.0, L=2, seed=8)
    plain.load_state_dict(m.state_dict())
    plain_out, plain_state = plain(ids)  # dropout 0: training mode is the same function
    np.testing.assert_array_equal(eval_out, plain_out)
    for a, b in zip(eval_state, plain_state, strict=True):
        np.testing.assert_array_equal(a, b)
    # Eval mode is deterministic.
    np.testing.assert_array_equal(m(ids)[0], eval_out)
    m.train()
    assert m.drop_in.training and m.drop_out.training and m.rnn.training


@pytest.mark.parametrize("layers", [1, 2])
def test_rng_states_round_trip(rng, layers):
    m = make_lm("gru", dropout=0.4, L=layers, seed=9)
    ids = rng.integers(0, 11, size=(5, 3))
    states = json.loads(json.dumps(m.rng_states()))  # JSON-able
    a, _ = m(ids)
    b, _ = m(ids)
    assert not np.array_equal(a, b), "fresh masks on every call"
    m.set_rng_states(states)
    c, _ = m(ids)
    np.testing.assert_array_equal(a, c)
    # Another model with the same weights and the saved states replays the same masks.
    other = make_lm("gru", dropout=0.4, L=layers, seed=10)
    other.load_state_dict(m.state_dict())
    other.set_rng_states(states)
    np.testing.assert_array_equal(other(ids)[0], a)


# ============================================================================================
# state carried across windows
# ============================================================================================


@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_across_windows(rng, cell):
    m = make_lm(cell, seed=11)
    ids = rng.integers(0, 11, size=(12, 3))
    full, full_state = m(ids)
    first, state = m(ids[:5])
    second, last_state = m(ids[5:], state)
    assert_close(np.concatenate([first, second]), full, what="logits")
    parts = (last_state, full_state) if cell == "lstm" else ((last_state,), (full_state,))
    for got, exp in zip(*parts, strict=True):
        assert_close(got, exp, what="final state")
    # Without carrying the state the second window differs.
    assert not np.allclose(m(ids[5:])[0], full[5:])


def test_initial_state_is_zero_state(rng):
    for cell in CELLS:
        m = make_lm(cell, seed=12)
        ids = rng.integers(0, 11, size=(4, 2))
        s0 = m.initial_state(2)
        if cell == "lstm":
            assert isinstance(s0, tuple) and all(s.shape == (2, 2, 6) for s in s0)
        else:
            assert s0.shape == (2, 2, 6)
        np.testing.assert_array_equal(m(ids, s0)[0], m(ids)[0])


# ============================================================================================
# init and configuration
# ============================================================================================


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("r", [0.05, 0.3])
def test_init_range(tie, r):
    m = make_lm("lstm", tie, V=50, E=8, H=8, init_range=r, seed=13)
    for name, p in m.parameters().items():
        assert np.all(np.abs(p) <= r), name
        assert np.abs(p).max() > r / 2, f"{name} does not use the range"
    # torch's default init: the embedding is N(0, 1), far outside a small range.
    d = make_lm("lstm", tie, V=50, E=8, H=8, init_range=None, seed=13)
    assert np.abs(d.state_dict()["embedding.weight"]).max() > 1.0


def test_default_config_keys_and_dtype():
    rnn_keys = [f"rnn.{w}_l{k}" for k in range(2)
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    m = LanguageModel(LMConfig(vocab_size=20), seed=0)
    assert list(m.state_dict()) == ["embedding.weight", *rnn_keys, "decoder.weight",
                                    "decoder.bias"]
    assert list(m.grads) == list(m.state_dict())
    assert m.state_dict()["embedding.weight"].shape == (20, 200)
    assert m.state_dict()["decoder.weight"].shape == (20, 200)
    assert all(p.dtype == np.float32 for p in m.parameters().values())

    t = LanguageModel(LMConfig(vocab_size=20, tie_weights=True), seed=0)
    assert list(t.state_dict()) == ["embedding.weight", *rnn_keys, "decoder.bias"]
    assert list(t.grads) == list(t.state_dict())


def test_tied_decoder_uses_embedding(rng):
    m = make_lm("rnn", tie=True, L=1, seed=14)
    ids = rng.integers(0, 4, size=(3, 2))  # word 4 is never fed in
    before, _ = m(ids)
    m.parameters()["embedding.weight"][4] += 1.0  # so this row only acts as decoder row 4
    after, _ = m(ids)
    assert not np.allclose(before[..., 4], after[..., 4])
    np.testing.assert_array_equal(np.delete(before, 4, -1), np.delete(after, 4, -1))


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(cell="lstmx"), ValueError, "cell: expected one of"),
        (dict(tie_weights=True, embed_size=4, hidden_size=6), ValueError,
         "expected embed_size == hidden_size, got 4 and 6"),
        (dict(dtype="int32"), TypeError, "dtype"),
    ],
)
def test_bad_config(kw, exc, match):
    with pytest.raises(exc, match=match):
        LMConfig(vocab_size=10, **kw)


def test_bad_ids():
    m = make_lm("lstm", seed=15)
    with pytest.raises(ValueError, match=r"expected ids in \[0, 11\)"):
        m(np.array([[0, 11]]))
    with pytest.raises(TypeError, match="integer"):
        m(np.zeros((2, 2)))


def test_forward_loss_with_dropout_equals_the_logits_path(rng):
    """Training mode with dropout: the fused path draws the same masks and gives the same loss and
    gradients as forward -> SoftmaxCrossEntropy -> backward."""
    m = make_lm("lstm", tie=True, dropout=0.4, L=2, seed=9)
    m.train()
    ids = rng.integers(0, 11, size=(5, 3))
    targets = rng.integers(0, 11, size=(5, 3))
    states = json.loads(json.dumps(m.rng_states()))
    ce = SoftmaxCrossEntropy("sum")
    ref = ce(m(ids)[0], targets)
    m.backward(ce.backward(scale=0.5))
    ref_grads = {k: v.copy() for k, v in m.grads.items()}
    m.zero_grad()
    m.set_rng_states(states)
    loss, count, _ = m.forward_loss(ids, targets, scale=0.5)
    m.backward_loss()
    assert count == ids.size
    assert loss == pytest.approx(ref, rel=1e-12)
    for k, g in m.grads.items():
        assert_close(g, ref_grads[k], what=k)
