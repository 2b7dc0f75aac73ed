"""Seq2Seq: PyTorch parity of the whole encoder-decoder, numerical gradients, padding, decoding.

The torch oracle is built from torch.nn.Embedding / LSTM / GRU / Linear (packed sequences for the
variable lengths) and plain torch ops for the bridge, the attention scores and the masked loss,
loaded with rnnlab's parameters, in float64.
"""

from __future__ import annotations

import itertools

import numerics
import numpy as np
import pytest

from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.nn.layers import SoftmaxCrossEntropy
from rnnlab.tasks.seq2seq.translate import beam_search, greedy_decode

RTOL, ATOL = 1e-10, 1e-12
VS, VT = 9, 7
CONFIGS = [
    dict(),
    dict(cell="gru"),
    dict(peeky=True),
    dict(attention="dot"),
    dict(attention="general", peeky=True),
    dict(attention="additive", bidirectional=True),
    dict(cell="gru", attention="dot", bidirectional=True, num_layers=2, peeky=True),
    dict(num_layers=2, bidirectional=True),
]


def cfg_id(kw):
    return "-".join(f"{k}={v}" for k, v in kw.items()) or "plain"


def make(kw, seed=0, dtype="float64"):
    cfg = Seq2SeqConfig(src_vocab=VS, tgt_vocab=VT, embed_size=4, hidden_size=5,
                        dtype=dtype, **kw)
    return Seq2Seq(cfg, seed=seed)


def batch(rng, B=4, Ts=6, Tt=5, pad=True):
    src_len = rng.integers(2, Ts + 1, size=B) if pad else np.full(B, Ts)
    src_len[0] = Ts
    tgt_len = rng.integers(1, Tt + 1, size=B) if pad else np.full(B, Tt)
    tgt_len[1 % B] = Tt
    src = rng.integers(4, VS, size=(Ts, B))
    tgt_in = rng.integers(4, VT, size=(Tt, B))
    tgt_out = rng.integers(4, VT, size=(Tt, B))
    for b in range(B):  # padding ids, as the data layer writes them
        src[src_len[b]:, b] = 0
        tgt_in[tgt_len[b]:, b] = 0
        tgt_out[tgt_len[b]:, b] = 0
    return src, src_len, tgt_in, tgt_out, tgt_len


def assert_close(got, exp, what, rtol=RTOL, atol=ATOL):
    numerics.assert_close(got, exp, rtol, atol, what)


# ============================================================================================
# the torch oracle
# ============================================================================================


