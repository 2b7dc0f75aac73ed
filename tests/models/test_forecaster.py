"""The forecaster (recurrent encoder, direct multi-horizon Gaussian or quantile head, optional
linear autoregressive highway): its outputs, loss and every gradient against the same network
written in torch.nn (float64 and float32), central differences (also through dropout, with the
masks held fixed), the predictive distribution, bad configurations, dropout modes, and a small
training run on a sine wave."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require_module
from numerics import assert_close, central_difference

from rnnlab.models.forecaster import Forecaster, ForecasterConfig
from rnnlab.optim import Adam, clipped_step

INPUTS, HIDDEN, T, B, HORIZON = 3, 5, 7, 4, 3
TOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5)}  # rtol, atol (x max |expected|)


def _config(**kw) -> ForecasterConfig:
    return ForecasterConfig(**{"inputs": INPUTS, "horizon": HORIZON, "hidden": HIDDEN,
                               "dtype": "float64", **kw})


def _data(seed: int = 0, dtype: str = "float64", inputs: int = INPUTS, steps: int = T,
          batch: int = B, horizon: int = HORIZON):
    """x (T, B, inputs), y (B, horizon) with NaN where it does not count, mask (B, horizon):
    windows near a series' end lose their last targets, and one more target is dropped."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((steps, batch, inputs)).astype(dtype)
    y = g.standard_normal((batch, horizon)).astype(dtype)
    mask = np.arange(horizon)[None, :] < g.integers(1, horizon + 1, batch)[:, None]
    mask[0] = True
    mask[0, horizon // 2] = False  # a gap inside a row, not only at its end
    assert mask.any() and not mask.all()
    y[~mask] = np.nan  # must neither count nor reach a gradient
    return x, y, mask


# ----------------------------------------------------------------------------- torch oracle
def _torch_model(torch, model: Forecaster):
    """torch.nn modules holding rnnlab's weights: {"rnn", "head", "ar"?}."""
    c = model.config
    dt = getattr(torch, c.dtype)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[c.cell]
    modules = {"rnn": cls(c.inputs, c.hidden, num_layers=c.layers, dtype=dt),
               "head": torch.nn.Linear(c.hidden, c.horizon * c.outputs, dtype=dt)}
    if c.ar:
        modules["ar"] = torch.nn.Linear(c.ar, c.horizon, dtype=dt)
    state = model.state_dict()
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: torch.from_numpy(v.copy())
                                for k, v in state.items() if k.startswith(prefix)})
    assert sorted(f"{n}.{k}" for n, m in modules.items()
                  for k in m.state_dict()) == sorted(state)  # every parameter was copied
    return modules


def _torch_outputs(torch, modules, config: ForecasterConfig, x, y, mask):
    """The forecaster's s (B, H, K) and its summed masked loss, written with torch ops from the
    formulas (not from rnnlab's code): the AR term shifts the mean (Gaussian) or every quantile."""
    xt = torch.from_numpy(x)
    out, _ = modules["rnn"](xt)
    s = modules["head"](out[-1]).reshape(x.shape[1], config.horizon, config.outputs)
    if config.ar:
        a = modules["ar"](xt[-config.ar:, :, 0].T)[:, :, None]  # (B, H, 1)
        if config.output == "gaussian":
            s = torch.cat([s[..., :1] + a, s[..., 1:]], dim=-1)
        else:
            s = s + a
    yt = torch.from_numpy(np.where(mask, y, 0).astype(x.dtype))  # no NaN inside autograd
    keep = torch.from_numpy(mask)
    if config.output == "gaussian":
        mu, log_sigma = s[..., 0], s[..., 1]
        terms = (0.5 * math.log(2 * math.pi) + log_sigma
                 + 0.5 * ((yt - mu) / torch.exp(log_sigma)) ** 2)
        if config.beta:  # beta-NLL: each term times sigma^(2 beta), held constant
            terms = terms * torch.exp(log_sigma).detach() ** (2 * config.beta)
    else:
        q = torch.tensor(config.quantiles, dtype=s.dtype)
        u = yt[..., None] - s
        terms = torch.maximum(q * u, (q - 1) * u).sum(dim=-1)
    return s, terms[keep].sum()


