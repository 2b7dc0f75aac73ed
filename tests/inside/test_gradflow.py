"""rnnlab gradflow: the recorded dL/dh_t and dL/dc_t are right, and the curves behave as claimed.

The oracle for the recorded norms is independent of the tape walk: dL/dh_t is the ``dh0`` the
sequence layer (nn/kernels, not cells.py) returns when it runs on x[t:] from the state at t, and
central differences of that suffix loss check it once more.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
from conftest import require_module

import rnnlab
from rnnlab.cli import gradflow as cli_gf
from rnnlab.inside import gradflow as gf

LAYERS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}
SMALL = {"T": 12, "hidden": 5, "input_size": 3, "batch": 3, "seed": 7}


def _layer_for(cell: str, prob: gf.Problem):
    layer = LAYERS[cell](prob.cell.input_size, prob.cell.hidden_size, dtype=np.float64)
    layer.load_state_dict({k + "_l0": v for k, v in prob.cell.parameters().items()})
    return layer


def _state_at(layer, x, t, lstm):
    """(h_t, c_t) as (1, B, H) arrays, from the zero state."""
    B, H = x.shape[1], layer.hidden_size
    if t == 0:
        zero = np.zeros((1, B, H))
        return (zero, zero.copy()) if lstm else zero
    _, state = layer(x[:t])
    return state


def _suffix_grads(layer, prob, t, lstm):
    """dL/dh_t (and dL/dc_t) from the layer's backward over x[t:] started at the state at t."""
    state = _state_at(layer, prob.x, t, lstm)
    out, _ = layer(prob.x[t:], state)
    dout = np.zeros_like(out)
    dout[-1] = prob.R  # L = sum(h_T * R), and out[-1] is h_T
    _, dstate = layer.backward(dout)
    return dstate if lstm else (dstate, None)


def _mean_norm(g):
    return float(np.mean(np.linalg.norm(g.reshape(g.shape[-2], -1), axis=1)))


CASES = [
    ("rnn", {}),
    ("rnn", {"recurrent_scale": 1.3}),
    ("lstm", {}),
    ("lstm", {"recurrent_scale": 0.8, "forget_bias": 2.0}),
    ("gru", {}),
    ("gru", {"recurrent_scale": 1.2}),
]


