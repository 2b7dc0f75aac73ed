"""A CPU stand-in for CuPy, so the device="cuda" code paths run (and are tested) without a GPU.

* The fused kernels of :mod:`rnnlab.nn.kernels.cuda` are the real CUDA C bodies compiled for the
  host (g++) and called as CuPy calls an ElementwiseKernel (:func:`host_kernels`); the same
  source generator produces the nvcc compile check.
* ``StandInCupy`` is a module with CuPy's names over NumPy whose arrays (``DeviceArray``, a
  NumPy subclass) refuse to mix with host arrays: an operation, an index or an assignment that
  takes a plain NumPy array beside a "device" array raises, as a CuPy array on a GPU would (or
  would copy silently). So a forgotten ``np.empty`` on the cuda path shows up here.
* cuBLAS, which the kernel set calls directly by pointers, is emulated from its column-major
  definition (:func:`make_cublas`): C = alpha op(A) op(B) + beta C over the raw buffers, so
  the GEMMs' shapes, transposes and leading dimensions are checked.
* The softmax cross-entropy kernel (a RawModule) is compiled for the host too, run with one
  thread per block (its loops and reductions then cover a row alone; the multi-thread reduction
  itself runs only on a GPU), and called through a RawModule stand-in, so the wrapper's
  arguments are checked against the kernel's signature.

Imported by the tests as ``from cuda_standin import ...`` (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import ctypes
import subprocess
import types
from pathlib import Path

import numpy as np

from rnnlab.nn.kernels import cuda as cuda_set

C_TYPES = {"int32": "int", "uint64": "unsigned long long", "float32": "float", "T": "T"}


# ------------------------------------------------------------------------ sources of the bodies
def _params(spec: str) -> list[tuple[str, str]]:
    """'raw T a, int32 H, T s' -> [('T*', 'a'), ('int', 'H'), ('T', 's')]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        out.append(("T*", words[-1]) if words[0] == "raw" else (C_TYPES[words[0]], words[1]))
    return out


def signature(name: str) -> list[tuple[str, str]]:
    inputs, outputs, _ = cuda_set.SOURCES[name]
    return _params(inputs) + _params(outputs)


def device_source() -> str:
    """Every body as a templated __global__ function (one thread per element, as CuPy's
    ElementwiseKernel), instantiated for float and double."""
    lines = ["#include <cstddef>", cuda_set.PREAMBLE]
    for name, (_, _, body) in cuda_set.SOURCES.items():
        args = ", ".join(f"{t} {n}" for t, n in signature(name))
        lines.append(f"template <typename T> __global__ void {name}(ptrdiff_t size, {args}) {{\n"
                     "  ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;\n"
                     f"  if (i >= size) return;\n{body}\n}}")
        for T in ("float", "double"):
            inst = ", ".join(f"{t.replace('T', T)} {n}" for t, n in signature(name))
            lines.append(f"template __global__ void {name}<{T}>(ptrdiff_t, {inst});")
    lines.append(cuda_set.XENT_SOURCE)
    lines += [f"template __global__ void softmax_xent<{T}>({T}*, const {T}*, const long long*, "
              f"const bool*, double*, long long, int, {T}, int, int);" for T in ("float", "double")]
    return "\n".join(lines)


def host_source() -> str:
    """Every body inside a plain loop over its elements, with C entry points name_f32/_f64."""
    lines = ["#include <cstddef>", "#include <math.h>", "#define __device__", cuda_set.PREAMBLE]
    for name, (_, _, body) in cuda_set.SOURCES.items():
        args = ", ".join(f"{t} {n}" for t, n in signature(name))
        lines.append(f"template <typename T> static void {name}(ptrdiff_t size, {args}) {{\n"
                     f"  for (ptrdiff_t i = 0; i < size; ++i) {{\n{body}\n  }}\n}}")
        names = ", ".join(n for _, n in signature(name))
        for T, tag in (("float", "f32"), ("double", "f64")):
            inst = ", ".join(f"{t.replace('T', T)} {n}" for t, n in signature(name))
            lines.append(f'extern "C" void {name}_{tag}(ptrdiff_t size, {inst}) '
                         f"{{ {name}<{T}>(size, {names}); }}")
    return "\n".join(lines)


