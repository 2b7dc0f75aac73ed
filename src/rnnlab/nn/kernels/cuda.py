"""The CUDA kernel set (CuPy): the equations of :mod:`rnnlab.nn.cells` over a sequence on a GPU.

Same arguments, caches and layout as :mod:`rnnlab.nn.kernels.numpy` (read its docstring for the
time indexing and variable lengths), for CuPy arrays. Per time step there are two launches each
way: the recurrent product (one cuBLAS GEMM called directly, into a preallocated buffer: a
``cupy.matmul`` costs several times the Python time of the bare call, and at small batch the
host's time per step is what bounds the loop) and ONE fused elementwise kernel
for the whole gate arithmetic; the input projection of every step is one GEMM before the loop
(the caller's). (GRU's backward keeps dh_prev = dh z + da_h W_hh as its two terms, which the
next step's kernel adds, so that it too needs no third launch.)

Each fused kernel is a CuPy ``ElementwiseKernel`` over the n * H (row, unit) pairs of a step,
templated on the float type ``T`` (float32 and float64 from one source). Their bodies live in
:data:`SOURCES` as plain CUDA C, one line per equation of the cell; the tests compile each of
them with nvcc, and also compile them for the host and run this module's loops with them on
NumPy arrays, so the arithmetic is checked on a machine without a GPU. Every array a body
indexes is C-contiguous (the step slices ``x[t, :n]`` of (T, B, .) arrays are).

CuPy is imported only when a kernel is first built, which happens only for CuPy arrays.
"""

from __future__ import annotations

import numpy as np

from rnnlab.nn.backend import xp_of

# Helpers every body may use. ``T`` is the float type of the arrays.
PREAMBLE = """
template <typename U> __device__ U sigm(U x) { return U(1) / (U(1) + exp(-x)); }
"""

