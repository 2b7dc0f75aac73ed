"""Probabilistic forecasting losses with hand-written backward: GaussianNLL and PinballLoss.

Both follow :class:`~rnnlab.nn.layers.SoftmaxCrossEntropy`: ``forward`` checks its inputs,
computes the loss and caches what ``backward(scale)`` needs; ``backward`` returns ``scale``
times the gradient of the reduced loss, once per forward.

Reductions: "sum" and "mean" return a Python float (the terms are added in float64); "none"
returns the array of terms in the inputs' dtype, 0 where ``mask`` is False, and its backward
takes ``scale`` as a scalar or as the upstream gradient (an array of that shape). "mean" is the
mean of the terms that count: the sum divided by their number (1 when none counts, so an
all-masked batch gives 0 loss and 0 gradient).

``mask`` (bool, the shape of ``y``) selects what counts; the rest contributes exactly 0 and
gets exactly 0 gradient whatever it holds (``np.where``, never a multiplication, so a NaN
there stays there). ``y`` must be finite where it counts. Predictions are not checked for
finiteness (as in ``Linear``: a NaN inside a model is the trainer's to catch, at the loss,
where it shows). Gradients keep the inputs' dtype (float32 or float64); nothing is broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rnnlab.nn.layers import _no_cache
from rnnlab.validate import check_number, check_state

REDUCTIONS = ("sum", "mean", "none")
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected 'sum', 'mean' or 'none', got {reduction!r}")
    return reduction


def _check_float(name: str, x: object) -> np.ndarray:
    """The first array of a forward: a float32 or float64 numpy array (it sets the dtype)."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected a float32 or float64 numpy array, got {got}")
    return x