PARITY = [dict(cell=cell, layers=layers, ar=ar, output=output)
          for cell in ("lstm", "gru") for layers in (1, 2) for ar in (0, 4)
          for output in ("gaussian", "quantile")]
PARITY += [dict(cell="lstm", layers=2, ar=4, output="gaussian", beta=1.0),  # the beta-NLL
           dict(cell="gru", layers=1, ar=0, output="gaussian", beta=0.5)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kw", PARITY, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_outputs_loss_and_gradients_equal_torch(torch, kw, dtype):
    rtol, atol = TOL[dtype]
    model = Forecaster(_config(dtype=dtype, **kw), seed=3)
    x, y, mask = _data(5, dtype)
    scale = 0.37
    model.zero_grad()
    s = model(x)
    loss = model.forward_loss(x, y, mask)
    model.backward_loss(scale)
    grads = model.grads
    assert list(grads) == list(model.state_dict())

    modules = _torch_model(torch, model)
    ts, tloss = _torch_outputs(torch, modules, model.config, x, y, mask)
    (scale * tloss).backward()
    assert s.dtype == np.dtype(dtype) and s.shape == (B, HORIZON, model.config.outputs)
    assert_close(s, ts.detach().numpy(), rtol, atol, "s")
    assert loss == pytest.approx(tloss.item(), rel=rtol)
    for name, m in modules.items():
        for k, p in m.named_parameters():
            key = f"{name}.{k}"
            assert grads[key].dtype == np.dtype(dtype)
            assert_close(grads[key], p.grad.numpy(), rtol, atol, key)
    assert np.abs(grads["head.weight"]).max() > 0  # a live comparison, not zeros with zeros


def test_masked_targets_neither_count_nor_reach_the_gradients():
    model = Forecaster(_config(ar=2, layers=2), seed=0)
    x, y, mask = _data(1)
    loss = model.forward_loss(x, y, mask)  # y holds NaN where masked
    model.zero_grad()
    model.backward_loss()
    assert math.isfinite(loss)
    assert all(np.isfinite(g).all() for g in model.grads.values())
    only = np.zeros_like(mask)
    only[0, 0] = True
    assert model.forward_loss(x, np.where(mask, y, 0.0), only) != pytest.approx(loss)
    y2 = np.where(mask, y, 1e6)  # any value where masked: the same loss
    assert model.forward_loss(x, y2, mask) == loss


# ----------------------------------------------------------------------------- central differences
@pytest.mark.parametrize("output", ["gaussian", "quantile"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradients_match_central_differences(output, cell):
    model = Forecaster(_config(inputs=2, hidden=3, layers=2, horizon=2, ar=2, cell=cell,
                               output=output), seed=7)
    x, y, mask = _data(2, inputs=2, steps=5, batch=3, horizon=2)

    def loss() -> float:
        return model.forward_loss(x, y, mask)

    model.zero_grad()
    model.forward_loss(x, y, mask)
    model.backward_loss(1.0)
    grads = model.grads
    g = np.random.default_rng(0)
    for name, p in model.parameters().items():
        for idx in {tuple(int(g.integers(0, n)) for n in p.shape) for _ in range(3)}:
            numeric = central_difference(loss, p, idx)
            assert grads[name][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, idx)


@pytest.mark.parametrize("output", ["gaussian", "quantile"])
def test_gradients_through_dropout_match_central_differences(output):
    """In training mode with the dropout masks held fixed (the generator rewound before each
    forward): the masks between the layers and before the head reach backward."""
    model = Forecaster(_config(inputs=2, hidden=4, layers=2, horizon=2, dropout=0.4,
                               output=output), seed=8)
    x, y, mask = _data(3, inputs=2, steps=5, batch=3, horizon=2)
    rng_state = model.rng_states()

    def loss() -> float:
        model.set_rng_states(rng_state)
        return model.forward_loss(x, y, mask)

    model.zero_grad()
    loss()
    assert (model.drop._mask == 0).any()  # some units are dropped before the head
    model.backward_loss(0.5)
    grads = model.grads
    g = np.random.default_rng(1)
    for name, p in model.parameters().items():
        for idx in {tuple(int(g.integers(0, n)) for n in p.shape) for _ in range(3)}:
            numeric = 0.5 * central_difference(loss, p, idx)
            assert grads[name][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, idx)


# ----------------------------------------------------------------------------- distribution
def _norm_ppf(p: float) -> float:
    try:
        from scipy.stats import norm
    except ImportError:
        import statistics

        return statistics.NormalDist().inv_cdf(p)
    return float(norm.ppf(p))


def test_gaussian_intervals_are_normal_quantiles():
    model = Forecaster(_config(ar=3), seed=4).eval()
    x, _, _ = _data(4)
    s = model(x)
    d = model.distribution(x)
    mu, sigma = s[..., 0], np.exp(s[..., 1])
    assert set(d) == {"forecast", "lower_80", "upper_80", "lower_95", "upper_95", "sigma"}
    np.testing.assert_allclose(d["forecast"], mu, rtol=1e-15)
    np.testing.assert_allclose(d["sigma"], sigma, rtol=1e-15)
    for level, lower, upper in ((0.8, "lower_80", "upper_80"), (0.95, "lower_95", "upper_95")):
        z = _norm_ppf(0.5 + level / 2)
        np.testing.assert_allclose(d[lower], mu - z * sigma, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(d[upper], mu + z * sigma, rtol=1e-13, atol=1e-13)
    assert _norm_ppf(0.9) == pytest.approx(1.2816, abs=1e-4)
    assert _norm_ppf(0.975) == pytest.approx(1.96, abs=1e-4)


def test_gaussian_intervals_cover_their_level():
    """Independent of the constants: N(mu, sigma) puts 80% / 95% between the ends."""
    stats = require_module("scipy.stats")
    model = Forecaster(_config(), seed=5).eval()
    x, _, _ = _data(6)
    d = model.distribution(x)
    for level, lower, upper in ((0.8, "lower_80", "upper_80"), (0.95, "lower_95", "upper_95")):
        mass = (stats.norm.cdf(d[upper], d["forecast"], d["sigma"])
                - stats.norm.cdf(d[lower], d["forecast"], d["sigma"]))
        np.testing.assert_allclose(mass, level, rtol=1e-12)
        lo_tail = stats.norm.cdf(d[lower], d["forecast"], d["sigma"])
        np.testing.assert_allclose(lo_tail, (1 - level) / 2, rtol=1e-10)  # symmetric


@pytest.mark.parametrize("quantiles", [(0.025, 0.1, 0.5, 0.9, 0.975),
                                       (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)])
def test_quantile_distribution_sorts_crossing_quantiles_and_picks_levels(quantiles):
    K = len(quantiles)
    model = Forecaster(_config(output="quantile", quantiles=quantiles), seed=6).eval()
    params = model.parameters()
    params["head.weight"][...] = 0.0  # the head's bias alone: outputs we choose
    values = np.arange(1.0, K + 1)  # sorted, level k -> value k + 1
    crossing = np.stack([np.roll(values[::-1], h) for h in range(HORIZON)])  # (H, K), unsorted
    params["head.bias"][...] = crossing.reshape(-1)
    x, _, _ = _data(7)
    s = model(x)
    np.testing.assert_array_equal(s[0], crossing)  # the raw outputs do cross
    d = model.distribution(x)
    assert set(d) == {"forecast", "lower_80", "upper_80", "lower_95", "upper_95"}
    at = {level: k + 1.0 for k, level in enumerate(quantiles)}  # after sorting
    for key, level in (("lower_95", 0.025), ("lower_80", 0.1), ("forecast", 0.5),
                       ("upper_80", 0.9), ("upper_95", 0.975)):
        assert d[key].shape == (B, HORIZON)
        np.testing.assert_array_equal(d[key], np.full((B, HORIZON), at[level]), err_msg=key)


def test_quantile_intervals_are_nested_for_any_head():
    model = Forecaster(_config(output="quantile", ar=2), seed=9).eval()
    x, _, _ = _data(8)
    d = model.distribution(x)
    order = ("lower_95", "lower_80", "forecast", "upper_80", "upper_95")
    for a, b in zip(order, order[1:], strict=False):
        assert (d[a] <= d[b]).all(), (a, b)


@pytest.mark.parametrize("output", ["gaussian", "quantile"])
def test_ar_highway_shifts_the_level_and_leaves_the_scale(output):
    """With the head's weights zero and the AR part set to persistence (the window's last
    target), the forecast is last value + bias for every window; a Gaussian's sigma does not
    depend on the level, and every quantile moves with it."""
    model = Forecaster(_config(output=output, ar=3), seed=10).eval()
    p = model.parameters()
    p["head.weight"][...] = 0.0
    p["ar.weight"][...] = [0.0, 0.0, 1.0]  # x_{T, 0}: the newest step of the window
    p["ar.bias"][...] = 0.0
    x, _, _ = _data(9)
    x[-1, :, 0] = [-3.0, 0.0, 1.5, 4.0]  # very different levels
    last = x[-1, :, 0][:, None]
    bias = p["head.bias"].reshape(HORIZON, -1)
    d = model.distribution(x)
    if output == "gaussian":
        np.testing.assert_allclose(d["forecast"], last + bias[:, 0], rtol=1e-14)
        np.testing.assert_allclose(d["sigma"], np.broadcast_to(np.exp(bias[:, 1]), (B, HORIZON)),
                                   rtol=1e-14)
    else:
        s = model(x)
        np.testing.assert_allclose(s, last[:, :, None] + bias[None], rtol=1e-14, atol=1e-15)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("kw,message", [
    ({"cell": "rnn"}, r"cell: expected one of lstm, gru, got 'rnn'"),
    ({"output": "normal"}, r"output: expected one of gaussian, quantile, got 'normal'"),
    ({"mode": "iterated"}, r"mode: expected one of direct, recursive, got 'iterated'"),
    ({"mode": "recursive", "horizon": 1, "output": "quantile"},
     r"mode 'recursive' .*expected output 'gaussian', got 'quantile'"),
    ({"mode": "recursive", "horizon": 3}, r"horizon: a recursive model predicts one step, got 3"),
    ({"output": "quantile", "quantiles": (0.025, 0.1, 0.9, 0.975)},
     r"quantiles: expected levels that include .*0\.5.*got \(0\.025, 0\.1, 0\.9, 0\.975\)"),
    ({"ar": -1}, r"ar: expected an integer >= 0, got -1"),
    ({"horizon": 0}, r"horizon: expected a positive integer, got 0"),
    ({"dropout": 1.0}, r"dropout: expected a probability in \[0, 1\), got 1\.0"),
    ({"beta": 1.5}, r"beta: expected .*1.*got 1\.5"),
    ({"output": "quantile", "beta": 0.5},
     r"beta: weights the gaussian NLL; expected 0 with output 'quantile', got 0\.5"),
])
def test_bad_configs_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        _config(**kw)


def test_recursive_gaussian_one_step_is_accepted():
    assert _config(mode="recursive", horizon=1).horizon == 1
    # quantiles are only checked for a quantile head
    assert _config(quantiles=(0.5,)).output == "gaussian"


def test_bad_inputs_are_value_errors():
    model = Forecaster(_config(ar=5), seed=0)
    x, y, mask = _data(0)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\), got \(7, 4, 2\)"):
        model(x[:, :, :2])
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\), got \(7, 3\)"):
        model(x[:, 0])
    with pytest.raises(ValueError, match=r"x: expected a window of at least ar=5 steps, got 4"):
        model(x[-4:])
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 3\), got \(4, 2\)"):
        model.forward_loss(x, y[:, :2], mask[:, :2])
    assert model(x[-5:]).shape == (B, HORIZON, 2)  # exactly ar steps is enough


def test_num_parameters_counts_the_built_model():
    for kw in ({}, {"ar": 4, "layers": 2}, {"cell": "gru", "output": "quantile", "ar": 1}):
        cfg = _config(**kw)
        assert cfg.num_parameters() == sum(p.size for p in Forecaster(cfg).parameters().values())


# ----------------------------------------------------------------------------- dropout modes
def test_train_and_eval_toggle_both_dropouts():
    model = Forecaster(_config(layers=2, dropout=0.5), seed=11)
    x, _, _ = _data(10)
    assert model.training and model.rnn.training and model.drop.training
    a, b = model(x), model(x)
    assert not np.array_equal(a, b)  # fresh masks every forward in training
    assert model.rnn._cache.masks[1] is not None  # between the two recurrent layers
    assert model.drop._mask is not None  # before the head

    assert model.eval() is model
    assert not (model.training or model.rnn.training or model.drop.training)
    e = model(x)
    np.testing.assert_array_equal(model(x), e)  # deterministic
    assert model.rnn._cache.masks[1] is None and model.drop._mask is None
    plain = Forecaster(_config(layers=2, dropout=0.0), seed=0)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_allclose(e, plain(x), rtol=1e-15)  # eval: the network without dropout

    assert model.train() is model
    assert model.training and model.rnn.training and model.drop.training
    assert not np.array_equal(model(x), e)


def test_head_dropout_alone_acts_in_training():
    """One recurrent layer: no dropout inside the rnn, so a change comes from the head's."""
    model = Forecaster(_config(layers=1, dropout=0.5), seed=12)
    x, _, _ = _data(11)
    assert not np.array_equal(model(x), model(x))
    assert model.rnn._cache.masks == [None]
    model.train(False)
    assert not model.drop.training
    np.testing.assert_array_equal(model(x), model(x))


# ----------------------------------------------------------------------------- training
def _sine_windows(phases: np.ndarray, steps: int, horizon: int, period: float):
    t = phases[None, :] + np.arange(steps + horizon)[:, None]  # (steps + H, N)
    v = np.sin(2 * np.pi * t / period)
    return v[:steps, :, None].copy(), v[steps:].T.copy()  # x (steps, N, 1), y (N, H)


@pytest.mark.parametrize("output", ["gaussian", "quantile"])
def test_learns_a_sine_wave_far_better_than_persistence(output):
    """150 Adam steps on a noiseless sine (about 0.2 s): the held-out RMSE is about 0.02 of
    the persistence forecast's (last value repeated), across seeds."""
    steps, horizon, period = 12, 4, 10.0
    g = np.random.default_rng(0)
    x, y = _sine_windows(g.uniform(0, period, 128), steps, horizon, period)
    vx, vy = _sine_windows(g.uniform(0, period, 200), steps, horizon, period)
    model = Forecaster(ForecasterConfig(inputs=1, horizon=horizon, hidden=12, output=output),
                       seed=0)
    optimizer = Adam(model.parameters(), lr=0.02)
    for step in range(150):
        idx = g.choice(128, 32, replace=False)
        model.zero_grad(lazy=True)
        n = idx.size * horizon
        model.forward_loss(x[:, idx], y[idx])
        model.backward_loss(1.0 / n)
        norm = clipped_step(optimizer, model.grads, 1.0)
        assert math.isfinite(norm), step
    model.eval()
    pred = model.distribution(vx)["forecast"]
    rmse = float(np.sqrt(np.mean((pred - vy) ** 2)))
    persistence = float(np.sqrt(np.mean((vx[-1, :, :1] - vy) ** 2)))
    assert persistence > 0.5
    assert rmse < 0.1 * persistence, (rmse, persistence)
