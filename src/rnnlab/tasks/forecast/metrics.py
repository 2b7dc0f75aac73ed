"""Forecast accuracy metrics and the benchmark forecasters a model has to beat (NumPy only).

Metrics, with y the actual values, yhat the forecasts (same shape, n values) and e = y - yhat:

    MAE       mean |e|
    RMSE      sqrt(mean e^2)
    sMAPE     200/n * sum |e| / (|y| + |yhat|)            percent, in [0, 200]; a term with
              y = yhat = 0 is 0/0 and counts as 0 (a perfect forecast of a zero)
    MASE      MAE / s,  s = mean_{t=m+1..T} |x_t - x_{t-m}|  on the training series x_1..x_T:
              the in-sample MAE of the seasonal naive forecast (m = 1: persistence). s = 0 (a
              constant, or exactly m-periodic, training series) gives nan, not a division by 0
    pinball   mean over values i and levels q of max(q u, (q - 1) u),  u = y_i - pred_{i,q}
    coverage  fraction of i with lower_i <= y_i <= upper_i
    interval  mean (upper - lower) + 2/(1-a) (max(lower - y, 0) + max(y - upper, 0)), the
    score     interval score of central level-a intervals (Gneiting and Raftery 2007)

Baselines forecast h = 1..H steps from the origin T, the last value of the history y_1..y_T:

    persistence     yhat_{T+h} = y_T                          sigma_h = sigma sqrt(h)
    seasonal_naive  yhat_{T+h} = y_{T+h-m(k+1)}, k = floor((h-1)/m)   sigma_h = sigma sqrt(k+1)
    drift           yhat_{T+h} = y_T + h (y_T - y_1)/(T-1)    sigma_h = sigma sqrt(h (1 + h/(T-1)))

(Hyndman & Athanasopoulos, Forecasting: Principles and Practice, 3rd ed., section 5.5.) sigma
is the sample standard deviation (ddof = 1) of the in-sample one-step residuals y_t - y_{t-1}
(persistence), y_t - y_{t-m} (seasonal naive) or y_t - y_{t-1} - slope (drift), as R's
forecast::naive, snaive and rwf compute it; with fewer than two residuals it is undefined and
the intervals are nan. Intervals are normal: yhat +- z sigma_h with z = 1.2816 (80%) and 1.96
(95%), the exact quantiles below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rnnlab.validate import check_positive_int

Z80 = 1.2815515655446004  # Phi^-1(0.90): an 80% central interval leaves 10% on each side
Z95 = 1.959963984540054  # Phi^-1(0.975)
BASELINES = ("persistence", "seasonal_naive", "drift")
INTERVAL_KEYS = ("lower_80", "upper_80", "lower_95", "upper_95")
Forecast = dict[str, np.ndarray]


def _pair(y: object, yhat: object, what: str = "forecasts") -> tuple[np.ndarray, np.ndarray]:
    """Both as float arrays of one non-empty shape."""
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    if y.shape != yhat.shape:
        raise ValueError(f"expected {what} of the actual values' shape {y.shape}, got {yhat.shape}")
    if y.size == 0:
        raise ValueError("expected at least one actual value, got an empty array")
    return y, yhat


def _series(x: object, what: str = "history") -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D {what}, got shape {x.shape}")
    return x


def mae(y: object, yhat: object) -> float:
    """Mean absolute error, mean |y - yhat|."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: object, yhat: object) -> float:
    """Root mean squared error, sqrt(mean (y - yhat)^2)."""
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def smape(y: object, yhat: object) -> float:
    """Symmetric MAPE in percent, 200/n * sum |y - yhat| / (|y| + |yhat|), in [0, 200].

    A term with y = yhat = 0 is 0/0 and counts as 0: the forecast is exact there."""
    y, yhat = _pair(y, yhat)
    num, den = np.abs(y - yhat), np.abs(y) + np.abs(yhat)
    # den = 0 only where y = yhat = 0, and there num = 0 as well
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(200.0 * np.mean(terms))


def naive_scale(train: object, m: int = 1) -> float:
    """MASE's denominator: mean_{t=m+1..T} |x_t - x_{t-m}| on the training series x_1..x_T."""
    x = _series(train, "training series")
    m = check_positive_int("m", m)
    if x.size <= m:
        raise ValueError(f"expected a training series longer than m = {m}, got {x.size} values")
    return float(np.mean(np.abs(x[m:] - x[:-m])))


def mase(y: object, yhat: object, train: object, m: int = 1) -> float:
    """Mean absolute scaled error, MAE / naive_scale(train, m) (m = 1 for non-seasonal data).

    Below 1: better than the in-sample seasonal naive forecast. A training series with scale 0
    (constant, or exactly m-periodic) has no naive error to scale by: nan."""
    scale = naive_scale(train, m)
    error = mae(y, yhat)
    return error / scale if scale > 0 else math.nan


