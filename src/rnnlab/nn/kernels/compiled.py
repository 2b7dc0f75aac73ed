"""The compiled kernel set: each time loop of :mod:`rnnlab.nn.kernels.numpy` as one numba call.

Same arguments, same caches, same layout (time-major, ``reverse``, variable lengths as the first
``batch_sizes[t]`` rows) as the NumPy set, whose docstring describes them; the equations are those
of :mod:`rnnlab.nn.cells`. What changes is the cost per time step: the NumPy set makes 10-20
NumPy calls per step (about 1-2 us each, most of the time at batch 1), this set makes none. The
whole sequence runs in one compiled call (for steps of at least
:data:`rnnlab.nn.kernels.PYTHON_LOOP_MIN` multiply-adds, a Python loop instead: one NumPy matmul
and one compiled cell call per step, so that only NumPy's BLAS pool runs; see "the time loop in
Python" below), and per step there is

* one recurrent product, ``h W_hh^T`` forward (:func:`_product_t`) and ``da W_hh`` backward
  (:func:`_product`): ``np.dot`` inside numba, a BLAS GEMM, or for tiny products
  (``n * K * N <= HAND_LOOP_MAX`` multiply-adds) a plain loop that saves the BLAS call's
  overhead;
* per live row, a few contiguous loops over the hidden units that compute every activation and
  write the cache (forward) or every pre-activation gradient (backward); LLVM vectorises them
  (SIMD over 8 float32 units with AVX2), float32 exp and tanh included: see below.

The input projection ``XW`` is still computed by the caller before the loop, and backward still
returns the pre-activation gradients so the caller computes dW and dx with single GEMMs.

LSTM, per live row and unit (gate blocks i, f, g, o of ``a = XW[t] + h_prev W_hh^T``)::

    i, f, o = sigma(a_i), sigma(a_f), sigma(a_o);  g = tanh(a_g)
    c = f c_prev + i g;  h = o tanh(c)
    backward:  dh = dh_next + dH[t];  dc = dc_next + dh o (1 - tanh(c)^2)
               da_i = dc g i (1-i);  da_f = dc c_prev f (1-f);  da_g = dc i (1-g^2)
               da_o = dh tanh(c) o (1-o);  dc_prev = dc f;  dh_prev = da W_hh

GRU (r, z, n; ``gh = h_prev W_hh^T + b_hh``)::

    r = sigma(XW_r + gh_r);  z = sigma(XW_z + gh_z);  n = tanh(XW_n + r gh_n)
    h = n + z (h_prev - n)
    backward:  da_n = dh (1-z) (1-n^2);  da_z = dh (h_prev - n) z (1-z)
               da_r = da_n gh_n r (1-r);  d(gh_n) = da_n r;  dh_prev = dh z + dA_h W_hh

RNN: ``h = act(XW + h_prev W_hh^T)``;  ``da = dh act'``, act' = 1 - h^2 (tanh) or [h > 0]
(relu);  ``dh_prev = da W_hh``.

Floating point. float32 and float64 each get their own specialisation (compiled on first use,
then cached on disk: ``cache=True``). The arithmetic stays in the array's dtype: the constant 1
is passed in as a scalar of that dtype, so float32 never widens to float64. ``FASTMATH`` is
{nsz, arcp, contract, reassoc}: signed zeros, reciprocals, fused multiply-adds and reordering
may change the last bit, which no test or user can see. Left out on purpose: ``nnan`` and
``ninf`` (the trainer's NaN guard relies on a NaN reaching the loss, and sigma(x) for very
negative x relies on 1 / (1 + inf) = 0) and ``afn`` (approximate libm calls). ``error_model=
"numpy"``: a division by zero is inf or NaN, not an exception, so the loops have no exits.

Activations. float64 uses libm (``math.exp``, ``math.tanh``): the float64 set matches the NumPy
set to 1e-12 and torch to 1e-10. float32 uses :func:`sigmoid32` and :func:`tanh32`, built on an
exp written here (range reduction y = n ln2 + r, a degree-7 polynomial for exp(r), 2^n from the
exponent bits) that LLVM inlines and vectorises (libm's are one scalar call per element). Both
are within 3 ulp of the exact function (sigma below 2^-126, for x < -87, within 2^-126
absolutely; tests/nn/test_kernels.py measures it), NaN stays NaN, and sigma(+-inf),
tanh(+-inf) are the limits. (In phase 1 of issue 15 the gate loops ran scalar, 3-5x slower per
element than NumPy's SIMD ufuncs: libm calls, the division's ZeroDivisionError check, and
gate blocks addressed by computed indices each stop LLVM's vectoriser.)
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from rnnlab.nn import kernels as _dispatch
from rnnlab.nn.kernels.numpy import StepProduct, cell_states, check_kept, state_rows

FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# A step product of at most this many multiply-adds (rows * K * N) runs as a plain compiled loop
# instead of a BLAS call: BLAS's fixed cost per call is ~1 us, a plain loop does a few
# multiply-adds per ns. Measured against 2^16, 2^18 and 2^20 on whole-loop layer shapes (LSTM and
# GRU, 200 x 1 x 64/128/256, 200 x 4 x 128, 35 x 8 x 64, inference and training): 2^12 was the
# fastest or within 7% everywhere but 200 x 4 x 128 inference, where the plain loop was 1.1-1.5x
# faster and the training rows as fast or up to 1.25x slower (benchmarks/RESULTS.md section
# 11). Read at every call (passed into the kernels, not compiled in), so tests can force either
# path.
HAND_LOOP_MAX = 1 << 12

# error_model="numpy": a float division by zero gives inf/NaN instead of raising, so the gate
# loops have no exception exits and LLVM can vectorise them.
_jit = njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")


@_jit
def _product(x, W, out, hand_max):
    """out = x @ W for x (n, K), W (K, N), out (n, N), all C-contiguous and distinct: the
    backward's ``da W_hh``."""
    n, K = x.shape
    N = W.shape[1]
    if n * K * N > hand_max:
        np.dot(x, W, out)
        return
    for b in range(n):
        for j in range(N):
            out[b, j] = 0
        for k in range(K):
            xk = x[b, k]
            for j in range(N):  # contiguous in W and out: vectorises without reassociation
                out[b, j] += xk * W[k, j]