class HostKernel:
    """A body compiled for the host, called as CuPy calls an ElementwiseKernel; it checks that
    every array it is given is C-contiguous and of one float dtype (the bodies index by hand)."""

    def __init__(self, lib, name: str) -> None:
        self.name = name
        self.fns = {np.dtype(np.float32): getattr(lib, f"{name}_f32"),
                    np.dtype(np.float64): getattr(lib, f"{name}_f64")}
        self.kinds = [t for t, _ in signature(name)]

    def __call__(self, *args, size: int) -> None:
        assert len(args) == len(self.kinds), self.name
        dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
        c_args = [ctypes.c_ssize_t(size)]
        for kind, a in zip(self.kinds, args, strict=True):
            if kind == "T*":
                assert a.dtype == dtype and a.flags.c_contiguous, self.name
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            elif kind == "T":
                c_args.append((ctypes.c_float if dtype == np.float32 else ctypes.c_double)(a))
            elif kind == "float":
                c_args.append(ctypes.c_float(a))
            elif kind == "unsigned long long":
                c_args.append(ctypes.c_ulonglong(a))
            else:
                c_args.append(ctypes.c_int(int(a)))
        self.fns[dtype](*c_args)


def host_kernels(cxx: str, directory: Path) -> dict[str, HostKernel]:
    """Compile every body for the host with ``cxx`` in ``directory``: name -> HostKernel."""
    (directory / "k.cpp").write_text(host_source())
    result = subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(directory / "k.so"),
                             str(directory / "k.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(directory / "k.so"))
    return {name: HostKernel(lib, name) for name in cuda_set.SOURCES}


XENT_HOST_PRELUDE = """
#include <math.h>
#include <string.h>
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads()
struct Dim3 { unsigned x; };
static Dim3 threadIdx = {0}, blockIdx = {0}, blockDim = {1};
static inline float __int_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(unsigned long long i) {
    double d; memcpy(&d, &i, 8); return d;
}
"""


def xent_host_source() -> str:
    """The softmax cross-entropy kernel for the host: one thread per block, blocks in a loop."""
    lines = [XENT_HOST_PRELUDE, cuda_set.XENT_SOURCE]
    for T, tag in (("float", "f32"), ("double", "f64")):
        lines.append(f'extern "C" void softmax_xent_{tag}({T}* z, const {T}* bias, '
                     "const long long* t, const bool* keep, double* nll, long long N, int V, "
                     f"{T} scale, int has_bias, int grad) {{\n"
                     "  for (long long n = 0; n < N; ++n) {\n"
                     "    blockIdx.x = (unsigned)n;\n"
                     f"    softmax_xent<{T}>(z, bias, t, keep, nll, N, V, scale, has_bias, grad);"
                     "\n  }\n}")
    return "\n".join(lines)


class HostRawKernel:
    """``softmax_xent<T>`` compiled for the host, called as a CuPy RawKernel:
    ``kernel(grid, block, args)``; the argument types are checked as the GPU would need them."""

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
    """``cupy.RawModule`` for the softmax cross-entropy source only."""

    def __init__(self, lib, code: str, name_expressions) -> None:
        assert code == cuda_set.XENT_SOURCE
        assert sorted(name_expressions) == ["softmax_xent<double>", "softmax_xent<float>"]
        self.lib = lib

    def get_function(self, name: str) -> HostRawKernel:
        if name == "softmax_xent<float>":
            return HostRawKernel(self.lib.softmax_xent_f32, np.float32)
        assert name == "softmax_xent<double>", name
        return HostRawKernel(self.lib.softmax_xent_f64, np.float64)


def host_xent(cxx: str, directory: Path):
    """Compile the softmax cross-entropy kernel for the host: the loaded library."""
    (directory / "xent.cpp").write_text(xent_host_source())
    result = subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(directory / "xent.so"),
                             str(directory / "xent.cpp")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(directory / "xent.so"))


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


def make_standin(kernels: dict[str, HostKernel], xent_lib) -> types.ModuleType:
    """A module named ``cupy`` with the names rnnlab uses; ``xent_lib`` from :func:`host_xent`
    backs its RawModule."""
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
    cp.ElementwiseKernel = None  # the kernels come from ``kernels`` (patched in by the caller)
    cp.RawModule = lambda code, name_expressions: HostRawModule(xent_lib, code, name_expressions)
    cp.standin_kernels = kernels
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