def pinball(y: object, quantile_preds: object, quantiles: object) -> float:
    """Mean pinball (quantile) loss, mean_{i,q} max(q u, (q - 1) u) with u = y_i - pred_{i,q}.

    ``quantile_preds`` has y's shape plus a last axis, one entry per level in ``quantiles``."""
    y = np.asarray(y, dtype=float)
    preds, q = np.asarray(quantile_preds, dtype=float), np.asarray(quantiles, dtype=float)
    if q.ndim != 1 or q.size == 0 or not np.all((q > 0) & (q < 1)):
        raise ValueError(f"expected a non-empty 1-D array of levels in (0, 1), got {q.tolist()}")
    if preds.shape != y.shape + q.shape:
        raise ValueError(f"expected quantile forecasts of shape {y.shape + q.shape}, "
                         f"got {preds.shape}")
    if y.size == 0:
        raise ValueError("expected at least one actual value, got an empty array")
    u = y[..., None] - preds
    return float(np.mean(np.maximum(q * u, (q - 1) * u)))


def coverage(y: object, lower: object, upper: object) -> float:
    """Fraction of values with lower <= y <= upper; nan when a bound is nan (no interval)."""
    y, lower = _pair(y, lower, "lower bounds")
    _, upper = _pair(y, upper, "upper bounds")
    if np.isnan(lower).any() or np.isnan(upper).any():
        return math.nan
    return float(np.mean((lower <= y) & (y <= upper)))


def interval_score(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, a: float) -> float:
    """The mean interval score of the central level-``a`` intervals [lo, hi] over the finite
    targets y (Gneiting and Raftery 2007; lower is better): the width, plus 2 / (1 - a) times
    the distance by which y falls outside. It rewards narrow intervals and charges each miss by
    its size, so an interval that is always too wide and one that misses too often both lose."""
    y, lo, hi = (np.asarray(v, np.float64) for v in (y, lo, hi))
    keep = np.isfinite(y)
    y, lo, hi = y[keep], lo[keep], hi[keep]
    k = 2.0 / (1.0 - a)
    return float(np.mean((hi - lo) + k * np.maximum(lo - y, 0) + k * np.maximum(y - hi, 0)))


