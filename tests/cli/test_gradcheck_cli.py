"""``rnnlab gradcheck``: passes on correct layers, and catches a broken gradient."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from rnnlab.cli.gradcheck import add_gradcheck_parser, gradcheck_main
from rnnlab.inside.gradcheck import format_report, gradcheck_layer
from rnnlab.nn import kernels


def _cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="rnnlab")
    add_gradcheck_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func is gradcheck_main
    status = args.func(args)
    return status, capsys.readouterr().out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_passes_on_a_stacked_bidirectional_padded_layer(kind):
    report = gradcheck_layer(kind, input_size=2, hidden_size=3, num_layers=2, bidirectional=True,
                             lengths=[4, 2, 3], T=4, B=3, seed=1)
    assert report.passed, format_report(report)
    names = [t.name for t in report.tensors]
    states = ["h0", "c0"] if kind == "lstm" else ["h0"]
    params = [f"{w}_l{k}{s}" for k in (0, 1) for s in ("", "_reverse")
              for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert names == ["x", *states, *params]
    x = report.tensors[0]
    assert x.shape == (4, 3, 2) and x.checked == 24 and x.max_grad > 0


def test_batch_first_and_probe():
    report = gradcheck_layer("lstm", batch_first=True, T=3, B=2, max_entries=5, seed=3)
    assert report.passed
    assert report.tensors[0].shape == (2, 3, 3)
    assert all(t.checked == min(5, int(np.prod(t.shape))) for t in report.tensors)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_cli_exit_zero_when_all_pass(cell, capsys):
    status, out = _cli(["gradcheck", "--cell", cell, "--layers", "1", "--hidden", "3",
                        "--input-size", "2", "--steps", "3", "--batch", "2"], capsys)
    assert status == 0
    assert "PASS: all" in out and "weight_hh_l0" in out and "FAIL" not in out


def test_cli_lengths_set_batch_and_steps(capsys):
    status, out = _cli(["gradcheck", "--cell", "gru", "--hidden", "2", "--bidirectional",
                        "--lengths", "4,1,3", "--seed", "5"], capsys)
    assert status == 0
    assert "T=4 B=3 lengths=[4, 1, 3] seed=5" in out and "weight_ih_l0_reverse" in out


def test_broken_weight_gradient_fails_with_exit_one(monkeypatch, capsys):
    real = kernels.lstm_backward

    def broken(*args, **kwargs):
        dA, ds0 = real(*args, **kwargs)
        return dA * 1.001, ds0  # 0.1 % off: every weight, bias and x gradient

    monkeypatch.setattr(kernels, "lstm_backward", broken)
    report = gradcheck_layer("lstm", input_size=2, hidden_size=2, T=3, B=2)
    assert not report.passed
    assert set(report.failed) == {"x", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    status, out = _cli(["gradcheck", "--cell", "lstm", "--hidden", "2", "--input-size", "2",
                        "--steps", "3", "--batch", "2"], capsys)
    assert status == 1
    assert "FAIL: 5 of 7 tensors disagree" in out


def test_broken_state_gradient_is_localised(monkeypatch):
    real = kernels.gru_backward

    def broken(*args, **kwargs):
        dAx, dAh, dh0 = real(*args, **kwargs)
        return dAx, dAh, dh0 * 1.5

    monkeypatch.setattr(kernels, "gru_backward", broken)
    report = gradcheck_layer("gru", input_size=2, hidden_size=2, T=3, B=2)
    assert report.failed == ["h0"]
    row = next(t for t in report.tensors if t.name == "h0")
    assert row.max_rel_err == pytest.approx(1 / 3, rel=1e-4)  # |1.5 a - a| / |1.5 a|


def test_bad_configurations():
    with pytest.raises(ValueError, match="kind: expected one of"):
        gradcheck_layer("lstmm")
    with pytest.raises(ValueError, match="lengths"):
        gradcheck_layer("rnn", lengths=[6, 2, 1], T=5, B=3)
    with pytest.raises(SystemExit):
        _cli(["gradcheck", "--lengths", "3,x"], None)
    with pytest.raises(SystemExit):
        _cli(["gradcheck", "--cell", "lstmm"], None)
