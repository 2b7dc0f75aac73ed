"""Forecasting below the command line, each part against a construction of its own: the scaler
(fitted on the training rows only), the windows and targets (a plain loop), the task's arrays
(no target at or after the validation start, nothing of the holdout), global models, forecasts
from the end against rolling forecasts, recursive sample paths (a loop that feeds each draw
back), backtest origins, and a signal mid-epoch that resumes bit-identically.

Every series is a small synthetic CSV in tmp_path; every model has 8 hidden units."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, replace

import numpy as np
import pytest

from rnnlab.data.series import calendar_features, next_times, read_series
from rnnlab.data.text import DataError
from rnnlab.io import load_checkpoint
from rnnlab.tasks.forecast.predict import (
    KEYS,
    backtest_origins,
    forecast_at,
    forecast_from_end,
    rolling,
)
from rnnlab.tasks.forecast.task import (
    ForecastRun,
    ForecastTask,
    ForecastTrainConfig,
    build_model,
    load_forecaster,
    prepare,
)
from rnnlab.tasks.forecast.windows import (
    Features,
    Scaler,
    base_rows,
    step_features,
    targets,
    windows,
)
from rnnlab.training import Interrupted, Trainer


def months(n: int, year: int = 2000) -> list[str]:
    return [f"{year + i // 12}-{i % 12 + 1:02d}" for i in range(n)]


def seasonal(n: int, seed: int = 0, level: float = 100.0) -> np.ndarray:
    """Trend + a 12-month season + noise, all positive."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, n)
    return level + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + noise