def _check_like(name: str, x: object, dtype: np.dtype, shape: tuple, what: str) -> np.ndarray:
    """Exactly ``dtype`` and ``shape`` (``what`` says where they come from): nothing is cast or
    broadcast. Finiteness is the caller's (only the counted entries need to be finite)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of {dtype} ({what}), got "
                        f"{type(x).__name__} (not a numpy array)")
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} ({what}), got {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got {x.shape}")
    return x


def _check_mask(mask: object, shape: tuple) -> np.ndarray | None:
    """None (everything counts) or a boolean array of exactly ``shape``."""
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != shape:
        got = (f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray)
               else type(mask).__name__)
        raise ValueError(f"mask: expected a boolean numpy array of shape {shape}, got {got}")
    return mask


def _check_finite_counted(name: str, x: np.ndarray, keep: np.ndarray | None) -> None:
    bad = ~np.isfinite(x) if keep is None else ~np.isfinite(x) & keep
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected finite values where the mask counts, got "
                         f"{x[where]} at index {where}")


def _reduce(terms: np.ndarray, count: int, reduction: str) -> float | np.ndarray:
    """"none": the terms; "sum": their sum (in float64); "mean": the sum / count (count >= 1)."""
    if reduction == "none":
        return np.asarray(terms)  # an array also for 0-d inputs (ufuncs return scalars)
    total = float(terms.sum(dtype=np.float64))
    return total if reduction == "sum" else total / max(count, 1)


def _factor(scale: object, reduction: str, count: int, shape: tuple, dtype: np.dtype):
    """d(reduced loss)/d(term) times the upstream ``scale``: a dtype scalar, or for "none" an
    array of ``shape`` when ``scale`` is one (the upstream gradient)."""
    if isinstance(scale, np.ndarray) and scale.ndim > 0:
        if reduction != "none":
            raise ValueError(f"scale: expected a number for reduction {reduction!r} (an array "
                             f"only for 'none'), got an array of shape {scale.shape}")
        return check_state("scale", scale, dtype, shape, allow_nonfinite=True)
    if isinstance(scale, np.ndarray):  # 0-d
        scale = scale.item()
    s = check_number("scale", scale, low=-math.inf)
    return dtype.type(s / max(count, 1) if reduction == "mean" else s)


def _times_inv_sigma(x: np.ndarray, log_sigma: np.ndarray, inv_sigma: np.ndarray) -> np.ndarray:
    """x * exp(-log_sigma), exact wherever the product is representable: 0 where x == 0 (not
    0 * inf), and where exp(-log_sigma) itself overflowed (rare: log_sigma < -709 in float64,
    < -88 in float32) sign(x) exp(log|x| - log_sigma), finite when |x| is small enough."""
    out = np.multiply(x, inv_sigma, out=np.zeros_like(x), where=x != 0)
    if np.isinf(inv_sigma).any():
        over = np.isinf(inv_sigma) & (x != 0)
        xo = x[over]
        out[over] = np.sign(xo) * np.exp(np.log(np.abs(xo)) - log_sigma[over])
    return out


class GaussianNLL:
    """Negative log-likelihood of ``y`` under N(mu, sigma^2), sigma = exp(log_sigma): the head
    outputs the mean and the log-scale::

        z          = (y - mu) * exp(-log_sigma)              the standardised residual
        nll        = 0.5 log(2 pi) + log_sigma + 0.5 z^2
        dnll/dmu   = -z * exp(-log_sigma)  = -(y - mu) / sigma^2
        dnll/dlog_sigma = 1 - z^2

    ``z`` is formed with exp(-log_sigma): there is no sigma to divide by (no tiny sigma then
    squared). ``log_sigma`` is unbounded and nothing is clipped: the loss and its gradient are
    computed exactly (to rounding) for every value. Where exp(-log_sigma) overflows, z and dmu
    are formed in log space, so they stay finite whenever they are representable (y == mu gives
    z = 0, dmu = 0, not 0 * inf); a loss or gradient whose exact value is beyond the float range
    is inf, with NumPy's overflow warning, never a silently bounded value. A model that wants
    bounds clamps log_sigma itself before the loss.

    ``reduction``: "sum" (the default), "mean" over the counted elements, or "none".

    ``beta`` in [0, 1] (default 0, the plain NLL above): the beta-NLL of Seitzer et al. (2022),
    each element's nll weighted by sigma^(2 beta) held constant (no gradient flows through the
    weight)::

        w          = exp(2 beta log_sigma)            = sigma^(2 beta), a constant
        loss       = w nll
        dloss/dmu  = -w (y - mu) / sigma^2             (beta = 1: -(y - mu), the squared error's)
        dloss/dlog_sigma = w (1 - z^2)

    The plain NLL's mean gradient shrinks where sigma is large, so a heteroscedastic series
    (sunspots: the spread grows with the level) has its mean fitted worst where the errors are
    largest; beta = 1 gives the mean the squared error's gradient (the RMSE's objective) while
    sigma still comes out where z^2 = 1. The reported loss is ``w nll``, whose derivative
    through w is left out by design: it is not the gradient above (torch: ``nll *
    sigma.detach() ** (2 * beta)``).
    """

    def __init__(self, reduction: str = "sum", beta: float = 0.0) -> None:
        self.reduction = _check_reduction(reduction)
        self.beta = check_number("beta", beta, low=0.0, high=1.0)
        self._cache = None

    def forward(self, mu: np.ndarray, log_sigma: np.ndarray, y: np.ndarray,
                mask: np.ndarray | None = None) -> float | np.ndarray:
        """mu, log_sigma, y, mask: the same shape (any); -> the reduced loss (a float) or, for
        "none", the per-element nll (0 where masked) in the inputs' dtype."""
        mu = _check_float("mu", mu)
        dt, shape = mu.dtype, mu.shape
        log_sigma = _check_like("log_sigma", log_sigma, dt, shape, "that of mu")
        y = _check_like("y", y, dt, shape, "that of mu")
        keep = _check_mask(mask, shape)
        _check_finite_counted("y", y, keep)
        r = y - mu  # the residual y - mu
        with np.errstate(over="ignore"):  # inf where it overflows: _times_inv_sigma copes
            inv_sigma = np.exp(-log_sigma)  # 1 / sigma
        z = _times_inv_sigma(r, log_sigma, inv_sigma)  # z = (y - mu) / sigma
        nll = dt.type(HALF_LOG_2PI) + log_sigma + dt.type(0.5) * z * z  # the nll above
        w = None
        if self.beta:
            with np.errstate(over="ignore"):
                w = np.exp(dt.type(2 * self.beta) * log_sigma)  # w = sigma^(2 beta), constant
            nll = w * nll
        if keep is not None:
            nll = np.where(keep, nll, dt.type(0))  # masked: contributes 0
        count = nll.size if keep is None else int(keep.sum())
        self._cache = (z, log_sigma, inv_sigma, w, keep, count)
        return _reduce(nll, count, self.reduction)

    __call__ = forward

    def backward(self, scale: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(dmu, dlog_sigma) = scale * d(reduced loss)/d(mu, log_sigma); 0 where masked. For
        "none" ``scale`` may be the upstream gradient: an array of the inputs' shape and dtype."""
        if self._cache is None:
            _no_cache(self)
        z, log_sigma, inv_sigma, w, keep, count = self._cache
        self._cache = None
        g = _factor(scale, self.reduction, count, z.shape, z.dtype)
        if w is not None:
            g = g * w  # beta-NLL: each element's gradient times its constant weight
        dz = _times_inv_sigma(z, log_sigma, inv_sigma)  # z / sigma = (y - mu) / sigma^2
        dmu = -dz * g  # dnll/dmu = -(y - mu) / sigma^2
        dlog_sigma = (1 - z * z) * g  # dnll/dlog_sigma = 1 - z^2
        if keep is not None:
            dmu = np.where(keep, dmu, z.dtype.type(0))  # masked: no gradient
            dlog_sigma = np.where(keep, dlog_sigma, z.dtype.type(0))
        return np.asarray(dmu), np.asarray(dlog_sigma)  # arrays also for 0-d inputs


class PinballLoss:
    """Quantile (pinball) loss at the levels q_1 < ... < q_K in (0, 1), one column of ``yhat``
    per level: for each element and k::

        u    = y - yhat_k
        rho  = max(q u, (q - 1) u)                      (q u when u > 0, (q - 1) u when u < 0)
        drho/dyhat_k = (1 - q) - w,   w = dmax/d(q u) = 1 if q u > (q - 1) u, 1/2 if equal, else 0

    so the gradient is -q where y is above the prediction and 1 - q where it is below. At a tie
    (u == 0, where rho has the subgradient interval [-q, 1 - q]) it is the midpoint 1/2 - q:
    the convention of torch's autograd of ``torch.maximum(q * u, (q - 1) * u)``, which gives each
    equal argument half the gradient. As there, the tie is decided on the two products, so a
    residual so small that both underflow to zero is a tie too.

    ``reduction``: "sum" (the default), "mean" over the counted (element, level) terms (the sum
    divided by K times the number of counted elements), or "none": the (..., K) terms.
    """

    def __init__(self, quantiles: Sequence[float], reduction: str = "sum") -> None:
        self.quantiles = self._check_quantiles(quantiles)
        self.reduction = _check_reduction(reduction)
        self._cache = None

    @staticmethod
    def _check_quantiles(quantiles: object) -> tuple[float, ...]:
        if isinstance(quantiles, str | bytes) or not isinstance(quantiles,
                                                                 Sequence | np.ndarray):
            raise TypeError(f"quantiles: expected a sequence of levels in (0, 1), got "
                            f"{type(quantiles).__name__}")
        levels = [check_number(f"quantiles[{i}]", q, 0.0, 1.0) for i, q in enumerate(quantiles)]
        if not levels:
            raise ValueError("quantiles: expected at least one level in (0, 1), got none")
        for i, q in enumerate(levels):
            if not 0.0 < q < 1.0:
                raise ValueError(f"quantiles[{i}]: expected a level in (0, 1) (open), got {q!r}")
            if i and q <= levels[i - 1]:
                raise ValueError(f"quantiles: expected strictly increasing levels, got "
                                 f"{levels[i - 1]!r} then {q!r} at position {i}")
        return tuple(levels)

    def forward(self, yhat: np.ndarray, y: np.ndarray,
                mask: np.ndarray | None = None) -> float | np.ndarray:
        """yhat (..., K), y (...), mask (...) -> the reduced loss (a float) or, for "none", the
        (..., K) terms (0 where masked) in the inputs' dtype."""
        yhat = _check_float("yhat", yhat)
        K = len(self.quantiles)
        if yhat.ndim < 1 or yhat.shape[-1] != K:
            raise ValueError(f"yhat: expected shape (..., K={K}) (one column per quantile), "
                             f"got {yhat.shape}")
        dt, shape = yhat.dtype, yhat.shape[:-1]
        y = _check_like("y", y, dt, shape, "that of yhat without its quantile axis")
        keep = _check_mask(mask, shape)
        _check_finite_counted("y", y, keep)
        q = np.asarray(self.quantiles, dt)  # (K,)
        u = y[..., None] - yhat  # u = y - yhat_k
        a = q * u  # q u
        b = (q - 1) * u  # (q - 1) u
        rho = np.maximum(a, b)  # rho = max(q u, (q - 1) u)
        w = np.where(a > b, dt.type(1), np.where(a == b, dt.type(0.5), dt.type(0)))  # dmax/da
        if keep is not None:
            rho = np.where(keep[..., None], rho, dt.type(0))  # masked: contributes 0
        count = rho.size if keep is None else int(keep.sum()) * K
        self._cache = (q, w, keep, count)
        return _reduce(rho, count, self.reduction)

    __call__ = forward

    def backward(self, scale: float | np.ndarray = 1.0) -> np.ndarray:
        """dyhat (..., K) = scale * d(reduced loss)/dyhat; 0 where masked. For "none" ``scale``
        may be the upstream gradient: an array of yhat's shape and dtype."""
        if self._cache is None:
            _no_cache(self)
        q, w, keep, count = self._cache
        self._cache = None
        g = _factor(scale, self.reduction, count, w.shape, w.dtype)
        dyhat = ((1 - q) - w) * g  # drho/dyhat = -q (u > 0), 1 - q (u < 0), 1/2 - q (tie)
        if keep is not None:
            dyhat = np.where(keep[..., None], dyhat, w.dtype.type(0))  # masked: no gradient
        return np.asarray(dyhat)