@pytest.mark.parametrize(("cell", "extra"), CASES)
def test_recorded_norms_equal_the_layer_on_the_suffix(cell, extra):
    res = gf.gradient_flow(cell, **SMALL, **extra)
    prob = gf.make_problem(gf.FlowConfig(cell, **SMALL, **extra))
    layer, lstm, T = _layer_for(cell, prob), cell == "lstm", SMALL["T"]
    for t in (0, 1, 5, T - 1):
        dh, dc = _suffix_grads(layer, prob, t, lstm)
        np.testing.assert_allclose(res["dh_norm"][T - t], _mean_norm(dh), rtol=1e-10)
        if lstm:
            np.testing.assert_allclose(res["dc_norm"][T - t], _mean_norm(dc), rtol=1e-10)
    np.testing.assert_allclose(res["dh_norm"][0], _mean_norm(prob.R), rtol=1e-12)
    assert ("dc_norm" in res) == lstm
    np.testing.assert_array_equal(res["distance"], np.arange(T + 1))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_recorded_norm_matches_central_differences(cell):
    """Perturb each entry of h_t (and c_t) and rerun the suffix: the norm of that gradient."""
    cfg = {**SMALL, "T": 8, "hidden": 3, "batch": 2}
    t, T, lstm = 3, cfg["T"], cell == "lstm"
    res = gf.gradient_flow(cell, **cfg)
    prob = gf.make_problem(gf.FlowConfig(cell, **cfg))
    layer = _layer_for(cell, prob)
    state = _state_at(layer, prob.x, t, lstm)
    parts = list(state) if lstm else [state]

    def loss():
        out, _ = layer(prob.x[t:], tuple(parts) if lstm else parts[0])
        return float(np.sum(out[-1] * prob.R))

    eps = 1e-6
    for k, key in enumerate(["dh_norm", "dc_norm"][: len(parts)]):
        numeric = np.zeros_like(parts[k])
        for idx in np.ndindex(parts[k].shape):
            old = parts[k][idx]
            parts[k][idx] = old + eps
            up = loss()
            parts[k][idx] = old - eps
            down = loss()
            parts[k][idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(res[key][T - t], _mean_norm(numeric), rtol=1e-7)


def test_small_radius_vanishes_and_large_radius_explodes():
    kw = {"T": 100, "hidden": 8, "seed": 0}
    small = gf.gradient_flow("rnn", recurrent_scale=0.5, **kw)["dh_norm"]
    large = gf.gradient_flow("rnn", recurrent_scale=3.0, **kw)["dh_norm"]
    assert small[50] < 1e-6 * small[1]  # measured: about 3e-22 of it
    # radius 1.5 is the edge for a tanh RNN (it decays at H=8, wanders at H=32); 3 grows
    assert large[100] > 10 * large[1]  # measured: about 29x (seeds 0-4: 29x to 5e6x)
    assert np.all(np.isfinite(large))


def test_lstm_forget_bias_keeps_the_cell_gradient_alive():
    kw = {"T": 100, "hidden": 8, "seed": 0}
    lstm = gf.gradient_flow("lstm", forget_bias=3.0, **kw)
    rnn = gf.gradient_flow("rnn", **kw)
    assert lstm["dc_norm"][100] > 1e10 * rnn["dh_norm"][100]  # measured: 0.4 against 1e-30
    assert lstm["dc_norm"][100] > 1e-3 * lstm["dc_norm"][1]
    no_bias = gf.gradient_flow("lstm", **kw)
    assert lstm["dc_norm"][100] > 1e6 * no_bias["dc_norm"][100]


def test_clip_bounds_the_carried_gradient():
    kw = {"T": 100, "hidden": 8, "seed": 0, "recurrent_scale": 3.0}
    clipped = gf.gradient_flow("rnn", clip=1.0, **kw)["dh_norm"]
    free = gf.gradient_flow("rnn", **kw)["dh_norm"]
    assert np.all(clipped[1:] <= 1.0 + 1e-12)
    assert free[100] > 10.0
    lstm = gf.gradient_flow("lstm", clip=0.5, forget_bias=3.0, T=30, hidden=4)
    # the joint (dh, dc) norm of each sequence is clipped, so each part is within the bound
    assert np.all(lstm["dh_norm"][1:] <= 0.5 + 1e-12)
    assert np.all(lstm["dc_norm"][1:] <= 0.5 + 1e-12)


def test_overflow_is_recorded_as_inf_without_errors():
    res = gf.gradient_flow("rnn", T=1500, hidden=32, recurrent_scale=8.0, seed=0)
    d = res["dh_norm"]
    first = int(np.flatnonzero(~np.isfinite(d))[0])
    assert 100 < first and np.all(np.isinf(d[first:]))


def test_recurrent_scale_sets_each_gate_blocks_spectral_radius():
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        prob = gf.make_problem(gf.FlowConfig(cell, T=2, hidden=6, recurrent_scale=1.7))
        W = prob.cell.parameters()["weight_hh"]
        for k in range(G):
            assert gf.spectral_radius(W[k * 6:(k + 1) * 6]) == pytest.approx(1.7, rel=1e-10)


def test_forget_bias_shifts_only_the_forget_block():
    base = gf.make_problem(gf.FlowConfig("lstm", T=2, hidden=4)).cell.parameters()
    shifted = gf.make_problem(gf.FlowConfig("lstm", T=2, hidden=4, forget_bias=3.0))
    b = shifted.cell.parameters()
    delta = (b["bias_ih"] + b["bias_hh"]) - (base["bias_ih"] + base["bias_hh"])
    np.testing.assert_allclose(delta, np.r_[np.zeros(4), np.full(4, 3.0), np.zeros(8)])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cell": "tanh"}, ValueError, "cell: expected one of"),
        ({"cell": "rnn", "forget_bias": 1.0}, ValueError, "forget_bias: expected 0"),
        ({"cell": "rnn", "T": 0}, ValueError, "T: expected a positive integer"),
        ({"cell": "rnn", "recurrent_scale": -1.0}, ValueError, "recurrent_scale"),
        ({"cell": "rnn", "clip": 0.0}, ValueError, "clip: expected a positive"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        gf.gradient_flow(**kwargs)


def _small_sweep():
    return gf.sweep(T=20, hidden=4, batch=3)


def test_sweep_covers_the_standard_sets_and_writes_csv(tmp_path):
    results = _small_sweep()
    labels = [(r["experiment"], r["label"]) for r in results]
    assert [e for e, _ in labels].count("radius") == len(gf.RADII)
    assert ("clip", "rnn, radius 1.5, clip 1") in labels
    path = tmp_path / "flow.csv"
    gf.write_csv(results, path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["experiment", "label", "distance", "dh_norm", "dc_norm"]
    assert len(rows) == len(results) * 21
    lstm = [r for r in rows if r["label"] == "lstm, forget bias 3"]
    assert len(lstm) == 21 and float(lstm[5]["dc_norm"]) > 0
    assert all(r["dc_norm"] == "" for r in rows if r["label"] == "rnn")


def test_plot_writes_a_png(tmp_path):
    require_module("matplotlib")
    path = tmp_path / "flow.png"
    gf.plot(_small_sweep(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install rnnlab\[plots\]"):
        gf.plot([], tmp_path / "x.png")
    from rnnlab.cli.main import main

    assert main(["gradflow", "--T", "5", "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: plotting needs matplotlib: pip install rnnlab[plots]")
    assert "Traceback" not in err


def _parser():
    parser = argparse.ArgumentParser(prog="rnnlab")
    cli_gf.add_gradflow_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_runs_and_prints_the_table(tmp_path, capsys):
    csv_path = tmp_path / "g.csv"
    args = _parser().parse_args(["gradflow", "--T", "30", "--hidden", "4", "--cells",
                                 "rnn,lstm", "--csv", str(csv_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "d=10" in out and "d=1000" in out and "lstm, forget bias 3" in out
    cell_runs = [line.split()[1] for line in out.splitlines() if line.startswith("cells ")]
    assert cell_runs == ["rnn", "lstm", "lstm"]  # the LSTM has a dL/dh and a dL/dc row
    assert csv_path.exists()
    args = _parser().parse_args(["gradflow", "--T", "15", "--experiment", "forget"])
    assert cli_gf.gradflow_main(args) == 0
    assert "radius" not in capsys.readouterr().out


def test_cli_rejects_unknown_cells():
    with pytest.raises(SystemExit):
        _parser().parse_args(["gradflow", "--cells", "rnn,transformer"])