@_jit
def _product_t(x, W, out, hand_max, zero):
    """out = x @ W^T for x (n, K), W (N, K), out (n, N), all C-contiguous and distinct: the
    forward's ``h W_hh^T``, on W_hh as stored (no transposed copy per call)."""
    n, K = x.shape
    N = W.shape[0]
    if n * K * N > hand_max:
        np.dot(x, W.T, out)  # W.T is F-contiguous: BLAS reads it transposed, no copy
        return
    for b in range(n):
        for j in range(N):
            acc = zero
            for k in range(K):  # a dot product: vectorises with FASTMATH's reassoc
                acc += x[b, k] * W[j, k]
            out[b, j] = acc


# ------------------------------------------------------------------------------ activations
# float64: libm's exp and tanh (``math.exp``, ``math.tanh``), so the float64 set matches the
# NumPy set to 1e-12. float32: :func:`sigmoid32` and :func:`tanh32` below, built on an exp of our
# own that LLVM inlines and vectorises in the gate loops (libm's are scalar calls per element).
# The kernels call :func:`_sigmoid` and :func:`_tanh`, which pick one or the other by the type.
_F = np.float32
_LOG2E = _F(1.4426950408889634)  # 1 / ln 2
# ln 2 = HI + LO, HI with 9 significant bits so that n * HI is exact (Cody-Waite)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)
# exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2: Cephes' minimax coefficients for expf
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_HALF, _ONE, _TWO = _F(0.5), _F(1.0), _F(2.0)
_EXP_HI = _F(88.75)  # exp(x) = inf above this (n = 128 below); exp(88.75) would be 3.4e38
_EXP_LO = _F(-87.3)  # exp(x) for x below is exp(-87.3) = 1.2e-38 (keeps n >= -126)
_TANH_MAX = _F(9.5)  # float32 tanh(x) rounds to +-1 beyond 9.01