def torch_seq2seq(torch, m: Seq2Seq):
    """A function computing (summed masked loss, logits, weights) in torch, and its params."""
    c = m.config
    nn = torch.nn
    f64 = torch.float64
    cell = {"lstm": nn.LSTM, "gru": nn.GRU}[c.cell]
    Hd = c.decoder_size
    mods = {
        "src_embedding": nn.Embedding(c.src_vocab, c.embed_size, dtype=f64),
        "encoder": cell(c.embed_size, c.hidden_size, c.num_layers, bidirectional=c.bidirectional,
                        dtype=f64),
        "tgt_embedding": nn.Embedding(c.tgt_vocab, c.embed_size, dtype=f64),
        "decoder": cell(c.embed_size + (Hd if c.peeky else 0), Hd, c.num_layers, dtype=f64),
        "readout": nn.Linear(m.readout.in_features, c.tgt_vocab, dtype=f64),
    }
    params = {f"{k}.{n}": p for k, mod in mods.items() for n, p in mod.named_parameters()}
    for name, value in m.state_dict().items():
        if name.startswith("attention."):
            params[name] = torch.tensor(value.copy(), requires_grad=True)
    assert set(params) == set(m.state_dict())
    with torch.no_grad():
        for name, value in m.state_dict().items():
            params[name].copy_(torch.from_numpy(value.copy()))
    pack = nn.utils.rnn.pack_padded_sequence
    unpack = nn.utils.rnn.pad_packed_sequence
    L, K, H = c.num_layers, 1 + c.bidirectional, c.hidden_size

    def bridge(s):
        B = s.shape[1]
        return s.reshape(L, K, B, H).permute(0, 2, 1, 3).reshape(L, B, K * H)

    def attend(q, k, lengths):
        Tq, B, _ = q.shape
        Tk = k.shape[0]
        if c.attention == "dot":
            s = torch.einsum("tbh,jbh->tbj", q, k)
        elif c.attention == "general":
            s = torch.einsum("tbh,hg,jbg->tbj", q, params["attention.weight"], k)
        else:
            wq = torch.einsum("ah,tbh->tba", params["attention.weight_query"], q)
            wk = torch.einsum("ah,jbh->jba", params["attention.weight_key"], k)
            e = torch.tanh(wq[:, :, None, :] + wk.permute(1, 0, 2)[None, :, :, :])
            s = torch.einsum("tbja,a->tbj", e, params["attention.v"])
        valid = torch.arange(Tk)[None, None, :] < torch.as_tensor(lengths)[None, :, None]
        a = torch.softmax(s.masked_fill(~valid, float("-inf")), dim=-1)
        return torch.einsum("tbj,jbh->tbh", a, k), a

    def run(src, src_len, tgt_in, tgt_out, tgt_len):
        es = mods["src_embedding"](torch.from_numpy(src))
        packed = pack(es, torch.as_tensor(src_len), enforce_sorted=False)
        out, final = mods["encoder"](packed)
        memory, _ = unpack(out, total_length=src.shape[0])
        state = tuple(bridge(s) for s in final) if c.cell == "lstm" else bridge(final)
        top = (state[0] if c.cell == "lstm" else state)[-1]
        Tt, B = tgt_in.shape
        x = mods["tgt_embedding"](torch.from_numpy(tgt_in))
        if c.peeky:
            x = torch.cat([x, top[None].expand(Tt, B, Hd)], -1)
        dout, _ = mods["decoder"](pack(x, torch.as_tensor(tgt_len), enforce_sorted=False),
                                  state)
        h, _ = unpack(dout, total_length=Tt)
        parts, weights = [h], None
        if c.attention != "none":
            ctx, weights = attend(h, memory, src_len)
            parts.append(ctx)
        if c.peeky:
            parts.append(top[None].expand(Tt, B, Hd))
        logits = mods["readout"](torch.cat(parts, -1))
        mask = torch.arange(Tt)[:, None] < torch.as_tensor(tgt_len)[None, :]
        target = torch.from_numpy(np.where(mask.numpy(), tgt_out, -100))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.tgt_vocab),
                                                 target.reshape(-1), reduction="sum")
        return loss, logits, weights

    return run, params


# ============================================================================================
# parity, both training paths
# ============================================================================================


@pytest.mark.parametrize("path", ["fused", "logits"])
@pytest.mark.parametrize("kw", CONFIGS, ids=cfg_id)
def test_parity_with_torch(torch, rng, kw, path):
    m = make(kw)
    src, src_len, tgt_in, tgt_out, tgt_len = batch(rng)
    run, params = torch_seq2seq(torch, m)
    tloss, tlogits, tweights = run(src, src_len, tgt_in, tgt_out, tgt_len)
    (tloss * 0.5).backward()

    if path == "fused":
        loss, count = m.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=0.5)
        assert count == tgt_len.sum()
        m.backward_loss()
    else:
        logits, weights = m(src, src_len, tgt_in, tgt_len)
        mask = np.arange(tgt_in.shape[0])[:, None] < tgt_len[None, :]
        ce = SoftmaxCrossEntropy("sum")
        loss = ce(logits, tgt_out, mask=mask)
        m.backward(ce.backward(scale=0.5))
        real = mask[:, :, None]  # torch pads decoder outputs with 0: compare the real steps
        assert_close(np.where(real, logits, 0), np.where(real, tlogits.detach().numpy(), 0),
                     "logits")
        if tweights is not None:
            assert_close(np.where(real, weights, 0),
                         np.where(real, tweights.detach().numpy(), 0), "attention weights")
    assert loss == pytest.approx(float(tloss.detach()), rel=RTOL)
    grads = m.grads
    for name, p in params.items():
        exp = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        assert_close(grads[name], exp, f"grad {name}")
    # every part of the model receives gradient (the encoder through the decoder's state)
    assert np.abs(grads["encoder.weight_hh_l0"]).max() > 0
    assert np.abs(grads["src_embedding.weight"]).max() > 0


