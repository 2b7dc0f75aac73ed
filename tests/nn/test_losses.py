"""GaussianNLL and PinballLoss: PyTorch parity, central differences, masks, reductions, ties,
extreme log-scales, errors.

The oracles: for GaussianNLL both torch.nn.functional.gaussian_nll_loss (var = exp(2 log_sigma),
full=True, eps below every var so its clamp is a no-op) and the formula written in torch with
autograd; for PinballLoss torch's autograd of ``torch.maximum(q * u, (q - 1) * u)``, which also
fixes the gradient at ties. Tolerances: 1e-10 in float64, 1e-5 in float32 (relative, and
absolute scaled by the expected magnitude).
"""

from __future__ import annotations

import math

import numerics
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numerics import numeric_grad

from rnnlab.nn import GaussianNLL, PinballLoss

F32, F64 = np.float32, np.float64
TOL = {F64: 1e-10, F32: 1e-5}
GC_RTOL, GC_ATOL = 1e-6, 1e-8
QUANTILES = (0.1, 0.5, 0.9)
REDUCTIONS = ("sum", "mean", "none")

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def assert_close(got, exp, dtype=F64, what=""):
    numerics.assert_close(got, exp, TOL[dtype], TOL[dtype], what)


def tt(torch, a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def gaussian_inputs(rng, shape=(5, 3, 2), dtype=F64):
    mu = rng.standard_normal(shape)
    log_sigma = rng.uniform(-2.0, 1.5, shape)
    y = mu + np.exp(log_sigma) * rng.standard_normal(shape) * 2
    return tuple(np.asarray(a, dtype) for a in (mu, log_sigma, y))  # shape (): arrays too


def pinball_inputs(rng, shape=(5, 3), quantiles=QUANTILES, dtype=F64, gap=0.0):
    """yhat (*shape, K), y (*shape); every |y - yhat| > gap (away from the kink) if gap > 0."""
    y = rng.standard_normal(shape) * 2
    u = rng.standard_normal((*shape, len(quantiles)))
    u = np.where(u >= 0, u + gap, u - gap)
    return np.asarray(y[..., None] - u, dtype), np.asarray(y, dtype)  # shape (): arrays too


def upstream_for(rng, reduction, shape, dtype):
    """The backward scale: an upstream gradient array for "none", else a number."""
    return np.asarray(rng.standard_normal(shape), dtype) if reduction == "none" else 0.7


def torch_reduce(torch, terms, keep, reduction, per_count=1):
    """terms (torch) with the uncounted set to 0, reduced the way the losses document."""
    if keep is not None:
        terms = torch.where(torch.tensor(keep), terms, torch.zeros((), dtype=terms.dtype))
    if reduction == "none":
        return terms
    count = terms.numel() // per_count if keep is None else int(keep.sum())
    total = terms.sum()
    return total if reduction == "sum" else total / max(count * per_count, 1)


def torch_backward(torch, loss, scale):
    if isinstance(scale, np.ndarray):
        loss.backward(torch.tensor(scale))
    else:
        (loss * scale).backward()


def torch_gaussian_formula(torch, mu, log_sigma, y, keep, reduction, scale, beta=0.0):
    tm, ts = tt(torch, mu, True), tt(torch, log_sigma, True)
    z = (tt(torch, y) - tm) * torch.exp(-ts)
    nll = 0.5 * math.log(2 * math.pi) + ts + 0.5 * z**2
    if beta:
        nll = nll * torch.exp(ts).detach() ** (2 * beta)  # beta-NLL: sigma^(2 beta), no gradient
    loss = torch_reduce(torch, nll, keep, reduction)
    torch_backward(torch, loss, scale)
    return loss.detach().numpy(), tm.grad.numpy(), ts.grad.numpy()


def torch_pinball(torch, yhat, y, quantiles, keep, reduction, scale):
    th = tt(torch, yhat, True)
    q = torch.tensor(quantiles, dtype=th.dtype)
    u = tt(torch, y)[..., None] - th
    rho = torch.maximum(q * u, (q - 1) * u)
    keep_k = None if keep is None else np.broadcast_to(keep[..., None], yhat.shape)
    loss = torch_reduce(torch, rho, keep_k, reduction, per_count=1)
    torch_backward(torch, loss, scale)
    return loss.detach().numpy(), th.grad.numpy()


def as_float(loss, reduction):
    if reduction != "none":
        assert isinstance(loss, float)
    return loss


# ============================================================================================
# GaussianNLL
# ============================================================================================


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_gaussian_matches_torch_formula(torch, rng, dtype, reduction, masked):
    mu, loss, dmu, dls = _gaussian_against_torch(torch, rng, dtype, reduction, None,
                                                 0.6 if masked else None)
    loss = as_float(loss, reduction)
    for a in (dmu, dls) + ((loss,) if reduction == "none" else ()):
        assert a.dtype == dtype and a.shape == mu.shape


def _gaussian_against_torch(torch, rng, dtype, reduction, shape, keep_p, beta=0.0):
    """GaussianNLL's loss and gradients against the formula in torch (mask kept with
    probability keep_p; None: no mask). Returns (mu, loss, dmu, dlog_sigma)."""
    kw = {} if shape is None else {"shape": shape}
    mu, log_sigma, y = gaussian_inputs(rng, dtype=dtype, **kw)
    keep = np.asarray(rng.random(mu.shape) < keep_p) if keep_p is not None else None
    scale = upstream_for(rng, reduction, mu.shape, dtype)
    nll = GaussianNLL(reduction, beta)
    loss = nll(mu, log_sigma, y, mask=keep)
    dmu, dls = nll.backward(scale)
    exp_loss, exp_dmu, exp_dls = torch_gaussian_formula(torch, mu, log_sigma, y, keep,
                                                        reduction, scale, beta)
    assert_close(loss, exp_loss, dtype, "nll")
    assert_close(dmu, exp_dmu, dtype, "dmu")
    assert_close(dls, exp_dls, dtype, "dlog_sigma")
    return mu, loss, dmu, dls


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_gaussian_matches_torch_gaussian_nll_loss(torch, rng, dtype, reduction):
    """torch's own loss: var = exp(2 log_sigma), full=True (the 0.5 log 2pi term), and eps
    (torch clamps var to at least eps, without gradient) below every var so it changes
    nothing."""
    mu, log_sigma, y = gaussian_inputs(rng, dtype=dtype)
    eps = float(np.finfo(dtype).tiny)
    assert np.exp(2 * log_sigma.astype(F64)).min() > eps
    scale = upstream_for(rng, reduction, mu.shape, dtype)
    nll = GaussianNLL(reduction)
    loss = nll(mu, log_sigma, y)
    dmu, dls = nll.backward(scale)
    tm, ts = tt(torch, mu, True), tt(torch, log_sigma, True)
    exp_loss = torch.nn.functional.gaussian_nll_loss(tm, tt(torch, y), torch.exp(2 * ts),
                                                     full=True, eps=eps, reduction=reduction)
    torch_backward(torch, exp_loss, scale)
    assert_close(loss, exp_loss.detach().numpy(), dtype, "nll vs gaussian_nll_loss")
    assert_close(dmu, tm.grad.numpy(), dtype, "dmu vs gaussian_nll_loss")
    assert_close(dls, ts.grad.numpy(), dtype, "dlog_sigma vs gaussian_nll_loss")


def test_gaussian_gradient_is_the_documented_formula(rng):
    mu, log_sigma, y = gaussian_inputs(rng)
    nll = GaussianNLL("sum")
    nll(mu, log_sigma, y)
    dmu, dls = nll.backward(2.5)
    sigma = np.exp(log_sigma)
    assert_close(dmu, 2.5 * -(y - mu) / sigma**2, what="dmu = -(y - mu) / sigma^2")
    assert_close(dls, 2.5 * (1 - ((y - mu) / sigma) ** 2), what="dlog_sigma = 1 - z^2")


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_numerical_gradient(rng, reduction, masked):
    mu, log_sigma, y = gaussian_inputs(rng, shape=(3, 2, 2))
    keep = rng.random(mu.shape) < 0.6 if masked else None
    up = rng.standard_normal(mu.shape)  # "none": the scalar checked is sum(up * nll)

    def loss():
        out = GaussianNLL(reduction)(mu, log_sigma, y, mask=keep)
        return float(np.sum(up * out)) if reduction == "none" else out

    nll = GaussianNLL(reduction)
    nll(mu, log_sigma, y, mask=keep)
    dmu, dls = nll.backward(up if reduction == "none" else 1.0)
    numerics.assert_close(dmu, numeric_grad(loss, mu), GC_RTOL, GC_ATOL, "dmu numeric")
    numerics.assert_close(dls, numeric_grad(loss, log_sigma), GC_RTOL, GC_ATOL, "dls numeric")


@pytest.mark.parametrize("beta", [0.5, 1.0])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_beta_nll_matches_torch(torch, rng, dtype, reduction, masked, beta):
    """The beta-NLL (Seitzer et al. 2022) against torch's autograd of ``nll *
    sigma.detach() ** (2 beta)``: loss and both gradients."""
    _gaussian_against_torch(torch, rng, dtype, reduction, None, 0.6 if masked else None, beta)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_beta_nll_gradient_is_that_of_the_frozen_weights(rng, beta):
    """Central differences of sum(w0 * nll(mu, log_sigma)) with the weights w0 = sigma^(2 beta)
    fixed at the point (the plain NLL per element, weighted in NumPy): the beta-NLL's gradient.
    beta = 1 gives the mean the squared error's gradient, -(y - mu)."""
    mu, log_sigma, y = gaussian_inputs(rng, shape=(3, 2, 2))
    w0 = np.exp(2 * beta * log_sigma)

    def frozen():
        return float(np.sum(w0 * GaussianNLL("none")(mu, log_sigma, y)))

    nll = GaussianNLL("sum", beta=beta)
    assert_close(nll(mu, log_sigma, y), frozen(), what="loss = sum w nll")
    dmu, dls = nll.backward()
    numerics.assert_close(dmu, numeric_grad(frozen, mu), GC_RTOL, GC_ATOL, "dmu numeric")
    numerics.assert_close(dls, numeric_grad(frozen, log_sigma), GC_RTOL, GC_ATOL, "dls numeric")
    if beta == 1.0:
        assert_close(dmu, -(y - mu), what="beta = 1: dmu = -(y - mu)")


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan"), "1"])
def test_beta_outside_the_unit_interval_is_refused(beta):
    with pytest.raises(ValueError, match="beta"):
        GaussianNLL("sum", beta=beta)


def test_gaussian_extreme_log_sigma_is_exact():
    """sigma = e^-400: sigma^2 underflows to 0 in float64, so (y - mu)^2 / sigma^2 would be
    inf; z = (y - mu) exp(-log_sigma) stays finite and exact. Large log_sigma: z underflows to
    ~0 and the loss is log_sigma + 0.5 log 2pi."""
    r = 1e-170
    mu, y, log_sigma = np.array([0.0, 1.0]), np.array([r, 3.0]), np.array([-400.0, 500.0])
    nll = GaussianNLL("none")
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # all representable
        out = nll(mu, log_sigma, y)
        dmu, dls = nll.backward()
    z0 = math.exp(math.log(r) + 400.0)
    half = 0.5 * math.log(2 * math.pi)
    assert_close(out, [half - 400.0 + 0.5 * z0**2, half + 500.0], what="nll")
    assert_close(dmu, [-z0 * math.exp(400.0), -2.0 * math.exp(-1000.0)], what="dmu")
    assert_close(dls, [1 - z0**2, 1.0], what="dlog_sigma")


def test_gaussian_overflowing_inverse_scale_is_exact():
    """exp(-log_sigma) overflows (log_sigma < -709) but the results are representable: z and
    dmu come from log space, finite and exact; y == mu gives z = 0 and dmu = 0 exactly (not
    0 * inf = NaN). Only a result beyond the float range overflows (and says so)."""
    r = 1e-320  # subnormal: z = r e^720 ~ 5e-8, dmu = -r e^1440 ~ -1.6e305
    mu = np.zeros(3)
    y = np.array([r, -1e-200, 0.0])
    log_sigma = np.array([-720.0, -800.0, -800.0])
    nll = GaussianNLL("none")
    with np.errstate(over="raise", invalid="raise"):  # the loss is representable
        out = nll(mu, log_sigma, y)
    with pytest.warns(RuntimeWarning, match="overflow"):  # dmu[1] ~ 1e-200 e^1600 is not
        dmu, dls = nll.backward()
    assert dmu[1] == math.inf
    half = 0.5 * math.log(2 * math.pi)
    z = np.array([math.exp(math.log(r) + 720.0), -math.exp(math.log(1e-200) + 800.0), 0.0])
    assert_close(out, half + log_sigma + 0.5 * z**2, what="nll")
    assert_close(dmu[0], -math.exp(math.log(r) + 1440.0), what="dmu")
    assert dmu[2] == 0.0 and dls[2] == 1.0
    assert_close(dls, 1 - z**2, what="dlog_sigma")
    assert np.isfinite(out).all()


def test_gaussian_does_not_clip_log_sigma():
    """exp(-log_sigma) overflowing with y != mu: the exact loss is beyond the float range, so
    it is inf (with NumPy's warning), never a silently bounded value."""
    nll = GaussianNLL("sum")
    with pytest.warns(RuntimeWarning, match="overflow"):
        loss = nll(np.zeros(2, F32), np.array([-100.0, 0.0], F32), np.ones(2, F32))
    assert loss == math.inf
    dmu, dls = nll.backward()
    assert dmu[0] == -math.inf and dls[0] == -math.inf
    assert np.isfinite(dmu[1]) and np.isfinite(dls[1])


def test_gaussian_float32_stays_float32(rng):
    mu, log_sigma, y = gaussian_inputs(rng, dtype=F32)
    nll = GaussianNLL("none")
    out = nll(mu, log_sigma, y, mask=np.ones(mu.shape, bool))
    dmu, dls = nll.backward(np.ones(mu.shape, F32))
    assert out.dtype == dmu.dtype == dls.dtype == F32


# ============================================================================================
# PinballLoss
# ============================================================================================


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_pinball_matches_torch(torch, rng, dtype, reduction, masked):
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)
    yhat, y = pinball_inputs(rng, shape=(6, 4), quantiles=quantiles, dtype=dtype)
    keep = rng.random(y.shape) < 0.6 if masked else None
    scale = upstream_for(rng, reduction, yhat.shape, dtype)
    pin = PinballLoss(quantiles, reduction)
    loss = as_float(pin(yhat, y, mask=keep), reduction)
    d = pin.backward(scale)
    exp_loss, exp_d = torch_pinball(torch, yhat, y, quantiles, keep, reduction, scale)
    assert_close(loss, exp_loss, dtype, "pinball")
    assert_close(d, exp_d, dtype, "dyhat")
    assert d.dtype == dtype and d.shape == yhat.shape
    if reduction == "none":
        assert loss.dtype == dtype and loss.shape == yhat.shape


