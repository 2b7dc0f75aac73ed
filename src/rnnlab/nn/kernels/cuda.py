"""The CUDA kernel set (CuPy): the equations of :mod:`rnnlab.nn.cells` over a sequence on a GPU.

Same arguments, caches and layout as :mod:`rnnlab.nn.kernels.numpy` (read its docstring for the
time indexing and variable lengths), for CuPy arrays. The input projection of every step is one
GEMM before the loop (the caller's); then each time step makes two launches each way:

* the recurrent product, one cuBLAS GEMM called directly (:class:`StepGemm`), and
* ONE fused kernel for the whole gate arithmetic (the CUDA C in
  :mod:`rnnlab.nn.kernels.cuda_sources`, float32 and float64 from one template).

At small batch the host's time per step bounds the loop, so a step costs as few Python calls as
it can: both launches take raw addresses computed from each buffer's base and row stride (no
array views), the kernels come from one ``cupy.RawModule`` compiled once, and every buffer is
allocated before the loop. (GRU's backward keeps dh_prev = dh z + da_h W_hh as its two terms,
which the next step's kernel adds, so it needs no third launch.) Every array a kernel indexes
is C-contiguous; a step's rows of a (T, B, X) array are the block at ``base + t * stride``.

CuPy is imported only when a kernel is first launched, which happens only for CuPy arrays.
"""

from __future__ import annotations

import numpy as np

from rnnlab.nn.backend import xp_of
from rnnlab.nn.kernels.cuda_sources import kernel_names, module_source, signature
from rnnlab.nn.kernels.numpy import cell_states, check_kept, state_rows

THREADS = 256  # threads per block of the step kernels
XENT_THREADS = 256  # threads per row of the softmax cross-entropy (its shared array's size)

_compiled: dict = {}
_launches: dict = {}


def _raw_module():
    """Every kernel, compiled on first use (NVRTC; CuPy caches the binary on disk)."""
    if "module" not in _compiled:
        import cupy

        _compiled["module"] = cupy.RawModule(code=module_source(),
                                             name_expressions=kernel_names())
    return _compiled["module"]


# how each C parameter is passed: addresses as 64-bit integers, scalars as their C type
_ARG = {"T*": lambda dt: np.uint64, "int": lambda dt: np.int32, "T": lambda dt: dt.type,
        "unsigned long long": lambda dt: np.uint64, "float": lambda dt: np.float32}


class Launch:
    """Kernel ``name`` for ``dtype``: ``launch(size, *args)`` runs its body for i < size, the
    arrays given by address (ints), the scalars as numbers, in the order of its signature."""

    def __init__(self, name: str, dtype) -> None:
        dtype = np.dtype(dtype)
        T = "float" if dtype == np.float32 else "double"
        self.fn = _raw_module().get_function(f"{name}<{T}>")
        self.convert = [_ARG[kind](dtype) for kind, _ in signature(name)]

    def __call__(self, size: int, *args) -> None:
        blocks = (size + THREADS - 1) // THREADS
        self.fn((blocks,), (THREADS,),
                (np.int64(size), *(c(a) for c, a in zip(self.convert, args, strict=True))))


def _kernel(name: str, dtype) -> Launch:
    key = (name, np.dtype(dtype))
    if key not in _launches:
        _launches[key] = Launch(name, dtype)
    return _launches[key]


def _cublas():
    """CuPy's binding of cuBLAS (the raw calls, no checks)."""
    from cupy_backends.cuda.libs import cublas

    return cublas


class StepGemm:
    """``y = x @ W^T`` (``transpose``) or ``y = x @ W`` for the n rows of one time step, as one
    cuBLAS GEMM called directly: ``gemm(x_address, y_address, n)``. W (R, C), x and y are
    C-contiguous.

    cuBLAS is column-major: a C-contiguous (r, c) array is the column-major (c, r) matrix with
    leading dimension c, so y^T = W x^T (transpose: op(W) = T) or W^T x^T (op = N) with
    (m, n, k) = (columns of y, rows, columns of x)."""

    def __init__(self, xp, W, transpose: bool) -> None:
        self.W = W = xp.ascontiguousarray(W)  # a parameter already is: no copy
        R, C = W.shape
        self.m, self.k = (R, C) if transpose else (C, R)  # y's columns, x's columns
        self.lda = C  # W's row length, in either case
        self.op = 1 if transpose else 0  # CUBLAS_OP_T / CUBLAS_OP_N
        cublas = _cublas()
        self.gemm = cublas.sgemm if W.dtype == np.float32 else cublas.dgemm
        self.handle = xp.cuda.device.get_cublas_handle()
        cublas.setPointerMode(self.handle, 0)  # CUBLAS_POINTER_MODE_HOST: alpha, beta below
        cublas.setStream(self.handle, xp.cuda.get_current_stream().ptr)
        self.scalars = np.array([1.0, 0.0], W.dtype)  # alpha, beta (kept alive: pointers)
        self.alpha = self.scalars.ctypes.data
        self.beta = self.alpha + self.scalars.itemsize
        self.w = W.data.ptr

    def __call__(self, x: int, out: int, n: int) -> None:
        self.gemm(self.handle, self.op, 0, self.m, n, self.k, self.alpha, self.w, self.lda, x,
                  self.k, self.beta, out, self.m)


