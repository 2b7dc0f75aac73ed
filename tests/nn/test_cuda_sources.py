"""The CUDA kernel set checked without a GPU.

1. Every fused kernel body in ``rnnlab.nn.kernels.cuda.SOURCES`` compiles with nvcc, for float32
   and float64, wrapped in a ``__global__`` function the way CuPy's ElementwiseKernel wraps it,
   and so does the softmax cross-entropy kernel (compiled only: it needs a GPU to run).
2. The same bodies compiled for the host (g++) and run over NumPy arrays in place of the CuPy
   kernels: the CUDA set's loops then equal the NumPy set's, with lengths, in both directions,
   and the layers built on them equal the layers on the NumPy set, gradients included.

So the arithmetic and the loops are tested here; tests/nn/test_cuda.py runs the whole device
path on a CuPy stand-in (tests/cuda_standin.py), and on a GPU where there is one.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import require_tool
from cuda_standin import device_source
from cuda_standin import host_kernels as build_host_kernels

from rnnlab import GRU, LSTM, RNN
from rnnlab.nn import kernels
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
def host_kernels(tmp_path_factory):
    return build_host_kernels(require_tool("g++"), tmp_path_factory.mktemp("cuda_host"))


@pytest.fixture
def emulated(host_kernels, monkeypatch):
    """The CUDA set's loops running NumPy arrays through the host-compiled bodies, and the layers
    dispatching every forward to it."""
    monkeypatch.setattr(cuda_set, "_kernel", host_kernels.__getitem__)
    monkeypatch.setattr(cuda_set, "_step_product", NumpyStepGemm)
    monkeypatch.setitem(kernels._sets, "cuda", cuda_set)
    monkeypatch.setattr(kernels, "_set_for", lambda *args: "cuda")
    return cuda_set


class NumpyStepGemm:
    """The step product with NumPy (the cuBLAS call itself is checked in test_cuda.py)."""

    def __init__(self, xp, W, transpose):
        self.M = W.T if transpose else W

    def __call__(self, x, out):
        np.matmul(x, self.M, out=out)


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


def _run_layer(layer, x, lengths, dout, dstate):
    out, state = layer(x, lengths=lengths)
    layer.zero_grad()
    dx, dstate0 = layer.backward(dout, dstate)
    return out, state, dx, dstate0, layer.grads


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layers_on_the_cuda_loops_equal_the_numpy_set(host_kernels, monkeypatch, rng, cls,
                                                      dtype):
    """Two layers, both directions, lengths: every output and gradient."""
    T, B, D, H = 6, 5, 4, 3
    x = rng.standard_normal((T, B, D)).astype(dtype)
    lengths = [6, 2, 5, 1, 6]
    dout = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    dh = rng.standard_normal((4, B, H)).astype(dtype)
    dstate = (dh, dh * 0.5) if cls is LSTM else dh
    with kernels.use_kernels("numpy"):
        ref = _run_layer(cls(D, H, num_layers=2, bidirectional=True, dtype=dtype, seed=3), x,
                         lengths, dout, dstate)
    monkeypatch.setattr(cuda_set, "_kernel", host_kernels.__getitem__)
    monkeypatch.setattr(cuda_set, "_step_product", NumpyStepGemm)
    monkeypatch.setitem(kernels._sets, "cuda", cuda_set)
    monkeypatch.setattr(kernels, "_set_for", lambda *args: "cuda")
    got = _run_layer(cls(D, H, num_layers=2, bidirectional=True, dtype=dtype, seed=3), x,
                     lengths, dout, dstate)
    flat = [np.asarray(a) for part in (got[:4]) for a in (part if isinstance(part, tuple)
                                                          else (part,))]
    want = [np.asarray(a) for part in (ref[:4]) for a in (part if isinstance(part, tuple)
                                                          else (part,))]
    for a, b in zip(flat, want, strict=True):
        _close(a, b, dtype)
    assert got[4].keys() == ref[4].keys()
    for k in ref[4]:
        _close(got[4][k], ref[4][k], dtype)