def test_pinball_ties_match_torch(torch, rng):
    """At u = y - yhat == 0 the gradient is 1/2 - q (torch.maximum's autograd gives each equal
    argument half); away from it -q (u > 0) and 1 - q (u < 0). The tie is decided on the two
    products, as in torch: u = 5e-324 with q = 0.5 makes both products zero, a tie."""
    quantiles = (0.1, 0.5, 0.9)
    q = np.array(quantiles)
    y = np.array([1.0, 0.0, -2.5, 0.0])
    yhat = np.array([[1.0, 1.0, 1.0],  # all ties
                     [-1.0, 0.0, 1.0],  # below y (u > 0), tie, above y (u < 0)
                     [-2.5, -3.0, -2.0],  # tie, below, above
                     [0.0, -5e-324, 0.0]])  # u = 5e-324 at q = 0.5: 0.5 u == -0.5 u == 0
    pin = PinballLoss(quantiles, "sum")
    loss = pin(yhat, y)
    d = pin.backward()
    exp_loss, exp_d = torch_pinball(torch, yhat, y, quantiles, None, "sum", 1.0)
    assert loss == pytest.approx(float(exp_loss), rel=1e-15, abs=1e-15)
    np.testing.assert_allclose(d, exp_d, rtol=0, atol=1e-15)
    expected = np.array([0.5 - q,
                         [-q[0], 0.5 - q[1], 1 - q[2]],
                         [0.5 - q[0], -q[1], 1 - q[2]],
                         0.5 - q])
    np.testing.assert_allclose(d, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pinball_numerical_gradient(rng, reduction, masked):
    """Central differences, with every residual at least 0.01 from the kink (eps is 1e-6)."""
    yhat, y = pinball_inputs(rng, shape=(4, 3), gap=0.01)
    keep = rng.random(y.shape) < 0.6 if masked else None
    up = rng.standard_normal(yhat.shape)

    def loss():
        out = PinballLoss(QUANTILES, reduction)(yhat, y, mask=keep)
        return float(np.sum(up * out)) if reduction == "none" else out

    pin = PinballLoss(QUANTILES, reduction)
    pin(yhat, y, mask=keep)
    d = pin.backward(up if reduction == "none" else 1.0)
    numerics.assert_close(d, numeric_grad(loss, yhat), GC_RTOL, GC_ATOL, "dyhat numeric")


def test_pinball_values_by_hand():
    pin = PinballLoss([0.25, 0.75], "none")
    out = pin(np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([2.0, 0.0]))
    # u = 2: 0.25*2, 0.75*2;  u = -4: (0.25-1)*-4, (0.75-1)*-4
    np.testing.assert_allclose(out, [[0.5, 1.5], [3.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(pin.backward(), [[-0.25, -0.75], [0.75, 0.25]], rtol=1e-15)


def test_pinball_1d_yhat_scalar_y():
    """yhat of shape (K,) goes with a 0-d y."""
    pin = PinballLoss([0.2, 0.8])
    loss = pin(np.array([0.5, 3.0]), np.array(1.0))
    assert loss == pytest.approx(0.2 * 0.5 + 0.2 * 2.0, rel=1e-15)
    np.testing.assert_allclose(pin.backward(), [-0.2, 0.2], rtol=1e-15)


def test_0d_inputs_give_arrays():
    nll = GaussianNLL("none")
    out = nll(np.array(0.5), np.array(0.0), np.array(1.5))
    grads = nll.backward(np.array(1.0))
    for a in (out, *grads):
        assert isinstance(a, np.ndarray) and a.shape == () and a.dtype == F64
    assert grads == (-1.0, 0.0)


# ============================================================================================
# Both: masks and reductions
# ============================================================================================


def _losses(rng, dtype=F64):
    mu, log_sigma, y = gaussian_inputs(rng, shape=(4, 3), dtype=dtype)
    yhat, _ = pinball_inputs(rng, shape=(4, 3), dtype=dtype)
    return {
        "gaussian": (lambda r: GaussianNLL(r), (mu, log_sigma, y), 2),
        "pinball": (lambda r: PinballLoss(QUANTILES, r), (yhat, y), 1),
    }


def _grads(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_masked_entries_count_for_nothing(rng, kind):
    """What the mask drops contributes exactly 0 and gets exactly 0 gradient, whatever it holds
    (NaN in y and in the predictions there); "mean" divides by what counts."""
    make, args, _ = _losses(rng)[kind]
    y = args[-1]
    keep = np.ones(y.shape, bool)
    keep[1] = False
    keep[3, 2] = False
    ref = [make(r) for r in REDUCTIONS]
    ref_out = [m(*args, mask=keep) for m in ref]
    ref_grads = [_grads(m.backward()) for m in ref]

    dirty = [a.copy() for a in args]
    dirty[-1][~keep] = np.nan  # y missing where masked
    dirty[0][1] = np.nan  # the prediction too
    for m, out, grads in zip(ref, ref_out, ref_grads, strict=True):
        got = m(*dirty, mask=keep)
        got_grads = _grads(m.backward())
        np.testing.assert_array_equal(got, out)
        for g, e in zip(got_grads, grads, strict=True):
            np.testing.assert_array_equal(g, e)
            assert np.all(g[~keep] == 0)
    none_out = ref_out[2]
    assert np.all(none_out[~keep] == 0)
    per = none_out.size // y.size  # K terms per element for pinball
    assert ref_out[0] == pytest.approx(float(none_out.sum()), rel=1e-14)
    assert ref_out[1] == pytest.approx(ref_out[0] / (keep.sum() * per), rel=1e-14)
    # the "mean" gradient is the "sum" one over the count
    for gm, gs in zip(ref_grads[1], ref_grads[0], strict=True):
        assert_close(gm, gs / (keep.sum() * per), what="mean grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_all_masked_is_zero(rng, kind, reduction):
    make, args, _ = _losses(rng)[kind]
    m = make(reduction)
    out = m(*args, mask=np.zeros(args[-1].shape, bool))
    assert np.all(out == 0)
    for g in _grads(m.backward()):
        assert np.all(g == 0)


@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_mean_without_mask_divides_by_size(rng, kind):
    make, args, _ = _losses(rng)[kind]
    total = make("sum")(*args)
    terms = make("none")(*args)
    assert make("mean")(*args) == pytest.approx(total / terms.size, rel=1e-14)


@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_backward_scale_is_linear(rng, kind):
    make, args, _ = _losses(rng)[kind]
    m = make("mean")
    m(*args)
    g1 = _grads(m.backward())
    m(*args)
    g3 = _grads(m.backward(-3.0))
    for a, b in zip(g1, g3, strict=True):
        assert_close(b, -3.0 * a, what="scale")


# ============================================================================================
# Property tests (hypothesis): random shapes, dtypes, reductions, masks against torch
# ============================================================================================


@st.composite
def cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    return dict(
        shape=shape,
        dtype=draw(st.sampled_from([F64, F32])),
        reduction=draw(st.sampled_from(REDUCTIONS)),
        masked=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(case=cases())
def test_property_gaussian_matches_torch(torch, case):
    rng = np.random.default_rng(case["seed"])
    dtype, reduction, shape = case["dtype"], case["reduction"], case["shape"]
    _, _, dmu, dls = _gaussian_against_torch(torch, rng, dtype, reduction, shape,
                                             0.5 if case["masked"] else None)
    assert dmu.dtype == dls.dtype == dtype


@SETTINGS
@given(case=cases(), quantiles=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5,
                                        unique=True).map(sorted),
       ties=st.booleans())
def test_property_pinball_matches_torch(torch, case, quantiles, ties):
    rng = np.random.default_rng(case["seed"])
    dtype, reduction, shape = case["dtype"], case["reduction"], case["shape"]
    yhat, y = pinball_inputs(rng, shape=shape, quantiles=quantiles, dtype=dtype)
    if ties:  # some predictions exactly on the target
        yhat = np.where(rng.random(yhat.shape) < 0.3, y[..., None], yhat).astype(dtype)
    keep = np.asarray(rng.random(shape) < 0.5) if case["masked"] else None
    scale = upstream_for(rng, reduction, yhat.shape, dtype)
    pin = PinballLoss(quantiles, reduction)
    loss = pin(yhat, y, mask=keep)
    d = pin.backward(scale)
    exp_loss, exp_d = torch_pinball(torch, yhat, y, quantiles, keep, reduction, scale)
    assert_close(loss, exp_loss, dtype, "pinball")
    assert_close(d, exp_d, dtype, "dyhat")
    assert d.dtype == dtype and np.all(np.asarray(loss) >= 0)


# ============================================================================================
# Bad inputs
# ============================================================================================


def test_gaussian_bad_inputs():
    nll = GaussianNLL()
    a = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"log_sigma: expected shape \(3, 2\) \(that of mu\), "
                                         r"got \(2, 3\)"):
        nll(a, np.zeros((2, 3)), a)
    with pytest.raises(ValueError, match=r"y: expected shape \(3, 2\) \(that of mu\), "
                                         r"got \(3, 1\)"):
        nll(a, a, np.zeros((3, 1)))  # broadcastable, still refused
    with pytest.raises(ValueError, match=r"y: expected shape \(3, 2\) \(that of mu\), got \(2,\)"):
        nll(a, a, np.zeros(2))
    with pytest.raises(TypeError, match="mu: expected a float32 or float64 numpy array, "
                                        "got int64"):
        nll(np.zeros((3, 2), np.int64), a, a)
    with pytest.raises(TypeError, match="mu: expected a float32 or float64 numpy array, "
                                        "got list"):
        nll([0.0, 1.0], a, a)
    with pytest.raises(TypeError, match=r"y: expected dtype float64 \(that of mu\), got float32"):
        nll(a, a, np.zeros((3, 2), F32))
    with pytest.raises(TypeError, match=r"log_sigma: expected a numpy array of float64 .*got "
                                        r"float \(not a numpy array\)"):
        nll(np.zeros(()), 0.0, np.zeros(()))
    with pytest.raises(ValueError, match=r"mask: expected a boolean numpy array of shape "
                                         r"\(3, 2\), got float64 \(3, 2\)"):
        nll(a, a, a, mask=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"mask: .*got bool \(3,\)"):
        nll(a, a, a, mask=np.ones(3, bool))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_y_refused(bad):
    y = np.zeros((3, 2))
    y[2, 1] = bad
    with pytest.raises(ValueError, match=r"y: expected finite values .*at index \(2, 1\)"):
        GaussianNLL()(np.zeros((3, 2)), np.zeros((3, 2)), y)
    with pytest.raises(ValueError, match=r"y: expected finite values .*at index \(2, 1\)"):
        PinballLoss(QUANTILES)(np.zeros((3, 2, 3)), y)
    keep = np.ones((3, 2), bool)
    keep[2, 1] = False  # masked: allowed
    assert np.isfinite(GaussianNLL()(np.zeros((3, 2)), np.zeros((3, 2)), y, mask=keep))


def test_pinball_bad_inputs():
    pin = PinballLoss(QUANTILES)
    with pytest.raises(ValueError, match=r"yhat: expected shape \(\.\.\., K=3\) .*got \(4, 2\)"):
        pin(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"yhat: expected shape \(\.\.\., K=3\).*got \(\)"):
        pin(np.zeros(()), np.zeros(()))
    with pytest.raises(ValueError, match=r"y: expected shape \(4,\) \(that of yhat without "
                                         r"its quantile axis\), got \(4, 3\)"):
        pin(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="yhat: expected a float32 or float64 numpy array, "
                                        "got float16"):
        pin(np.zeros((4, 3), np.float16), np.zeros(4, np.float16))
    with pytest.raises(TypeError, match="y: expected dtype float32"):
        pin(np.zeros((4, 3), F32), np.zeros(4))
    with pytest.raises(ValueError, match=r"mask: expected a boolean numpy array of shape \(4,\)"):
        pin(np.zeros((4, 3)), np.zeros(4), mask=np.ones((4, 3), bool))


@pytest.mark.parametrize(
    "quantiles, exc, match",
    [
        ([0.5, 0.5], ValueError, r"quantiles: expected strictly increasing levels, got 0.5 then "
                                 r"0.5 at position 1"),
        ([0.9, 0.1], ValueError, "strictly increasing"),
        ([0.0, 0.5], ValueError, r"quantiles\[0\]: expected a level in \(0, 1\) \(open\), "
                                 r"got 0.0"),
        ([0.5, 1.0], ValueError, r"quantiles\[1\]: expected a level in \(0, 1\)"),
        ([0.5, 1.5], ValueError, r"quantiles\[1\]: expected a finite number in \[0, 1\]"),
        ([float("nan")], ValueError, r"quantiles\[0\]: expected a finite number"),
        ([], ValueError, "quantiles: expected at least one level"),
        ("0.5", TypeError, "quantiles: expected a sequence of levels in \\(0, 1\\), got str"),
        (0.5, TypeError, "quantiles: expected a sequence .*got float"),
        ([True], ValueError, r"quantiles\[0\]: expected a finite number"),
    ],
)
def test_pinball_bad_quantiles(quantiles, exc, match):
    with pytest.raises(exc, match=match):
        PinballLoss(quantiles)


def test_quantiles_accept_arrays_and_tuples():
    assert PinballLoss(np.array([0.1, 0.9])).quantiles == (0.1, 0.9)
    assert PinballLoss((0.5,)).quantiles == (0.5,)


@pytest.mark.parametrize("make", [GaussianNLL, lambda r: PinballLoss(QUANTILES, r)])
def test_bad_reduction(make):
    with pytest.raises(ValueError, match="reduction: expected 'sum', 'mean' or 'none', "
                                         "got 'avg'"):
        make("avg")


@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_backward_before_forward_and_twice(rng, kind):
    make, args, _ = _losses(rng)[kind]
    m = make("sum")
    with pytest.raises(RuntimeError, match="expected a forward call before backward"):
        m.backward()
    m(*args)
    m.backward()
    with pytest.raises(RuntimeError, match="one backward per forward"):
        m.backward()


@pytest.mark.parametrize("kind", ["gaussian", "pinball"])
def test_bad_scale(rng, kind):
    make, args, _ = _losses(rng)[kind]
    shape = make("none")(*args).shape
    m = make("sum")
    m(*args)
    with pytest.raises(ValueError, match=r"scale: expected a number for reduction 'sum' .*"
                                         r"got an array of shape"):
        m.backward(np.ones(shape))
    m = make("none")
    m(*args)
    with pytest.raises(ValueError, match=rf"scale: expected shape {re_shape(shape)}, got"):
        m.backward(np.ones((*shape, 1)))
    m(*args)
    with pytest.raises(TypeError, match="scale: expected dtype float64, got float32"):
        m.backward(np.ones(shape, F32))
    m(*args)
    with pytest.raises(ValueError, match="scale: expected a finite number"):
        m.backward(float("nan"))
    m(*args)
    for g in _grads(m.backward(np.array(2.0))):  # a 0-d array is a number
        assert g.shape == args[0].shape


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")