@intrinsic
def _pow2(typingctx, n):
    """2^n for a float32 n holding an integer in [-127, 128], by building the float's exponent
    bits: the low 8 bits of ``bits(n + 127 + 2^23)`` are n + 127, shifted into the exponent field
    (n = 128 gives inf, n = -127 gives 0). A NaN n gives 0 (the caller's r is NaN then)."""
    if not (isinstance(n, types.Float) and n.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        biased = builder.fadd(args[0], ir.Constant(ir.FloatType(), 127.0 + 2.0**23))
        bits = builder.bitcast(biased, ir.IntType(32))
        bits = builder.shl(bits, ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(n), codegen


# No reassoc here: it would undo the two-part range reduction. contract lets Horner use FMAs.
_jit32 = njit(cache=True, fastmath={"contract"}, nogil=True, error_model="numpy")


@_jit32
def _exp_parts(y):
    """(2^n, exp(r) - 1) with y = n ln2 + r, |r| <= ln(2)/2: exp(y) = 2^n (1 + em),
    expm1(y) = 2^n em + (2^n - 1). The caller clamps y (NaN passes through as NaN em)."""
    n = np.floor(y * _LOG2E + _HALF)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    em = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * r * r + r
    return _pow2(n), em


@_jit32
def sigmoid32(x):
    """float32 sigma(x) = 1 / (1 + exp(-x)), within 3 ulp where sigma(x) >= 2^-126 and within
    2^-126 absolutely below; sigma(-inf) = 0, sigma(inf) = 1, NaN -> NaN. Branch-free: the clamps
    are selects (written so that a NaN compares false and passes through)."""
    y = -x
    y = _EXP_HI if y > _EXP_HI else y
    y = _EXP_LO if y < _EXP_LO else y
    s, em = _exp_parts(y)
    return _ONE / (_ONE + s * (_ONE + em))  # exp(-x) = inf for x < -88.75: 1 / inf = 0


@_jit32
def tanh32(x):
    """float32 tanh(x) = expm1(2x) / (expm1(2x) + 2), within 3 ulp (relative error below 4e-7
    also near 0, where expm1 keeps the relative accuracy that 1 - 2 / (1 + exp(2x)) loses);
    x is clamped to [-9.5, 9.5], beyond which float32 tanh is +-1; NaN -> NaN."""
    y = _TANH_MAX if x > _TANH_MAX else x
    y = -_TANH_MAX if y < -_TANH_MAX else y
    s, em = _exp_parts(y + y)
    e = s * em + (s - _ONE)
    return e / (e + _TWO)


@_jit
def _sigmoid64(x):
    return 1.0 / (1.0 + math.exp(-x))


@_jit
def _tanh64(x):
    return math.tanh(x)


def _sigmoid(x):
    """sigma(x) in the kernels: :func:`sigmoid32` for float32, libm's exp otherwise."""
    return 1.0 / (1.0 + math.exp(-x))


def _tanh(x):
    """tanh(x) in the kernels: :func:`tanh32` for float32, libm's tanh otherwise."""
    return math.tanh(x)


@overload(_sigmoid, jit_options={"cache": True})
def _sigmoid_typed(x):
    if x == types.float32:
        return lambda x: sigmoid32(x)
    return lambda x: _sigmoid64(x)


@overload(_tanh, jit_options={"cache": True})
def _tanh_typed(x):
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: _tanh64(x)


@_jit
def apply_activations(x, sig, tanh):
    """sig[k] = sigma(x[k]), tanh[k] = tanh(x[k]) with the kernels' functions (for tests and
    measurements)."""
    for k in range(x.shape[0]):
        sig[k] = _sigmoid(x[k])
        tanh[k] = _tanh(x[k])


@_jit
def _forward_step(s, T, reverse):
    """The s-th step of a forward pass: (t, p, q) = its time, and the rows of h_prev and of the
    new h in ``hs`` (the layout of :mod:`rnnlab.nn.kernels.numpy`)."""
    t = T - 1 - s if reverse else s
    return (t, t + 1, t) if reverse else (t, t, t + 1)


@_jit
def _backward_step(s, T, reverse):
    """The s-th step of a backward pass (the forward's steps, last first): (t, p, q) as
    :func:`_forward_step` gives them."""
    t = s if reverse else T - 1 - s
    return (t, t + 1, t) if reverse else (t, t, t + 1)


# ----------------------------------------------------------------------------------------- LSTM
# One step's cell arithmetic is its own compiled function (``_lstm_cells``, ...), called by the
# whole-sequence loops below (where numba inlines it) and, for large steps, by a Python loop
# whose step product is NumPy's matmul (:func:`rnnlab.nn.kernels.loop_in_python`).
#
# The gate loops work on one batch row at a time through 1-D views (``a = gates[t, b]``, its
# blocks ``a[:H]``, ...), in several short loops over the hidden units: each loop is contiguous,
# branch-free and touches few arrays, which is what LLVM's loop vectoriser needs (one loop over
# all gates of ``gates[t, b, k * H + j]`` did not vectorise: the computed indices and the number
# of arrays it would have to check for overlap at run time stop it).
@_jit
def _keep_rows(new, old, n):
    """new[b] = old[b] for the rows b >= n (sequences that ended, or have not begun, keep their
    state). Written as loops: the row assignment ``new[b] = old[b]`` compiled to array-setitem
    code that took about 2 s of numba's 2.5-3 s compile of :func:`_lstm_cells` (0.5 s as
    loops; benchmarks/RESULTS.md section 11)."""
    for b in range(n, new.shape[0]):
        for j in range(new.shape[1]):
            new[b, j] = old[b, j]


@_jit
def _lstm_cells(a_t, rec, c_prev, c, tanh_c, h_prev, h, n):
    """One step: a_t (B, 4H) = x W_ih^T + b becomes i, f, g, o for the first n rows (rec = h_prev
    W_hh^T); c, tanh(c) and h are written; rows n.. keep their state."""
    G = a_t.shape[1]
    H = G // 4
    for b in range(n):
        a, r = a_t[b], rec[b]
        for k in range(G):
            a[k] += r[k]  # a = x W_ih^T + b + h_prev W_hh^T
        i, f, g, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
        for j in range(H):
            i[j] = _sigmoid(i[j])
        for j in range(H):
            f[j] = _sigmoid(f[j])
        for j in range(H):
            g[j] = _tanh(g[j])
        for j in range(H):
            o[j] = _sigmoid(o[j])
        cp, cb, tc, hb = c_prev[b], c[b], tanh_c[b], h[b]
        for j in range(H):
            cb[j] = f[j] * cp[j] + i[j] * g[j]
        for j in range(H):
            tc[j] = _tanh(cb[j])
        for j in range(H):
            hb[j] = o[j] * tc[j]
    _keep_rows(h, h_prev, n)  # finished (or not yet started) sequences keep their state
    _keep_rows(c, c_prev, n)


@_jit
def _lstm_cells_backward(a_t, c_prev, tanh_c, dH_t, dh, dc, dA_t, n, one):
    """One step back: dh += dH[t], dc and dA[t] (zero beyond row n) from the step's cache; dc
    becomes dc_prev = dc f. The caller then sets dh = dA[t] W_hh."""
    B, G = a_t.shape
    H = G // 4
    for b in range(n):
        a, da = a_t[b], dA_t[b]
        i, f, g, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
        da_i, da_f, da_g, da_o = da[:H], da[H:2 * H], da[2 * H:3 * H], da[3 * H:]
        tc, cp, dH_, dh_, dc_ = tanh_c[b], c_prev[b], dH_t[b], dh[b], dc[b]
        for j in range(H):
            dh_[j] += dH_[j]  # dh = dh_next + dH[t]
            dc_[j] += dh_[j] * o[j] * (one - tc[j] * tc[j])
            da_o[j] = dh_[j] * tc[j] * o[j] * (one - o[j])
        for j in range(H):
            da_i[j] = dc_[j] * g[j] * i[j] * (one - i[j])
            da_f[j] = dc_[j] * cp[j] * f[j] * (one - f[j])
            da_g[j] = dc_[j] * i[j] * (one - g[j] * g[j])
            dc_[j] *= f[j]  # dc_prev = dc f
    for b in range(n, B):
        for k in range(G):
            dA_t[b, k] = 0


@_jit
def _lstm_forward(gates, W_hh, hs, cs, crow, tanh_cs, rec, batch_sizes, reverse, hand_max, one):
    T = gates.shape[0]
    for s in range(T):
        t, p, q = _forward_step(s, T, reverse)
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, rec[:n], hand_max, one - one)  # h_prev W_hh^T
        _lstm_cells(gates[t], rec, cs[crow[p]], cs[crow[q]], tanh_cs[t % tanh_cs.shape[0]],
                    hs[p], hs[q], n)


@_jit
def _lstm_backward(gates, cs, tanh_cs, W_hh, dH, dh, dc, dA, batch_sizes, reverse, hand_max, one):
    T = gates.shape[0]
    for s in range(T):
        t, p, _ = _backward_step(s, T, reverse)
        n = batch_sizes[t]
        _lstm_cells_backward(gates[t], cs[p], tanh_cs[t], dH[t], dh, dc, dA[t], n, one)
        _product(dA[t, :n], W_hh, dh[:n], hand_max)  # dh_prev = da W_hh


# ------------------------------------------------------------------------------------------ GRU
@_jit
def _gru_cells(a_t, gh, b_hh, gh_n_t, h_prev, h, n):
    """One step: a_t (B, 3H) = x W_ih^T + b_ih becomes r, z, n for the first n rows (gh = h_prev
    W_hh^T, b_hh added here); gh_n_t keeps h_prev W_hn^T + b_hn; rows n.. keep their state."""
    H = a_t.shape[1] // 3
    b_r, b_z, b_n = b_hh[:H], b_hh[H:2 * H], b_hh[2 * H:]
    for b in range(n):
        a, g = a_t[b], gh[b]
        r, z, cand = a[:H], a[H:2 * H], a[2 * H:]
        gh_r, gh_z, gh_hn, gh_n = g[:H], g[H:2 * H], g[2 * H:], gh_n_t[b]
        hp, hb = h_prev[b], h[b]
        for j in range(H):
            r[j] = _sigmoid(r[j] + (gh_r[j] + b_r[j]))
        for j in range(H):
            z[j] = _sigmoid(z[j] + (gh_z[j] + b_z[j]))
        for j in range(H):
            gh_n[j] = gh_hn[j] + b_n[j]
        for j in range(H):
            cand[j] = _tanh(cand[j] + r[j] * gh_n[j])
        for j in range(H):
            hb[j] = cand[j] + z[j] * (hp[j] - cand[j])
    _keep_rows(h, h_prev, n)


@_jit
def _gru_cells_backward(a_t, h_prev, gh_n_t, dH_t, dh, dAx_t, dAh_t, n, one):
    """One step back: dh += dH[t]; dA_x[t], dA_h[t] (zero beyond row n); dh becomes its dh z
    part. The caller then adds dA_h[t] W_hh to dh."""
    B, G = a_t.shape
    H = G // 3
    for b in range(n):
        a, dx, dg = a_t[b], dAx_t[b], dAh_t[b]
        r, z, cand = a[:H], a[H:2 * H], a[2 * H:]
        da_r, da_z, da_n = dx[:H], dx[H:2 * H], dx[2 * H:]
        hp, gh_n, dH_, dh_ = h_prev[b], gh_n_t[b], dH_t[b], dh[b]
        for j in range(H):
            dh_[j] += dH_[j]  # dh = dh_next + dH[t]
            da_n[j] = dh_[j] * (one - z[j]) * (one - cand[j] * cand[j])
            da_z[j] = dh_[j] * (hp[j] - cand[j]) * z[j] * (one - z[j])
            da_r[j] = da_n[j] * gh_n[j] * r[j] * (one - r[j])
            dh_[j] *= z[j]  # the dh z part of dh_prev
        for k in range(2 * H):
            dg[k] = dx[k]  # da_r, da_z: the same for the h W_hh^T + b_hh side
        dg_n = dg[2 * H:]
        for j in range(H):
            dg_n[j] = da_n[j] * r[j]  # d(gh_n)
    for b in range(n, B):
        for k in range(G):
            dAx_t[b, k] = 0
            dAh_t[b, k] = 0


@_jit
def _add_rows(dh, back, n):
    for b in range(n):
        dh_, bk = dh[b], back[b]
        for j in range(dh_.shape[0]):
            dh_[j] += bk[j]


@_jit
def _gru_forward(gates, W_hh, b_hh, hs, gh_ns, rec, batch_sizes, reverse, hand_max, one):
    T = gates.shape[0]
    for s in range(T):
        t, p, q = _forward_step(s, T, reverse)
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, rec[:n], hand_max, one - one)  # h_prev W_hh^T
        _gru_cells(gates[t], rec, b_hh, gh_ns[t % gh_ns.shape[0]], hs[p], hs[q], n)


