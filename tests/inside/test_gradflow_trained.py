"""rnnlab gradflow --weights: the curves of a cell trained by ``rnnlab bench longdep --save``
next to the same model at its initialisation, the weight transfer and the file checks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import require_module

from rnnlab.cli.main import main
from rnnlab.data.synthetic import adding_problem
from rnnlab.inside import gradflow as gf
from rnnlab.io import load_file, save_file
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.tasks.longdep import (
    LongDepConfig,
    LongDepModel,
    build_model,
    init_gate_biases,
    load_model,
    make_batch,
    save_model,
    train_longdep,
)

T, H = 10, 8
EXPECTED = "expected a file written by 'rnnlab bench longdep --save'"


def _quiet(_line: str) -> None:
    pass


def _train(path, **overrides):
    kw = {"task": "adding", "T": T, "cell": "lstm", "hidden": H, "batch": 16, "steps": 40,
          "lr": 1e-2, "eval_every": 20, "test_size": 50, **overrides}
    train_longdep(LongDepConfig(**kw), log=_quiet, save=path)
    return path


@pytest.fixture(scope="module")
def lstm_file(tmp_path_factory):
    """An LSTM trained for 40 steps on adding T=10 (chrono init, seed 0, float32)."""
    return _train(tmp_path_factory.mktemp("trained") / "lstm10.safetensors")


def test_trained_flow_gives_trained_and_init_curves(lstm_file):
    trained, init = gf.trained_flow(lstm_file)
    assert trained["label"] == "lstm trained (adding T=10)"
    assert init["label"] == "lstm init (chrono)"
    for r in (trained, init):
        assert r["experiment"] == "weights"
        np.testing.assert_array_equal(r["distance"], np.arange(T + 1))
        assert r["dh_norm"].shape == r["dc_norm"].shape == (T + 1,)
        assert np.all(np.isfinite(r["dh_norm"])) and np.all(r["dh_norm"][1:] > 0)
        assert (r["config"]["T"], r["config"]["hidden"], r["config"]["batch"]) == (T, H, 16)
    assert trained["config"]["trained"] and not init["config"]["trained"]
    # same x and R: identical at d = 0 (dL/dh_T = R), different once the weights act
    assert trained["dh_norm"][0] == init["dh_norm"][0]
    assert not np.allclose(trained["dh_norm"][1:], init["dh_norm"][1:], rtol=1e-3)
    longer = gf.trained_flow(lstm_file, T=25, batch=3, seed=5)
    assert [r["dh_norm"].shape for r in longer] == [(26,), (26,)]
    assert longer[0]["config"]["lag"] == 25 and longer[0]["config"]["batch"] == 3


def test_init_curve_equals_an_untrained_model_built_by_hand(lstm_file):
    """The run's init, rebuilt here from its seed and --init without rnnlab.tasks.longdep's helpers:
    weights from the stream (seed, 1), chrono biases from (seed, 4) with T_max = T."""
    model = LongDepModel("adding", "lstm", H, dtype=np.float32,
                         seed=np.random.default_rng([0, 1]))
    init_gate_biases(model.rnn, "chrono", T, np.random.default_rng([0, 4]))
    cell = LSTMCell(2, H, dtype=np.float64)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        cell.parameters()[name][...] = model.rnn.parameters()[name + "_l0"]
    rng = np.random.default_rng(0)
    x, _ = adding_problem(16, T, rng)
    R = rng.standard_normal((16, H))
    expected = gf.measure(gf.Problem(cell, x.astype(np.float64), R))
    _, init = gf.trained_flow(lstm_file)
    np.testing.assert_array_equal(init["dh_norm"], expected["dh_norm"])
    np.testing.assert_array_equal(init["dc_norm"], expected["dc_norm"])
    # and the trained curve is that of the weights in the file, copied here by hand
    saved = load_file(lstm_file)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        cell.parameters()[name][...] = saved[f"rnn.{name}_l0"]
    trained = gf.measure(gf.Problem(cell, x.astype(np.float64), R))
    np.testing.assert_array_equal(gf.trained_flow(lstm_file)[0]["dh_norm"], trained["dh_norm"])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float64", 1e-12)])
@pytest.mark.parametrize("cell,task", [("rnn", "adding"), ("lstm", "copy"), ("gru", "adding"),
                                       ("gru", "copy")])
def test_loaded_cell_reproduces_the_models_forward(cell, task, dtype, tol, tmp_path):
    path = _train(tmp_path / "m.safetensors", task=task, T=5, cell=cell, hidden=6, steps=3,
                  eval_every=3, test_size=10, symbols=3, length=2, dtype=dtype)
    model, cfg, _ = load_model(path)
    step = gf.cell_from_layer(cfg.cell, model.rnn, dtype=dtype)
    assert isinstance(step, {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}[cell])
    x, _ = make_batch(cfg, 4, np.random.default_rng(1))
    inputs = model.inputs(x)
    assert inputs.shape == (cfg.steps_per_sequence, 4, 2 if task == "adding" else 5)
    hs = gf._forward(step, inputs, cell == "lstm")
    step.clear_tape()
    out, _ = model.rnn(inputs)
    assert hs.dtype == out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(hs, out, rtol=0, atol=tol)
    readout = model.readout(hs[-1] if task == "adding" else hs)
    pred = model(x)
    np.testing.assert_allclose(readout[:, 0] if task == "adding" else readout, pred, rtol=0,
                               atol=tol)


def test_copy_runs_the_whole_sequence(tmp_path):
    path = _train(tmp_path / "gru.safetensors", task="copy", T=4, cell="gru", hidden=5,
                  steps=2, eval_every=2, test_size=10, symbols=3, length=2)
    trained, init = gf.trained_flow(path, T=7)
    assert trained["label"] == "gru trained (copy T=4)" and "dc_norm" not in trained
    np.testing.assert_array_equal(trained["distance"], np.arange(7 + 2 * 2 + 1))
    assert trained["config"]["input_size"] == 5  # one-hot over blank, 3 symbols, delimiter


def test_cli_end_to_end(tmp_path, capsys):
    path, table = tmp_path / "lstm.safetensors", tmp_path / "flow.csv"
    assert main(["bench", "longdep", "--task", "adding", "--T", "12", "--cell", "lstm",
                 "--hidden", "6", "--steps", "20", "--batch", "8", "--eval-every", "10",
                 "--test-size", "20", "--save", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    assert main(["gradflow", "--weights", str(path), "--csv", str(table)]) == 0
    out = capsys.readouterr().out
    assert "trained on adding T=12" in out and "L = sum(h_T * R)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("weights ")]
    assert [r[1:4] + [r[-5]] for r in rows] == [
        ["lstm", "trained", "(adding", "dL/dh"], ["lstm", "trained", "(adding", "dL/dc"],
        ["lstm", "init", "(chrono)", "dL/dh"], ["lstm", "init", "(chrono)", "dL/dc"]]
    assert all(r[-2:] == ["-", "-"] for r in rows)  # d=100 and d=1000 lie beyond T=12
    with open(table, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 2 * 13
    assert {r["label"] for r in records} == {"lstm trained (adding T=12)", "lstm init (chrono)"}
    assert all(r["experiment"] == "weights" and r["dc_norm"] != "" for r in records)


def test_cli_plot(lstm_file, tmp_path, capsys):
    require_module("matplotlib")
    png = tmp_path / "trained.png"
    assert main(["gradflow", "--weights", str(lstm_file), "--T", "30", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra", [["--hidden", "4"], ["--cells", "rnn"],
                                   ["--experiment", "radius"]])
def test_cli_rejects_options_that_weights_ignores(extra, lstm_file, capsys):
    assert main(["gradflow", "--weights", str(lstm_file), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--weights: {extra[0]} cannot be combined" in err


def test_bad_files_are_rejected(lstm_file, tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, other)  # valid safetensors, no longdep metadata
    cfg = LongDepConfig(task="adding", T=T, cell="lstm", hidden=H)
    wrong = tmp_path / "wrong.safetensors"
    save_model(build_model(LongDepConfig(task="adding", T=T, cell="gru", hidden=H)), cfg,
               wrong)  # a GRU's tensors under an LSTM's config
    for path, why in ((garbage, "not a valid safetensors file"),
                      (other, "metadata has no format 'rnnlab.tasks.longdep'"),
                      (wrong, "do not match the config's model")):
        with pytest.raises(ValueError, match="expected a file written by") as info:
            gf.trained_flow(path)
        assert str(info.value).startswith(f"{path}: {EXPECTED}, but ")
        assert why in str(info.value)
        assert main(["gradflow", "--weights", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rnnlab: error: {path}: {EXPECTED}") and err.count("\n") == 1
    assert main(["gradflow", "--weights", str(lstm_file), "--T", "1"]) == 2
    assert "T: expected at least 2" in capsys.readouterr().err


def test_help_shows_the_pair_of_commands(capsys):
    with pytest.raises(SystemExit):
        main(["gradflow", "--help"])
    text = capsys.readouterr().out
    assert "--weights FILE" in text and "L = sum(h_T * R)" in text
    assert "rnnlab bench longdep --task adding --T 100 --cell lstm --save lstm100.safetensors" \
        in text
    assert "rnnlab gradflow --weights lstm100.safetensors --plot trained.png" in text
