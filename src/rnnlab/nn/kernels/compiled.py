"""The compiled kernel set: each time loop of :mod:`rnnlab.nn.kernels.numpy` as one numba call.

Same arguments, same caches, same layout (time-major, ``reverse``, variable lengths as the first
``batch_sizes[t]`` rows) as the NumPy set, whose docstring describes them; the equations are those
of :mod:`rnnlab.nn.cells`. What changes is the cost per time step: the NumPy set makes 10-20
NumPy calls per step (about 1-2 us each, most of the time at batch 1), this set makes none. The
whole sequence runs in one compiled call, and per step there is

* one recurrent product, ``h W_hh^T`` forward (:func:`_product_t`) and ``da W_hh`` backward
  (:func:`_product`): ``np.dot`` inside numba, a BLAS GEMM, or for tiny products
  (``n * K * N <= HAND_LOOP_MAX`` multiply-adds) a plain loop that saves the BLAS call's
  overhead;
* one fused pass over the (live rows, H) gate elements that computes every activation and
  writes the cache (forward) or every pre-activation gradient (backward).

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
negative x relies on 1 / (1 + inf) = 0) and ``afn`` (approximate exp/tanh: the float64 set
must match the NumPy set to 1e-12 and torch to 1e-10). tanh and exp are libm's
(``math.tanh``, ``math.exp``): no exp-based tanh here, so float32 is slightly more exact than the
NumPy set's one-exp gates.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# A step product of at most this many multiply-adds (rows * K * N) runs as a plain compiled loop
# instead of a BLAS call. Unmeasured first guess (phase 1 of issue 15): BLAS's fixed cost per
# call is ~1 us, a plain loop does a few multiply-adds per ns. Read at every call (passed into
# the kernels, not compiled in), so tests can force either path.
HAND_LOOP_MAX = 1 << 12

_jit = njit(cache=True, fastmath=FASTMATH, nogil=True)


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


@_jit
def _sigmoid(x, one):
    return one / (one + math.exp(-x))


# ----------------------------------------------------------------------------------------- LSTM
@_jit
def _lstm_forward(gates, W_hh, hs, cs, tanh_cs, rec, batch_sizes, reverse, hand_max, one):
    T, B, G = gates.shape
    H = G // 4
    for s in range(T):
        t = T - 1 - s if reverse else s  # forward order
        p, q = (t + 1, t) if reverse else (t, t + 1)  # rows of h_prev and h in hs
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, rec[:n], hand_max, one - one)  # h_prev W_hh^T
        for b in range(n):
            for j in range(H):
                i = _sigmoid(gates[t, b, j] + rec[b, j], one)
                f = _sigmoid(gates[t, b, H + j] + rec[b, H + j], one)
                g = math.tanh(gates[t, b, 2 * H + j] + rec[b, 2 * H + j])
                o = _sigmoid(gates[t, b, 3 * H + j] + rec[b, 3 * H + j], one)
                c = f * cs[p, b, j] + i * g
                tanh_c = math.tanh(c)
                gates[t, b, j] = i
                gates[t, b, H + j] = f
                gates[t, b, 2 * H + j] = g
                gates[t, b, 3 * H + j] = o
                cs[q, b, j] = c
                tanh_cs[t, b, j] = tanh_c
                hs[q, b, j] = o * tanh_c
        for b in range(n, B):  # finished (or not yet started) sequences keep their state
            for j in range(H):
                hs[q, b, j] = hs[p, b, j]
                cs[q, b, j] = cs[p, b, j]


@_jit
def _lstm_backward(gates, cs, tanh_cs, W_hh, dH, dh, dc, dA, batch_sizes, reverse, hand_max, one):
    T, B, G = gates.shape
    H = G // 4
    for s in range(T):
        t = s if reverse else T - 1 - s  # the forward order, last step first
        p = t + 1 if reverse else t
        n = batch_sizes[t]
        for b in range(n):
            for j in range(H):
                i, f = gates[t, b, j], gates[t, b, H + j]
                g, o = gates[t, b, 2 * H + j], gates[t, b, 3 * H + j]
                tanh_c = tanh_cs[t, b, j]
                dh_ = dh[b, j] + dH[t, b, j]
                dc_ = dc[b, j] + dh_ * o * (one - tanh_c * tanh_c)
                dA[t, b, j] = dc_ * g * i * (one - i)
                dA[t, b, H + j] = dc_ * cs[p, b, j] * f * (one - f)
                dA[t, b, 2 * H + j] = dc_ * i * (one - g * g)
                dA[t, b, 3 * H + j] = dh_ * tanh_c * o * (one - o)
                dc[b, j] = dc_ * f
        _product(dA[t, :n], W_hh, dh[:n], hand_max)  # dh_prev = da W_hh
        dA[t, n:] = 0


# ------------------------------------------------------------------------------------------ GRU
@_jit
def _gru_forward(gates, W_hh, b_hh, hs, gh_ns, rec, batch_sizes, reverse, hand_max, one):
    T, B, G = gates.shape
    H = G // 3
    for s in range(T):
        t = T - 1 - s if reverse else s  # forward order
        p, q = (t + 1, t) if reverse else (t, t + 1)  # rows of h_prev and h in hs
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, rec[:n], hand_max, one - one)  # h_prev W_hh^T
        for b in range(n):
            for j in range(H):
                r = _sigmoid(gates[t, b, j] + (rec[b, j] + b_hh[j]), one)
                z = _sigmoid(gates[t, b, H + j] + (rec[b, H + j] + b_hh[H + j]), one)
                gh_n = rec[b, 2 * H + j] + b_hh[2 * H + j]
                cand = math.tanh(gates[t, b, 2 * H + j] + r * gh_n)
                gates[t, b, j] = r
                gates[t, b, H + j] = z
                gates[t, b, 2 * H + j] = cand
                gh_ns[t, b, j] = gh_n
                hs[q, b, j] = cand + z * (hs[p, b, j] - cand)
        for b in range(n, B):
            for j in range(H):
                hs[q, b, j] = hs[p, b, j]


@_jit
def _gru_backward(gates, hs, gh_ns, W_hh, dH, dh, dAx, dAh, rec, batch_sizes, reverse, hand_max,
                  one):
    T, B, G = gates.shape
    H = G // 3
    for s in range(T):
        t = s if reverse else T - 1 - s  # the forward order, last step first
        p = t + 1 if reverse else t
        n = batch_sizes[t]
        for b in range(n):
            for j in range(H):
                r, z, cand = gates[t, b, j], gates[t, b, H + j], gates[t, b, 2 * H + j]
                dh_ = dh[b, j] + dH[t, b, j]
                da_n = dh_ * (one - z) * (one - cand * cand)
                da_z = dh_ * (hs[p, b, j] - cand) * z * (one - z)
                da_r = da_n * gh_ns[t, b, j] * r * (one - r)
                dAx[t, b, j] = da_r
                dAx[t, b, H + j] = da_z
                dAx[t, b, 2 * H + j] = da_n
                dAh[t, b, j] = da_r
                dAh[t, b, H + j] = da_z
                dAh[t, b, 2 * H + j] = da_n * r  # d(gh_n)
                dh[b, j] = dh_ * z
        _product(dAh[t, :n], W_hh, rec[:n], hand_max)
        for b in range(n):
            for j in range(H):
                dh[b, j] += rec[b, j]  # dh_prev = dh z + dA_h W_hh
        dAx[t, n:] = 0
        dAh[t, n:] = 0


# ------------------------------------------------------------------------------------------ RNN
@_jit
def _rnn_forward(XW, W_hh, hs, batch_sizes, reverse, relu, hand_max, one):
    T, B, H = XW.shape
    zero = one - one
    for s in range(T):
        t = T - 1 - s if reverse else s  # forward order
        p, q = (t + 1, t) if reverse else (t, t + 1)  # rows of h_prev and h in hs
        n = batch_sizes[t]
        _product_t(hs[p, :n], W_hh, hs[q, :n], hand_max, zero)  # h_prev W_hh^T, in h's place
        for b in range(n):
            for j in range(H):
                a = hs[q, b, j] + XW[t, b, j]
                if relu:
                    hs[q, b, j] = zero if a < zero else a  # NaN stays NaN, as np.maximum
                else:
                    hs[q, b, j] = math.tanh(a)
        for b in range(n, B):
            for j in range(H):
                hs[q, b, j] = hs[p, b, j]


@_jit
def _rnn_backward(hs, W_hh, dH, dh, dA, batch_sizes, reverse, relu, hand_max, one):
    T, B, H = dA.shape
    zero = one - one
    for s in range(T):
        t = s if reverse else T - 1 - s
        q = t if reverse else t + 1
        n = batch_sizes[t]
        for b in range(n):
            for j in range(H):
                h = hs[q, b, j]
                slope = (one if h > zero else zero) if relu else one - h * h
                dA[t, b, j] = (dh[b, j] + dH[t, b, j]) * slope
        _product(dA[t, :n], W_hh, dh[:n], hand_max)  # dh_prev = da W_hh
        dA[t, n:] = 0


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


def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.lstm_forward`: (hs, cs, gates, tanh_cs)."""
    T, B, G = XW.shape
    dt = XW.dtype
    hs, cs = _states(T, h0, reverse), _states(T, c0, reverse)
    tanh_cs = np.empty((T, B, G // 4), dt)
    _lstm_forward(XW, _c(W_hh, dt), hs, cs, tanh_cs, np.empty((B, G), dt),
                  _sizes(batch_sizes, T, B), bool(reverse), HAND_LOOP_MAX, dt.type(1))
    return hs, cs, XW, tanh_cs


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.lstm_backward`: dA (T, B, 4H) and (dh0, dc0)."""
    _, cs, gates, tanh_cs = cache
    T, B, G = gates.shape
    dt = gates.dtype
    dh, dc = _c(dh_n, dt).copy(), _c(dc_n, dt).copy()
    dA = np.empty_like(gates)
    _lstm_backward(gates, cs, tanh_cs, _c(W_hh, dt), _grad(dH, T, B, G // 4, dt), dh, dc, dA,
                   _sizes(batch_sizes, T, B), bool(reverse), HAND_LOOP_MAX, dt.type(1))
    return dA, (dh, dc)


def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.gru_forward`: (hs, gates, gh_ns)."""
    T, B, G = XW.shape
    dt = XW.dtype
    hs = _states(T, h0, reverse)
    gh_ns = np.empty((T, B, G // 3), dt)
    b = np.zeros(G, dt) if b_hh is None else _c(b_hh, dt)
    _gru_forward(XW, _c(W_hh, dt), b, hs, gh_ns, np.empty((B, G), dt),
                 _sizes(batch_sizes, T, B), bool(reverse), HAND_LOOP_MAX, dt.type(1))
    return hs, XW, gh_ns


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.gru_backward`: dA_x, dA_h (T, B, 3H) and dh0."""
    hs, gates, gh_ns = cache
    T, B, G = gates.shape
    H, dt = G // 3, gates.dtype
    dh = _c(dh_n, dt).copy()
    dAx, dAh = np.empty_like(gates), np.empty_like(gates)
    _gru_backward(gates, hs, gh_ns, _c(W_hh, dt), _grad(dH, T, B, H, dt), dh, dAx, dAh,
                  np.empty((B, H), dt), _sizes(batch_sizes, T, B), bool(reverse), HAND_LOOP_MAX,
                  dt.type(1))
    return dAx, dAh, dh


def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.rnn_forward`: (hs,)."""
    T, B, _ = XW.shape
    dt = XW.dtype
    hs = _states(T, h0, reverse)
    _rnn_forward(XW, _c(W_hh, dt), hs, _sizes(batch_sizes, T, B), bool(reverse),
                 nonlinearity == "relu", HAND_LOOP_MAX, dt.type(1))
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """As :func:`rnnlab.nn.kernels.numpy.rnn_backward`: dA (T, B, H) and dh0."""
    (hs,) = cache
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dt = hs.dtype
    dh = _c(dh_n, dt).copy()
    dA = np.empty((T, B, H), dt)
    _rnn_backward(hs, _c(W_hh, dt), _grad(dH, T, B, H, dt), dh, dA, _sizes(batch_sizes, T, B),
                  bool(reverse), nonlinearity == "relu", HAND_LOOP_MAX, dt.type(1))
    return dA, dh
