"""Forecast metrics and baselines against independent oracles: hand-computed small examples,
Python's statistics module, statsmodels (its error measures, the state-space SARIMAX forecast
variance of a random walk and a seasonal random walk, OLS's standard error of a mean) and, only
where it is installed, scikit-learn's pinball loss."""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest
from conftest import require_module, shared_data

from rnnlab.tasks.forecast.metrics import (
    coverage,
    drift,
    format_table,
    mae,
    mase,
    metrics_table,
    naive_scale,
    persistence,
    pinball,
    rmse,
    rolling_one_step,
    seasonal_naive,
    smape,
    verdict,
)

# The normal quantiles from the standard library, not the module's constants.
Z80, Z95 = statistics.NormalDist().inv_cdf(0.90), statistics.NormalDist().inv_cdf(0.975)
HISTORY = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 8.0, 7.0]


def _intervals_ok(fc: dict, forecast: list[float], sigma_h: list[float]) -> None:
    """The forecast and yhat -/+ z sigma_h for 80% and 95%."""
    f, s = np.array(forecast), np.array(sigma_h)
    np.testing.assert_allclose(fc["forecast"], f, rtol=1e-12)
    for level, z in (("80", Z80), ("95", Z95)):
        np.testing.assert_allclose(fc[f"lower_{level}"], f - z * s, rtol=1e-12)
        np.testing.assert_allclose(fc[f"upper_{level}"], f + z * s, rtol=1e-12)


# --- point metrics --------------------------------------------------------------------------

def test_mae_rmse_by_hand():
    y, yhat = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 1.0, 4.0]  # errors -1, 0, 2, 0
    assert mae(y, yhat) == pytest.approx(3 / 4)
    assert rmse(y, yhat) == pytest.approx(math.sqrt(5 / 4))


def test_mae_rmse_match_statsmodels(rng):
    em = require_module("statsmodels.tools.eval_measures")
    y, yhat = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    assert mae(y, yhat) == pytest.approx(float(np.mean(em.meanabs(y, yhat, axis=None))))
    assert rmse(y, yhat) == pytest.approx(float(em.rmse(y, yhat, axis=None)))