# name -> (input parameters, output parameters, body); every array parameter is ``raw`` (indexed
# by hand: a body writes several gate blocks of one row), so a call passes ``size=n * H``.
# Index: i = b * H + j (row b, unit j); r = b * G * H + j is unit j of the row's first gate.
SOURCES: dict[str, tuple[str, str, str]] = {
    "lstm_forward": (
        "raw T rec, raw T c_prev, int32 H",
        "raw T gates, raw T c, raw T h, raw T tanh_c",
        """
        const ptrdiff_t b = i / H, j = i % H, r = b * 4 * H + j;
        const T ig = sigm(gates[r] + rec[r]);                  // i = sigma(a_i)
        const T fg = sigm(gates[r + H] + rec[r + H]);          // f = sigma(a_f)
        const T gg = tanh(gates[r + 2 * H] + rec[r + 2 * H]);  // g = tanh(a_g)
        const T og = sigm(gates[r + 3 * H] + rec[r + 3 * H]);  // o = sigma(a_o)
        const T cv = fg * c_prev[i] + ig * gg;                 // c = f * c_prev + i * g
        const T tc = tanh(cv);
        gates[r] = ig; gates[r + H] = fg; gates[r + 2 * H] = gg; gates[r + 3 * H] = og;
        c[i] = cv;
        tanh_c[i] = tc;
        h[i] = og * tc;                                        // h = o * tanh(c)
        """,
    ),
    "lstm_backward": (
        "raw T gates, raw T c_prev, raw T tanh_c, raw T dH, int32 H",
        "raw T dA, raw T dh, raw T dc",  # dh: read here, overwritten by da W_hh after
        """
        const ptrdiff_t b = i / H, j = i % H, r = b * 4 * H + j;
        const T ig = gates[r], fg = gates[r + H], gg = gates[r + 2 * H], og = gates[r + 3 * H];
        const T tc = tanh_c[i];
        const T dh_ = dh[i] + dH[i];                           // dh = dh_next + dH[t]
        const T dc_ = dc[i] + dh_ * og * (T(1) - tc * tc);     // dc += dh * o * tanh'(c)
        dA[r] = dc_ * gg * ig * (T(1) - ig);                   // da_i = dc * g * sigma'(a_i)
        dA[r + H] = dc_ * c_prev[i] * fg * (T(1) - fg);        // da_f = dc * c_prev * sigma'
        dA[r + 2 * H] = dc_ * ig * (T(1) - gg * gg);           // da_g = dc * i * tanh'(a_g)
        dA[r + 3 * H] = dh_ * tc * og * (T(1) - og);           // da_o = dh * tanh(c) * sigma'
        dc[i] = dc_ * fg;                                      // dc_prev = dc * f
        """,
    ),
    "gru_forward": (
        "raw T rec, raw T b_hh, raw T h_prev, int32 H",
        "raw T gates, raw T gh_n, raw T h",
        """
        const ptrdiff_t b = i / H, j = i % H, r = b * 3 * H + j;
        const T gh_r = rec[r] + b_hh[j];                       // gh = h_prev W_hh^T + b_hh
        const T gh_z = rec[r + H] + b_hh[j + H];
        const T ghn = rec[r + 2 * H] + b_hh[j + 2 * H];
        const T rg = sigm(gates[r] + gh_r);                    // r = sigma(xw_r + gh_r)
        const T zg = sigm(gates[r + H] + gh_z);                // z = sigma(xw_z + gh_z)
        const T ng = tanh(gates[r + 2 * H] + rg * ghn);        // n = tanh(xw_n + r * gh_n)
        gates[r] = rg; gates[r + H] = zg; gates[r + 2 * H] = ng;
        gh_n[i] = ghn;
        h[i] = ng + zg * (h_prev[i] - ng);                     // h = (1 - z) * n + z * h_prev
        """,
    ),
    "gru_backward": (
        "raw T gates, raw T h_prev, raw T gh_n, raw T dH, raw T rec, int32 H",
        "raw T dAx, raw T dAh, raw T dh",
        """
        const ptrdiff_t b = i / H, j = i % H, r = b * 3 * H + j;
        const T rg = gates[r], zg = gates[r + H], ng = gates[r + 2 * H];
        const T dh_ = dh[i] + rec[i] + dH[i];                  // dh = dh_next + dH[t]
        const T da_n = dh_ * (T(1) - zg) * (T(1) - ng * ng);   // dn = dh (1 - z); tanh'
        const T da_z = dh_ * (h_prev[i] - ng) * zg * (T(1) - zg);  // dz = dh (h_prev - n)
        const T da_r = da_n * gh_n[i] * rg * (T(1) - rg);      // dr = da_n gh_n; sigma'
        dAx[r] = da_r; dAx[r + H] = da_z; dAx[r + 2 * H] = da_n;
        dAh[r] = da_r; dAh[r + H] = da_z; dAh[r + 2 * H] = da_n * rg;  // d(gh_n) = da_n r
        dh[i] = dh_ * zg;                                      // dh_prev = dh z + rec, and
                                                               // rec = da_h W_hh after
        """,
    ),
    "rnn_forward": (
        "raw T xw, int32 relu",
        "raw T h",
        """
        const T a = h[i] + xw[i];                              // a = h_prev W_hh^T + xw
        h[i] = relu ? (a > T(0) ? a : T(0)) : tanh(a);         // h = act(a)
        """,
    ),
    "rnn_backward": (
        "raw T h, raw T dH, int32 relu",
        "raw T dA, raw T dh",
        """
        const T dh_ = dh[i] + dH[i];                           // dh = dh_next + dH[t]
        const T hv = h[i];
        dA[i] = relu ? (hv > T(0) ? dh_ : T(0)) : dh_ * (T(1) - hv * hv);  // da = dh act'(a)
        """,
    ),
    # Inverted dropout's mask from a counter-based generator: element i's uniform is a hash
    # (splitmix64) of seed + i, so a mask costs one launch, no state and no transfer, and a
    # seed drawn from the host's generator makes it reproducible (and resumable).
    "dropout_mask": (
        "uint64 seed, float32 keep, T scale",
        "raw T mask",
        """
        unsigned long long z = seed + (unsigned long long)i * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        const float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // 24 bits: u in [0, 1)
        mask[i] = u < keep ? scale : T(0);                     // 1 / keep with prob. keep
        """,
    ),
}

