"""The CUDA kernel set checked without a GPU.

1. The kernel set's CUDA C (``rnnlab.nn.kernels.cuda_sources.module_source``) compiles with
   nvcc, every kernel instantiated for float and double.
2. The same text compiled for the host and run through the CuPy stand-in (tests/cuda_standin.py):
   the CUDA set's time loops equal the NumPy set's, with lengths, in both directions.

tests/nn/test_cuda.py runs the layers, the language model and the CLI on the stand-in too, and
on a GPU where there is one.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import require_tool
from cuda_standin import device_source, host_library, install

from rnnlab.nn.kernels import cuda as cuda_set
from rnnlab.nn.kernels import numpy as numpy_set


def test_sources_compile_with_nvcc(tmp_path):
    nvcc = require_tool("nvcc")
    src = tmp_path / "kernels.cu"
    src.write_text(device_source())
    result = subprocess.run([nvcc, "-c", "-o", str(tmp_path / "kernels.o"), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def compiled_kernels(tmp_path_factory):
    return host_library(require_tool("g++"), tmp_path_factory.mktemp("cuda_host"))


class _OnStandIn:
    """The CUDA set's functions called with NumPy arrays: float arrays go to the stand-in's
    device and results come back (integer arrays, the batch sizes, stay on the host)."""

    def __init__(self, cp) -> None:
        self.cp = cp

    def _device(self, a):
        if isinstance(a, tuple):
            return tuple(self._device(x) for x in a)
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            return self.cp.asarray(a)
        return a

    def _host(self, a):
        if isinstance(a, tuple):
            return tuple(self._host(x) for x in a)
        return a.get() if isinstance(a, self.cp.ndarray) else a

    def __getattr__(self, name):
        f = getattr(cuda_set, name)
        return lambda *args: self._host(f(*(self._device(a) for a in args)))


@pytest.fixture
def emulated(compiled_kernels, monkeypatch):
    return _OnStandIn(install(monkeypatch, compiled_kernels))


TOL = {np.float64: 1e-12, np.float32: 2e-5}


def _case(rng, dtype, T=5, B=4, H=3, gates=4, lengths=False):
    XW = rng.standard_normal((T, B, gates * H)).astype(dtype)
    W = (rng.standard_normal((gates * H, H)) * 0.5).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    bs = np.array([4, 4, 3, 2, 1][:T]) if lengths else None
    dH = rng.standard_normal((T, B, H)).astype(dtype)
    return XW, W, h0, bs, dH


def _close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def _live_close(a, b, dtype, bs):
    """Only rows a kernel computed: padded gate rows are left unset by every set."""
    if bs is None:
        return _close(a, b, dtype)
    for t, n in enumerate(bs):
        _close(a[t, :n], b[t, :n], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_lstm_loop_equals_numpy_set(emulated, rng, dtype, reverse, lengths):
    XW, W, h0, bs, dH = _case(rng, dtype, lengths=lengths)
    c0 = rng.standard_normal(h0.shape).astype(dtype)
    ref = numpy_set.lstm_forward(XW.copy(), W, h0, c0, bs, reverse)
    got = emulated.lstm_forward(XW.copy(), W, h0, c0, bs, reverse)
    for a, b in zip(got[:2] + got[3:], ref[:2] + ref[3:], strict=True):
        _live_close(a, b, dtype, None if a.shape[0] != XW.shape[0] else bs)
    _live_close(got[2], ref[2], dtype, bs)
    dh_n, dc_n = h0 * 0.3, c0 * 0.7
    dA, (dh0, dc0) = emulated.lstm_backward(got, W, dH, dh_n, dc_n, bs, reverse)
    rA, (rh0, rc0) = numpy_set.lstm_backward(ref, W, dH, dh_n, dc_n, bs, reverse)
    for a, b in ((dA, rA), (dh0, rh0), (dc0, rc0)):
        _close(a, b, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gru_loop_equals_numpy_set(emulated, rng, dtype, reverse, lengths, bias):
    XW, W, h0, bs, dH = _case(rng, dtype, gates=3, lengths=lengths)
    b_hh = rng.standard_normal(W.shape[0]).astype(dtype) if bias else None
    ref = numpy_set.gru_forward(XW.copy(), W, b_hh, h0, bs, reverse)
    got = emulated.gru_forward(XW.copy(), W, b_hh, h0, bs, reverse)
    _close(got[0], ref[0], dtype)
    _live_close(got[1], ref[1], dtype, bs)
    _live_close(got[2], ref[2], dtype, bs)
    dAx, dAh, dh0 = emulated.gru_backward(got, W, dH, h0 * 0.3, bs, reverse)
    rx, rh, r0 = numpy_set.gru_backward(ref, W, dH, h0 * 0.3, bs, reverse)
    for a, b in ((dAx, rx), (dAh, rh), (dh0, r0)):
        _close(a, b, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_loop_equals_numpy_set(emulated, rng, dtype, reverse, lengths, nonlinearity):
    XW, W, h0, bs, dH = _case(rng, dtype, gates=1, lengths=lengths)
    (ref,) = numpy_set.rnn_forward(XW.copy(), W, h0, nonlinearity, bs, reverse)
    (got,) = emulated.rnn_forward(XW.copy(), W, h0, nonlinearity, bs, reverse)
    _close(got, ref, dtype)
    dA, dh0 = emulated.rnn_backward((got,), W, None, h0, nonlinearity, bs, reverse)
    rA, r0 = numpy_set.rnn_backward((ref,), W, None, h0, nonlinearity, bs, reverse)
    _close(dA, rA, dtype)
    _close(dh0, r0, dtype)
    dA, dh0 = emulated.rnn_backward((got,), W, dH, h0, nonlinearity, bs, reverse)
    rA, r0 = numpy_set.rnn_backward((ref,), W, dH, h0, nonlinearity, bs, reverse)
    _close(dA, rA, dtype)
    _close(dh0, r0, dtype)
