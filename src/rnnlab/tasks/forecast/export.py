"""A trained forecaster as an ONNX graph: a window of step features in, the forecast
distribution out (in the scaled units the network works in).

    window (T, B, F) float32    the features rnnlab builds for a window (the relative column
                                z_s - z_T first when ``relative``, then z, the scaled
                                covariates, the calendar features; see
                                :mod:`rnnlab.tasks.forecast.windows`)

Per network (the graph of :meth:`rnnlab.models.forecaster.Forecaster.forward`, dropout off)::

    h      = the last layer's state after the window's last step        (B, hidden)
    s      = Reshape(MatMul(h, W^T) + b, (0, horizon, K))                (B, horizon, K)
    a      = (window[T-P.., :, 0])^T A^T + c   (with ar = P > 0)         (B, horizon)
             added to mu (gaussian) or to every quantile
    gaussian: mu = s[..., 0], sigma = Exp(s[..., 1])
              forecast = mu, lower/upper_80 = mu -/+ 1.2816 sigma,
              lower/upper_95 = mu -/+ 1.96 sigma
    quantile: TopK(s, Q, ascending) (crossing quantiles rearranged); each output the level's
              column: 0.5 -> forecast, 0.1/0.9 -> 80%, 0.025/0.975 -> 95%

An ensemble of M networks: gaussian heads as the moment-matched mixture, mu = mean_k mu_k,
sigma = sqrt(max(mean_k (sigma_k^2 + mu_k^2) - mu^2, 0)); quantile heads averaged per level.
A run with an interval calibration (factors c_80, c_95 fitted on its validation tail; see
:mod:`rnnlab.tasks.forecast.calibrate`) has its intervals scaled about the forecast in the
graph: lower_a = m - c_a (m - lower_a), upper_a = m + c_a (upper_a - m), the 95% interval then
kept around the 80% one (Min, Max).

Outputs (B, horizon) each: forecast, lower_80, upper_80, lower_95, upper_95 (and sigma for a
gaussian head). In series units a value v of step h is ``unscale(v + base_h)``: base_h = 0 for
absolute targets, else z at row t of the window (its last) or, with a season s, at row
t + h - s ceil(h / s); unscale(u) = u * std + mean, then exp under the log transform (the JSON
holds each series' scaler and the features, season included). A recursive model (horizon 1) is
one step, uncalibrated: the sampling loop that feeds draws back, and the calibration of its
quantiles, run outside the graph (the JSON holds the factors).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rnnlab.io.onnx.export import write_model_and_json
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.layers import add_linear
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.forecaster import QUANTILES, Z80, Z95, Forecaster, ForecasterEnsemble
from rnnlab.tasks.forecast.predict import KEYS, LEVELS
from rnnlab.tasks.forecast.task import load_forecaster


def _scores(g: Graph, m: Forecaster, x: str, name: str) -> str:
    """s (B, horizon, K) of one network, the ar part added."""
    cfg = m.config
    _, finals = add_recurrent(g, m.rnn, x, name=f"{name}.rnn")
    h = g.op("Gather", [finals[0], g.constant("last_layer", np.array(cfg.layers - 1))],
             axis=0)[0]  # (B, hidden)
    s = add_linear(g, m.head, h, f"{name}.head")
    s = g.op("Reshape", [s, g.ints("shape", [0, cfg.horizon, cfg.outputs])])[0]
    if m.ar is None:
        return s
    big = np.iinfo(np.int64).max
    past = g.op("Slice", [x, g.ints("starts", [-cfg.ar, 0]), g.ints("ends", [big, 1]),
                          g.ints("axes", [0, 2])])[0]  # (P, B, 1): the last P scaled targets
    past = g.op("Reshape", [g.op("Transpose", [past], perm=[1, 0, 2])[0],
                            g.ints("shape", [0, -1])])[0]  # (B, P)
    a = g.op("Reshape", [add_linear(g, m.ar, past, f"{name}.ar"),
                         g.ints("shape", [0, cfg.horizon, 1])])[0]  # (B, horizon, 1)
    if cfg.output == "gaussian":  # the mean only: pad a with a zero for log_sigma
        a = g.op("Concat", [a, g.op("Mul", [a, g.constant("zero", np.float32(0))])[0]],
                 axis=2)[0]
    return g.op("Add", [s, a])[0]


def _column(g: Graph, s: str, k: int) -> str:
    """s[..., k] (B, horizon)."""
    return g.op("Gather", [s, g.constant("k", np.array(k, np.int64))], axis=2)[0]


def _mean(g: Graph, values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    total = g.op("Sum", values)[0]
    return g.op("Mul", [total, g.constant("inv_m", np.float32(1 / len(values)))])[0]


def _gaussian(g: Graph, scores: list[str]) -> dict[str, str]:
    mus = [_column(g, s, 0) for s in scores]
    sigmas = [g.op("Exp", [_column(g, s, 1)])[0] for s in scores]
    mu, sigma = mus[0], sigmas[0]
    if len(scores) > 1:  # the moment-matched Gaussian of the equal mixture
        mu = _mean(g, mus)
        second = _mean(g, [g.op("Add", [g.op("Mul", [s, s])[0], g.op("Mul", [m, m])[0]])[0]
                           for m, s in zip(mus, sigmas, strict=True)])
        var = g.op("Sub", [second, g.op("Mul", [mu, mu])[0]])[0]
        sigma = g.op("Sqrt", [g.op("Max", [var, g.constant("zero", np.float32(0))])[0]])[0]
    out = {"forecast": mu}
    for level, z in (("80", Z80), ("95", Z95)):
        width = g.op("Mul", [sigma, g.constant(f"z{level}", np.float32(z))])[0]
        out[f"lower_{level}"] = g.op("Sub", [mu, width])[0]
        out[f"upper_{level}"] = g.op("Add", [mu, width])[0]
    out["sigma"] = sigma
    return out


def _quantile(g: Graph, scores: list[str], quantiles: tuple) -> dict[str, str]:
    Q = len(quantiles)
    ranked = [g.op("TopK", [s, g.ints("q", [Q])], 2, axis=2, largest=0, sorted=1)[0]
              for s in scores]  # ascending along the levels
    q = _mean(g, ranked)
    return {key: _column(g, q, quantiles.index(LEVELS[key])) for key in KEYS}


def _calibrated(g: Graph, out: dict[str, str], factors: dict[str, float]) -> dict[str, str]:
    """:func:`rnnlab.tasks.forecast.calibrate.calibrated` as nodes."""
    out, m = dict(out), out["forecast"]
    for level, c in factors.items():
        c = g.constant(f"c{level}", np.float32(c))
        lo, hi = out[f"lower_{level}"], out[f"upper_{level}"]
        below = g.op("Mul", [c, g.op("Sub", [m, lo])[0]])[0]  # c (m - lower)
        above = g.op("Mul", [c, g.op("Sub", [hi, m])[0]])[0]  # c (upper - m)
        out[f"lower_{level}"] = g.op("Sub", [m, below])[0]
        out[f"upper_{level}"] = g.op("Add", [m, above])[0]
    out["lower_95"] = g.op("Min", [out["lower_95"], out["lower_80"]])[0]
    out["upper_95"] = g.op("Max", [out["upper_95"], out["upper_80"]])[0]
    return out


def forecaster_graph(model: Forecaster | ForecasterEnsemble, opset: int,
                     calibration: dict[str, float] | None = None) -> Graph:
    """The graph of ``model``'s :meth:`distribution`, calibrated by the factors
    ``calibration`` ({"80": c, "95": c}) when given (see the module docstring)."""
    cfg = model.config
    g = Graph("rnnlab_forecaster", check_opset(opset))
    x = g.input("window", "float32", ["time", "batch", cfg.inputs])
    members = model.members if isinstance(model, ForecasterEnsemble) else [model]
    scores = [_scores(g, m, x, f"m{k}") for k, m in enumerate(members)]
    out = (_gaussian(g, scores) if cfg.output == "gaussian"
           else _quantile(g, scores, tuple(cfg.quantiles or QUANTILES)))
    if calibration:
        out = _calibrated(g, out, calibration)
    for name, value in out.items():
        g.output(name, value, "float32", ["batch", cfg.horizon])
    return g


def export_forecaster(run: str | os.PathLike, out: str | os.PathLike,
                      opset: int = 17) -> list[Path]:
    """Export the forecaster of run directory ``run`` (its best validation weights) to ``out``
    and its description (features, scalers, window) to ``out`` with the suffix ``.json``."""
    r = load_forecaster(Path(run))
    cfg = r.model.config
    in_graph = r.calibration if cfg.mode == "direct" else None
    g = forecaster_graph(r.model, opset, in_graph)
    meta = {"task": "forecaster", **g.signature, "units": "z (scaled, relative to base)",
            "calibration": r.calibration, "calibrated_in_graph": bool(in_graph),
            "window": r.train_config.window, "horizon": cfg.horizon, "mode": cfg.mode,
            "output": cfg.output, "features": asdict(r.features),
            "series": [{"name": s.name, "target": s.target, "covariates": list(s.covariates),
                        "freq": s.freq, "scaler": asdict(sc)}
                       for s, sc in zip(r.series, r.scalers, strict=True)]}
    doc = f"rnnlab forecaster ({cfg.cell}, {cfg.output})"
    return [Path(out), write_model_and_json(g, out, meta, doc)]