def test_float32_parity(torch, rng):
    kw = dict(attention="general", peeky=True)
    m64, m32 = make(kw), make(kw, dtype="float32")
    m32.load_state_dict(m64.state_dict())
    data = batch(rng)
    l64, _ = m64.forward_loss(*data, scale=1.0)
    m64.backward_loss()
    l32, _ = m32.forward_loss(*data, scale=1.0)
    m32.backward_loss()
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name, g in m64.grads.items():
        assert m32.grads[name].dtype == np.float32
        assert_close(m32.grads[name], g, name, rtol=1e-4, atol=1e-5)


# ============================================================================================
# numerical gradients
# ============================================================================================


@pytest.mark.parametrize("kw", [CONFIGS[2], CONFIGS[5], CONFIGS[6]], ids=cfg_id)
def test_numerical_gradient(rng, kw):
    m = make(kw, seed=3)
    data = batch(rng, B=3, Ts=4, Tt=3)
    m.forward_loss(*data, scale=1.0)
    m.backward_loss()
    grads = m.grads
    def loss():
        return m.forward_loss(*data, scale=None)[0]

    for name, arr in m.parameters().items():
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            num = numerics.central_difference(loss, flat, i)
            ana = grads[name].reshape(-1)[i]
            assert abs(ana - num) <= 1e-7 + 1e-5 * max(abs(num), abs(ana)), (
                f"{name}[{i}]: analytic {ana!r} vs numeric {num!r}")


# ============================================================================================
# padding has no effect
# ============================================================================================


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[5], CONFIGS[6]], ids=cfg_id)
def test_padding_has_no_effect(rng, kw):
    """A sequence's loss and gradients are the same alone and inside a padded batch, whatever
    the padding ids are."""
    m = make(kw)
    src, src_len, tgt_in, tgt_out, tgt_len = batch(rng)
    b = 2
    src_len[b], tgt_len[b] = 3, 2
    junk = lambda a, n: np.where(np.arange(a.shape[0])[:, None] >= n[None, :],  # noqa: E731
                                 rng.integers(0, 5, size=a.shape), a)
    src, tgt_in, tgt_out = junk(src, src_len), junk(tgt_in, tgt_len), junk(tgt_out, tgt_len)
    total, _ = m.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=1.0)
    m.backward_loss()
    batch_grads = {k: v.copy() for k, v in m.grads.items()}

    parts = 0.0
    m.zero_grad()
    for i in range(src.shape[1]):
        s, t = src_len[i], tgt_len[i]
        loss, _ = m.forward_loss(src[:s, [i]], src_len[[i]], tgt_in[:t, [i]], tgt_out[:t, [i]],
                                 tgt_len[[i]], scale=1.0)
        m.backward_loss()
        parts += loss
    assert total == pytest.approx(parts, rel=1e-12)
    for k, g in m.grads.items():
        assert_close(batch_grads[k], g, f"grad {k}")