@_jit
def _gru_backward(gates, hs, gh_ns, W_hh, dH, dh, dAx, dAh, rec, batch_sizes, reverse, hand_max,
                  one):
    T = gates.shape[0]
    for s in range(T):
        t, p, _ = _backward_step(s, T, reverse)
        n = batch_sizes[t]
        _gru_cells_backward(gates[t], hs[p], gh_ns[t], dH[t], dh, dAx[t], dAh[t], n, one)
        _product(dAh[t, :n], W_hh, rec[:n], hand_max)
        _add_rows(dh, rec, n)  # dh_prev = dh z + dA_h W_hh


# ------------------------------------------------------------------------------------------ RNN
@_jit
def _rnn_cells(xw_t, h_prev, h, n, relu, one):
    """One step: h (holding h_prev W_hh^T in its first n rows) becomes act(xw + that); rows
    n.. keep their state."""
    H = xw_t.shape[1]
    zero = one - one
    for b in range(n):
        hb, xw = h[b], xw_t[b]
        if relu:
            for j in range(H):
                a = hb[j] + xw[j]
                hb[j] = zero if a < zero else a  # NaN stays NaN, as np.maximum
        else:
            for j in range(H):
                hb[j] = _tanh(hb[j] + xw[j])
    _keep_rows(h, h_prev, n)


