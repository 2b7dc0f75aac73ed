"""Long-time-lag benchmarks: the task generators, baselines, the model's gradient, a short
training run, the gate-bias inits, the summary line and ``rnnlab bench longdep``."""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
from numerics import central_difference

from rnnlab.cli.bench import add_bench_parser
from rnnlab.data.synthetic import (
    adding_problem,
    constant_baseline_mse,
    copy_baseline,
    copy_task,
    one_hot,
)
from rnnlab.io import load_file, load_metadata
from rnnlab.models.longdep import LongDepModel, init_gate_biases
from rnnlab.nn import GRU, LSTM, RNN
from rnnlab.nn.layers import SoftmaxCrossEntropy
from rnnlab.tasks.longdep import (
    LongDepConfig,
    build_model,
    format_last_line,
    load_model,
    save_model,
    train_longdep,
)

ADDING_LINE = re.compile(
    r"^task=adding T=\d+ cell=(rnn|lstm|gru) test_mse=\d+\.\d{4} baseline=\d\.\d{3} "
    r"solved=(yes|no)$")
COPY_LINE = re.compile(
    r"^task=copy T=\d+ cell=(rnn|lstm|gru) test_loss=\d+\.\d{4} baseline=\d\.\d{4} "
    r"test_acc=[01]\.\d{4} solved=(yes|no)$")


def _quiet(_line: str) -> None:
    pass


# ----------------------------------------------------------------------------- generators
@pytest.mark.parametrize("T", [2, 7, 50])
def test_adding_problem_markers_and_targets(T, rng):
    x, y = adding_problem(300, T, rng)
    assert x.shape == (T, 300, 2) and x.dtype == np.float32
    assert y.shape == (300,) and y.dtype == np.float32
    values, marks = x[:, :, 0], x[:, :, 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(marks)) <= {0.0, 1.0}
    assert (marks.sum(axis=0) == 2).all()  # exactly two markers per sequence
    half = T // 2
    assert (marks[:half].sum(axis=0) == 1).all()  # one in the first half [0, T//2)
    assert (marks[half:].sum(axis=0) == 1).all()  # one in the second half [T//2, T)
    np.testing.assert_allclose(y, (values * marks).sum(axis=0), rtol=1e-6)


def test_copy_task_layout(rng):
    T, S, L = 6, 4, 3
    x, y = copy_task(50, T, rng, symbols=S, length=L)
    assert x.shape == y.shape == (T + 2 * L, 50)
    assert x.dtype == y.dtype == np.int64
    assert ((x[:L] >= 1) & (x[:L] <= S)).all()  # the data symbols
    assert (x[L:L + T - 1] == 0).all()  # T - 1 blanks
    assert (x[L + T - 1] == S + 1).all()  # the delimiter
    assert (x[L + T:] == 0).all()  # L blanks while the model writes
    assert (y[:T + L] == 0).all()  # blank targets until the delimiter has been read
    np.testing.assert_array_equal(y[T + L:], x[:L])  # then the symbols, in order
    assert len(np.unique(x[:L])) == S  # all symbols occur


