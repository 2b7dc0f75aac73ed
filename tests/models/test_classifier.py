"""The sequence classifier: the pooled softmax (mean, last, attention) and the per-frame CTC
readout, with frame stacking and variable lengths, against the same network written in torch.nn
from the formulas (loss and every gradient, float64 and float32); central differences through
the pooling; the relation between pooled and per-step logits; bad input; and a tiny training
run that must learn."""

from __future__ import annotations

import numpy as np
import pytest
from numerics import assert_close, central_difference

from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier, stack_frames
from rnnlab.optim import Adam, clipped_step

D, C, HIDDEN, T, B = 3, 4, 5, 9, 4
LENGTHS = np.array([9, 4, 7, 1])  # unsorted, one of a single frame
TOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5)}


def _config(**kw) -> ClassifierConfig:
    return ClassifierConfig(**{"inputs": D, "classes": C, "hidden": HIDDEN, "layers": 2,
                               "dropout": 0.0, "attn_size": 6, "dtype": "float64", **kw})


def _data(dtype="float64", ctc=False, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((T, B, D)).astype(dtype)
    x[np.arange(T)[:, None] >= LENGTHS[None, :]] = 0.0
    if not ctc:
        return x, g.integers(0, C, B), None
    target_lengths = np.array([2, 1, 2, 0])  # an empty target too
    targets = g.integers(0, C, (B, 2))
    targets[0] = [1, 1]  # a repeated label needs a blank between
    return x, targets, target_lengths


# ----------------------------------------------------------------------------- torch oracle
def _torch_forward(torch, model: SequenceClassifier, x, targets, target_lengths):
    """The loss per sequence (mean over the batch) written with torch ops from the module
    docstring's formulas, and the torch parameters by rnnlab name."""
    c = model.config
    state = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    dt = state["head.weight"].dtype
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[c.cell](
        c.inputs * c.stack, c.hidden, c.layers, bidirectional=c.bidirectional, dtype=dt)
    for name in list(rnn._parameters):
        rnn._parameters[name] = state[f"rnn.{name}"]
    # frame stacking written out: step u holds frames ku..ku+k-1
    k = c.stack
    U = -(-T // k)
    xp = np.zeros((U * k, B, D), x.dtype)
    xp[:T] = x
    xs = torch.from_numpy(np.concatenate([xp[j::k] for j in range(k)], axis=2))
    steps = torch.from_numpy(-(-LENGTHS // k))
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs, steps, enforce_sorted=False)
    h, _ = rnn(packed)
    h, _ = torch.nn.utils.rnn.pad_packed_sequence(h, total_length=U)  # (U, B, KH), 0 padded
    if c.output == "ctc":
        z = h @ state["head.weight"].T + state["head.bias"]
        logp = torch.log_softmax(z, dim=-1)
        loss = torch.nn.functional.ctc_loss(
            logp, torch.from_numpy(targets), steps, torch.from_numpy(target_lengths),
            blank=c.blank, reduction="sum") / B
        return loss, state
    valid = (torch.arange(U)[:, None] < steps[None, :]).to(dt)[..., None]  # (U, B, 1)
    if c.pool == "mean":
        p = (h * valid).sum(0) / steps[:, None].to(dt)
    elif c.pool == "last":
        fwd = h[steps - 1, torch.arange(B), :c.hidden]
        p = torch.cat([fwd, h[0, :, c.hidden:]], dim=1) if c.bidirectional else fwd
    else:  # a = softmax_u(v . tanh(W_q q + W_k h_u)) over the valid steps
        s = torch.tanh(state["query"] @ state["attention.weight_query"].T
                       + h @ state["attention.weight_key"].T) @ state["attention.v"]
        s = s.masked_fill(valid[..., 0] == 0, float("-inf"))
        a = torch.softmax(s, dim=0)
        p = (a[..., None] * h).sum(0)
    z = p @ state["head.weight"].T + state["head.bias"]
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(targets))
    return loss, state


CASES = [dict(pool="mean"), dict(pool="last"), dict(pool="attention"),
         dict(pool="last", bidirectional=False), dict(pool="mean", cell="gru", stack=2),
         dict(output="ctc"), dict(output="ctc", stack=3, cell="gru"),
         dict(output="ctc", bidirectional=False)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_loss_and_gradients_match_torch(torch, case, dtype):
    model = SequenceClassifier(_config(dtype=dtype, **case), seed=1)
    ctc = model.config.output == "ctc"
    x, targets, target_lengths = _data(dtype, ctc)
    loss = model.forward_loss(x, LENGTHS, targets, target_lengths)
    model.zero_grad()
    model.backward_loss()
    expected, state = _torch_forward(torch, model, x, targets, target_lengths)
    expected.backward()
    rtol, atol = TOL[dtype]
    assert_close(loss, expected.item(), rtol, atol, "loss")
    grads = model.grads
    assert sorted(grads) == sorted(state)
    for name, p in state.items():
        assert_close(grads[name], p.grad.numpy(), rtol, atol, name)


@pytest.mark.parametrize("pool", ["mean", "last", "attention"])
def test_central_differences(pool):
    model = SequenceClassifier(_config(pool=pool, layers=1), seed=2)
    x, targets, _ = _data()
    model.zero_grad()
    model.forward_loss(x, LENGTHS, targets)
    model.backward_loss()
    grads = model.grads
    params = model.parameters()
    g = np.random.default_rng(0)
    for name in ("head.weight", "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0",
                 *(["query", "attention.v"] if pool == "attention" else [])):
        for _ in range(3):
            idx = tuple(int(g.integers(n)) for n in params[name].shape)
            num = central_difference(lambda: model.forward_loss(x, LENGTHS, targets),
                                     params[name], idx)
            assert abs(num - grads[name][idx]) < 1e-7 * max(1.0, abs(num)), (name, idx)


def test_padding_does_not_matter():
    """What lies past a sequence's length changes nothing (loss or prediction)."""
    model = SequenceClassifier(_config(pool="attention"), seed=3)
    x, targets, _ = _data()
    before = model.forward_loss(x, LENGTHS, targets)
    x2 = x.copy()
    x2[np.arange(T)[:, None] >= LENGTHS[None, :]] = 7.0
    assert model.forward_loss(x2, LENGTHS, targets) == pytest.approx(before, rel=1e-12)


def test_mean_pool_is_the_mean_of_per_step_logits():
    """With mean pooling and a linear head, the pooled logits are the mean of the per-step
    logits, so the frame posteriors a plot shows are what the decision is made of."""
    model = SequenceClassifier(_config(pool="mean"), seed=4)
    x, _, _ = _data()
    z, _ = model.forward(x, LENGTHS)
    lp, steps = model.frame_log_probs(x, LENGTHS)
    # log_softmax keeps logits up to a constant per step: undo it with the per-step max
    W, b = model.parameters()["head.weight"], model.parameters()["head.bias"]
    h, _ = model.rnn(x, lengths=LENGTHS)
    step_logits = h @ W.T + b
    for j, n in enumerate(steps):
        assert_close(z[j], step_logits[:n, j].mean(axis=0), 1e-12, 1e-12, f"sequence {j}")
        assert_close(np.exp(lp[:n, j]).sum(axis=1), np.ones(n), 1e-12, 1e-12, "posteriors")


def test_stack_frames():
    x = np.arange(5 * 1 * 2, dtype=np.float64).reshape(5, 1, 2)
    s, lens = stack_frames(x, np.array([5]), 2)
    assert s.shape == (3, 1, 4) and lens.tolist() == [3]
    assert s[0, 0].tolist() == [0, 1, 2, 3]
    assert s[2, 0].tolist() == [8, 9, 0, 0]  # the end zero-padded
    same, lens1 = stack_frames(x, np.array([5]), 1)
    assert same is x and lens1.tolist() == [5]


def test_bad_input():
    model = SequenceClassifier(_config(), seed=0)
    x, targets, _ = _data()
    with pytest.raises(ValueError, match=r"x: expected frames of shape \(T, B, 3\)"):
        model.forward(x[..., :2], LENGTHS)
    with pytest.raises(TypeError, match="expected dtype float64, got float32"):
        model.forward(x.astype(np.float32), LENGTHS)
    with pytest.raises(ValueError, match="lengths"):
        model.forward(x, [10, 1, 1, 1])
    with pytest.raises(RuntimeError, match="forward_loss call first"):
        SequenceClassifier(_config(), seed=0).backward_loss()
    for bad in (dict(pool="max"), dict(output="crf"), dict(cell="rnn"), dict(dropout=1.0),
                dict(stack=0), dict(bidirectional="yes")):
        with pytest.raises(ValueError):
            _config(**bad)


@pytest.mark.parametrize("output", ["class", "ctc"])
def test_learns_a_toy_task(output):
    """Sequences whose class is where a bump sits (class) or the order of bumps (ctc): the loss
    must fall far below its start."""
    g = np.random.default_rng(0)
    model = SequenceClassifier(_config(output=output, layers=1, hidden=16, classes=2,
                                       dtype="float32"), seed=0)
    opt = Adam(model.parameters(), lr=0.02)

    def batch():
        x = 0.1 * g.standard_normal((12, 16, D)).astype(np.float32)
        labels = g.integers(0, 2, (16, 2))
        for b in range(16):
            x[2 + 6 * 0, b, labels[b, 0]] += 2.0
            x[2 + 6 * 1, b, labels[b, 1]] += 2.0
        if output == "class":
            return x, labels[:, 0], None
        return x, labels, np.full(16, 2)

    losses = []
    for _ in range(120):
        x, y, yl = batch()
        model.zero_grad()
        losses.append(model.forward_loss(x, None, y, yl))
        model.backward_loss()
        clipped_step(opt, model.grads, 5.0)
    assert np.mean(losses[-10:]) < 0.25 * np.mean(losses[:10])
