"""A probabilistic forecaster: a recurrent encoder over a window of the past and a direct
multi-horizon head that gives every one of the next H steps a distribution at once.

For a window x_1..x_T of input features (the scaled target, covariates, calendar features;
built by :mod:`rnnlab.tasks.forecast`):

    h_t   = LSTM^L(x_1..x_t)  (or GRU)          dropout between layers
    s     = W dropout(h_T) + b                   (B, H*K): the head, H horizons x K outputs
    a     = A x_{T-P+1..T, 0} + c                (B, H): the linear autoregressive "highway"
                                                 (``ar`` = P > 0, as in LSTNet, Lai et al. 2018)
                                                 over the window's first feature, the scaled
                                                 target; it moves the level of step h: added to
                                                 mu_h (gaussian; never to log_sigma_h, whose
                                                 scale must not follow the level) or to every
                                                 quantile of step h
    gaussian (K = 2):  mu_h, log_sigma_h = s[h, 0], s[h, 1]
                       loss = sum_h 0.5 log 2pi + log_sigma_h + 0.5 ((y_h - mu_h) / sigma_h)^2
                       (``beta`` > 0: each term times sigma_h^(2 beta), held constant)
    quantile (K = Q):  yhat_h,k = s[h, k]        one per quantile level q_k
                       loss = sum_h,k max(q_k u, (q_k - 1) u),  u = y_h - yhat_h,k

Backward mirrors it: the loss gives ds, the head gives dh_T (after dropout's mask), and the
recurrent layer takes a gradient that is zero at every step but the last.

``mode="recursive"`` trains the same network with H = 1; the task then forecasts further by
feeding each step's draw back in as the next input (sample paths, so the intervals widen as
errors compound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.layers import Dropout, Linear
from rnnlab.nn.losses import GaussianNLL, PinballLoss
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import GRU, LSTM
from rnnlab.validate import check_non_negative_int, check_number, check_positive_int

CELLS = {"lstm": LSTM, "gru": GRU}
OUTPUTS = ("gaussian", "quantile")
MODES = ("direct", "recursive")
QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)  # the median, and the 80% and 95% interval ends
Z80, Z95 = 1.2815515655446004, 1.959963984540054  # standard normal quantiles 0.9 and 0.975


@dataclass
class ForecasterConfig:
    """Architecture of a :class:`Forecaster` (saved with every checkpoint). ``inputs`` is the
    number of features per time step; ``horizon`` the steps the head predicts (1 when
    ``mode`` is "recursive")."""

    inputs: int
    horizon: int = 1
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    output: str = "gaussian"
    quantiles: tuple = QUANTILES
    mode: str = "direct"
    ar: int = 0  # the last P steps of the target feed a linear part beside the network (0: off)
    members: int = 1  # an ensemble of this many networks (see ForecasterEnsemble)
    beta: float = 0.0  # gaussian: the beta-NLL's weight sigma^(2 beta) (0: the plain NLL)
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for name in ("inputs", "horizon", "hidden", "layers", "members"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.ar = check_non_negative_int("ar", self.ar)
        for name, choices in (("cell", tuple(CELLS)), ("output", OUTPUTS), ("mode", MODES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: expected one of {', '.join(choices)}, got "
                                 f"{getattr(self, name)!r}")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {p!r}")
        self.quantiles = tuple(float(q) for q in self.quantiles)
        needed = {0.025, 0.1, 0.5, 0.9, 0.975}
        if self.output == "quantile" and not needed <= set(self.quantiles):
            raise ValueError(f"quantiles: expected levels that include {sorted(needed)} (the "
                             f"median and the 80% and 95% interval ends), got {self.quantiles}")
        self.beta = check_number("beta", self.beta, low=0.0, high=1.0)
        if self.beta and self.output != "gaussian":
            raise ValueError(f"beta: weights the gaussian NLL; expected 0 with output "
                             f"{self.output!r}, got {self.beta}")
        if self.mode == "recursive" and self.output != "gaussian":
            raise ValueError("mode 'recursive' feeds sampled values back: expected output "
                             f"'gaussian', got {self.output!r}")
        if self.mode == "recursive" and self.horizon != 1:
            raise ValueError(f"horizon: a recursive model predicts one step, got {self.horizon}")
        resolve_dtype(self.dtype)

    @property
    def outputs(self) -> int:
        """K, the numbers per horizon step."""
        return 2 if self.output == "gaussian" else len(self.quantiles)

    def num_parameters(self) -> int:
        if self.members > 1:
            return self.members * replace(self, members=1).num_parameters()
        n = CELLS[self.cell].count_parameters(self.inputs, self.hidden, self.layers)
        ar = (self.ar + 1) * self.horizon if self.ar else 0  # no ar layer when ar == 0
        return n + (self.hidden + 1) * self.horizon * self.outputs + ar

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantiles"] = list(self.quantiles)
        return d


class Forecaster(Module):
    """Recurrent encoder + direct head; parameters ``rnn.*`` and ``head.*`` (torch names)."""

    def __init__(self, config: ForecasterConfig, seed: Seed = None) -> None:
        super().__init__()
        self.config = config
        dtype = resolve_dtype(config.dtype)
        require_parameters(f"Forecaster({config.cell}, hidden={config.hidden})",
                           config.num_parameters(), dtype)
        self._rng = rng = make_rng(seed)
        self.dtype = dtype
        self.rnn = self._add_child("rnn", CELLS[config.cell](
            config.inputs, config.hidden, config.layers, dropout=config.dropout, dtype=dtype,
            seed=rng))
        self.drop = Dropout(config.dropout, seed=rng)
        self.head = self._add_child("head", Linear(config.hidden, config.horizon * config.outputs,
                                                   dtype=dtype, seed=rng))
        self.ar = (self._add_child("ar", Linear(config.ar, config.horizon, dtype=dtype, seed=rng))
                   if config.ar else None)
        self.loss = (GaussianNLL("sum", config.beta) if config.output == "gaussian"
                     else PinballLoss(config.quantiles, "sum"))
        self._T = 0

    def train(self, mode: bool = True) -> Forecaster:
        super().train(mode)
        self.drop.train(mode)
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (T, B, inputs) -> s (B, horizon, K): gaussian K = (mu, log_sigma), quantile K = one
        value per level."""
        cfg = self.config
        if x.ndim != 3 or x.shape[2] != cfg.inputs:
            raise ValueError(f"x: expected shape (T, B, {cfg.inputs}), got {x.shape}")
        if x.shape[0] < cfg.ar:
            raise ValueError(f"x: expected a window of at least ar={cfg.ar} steps, got "
                             f"{x.shape[0]}")
        out, _ = self.rnn(x)  # (T, B, hidden)
        self._T = x.shape[0]
        h = self.drop(out[-1])  # (B, hidden): the encoder's summary of the window
        s = self.head(h).reshape(len(h), cfg.horizon, cfg.outputs)  # (B, H, K)
        if self.ar is not None:
            a = self.ar(np.ascontiguousarray(x[-cfg.ar:, :, 0].T))  # (B, H)
            if cfg.output == "gaussian":
                s[..., 0] += a  # the mean only: the level does not scale sigma
            else:
                s += a[:, :, None]  # every quantile of a step moves with the level
        return s

    __call__ = forward

    def forward_loss(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
                     ) -> float:
        """The summed loss of targets y (B, horizon) (``mask`` (B, horizon): the ones that
        count; a window near the end of a series has fewer than H future values)."""
        s = self.forward(x)
        if y.shape != s.shape[:2]:
            raise ValueError(f"y: expected shape {s.shape[:2]}, got {y.shape}")
        y = y.astype(self.dtype, copy=False)
        if self.config.output == "gaussian":
            return float(self.loss.forward(s[..., 0], s[..., 1], y, mask))
        return float(self.loss.forward(s, y, mask))

    # ------------------------------------------------------------------ backward
    def backward_loss(self, scale: float = 1.0) -> None:
        """Gradients of ``scale`` x the last loss into ``grads``."""
        cfg = self.config
        if cfg.output == "gaussian":
            dmu, dlog_sigma = self.loss.backward(scale)
            ds = np.stack([dmu, dlog_sigma], axis=-1)  # (B, H, 2)
        else:
            ds = self.loss.backward(scale)  # (B, H, Q)
        B = ds.shape[0]
        if self.ar is not None:  # the linear part adds to mu (gaussian) or to every quantile
            self.ar.backward(np.ascontiguousarray(ds[..., 0]) if cfg.output == "gaussian"
                             else ds.sum(axis=2))
        dh = self.head.backward(ds.reshape(B, cfg.horizon * cfg.outputs))
        dh = self.drop.backward(dh)
        dout = np.zeros((self._T, B, cfg.hidden), self.dtype)
        dout[-1] = dh  # only the last step's output feeds the head
        self.rnn.backward(dout)

    # ------------------------------------------------------------------ prediction
    def distribution(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The forecast of each window as (B, horizon) arrays: "forecast" (the mean or the
        median), "lower_80", "upper_80", "lower_95", "upper_95", and "sigma" for a Gaussian
        head. Quantiles are sorted per step (crossing quantiles rearranged, which can only
        lower the pinball loss)."""
        s = self.forward(x).astype(np.float64)
        if self.config.output == "gaussian":
            mu, sigma = s[..., 0], np.exp(s[..., 1])
            return {"forecast": mu, "lower_80": mu - Z80 * sigma, "upper_80": mu + Z80 * sigma,
                    "lower_95": mu - Z95 * sigma, "upper_95": mu + Z95 * sigma, "sigma": sigma}
        q = np.sort(s, axis=-1)
        at = {level: q[..., k] for k, level in enumerate(self.config.quantiles)}
        return {"forecast": at[0.5], "lower_80": at[0.1], "upper_80": at[0.9],
                "lower_95": at[0.025], "upper_95": at[0.975]}


class ForecasterEnsemble(Module):
    """``members`` forecasters (children ``m0``, ``m1``, ...: each initialised from its own
    draws) trained together on the same batches: the loss is the sum of theirs, and each
    member's backward is its own. Small series make one network's forecast depend on its
    initialisation; the ensemble averages that away.

    The ensemble's distribution: for Gaussian heads, the moment-matched Gaussian of the equal
    mixture, mu = mean_k mu_k, sigma^2 = mean_k (sigma_k^2 + mu_k^2) - mu^2; for quantile heads,
    each quantile averaged over the members (quantile averaging).
    """

    def __init__(self, config: ForecasterConfig, seed: Seed = None) -> None:
        super().__init__()
        self.config = config
        self.dtype = resolve_dtype(config.dtype)
        self._rng = rng = make_rng(seed)
        one = replace(config, members=1)
        self.members = [self._add_child(f"m{k}", Forecaster(one, seed=rng))
                        for k in range(config.members)]
        for m in self.members:  # every dropout mask from the one generator (one RNG state)
            m._rng = rng

    def train(self, mode: bool = True) -> ForecasterEnsemble:
        super().train(mode)
        for m in self.members:
            m.train(mode)
        return self

    def forward_loss(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
                     ) -> float:
        return sum(m.forward_loss(x, y, mask) for m in self.members)

    def backward_loss(self, scale: float = 1.0) -> None:
        for m in self.members:
            m.backward_loss(scale)

    def distribution(self, x: np.ndarray) -> dict[str, np.ndarray]:
        dists = [m.distribution(x) for m in self.members]
        if self.config.output == "quantile":
            return {k: np.mean([d[k] for d in dists], axis=0) for k in dists[0]}
        mus = np.stack([d["forecast"] for d in dists])
        mu = mus.mean(axis=0)
        second = np.mean([d["sigma"] ** 2 for d in dists], axis=0) + (mus ** 2).mean(axis=0)
        sigma = np.sqrt(np.maximum(second - mu ** 2, 0.0))
        return {"forecast": mu, "lower_80": mu - Z80 * sigma, "upper_80": mu + Z80 * sigma,
                "lower_95": mu - Z95 * sigma, "upper_95": mu + Z95 * sigma, "sigma": sigma}


def make_forecaster(config: ForecasterConfig, seed: Seed = None
                    ) -> Forecaster | ForecasterEnsemble:
    """One forecaster, or an ensemble when ``config.members`` > 1."""
    if config.members > 1:
        return ForecasterEnsemble(config, seed)
    return Forecaster(config, seed)
