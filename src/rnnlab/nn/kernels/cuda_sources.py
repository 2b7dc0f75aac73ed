"""The CUDA C of the GPU kernel set (:mod:`rnnlab.nn.kernels.cuda`), as plain text.

The fused step kernels are bodies, one line per equation of the cell (:mod:`rnnlab.nn.cells`),
each run for every index i of a step; :func:`module_source` wraps them in templated
``__global__`` functions (T = float or double) with a grid-stride loop, and appends the softmax
cross-entropy kernel. CuPy compiles the result once (``cupy.RawModule``); the tests compile the
same text with nvcc, and for the host (one thread) to run it without a GPU.
"""

from __future__ import annotations

# Helpers every body may use. ``T`` is the float type of the arrays.
PREAMBLE = """
template <typename U> __device__ U sigm(U x) { return U(1) / (U(1) + exp(-x)); }
"""

# name -> (input parameters, output parameters, body), the parameters in CuPy's notation: ``raw T
# x`` an array of the float type T (a pointer, indexed by hand: a body writes several gate blocks
# of one row), ``int32``, ``uint64``, ``float32`` or ``T`` a scalar. A body runs for each index i
# below ``size`` (n * H for a step: i = b * H + j is row b, unit j; r = b * G * H + j, G the
# number of gates, is unit j of the row's first gate).
SOURCES: dict[str, tuple[str, str, str]] = {
    "lstm_forward": (
        "raw T rec, raw T c_prev, int32 H",
        "raw T gates, raw T c, raw T h, raw T tanh_c",
        """
        const long long b = i / H, j = i % H, r = b * 4 * H + j;
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
        const long long b = i / H, j = i % H, r = b * 4 * H + j;
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
        const long long b = i / H, j = i % H, r = b * 3 * H + j;
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
        const long long b = i / H, j = i % H, r = b * 3 * H + j;
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

C_TYPES = {"int32": "int", "uint64": "unsigned long long", "float32": "float", "T": "T"}


def _params(spec: str) -> list[tuple[str, str]]:
    """'raw T a, int32 H, T s' -> [('T*', 'a'), ('int', 'H'), ('T', 's')]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        out.append(("T*", words[-1]) if words[0] == "raw" else (C_TYPES[words[0]], words[1]))
    return out


def signature(name: str) -> list[tuple[str, str]]:
    """The C parameters (type, name) of kernel ``name`` after its ``size``: inputs, outputs."""
    inputs, outputs, _ = SOURCES[name]
    return _params(inputs) + _params(outputs)


def module_source() -> str:
    """Every step kernel as ``template <typename T> __global__ void name(long long size, ...)``
    over a grid-stride loop, then the softmax cross-entropy kernel."""
    parts = [PREAMBLE]
    for name, (_, _, body) in SOURCES.items():
        args = ", ".join(f"{t} {n}" if t.endswith("*") else f"const {t} {n}"
                         for t, n in signature(name))
        parts.append(f"template <typename T>\n__global__ void {name}(const long long size, "
                     f"{args}) {{\n"
                     "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; "
                     "i < size;\n"
                     "         i += (long long)blockDim.x * gridDim.x) {"
                     f"{body.rstrip()}\n    }}\n}}\n")
    parts.append(XENT_SOURCE)
    return "\n".join(parts)


def kernel_names() -> list[str]:
    """Every kernel's name expression, as CuPy's RawModule instantiates them."""
    names = [*SOURCES, "softmax_xent"]
    return [f"{name}<{T}>" for name in names for T in ("float", "double")]


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