@_jit
def _rnn_cells_backward(h, dH_t, dh, dA_t, n, relu, one):
    """One step back: dA[t] = (dh + dH[t]) act' (zero beyond row n). The caller then sets
    dh = dA[t] W_hh."""
    B, H = dA_t.shape
    zero = one - one
    for b in range(n):
        hb, da, dh_, dH_ = h[b], dA_t[b], dh[b], dH_t[b]
        if relu:
            for j in range(H):
                da[j] = (dh_[j] + dH_[j]) * (one if hb[j] > zero else zero)
        else:
            for j in range(H):
                da[j] = (dh_[j] + dH_[j]) * (one - hb[j] * hb[j])  # da = dh act'
    for b in range(n, B):
        for j in range(H):
            dA_t[b, j] = 0


@_jit
def _rnn_forward(XW, W_hh, hs, batch_sizes, reverse, relu, hand_max, one):
    T = XW.shape[0]
    for s in range(T):
        t, p, q = _forward_step(s, T, reverse)
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, hs[q, :n], hand_max, one - one)  # h_prev W_hh^T in h's place
        _rnn_cells(XW[t], hs[p], hs[q], n, relu, one)


@_jit
def _rnn_backward(hs, W_hh, dH, dh, dA, batch_sizes, reverse, relu, hand_max, one):
    T = dA.shape[0]
    for s in range(T):
        t, _, q = _backward_step(s, T, reverse)  # q: the row of h written at step t
        n = batch_sizes[t]
        _rnn_cells_backward(hs[q], dH[t], dh, dA[t], n, relu, one)
        _product(dA[t, :n], W_hh, dh[:n], hand_max)  # dh_prev = da W_hh