def _sd(residuals: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1); nan with fewer than two residuals."""
    return float(np.std(residuals, ddof=1)) if residuals.size >= 2 else math.nan


def _with_intervals(forecast: np.ndarray, sigma_h: np.ndarray | float) -> Forecast:
    """The forecast and its normal 80% and 95% intervals, forecast +- z sigma_h."""
    return {"forecast": forecast,
            "lower_80": forecast - Z80 * sigma_h, "upper_80": forecast + Z80 * sigma_h,
            "lower_95": forecast - Z95 * sigma_h, "upper_95": forecast + Z95 * sigma_h}


def persistence(history: object, horizon: int) -> Forecast:
    """Naive forecast yhat_{T+h} = y_T, sigma_h = sigma sqrt(h), sigma = sd(y_t - y_{t-1})."""
    y = _series(history)
    h = np.arange(1, check_positive_int("horizon", horizon) + 1)
    return _with_intervals(np.full(h.size, y[-1]), _sd(np.diff(y)) * np.sqrt(h))


def seasonal_naive(history: object, horizon: int, m: int) -> Forecast:
    """yhat_{T+h} = y_{T+h-m(k+1)} with k = floor((h-1)/m) (the same season's last value),
    sigma_h = sigma sqrt(k+1), sigma = sd(y_t - y_{t-m}). Needs at least m values."""
    y = _series(history)
    h = np.arange(1, check_positive_int("horizon", horizon) + 1)
    m = check_positive_int("m", m)
    if y.size < m:
        raise ValueError(f"expected a history of at least m = {m} values, got {y.size}")
    k = (h - 1) // m
    forecast = y[y.size + h - m * (k + 1) - 1]  # the 1-based index T+h-m(k+1), 0-based
    return _with_intervals(forecast, _sd(y[m:] - y[:-m]) * np.sqrt(k + 1))


def drift(history: object, horizon: int) -> Forecast:
    """yhat_{T+h} = y_T + h (y_T - y_1)/(T-1), sigma_h = sigma sqrt(h (1 + h/(T-1))).

    The residuals y_t - y_{t-1} - slope are the differences less their mean (the slope), so
    sigma is the sd of the differences. Needs at least two values."""
    y = _series(history)
    h = np.arange(1, check_positive_int("horizon", horizon) + 1)
    if y.size < 2:
        raise ValueError(f"expected a history of at least 2 values for a drift, got {y.size}")
    t = y.size
    forecast = y[-1] + h * (y[-1] - y[0]) / (t - 1)
    return _with_intervals(forecast, _sd(np.diff(y)) * np.sqrt(h * (1 + h / (t - 1))))


def _running_sd(r: np.ndarray) -> np.ndarray:
    """sd(r[:k], ddof=1) for k = 0..len(r), nan for k < 2, from running sums.

    The sums are of r - r[0]: shifting leaves the sd unchanged and keeps sum d^2 - (sum d)^2/k
    from cancelling away the digits when the residuals sit far from zero."""
    d = r - r[0]
    s1, s2 = np.cumsum(d), np.cumsum(d * d)
    k = np.arange(2, r.size + 1)
    out = np.full(r.size + 1, math.nan)
    out[2:] = np.sqrt(np.maximum((s2[1:] - s1[1:] ** 2 / k) / (k - 1), 0.0))
    return out


def rolling_one_step(series: object, start: int, baseline: str | Callable[..., Forecast],
                     m: int | None = None) -> Forecast:
    """One-step forecasts of series[t] from series[:t] for every t = start..n-1 (0-based).

    The same numbers as ``baseline(series[:t], 1)`` (and m) for each t, computed at once:
    persistence y_{t-1}; seasonal naive y_{t-m}; drift y_{t-1} + (y_{t-1} - y_0)/(t-1) with
    sigma_1 = sigma sqrt(1 + 1/(t-1)). Each sigma is the sd of the residuals inside series[:t].
    ``baseline`` is one of BASELINES or the function of that name."""
    y = _series(series, "series")
    name = baseline if isinstance(baseline, str) else getattr(baseline, "__name__", baseline)
    if name not in BASELINES:
        raise ValueError(f"expected a baseline in {BASELINES}, got {name!r}")
    lag = check_positive_int("m", m) if name == "seasonal_naive" else 1
    need = {"persistence": 1, "seasonal_naive": lag, "drift": 2}[name]
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or not (
            need <= start < y.size):
        raise ValueError(f"expected an integer start in [{need}, {y.size - 1}], got {start!r}")
    t = np.arange(start, y.size)
    sigma = _running_sd(y[lag:] - y[:-lag])[t - lag]  # series[:t] holds t - lag residuals
    if name == "drift":
        return _with_intervals(y[t - 1] + (y[t - 1] - y[0]) / (t - 1),
                               sigma * np.sqrt(1 + 1 / (t - 1)))
    return _with_intervals(y[t - lag], sigma)


def metrics_table(y: object, forecasts: Mapping[str, Mapping[str, object]], train: object,
                  m: int = 1,
                  quantiles_preds: Mapping[str, tuple[object, object]] | None = None,
                  ) -> list[dict]:
    """One row per named forecast: name, MAE, RMSE, sMAPE, MASE (scaled on ``train`` with
    period m), coverage_80 and coverage_95 (nan when the forecast has no intervals).

    ``quantiles_preds`` maps a name to (quantile_preds, quantiles); when given, every row also
    has ``pinball`` (nan for names it lacks)."""
    rows = []
    for name, fc in forecasts.items():
        yhat = fc["forecast"]
        row = {"name": name, "MAE": mae(y, yhat), "RMSE": rmse(y, yhat),
               "sMAPE": smape(y, yhat), "MASE": mase(y, yhat, train, m)}
        for level in ("80", "95"):
            lo, hi = fc.get(f"lower_{level}"), fc.get(f"upper_{level}")
            row[f"coverage_{level}"] = math.nan if lo is None or hi is None else coverage(
                y, lo, hi)
        if quantiles_preds is not None:
            preds = quantiles_preds.get(name)
            row["pinball"] = math.nan if preds is None else pinball(y, *preds)
        rows.append(row)
    return rows


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """The rows as an aligned text table: names left, numbers right (4 decimals)."""
    if not rows:
        raise ValueError("expected at least one row, got none")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [keys] + [[_cell(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    lines = []
    for line in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _gain(model: float, reference: float) -> float:
    """How much lower the model's RMSE is, in percent of the reference's."""
    return 100.0 * (1.0 - model / reference)


def verdict(rows: Sequence[Mapping[str, object]], model_name: str) -> str:
    """A sentence on whether ``model_name`` beats persistence, and the best other baseline
    present (BASELINES), in RMSE. The rows need one named "persistence"."""
    by_name = {row["name"]: row for row in rows}
    for name in (model_name, "persistence"):
        if name not in by_name:
            raise ValueError(f"expected a row named {name!r}, got rows {list(by_name)}")
    model, naive = by_name[model_name]["RMSE"], by_name["persistence"]["RMSE"]
    if not model < naive:  # a nan RMSE does not beat anything either
        return (f"the model does not beat persistence (RMSE {model:.4g} vs {naive:.4g}): "
                "its forecasts carry no skill over repeating the last value")
    text = f"the model beats persistence by {_gain(model, naive):.1f}% in RMSE"
    others = (by_name[n] for n in BASELINES if n in by_name and n != model_name)
    best = min(others, key=lambda r: r["RMSE"])
    if best["name"] == "persistence":
        return text + ", the best baseline here"
    if model < best["RMSE"]:
        return (text + f" and the best baseline, {best['name']}, by "
                f"{_gain(model, best['RMSE']):.1f}%")
    return (text + f", but not the best baseline, {best['name']} "
            f"(RMSE {model:.4g} vs {best['RMSE']:.4g})")