_built: dict[str, object] = {}


def _kernel(name: str):
    """The fused kernel ``name``, built on first use: ``f(*inputs, *outputs, size=n)``."""
    if name not in _built:
        import cupy

        inputs, outputs, body = SOURCES[name]
        _built[name] = cupy.ElementwiseKernel(inputs, outputs, body, f"rnnlab_{name}",
                                              preamble=PREAMBLE)
    return _built[name]


def _cublas():
    """CuPy's binding of cuBLAS (the raw calls, no checks)."""
    from cupy_backends.cuda.libs import cublas

    return cublas


class StepGemm:
    """``y = x @ W^T`` (``transpose``) or ``y = x @ W`` for the n rows of one time step, as one
    cuBLAS GEMM called directly. W (R, C) is C-contiguous, and so are x and y (a step's rows).

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

    def __call__(self, x, out) -> None:
        self.gemm(self.handle, self.op, 0, self.m, x.shape[0], self.k, self.alpha, self.w,
                  self.lda, x.data.ptr, self.k, self.beta, out.data.ptr, self.m)


class MatmulStep:
    """The same product through ``cupy.matmul``: where CuPy's raw cuBLAS binding is not found."""

    def __init__(self, xp, W, transpose: bool) -> None:
        self.xp, self.M = xp, xp.ascontiguousarray(W.T) if transpose else W

    def __call__(self, x, out) -> None:
        self.xp.matmul(x, self.M, out=out)


def _step_product(xp, W, transpose: bool):
    """The recurrent product of every step: :class:`StepGemm`, or :class:`MatmulStep` when
    CuPy's cuBLAS binding is not where this version of CuPy is expected to keep it."""
    try:
        return StepGemm(xp, W, transpose)
    except (ImportError, AttributeError):
        return MatmulStep(xp, W, transpose)


def dropout_mask(seed: int, shape: tuple, p: float, dtype, xp):
    """A (shape) mask on the GPU: 0 with probability ``p``, else 1 / (1 - p), in ``dtype``; the
    same ``seed`` gives the same mask."""
    mask = xp.empty(shape, dtype)
    keep = 1.0 - p
    _kernel("dropout_mask")(seed, keep, mask.dtype.type(1.0 / keep), mask, size=mask.size)
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
    """dL/d(output) as a C-contiguous (T, B, H) array (zeros for None): the bodies index it."""
    return xp.zeros((T, B, H), dtype) if dH is None else xp.ascontiguousarray(dH)


# ----------------------------------------------------------------------------------------- LSTM
def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False):
    """XW (T, B, 4H) (input projection and both biases) -> (hs, cs, gates, tanh_cs), as the
    NumPy set; XW becomes the gate activations i, f, g, o in place."""
    xp = xp_of(XW)
    T, B, G = XW.shape
    H = G // 4
    hs, cs = _new_states(xp, T, h0, reverse), _new_states(xp, T, c0, reverse)
    tanh_cs = xp.empty((T, B, H), XW.dtype)
    rec = xp.empty((B, G), XW.dtype)
    recurrent = _step_product(xp, W_hh, transpose=True)
    fused = _kernel("lstm_forward")
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(hs[p, :n], rec[:n])  # h_prev W_hh^T
        fused(rec[:n], cs[p, :n], H, XW[t, :n], cs[q, :n], hs[q, :n], tanh_cs[t, :n],
              size=n * H)
        if n < B:  # finished (forward) or not yet started (reverse) rows keep their state
            hs[q, n:] = hs[p, n:]
            cs[q, n:] = cs[p, n:]
    return hs, cs, XW, tanh_cs


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """Returns dA (T, B, 4H) and (dh0, dc0), as the NumPy set."""
    hs, cs, gates, tanh_cs = cache
    xp = xp_of(gates)
    T, B, G = gates.shape
    H = G // 4
    dH = _step_grads(xp, dH, T, B, H, gates.dtype)
    dA = xp.empty_like(gates)
    dh, dc = dh_n.copy(), dc_n.copy()
    recurrent = _step_product(xp, W_hh, transpose=False)
    fused = _kernel("lstm_backward")
    for t, p, _ in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(gates[t, :n], cs[p, :n], tanh_cs[t, :n], dH[t, :n], H, dA[t, :n], dh[:n], dc[:n],
              size=n * H)
        recurrent(dA[t, :n], dh[:n])  # dh_prev = da W_hh
        if n < B:
            dA[t, n:] = 0
    return dA, (dh, dc)


