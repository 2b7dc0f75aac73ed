"""Forecasts from a trained model, in the series' own units, with 80% and 95% intervals.

- :func:`forecast_from_end`: the H steps after a series' last row (direct: one pass of the
  head; recursive: sample paths, each step's draw fed back as the next input).
- :func:`rolling`: the h-step-ahead forecast of every row from ``start`` on, each made from the
  actual values before it (no refit): what ``rnnlab eval forecast`` scores.
- :func:`backtest`: origins every K rows over the tail, H steps from each.

Every result is a dict of arrays: "forecast", "lower_80", "upper_80", "lower_95", "upper_95".
A run with an interval calibration (``run.calibration``, fitted on the validation tail) has its
intervals scaled about the forecast by it in the scaled units, before they are unscaled.
"""

from __future__ import annotations

import numpy as np

from rnnlab.data.series import Series, calendar_features, next_times
from rnnlab.data.text import DataError
from rnnlab.nn import no_grad
from rnnlab.tasks.forecast.calibrate import calibrated, choose_gamma
from rnnlab.tasks.forecast.task import ForecastRun, SeriesMeta, validation_rows
from rnnlab.tasks.forecast.windows import (
    base_rows,
    step_features,
    target_base,
    windows,
    with_relative,
)

KEYS = ("forecast", "lower_80", "upper_80", "lower_95", "upper_95")
LEVELS = {"lower_95": 0.025, "lower_80": 0.1, "forecast": 0.5, "upper_80": 0.9,
          "upper_95": 0.975}


def check_compatible(run: ForecastRun, i: int, series: Series) -> None:
    """A series to forecast must have the training series' columns and frequency."""
    meta = run.series[i]
    got = (series.time_name, series.target_name, list(series.covariate_names), series.freq)
    want = (meta.time_name, meta.target, list(meta.covariates), meta.freq)
    if got != want:
        raise DataError(f"{series.path}: expected the columns of the training data (time "
                        f"{want[0]!r}, target {want[1]!r}, covariates {want[2]}, frequency "
                        f"{want[3]}), got time {got[0]!r}, target {got[1]!r}, covariates "
                        f"{got[2]}, frequency {got[3]}")


def check_columns(meta: SeriesMeta, path: str, header: list[str]) -> None:
    """A file to forecast must have the training series' time, target and covariate columns
    (checked by name, so the error says which the run expects instead of what reading the
    file without them gave)."""
    if not {meta.time_name, meta.target, *meta.covariates} <= set(header):
        raise DataError(f"{path}: expected the columns of the training data (time "
                        f"{meta.time_name!r}, target {meta.target!r}, covariates "
                        f"{list(meta.covariates)}), got the columns {', '.join(header)}")


def check_horizon(run: ForecastRun, horizon: int) -> None:
    cfg = run.model.config
    if cfg.mode == "direct" and horizon > cfg.horizon:
        raise ValueError(f"--horizon: this model forecasts at most {cfg.horizon} steps (it was "
                         f"trained with --horizon {cfg.horizon}), got {horizon}; train with a "
                         "longer --horizon or --mode recursive")


def _from_z(run: ForecastRun, i: int, dist: dict, base: np.ndarray) -> dict:
    """Distribution in (relative) z units -> calibrated -> the series' units (the scaler is
    monotone, so interval ends map to interval ends)."""
    scaler = run.scalers[i]
    dist = calibrated(dist, run.calibration)
    return {k: scaler.unscale(dist[k] + base) for k in KEYS}


@no_grad()
def forecast_from_end(run: ForecastRun, i: int, series: Series, horizon: int,
                      samples: int = 1000, seed: int = 0) -> dict:
    """The ``horizon`` steps after the last row of ``series`` (+ "time": their timestamps)."""
    check_horizon(run, horizon)
    L = run.train_config.window
    if len(series) < L:
        raise DataError(f"{series.path}: a forecast reads the last {L} rows (--window), got "
                        f"{len(series)}")
    steps = step_features(series, run.scalers[i], run.features)
    end = np.array([len(series) - 1])
    if run.model.config.mode == "recursive":
        out = _sample_paths(run, i, series, steps, horizon, samples, seed)
    else:
        x = windows(steps, end, L, run.features.relative).astype(run.model.dtype)
        dist = run.model.distribution(x)
        base = target_base(steps[:, 0], end, horizon, run.features)[0]
        out = _from_z(run, i, {k: dist[k][0, :horizon] for k in KEYS}, base)
    out["time"] = next_times(series.times[-1], series.freq, horizon)
    return out


