"""What forecasting prints and writes: metric tables with the baselines beside the model (and a
verdict in words), the forecast CSV, and the plot of history, forecast, intervals and actuals.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnnlab.data.series import Series, format_times
from rnnlab.io.atomic import atomic_write_text
from rnnlab.plots import pyplot
from rnnlab.tasks.forecast import metrics
from rnnlab.tasks.forecast.predict import KEYS, LEVELS, forecast_at, forecast_from_end
from rnnlab.tasks.forecast.task import ForecastRun

QUANTILES = tuple(LEVELS[k] for k in ("lower_95", "lower_80", "forecast", "upper_80",
                                      "upper_95"))


def _quantile_preds(fc: dict) -> tuple[np.ndarray, tuple]:
    """The five interval ends and the median as (n, 5) predictions at the levels QUANTILES."""
    cols = [fc[k] for k in ("lower_95", "lower_80", "forecast", "upper_80", "upper_95")]
    return np.stack([np.asarray(c, np.float64) for c in cols], axis=-1), QUANTILES


def baselines_at(history: np.ndarray, origins: np.ndarray, horizon: int, season: int | None
                 ) -> dict[str, dict]:
    """Each baseline's ``horizon``-step forecast made at each origin (0-based rows of
    ``history``, every value up to the origin known): arrays (len(origins), horizon)."""
    makers: dict[str, Callable] = {"persistence": metrics.persistence,
                                   "drift": metrics.drift}
    if season and season > 1 and origins.min() + 1 >= season:
        makers["seasonal_naive"] = lambda h, H: metrics.seasonal_naive(h, H, season)
    out = {}
    for name, make in makers.items():
        fcs = [make(history[:o + 1], horizon) for o in origins]
        out[name] = {k: np.stack([np.asarray(f[k]) for f in fcs]) for k in KEYS}
    return out


def score_table(y: np.ndarray, model: dict, baselines: dict, train: np.ndarray,
                season: int | None, name: str = "model") -> str:
    """The metrics table (model first, then the baselines) and the verdict."""
    forecasts = {name: model, **baselines}
    quantiles = {k: _quantile_preds(v) for k, v in forecasts.items()}
    rows = metrics.metrics_table(y, forecasts, train, season or 1, quantiles)
    return metrics.format_table(rows) + "\n" + metrics.verdict(rows, name)


def _model_label(run: ForecastRun) -> str:
    c = run.model.config
    return f"{c.cell.upper()} ({c.output})"


def holdout_report(run: ForecastRun, i: int, series: Series) -> str:
    """After training with a holdout: the forecast from the last training row over the held-out
    rows (up to the model's horizon), scored beside the baselines made at the same origin."""
    meta = run.series[i]
    origin = meta.rows - 1
    horizon = min(meta.holdout, run.model.config.horizon)
    if run.model.config.mode == "recursive":
        horizon = meta.holdout
    fc = forecast_from_end(run, i, series.head(meta.rows), horizon)
    y = series.values[meta.rows:meta.rows + horizon]
    base = {k: {j: v[j][0] for j in KEYS} for k, v in baselines_at(
        series.values, np.array([origin]), horizon, meta.season).items()}
    first, last = format_times(fc["time"][[0, -1]], meta.time_format)
    head = (f"holdout of {meta.name}: {horizon}-step forecast of {first} .. {last} (origin: "
            "the last training row)")
    return head + "\n" + score_table(y, {k: fc[k] for k in KEYS}, base,
                                     series.values[:meta.rows], meta.season, _model_label(run))


def evaluation_report(run: ForecastRun, i: int, series: Series, start: int, horizon: int,
                      result: dict) -> str:
    """``eval forecast``: the rolling ``horizon``-step-ahead forecasts of rows ``start``..,
    beside the baselines made from the same origins."""
    meta = run.series[i]
    origins = np.arange(start - horizon, len(series) - horizon)
    base = {k: {j: v[j][:, -1] for j in KEYS} for k, v in baselines_at(
        series.values, origins, horizon, meta.season).items()}
    y = series.values[start:]
    first, last = format_times(series.times[[start, -1]], series.time_format)
    head = (f"{series.path}: {len(y)} rolling {horizon}-step-ahead forecasts of "
            f"{meta.target}, {first} .. {last} (each from the actual values before it, no "
            "refit)")
    return head + "\n" + score_table(y, {k: result[k] for k in KEYS}, base,
                                     series.values[:start], meta.season, _model_label(run))


def backtest_report(run: ForecastRun, i: int, series: Series, tail: int, every: int,
                    horizon: int, refit: bool, samples: int = 1000, seed: int = 0,
                    progress: bool = True) -> str:
    """Forecasts of ``horizon`` steps from origins every ``every`` rows over the last ``tail``
    rows, pooled over origins and steps, beside the baselines from the same origins."""
    from rnnlab.tasks.forecast.predict import backtest_origins
    from rnnlab.training.progress import Progress

    meta = run.series[i]
    origins = backtest_origins(len(series), tail, every)
    ys, model, base = [], {k: [] for k in KEYS}, {}
    with Progress(len(origins), "backtest", enabled=progress) as bar:
        for o in origins:
            _backtest_origin(run, i, series, o, horizon, refit, samples, seed, ys, model, base)
            bar.update()
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    y = np.concatenate(ys)
    head = (f"backtest of {meta.name}: {len(origins)} origins every {every} rows over the "
            f"last {tail}, {horizon} steps each ({len(y)} forecasts; "
            f"{'refit before each origin' if refit else 'no refit'})")
    return head + "\n" + score_table(y, cat(model), {k: cat(v) for k, v in base.items()},
                                     series.values[:len(series) - tail], meta.season,
                                     _model_label(run))


def _backtest_origin(run, i, series, o, horizon, refit, samples, seed, ys, model, base) -> None:
    """One origin's forecast (after a refit on the rows up to it, if asked) and the
    baselines', appended to the running lists."""
    from rnnlab.tasks.forecast.refit import refit_run

    meta = run.series[i]
    h = min(horizon, len(series) - 1 - o)
    used, j = (refit_run(run, i, series.head(o + 1)), 0) if refit else (run, i)
    fc = forecast_at(used, j, series, o, h, samples, seed)
    ys.append(series.values[o + 1:o + 1 + h])
    for k in KEYS:
        model[k].append(fc[k])
    for name, b in baselines_at(series.values, np.array([o]), h, meta.season).items():
        for k in KEYS:
            base.setdefault(name, {j: [] for j in KEYS})[k].append(b[k][0])


# ----------------------------------------------------------------------------- files
def write_forecast_csv(path: str | os.PathLike, time_name: str, time_format: str, result: dict,
                       actual: np.ndarray | None = None) -> None:
    """time, forecast, lower_80, upper_80, lower_95, upper_95 (and actual), written
    atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([time_name, *KEYS, *(["actual"] if actual is not None else [])])
    times = format_times(result["time"], time_format)
    for j, t in enumerate(times):
        row = [t, *(f"{float(result[k][j]):.6g}" for k in KEYS)]
        if actual is not None:
            row.append(f"{float(actual[j]):.6g}")
        w.writerow(row)
    atomic_write_text(Path(path), buf.getvalue())


def plot_forecast(history: Series, result: dict, path: str | os.PathLike,
                  actual: tuple | None = None, title: str = "", context: int = 0) -> None:
    """History (its last ``context`` rows; 0: up to 5x the forecast's length), the forecast,
    its 80% and 95% bands and (when given) the actual values."""
    plt = pyplot()
    n = len(result["time"])
    keep = context or max(5 * n, 60)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(history.times[-keep:], history.values[-keep:], color="black", lw=1,
            label="history")
    t = result["time"]
    ax.fill_between(t, result["lower_95"], result["upper_95"], color="C0", alpha=0.18,
                    label="95% interval")
    ax.fill_between(t, result["lower_80"], result["upper_80"], color="C0", alpha=0.35,
                    label="80% interval")
    ax.plot(t, result["forecast"], color="C0", lw=1.5, label="forecast")
    if actual is not None:
        ax.plot(actual[0], actual[1], color="C3", lw=1, label="actual")
    ax.set_ylabel(history.target_name)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
