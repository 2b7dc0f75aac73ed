"""Embedding, Linear, Dropout, SoftmaxCrossEntropy, LinearCrossEntropy: PyTorch parity, gradient
checks, errors.

PyTorch (torch.nn.Embedding / Linear, torch.nn.functional.cross_entropy) is the oracle in
float64; the central-difference checks evaluate a fresh layer (loaded with ``load_state_dict``)
at every perturbed point, so the analytic run's caches are never reused.
"""

from __future__ import annotations

import numerics
import numpy as np
import pytest
from numerics import numeric_grad

from rnnlab.nn.layers import (
    BLOCK,
    Dropout,
    Embedding,
    Linear,
    LinearCrossEntropy,
    SoftmaxCrossEntropy,
)

F64 = np.float64
RTOL, ATOL = 1e-12, 1e-12
GC_RTOL, GC_ATOL = 1e-6, 1e-8


def assert_close(got, exp, rtol=RTOL, atol=ATOL, what=""):
    numerics.assert_close(got, exp, rtol, atol, what)


def t64(torch, a, grad=False):
    return torch.tensor(np.asarray(a, F64), dtype=torch.float64, requires_grad=grad)



# ============================================================================================
# Embedding
# ============================================================================================


def test_embedding_repeated_ids_match_torch(torch, rng):
    V, E = 7, 5
    emb = Embedding(V, E, dtype=F64, seed=0)
    ids = rng.integers(0, V, size=(4, 6))
    ids[0, :3] = 2  # force heavy repetition of one row
    ids[3, -2:] = 5
    assert len(np.unique(ids)) < ids.size
    temb = torch.nn.Embedding(V, E, dtype=torch.float64)
    with torch.no_grad():
        temb.weight.copy_(t64(torch, emb.state_dict()["weight"]))

    out = emb(ids)
    tout = temb(torch.tensor(ids))
    assert out.shape == (4, 6, E) and out.dtype == F64
    assert_close(out, tout.detach().numpy(), what="embedding forward")

    dout = rng.standard_normal(out.shape)
    emb.backward(dout)
    tout.backward(t64(torch, dout))
    expected = temb.weight.grad.numpy()
    assert_close(emb.grads["weight"], expected, what="embedding dweight")
    # Rows never looked up have zero gradient; row 2 collects every occurrence.
    unused = np.setdiff1d(np.arange(V), ids)
    assert np.all(emb.grads["weight"][unused] == 0)
    assert_close(emb.grads["weight"][2], dout[ids == 2].sum(axis=0), what="row 2")


def test_embedding_grads_accumulate_until_zero_grad(rng):
    emb = Embedding(6, 3, dtype=F64, seed=1)
    ids = np.array([[0, 1, 1], [5, 0, 1]])
    dout = rng.standard_normal((2, 3, 3))
    emb(ids)
    emb.backward(dout)
    once = emb.grads["weight"].copy()
    emb(ids)
    emb.backward(dout)
    assert_close(emb.grads["weight"], 2 * once, what="accumulated")
    emb.zero_grad()
    assert np.all(emb.grads["weight"] == 0)


def test_embedding_init_standard_normal():
    emb = Embedding(400, 50, seed=3)
    w = emb.state_dict()["weight"]
    assert w.dtype == np.float32 and w.shape == (400, 50)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02


# ============================================================================================
# Linear
# ============================================================================================


