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
