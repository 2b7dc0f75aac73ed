"""A CPU stand-in for CuPy, so the device="cuda" code paths run (and are tested) without a GPU.

* The CUDA C of the kernel set (``rnnlab.nn.kernels.cuda_sources.module_source``) is compiled
  for the host (g++), with one thread per block: the step kernels' grid-stride loops then cover
  every index, the softmax cross-entropy runs block (row) by block. It stands behind a
  ``RawModule`` whose kernels check every argument's type against the kernel's C signature, as
  the GPU would need them (:func:`host_library`, :class:`HostRawModule`); the same text with
  explicit instantiations is what nvcc compiles (:func:`device_source`).
* ``StandInCupy`` is a module with CuPy's names over NumPy whose arrays (``DeviceArray``, a
  NumPy subclass) refuse to mix with host arrays: an operation, an index or an assignment that
  takes a plain NumPy array beside a "device" array raises, as a CuPy array on a GPU would (or
  would copy silently). So a forgotten ``np.empty`` on the cuda path shows up here.
* cuBLAS, which the kernel set calls directly by address, is emulated from its column-major
  definition (:func:`make_cublas`): C = alpha op(A) op(B) + beta C over the raw buffers, so the
  GEMMs' shapes, transposes and leading dimensions are checked.
* :func:`install` puts all of it in place for a test.

Only the multi-thread reductions of the softmax kernel and CuPy's own calls run on a GPU alone.
Imported by the tests as ``from cuda_standin import ...`` (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from rnnlab.nn import backend
from rnnlab.nn.kernels import cuda as cuda_set
from rnnlab.nn.kernels.cuda_sources import SOURCES, kernel_names, module_source, signature

FLOATS = (("float", "f32", np.float32), ("double", "f64", np.float64))


def _c_params(name: str, T: str) -> str:
    return ", ".join(f"{t.replace('T', T)} {n}" if t.endswith("*")
                     else f"const {t.replace('T', T)} {n}" for t, n in signature(name))


def device_source() -> str:
    """The module's source with every kernel instantiated for float and double (nvcc compiles
    nothing of a template that is not)."""
    lines = [module_source()]
    for name in SOURCES:
        for T, _, _ in FLOATS:
            lines.append(f"template __global__ void {name}<{T}>(const long long, "
                         f"{_c_params(name, T)});")
    lines += [f"template __global__ void softmax_xent<{T}>({T}*, const {T}*, const long long*, "
              f"const bool*, double*, long long, int, {T}, int, int);" for T, _, _ in FLOATS]
    return "\n".join(lines)


HOST_PRELUDE = """
#include <math.h>
#include <string.h>
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads()
struct Dim3 { unsigned x; };
static Dim3 threadIdx = {0}, blockIdx = {0}, blockDim = {1}, gridDim = {1};
static inline float __int_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(unsigned long long i) {
    double d; memcpy(&d, &i, 8); return d;
}
"""


def host_source() -> str:
    """The module for the host, with C entry points ``name_f32`` / ``name_f64``."""
    lines = [HOST_PRELUDE, module_source()]
    for name in SOURCES:
        names = ", ".join(n for _, n in signature(name))
        for T, tag, _ in FLOATS:
            lines.append(f'extern "C" void {name}_{tag}(const long long size, '
                         f"{_c_params(name, T)}) {{\n  blockIdx.x = 0;\n"
                         f"  {name}<{T}>(size, {names});\n}}")
    for T, tag, _ in FLOATS:
        lines.append(f'extern "C" void softmax_xent_{tag}({T}* z, const {T}* bias, '
                     "const long long* t, const bool* keep, double* nll, long long N, int V, "
                     f"{T} scale, int has_bias, int grad) {{\n"
                     "  for (long long n = 0; n < N; ++n) {\n"
                     "    blockIdx.x = (unsigned)n;\n"
                     f"    softmax_xent<{T}>(z, bias, t, keep, nll, N, V, scale, has_bias, grad);"
                     "\n  }\n  blockIdx.x = 0;\n}")
    return "\n".join(lines)


def host_library(cxx: str, directory: Path):
    """Compile :func:`host_source` with ``cxx`` in ``directory``: the loaded library."""
    (directory / "kernels.cpp").write_text(host_source())
    result = subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(directory / "k.so"),
                             str(directory / "kernels.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(directory / "k.so"))


_C_ARG = {  # C parameter kind -> (numpy type the launch must pass, ctypes type)
    "T*": (np.uint64, ctypes.c_void_p), "int": (np.int32, ctypes.c_int),
    "unsigned long long": (np.uint64, ctypes.c_ulonglong), "float": (np.float32, ctypes.c_float),
}


class HostStepKernel:
    """A step kernel compiled for the host, called as a CuPy RawKernel: ``(grid, block, args)``
    with ``args`` = (size, then the signature's parameters); checks the launch covers ``size``
    and every argument has the numpy type of its C parameter (addresses as uint64)."""

    def __init__(self, lib, name: str, tag: str, dtype) -> None:
        self.fn, self.name, self.dtype = getattr(lib, f"{name}_{tag}"), name, np.dtype(dtype)
        c_float = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        self.kinds = [(self.dtype.type, c_float) if t == "T" else _C_ARG[t]
                      for t, _ in signature(name)]

    def __call__(self, grid, block, args) -> None:
        size, *rest = args
        assert isinstance(size, np.int64), self.name
        assert block == (cuda_set.THREADS,) and grid[0] * block[0] >= size, self.name
        assert len(rest) == len(self.kinds), self.name
        c_args = [ctypes.c_longlong(int(size))]
        for (np_type, c_type), a in zip(self.kinds, rest, strict=True):
            assert type(a) is np_type, (self.name, type(a), np_type)
            c_args.append(c_type(int(a) if c_type is ctypes.c_void_p else a.item()))
        self.fn(*c_args)


class HostXentKernel:
    """``softmax_xent<T>`` compiled for the host, called as a CuPy RawKernel with arrays; the
    argument types are checked as the GPU would need them."""

    def __init__(self, fn, dtype) -> None:
        self.fn, self.dtype = fn, np.dtype(dtype)

    def __call__(self, grid, block, args) -> None:
        z, b, t, keep, nll, N, V, scale, has_bias, grad = args
        assert grid == (int(N),) and block == (cuda_set.XENT_THREADS,)
        for a, dt in ((z, self.dtype), (b, self.dtype), (t, np.int64), (keep, np.bool_),
                      (nll, np.float64)):
            assert isinstance(a, DeviceArray) and a.dtype == dt and a.flags.c_contiguous
        assert z.shape == (int(N), int(V)) and t.shape == keep.shape == nll.shape == (int(N),)
        assert isinstance(N, np.int64) and isinstance(V, np.int32)
        assert isinstance(scale, self.dtype.type)
        assert isinstance(has_bias, np.int32) and isinstance(grad, np.int32)
        c_float = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        self.fn(*(ctypes.c_void_p(a.ctypes.data) for a in (z, b, t, keep, nll)),
                ctypes.c_longlong(int(N)), ctypes.c_int(int(V)), c_float(float(scale)),
                ctypes.c_int(int(has_bias)), ctypes.c_int(int(grad)))


class HostRawModule:
    """``cupy.RawModule`` over the host library: the kernel set's module only."""

    def __init__(self, lib, code: str, name_expressions) -> None:
        assert code == module_source() and list(name_expressions) == kernel_names()
        self.lib = lib

    def get_function(self, name: str):
        base, T = name[:-1].split("<")
        (tag, dtype), = [(tag, dt) for t, tag, dt in FLOATS if t == T]
        if base == "softmax_xent":
            return HostXentKernel(getattr(self.lib, f"softmax_xent_{tag}"), dtype)
        return HostStepKernel(self.lib, base, tag, dtype)


# ---------------------------------------------------------------------------- the CuPy stand-in
class MixedDevices(TypeError):
    """A host array met a device array."""


def _plain(a):
    if isinstance(a, DeviceArray):
        return a.view(np.ndarray)
    if isinstance(a, np.ndarray):
        raise MixedDevices(f"a host array {a.dtype}{a.shape} used with device arrays")
    if isinstance(a, tuple | list):
        return type(a)(_plain(x) for x in a)
    return a


def _wrap(r):
    if isinstance(r, np.ndarray) and not isinstance(r, DeviceArray):
        return r.view(DeviceArray)
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    return r


class DeviceArray(np.ndarray):
    """A NumPy array standing for a CuPy one: computes on the host, mixes with nothing."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        args = [_plain(a) for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if method == "at":
            return None
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_plain(list(args)), **{k: _plain(v) for k, v in kwargs.items()}))

    def __getitem__(self, index):
        return super().__getitem__(_plain_index(index))

    def __setitem__(self, index, value):
        super().__setitem__(_plain_index(index), _plain(value))

    def get(self) -> np.ndarray:
        """The host copy, as ``cupy.ndarray.get``."""
        return np.array(self.view(np.ndarray))

    @property
    def data(self):
        """CuPy's memory pointer (``.data.ptr``: the address of the first element)."""
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _plain_index(index):
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, DeviceArray):
        return index.view(np.ndarray)
    if isinstance(index, np.ndarray):
        raise MixedDevices(f"a host index array {index.dtype}{index.shape} on a device array")
    return index