def _torch_linear(torch, lin):
    sd = lin.state_dict()
    tl = torch.nn.Linear(lin.in_features, lin.out_features, bias="bias" in sd,
                         dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(t64(torch, sd["weight"]))
        if "bias" in sd:
            tl.bias.copy_(t64(torch, sd["bias"]))
    return tl


@pytest.mark.parametrize("bias", [True, False])
def test_linear_3d_matches_torch(torch, rng, bias):
    T, B, D, O = 4, 3, 5, 6
    lin = Linear(D, O, bias=bias, dtype=F64, seed=2)
    tl = _torch_linear(torch, lin)
    x = rng.standard_normal((T, B, D))
    y = lin(x)
    tx = t64(torch, x, grad=True)
    ty = tl(tx)
    assert y.shape == (T, B, O)
    assert_close(y, ty.detach().numpy(), what="linear forward")

    dy = rng.standard_normal(y.shape)
    dx = lin.backward(dy)
    ty.backward(t64(torch, dy))
    assert_close(dx, tx.grad.numpy(), what="dx")
    assert_close(lin.grads["weight"], tl.weight.grad.numpy(), what="dW")
    if bias:
        assert_close(lin.grads["bias"], tl.bias.grad.numpy(), what="db")
    else:
        assert "bias" not in lin.grads


def test_linear_tied_weight_override_matches_torch(torch, rng):
    T, B, H, V = 3, 2, 4, 7
    lin = Linear(H, V, dtype=F64, seed=4)
    own_w = lin.state_dict()["weight"]
    tied = rng.standard_normal((V, H))  # e.g. an embedding matrix
    x = rng.standard_normal((T, B, H))
    y = lin(x, weight=tied)

    tx = t64(torch, x, grad=True)
    tw = t64(torch, tied, grad=True)
    tb = t64(torch, lin.state_dict()["bias"], grad=True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    assert_close(y, ty.detach().numpy(), what="tied forward")
    # The override really replaced the layer's own weight.
    assert not np.allclose(y, lin(x))
    lin(x, weight=tied)

    dy = rng.standard_normal(y.shape)
    prior = rng.standard_normal((V, H))  # dweight is accumulated into, not overwritten
    dweight = prior.copy()
    dx = lin.backward(dy, weight=tied, dweight=dweight)
    ty.backward(t64(torch, dy))
    assert_close(dx, tx.grad.numpy(), what="tied dx")
    assert_close(dweight - prior, tw.grad.numpy(), what="tied dweight")
    assert_close(lin.grads["bias"], tb.grad.numpy(), what="tied db")
    assert np.all(lin.grads["weight"] == 0), "own weight gradient must stay untouched"
    np.testing.assert_array_equal(lin.state_dict()["weight"], own_w)


def test_linear_numerical_gradient(rng):
    D, O = 3, 4
    lin = Linear(D, O, dtype=F64, seed=5)
    x = rng.standard_normal((2, 3, D))
    G = rng.standard_normal((2, 3, O))  # loss = sum(G * y)
    lin(x)
    dx = lin.backward(G)

    sd = lin.state_dict()
    W, b = sd["weight"].copy(), sd["bias"].copy()
    xs = x.copy()

    def loss():
        fresh = Linear(D, O, dtype=F64, seed=99)
        fresh.load_state_dict({"weight": W, "bias": b})
        return float(np.sum(G * fresh(xs)))

    assert_close(dx, numeric_grad(loss, xs), GC_RTOL, GC_ATOL, "dx")
    assert_close(lin.grads["weight"], numeric_grad(loss, W), GC_RTOL, GC_ATOL, "dW")
    assert_close(lin.grads["bias"], numeric_grad(loss, b), GC_RTOL, GC_ATOL, "db")


def test_linear_init_range():
    lin = Linear(16, 300, seed=0)
    k = 1 / np.sqrt(16)
    for name, p in lin.state_dict().items():
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= k), name
    assert np.abs(lin.state_dict()["weight"]).max() > 0.9 * k


# ============================================================================================
# SoftmaxCrossEntropy
# ============================================================================================


def _logits_targets(rng, T=4, B=3, V=6, extreme=False):
    logits = rng.standard_normal((T, B, V)) * 3
    if extreme:
        logits[0, 0] = [1e4, -1e4, 0, 1e4, -1e4, 5]
        logits[1, 2] = -1e4
        logits[1, 2, 3] = 1e4
        logits[2, 1, :] = 1e4
    targets = rng.integers(0, V, size=(T, B))
    targets[0, 0] = 1  # the target has logit -1e4 against a 1e4 max: loss ~ 2e4
    return logits, targets


def _torch_ce(torch, logits, targets, reduction, ignore_index=-100, scale=1.0):
    V = logits.shape[-1]
    tl = t64(torch, logits, grad=True)
    loss = torch.nn.functional.cross_entropy(
        tl.reshape(-1, V), torch.tensor(targets.reshape(-1)), reduction=reduction,
        ignore_index=ignore_index)
    (loss * scale).backward()
    return float(loss.detach()), tl.grad.numpy()


@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "extreme"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_torch(torch, rng, reduction, extreme):
    logits, targets = _logits_targets(rng, extreme=extreme)
    ce = SoftmaxCrossEntropy(reduction)
    loss = ce(logits, targets)
    d = ce.backward()
    exp_loss, exp_d = _torch_ce(torch, logits, targets, reduction)
    assert isinstance(loss, float)
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(d, exp_d, what="dlogits")
    if extreme:
        assert loss > (1e3 if reduction == "mean" else 2e4 - 10)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient_is_softmax_minus_onehot(rng, reduction):
    logits, targets = _logits_targets(rng)
    ce = SoftmaxCrossEntropy(reduction)
    ce(logits, targets)
    d = ce.backward()
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    expected = e / e.sum(axis=-1, keepdims=True)
    expected -= np.eye(logits.shape[-1])[targets]
    if reduction == "mean":
        expected /= targets.size
    assert_close(d, expected, what="softmax - onehot")
    # Each row of p - onehot sums to zero.
    assert_close(d.sum(axis=-1), np.zeros(targets.shape), what="row sums")


@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "extreme"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_ignore_index_matches_torch(torch, rng, reduction, extreme):
    logits, targets = _logits_targets(rng, extreme=extreme)
    targets[1, :] = -1
    targets[3, 0] = -1
    ce = SoftmaxCrossEntropy(reduction, ignore_index=-1)
    loss = ce(logits, targets)
    d = ce.backward()
    exp_loss, exp_d = _torch_ce(torch, logits, targets, reduction, ignore_index=-1)
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(d, exp_d, what="dlogits ignore_index")
    assert np.all(d[1] == 0) and np.all(d[3, 0] == 0)


@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "extreme"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_mask_matches_torch(torch, rng, reduction, extreme):
    logits, targets = _logits_targets(rng, extreme=extreme)
    mask = rng.random(targets.shape) < 0.6
    mask[0, 0] = True
    mask[2, 2] = False
    ce = SoftmaxCrossEntropy(reduction)
    loss = ce(logits, targets, mask=mask)
    d = ce.backward()
    masked_targets = np.where(mask, targets, -100)  # torch: masked tokens are ignored
    exp_loss, exp_d = _torch_ce(torch, logits, masked_targets, reduction)
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(d, exp_d, what="dlogits mask")
    assert np.all(d[~mask] == 0)


def test_cross_entropy_mask_and_ignore_index_combine(torch, rng):
    logits, targets = _logits_targets(rng)
    targets[0, 1] = 0
    mask = np.ones(targets.shape, bool)
    mask[2] = False
    ce = SoftmaxCrossEntropy("mean", ignore_index=0)
    loss = ce(logits, targets, mask=mask)
    d = ce.backward()
    exp_loss, exp_d = _torch_ce(torch, logits, np.where(mask, targets, 0), "mean",
                                ignore_index=0)
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(d, exp_d, what="mask + ignore_index")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_backward_scale(torch, rng, reduction):
    logits, targets = _logits_targets(rng)
    targets[0, 2] = -100
    ce = SoftmaxCrossEntropy(reduction, ignore_index=-100)
    ce(logits, targets)
    d = ce.backward(scale=0.25)
    _, exp_d = _torch_ce(torch, logits, targets, reduction, scale=0.25)
    assert_close(d, exp_d, what="scaled dlogits")
    ce(logits, targets)
    assert_close(ce.backward(), 4 * d, what="unscaled vs scaled")


def test_cross_entropy_all_ignored_is_zero(rng):
    logits, targets = _logits_targets(rng)
    ce = SoftmaxCrossEntropy("mean")
    loss = ce(logits, targets, mask=np.zeros(targets.shape, bool))
    assert loss == 0.0
    assert np.all(ce.backward() == 0)


def test_cross_entropy_2d_logits_match_torch(torch, rng):
    logits = rng.standard_normal((5, 4))
    targets = rng.integers(0, 4, size=5)
    ce = SoftmaxCrossEntropy()
    loss = ce(logits, targets)
    d = ce.backward()
    exp_loss, exp_d = _torch_ce(torch, logits, targets, "mean")
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(d, exp_d, what="2-D logits")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_numerical_gradient(rng, reduction):
    logits, targets = _logits_targets(rng, T=3, B=2, V=5)
    targets[1, 0] = -1
    mask = np.ones(targets.shape, bool)
    mask[2, 1] = False
    ce = SoftmaxCrossEntropy(reduction, ignore_index=-1)
    ce(logits, targets, mask=mask)
    d = ce.backward()
    z = logits.copy()

    def loss():
        return SoftmaxCrossEntropy(reduction, ignore_index=-1)(z, targets, mask=mask)

    assert_close(d, numeric_grad(loss, z), GC_RTOL, GC_ATOL, "dlogits numeric")


def test_cross_entropy_float32_stays_float32(rng):
    logits, targets = _logits_targets(rng, extreme=True)
    ce = SoftmaxCrossEntropy()
    loss = ce(logits.astype(np.float32), targets)
    d = ce.backward()
    assert np.isfinite(loss)
    assert d.dtype == np.float32 and np.all(np.isfinite(d))


# ============================================================================================
# Dropout
# ============================================================================================


def test_dropout_eval_is_identity(rng):
    drop = Dropout(0.7, seed=0).eval()
    x = rng.standard_normal((5, 4, 3))
    np.testing.assert_array_equal(drop(x), x)
    g = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(drop.backward(g), g)


def test_dropout_p0_is_identity(rng):
    drop = Dropout(0.0, seed=0)
    assert drop.training
    x = rng.standard_normal((5, 4))
    np.testing.assert_array_equal(drop(x), x)
    g = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(drop.backward(g), g)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_values_and_mean(p):
    drop = Dropout(p, seed=11)
    x = np.ones(200_000)
    y = drop(x)
    scale = 1 / (1 - p)
    values = np.unique(y)
    assert set(values.tolist()) <= {0.0, scale}
    assert len(values) == 2
    # sd of the mean is sqrt(p/(1-p)/n) <= 0.0045: 0.03 is a generous (> 6 sigma) bound.
    assert abs(y.mean() - 1.0) < 0.03
    assert abs((y == 0).mean() - p) < 0.01


def test_dropout_backward_uses_forward_mask(rng):
    p = 0.4
    drop = Dropout(p, seed=5)
    x = rng.standard_normal((50, 20)) + 5.0  # nonzero everywhere
    y = drop(x)
    g = rng.standard_normal(x.shape)
    dx = drop.backward(g)
    dropped = y == 0
    assert dropped.any() and (~dropped).any()
    assert np.all(dx[dropped] == 0)
    assert_close(dx[~dropped], g[~dropped] / (1 - p), what="kept grads")
    assert_close(y[~dropped], x[~dropped] / (1 - p), what="kept values")


def test_dropout_seeded_reproducible(rng):
    x = rng.standard_normal((30, 30))
    a = Dropout(0.5, seed=42)(x)
    b = Dropout(0.5, seed=42)(x)
    np.testing.assert_array_equal(a, b)
    c = Dropout(0.5, seed=43)(x)
    assert not np.array_equal(a, c)
    d = Dropout(0.5, seed=42)
    first, second = d(x), d(x)
    assert not np.array_equal(first, second), "successive calls draw fresh masks"


def test_dropout_keeps_dtype():
    y = Dropout(0.5, seed=0)(np.ones((10, 10), np.float32))
    assert y.dtype == np.float32
    assert set(np.unique(y).tolist()) <= {0.0, 2.0}


# ============================================================================================
# Bad inputs
# ============================================================================================


def test_embedding_ids_out_of_range():
    emb = Embedding(7, 3, dtype=F64, seed=0)
    with pytest.raises(ValueError, match=r"expected ids in \[0, 7\), got min 0 max 7"):
        emb(np.array([[0, 7]]))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 7\), got min -1 max 3"):
        emb(np.array([3, -1]))