def write_csv(path, values, times=None, covariates: dict | None = None):
    """A CSV with a time column 'month', the target 'y' and the named covariate columns."""
    covariates = covariates or {}
    times = times or months(len(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(["month", "y", *covariates])
    rows = [",".join([t, repr(float(v)), *(repr(float(c[i])) for c in covariates.values())])
            for i, (t, v) in enumerate(zip(times, values, strict=True))]
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def read(path, covariates=()):
    return read_series(path, covariates=list(covariates))


def _quiet(_):
    pass


def small_cfg(**kw) -> ForecastTrainConfig:
    return ForecastTrainConfig(**{"epochs": 2, "window": 8, "batch_size": 16, "seed": 0,
                                  "save_minutes": 0, **kw})


def make_task(series_list, holdouts, cfg, horizon, **model):
    prepared = prepare(series_list, holdouts, cfg)
    net, features = build_model(prepared, cfg, horizon, hidden=8, **model)
    return ForecastTask(net, prepared, features, cfg)


def as_run(task: ForecastTask) -> ForecastRun:
    """The task's model (in eval mode) as a run, as load_forecaster gives one."""
    return ForecastRun.from_task(task)


def trained_run(series, horizon=4, epochs=2, **model) -> ForecastRun:
    task = make_task([series], [0], small_cfg(epochs=epochs), horizon, **model)
    Trainer(task, None, log=_quiet, progress=False).fit()
    return as_run(task)


# ----------------------------------------------------------------------------- windows.py
def test_the_scaler_is_fitted_on_the_training_rows_only(tmp_path):
    v, c = seasonal(60), np.random.default_rng(1).normal(5.0, 2.0, 60)
    wild_v, wild_c = v.copy(), c.copy()
    wild_v[48:] *= 1000  # the 12 held-out rows: nothing of them may reach the scaling
    wild_c[48:] = -1e6
    a = read(write_csv(tmp_path / "a.csv", v, covariates={"x": c}), ["x"])
    b = read(write_csv(tmp_path / "b.csv", wild_v, covariates={"x": wild_c}), ["x"])
    cfg = small_cfg()
    (pa,), (pb,) = prepare([a], [12], cfg), prepare([b], [12], cfg)
    assert pa.scaler == pb.scaler
    assert pa.scaler.mean == pytest.approx(v[:48].mean(), rel=1e-12)
    assert pa.scaler.std == pytest.approx(v[:48].std(), rel=1e-12)
    assert pa.scaler.cov_mean == pytest.approx([c[:48].mean()], rel=1e-12)
    assert pa.scaler.cov_std == pytest.approx([c[:48].std()], rel=1e-12)
    assert len(pa.series) == pa.meta.rows == 48 and pa.meta.holdout == 12


def test_the_log_transform_round_trips(tmp_path):
    v = seasonal(40)
    s = read(write_csv(tmp_path / "s.csv", v))
    scaler = Scaler.fit(s, "log")
    u = np.log(v)
    z = scaler.scale(s.values, s)
    np.testing.assert_allclose(z, (u - u.mean()) / u.std(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scaler.unscale(z), v, rtol=1e-12)
    plain = Scaler.fit(s)
    np.testing.assert_allclose(plain.unscale(plain.scale(s.values)), v, rtol=1e-12)


def test_a_constant_series_is_scaled_by_one(tmp_path):
    s = read(write_csv(tmp_path / "c.csv", np.full(30, 7.0), covariates={"x": np.full(30, 3.0)}),
             ["x"])
    for transform in ("none", "log"):
        scaler = Scaler.fit(s, transform)
        assert scaler.std == 1.0 and scaler.cov_std == [1.0]
        assert scaler.mean == pytest.approx(7.0 if transform == "none" else np.log(7.0))
        np.testing.assert_allclose(scaler.scale(s.values), 0.0, atol=1e-12)
    task = make_task([s], [0], small_cfg(window=6), 3)
    for a in (task.x, task.y, task.vx, task.vy):
        assert np.isfinite(a).all()
    np.testing.assert_array_equal(task.y, 0.0)  # nothing changes in a constant series


@pytest.mark.parametrize("bad", [[0.0], [-3.0, 0.0]])
def test_log_of_a_non_positive_value_names_the_row(tmp_path, bad):
    v = seasonal(30)
    v[7:7 + len(bad)] = bad  # rows 8 (and 9), 1-based
    s = read(write_csv(tmp_path / "s.csv", v))
    with pytest.raises(DataError, match=rf"--transform log: expected positive values, got "
                       rf"{bad[0]:g} at row 8"
                       + (r" \(and 1 more\)" if len(bad) > 1 else "$")) as info:
        Scaler.fit(s, "log")
    assert str(s.path) in str(info.value)
    # in the holdout only: training is fine, a forecast from the whole file is not
    v = seasonal(30)
    v[-1] = 0.0
    s = read(write_csv(tmp_path / "t.csv", v))
    (p,) = prepare([s], [3], small_cfg(transform="log"))
    assert p.scaler.transform == "log"
    with pytest.raises(DataError, match="got 0 at row 30$"):
        step_features(s, p.scaler, Features("M", 0, 2))


@pytest.mark.parametrize("relative", [False, True])
def test_windows_against_a_loop(relative):
    steps = np.random.default_rng(0).normal(size=(20, 3))  # [z, covariate, calendar]
    ends, L = np.array([4, 7, 12, 19]), 5
    x = windows(steps, ends, L, relative)
    assert x.shape == (L, len(ends), 3 + relative)
    for w, e in enumerate(ends):
        for s in range(L):
            row = steps[e - L + 1 + s]
            want = [row[0] - steps[e, 0], *row] if relative else list(row)
            assert x[s, w].tolist() == want


@pytest.mark.parametrize("relative", [False, True])
def test_targets_against_a_loop(relative):
    z = np.random.default_rng(1).normal(size=20)
    ends, H, stop = np.array([3, 10, 13, 15, 18]), 4, 17
    y, mask = targets(z, ends, H, stop, relative)
    for w, e in enumerate(ends):
        for h in range(1, H + 1):
            if e + h < stop:
                assert mask[w, h - 1]
                assert y[w, h - 1] == z[e + h] - (z[e] if relative else 0.0)
            else:  # at or beyond stop: no target
                assert not mask[w, h - 1] and y[w, h - 1] == 0.0
    assert mask[:4, 0].all() and not mask[-1].any()  # row 18 has no next value before 17


@pytest.mark.parametrize("season", [0, 5])
def test_seasonal_targets_against_a_loop(season):
    """With a season s each target is relative to the same season in the last cycle before
    it (the seasonal naive forecast): for h = 1..s the row t + h - s, for h = s+1..2s the
    row t + h - 2s, ...; without one, to the window's last row t."""
    z = np.random.default_rng(2).normal(size=40)
    ends, H, stop = np.array([9, 14, 20, 30]), 12, 38
    y, mask = targets(z, ends, H, stop, True, season)
    rows = base_rows(ends, H, season)
    for w, e in enumerate(ends):
        for h in range(1, H + 1):
            b = e if not season else e + h - season * int(np.ceil(h / season))
            assert rows[w, h - 1] == b and (b == e if not season else e - season < b <= e)
            assert y[w, h - 1] == (z[e + h] - z[b] if e + h < stop else 0.0)
    if season:  # the base row cycles through the last season of the window
        assert rows[0].tolist() == [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]


# ----------------------------------------------------------------------------- task.py
@pytest.mark.parametrize("relative", [True, False])
def test_training_targets_stop_before_the_validation_rows(tmp_path, relative):
    v = seasonal(60)
    s = read(write_csv(tmp_path / "s.csv", v))
    H, L, holdout = 6, 8, 12
    cfg = small_cfg(window=L, relative=relative)
    task = make_task([s], [holdout], cfg, H)
    rows = 60 - holdout
    V = max(H, round(0.1 * rows))  # the documented default
    fit = rows - V  # the first validation row (0-based)
    z = (v[:rows] - v[:rows].mean()) / v[:rows].std()  # scaled on the training rows

    # the training windows, built here: every row e with a full window and a next value
    # before the validation rows
    ends = [e for e in range(rows) if e >= L - 1 and e + 1 < fit]
    y = np.zeros((len(ends), H))
    mask = np.zeros((len(ends), H), bool)
    for w, e in enumerate(ends):
        for h in range(1, H + 1):
            if e + h < fit:
                y[w, h - 1] = z[e + h] - (z[e] if relative else 0.0)
                mask[w, h - 1] = True
    assert task.windows == len(ends)
    np.testing.assert_array_equal(task.mask, mask)
    np.testing.assert_allclose(task.y, y, rtol=0, atol=1e-12)
    z_col = 1 if relative else 0
    for w, e in enumerate(ends):
        np.testing.assert_allclose(task.x[:, w, z_col], z[e - L + 1:e + 1], atol=1e-12)
    assert max(e + h for e in ends for h in range(1, H + 1) if e + h < fit) == fit - 1

    # validation: the windows whose targets fall in rows fit .. rows-1 (none in the holdout)
    vends = list(range(fit - 1, rows - 1))
    vy = np.zeros((len(vends), H))
    vmask = np.zeros((len(vends), H), bool)
    for w, e in enumerate(vends):
        for h in range(1, H + 1):
            if fit <= e + h < rows:
                vy[w, h - 1] = z[e + h] - (z[e] if relative else 0.0)
                vmask[w, h - 1] = True
    np.testing.assert_array_equal(task.vmask, vmask)
    np.testing.assert_allclose(task.vy, vy, rtol=0, atol=1e-12)


def test_the_holdout_never_reaches_the_task(tmp_path):
    """Training with --holdout 12 is the run on the file without its last 12 rows: the same
    scaler, metas, windows, checkpoint arrays and weights."""
    v = seasonal(72)
    v_wild = v.copy()
    v_wild[60:] = 1e9  # whatever the holdout holds
    full = read(write_csv(tmp_path / "a" / "s.csv", v_wild))
    cut = read(write_csv(tmp_path / "b" / "s.csv", v[:60]))
    cfg = small_cfg(epochs=2)
    runs = []
    for series, holdout, out in ((full, 12, "ra"), (cut, 0, "rb")):
        task = make_task([series], [holdout], cfg, 4)
        Trainer(task, tmp_path / out, log=_quiet, progress=False).fit()
        runs.append((task, load_forecaster(tmp_path / out)))
    (ta, ra), (tb, rb) = runs
    assert ra.scalers == rb.scalers
    ma, mb = ra.series[0], rb.series[0]
    assert (ma.holdout, mb.holdout) == (12, 0)
    assert replace(ma, path="", holdout=0) == replace(mb, path="", holdout=0)
    for name in ("x", "y", "mask", "vx", "vy", "vmask"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)
    np.testing.assert_array_equal(ra.history[0].values, v[:60])
    np.testing.assert_array_equal(ra.history[0].times, rb.history[0].times)
    wa, _, arrays_a = load_checkpoint(tmp_path / "ra" / "checkpoint")
    wb, _, arrays_b = load_checkpoint(tmp_path / "rb" / "checkpoint")
    assert wa.keys() == wb.keys() and arrays_a.keys() == arrays_b.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)


def test_a_global_model_takes_windows_from_every_series(tmp_path):
    a = read(write_csv(tmp_path / "a.csv", seasonal(50, seed=1)))
    b = read(write_csv(tmp_path / "b.csv", seasonal(40, seed=2, level=1000.0),
                       times=months(40, 1990)))
    same = read(write_csv(tmp_path / "sub" / "a.csv", seasonal(45, seed=3)))
    cfg = small_cfg()
    both = make_task([a, b, same], [0, 5, 0], cfg, 3)
    alone = [make_task([s], [h], cfg, 3) for s, h in ((a, 0), (b, 5), (same, 0))]
    assert [p.meta.name for p in both.prepared] == ["a", "b", "a'"]
    assert both.windows == sum(t.windows for t in alone) > 0
    for name in ("x", "vx"):  # each series' windows, scaled on its own
        np.testing.assert_array_equal(getattr(both, name),
                                      np.concatenate([getattr(t, name) for t in alone], axis=1))
    for name in ("y", "mask", "vy", "vmask"):
        np.testing.assert_array_equal(getattr(both, name),
                                      np.concatenate([getattr(t, name) for t in alone]))
    assert [p.scaler for p in both.prepared] == [t.prepared[0].scaler for t in alone]
    assert both.prepared[1].scaler.mean > 900  # b's own level


def test_a_global_model_needs_one_frequency_and_the_same_covariates(tmp_path):
    a = read(write_csv(tmp_path / "a.csv", seasonal(40)))
    days = [str(np.datetime64("2000-01-01") + i) for i in range(40)]
    daily = read(write_csv(tmp_path / "d.csv", seasonal(40), times=days))
    with pytest.raises(DataError, match=r"d\.csv: a global model needs series of one frequency "
                       r"with the same covariates: expected M \[\] \(as .*a\.csv\), got D \[\]"):
        prepare([a, daily], [0, 0], small_cfg())
    cov = read(write_csv(tmp_path / "c.csv", seasonal(40), covariates={"x": np.ones(40)}),
               ["x"])
    with pytest.raises(DataError, match=r"expected M \[\] .* got M \['x'\]"):
        prepare([a, cov], [0, 0], small_cfg())


def test_a_window_longer_than_the_training_rows_says_what_to_change(tmp_path):
    s = read(write_csv(tmp_path / "s.csv", seasonal(40)))
    with pytest.raises(DataError, match=r"s\.csv: a window of 24 steps and at least one target "
                       r"need 25 training rows before the 4 validation rows, got 24 \(use a "
                       r"shorter --window, a smaller --valid or --holdout\)"):
        make_task([s], [12], small_cfg(window=24), 4)
    make_task([s], [12], small_cfg(window=24, valid=0), 4)  # 28 rows: enough without validation


# ----------------------------------------------------------------------------- predict.py
@pytest.fixture
def direct_run(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(48)))
    return trained_run(series, horizon=4), read(write_csv(tmp_path / "long.csv", seasonal(60)))


def test_rolling_is_a_forecast_from_the_end_at_every_row(direct_run):
    run, series = direct_run
    start = 50
    for h in (1, 3):
        result = rolling(run, 0, series, start, h)
        assert result["time"].tolist() == series.times[start:].tolist()
        for j, t in enumerate(range(start, len(series))):
            one = forecast_from_end(run, 0, series.head(t - h + 1), h)
            assert one["time"][-1] == series.times[t]
            for k in KEYS:
                assert result[k][j] == pytest.approx(one[k][h - 1], rel=1e-12, abs=1e-12), (h, t)


def test_a_seasonal_model_adds_the_seasonal_naive_forecast_back(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(72)))
    H, L, s = 15, 12, 12
    task = make_task([series], [0], small_cfg(window=L, seasonal=True, transform="log"), H)
    assert task.features.season == s
    z = task.prepared[0].z
    e = L - 1  # the first window: its targets against the seasonal naive forecast
    want = [z[e + h] - z[e + h - s * -(-h // s)] for h in range(1, H + 1)]
    np.testing.assert_allclose(task.y[0], want, rtol=0, atol=1e-12)
    Trainer(task, None, log=_quiet, progress=False).fit()
    run = as_run(task)
    fc = forecast_from_end(run, 0, series, H)
    steps = step_features(series, run.scalers[0], run.features)
    dist = run.model.distribution(windows(steps, np.array([71]), L, True))
    base = z[71 + np.arange(1, H + 1) - s * -(-np.arange(1, H + 1) // s)]
    np.testing.assert_allclose(fc["forecast"], run.scalers[0].unscale(
        dist["forecast"][0] + base), rtol=1e-12)
    for h in (1, 13):  # rolling forecasts are forecasts from the end, with the same bases
        result = rolling(run, 0, series, 60, h)
        for j, t in enumerate(range(60, 72)):
            one = forecast_from_end(run, 0, series.head(t - h + 1), h)
            for k in KEYS:
                assert result[k][j] == pytest.approx(one[k][h - 1], rel=1e-12), (h, t, k)


def test_a_recursive_seasonal_model_draws_around_the_value_a_season_earlier(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(60)))
    task = make_task([series], [0], small_cfg(window=12, seasonal=True), 1, mode="recursive")
    Trainer(task, None, log=_quiet, progress=False).fit()
    run = replace(as_run(task), calibration=None)
    scaler, S = run.scalers[0], 20000
    fc = forecast_from_end(run, 0, series, 1, samples=S, seed=0)
    steps = step_features(series, scaler, run.features)
    d = run.model.distribution(windows(steps, np.array([59]), 12, True))
    mu, sigma = d["forecast"][0, 0] + steps[59 + 1 - 12, 0], d["sigma"][0, 0]
    tol = 4 * 1.26 * sigma / np.sqrt(S)  # 4 standard errors of a sample median
    assert abs(scaler.scale(fc["forecast"])[0] - mu) < tol
    assert abs(steps[59, 0] - steps[48, 0]) > 3 * tol  # the last value as base would fail


def test_seasonal_targets_need_a_season_a_window_that_holds_it_and_relative_windows(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(60)))
    with pytest.raises(ValueError, match=r"--seasonal: the targets are relative to the value "
                       r"one season earlier, so a window must hold a season: expected "
                       r"--window >= 12, got 8"):
        make_task([series], [0], small_cfg(window=8, seasonal=True), 4)
    with pytest.raises(ValueError, match="expected relative windows, got --absolute"):
        make_task([series], [0], small_cfg(window=12, seasonal=True, relative=False), 4)
    cfg = small_cfg(window=12, seasonal=True)
    with pytest.raises(ValueError, match=r"--seasonal: expected a season of at least 2 steps "
                       r"\(from the frequency or --season N\), got none for M data"):
        build_model(prepare([series], [0], cfg, season=0), cfg, 4)


def test_a_direct_model_forecasts_at_most_its_horizon(direct_run):
    run, series = direct_run
    assert len(forecast_from_end(run, 0, series, 4)["forecast"]) == 4
    message = (r"--horizon: this model forecasts at most 4 steps \(it was trained with "
               r"--horizon 4\), got 5; train with a longer --horizon or --mode recursive")
    with pytest.raises(ValueError, match=message):
        forecast_from_end(run, 0, series, 5)
    with pytest.raises(ValueError, match=message):
        rolling(run, 0, series, 50, 5)


def _paths_by_hand(run: ForecastRun, series, horizon: int, samples: int, seed: int):
    """Recursive sample paths, one step at a time: the window of each path is rebuilt from the
    history and the path's own draws so far (relative windows, no covariates)."""
    L, scaler = run.train_config.window, run.scalers[0]
    times = np.concatenate([series.times, next_times(series.times[-1], series.freq, horizon)])
    cal = calendar_features(times, series.freq)  # (N + horizon, C)
    z = np.repeat(((series.values - scaler.mean) / scaler.std)[:, None], samples, axis=1)
    rng = np.random.default_rng(seed)
    for j in range(horizon):
        n = len(series) + j  # rows known to the path: the history and j draws
        wz = z[n - L:n]  # (L, S)
        wcal = np.broadcast_to(cal[n - L:n, None, :], (L, samples, cal.shape[1]))
        x = np.concatenate([(wz - wz[-1])[..., None], wz[..., None], wcal], axis=2)
        d = run.model.distribution(x)
        draw = wz[-1] + d["forecast"][:, 0] + d["sigma"][:, 0] * rng.standard_normal(samples)
        z = np.vstack([z, draw[None]])
    return scaler.unscale(z[len(series):])  # (horizon, S)


def test_recursive_forecasts_are_quantiles_of_sample_paths_that_widen(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(48)))
    run = replace(trained_run(series, horizon=1, epochs=3, mode="recursive"),
                  calibration=None)  # the paths' own quantiles (the calibrated: below)
    H, S = 8, 400
    fc = forecast_from_end(run, 0, series, H, samples=S, seed=3)
    paths = _paths_by_hand(run, series, H, S, seed=3)
    levels = {"lower_95": 0.025, "lower_80": 0.1, "forecast": 0.5, "upper_80": 0.9,
              "upper_95": 0.975}
    for k, q in levels.items():  # the forecast is the paths' median at each step
        np.testing.assert_allclose(fc[k], np.quantile(paths, q, axis=1), rtol=1e-9, err_msg=k)
    assert (np.diff([fc[k] for k in ("lower_95", "lower_80", "forecast", "upper_80",
                                     "upper_95")], axis=0) >= 0).all()
    width = fc["upper_95"] - fc["lower_95"]
    assert width[H // 2:].mean() > width[:H // 2].mean() and width[-1] > width[0]
    assert fc["time"].tolist() == next_times(series.times[-1], "M", H).tolist()
    # the same seed, the same paths; another seed, other ones
    again = forecast_from_end(run, 0, series, H, samples=S, seed=3)
    assert all(np.array_equal(fc[k], again[k]) for k in KEYS)
    assert not np.array_equal(fc["forecast"],
                              forecast_from_end(run, 0, series, H, samples=S, seed=4)["forecast"])
    # calibrated: each interval scaled about the median in scaled units, the median unmoved
    scaler = run.scalers[0]
    cal = forecast_from_end(replace(run, calibration={"80": 0.5, "95": 2.0}), 0, series, H,
                            samples=S, seed=3)
    np.testing.assert_allclose(cal["forecast"], fc["forecast"], rtol=1e-12)
    m = scaler.scale(fc["forecast"])
    for k, c in (("lower_80", 0.5), ("upper_80", 0.5), ("lower_95", 2.0), ("upper_95", 2.0)):
        np.testing.assert_allclose(scaler.scale(cal[k]) - m, c * (scaler.scale(fc[k]) - m),
                                   rtol=1e-9, atol=1e-12, err_msg=k)


def test_backtest_origins(direct_run):
    assert backtest_origins(120, 24, 6).tolist() == [95, 101, 107, 113]
    assert backtest_origins(120, 24, 5).tolist() == [95, 100, 105, 110, 115]
    assert backtest_origins(30, 1, 1).tolist() == [28]
    for rows, tail, every in ((120, 24, 6), (60, 13, 4), (50, 10, 10)):
        origins = backtest_origins(rows, tail, every)
        assert origins[0] == rows - tail - 1  # the first forecast is of the tail's first row
        assert (np.diff(origins) == every).all() and origins[-1] < rows - 1
        assert origins[-1] + every >= rows - 1  # no origin left out at the end
    run, series = direct_run  # 60 rows: an origin 2 rows from the end forecasts 2 steps
    fc = forecast_at(run, 0, series, 57, 4)
    assert len(fc["forecast"]) == 2 and fc["time"].tolist() == series.times[58:].tolist()
    full = forecast_from_end(run, 0, series.head(58), 4)
    assert all(np.array_equal(fc[k], full[k][:2]) for k in KEYS)


# ----------------------------------------------------------------------------- the engine
def test_a_signal_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    series = read(write_csv(tmp_path / "s.csv", seasonal(72)))
    cfg = small_cfg(epochs=3, batch_size=8)

    def task():
        return make_task([series], [6], cfg, 4, dropout=0.2)

    full = Trainer(task(), tmp_path / "full", log=_quiet, progress=False)
    full.fit()
    part_task = task()
    part = Trainer(part_task, tmp_path / "part", log=_quiet, progress=False)
    original = ForecastTask.step
    steps_per_epoch = -(-part_task.windows // 8)

    def step(self, batch):
        result = original(self, batch)
        if part.step + 1 == steps_per_epoch + 2:  # inside epoch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    ForecastTask.step = step
    try:
        with pytest.raises(Interrupted):
            part.fit()
    finally:
        ForecastTask.step = original
    resumed = Trainer(task(), tmp_path / "part", log=_quiet, progress=False)
    weights, state, arrays = load_checkpoint(tmp_path / "part" / "checkpoint")
    assert state["epoch"] == 2 and state["position"] == 2
    resumed.restore(state, weights, arrays)
    resumed.fit()

    def records(out):
        return [{k: v for k, v in json.loads(ln).items() if not k.endswith("_per_s")}
                for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]

    assert records(tmp_path / "part") == records(tmp_path / "full")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert asdict(full.task.prepared[0].scaler) == asdict(resumed.task.prepared[0].scaler)