def test_generators_reject_bad_arguments(rng):
    with pytest.raises(ValueError, match="T: expected at least 2"):
        adding_problem(4, 1, rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        copy_task(4, 5, 0)
    with pytest.raises(ValueError, match="length: expected a positive integer"):
        copy_task(4, 5, rng, length=0)


# ----------------------------------------------------------------------------- baselines
def test_adding_baseline_is_one_sixth(rng):
    _, y_train = adding_problem(100_000, 10, rng)
    _, y_test = adding_problem(100_000, 30, rng)
    assert abs(float(y_train.mean()) - 1.0) < 0.01
    assert constant_baseline_mse(y_test, y_train) == pytest.approx(1 / 6, abs=0.004)


def test_copy_baseline_is_the_memoryless_models_loss(rng):
    T, S, L = 20, 8, 10
    assert copy_baseline(100) == pytest.approx(10 * math.log(8) / 120)
    _, y = copy_task(40, T, rng, symbols=S, length=L)
    logits = np.full((*y.shape, S + 1), -1e4)  # blank for sure where blanks are due ...
    logits[:T + L, :, 0] = 0.0
    logits[T + L:, :, 1:] = 0.0  # ... and a uniform guess over the symbols at the end
    loss = SoftmaxCrossEntropy()(logits, y)
    assert loss == pytest.approx(copy_baseline(T, S, L), rel=1e-9)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("task", ["adding", "copy"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_whole_model_gradient_matches_central_differences(task, cell, rng):
    model = LongDepModel(task, cell, hidden=3, symbols=3, dtype=np.float64, seed=7)
    if task == "adding":
        x, y = adding_problem(2, 5, rng)
    else:
        x, y = copy_task(2, 3, rng, symbols=3, length=2)
    model.zero_grad()
    model.loss(x, y)
    model.backward()
    grads, params = model.grads, model.parameters()
    for name in ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                 "readout.weight", "readout.bias"]:
        p = params[name]
        for flat in rng.choice(p.size, size=min(3, p.size), replace=False):
            index = np.unravel_index(flat, p.shape)
            numeric = central_difference(lambda: model.loss(x, y), p, index)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


# ----------------------------------------------------------------------------- training
def test_short_training_beats_the_baseline():
    cfg = LongDepConfig(task="adding", T=5, cell="lstm", hidden=32, batch=64, steps=150,
                        lr=1e-2, eval_every=75, test_size=500, stop_when_solved=False)
    result = train_longdep(cfg, log=_quiet)  # test MSE / baseline 0.23-0.31 over seeds 0-4
    assert result["steps"] == 150
    assert [s for s, _, _ in result["curve"]] == [75, 150]
    assert 0.12 < result["baseline"] < 0.21
    assert result["test_mse"] < 0.5 * result["baseline"]
    assert result["wall_s"] > 0 and result["config"]["T"] == 5


def test_training_is_reproducible_from_the_seed():
    cfg = LongDepConfig(task="copy", T=3, cell="gru", hidden=8, batch=8, steps=6, eval_every=3,
                        test_size=20, symbols=3, length=2)
    a, b = train_longdep(cfg, log=_quiet), train_longdep(cfg, log=_quiet)
    assert a["curve"] == b["curve"]
    assert set(a) >= {"test_loss", "test_acc", "baseline", "solved", "solved_step", "wall_s"}


# ----------------------------------------------------------------------------- inits
def test_chrono_init_sets_the_lstm_forget_and_input_rows():
    H, t_max = 16, 50
    layer = LSTM(2, H, seed=0)
    before = layer.state_dict()
    init_gate_biases(layer, "chrono", t_max, np.random.default_rng(0))
    b_ih, b_hh = layer.parameters()["bias_ih_l0"], layer.parameters()["bias_hh_l0"]
    b_f = b_hh[H:2 * H]
    assert (b_f >= 0).all() and (b_f <= math.log(t_max - 1) + 1e-6).all()
    assert b_f.std() > 0.3  # spread over the time scales, not one value
    np.testing.assert_array_equal(b_hh[:H], -b_f)  # b_i = -b_f
    assert (b_ih[:2 * H] == 0).all()  # the summed bias is exactly the chrono value
    np.testing.assert_array_equal(b_hh[2 * H:], before["bias_hh_l0"][2 * H:])  # g, o untouched
    np.testing.assert_array_equal(b_ih[2 * H:], before["bias_ih_l0"][2 * H:])
    for name in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(layer.parameters()[name], before[name])


def test_chrono_init_sets_the_gru_update_rows_and_leaves_rnn_alone():
    H = 8
    gru = GRU(2, H, seed=0)
    before = gru.state_dict()
    init_gate_biases(gru, "chrono", 30, np.random.default_rng(1))
    b_ih, b_hh = gru.parameters()["bias_ih_l0"], gru.parameters()["bias_hh_l0"]
    assert (b_hh[H:2 * H] >= 0).all() and (b_ih[H:2 * H] == 0).all()  # z
    for rows in (slice(0, H), slice(2 * H, 3 * H)):  # r and n untouched
        np.testing.assert_array_equal(b_hh[rows], before["bias_hh_l0"][rows])
        np.testing.assert_array_equal(b_ih[rows], before["bias_ih_l0"][rows])
    rnn = RNN(2, H, seed=0)
    before = rnn.state_dict()
    init_gate_biases(rnn, "chrono", 30, np.random.default_rng(1))
    for name, value in rnn.parameters().items():
        np.testing.assert_array_equal(value, before[name])


def test_forget1_adds_one_to_the_forget_bias():
    H = 4
    layer = LSTM(2, H, seed=0)
    before = layer.state_dict()["bias_hh_l0"]
    init_gate_biases(layer, "forget1", 10, np.random.default_rng(0))
    after = layer.parameters()["bias_hh_l0"]
    np.testing.assert_allclose(after[H:2 * H], before[H:2 * H] + 1.0)
    np.testing.assert_array_equal(np.delete(after, np.s_[H:2 * H]),
                                  np.delete(before, np.s_[H:2 * H]))


def test_bad_config_and_init_raise():
    with pytest.raises(ValueError, match="task: expected one of adding, copy"):
        LongDepConfig(task="adder")
    with pytest.raises(ValueError, match="init: expected one of"):
        LongDepConfig(init="xavier")
    with pytest.raises(ValueError, match="clip: expected a number >= 0"):
        LongDepConfig(clip=-1.0)
    with pytest.raises(ValueError, match="init: expected one of"):
        init_gate_biases(LSTM(1, 2), "ones", 10, np.random.default_rng(0))


# ----------------------------------------------------------------------------- summary, CLI
def test_format_last_line():
    adding = {"task": "adding", "T": 200, "cell": "lstm", "test_mse": 0.00431,
              "baseline": 0.16702, "solved": True}
    line = format_last_line(adding)
    assert line == "task=adding T=200 cell=lstm test_mse=0.0043 baseline=0.167 solved=yes"
    assert ADDING_LINE.match(line)
    copy = {"task": "copy", "T": 100, "cell": "gru", "test_loss": 0.17, "baseline": 0.1733,
            "test_acc": 0.125, "solved": False}
    assert COPY_LINE.match(format_last_line(copy))


def test_one_hot():
    out = one_hot(np.array([[0, 2], [1, 0]]), 3)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(-1), [[0, 2], [1, 0]])
    assert (out.sum(-1) == 1).all()


def _parser():
    parser = argparse.ArgumentParser(prog="rnnlab")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize("task,pattern", [("adding", ADDING_LINE), ("copy", COPY_LINE)])
def test_cli_runs_a_tiny_config(task, pattern, tmp_path, capsys):
    path = tmp_path / "curve.csv"
    args = _parser().parse_args(
        ["bench", "longdep", "--task", task, "--T", "4", "--cell", "gru", "--steps", "3",
         "--hidden", "4", "--batch", "4", "--eval-every", "2", "--test-size", "10",
         "--init", "forget1", "--csv", str(path), "--json", str(tmp_path / "run.json")])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert pattern.match(lines[-1]), lines[-1]
    assert sum(line.startswith("step ") for line in lines) == 2  # one progress line per eval
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["step", "train_loss"] and [r[0] for r in rows[1:]] == ["2", "3"]
    assert (tmp_path / "run.json").exists()


def test_cli_defaults_and_help(capsys):
    args = _parser().parse_args(["bench", "longdep"])
    assert (args.task, args.T, args.cell, args.init) == ("adding", 100, "lstm", "chrono")
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "longdep", "--help"])
    text = capsys.readouterr().out
    assert "0.167" in text and "SOLVED" in text and "chrono" in text
    assert "--save lstm100.safetensors" in text  # train, then look inside: the pair
    assert "rnnlab gradflow --weights lstm100.safetensors --plot trained.png" in text
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "longdep", "--cell", "transformer"])