def test_embedding_ids_wrong_type():
    emb = Embedding(7, 3, dtype=F64, seed=0)
    with pytest.raises(TypeError, match="expected an integer numpy array, got float64"):
        emb(np.array([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="expected an integer numpy array, got list"):
        emb([0, 1])


def test_embedding_backward_wrong_shape():
    emb = Embedding(7, 3, dtype=F64, seed=0)
    emb(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="dout"):
        emb.backward(np.zeros((1, 2, 4)))


def test_linear_wrong_feature_size():
    lin = Linear(4, 3, dtype=F64, seed=0)
    with pytest.raises(ValueError, match=r"in_features=4.*got shape \(2, 3, 5\)"):
        lin(np.zeros((2, 3, 5)))
    with pytest.raises(TypeError, match="expected dtype float64, got float32"):
        lin(np.zeros((2, 4), np.float32))


def test_cross_entropy_bad_targets():
    ce = SoftmaxCrossEntropy()
    logits = np.zeros((3, 2, 5))
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 2\).*got \(2, 3\)"):
        ce(logits, np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"targets: expected shape"):
        ce(logits, np.zeros((3, 2, 1), int))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\), got min 5 max 5"):
        ce(logits, np.full((3, 2), 5))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\)"):
        ce(logits, np.full((3, 2), -1))  # -1 is not ignored without ignore_index
    with pytest.raises(TypeError, match="integer"):
        ce(logits, np.zeros((3, 2)))