def _sample_paths(run: ForecastRun, i: int, series: Series, steps: np.ndarray, horizon: int,
                  samples: int, seed: int) -> dict:
    """Recursive forecasts: ``samples`` paths, each step drawn from N(mu, sigma) given the
    path so far; the forecast is the paths' median and the intervals their quantiles (in z
    units, where the calibration fitted on one-step forecasts then scales them)."""
    L, relative = run.train_config.window, run.features.relative
    rng = np.random.default_rng(seed)
    future = calendar_features(next_times(series.times[-1], series.freq, horizon), series.freq)
    track = np.empty((L + horizon, samples, steps.shape[1]))  # every path's steps, past + future
    track[:L] = steps[-L:, None, :]
    track[L:, :, 1:] = future[:, None, :]  # the calendar is known; z is drawn step by step
    b = base_rows(np.array([L - 1]), 1, run.features.season)[0, 0]  # the window's base row
    for j in range(horizon):
        window = track[j:j + L]  # (L, S, F'): the path so far
        dist = run.model.distribution(with_relative(window, relative).astype(run.model.dtype))
        mu, sigma = dist["forecast"][:, 0], dist["sigma"][:, 0]
        base = window[b, :, 0] if relative else 0.0
        track[L + j, :, 0] = mu + sigma * rng.standard_normal(samples) + base
    z = track[L:, :, 0]  # (H, S)
    dist = calibrated({k: np.quantile(z, q, axis=1) for k, q in LEVELS.items()},
                      run.calibration)
    return {k: run.scalers[i].unscale(v) for k, v in dist.items()}


@no_grad()
def rolling(run: ForecastRun, i: int, series: Series, start: int, horizon: int = 1,
            samples: int = 1000, seed: int = 0) -> dict:
    """The ``horizon``-step-ahead forecast of each row t >= ``start``, made at row t - horizon
    from the actual values up to it. Arrays of length len(series) - start, + "time"."""
    check_horizon(run, horizon)
    L = run.train_config.window
    if start - horizon < L - 1:
        raise DataError(f"{series.path}: the first forecast origin (row {start - horizon + 1}) "
                        f"needs {L} rows of history (--window), got {start - horizon + 1}")
    steps = step_features(series, run.scalers[i], run.features)
    ends = np.arange(start - horizon, len(series) - horizon)
    if run.model.config.mode == "recursive":
        rows = [_sample_paths(run, i, series.head(e + 1), steps[:e + 1], horizon, samples,
                              seed + e) for e in ends]
        out = {k: np.array([r[k][-1] for r in rows]) for k in KEYS}
    else:
        x = windows(steps, ends, L, run.features.relative).astype(run.model.dtype)
        dist = run.model.distribution(x)
        base = target_base(steps[:, 0], ends, horizon, run.features)[:, horizon - 1]
        out = _from_z(run, i, {k: dist[k][:, horizon - 1] for k in KEYS}, base)
    out["time"] = series.times[start:]
    return out


def choose_track_step(run: ForecastRun, i: int, series: Series, start: int, horizon: int = 1,
                      samples: int = 1000, seed: int = 0) -> tuple[float, dict, int]:
    """The online tracking step for rolling forecasts of the rows from ``start`` on
    (:func:`rnnlab.tasks.forecast.calibrate.choose_gamma`, 0: none), chosen on the V rows just
    before ``start``, V = the run's validation rows (fewer where the window's history runs
    out): rolling forecasts of those rows made as the evaluated ones are, from
    ``series.head(start)``, so no evaluated row is read. Returns (step, {step: score}, V).
    ValueError when fewer than 10 such rows exist."""
    V = min(validation_rows(run.train_config, run.series[i].rows, run.model.config.horizon),
            start - horizon - run.train_config.window + 1)
    if V < 10:
        raise ValueError(f"the step is chosen on the rows before the first forecast (the run's "
                         f"validation length): expected at least 10 with history before "
                         f"them, got {max(V, 0)}")
    tail = rolling(run, i, series.head(start), start - V, horizon, samples, seed)
    gamma, scores = choose_gamma(series.values[start - V:start], tail, lag=horizon)
    return gamma, scores, V


def backtest_origins(rows: int, tail: int, every: int) -> np.ndarray:
    """Forecast origins (the last row each forecast reads, 0-based): every ``every`` rows over
    the last ``tail`` rows, from the row before the tail on."""
    return np.arange(rows - tail - 1, rows - 1, every)


@no_grad()
def forecast_at(run: ForecastRun, i: int, series: Series, origin: int, horizon: int,
                samples: int = 1000, seed: int = 0) -> dict:
    """The forecast made at ``origin`` (0-based row), cut to the rows the series has."""
    h = min(horizon, len(series) - 1 - origin)
    return forecast_from_end(run, i, series.head(origin + 1), h, samples, seed)