def test_smape_by_hand_with_a_zero_over_zero_term():
    # terms |e|/(|y|+|yhat|): 1/3, 0, 0/0 -> 0, 2/6
    assert smape([1.0, 2.0, 0.0, 4.0], [2.0, 2.0, 0.0, 2.0]) == pytest.approx(200 / 4 * (2 / 3))
    assert smape([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert smape([1.0, -1.0], [-1.0, 0.0]) == pytest.approx(200.0)  # each term at its bound 1


def test_mase_by_hand():
    train = [1.0, 3.0, 2.0, 5.0, 4.0]
    # m = 1: |3-1|, |2-3|, |5-2|, |4-5| -> scale 7/4; m = 2: |2-1|, |5-3|, |4-2| -> 5/3
    assert naive_scale(train, 1) == pytest.approx(7 / 4)
    assert mase([4.0, 6.0], [5.0, 5.0], train) == pytest.approx(1 / (7 / 4))
    assert mase([4.0, 6.0], [5.0, 5.0], train, m=2) == pytest.approx(1 / (5 / 3))


def test_mase_is_nan_when_the_naive_scale_is_zero():
    assert math.isnan(mase([1.0, 2.0], [1.0, 1.0], [3.0, 3.0, 3.0]))  # constant
    periodic = [1.0, 2.0, 1.0, 2.0, 1.0]
    assert math.isnan(mase([1.0], [2.0], periodic, m=2))
    assert mase([1.0], [2.0], periodic, m=1) == pytest.approx(1.0)


def test_pinball_by_hand():
    # u = y - pred: (1, -1) for y = 1 and (-1, -1) for y = 3; losses 0.1, 0.1, 0.9, 0.1
    preds = [[0.0, 2.0], [4.0, 4.0]]
    assert pinball([1.0, 3.0], preds, [0.1, 0.9]) == pytest.approx(0.3)


def test_pinball_at_the_median_is_half_the_mae(rng):
    y, pred = rng.normal(size=20), rng.normal(size=20)
    assert pinball(y, pred[:, None], [0.5]) == pytest.approx(mae(y, pred) / 2)


def test_pinball_matches_torch(rng, torch):
    y, q = rng.normal(size=30), np.array([0.1, 0.5, 0.9])
    preds = y[:, None] + rng.normal(size=(30, 3))
    u = torch.tensor(y)[:, None] - torch.tensor(preds)
    qt = torch.tensor(q)
    expected = torch.maximum(qt * u, (qt - 1) * u).mean().item()
    assert pinball(y, preds, q) == pytest.approx(expected, rel=1e-12)


def test_coverage_by_hand_bounds_inclusive():
    y = [1.0, 2.0, 3.0, 4.0]
    assert coverage(y, [1.0, 0.0, 3.5, 0.0], [2.0, 1.5, 4.0, 4.0]) == pytest.approx(0.5)
    assert math.isnan(coverage(y, [0.0, math.nan, 0.0, 0.0], [5.0] * 4))


# --- baselines ------------------------------------------------------------------------------

def test_persistence_by_hand():
    sigma = statistics.stdev([2.0, -1.0, 3.0, -1.0, 2.0, 2.0, -1.0])  # the differences
    _intervals_ok(persistence(HISTORY, 3), [7.0] * 3, [sigma * math.sqrt(h) for h in (1, 2, 3)])


def test_seasonal_naive_by_hand():
    # m = 3, T = 8: h = 1..5 -> y_6, y_7, y_8, y_6, y_7 (1-based) = 6, 8, 7, 6, 8
    sigma = statistics.stdev([5 - 1, 4 - 3, 6 - 2, 8 - 5, 7 - 4])  # y_t - y_{t-3}
    k = [0, 0, 0, 1, 1]
    fc = seasonal_naive(HISTORY, 5, 3)
    _intervals_ok(fc, [6.0, 8.0, 7.0, 6.0, 8.0], [sigma * math.sqrt(j + 1) for j in k])


def test_drift_by_hand():
    sigma = statistics.stdev([2.0, -1.0, 3.0, -1.0, 2.0, 2.0, -1.0])
    slope = (7.0 - 1.0) / 7
    _intervals_ok(drift(HISTORY, 2), [7 + slope, 7 + 2 * slope],
                  [sigma * math.sqrt(h * (1 + h / 7)) for h in (1, 2)])


def test_seasonal_naive_with_m_1_is_persistence():
    a, b = seasonal_naive(HISTORY, 4, 1), persistence(HISTORY, 4)
    for key, value in a.items():
        np.testing.assert_allclose(value, b[key])


def test_short_histories_give_nan_intervals_not_errors():
    fc = persistence([5.0, 6.0], 2)  # one residual: no standard deviation
    assert fc["forecast"].tolist() == [6.0, 6.0] and np.isnan(fc["lower_80"]).all()
    assert seasonal_naive([1.0, 2.0, 3.0], 4, 3)["forecast"].tolist() == [1.0, 2.0, 3.0, 1.0]


def test_random_walk_intervals_match_statsmodels_state_space(rng):
    """A random walk with the residual variance fixed: SARIMAX's h-step forecast variance is
    h sigma^2 (naive) and (floor((h-1)/m) + 1) sigma^2 (seasonal random walk)."""
    sarimax = require_module("statsmodels.tsa.statespace.sarimax")
    y = 50 + np.cumsum(rng.normal(size=40))
    for m, fc in ((1, persistence(y, 9)), (4, seasonal_naive(y, 9, 4))):
        sigma2 = np.var(y[m:] - y[:-m], ddof=1)
        model = (sarimax.SARIMAX(y, order=(0, 1, 0)) if m == 1 else
                 sarimax.SARIMAX(y, order=(0, 0, 0), seasonal_order=(0, 1, 0, m)))
        ref = model.filter(np.array([sigma2])).get_forecast(9)
        np.testing.assert_allclose(fc["forecast"], ref.predicted_mean, rtol=1e-10)
        interval = ref.conf_int(alpha=0.05)
        np.testing.assert_allclose(fc["lower_95"], interval[:, 0], rtol=1e-8)
        np.testing.assert_allclose(fc["upper_95"], interval[:, 1], rtol=1e-8)


def test_drift_variance_is_innovations_plus_slope_uncertainty(rng):
    """sigma_h^2 = h sigma^2 + h^2 se(slope)^2, se from statsmodels' OLS of the differences on
    a constant (whose estimate is the slope)."""
    sm = require_module("statsmodels.api")
    y = 10 + np.cumsum(0.3 + rng.normal(size=30))
    ols = sm.OLS(np.diff(y), np.ones((29, 1))).fit()
    h = np.arange(1, 7)
    sigma_h = np.sqrt(h * ols.scale + h**2 * ols.bse[0] ** 2)
    _intervals_ok(drift(y, 6), list(y[-1] + h * ols.params[0]), list(sigma_h))


@pytest.mark.parametrize("name,kwargs", [("persistence", {}), ("seasonal_naive", {"m": 5}),
                                         ("drift", {})])
def test_rolling_one_step_equals_refitting_at_every_origin(rng, name, kwargs):
    fn = {"persistence": persistence, "seasonal_naive": seasonal_naive, "drift": drift}[name]
    y = 1e4 + np.cumsum(rng.normal(size=60))  # far from zero: the running sums must not cancel
    start = 5
    got = rolling_one_step(y, start, fn, **kwargs)
    for key in got:
        expected = [fn(y[:t], 1, **kwargs)[key][0] for t in range(start, y.size)]
        np.testing.assert_allclose(got[key], expected, rtol=1e-12, err_msg=key)
    assert rolling_one_step(y, start, name, **kwargs)["forecast"].shape == (y.size - start,)


# --- tables and the verdict ------------------------------------------------------------------

def _rows(model_rmse_offset: float) -> list[dict]:
    y = np.array(HISTORY)
    forecasts = {"persistence": rolling_one_step(y, 5, persistence),
                 "drift": rolling_one_step(y, 5, drift),
                 "model": {"forecast": y[5:] + model_rmse_offset}}
    return metrics_table(y[5:], forecasts, y[:5])


def test_metrics_table_rows_are_the_metrics():
    y = np.array(HISTORY)
    fc = rolling_one_step(y, 5, persistence)
    preds, q = np.stack([fc["lower_80"], fc["upper_80"]], axis=-1), [0.1, 0.9]
    rows = metrics_table(y[5:], {"persistence": fc, "flat": {"forecast": np.full(3, 6.0)}},
                         y[:5], m=1, quantiles_preds={"persistence": (preds, q)})
    naive, flat = rows
    assert naive["name"] == "persistence" and naive["RMSE"] == rmse(y[5:], fc["forecast"])
    assert naive["MASE"] == mase(y[5:], fc["forecast"], y[:5])
    assert naive["coverage_80"] == coverage(y[5:], fc["lower_80"], fc["upper_80"])
    assert naive["pinball"] == pinball(y[5:], preds, q)
    assert math.isnan(flat["coverage_95"]) and math.isnan(flat["pinball"])
    assert flat["sMAPE"] == smape(y[5:], np.full(3, 6.0))


def test_format_table_aligns_columns():
    lines = format_table(_rows(0.1)).splitlines()
    assert lines[0].split()[:3] == ["name", "MAE", "RMSE"] and set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    assert lines[2].startswith("persistence") and "0.1000" in lines[4]


def test_verdict_sentences():
    assert verdict(_rows(0.1), "model") == (
        "the model beats persistence by 94.2% in RMSE and the best baseline, drift, by 93.6%")
    bad = verdict(_rows(5.0), "model")
    assert bad == ("the model does not beat persistence (RMSE 5 vs 1.732): its forecasts carry "
                   "no skill over repeating the last value")
    assert verdict(_rows(0.1), "drift") == (
        "the model beats persistence by 10.2% in RMSE, the best baseline here")
    rows = _rows(1.6)  # between drift (1.555) and persistence (1.732)
    assert verdict(rows, "model").endswith("but not the best baseline, drift (RMSE 1.6 vs 1.555)")


# --- real data ------------------------------------------------------------------------------

def _column(relpath: str) -> np.ndarray:
    with shared_data(relpath).open(newline="") as f:
        return np.array([float(row[1]) for row in list(csv.reader(f))[1:]])


def test_baselines_on_the_real_series():
    air = _column("timeseries/airline-passengers.csv")
    fc = seasonal_naive(air[:-12], 12, 12)
    assert rmse(air[-12:], fc["forecast"]) == pytest.approx(50.708, abs=1e-3)
    temp = _column("timeseries/daily-min-temperatures.csv")
    fc = rolling_one_step(temp, temp.size - 365, "persistence")
    assert rmse(temp[-365:], fc["forecast"]) == pytest.approx(2.5824, abs=1e-4)


# --- bad inputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: mae([1.0, 2.0], [1.0]),
    lambda: rmse([], []),
    lambda: smape([[1.0]], [1.0]),
    lambda: mase([1.0], [1.0], [1.0, 2.0], m=2),  # training series not longer than m
    lambda: mase([1.0], [1.0], [], m=1),
    lambda: pinball([1.0], [[1.0, 2.0]], [0.5]),
    lambda: pinball([1.0], [[1.0]], [1.5]),
    lambda: pinball([], np.zeros((0, 1)), [0.5]),
    lambda: coverage([1.0, 2.0], [0.0], [3.0, 3.0]),
    lambda: persistence([], 3),
    lambda: persistence([[1.0, 2.0]], 3),
    lambda: persistence([1.0, 2.0], 0),
    lambda: drift([1.0, 2.0], 1.5),
    lambda: drift([1.0], 2),
    lambda: seasonal_naive([1.0, 2.0], 3, 12),  # history shorter than m
    lambda: seasonal_naive([1.0, 2.0], 3, 0),
    lambda: rolling_one_step([1.0, 2.0, 3.0], 3, "persistence"),  # nothing left to forecast
    lambda: rolling_one_step([1.0, 2.0, 3.0], 1, "drift"),  # a drift needs two values
    lambda: rolling_one_step([1.0, 2.0, 3.0], 1, "seasonal_naive", m=2),
    lambda: rolling_one_step([1.0, 2.0, 3.0], 2, "seasonal_naive"),  # no m
    lambda: rolling_one_step([1.0, 2.0, 3.0], 1, "mean"),
    lambda: format_table([]),
    lambda: verdict([{"name": "model", "RMSE": 1.0}], "model"),  # no persistence row
])
def test_bad_inputs_raise_one_line_errors(call):
    with pytest.raises(ValueError, match="expected") as err:
        call()
    assert "\n" not in str(err.value)