def test_cross_entropy_bad_mask_shape():
    ce = SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="mask"):
        ce(np.zeros((3, 2, 5)), np.zeros((3, 2), int), mask=np.ones(2, bool))


@pytest.mark.parametrize("layer", ["embedding", "linear", "ce"])
def test_backward_before_forward(layer):
    if layer == "embedding":
        mod, call = Embedding(4, 2, dtype=F64), lambda m: m.backward(np.zeros((1, 2)))
    elif layer == "linear":
        mod, call = Linear(4, 2, dtype=F64), lambda m: m.backward(np.zeros((1, 2)))
    else:
        mod, call = SoftmaxCrossEntropy(), lambda m: m.backward()
    with pytest.raises(RuntimeError, match="expected a forward call before backward"):
        call(mod)


def test_cross_entropy_backward_twice_raises(rng):
    logits, targets = _logits_targets(rng)
    ce = SoftmaxCrossEntropy()
    ce(logits, targets)
    ce.backward()
    with pytest.raises(RuntimeError, match="before backward"):
        ce.backward()


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: Embedding(0, 3), ValueError, "num_embeddings: expected a positive integer"),
        (lambda: Embedding(3, -1), ValueError, "embedding_dim: expected a positive integer"),
        (lambda: Embedding(2.5, 3), ValueError, "num_embeddings"),
        (lambda: Embedding(3, 3, dtype=np.int64), TypeError, "dtype"),
        (lambda: Linear(0, 3), ValueError, "in_features: expected a positive integer"),
        (lambda: Linear(3, True), ValueError, "out_features"),
        (lambda: Linear(3, 3, dtype=np.float16), TypeError, "dtype"),
        (lambda: Linear(3, 3, seed="x"), TypeError, "seed"),
        (lambda: Dropout(1.0), ValueError, r"p: expected a probability in \[0, 1\), got 1.0"),
        (lambda: Dropout(-0.1), ValueError, "p: expected a probability"),
        (lambda: Dropout(True), ValueError, "p: expected a probability"),
        (lambda: Dropout("0.5"), ValueError, "p: expected a probability"),
        (lambda: SoftmaxCrossEntropy("none"), ValueError, "reduction: expected 'mean' or 'sum'"),
    ],
)
def test_invalid_constructor_args(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ============================================================================================
# LinearCrossEntropy: the fused readout + loss of the trainer
# ============================================================================================


def _torch_readout(torch, x, W, b, targets, scale, mask=None):
    tx, tW = t64(torch, x, grad=True), t64(torch, W, grad=True)
    tb = t64(torch, b, grad=True) if b is not None else None
    logits = torch.nn.functional.linear(tx, tW, tb)
    t = targets if mask is None else np.where(mask, targets, -100)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, W.shape[0]), torch.tensor(t.reshape(-1)), reduction="sum")
    (loss * scale).backward()
    return (float(loss.detach()), tx.grad.numpy(), tW.grad.numpy(),
            None if tb is None else tb.grad.numpy())


