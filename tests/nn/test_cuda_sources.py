"""The CUDA kernel set checked without a GPU.

1. Every fused kernel body in ``rnnlab.nn.kernels.cuda.SOURCES`` compiles with nvcc, for float32
   and float64, wrapped in a ``__global__`` function the way CuPy's ElementwiseKernel wraps it,
   and so does the softmax cross-entropy kernel (compiled only: it needs a GPU to run).
2. The same bodies compiled for the host (g++) and run over NumPy arrays in place of the CuPy
   kernels: the CUDA set's loops then equal the NumPy set's, with lengths, in both directions,
   and the layers built on them equal the layers on the NumPy set, gradients included.

So the arithmetic and the loops are tested here; only CuPy's calls themselves (cuBLAS, the
kernel launches) are left to tests/nn/test_cuda.py on a GPU.
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest
from conftest import require_tool

from rnnlab import GRU, LSTM, RNN
from rnnlab.nn import kernels
from rnnlab.nn.kernels import cuda as cuda_set
from rnnlab.nn.kernels import numpy as numpy_set

C_TYPES = {"int32": "int"}


def _params(spec: str) -> list[tuple[str, str]]:
    """'raw T a, int32 H' -> [('T*', 'a'), ('int', 'H')]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        if words[0] == "raw":
            out.append(("T*", words[-1]))
        else:
            out.append((C_TYPES[words[0]], words[1]))
    return out


def _signature(name: str) -> list[tuple[str, str]]:
    inputs, outputs, _ = cuda_set.SOURCES[name]
    return _params(inputs) + _params(outputs)


def _device_source() -> str:
    lines = ["#include <cstddef>", cuda_set.PREAMBLE]
    for name, (_, _, body) in cuda_set.SOURCES.items():
        args = ", ".join(f"{t} {n}" for t, n in _signature(name))
        lines.append(f"template <typename T> __global__ void {name}(ptrdiff_t size, {args}) {{\n"
                     "  ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
                     f"  if (i >= size) return;\n{body}\n}}")
        for T in ("float", "double"):
            inst = ", ".join(f"{t.replace('T', T)} {n}" for t, n in _signature(name))
            lines.append(f"template __global__ void {name}<{T}>(ptrdiff_t, {inst});")
    return "\n".join(lines)


def _host_source() -> str:
    lines = ["#include <cstddef>", "#include <math.h>", "#define __device__",
             cuda_set.PREAMBLE]
    for name, (_, _, body) in cuda_set.SOURCES.items():
        args = ", ".join(f"{t} {n}" for t, n in _signature(name))
        lines.append(f"template <typename T> static void {name}(ptrdiff_t size, {args}) {{\n"
                     f"  for (ptrdiff_t i = 0; i < size; ++i) {{\n{body}\n  }}\n}}")
        names = ", ".join(n for _, n in _signature(name))
        for T, tag in (("float", "f32"), ("double", "f64")):
            inst = ", ".join(f"{t.replace('T', T)} {n}" for t, n in _signature(name))
            lines.append(f'extern "C" void {name}_{tag}(ptrdiff_t size, {inst}) '
                         f"{{ {name}<{T}>(size, {names}); }}")
    return "\n".join(lines)


XENT_INSTANCES = "\n".join(
    f"template __global__ void softmax_xent<{T}>({T}*, const {T}*, const long long*, "
    f"const bool*, double*, long long, int, {T}, int, int);" for T in ("float", "double"))


def test_sources_compile_with_nvcc(tmp_path):
    nvcc = require_tool("nvcc")
    src = tmp_path / "kernels.cu"
    src.write_text(_device_source() + cuda_set.XENT_SOURCE + XENT_INSTANCES)
    result = subprocess.run([nvcc, "-c", "-o", str(tmp_path / "kernels.o"), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


class _HostKernel:
    """A body compiled for the host, called as CuPy calls an ElementwiseKernel; it checks that
    every array it is given is C-contiguous (the bodies index them by hand)."""

    def __init__(self, lib, name):
        self.name = name
        self.fns = {np.dtype(np.float32): getattr(lib, f"{name}_f32"),
                    np.dtype(np.float64): getattr(lib, f"{name}_f64")}
        self.kinds = [t for t, _ in _signature(name)]

    def __call__(self, *args, size):
        assert len(args) == len(self.kinds), self.name
        dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
        c_args = [ctypes.c_ssize_t(size)]
        for kind, a in zip(self.kinds, args, strict=True):
            if kind == "T*":
                assert a.dtype == dtype and a.flags.c_contiguous, self.name
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            else:
                c_args.append(ctypes.c_int(int(a)))
        self.fns[dtype](*c_args)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    cxx = require_tool("g++")
    d = tmp_path_factory.mktemp("cuda_host")
    (d / "k.cpp").write_text(_host_source())
    result = subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"),
                             str(d / "k.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(d / "k.so"))
    return {name: _HostKernel(lib, name) for name in cuda_set.SOURCES}


@pytest.fixture
def emulated(host_kernels, monkeypatch):
    """The CUDA set's loops running NumPy arrays through the host-compiled bodies, and the layers
    dispatching every forward to it."""
    monkeypatch.setattr(cuda_set, "_kernel", host_kernels.__getitem__)
    monkeypatch.setitem(kernels._sets, "cuda", cuda_set)
    monkeypatch.setattr(kernels, "_set_for", lambda *args: "cuda")
    return cuda_set


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
