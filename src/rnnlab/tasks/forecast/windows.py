"""From a series to the network's windows: scaling fitted on the training rows only, the input
features of each step, and the (window, targets) pairs.

For a series v_1..v_N (the target) with covariates c_t and calendar features k_t:

    u_t = log v_t  (--transform log)  or  v_t             multiplicative series become additive
    z_t = (u_t - mean) / std                               mean, std of the training rows' u
    a window ending at t (length L), relative to its last value (``relative``):
        x_s = [z_s - z_t, z_s, (c_s - mean_c) / std_c, k_s]   s = t-L+1 .. t
        y_h = z_{t+h} - z_t                                    h = 1 .. H
    without ``relative``: x_s = [z_s, ...] and y_h = z_{t+h}.
    with a season s (``season``, --seasonal): the targets are relative to the seasonal naive
    forecast, the value of the same season in the last cycle before t + 1,
        y_h = z_{t+h} - z_{b(t,h)},   b(t,h) = t + h - s ceil(h / s)
    (for log values: the log of the change since one season earlier).

A relative window lets a trending series (prices, passengers) leave the range it was trained on:
the network predicts changes from the last value, and sees the level as one more input. With a
season the network predicts the deviation from seasonal naive (for airline passengers, mostly
the year's growth): the seasonal shape is the data's own, not something a hundred windows
must teach. A constant training series has std 0; it is scaled by 1 instead (no division by
zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.data.series import Series, calendar_features
from rnnlab.data.text import DataError

TRANSFORMS = ("none", "log")


@dataclass
class Scaler:
    """The target's transform and standardisation, and each covariate's standardisation, all
    fitted on the training rows (saved in the checkpoint)."""

    transform: str = "none"
    mean: float = 0.0
    std: float = 1.0
    cov_mean: list = field(default_factory=list)
    cov_std: list = field(default_factory=list)

    @classmethod
    def fit(cls, series: Series, transform: str = "none") -> Scaler:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {', '.join(TRANSFORMS)}, got "
                             f"{transform!r}")
        u = _transform(series, series.values, transform)
        cov = series.covariates
        return cls(transform, float(u.mean()), _std(u), [float(m) for m in cov.mean(axis=0)],
                   [_std(c) for c in cov.T])

    def scale(self, values: np.ndarray, series: Series | None = None) -> np.ndarray:
        """v -> z (``series`` names the file in the error for a non-positive value under log)."""
        return (_transform(series, values, self.transform) - self.mean) / self.std

    def unscale(self, z: np.ndarray) -> np.ndarray:
        """z -> v (for log: exp, so a Gaussian's mean becomes the median of a log-normal)."""
        u = np.asarray(z, np.float64) * self.std + self.mean
        if self.transform == "log":
            return np.exp(np.minimum(u, 700.0))  # beyond exp(709) float64 overflows
        return u

    def scale_covariates(self, cov: np.ndarray) -> np.ndarray:
        if cov.shape[1] == 0:
            return cov
        return (cov - np.asarray(self.cov_mean)) / np.asarray(self.cov_std)


def _std(u: np.ndarray) -> float:
    s = float(u.std())
    return s if s > 1e-12 * max(1.0, float(np.abs(u).max(initial=0.0))) else 1.0


def _transform(series: Series | None, values: np.ndarray, transform: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if transform == "none":
        return values
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        where = f"{series.path}: " if series is not None else ""
        raise DataError(f"{where}--transform log: expected positive values, got "
                        f"{values[bad[0]]:g} at row {bad[0] + 1} (and {bad.size - 1} more)"
                        if bad.size > 1 else f"{where}--transform log: expected positive "
                        f"values, got {values[bad[0]]:g} at row {bad[0] + 1}")
    return np.log(values)


@dataclass
class Features:
    """What a window's steps hold (saved in the checkpoint; a series to forecast must agree)."""

    freq: str
    covariates: int
    calendar: int
    relative: bool = True
    season: int = 0  # targets relative to the value one season earlier (0: to the last value)

    @property
    def size(self) -> int:
        return (2 if self.relative else 1) + self.covariates + self.calendar


def step_features(series: Series, scaler: Scaler, features: Features) -> np.ndarray:
    """(N, F - 1 or F - 2): the absolute columns of every step, [z, covariates, calendar]; the
    relative column is added per window."""
    z = scaler.scale(series.values, series)
    cal = calendar_features(series.times, features.freq)
    return np.column_stack([z, scaler.scale_covariates(series.covariates), cal])


def windows(steps: np.ndarray, ends: np.ndarray, length: int, relative: bool) -> np.ndarray:
    """The windows ending at the rows ``ends`` (each >= length - 1): (length, len(ends), F)."""
    idx = ends[None, :] + np.arange(1 - length, 1)[:, None]  # (L, W)
    return with_relative(steps[idx], relative)  # (L, W, F)


def with_relative(x: np.ndarray, relative: bool) -> np.ndarray:
    """Windows of step features (L, W, F') with the relative column z_s - z_t put first."""
    if not relative:
        return x
    return np.concatenate([x[:, :, :1] - x[-1:, :, :1], x], axis=2)


def base_rows(ends: np.ndarray, horizon: int, season: int = 0) -> np.ndarray:
    """(len(ends), horizon): the row each target is relative to, t (the window's last) or,
    with a season s, b(t,h) = t + h - s ceil(h / s), the same season in the last cycle."""
    h = np.arange(1, horizon + 1)[None, :]
    if not season:
        return np.broadcast_to(ends[:, None], (len(ends), horizon))
    return ends[:, None] + h - season * -(-h // season)  # -(-h // s) = ceil(h / s)


def target_base(z: np.ndarray, ends: np.ndarray, horizon: int, features: Features
                ) -> np.ndarray:
    """(len(ends), horizon): what the network's targets are relative to, in z units (0 for
    absolute targets); a forecast adds it back."""
    if not features.relative:
        return np.zeros((len(ends), horizon))
    return z[base_rows(ends, horizon, features.season)]


def targets(z: np.ndarray, ends: np.ndarray, horizon: int, stop: int, relative: bool,
            season: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(y, mask), each (len(ends), horizon): z_{t+h} (minus its base when relative: z_t, or
    with a season z_{b(t,h)}) for the rows before ``stop``; the mask is False where
    t + h >= stop (y is then 0)."""
    idx = ends[:, None] + np.arange(1, horizon + 1)[None, :]
    mask = idx < stop
    y = np.where(mask, z[np.minimum(idx, len(z) - 1)], 0.0)
    if relative:
        y = np.where(mask, y - z[base_rows(ends, horizon, season)], 0.0)
    return y, mask
