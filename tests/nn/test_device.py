"""Device selection without a GPU: CuPy is never imported unless "cuda" is asked for, and asking
for it where it cannot run is a one-line error."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnlab import LSTM
from rnnlab.nn import backend


def test_import_and_cpu_training_never_import_cupy(tmp_path):
    pytest.importorskip("scipy", reason="the CLI's parser imports it")
    script = textwrap.dedent(f"""
        import sys
        import rnnlab
        from rnnlab.cli.main import main
        text = {str(tmp_path / "lm.txt")!r}
        open(text, "w").write("abc def ghi\\n" * 50)
        assert main(["train", "lm", "--data", text, "--out", {str(tmp_path / "run")!r},
                     "--max-steps", "2", "--hidden", "4", "--embed", "4", "--layers", "1",
                     "--batch-size", "2", "--bptt", "4", "--samples", "0",
                     "--no-progress"]) == 0
        print("cupy" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_cuda_without_cupy_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(RuntimeError, match="device 'cuda': expected CuPy") as err:
        backend.resolve_device("cuda")
    assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="device 'cuda'"):
        LSTM(3, 4, device="cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device: expected one of 'cpu', 'cuda', got 'gpu'"):
        backend.resolve_device("gpu")
    with pytest.raises(ValueError, match="device: expected"):
        LSTM(3, 4, device="gpu")


def test_to_cpu_keeps_the_arrays_and_the_results():
    lstm = LSTM(3, 4, num_layers=2, seed=0)
    before = lstm.parameters()
    assert lstm.to("cpu") is lstm and lstm.device == "cpu"
    assert all(before[k] is v for k, v in lstm.parameters().items())
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out, _ = lstm(x)
    np.testing.assert_array_equal(out, LSTM(3, 4, num_layers=2, seed=0)(x)[0])


def test_host_helpers_on_numpy_arrays():
    a = np.arange(3.0)
    assert backend.to_host(a) is a and backend.to_device(a, "cpu") is a
    assert backend.device_of(a) == "cpu" and backend.xp_of(a) is np
    assert backend.array_module("cpu") is np


def test_cli_device_cuda_without_cupy_and_cpu_only_commands(tmp_path, monkeypatch, capsys):
    pytest.importorskip("scipy", reason="the CLI's parser imports it")
    from rnnlab.cli.main import main

    monkeypatch.setitem(sys.modules, "cupy", None)
    text = tmp_path / "lm.txt"
    text.write_text("abc def ghi\n" * 50, encoding="utf-8")
    argv = ["train", "lm", "--data", str(text), "--out", str(tmp_path / "run"), "--max-steps",
            "1", "--hidden", "4", "--embed", "4", "--layers", "1", "--batch-size", "2",
            "--bptt", "4", "--samples", "0", "--no-progress", "--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "device 'cuda': expected CuPy" in err and err.count("\n") == 1
    assert main(["train", "seq2seq", "--out", str(tmp_path / "s"), "--device", "cuda"]) == 2
    assert "rnnlab train seq2seq runs on cpu only so far" in capsys.readouterr().err
