"""The forecaster's ONNX graph equals ``distribution`` (gaussian and quantile heads, the ar
part, ensembles, LSTM and GRU), and ``rnnlab export`` of a trained forecasting run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import ort_session, require_module

from rnnlab.models.forecaster import ForecasterConfig, make_forecaster
from rnnlab.tasks.forecast.export import forecaster_graph
from rnnlab.tasks.forecast.predict import KEYS


@pytest.mark.parametrize("output, ar, members, cell, layers", [
    ("gaussian", 0, 1, "lstm", 1), ("gaussian", 3, 1, "gru", 2), ("gaussian", 2, 3, "lstm", 2),
    ("quantile", 0, 1, "gru", 1), ("quantile", 4, 1, "lstm", 2), ("quantile", 1, 2, "gru", 1),
])
def test_graph_equals_distribution(output, ar, members, cell, layers):
    onnx = require_module("onnx")
    cfg = ForecasterConfig(inputs=4, horizon=3, cell=cell, hidden=5, layers=layers,
                           output=output, ar=ar, members=members)
    model = make_forecaster(cfg, seed=7).eval()
    g = forecaster_graph(model, 17)
    data = g.to_bytes(producer_version="test")
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    x = np.random.default_rng(1).standard_normal((6, 5, 4))
    expected = model.distribution(x)
    got = dict(zip(g.signature["outputs"],
                   ort_session(data).run(None, {"window": x.astype(np.float32)}), strict=True))
    assert set(got) == set(KEYS) | ({"sigma"} if output == "gaussian" else set())
    for k, v in got.items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["gaussian", "quantile"])
def test_calibration_in_the_graph(output):
    """Factors that widen one level and narrow the other (so the 95% interval must be kept
    around the 80% one) give calibrated()'s intervals."""
    from rnnlab.tasks.forecast.calibrate import calibrated

    cfg = ForecasterConfig(inputs=2, horizon=3, hidden=4, output=output, members=2)
    model = make_forecaster(cfg, seed=1).eval()
    factors = {"80": 1.7, "95": 0.6}
    g = forecaster_graph(model, 17, factors)
    x = np.random.default_rng(2).standard_normal((5, 4, 2))
    got = dict(zip(g.signature["outputs"], ort_session(g.to_bytes(producer_version="test")).run(
        None, {"window": x.astype(np.float32)}), strict=True))
    expected = calibrated(model.distribution(x), factors)
    for k in KEYS:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-5)
    assert (got["lower_95"] <= got["lower_80"]).all()


@pytest.mark.parametrize("options", [[], ["--seasonal", "--ar", "3"]], ids=["plain", "seasonal"])
def test_export_of_a_trained_run(tmp_path, capsys, options):
    """The calibrated distribution from the graph, unscaled with the JSON's rule, is the
    forecast rnnlab makes from the end of the series."""
    from rnnlab.cli.main import main
    from rnnlab.tasks.forecast.calibrate import calibrated
    from rnnlab.tasks.forecast.predict import forecast_from_end
    from rnnlab.tasks.forecast.task import load_forecaster
    from rnnlab.tasks.forecast.windows import step_features, target_base, windows

    onnx = require_module("onnx")
    t = np.arange(96)
    values = 100 + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 1, 96)
    months = [f"{2000 + i // 12}-{i % 12 + 1:02d}" for i in t]
    csv = tmp_path / "sales.csv"
    rows = "".join(f"{m},{v:.3f}\n" for m, v in zip(months, values, strict=True))
    csv.write_text("month,sales\n" + rows, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(csv), "--holdout", "12", "--horizon", "4",
                 "--out", str(run), "--epochs", "2", "--hidden", "6", "--window", "13",
                 "--no-progress", *options]) == 0
    path = tmp_path / "f.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(path)]) == 0
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["window"] == 13 and meta["horizon"] == 4 and meta["task"] == "forecaster"
    r = load_forecaster(run)
    assert meta["calibration"] == r.calibration and meta["calibrated_in_graph"]
    assert meta["features"]["season"] == (12 if options else 0)

    session = ort_session(path.read_bytes())
    series, scaler = r.history[0], r.scalers[0]
    steps = step_features(series, scaler, r.features)
    ends = np.array([20, 50, len(series) - 1])
    x = windows(steps, ends, 13, r.features.relative)
    got = dict(zip(meta["outputs"], session.run(None, {"window": x.astype(np.float32)}),
                   strict=True))
    expected = calibrated(r.model.distribution(x.astype(r.model.dtype)), r.calibration)
    for k in KEYS:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-5)
    base = target_base(steps[:, 0], ends[-1:], 4, r.features)[0]
    ours = {k: scaler.unscale(got[k][-1] + base) for k in KEYS}
    theirs = forecast_from_end(r, 0, series, 4)
    for k in KEYS:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5)