# --------------------------------------------------------------- the time loop in Python
# For steps of many multiply-adds the loop runs in Python instead: per step one NumPy matmul
# (NumPy's BLAS and its thread pool, the rows padded as the NumPy set pads them) and one call of
# the compiled cell function. A few microseconds of Python per step are nothing beside such a
# product, and the product then uses every core: numba's np.dot calls SciPy's OpenBLAS, a second
# thread pool beside NumPy's, which ran single-threaded beside it or stalled against it
# (benchmarks/RESULTS.md section 11).
#
# Which loop runs: :func:`rnnlab.nn.kernels.loop_in_python` (the limit is measured there).


def _steps(T, reverse):
    """(t, p, q) per forward step, as :func:`_forward_step`."""
    for s in range(T):
        yield (T - 1 - s, T - s, T - 1 - s) if reverse else (s, s, s + 1)


def _lstm_forward_py(gates, W_hh, hs, cs, crow, tanh_cs, sizes, reverse):
    B = gates.shape[1]
    recurrent = StepProduct(W_hh.T, B, gates.shape[0])
    rec = np.empty_like(gates[0])
    for t, p, q in _steps(gates.shape[0], reverse):
        n = int(sizes[t])
        recurrent(hs[p, :n], out=rec[:n])  # h_prev W_hh^T
        _lstm_cells(gates[t], rec, cs[crow[p]], cs[crow[q]], tanh_cs[t % len(tanh_cs)], hs[p],
                    hs[q], n)