# ------------------------------------------------------------------------------------------ GRU
def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False):
    """XW (T, B, 3H) = x W_ih^T + b_ih -> (hs, gates, gh_ns), as the NumPy set."""
    xp = xp_of(XW)
    T, B, G = XW.shape
    H = G // 3
    hs = _new_states(xp, T, h0, reverse)
    gh_ns = xp.empty((T, B, H), XW.dtype)
    rec = xp.empty((B, G), XW.dtype)
    bias = xp.zeros(G, XW.dtype) if b_hh is None else xp.ascontiguousarray(b_hh)
    recurrent = _step_product(xp, W_hh, transpose=True)
    fused = _kernel("gru_forward")
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(hs[p, :n], rec[:n])  # h_prev W_hh^T
        fused(rec[:n], bias, hs[p, :n], H, XW[t, :n], gh_ns[t, :n], hs[q, :n], size=n * H)
        if n < B:
            hs[q, n:] = hs[p, n:]
    return hs, XW, gh_ns


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """Returns dA_x, dA_h (T, B, 3H) and dh0, as the NumPy set."""
    hs, gates, gh_ns = cache
    xp = xp_of(gates)
    T, B, G = gates.shape
    H = G // 3
    dH = _step_grads(xp, dH, T, B, H, gates.dtype)
    dAx, dAh = xp.empty_like(gates), xp.empty_like(gates)
    dh = dh_n.copy()  # dL/dh_prev is dh + rec: rows past a sequence's end keep both parts
    rec = xp.zeros((B, H), gates.dtype)
    recurrent = _step_product(xp, W_hh, transpose=False)
    fused = _kernel("gru_backward")
    for t, p, _ in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(gates[t, :n], hs[p, :n], gh_ns[t, :n], dH[t, :n], rec[:n], H, dAx[t, :n],
              dAh[t, :n], dh[:n], size=n * H)
        recurrent(dAh[t, :n], rec[:n])  # dh_prev = dh z + da_h W_hh
        if n < B:
            dAx[t, n:] = 0
            dAh[t, n:] = 0
    dh += rec
    return dAx, dAh, dh


# ------------------------------------------------------------------------------------------ RNN
def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """XW (T, B, H) = x W_ih^T + b_ih + b_hh -> (hs,), as the NumPy set."""
    xp = xp_of(XW)
    T, B, H = XW.shape
    hs = _new_states(xp, T, h0, reverse)
    relu = int(nonlinearity == "relu")
    recurrent = _step_product(xp, W_hh, transpose=True)
    fused = _kernel("rnn_forward")
    for t, p, q in _order(T, reverse):
        n = _live(batch_sizes, t, B)
        recurrent(hs[p, :n], hs[q, :n])  # h_prev W_hh^T, activated in place
        fused(XW[t, :n], relu, hs[q, :n], size=n * H)
        if n < B:
            hs[q, n:] = hs[p, n:]
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """Returns dA (T, B, H) and dh0, as the NumPy set."""
    (hs,) = cache
    xp = xp_of(hs)
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dH = _step_grads(xp, dH, T, B, H, hs.dtype)
    dA = xp.empty((T, B, H), hs.dtype)
    dh = dh_n.copy()
    relu = int(nonlinearity == "relu")
    recurrent = _step_product(xp, W_hh, transpose=False)
    fused = _kernel("rnn_backward")
    for t, _, q in reversed(_order(T, reverse)):
        n = _live(batch_sizes, t, B)
        fused(hs[q, :n], dH[t, :n], relu, dA[t, :n], dh[:n], size=n * H)
        recurrent(dA[t, :n], dh[:n])  # dh_prev = da W_hh
        if n < B:
            dA[t, n:] = 0
    return dA, dh