class _Rows:
    """Addresses in a C-contiguous array: ``at(t)`` is where ``a[t]`` starts."""

    def __init__(self, a) -> None:
        assert a.flags.c_contiguous
        self.base, self.stride = a.data.ptr, a.strides[0]

    def at(self, t: int) -> int:
        return self.base + t * self.stride


def dropout_mask(seed: int, shape: tuple, p: float, dtype, xp):
    """A (shape) mask on the GPU: 0 with probability ``p``, else 1 / (1 - p), in ``dtype``; the
    same ``seed`` gives the same mask."""
    mask = xp.empty(shape, dtype)
    keep = 1.0 - p
    if mask.size:
        _kernel("dropout_mask", mask.dtype)(mask.size, seed, keep, 1.0 / keep, mask.data.ptr)
    return mask


def _order(T: int, reverse: bool):
    """(t, prev, cur) per step, as in the NumPy set."""
    if reverse:
        return [(t, t + 1, t) for t in range(T - 1, -1, -1)]
    return [(t, t, t + 1) for t in range(T)]


def _live(batch_sizes, t: int, B: int) -> int:
    return B if batch_sizes is None else int(batch_sizes[t])


def _new_states(xp, T: int, h0, reverse: bool):
    hs = xp.empty((T + 1, *h0.shape), h0.dtype)
    hs[T if reverse else 0] = h0
    return hs


def _step_grads(xp, dH, T: int, B: int, H: int, dtype):
    """dL/d(output) as a C-contiguous (T, B, H) array (zeros for None): the kernels index it."""
    return xp.zeros((T, B, H), dtype) if dH is None else xp.ascontiguousarray(dH)


def _pre_activation_grads(xp, shape: tuple, dtype, batch_sizes):
    """The (T, B, X) array backward fills step by step. With variable lengths it starts at zero:
    the rows past a sequence's end, which no step writes, are then already zero (one fill, not a
    launch per step)."""
    return xp.empty(shape, dtype) if batch_sizes is None else xp.zeros(shape, dtype)


# ----------------------------------------------------------------------------------------- LSTM
def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, 4H) (input projection and both biases) -> (hs, cs, gates, tanh_cs), as the
    NumPy set (``keep`` false: cs in two rows used in turn, tanh_cs one row); XW becomes the
    gate activations i, f, g, o in place."""
    xp = xp_of(XW)
    XW = xp.ascontiguousarray(XW)
    T, B, G = XW.shape
    H = G // 4
    rows = state_rows(T, reverse, keep)
    hs, cs = _new_states(xp, T, h0, reverse), cell_states(T, c0, reverse, rows, xp)
    crow = rows.tolist()  # Python ints for the row addresses
    tanh_cs = xp.empty((T if keep else 1, B, H), XW.dtype)
    rec = xp.empty((B, G), XW.dtype)
    h_, c_, a_, tc_, rec_ = _Rows(hs), _Rows(cs), _Rows(XW), _Rows(tanh_cs), rec.data.ptr
    recurrent = StepGemm(xp, W_hh, transpose=True)
    fused = _kernel("lstm_forward", XW.dtype)
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(h_.at(p), rec_, n)  # rec = h_prev W_hh^T
        cp, cq = crow[p], crow[q]
        fused(n * H, rec_, c_.at(cp), H, a_.at(t), c_.at(cq), h_.at(q), tc_.at(t % len(tanh_cs)))
        if n < B:  # finished (forward) or not yet started (reverse) rows keep their state
            hs[q, n:] = hs[p, n:]
            cs[cq, n:] = cs[cp, n:]
    return hs, cs, XW, tanh_cs


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """Returns dA (T, B, 4H) and (dh0, dc0), as the NumPy set."""
    hs, cs, gates, tanh_cs = cache
    xp = xp_of(gates)
    T, B, G = gates.shape
    H = G // 4
    check_kept(len(cs), T + 1)
    dH = _step_grads(xp, dH, T, B, H, gates.dtype)
    dA = _pre_activation_grads(xp, gates.shape, gates.dtype, batch_sizes)
    dh, dc = dh_n.copy(), dc_n.copy()
    g_, c_, tc_, dH_, dA_ = _Rows(gates), _Rows(cs), _Rows(tanh_cs), _Rows(dH), _Rows(dA)
    dh_, dc_ = dh.data.ptr, dc.data.ptr
    recurrent = StepGemm(xp, W_hh, transpose=False)
    fused = _kernel("lstm_backward", gates.dtype)
    for t, p, _ in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(n * H, g_.at(t), c_.at(p), tc_.at(t), dH_.at(t), H, dA_.at(t), dh_, dc_)
        recurrent(dA_.at(t), dh_, n)  # dh_prev = da W_hh
    return dA, (dh, dc)


# ------------------------------------------------------------------------------------------ GRU
def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, 3H) = x W_ih^T + b_ih -> (hs, gates, gh_ns), as the NumPy set (``keep``
    false: gh_ns one row)."""
    xp = xp_of(XW)
    XW = xp.ascontiguousarray(XW)
    T, B, G = XW.shape
    H = G // 3
    hs = _new_states(xp, T, h0, reverse)
    gh_ns = xp.empty((T if keep else 1, B, H), XW.dtype)
    rec = xp.empty((B, G), XW.dtype)
    bias = xp.zeros(G, XW.dtype) if b_hh is None else xp.ascontiguousarray(b_hh)
    h_, a_, n_, rec_, b_ = _Rows(hs), _Rows(XW), _Rows(gh_ns), rec.data.ptr, bias.data.ptr
    recurrent = StepGemm(xp, W_hh, transpose=True)
    fused = _kernel("gru_forward", XW.dtype)
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(h_.at(p), rec_, n)  # rec = h_prev W_hh^T
        fused(n * H, rec_, b_, h_.at(p), H, a_.at(t), n_.at(t % len(gh_ns)), h_.at(q))
        if n < B:
            hs[q, n:] = hs[p, n:]
    return hs, XW, gh_ns


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """Returns dA_x, dA_h (T, B, 3H) and dh0, as the NumPy set."""
    hs, gates, gh_ns = cache
    xp = xp_of(gates)
    T, B, G = gates.shape
    H = G // 3
    check_kept(len(gh_ns), T)
    dH = _step_grads(xp, dH, T, B, H, gates.dtype)
    dAx, dAh = (_pre_activation_grads(xp, gates.shape, gates.dtype, batch_sizes)
                for _ in range(2))
    dh = dh_n.copy()  # dL/dh_prev is dh + rec: rows past a sequence's end keep both parts
    rec = xp.zeros((B, H), gates.dtype)
    g_, h_, n_, dH_ = _Rows(gates), _Rows(hs), _Rows(gh_ns), _Rows(dH)
    dx_, dh4_, dh_, rec_ = _Rows(dAx), _Rows(dAh), dh.data.ptr, rec.data.ptr
    recurrent = StepGemm(xp, W_hh, transpose=False)
    fused = _kernel("gru_backward", gates.dtype)
    for t, p, _ in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(n * H, g_.at(t), h_.at(p), n_.at(t), dH_.at(t), rec_, H, dx_.at(t), dh4_.at(t),
              dh_)
        recurrent(dh4_.at(t), rec_, n)  # dh_prev = dh z + da_h W_hh
    dh += rec
    return dAx, dAh, dh