def _device_fn(name):
    f = getattr(np, name)

    def run(*args, **kwargs):
        return _wrap(f(*_plain(list(args)), **{k: _plain(v) for k, v in kwargs.items()}))

    run.__name__ = name
    return run


def _asarray(x, dtype=None):
    if isinstance(x, DeviceArray):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    return np.array(x, dtype=dtype).view(DeviceArray)  # the host-to-device copy


def make_standin(lib) -> types.ModuleType:
    """A module named ``cupy`` with the names rnnlab uses; ``lib`` (:func:`host_library`) backs
    its RawModule."""
    cp = types.ModuleType("cupy")
    cp.__version__ = "stand-in"
    cp.ndarray = DeviceArray
    cp.asarray = _asarray
    for name in ("empty", "zeros", "empty_like", "zeros_like", "ascontiguousarray", "where",
                 "stack", "matmul", "copyto"):
        setattr(cp, name, _device_fn(name))
    for name in ("add", "multiply", "subtract", "divide", "sqrt", "square", "exp", "isfinite"):
        setattr(cp, name, getattr(np, name))  # ufuncs: they dispatch to DeviceArray
    for name in ("float32", "float64", "int32", "int64"):
        setattr(cp, name, getattr(np, name))
    cp.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 7),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    cp.RawModule = lambda code, name_expressions: HostRawModule(lib, code, name_expressions)
    return cp