# ============================================================================================
# decoding
# ============================================================================================


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[3], CONFIGS[6]], ids=cfg_id)
def test_greedy_matches_teacher_forced_argmax(rng, kw):
    """Feeding the greedy output back as teacher-forced input reproduces the same argmaxes."""
    m = make(kw, seed=5)
    src, src_len, *_ = batch(rng, B=3)
    bos, eos = 2, 3
    decoded = greedy_decode(m, src, src_len, bos, eos, max_length=6)
    for b, d in enumerate(decoded):
        ids = d.ids
        steps = len(ids) + (len(ids) < 6)
        tgt_in = np.array([bos, *ids][:steps])[:, None]
        logits, weights = m(src[:src_len[b], [b]], src_len[[b]], tgt_in)
        expected = logits[:, 0].argmax(axis=1)
        assert list(expected[:len(ids)]) == ids
        if len(ids) < 6:
            assert expected[len(ids)] == eos
        # decode_step's log-probabilities are those of the teacher-forced logits (torch-checked)
        z = logits[:, 0].astype(np.float64)
        logp = z - z.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        emitted = [*ids, eos][:steps]
        assert d.logprob == pytest.approx(sum(logp[t, tok] for t, tok in enumerate(emitted)),
                                          rel=1e-12)  # float64 model
        if weights is not None:
            assert_close(d.attention, weights[:, 0], "attention of greedy steps")
            assert np.allclose(d.attention.sum(axis=1), 1.0)


@pytest.mark.parametrize("kw", [CONFIGS[0], CONFIGS[4]], ids=cfg_id)
def test_beam_one_is_greedy(rng, kw):
    m = make(kw, seed=7)
    src, src_len, *_ = batch(rng, B=4)
    greedy = greedy_decode(m, src, src_len, 2, 3, max_length=8)
    for b in range(4):
        one = beam_search(m, src[:src_len[b], b], 2, 3, max_length=8, beam=1)
        assert one.ids == greedy[b].ids
        assert one.logprob == pytest.approx(greedy[b].logprob, rel=1e-12)


def test_beam_search_finds_the_best_sequence_by_exhaustive_search(rng):
    """With a beam wider than every candidate set, beam search is exhaustive: its answer is the
    best of all sequences of at most 2 tokens followed by <eos>, found by brute force."""
    m = Seq2Seq(Seq2SeqConfig(src_vocab=VS, tgt_vocab=5, embed_size=3, hidden_size=4,
                              dtype="float64"), seed=11)
    src = rng.integers(4, VS, size=4)
    best = beam_search(m, src, 2, 3, max_length=3, beam=100)
    scores = {}
    for n in range(3):
        for seq in itertools.product([0, 1, 2, 4], repeat=n):  # every token but <eos> = 3
            logits, _ = m(src[:, None], np.array([4]), np.array([2, *seq])[:, None])
            z = logits[:, 0]
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            scores[seq] = sum(logp[t, tok] for t, tok in enumerate([*seq, 3]))
    top = max(scores, key=scores.get)
    assert tuple(best.ids) == top
    assert best.logprob == pytest.approx(scores[top], rel=1e-12)


# ============================================================================================
# config and bad input
# ============================================================================================


def test_config_errors():
    with pytest.raises(ValueError, match="attention: expected one of"):
        Seq2SeqConfig(5, 5, attention="cosine")
    with pytest.raises(ValueError, match="cell: expected one of"):
        Seq2SeqConfig(5, 5, cell="rnn")
    with pytest.raises(ValueError, match="hidden_size: expected a positive integer"):
        Seq2SeqConfig(5, 5, hidden_size=0)


def test_bad_batches(rng):
    m = make({})
    src, src_len, tgt_in, tgt_out, tgt_len = batch(rng)
    with pytest.raises(ValueError, match="expected batch 4"):
        m.forward_loss(src, src_len, tgt_in[:, :3], tgt_out[:, :3], tgt_len[:3])
    with pytest.raises(ValueError, match=r"src: expected an integer array \(T, B\)"):
        m.forward_loss(src[:, 0], src_len, tgt_in, tgt_out, tgt_len)
    with pytest.raises(ValueError, match="lengths"):
        m.forward_loss(src, src_len + 10, tgt_in, tgt_out, tgt_len)
    with pytest.raises(ValueError, match=r"tgt_lengths: expected the target lengths \(B,\)"):
        m.forward_loss(src, src_len, tgt_in, tgt_out, None)
    with pytest.raises(ValueError, match=r"targets: expected shape \(5, 4\)"):
        m.forward_loss(src, src_len, tgt_in, tgt_out[:3], tgt_len)
    with pytest.raises(RuntimeError, match="expected a forward call"):
        make({}).backward_loss()