def _lstm_backward_py(gates, cs, tanh_cs, W_hh, dH, dh, dc, dA, sizes, reverse, one):
    back = StepProduct(W_hh, gates.shape[1], gates.shape[0])
    for t, p, _ in reversed(list(_steps(gates.shape[0], reverse))):
        n = int(sizes[t])
        _lstm_cells_backward(gates[t], cs[p], tanh_cs[t], dH[t], dh, dc, dA[t], n, one)
        back(dA[t, :n], out=dh[:n])  # dh_prev = da W_hh


def _gru_forward_py(gates, W_hh, b_hh, hs, gh_ns, sizes, reverse):
    recurrent = StepProduct(W_hh.T, gates.shape[1], gates.shape[0])
    rec = np.empty_like(gates[0])
    for t, p, q in _steps(gates.shape[0], reverse):
        n = int(sizes[t])
        recurrent(hs[p, :n], out=rec[:n])
        _gru_cells(gates[t], rec, b_hh, gh_ns[t % gh_ns.shape[0]], hs[p], hs[q], n)


def _gru_backward_py(gates, hs, gh_ns, W_hh, dH, dh, dAx, dAh, sizes, reverse, one):
    back = StepProduct(W_hh, gates.shape[1], gates.shape[0])
    for t, p, _ in reversed(list(_steps(gates.shape[0], reverse))):
        n = int(sizes[t])
        _gru_cells_backward(gates[t], hs[p], gh_ns[t], dH[t], dh, dAx[t], dAh[t], n, one)
        dh[:n] += back(dAh[t, :n])  # dh_prev = dh z + dA_h W_hh


def _rnn_forward_py(XW, W_hh, hs, sizes, reverse, relu, one):
    recurrent = StepProduct(W_hh.T, XW.shape[1], XW.shape[0])
    for t, p, q in _steps(XW.shape[0], reverse):
        n = int(sizes[t])
        recurrent(hs[p, :n], out=hs[q, :n])  # h_prev W_hh^T in h's place
        _rnn_cells(XW[t], hs[p], hs[q], n, relu, one)


def _rnn_backward_py(hs, W_hh, dH, dh, dA, sizes, reverse, relu, one):
    back = StepProduct(W_hh, dA.shape[1], dA.shape[0])
    for t, _, q in reversed(list(_steps(dA.shape[0], reverse))):
        n = int(sizes[t])
        _rnn_cells_backward(hs[q], dH[t], dh, dA[t], n, relu, one)
        back(dA[t, :n], out=dh[:n])  # dh_prev = da W_hh


# ------------------------------------------------------------------------- the NumPy-set interface
def _states(T, s0, reverse):
    hs = np.empty((T + 1, *s0.shape), s0.dtype)
    hs[T if reverse else 0] = s0
    return hs


def _sizes(batch_sizes, T, B):
    if batch_sizes is None:
        return np.full(T, B, np.int64)
    return np.ascontiguousarray(batch_sizes, dtype=np.int64)