# ------------------------------------------------------------------------------ cuBLAS stand-in
def _matrix(ptr: int, ctype, rows: int, cols: int, ld: int) -> np.ndarray:
    """The column-major (rows, cols) matrix at ``ptr`` with leading dimension ``ld``."""
    assert ld >= max(rows, 1)
    count = (cols - 1) * ld + rows
    flat = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), shape=(count,))
    size = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (size, ld * size))


def _gemm(ctype):
    def gemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        """cublas<t>gemm: C (m, n) = alpha op(A) op(B) + beta C, column-major, pointer mode
        host; op(X) = X for 0 (N), X^T for 1 (T)."""
        assert handle == 7 and transa in (0, 1) and transb in (0, 1)
        a = _matrix(A, ctype, *((m, k) if transa == 0 else (k, m)), lda)
        b = _matrix(B, ctype, *((k, n) if transb == 0 else (n, k)), ldb)
        c = _matrix(C, ctype, m, n, ldc)
        al, be = ctype.from_address(alpha).value, ctype.from_address(beta).value
        product = al * ((a if transa == 0 else a.T) @ (b if transb == 0 else b.T))
        c[...] = product if be == 0 else product + be * c  # beta 0: C is not read
    return gemm


def make_cublas() -> types.ModuleType:
    """The few calls of ``cupy_backends.cuda.libs.cublas`` that rnnlab makes."""
    cublas = types.ModuleType("cublas")
    cublas.sgemm, cublas.dgemm = _gemm(ctypes.c_float), _gemm(ctypes.c_double)
    cublas.setPointerMode = lambda handle, mode: None
    cublas.setStream = lambda handle, stream: None
    return cublas


def install(monkeypatch, lib) -> types.ModuleType:
    """Put the stand-in in CuPy's place for one test (``monkeypatch`` undoes it): returns it."""
    cp = make_standin(lib)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(backend, "_checked", [])
    monkeypatch.setattr(cuda_set, "_compiled", {})  # built from the stand-in's RawModule
    monkeypatch.setattr(cuda_set, "_launches", {})
    monkeypatch.setattr(cuda_set, "_cublas", make_cublas)
    return cp