@pytest.mark.parametrize("V", [7, BLOCK // 3 + 5], ids=["one-block", "many-blocks"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("masked", [False, True], ids=["all", "mask"])
def test_linear_cross_entropy_matches_torch(torch, rng, V, bias, masked):
    """Loss, dx, dW, db of the fused layer equal torch's Linear + cross_entropy(sum) * scale,
    with several row blocks (V large) and a mask that leaves whole blocks out."""
    T, B, H = 5, 4, 3
    lin = Linear(H, V, bias=bias, dtype=F64, seed=0)
    x = rng.standard_normal((T, B, H)) * 2
    targets = rng.integers(0, V, size=(T, B))
    mask = None
    if masked:
        mask = rng.random((T, B)) < 0.6
        mask[0] = False  # a block of rows with nothing counted
        mask[1, 0] = True
    fused = LinearCrossEntropy(lin)
    loss, count = fused(x, targets, scale=0.25, mask=mask)
    dx = fused.backward()
    p = lin.state_dict()
    exp_loss, exp_dx, exp_dW, exp_db = _torch_readout(torch, x, p["weight"], p.get("bias"),
                                                      targets, 0.25, mask)
    assert count == (T * B if mask is None else int(mask.sum()))
    assert loss == pytest.approx(exp_loss, rel=RTOL, abs=ATOL)
    assert_close(dx, exp_dx, what="dx")
    assert_close(lin.grads["weight"], exp_dW, what="dW")
    if bias:
        assert_close(lin.grads["bias"], exp_db, what="db")


def test_linear_cross_entropy_equals_the_unfused_layers(rng):
    """float32, reused workspace across calls of different lengths, accumulation into grads:
    the same numbers as Linear -> SoftmaxCrossEntropy("sum") -> backward(scale)."""
    H, V = 6, 50
    a, b = Linear(H, V, seed=1), Linear(H, V, seed=1)
    fused, ce = LinearCrossEntropy(a), SoftmaxCrossEntropy("sum")
    for n in (9, 4, 9):
        x = rng.standard_normal((n, 3, H)).astype(np.float32)
        t = rng.integers(0, V, size=(n, 3))
        loss, _ = fused(x, t, scale=0.5)
        dx = fused.backward()
        ref = ce(b(x), t)
        ref_dx = b.backward(ce.backward(scale=0.5))
        assert dx.dtype == np.float32
        assert loss == pytest.approx(ref, rel=1e-6)
        assert_close(dx, ref_dx, rtol=1e-5, atol=1e-6, what="dx")
        for k in ("weight", "bias"):
            assert_close(a.grads[k], b.grads[k], rtol=1e-5, atol=1e-6, what=k)


def test_linear_cross_entropy_tied_weight_and_numerical_gradient(rng):
    """A weight passed in (tying) gets its gradient in ``dweight``; central differences."""
    H, V, N = 3, 5, 4
    lin = Linear(H, V, dtype=F64, seed=2)
    W = rng.standard_normal((V, H))
    dW = np.zeros_like(W)
    x = rng.standard_normal((N, H))
    t = rng.integers(0, V, size=N)
    fused = LinearCrossEntropy(lin)
    fused(x, t, scale=1.0, weight=W)
    dx = fused.backward(weight=W, dweight=dW)
    assert np.all(lin.grads["weight"] == 0)

    def f():
        return LinearCrossEntropy(lin)(x, t, scale=None, weight=W)[0]

    assert_close(dW, numeric_grad(f, W), rtol=GC_RTOL, atol=GC_ATOL, what="dW (tied)")
    assert_close(dx, numeric_grad(f, x), rtol=GC_RTOL, atol=GC_ATOL, what="dx")
    assert_close(lin.grads["bias"], numeric_grad(f, lin._params["bias"]), rtol=GC_RTOL,
                 atol=GC_ATOL, what="db")


def test_linear_cross_entropy_errors(rng):
    fused = LinearCrossEntropy(Linear(3, 5, dtype=F64))
    x = rng.standard_normal((4, 3))
    with pytest.raises(RuntimeError, match="expected a forward call with a scale"):
        fused.backward()
    fused(x, np.zeros(4, np.int64), scale=None)
    with pytest.raises(RuntimeError, match="expected a forward call with a scale"):
        fused.backward()  # an evaluation-only forward prepares no gradient
    with pytest.raises(ValueError, match=r"targets: expected shape \(4,\)"):
        fused(x, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"expected ids in \[0, 5\)"):
        fused(x, np.full(4, 5))
    with pytest.raises(ValueError, match="mask: expected a boolean array"):
        fused(x, np.zeros(4, np.int64), mask=np.ones(4))
    with pytest.raises(ValueError, match="in_features"):
        fused(rng.standard_normal((4, 2)), np.zeros(4, np.int64))