def _grad(dH, T, B, H, dtype):
    """dL/d(outputs) as a C-contiguous array (one specialisation per dtype), zeros for None."""
    return np.zeros((T, B, H), dtype) if dH is None else np.ascontiguousarray(dH, dtype=dtype)


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False, keep=True):
    """As :func:`rnnlab.nn.kernels.numpy.lstm_forward`: (hs, cs, gates, tanh_cs); ``keep``
    false: cs in two rows used in turn, tanh_cs one row (the same compiled functions, which
    index them through ``crow`` and ``t % len(tanh_cs)``)."""
    T, B, G = XW.shape
    dt = XW.dtype
    crow = state_rows(T, reverse, keep)
    hs, cs = _states(T, h0, reverse), cell_states(T, c0, reverse, crow)
    tanh_cs = np.empty((T if keep else 1, B, G // 4), dt)
    W, sizes = _c(W_hh, dt), _sizes(batch_sizes, T, B)
    if _dispatch.loop_in_python(B, G // 4, 4, T):
        _lstm_forward_py(XW, W, hs, cs, crow, tanh_cs, sizes, bool(reverse))
    else:
        _lstm_forward(XW, W, hs, cs, crow, tanh_cs, np.empty((B, G), dt), sizes, bool(reverse),
                      HAND_LOOP_MAX, dt.type(1))
    return hs, cs, XW, tanh_cs


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.lstm_backward`: dA (T, B, 4H) and (dh0, dc0)."""
    _, cs, gates, tanh_cs = cache
    T, B, G = gates.shape
    dt = gates.dtype
    check_kept(len(cs), T + 1)
    dh, dc = _c(dh_n, dt).copy(), _c(dc_n, dt).copy()
    dA = np.empty_like(gates)
    args = (gates, cs, tanh_cs, _c(W_hh, dt), _grad(dH, T, B, G // 4, dt), dh, dc, dA,
            _sizes(batch_sizes, T, B), bool(reverse))
    if _dispatch.loop_in_python(B, G // 4, 4, T):
        _lstm_backward_py(*args, dt.type(1))
    else:
        _lstm_backward(*args, HAND_LOOP_MAX, dt.type(1))
    return dA, (dh, dc)


def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False, keep=True):
    """As :func:`rnnlab.nn.kernels.numpy.gru_forward`: (hs, gates, gh_ns); ``keep`` false: gh_ns
    one row (indexed ``t % len(gh_ns)``)."""
    T, B, G = XW.shape
    dt = XW.dtype
    hs = _states(T, h0, reverse)
    gh_ns = np.empty((T if keep else 1, B, G // 3), dt)
    b = np.zeros(G, dt) if b_hh is None else _c(b_hh, dt)
    W, sizes = _c(W_hh, dt), _sizes(batch_sizes, T, B)
    if _dispatch.loop_in_python(B, G // 3, 3, T):
        _gru_forward_py(XW, W, b, hs, gh_ns, sizes, bool(reverse))
    else:
        _gru_forward(XW, W, b, hs, gh_ns, np.empty((B, G), dt), sizes, bool(reverse),
                     HAND_LOOP_MAX, dt.type(1))
    return hs, XW, gh_ns


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.gru_backward`: dA_x, dA_h (T, B, 3H) and dh0."""
    hs, gates, gh_ns = cache
    T, B, G = gates.shape
    H, dt = G // 3, gates.dtype
    check_kept(len(gh_ns), T)
    dh = _c(dh_n, dt).copy()
    dAx, dAh = np.empty_like(gates), np.empty_like(gates)
    W, dH, sizes = _c(W_hh, dt), _grad(dH, T, B, H, dt), _sizes(batch_sizes, T, B)
    if _dispatch.loop_in_python(B, H, 3, T):
        _gru_backward_py(gates, hs, gh_ns, W, dH, dh, dAx, dAh, sizes, bool(reverse), dt.type(1))
    else:
        _gru_backward(gates, hs, gh_ns, W, dH, dh, dAx, dAh, np.empty((B, H), dt), sizes,
                      bool(reverse), HAND_LOOP_MAX, dt.type(1))
    return dAx, dAh, dh


def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False, keep=True):
    """As :func:`rnnlab.nn.kernels.numpy.rnn_forward`: (hs,), which is all backward reads
    (``keep`` changes nothing)."""
    T, B, H = XW.shape
    dt = XW.dtype
    hs = _states(T, h0, reverse)
    args = (XW, _c(W_hh, dt), hs, _sizes(batch_sizes, T, B), bool(reverse),
            nonlinearity == "relu")
    if _dispatch.loop_in_python(B, H, 1, T):
        _rnn_forward_py(*args, dt.type(1))
    else:
        _rnn_forward(*args, HAND_LOOP_MAX, dt.type(1))
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.rnn_backward`: dA (T, B, H) and dh0."""
    (hs,) = cache
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dt = hs.dtype
    dh = _c(dh_n, dt).copy()
    dA = np.empty((T, B, H), dt)
    args = (hs, _c(W_hh, dt), _grad(dH, T, B, H, dt), dh, dA, _sizes(batch_sizes, T, B),
            bool(reverse), nonlinearity == "relu")
    if _dispatch.loop_in_python(B, H, 1, T):
        _rnn_backward_py(*args, dt.type(1))
    else:
        _rnn_backward(*args, HAND_LOOP_MAX, dt.type(1))
    return dA, dh