@pytest.mark.parametrize("flag", ["--csv", "--json"])  # --save: test_save_checks_the_path...
def test_cli_rejects_an_unwritable_output_before_training(flag, tmp_path, monkeypatch):
    import rnnlab.cli.bench as bench

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output path")

    monkeypatch.setattr(bench, "train_longdep", no_training)
    args = _parser().parse_args(["bench", "longdep", "--steps", "1", flag,
                                 str(tmp_path / "missing" / "out.file")])
    with pytest.raises(ValueError, match=f"{flag[2:]}: the directory .*missing.* does not exist"):
        args.func(args)


# ----------------------------------------------------------------------------- --save
TINY = {"task": "adding", "T": 6, "cell": "lstm", "hidden": 4, "batch": 8, "steps": 3,
        "eval_every": 3, "test_size": 20}
STATE_KEYS = ["readout.bias", "readout.weight", "rnn.bias_hh_l0", "rnn.bias_ih_l0",
              "rnn.weight_hh_l0", "rnn.weight_ih_l0"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_model_round_trips(dtype, tmp_path):
    cfg = LongDepConfig(**TINY, dtype=dtype, init="forget1", seed=3)
    model = build_model(cfg)
    path = tmp_path / "m.safetensors"
    save_model(model, cfg, path, {"steps": 3, "test_mse": 0.25, "curve": [(1, 2.0, 3.0)]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp left
    arrays, state = load_file(path), model.state_dict()
    assert sorted(arrays) == STATE_KEYS
    for name, value in state.items():
        assert arrays[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(arrays[name], value)
    meta = load_metadata(path)
    assert meta["format"] == "rnnlab.tasks.longdep" and meta["version"] == "1"
    assert json.loads(meta["config"]) == asdict(cfg)
    assert json.loads(meta["result"]) == {"steps": 3, "test_mse": 0.25}  # no curve
    loaded, cfg2, summary = load_model(path)
    assert cfg2 == cfg and summary == {"steps": 3, "test_mse": 0.25}
    for name, value in loaded.state_dict().items():
        assert value.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(value, state[name])


def test_train_longdep_saves_the_trained_model(tmp_path):
    """The file holds the weights after training: one Adam step (lr 1e-3) from build_model's
    init moves every parameter by at most lr, so the file also pins the run's init."""
    cfg = LongDepConfig(**{**TINY, "steps": 1, "eval_every": 1}, lr=1e-3, dtype="float64")
    path = tmp_path / "run.safetensors"
    result = train_longdep(cfg, log=_quiet, save=path)
    saved, init = load_file(path), build_model(cfg).state_dict()
    moved = max(float(np.max(np.abs(saved[k] - init[k]))) for k in init)
    assert 0.5e-3 < moved <= 1e-3 * (1 + 1e-6)
    _, cfg2, summary = load_model(path)
    assert cfg2 == cfg and asdict(cfg2) == result["config"]
    assert summary["steps"] == 1 and summary["test_mse"] == result["test_mse"]


def test_save_checks_the_path_before_training(tmp_path):
    cfg = LongDepConfig(**TINY)
    with pytest.raises(ValueError, match="save: the directory .* does not exist"):
        train_longdep(cfg, log=_quiet, save=tmp_path / "missing" / "m.safetensors")
    with pytest.raises(ValueError, match="save: expected a file name, got the directory"):
        train_longdep(cfg, log=_quiet, save=tmp_path)


def test_cli_save_writes_the_file(tmp_path, capsys):
    path = tmp_path / "cli.safetensors"
    args = _parser().parse_args(
        ["bench", "longdep", "--T", "4", "--cell", "rnn", "--steps", "2", "--hidden", "3",
         "--batch", "4", "--eval-every", "2", "--test-size", "10", "--save", str(path)])
    assert args.func(args) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    model, cfg, _ = load_model(path)
    assert (cfg.cell, cfg.T, cfg.hidden, cfg.steps) == ("rnn", 4, 3, 2)


def test_cli_out_writes_a_run_that_resume_continues(tmp_path, capsys):
    from rnnlab.cli.main import main

    args = ["bench", "longdep", "--task", "adding", "--T", "5", "--hidden", "4", "--steps", "40",
            "--eval-every", "20", "--test-size", "50", "--batch", "8", "--no-stop-when-solved"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*args, "--out", str(whole)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert ADDING_LINE.match(last)
    assert {p.name for p in whole.iterdir()} == {"checkpoint", "config.json", "metrics.jsonl"}
    records = [json.loads(ln) for ln in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40]
    # the first 20 steps, as a run stopped there would have left them; then --resume
    assert main([*args[:9], "20", *args[10:], "--out", str(part)]) == 0
    state = json.loads((part / "checkpoint" / "checkpoint.json").read_text())
    state["longdep_config"]["steps"] = 40  # the same run, told to go on to 40 steps
    state["train_config"]["epochs"] = 2
    (part / "checkpoint" / "checkpoint.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["bench", "longdep", "--resume", "--out", str(part)]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and out.splitlines()[-1] == last
    assert main([*args, "--out", str(whole)]) == 2  # a run is there: refused, not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["bench", "longdep", "--resume", "--out", str(tmp_path / "none")]) == 2