# ------------------------------------------------------------------------------------------ RNN
def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, H) = x W_ih^T + b_ih + b_hh -> (hs,), as the NumPy set (``keep`` changes
    nothing)."""
    xp = xp_of(XW)
    XW = xp.ascontiguousarray(XW)
    T, B, H = XW.shape
    hs = _new_states(xp, T, h0, reverse)
    relu = int(nonlinearity == "relu")
    h_, a_ = _Rows(hs), _Rows(XW)
    recurrent = StepGemm(xp, W_hh, transpose=True)
    fused = _kernel("rnn_forward", XW.dtype)
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(h_.at(p), h_.at(q), n)  # h_prev W_hh^T, activated in place
        fused(n * H, a_.at(t), relu, h_.at(q))
        if n < B:
            hs[q, n:] = hs[p, n:]
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """Returns dA (T, B, H) and dh0, as the NumPy set."""
    (hs,) = cache
    xp = xp_of(hs)
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dH = _step_grads(xp, dH, T, B, H, hs.dtype)
    dA = _pre_activation_grads(xp, (T, B, H), hs.dtype, batch_sizes)
    dh = dh_n.copy()
    relu = int(nonlinearity == "relu")
    h_, dH_, dA_, dh_ = _Rows(hs), _Rows(dH), _Rows(dA), dh.data.ptr
    recurrent = StepGemm(xp, W_hh, transpose=False)
    fused = _kernel("rnn_backward", hs.dtype)
    for t, _, q in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(n * H, h_.at(q), dH_.at(t), relu, dA_.at(t), dh_)
        recurrent(dA_.at(t), dh_, n)  # dh_prev = da W_hh
    return dA, dh


# ------------------------------------------------------------------------ softmax cross-entropy
def softmax_xent(z, bias, t, keep, nll, scale) -> None:
    """Fused softmax cross-entropy over the rows of the C-contiguous CuPy logits ``z`` (N, V),
    in place (see the kernel's comment in :mod:`rnnlab.nn.kernels.cuda_sources` for what it
    writes). ``bias`` (V,) or None; ``t`` (N,) int64; ``keep`` (N,) bool; ``nll`` (N,) float64;
    ``scale`` None: the loss only."""
    N, V = z.shape
    if N == 0:
        return
    T = "float" if z.dtype == np.float32 else "double"
    kernel = _raw_module().get_function(f"softmax_xent<{T}>")
    b = z[0] if bias is None else bias  # any pointer of the right type when unused
    kernel((N,), (XENT_THREADS,),
           (z, b, t, keep, nll, np.int64(N), np.int32(V),
            z.dtype.type(0.0 if scale is None else scale), np.int32(bias is not None),
            np.int32(scale is not None)))
