"""Interval calibration on the validation tail: the conformal factor against a hand count, a
mis-scaled Gaussian brought back to its nominal coverage, asymmetric (quantile) intervals scaled
per side, and a trained forecaster whose intervals were made four times too wide, corrected
by the factors its task fits (and kept by its checkpoint); online tracking of the widths through a
change of volatility, with nothing taken from the future."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rnnlab.data.series import read_series
from rnnlab.models.forecaster import Z80, Z95
from rnnlab.tasks.forecast import metrics
from rnnlab.tasks.forecast.calibrate import (
    GAMMAS,
    calibrated,
    choose_gamma,
    conformity_scores,
    fit_calibration,
    tracked,
)
from rnnlab.tasks.forecast.predict import KEYS, rolling
from rnnlab.tasks.forecast.task import (
    ForecastRun,
    ForecastTask,
    ForecastTrainConfig,
    build_model,
    load_forecaster,
    prepare,
)
from rnnlab.training import Trainer


def gaussian(mu: np.ndarray, sigma: float) -> dict:
    return {"forecast": mu, "lower_80": mu - Z80 * sigma, "upper_80": mu + Z80 * sigma,
            "lower_95": mu - Z95 * sigma, "upper_95": mu + Z95 * sigma}


def covered(y, dist, level) -> float:
    return metrics.coverage(y, dist[f"lower_{level}"], dist[f"upper_{level}"])


def test_the_factor_is_the_conformal_order_statistic():
    # scores 1..9 (targets 1..9 above a forecast of 0 with half-width 1): k = ceil(10 a)
    y = np.arange(1.0, 10.0)
    dist = {"forecast": np.zeros(9), "lower_80": -np.ones(9), "upper_80": np.ones(9),
            "lower_95": -np.ones(9), "upper_95": np.ones(9)}
    np.testing.assert_allclose(conformity_scores(y, dist, "80"), y)
    assert fit_calibration(y, dist) == {"80": 8.0, "95": 9.0}  # ceil(8) = 8; ceil(9.5) > 9: 9
    mask = np.array([True] * 4 + [False] * 5)  # scores 1..4: ceil(4) = 4, ceil(4.75) = 5 -> 4
    assert fit_calibration(y, dist, mask) == {"80": 4.0, "95": 4.0}
    assert fit_calibration(y, dist, np.zeros(9, bool)) is None


def test_a_mis_scaled_gaussian_is_brought_to_nominal_coverage():
    rng = np.random.default_rng(0)
    for true_sigma in (0.25, 1.0, 4.0):  # the model says sigma 1 every time
        valid, test = rng.normal(0, true_sigma, 4000), rng.normal(0, true_sigma, 4000)
        factors = fit_calibration(valid, gaussian(np.zeros(4000), 1.0))
        assert factors["80"] == pytest.approx(true_sigma, rel=0.06)
        assert factors["95"] == pytest.approx(true_sigma, rel=0.06)
        raw, fixed = gaussian(np.zeros(4000), 1.0), calibrated(gaussian(np.zeros(4000), 1.0),
                                                               factors)
        for level, a in (("80", 0.8), ("95", 0.95)):
            assert abs(covered(test, fixed, level) - a) < 0.02
            if true_sigma != 1.0:  # the raw intervals miss by more than the 2 points allowed
                assert abs(covered(test, raw, level) - a) > 0.04
        np.testing.assert_array_equal(fixed["forecast"], raw["forecast"])


def test_asymmetric_intervals_are_scaled_per_side():
    m = np.array([10.0, 20.0])
    dist = {"forecast": m, "lower_80": m - 1, "upper_80": m + 3, "lower_95": m - 2,
            "upper_95": m + 6}
    out = calibrated(dist, {"80": 0.5, "95": 1.5})
    np.testing.assert_allclose(out["lower_80"], m - 0.5)
    np.testing.assert_allclose(out["upper_80"], m + 1.5)
    np.testing.assert_allclose(out["lower_95"], m - 3)
    np.testing.assert_allclose(out["upper_95"], m + 9)
    assert calibrated(dist, None) is dist
    crossed = calibrated(dist, {"80": 3.0, "95": 1.0})  # 80%: m - 3 .. m + 9 outside m - 2 ..
    np.testing.assert_allclose(crossed["lower_95"], m - 3)  # the 95% interval holds the 80%
    np.testing.assert_allclose(crossed["upper_95"], m + 9)
    # a target below the forecast is measured in the lower half-width, above in the upper
    np.testing.assert_allclose(conformity_scores(np.array([9.0, 26.0]), dist, "80"), [1.0, 2.0])


def test_a_zero_width_interval_gets_no_infinite_factor():
    y, m = np.array([1.0, 1.0, 2.0]), np.ones(3)
    dist = {k: m for k in KEYS}
    np.testing.assert_array_equal(conformity_scores(y, dist, "95"), [0.0, 0.0, np.inf])
    assert fit_calibration(y, dist) == {"80": 1.0, "95": 1.0}


# ----------------------------------------------------------------------------- a trained task
def noisy_series(tmp_path, n=420, seed=0):
    """A level of 50 plus white noise (sd 2): the best forecast is 50, its sd 2."""
    values = 50.0 + np.random.default_rng(seed).normal(0.0, 2.0, n)
    days = np.datetime64("2000-01-01") + np.arange(n)
    path = tmp_path / "noise.csv"
    path.write_text("day,y\n" + "".join(f"{d},{float(v)!r}\n" for d, v in zip(days, values,
                                                                         strict=True)))
    return read_series(path)


def test_a_trained_forecaster_with_four_times_too_wide_intervals_is_corrected(tmp_path):
    series = noisy_series(tmp_path)
    holdout = 200
    cfg = ForecastTrainConfig(epochs=4, window=8, batch_size=16, valid=120, seed=0,
                              save_minutes=0)
    prepared = prepare([series], [holdout], cfg)
    model, features = build_model(prepared, cfg, 1, hidden=8)
    task = ForecastTask(model, prepared, features, cfg)
    Trainer(task, tmp_path / "run", log=lambda _: None, progress=False).fit()
    saved = load_forecaster(tmp_path / "run")
    assert saved.calibration == task.calibration and set(saved.calibration) == {"80", "95"}

    # the mis-scaled model: every sigma x 4 (log_sigma's bias + log 4)
    model.head._params["bias"].reshape(1, 2)[:, 1] += np.log(4.0)
    task.evaluate(lambda: False)
    task.on_best()
    run = ForecastRun.from_task(task)
    assert run.calibration["80"] < 0.5 and run.calibration["95"] < 0.5
    start = len(series) - holdout
    fixed = rolling(run, 0, series, start)
    raw = rolling(replace(run, calibration=None), 0, series, start)
    y = series.values[start:]
    np.testing.assert_array_equal(fixed["forecast"], raw["forecast"])
    assert covered(y, raw, "80") > 0.99 and covered(y, raw, "95") == 1.0
    assert abs(covered(y, fixed, "80") - 0.8) < 0.08
    assert abs(covered(y, fixed, "95") - 0.95) < 0.05


def test_no_calibration_without_validation_rows_or_when_off(tmp_path):
    series = noisy_series(tmp_path, n=120)
    for kw in ({"valid": 0}, {"calibrate": False}):
        cfg = ForecastTrainConfig(epochs=2, window=8, seed=0, save_minutes=0, **kw)
        prepared = prepare([series], [0], cfg)
        model, features = build_model(prepared, cfg, 1, hidden=8)
        task = ForecastTask(model, prepared, features, cfg)
        Trainer(task, None, log=lambda _: None, progress=False).fit()
        assert task.calibration is None and ForecastRun.from_task(task).calibration is None
    with pytest.raises(ValueError, match="calibrate: expected true or false, got 'yes'"):
        ForecastTrainConfig(calibrate="yes")


def _coverage(y, d, level):
    return metrics.coverage(y, d[f"lower_{level}"], d[f"upper_{level}"])


def test_tracking_follows_a_change_of_volatility():
    """Intervals made for noise of sd 1, while from row 200 on the noise has sd 3: the model's
    own intervals cover far too little there, the tracked ones about what they say."""
    g = np.random.default_rng(0)
    n = 3000
    sd = np.where(np.arange(n) < 200, 1.0, 3.0)
    y = g.standard_normal(n) * sd
    dist = gaussian(np.zeros(n), 1.0)
    out = tracked(y, dist, 0.1)
    late = slice(500, None)
    assert _coverage(y[late], {k: v[late] for k, v in dist.items()}, "80") < 0.35
    assert abs(_coverage(y[late], {k: v[late] for k, v in out.items()}, "80") - 0.80) < 0.03
    assert abs(_coverage(y[late], {k: v[late] for k, v in out.items()}, "95") - 0.95) < 0.02
    width = out["upper_80"] - out["lower_80"]
    assert 2.0 < width[late].mean() / width[:200].mean() < 4.5  # it followed sd 1 -> 3
    assert np.array_equal(out["forecast"], dist["forecast"])  # the forecast does not move
    assert np.all(out["lower_95"] <= out["lower_80"]) and np.all(out["upper_95"] >= out[
        "upper_80"])


@pytest.mark.parametrize("lag", [1, 3])
def test_tracking_uses_only_targets_before_each_origin(lag):
    g = np.random.default_rng(1)
    y = g.standard_normal(60) * 2
    dist = gaussian(np.zeros(60), 1.0)
    base = tracked(y, dist, 0.1, lag=lag)
    k = 30
    y2 = y.copy()
    y2[k] = 0.0 if abs(y[k]) > Z80 else 10.0  # flip row k from miss to hit or back
    moved = tracked(y2, dist, 0.1, lag=lag)
    for key in ("lower_80", "upper_80"):
        assert np.array_equal(base[key][:k + lag], moved[key][:k + lag])  # not yet known
        assert not np.array_equal(base[key][k + lag:], moved[key][k + lag:])  # then it is


def test_tracking_narrows_when_everything_is_covered_and_checks_input():
    y = np.zeros(50)
    out = tracked(y, gaussian(np.zeros(50), 1.0), 0.1)
    width = out["upper_80"] - out["lower_80"]
    assert np.all(np.diff(width) < 0) and width[-1] == pytest.approx(2 * Z80 * np.exp(-0.1 * 0.2
                                                                                      * 49))
    y[5] = np.nan  # a missing target changes nothing
    assert tracked(y, gaussian(np.zeros(50), 1.0), 0.1)["upper_80"][6] == out["upper_80"][5]
    with pytest.raises(ValueError, match="gamma: expected a positive step"):
        tracked(y, gaussian(np.zeros(50), 1.0), 0.0)
    with pytest.raises(ValueError, match="lag: expected a positive integer"):
        tracked(y, gaussian(np.zeros(50), 1.0), 0.1, lag=0)
    with pytest.raises(ValueError, match=r"y: expected shape \(50,\)"):
        tracked(y[:10], gaussian(np.zeros(50), 1.0), 0.1)


def test_interval_score_is_width_plus_scaled_misses():
    """Written out per target (Gneiting and Raftery 2007): width, plus 2 / (1 - a) times the
    distance outside; NaN targets are left out."""
    y = np.array([0.0, 3.0, -2.5, np.nan])
    lo, hi = np.array([-1.0, -1.0, -1.0, -1.0]), np.array([1.0, 2.0, 1.0, 1.0])
    want = np.mean([2.0, 3.0 + 10.0 * 1.0, 2.0 + 10.0 * 1.5])  # a = 0.8: 2 / 0.2 = 10
    assert metrics.interval_score(y, lo, hi, 0.8) == pytest.approx(want, rel=1e-12)


def test_choose_gamma_tracks_a_volatility_change_and_not_a_calm_series():
    """On noise whose sd triples after 100 rows (intervals made for sd 1) a positive step wins,
    with a lower score than the intervals as given; on noise the intervals describe (sd 1
    throughout) no step beats them by much and the best is small. The scores are those of the
    intervals tracked() gives."""
    g = np.random.default_rng(2)
    n = 600
    y = g.standard_normal(n) * np.where(np.arange(n) < 100, 1.0, 3.0)
    dist = gaussian(np.zeros(n), 1.0)
    gamma, scores = choose_gamma(y, dist)
    assert set(scores) == set(GAMMAS) and gamma > 0 and scores[gamma] < 0.8 * scores[0.0]
    assert scores[gamma] == min(scores.values())
    d = tracked(y, dist, gamma)
    assert scores[gamma] == pytest.approx(sum(
        metrics.interval_score(y, d[f"lower_{k}"], d[f"upper_{k}"], a) for k, a in
        (("80", 0.8), ("95", 0.95))), rel=1e-12)
    calm = g.standard_normal(n)
    gamma, scores = choose_gamma(calm, dist)
    assert gamma <= 0.05 and scores[gamma] > 0.97 * scores[0.0]
