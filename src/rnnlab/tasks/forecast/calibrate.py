"""Interval calibration on the validation tail: one width factor per nominal level, fitted so
that the validation targets are covered as often as the level says (split-conformal scaling of
the model's own intervals, as in conformalized quantile regression, Romano et al. 2019).

For every validation target y, with forecast m and the interval [lo, hi] of level a (80 or 95),
all in the scaled (relative) units the network works in:

    r = (y - m) / (hi - m)   if y >= m        the distance from the forecast, in units of the
        (m - y) / (m - lo)   otherwise        interval's half-width on y's side
    c_a = r_(k), k = min(ceil((n + 1) a), n)  the k-th smallest of the n scores

and the calibrated interval is m - c_a (m - lo) .. m + c_a (hi - m): c_a > 1 widens it, c_a < 1
narrows it, and the forecast m does not move. On exchangeable data the calibrated interval covers
a new target with probability >= a; a series' validation tail is the nearest thing to the
future it has, not an exchangeable sample, so this is a correction of the model's scale, not a
guarantee. Every horizon step is pooled into one factor per level (a validation tail holds
few targets per step).
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.tasks.forecast.metrics import interval_score

LEVELS = {"80": 0.8, "95": 0.95}


def conformity_scores(y: np.ndarray, dist: dict, level: str) -> np.ndarray:
    """r for each target (arrays of one shape): the distance from the forecast in half-widths
    of the ``level`` interval on the target's side (inf where that half-width is 0 and y is
    off the forecast)."""
    m = np.asarray(dist["forecast"], np.float64)
    y = np.asarray(y, np.float64)
    above = y >= m
    half = np.where(above, dist[f"upper_{level}"] - m, m - dist[f"lower_{level}"])  # >= 0
    dev = np.abs(y - m)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(dev == 0, 0.0, dev / half)
    return np.where(np.isnan(r), np.inf, r)


def fit_calibration(y: np.ndarray, dist: dict, mask: np.ndarray | None = None
                    ) -> dict[str, float] | None:
    """{"80": c_80, "95": c_95} from the targets y and the model's distribution of them
    (``mask``: the targets that count); None when there are none. A factor that would be
    infinite (a zero-width interval missed) is left at 1."""
    keep = np.ones(np.shape(y), bool) if mask is None else np.asarray(mask, bool)
    n = int(keep.sum())
    if n == 0:
        return None
    factors = {}
    for level, a in LEVELS.items():
        r = np.sort(conformity_scores(y, dist, level)[keep])
        c = float(r[min(math.ceil((n + 1) * a), n) - 1])
        factors[level] = c if math.isfinite(c) and c > 0 else 1.0
    return factors


def calibrated(dist: dict, factors: dict[str, float] | None) -> dict:
    """The distribution with each level's interval scaled about the forecast by its factor
    (unchanged when ``factors`` is None); other keys as they were. The 95% interval is kept
    around the 80% one (two factors fitted on few targets could cross them)."""
    if not factors:
        return dist
    out = dict(dist)
    m = np.asarray(dist["forecast"])
    for level, c in factors.items():
        out[f"lower_{level}"] = m - c * (m - dist[f"lower_{level}"])
        out[f"upper_{level}"] = m + c * (dist[f"upper_{level}"] - m)
    out["lower_95"] = np.minimum(out["lower_95"], out["lower_80"])
    out["upper_95"] = np.maximum(out["upper_95"], out["upper_80"])
    return out


def tracked(y: np.ndarray, dist: dict, gamma: float, lag: int = 1) -> dict:
    """Rolling forecasts whose interval widths follow the misses seen so far: online quantile
    tracking of the conformity score (Angelopoulos, Candes and Tibshirani 2023, "Conformal PID
    control", its P part; the same idea as adaptive conformal inference, Gibbs and Candes 2021).
    For rows t = 0, 1, ... in time order, per level a, with c_0 = 1 (the intervals as given,
    calibrated or not) and k_t = t - lag + 1 the misses known when row t was forecast:

        interval_t   = m_t - c (m_t - lo_t) .. m_t + c (hi_t - m_t),   c = c_{max(k_t, 0)}
        log c_{t+1}  = log c_t + gamma (miss_t - (1 - a))            miss_t = y_t outside it

    A run of misses widens the intervals and a calm spell narrows them: over a long enough test
    the share of misses tends to 1 - a whatever the regime. The step is multiplicative (at
    gamma = 0.1 a miss of the 80% interval widens it by 8%, a hit narrows it by 2%), so the
    width can follow a change of volatility by a factor of 2-3 within weeks of daily data. A
    ``lag``-step-ahead forecast is made ``lag`` rows before its target, so it uses only the
    misses of targets up to its origin: nothing from the future. ``y`` and the arrays of
    ``dist`` are (n,) in time order; a NaN target (missing) leaves c as it is."""
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma: expected a positive step, got {gamma!r}")
    y = np.asarray(y, np.float64)
    m = np.asarray(dist["forecast"], np.float64)
    if y.shape != m.shape or y.ndim != 1:
        raise ValueError(f"y: expected shape {m.shape} (one target per forecast), got {y.shape}")
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise ValueError(f"lag: expected a positive integer (the forecast horizon), got {lag!r}")
    out = dict(dist)
    for level, a in LEVELS.items():
        lo, hi = np.asarray(dist[f"lower_{level}"]), np.asarray(dist[f"upper_{level}"])
        cs = [1.0]  # cs[k]: the factor after the misses of rows 0..k-1
        new_lo, new_hi = np.empty_like(m), np.empty_like(m)
        for t in range(len(m)):
            c = cs[max(t - lag + 1, 0)]
            new_lo[t] = m[t] - c * (m[t] - lo[t])
            new_hi[t] = m[t] + c * (hi[t] - m[t])
            if not np.isfinite(y[t]):  # a missing target says nothing
                cs.append(cs[-1])
                continue
            miss = not new_lo[t] <= y[t] <= new_hi[t]
            cs.append(cs[-1] * math.exp(gamma * (miss - (1.0 - a))))
        out[f"lower_{level}"], out[f"upper_{level}"] = new_lo, new_hi
    out["lower_95"] = np.minimum(out["lower_95"], out["lower_80"])
    out["upper_95"] = np.maximum(out["upper_95"], out["upper_80"])
    return out


# The steps ``--track auto`` chooses from; 0 is "no tracking" (the intervals as given).
GAMMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def choose_gamma(y: np.ndarray, dist: dict, lag: int = 1, grid: tuple = GAMMAS
                 ) -> tuple[float, dict[float, float]]:
    """The tracking step of ``grid`` whose :func:`tracked` intervals have the lowest interval
    score, summed over the 80% and 95% levels, on the targets ``y`` (rows before any that is
    evaluated: the validation tail); ties go to the smaller step. Returns (step, {step:
    score}); step 0 means the intervals as given."""
    scores = {}
    for gamma in grid:
        d = tracked(y, dist, gamma, lag) if gamma else dist
        scores[gamma] = sum(interval_score(y, d[f"lower_{level}"], d[f"upper_{level}"], a)
                            for level, a in LEVELS.items())
    return min(grid, key=lambda g: scores[g]), scores