# ------------------------------------------------------------------------ softmax cross-entropy
XENT_THREADS = 256  # threads per row (one block per row of logits)

XENT_SOURCE = r"""
template <typename T> __device__ T neg_inf();
template <> __device__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

template <typename T>
__device__ T block_reduce(T v, T* red, bool is_max) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            T o = red[threadIdx.x + s];
            red[threadIdx.x] = is_max ? (o > red[threadIdx.x] ? o : red[threadIdx.x])
                                      : red[threadIdx.x] + o;
        }
        __syncthreads();
    }
    T out = red[0];
    __syncthreads();  // red is reused by the next reduction
    return out;
}

// One block per row n of z (N, V): z += bias; nll[n] = -log softmax(z)[t[n]] (0 where keep[n]
// is 0); with grad, z becomes scale * (softmax(z) - onehot(t)) (0 where keep[n] is 0), else
// exp(z - max) (the loss only).
template <typename T>
__global__ void softmax_xent(T* z, const T* bias, const long long* t, const bool* keep,
                             double* nll, long long N, int V, T scale, int has_bias, int grad) {
    __shared__ T red[256];
    const long long n = blockIdx.x;
    if (n >= N) return;
    T* zr = z + n * V;
    T m = neg_inf<T>();
    for (int k = threadIdx.x; k < V; k += blockDim.x) {
        T v = has_bias ? zr[k] + bias[k] : zr[k];
        zr[k] = v;
        m = v > m ? v : m;
    }
    m = block_reduce(m, red, true);                  // max: shift for stability
    const T target = zr[t[n]] - m;                   // the shifted target logit
    T s = T(0);
    for (int k = threadIdx.x; k < V; k += blockDim.x) {
        T e = exp(zr[k] - m);
        zr[k] = e;
        s += e;
    }
    s = block_reduce(s, red, false);                 // sum of exp
    const bool counted = keep[n];
    if (threadIdx.x == 0) nll[n] = counted ? log((double)s) - (double)target : 0.0;
    if (!grad) return;
    const T c = counted ? scale / s : T(0);
    const T tk = counted ? scale : T(0);
    for (int k = threadIdx.x; k < V; k += blockDim.x)
        zr[k] = zr[k] * c - (k == t[n] ? tk : T(0));  // scale * (softmax - onehot)
}
"""

_xent: dict = {}


def softmax_xent(z, bias, t, keep, nll, scale) -> None:
    """Fused softmax cross-entropy over the rows of the C-contiguous CuPy logits ``z`` (N, V),
    in place (the kernel's comment says what it writes). ``bias`` (V,) or None; ``t`` (N,)
    int64; ``keep`` (N,) bool; ``nll`` (N,) float64; ``scale`` None: the loss only."""
    import cupy

    if "module" not in _xent:
        _xent["module"] = cupy.RawModule(
            code=XENT_SOURCE, name_expressions=["softmax_xent<float>", "softmax_xent<double>"])
    T = "float" if z.dtype == cupy.float32 else "double"
    kernel = _xent["module"].get_function(f"softmax_xent<{T}>")
    N, V = z.shape
    if N == 0:
        return
    b = z[0] if bias is None else bias  # any pointer of the right type when unused
    kernel((N,), (XENT_THREADS,),
           (z, b, t, keep, nll, cupy.int64(N), cupy.int32(V),
            z.dtype.type(0.0 if scale is None else scale), cupy.int32(bias is not None),
            cupy.int32(scale is not None)))
