"""The fast time loops: the equations of :mod:`rnnlab.cells`, run in place over a whole sequence.

Speed rules these loops follow: the input projection of every time step is computed before the loop
as one GEMM (``XW``); inside the loop only ``h @ W_hh^T`` and the gate arithmetic remain, written
into preallocated buffers with ``out=`` ufuncs; in backward only the pre-activation gradients ``dA``
and ``dh_prev`` are computed per step, and the caller turns ``dA`` into dW_ih, dW_hh, db and dx
with single GEMMs after the loop.

Layout. Time-major, one direction. Time is indexed by t in both directions: ``hs`` has T+1 rows and
the state produced at time t lives at ``hs[t + 1]`` going forward and at ``hs[t]`` in reverse, so
the previous state is ``hs[t]`` forward and ``hs[t + 1]`` in reverse, and the outputs are the
contiguous blocks ``hs[1:]`` or ``hs[:T]``.

Variable lengths. The caller sorts the batch by decreasing length, so at time t the live
sequences are the first ``batch_sizes[t]`` rows (as in PyTorch's packed sequences). Only those rows
are computed; the others carry their state unchanged, which gives both directions their semantics
for free: finished sequences keep their last state going forward, and sequences that have not yet
started keep their initial state in reverse. Pre-activation gradients of padded positions stay 0.
"""

from __future__ import annotations

import numpy as np

from rnnlab.ops import relu, sigmoid, tanh


def _order(T: int, reverse: bool):
    """Yield (t, prev, cur): time index, row of the previous state and of the new one in ``hs``."""
    if reverse:
        for t in range(T - 1, -1, -1):
            yield t, t + 1, t
    else:
        for t in range(T):
            yield t, t, t + 1


def _backward_order(T: int, reverse: bool):
    """The forward order's (t, prev, cur) triples, last step first."""
    return reversed(list(_order(T, reverse)))


def _live(batch_sizes, t: int, B: int) -> int:
    return B if batch_sizes is None else int(batch_sizes[t])


def _new_states(T: int, h0: np.ndarray, reverse: bool) -> np.ndarray:
    hs = np.empty((T + 1, *h0.shape), h0.dtype)
    hs[T if reverse else 0] = h0
    return hs


# ----------------------------------------------------------------------------------------- LSTM
def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False):
    """XW (T, B, 4H) = x W_ih^T + b_ih + b_hh; becomes the gate activations i, f, g, o in place.

    Returns (hs, cs, gates, tanh_cs): states (T+1, B, H), activations (T, B, 4H), tanh(c) (T, B, H).
    """
    T, B, G = XW.shape
    H = G // 4
    hs, cs = _new_states(T, h0, reverse), _new_states(T, c0, reverse)
    gates = XW
    tanh_cs = np.empty((T, B, H), XW.dtype)
    gh = np.empty((B, G), XW.dtype)
    ig = np.empty((B, H), XW.dtype)
    W_hh_T = W_hh.T
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a = gates[t, :n]
            a += np.matmul(hs[p, :n], W_hh_T, out=gh[:n])  # a = x W_ih^T + h W_hh^T + b
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # i, f
            tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])  # g
            sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])  # o
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c = np.multiply(f, cs[p, :n], out=cs[q, :n])  # c = f * c_prev ...
            c += np.multiply(i, g, out=ig[:n])  # ... + i * g
            tanh_c = tanh(c, out=tanh_cs[t, :n])
            np.multiply(o, tanh_c, out=hs[q, :n])  # h = o * tanh(c)
            if n < B:
                hs[q, n:] = hs[p, n:]
                cs[q, n:] = cs[p, n:]
    return hs, cs, gates, tanh_cs


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """Returns dA (T, B, 4H), the gradient of the pre-activations, and (dh0, dc0).

    ``dH`` (T, B, H) is dL/d(output) of this direction (any strides) or None.
    """
    hs, cs, gates, tanh_cs = cache
    T, B, G = gates.shape
    H = G // 4
    dA = np.empty_like(gates) if batch_sizes is None else np.zeros_like(gates)
    dh, dc = dh_n.copy(), dc_n.copy()
    tmp = np.empty((B, H), gates.dtype)
    tmp2 = np.empty((B, 2 * H), gates.dtype)
    for t, p, _ in _backward_order(T, reverse):
        n = _live(batch_sizes, t, B)
        a, da = gates[t, :n], dA[t, :n]
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        di, df, dg, do = da[:, :H], da[:, H : 2 * H], da[:, 2 * H : 3 * H], da[:, 3 * H :]
        dh_, dc_, tanh_c, t1 = dh[:n], dc[:n], tanh_cs[t, :n], tmp[:n]
        if dH is not None:
            dh_ += dH[t, :n]
        np.multiply(dh_, tanh_c, out=do)  # do = dh * tanh(c)
        np.multiply(tanh_c, tanh_c, out=t1)
        np.subtract(1.0, t1, out=t1)
        t1 *= o
        t1 *= dh_
        dc_ += t1  # dc += dh * o * (1 - tanh(c)^2)
        np.multiply(dc_, g, out=di)  # di = dc * g
        np.multiply(dc_, cs[p, :n], out=df)  # df = dc * c_prev
        np.multiply(dc_, i, out=dg)  # dg = dc * i
        dc_ *= f  # dc_prev = dc * f
        s = np.subtract(1.0, a[:, : 2 * H], out=tmp2[:n])
        s *= a[:, : 2 * H]
        da[:, : 2 * H] *= s  # da_i, da_f: sigma' = sigma (1 - sigma)
        np.subtract(1.0, o, out=t1)
        t1 *= o
        do *= t1  # da_o
        np.multiply(g, g, out=t1)
        np.subtract(1.0, t1, out=t1)
        dg *= t1  # da_g: tanh' = 1 - tanh^2
        np.matmul(da, W_hh, out=dh_)  # dh_prev = da W_hh
    return dA, (dh, dc)


# ------------------------------------------------------------------------------------------ GRU
def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False):
    """XW (T, B, 3H) = x W_ih^T + b_ih; becomes the activations r, z, n in place.

    Returns (hs, gates, gh_ns): states (T+1, B, H), activations (T, B, 3H) and the recurrent part
    of the candidate, gh_n = h W_hn^T + b_hn (T, B, H), which the reset gate scales.
    """
    T, B, G = XW.shape
    H = G // 3
    hs = _new_states(T, h0, reverse)
    gates = XW
    gh_ns = np.empty((T, B, H), XW.dtype)
    gh = np.empty((B, G), XW.dtype)
    W_hh_T = W_hh.T
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a, h_prev = gates[t, :n], hs[p, :n]
            np.matmul(h_prev, W_hh_T, out=gh[:n])
            if b_hh is not None:
                gh[:n] += b_hh
            a[:, : 2 * H] += gh[:n, : 2 * H]
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # r, z
            r, z, cand = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            gh_n = gh_ns[t, :n]
            gh_n[...] = gh[:n, 2 * H :]
            cand += np.multiply(r, gh_n, out=gh[:n, :H])
            tanh(cand, out=cand)  # n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
            h = np.subtract(h_prev, cand, out=hs[q, :n])
            h *= z
            h += cand  # h = n + z * (h_prev - n) = (1 - z) * n + z * h_prev
            if n < B:
                hs[q, n:] = hs[p, n:]
    return hs, gates, gh_ns


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """Returns dA_x (T, B, 3H) (gradient of XW), dA_h (T, B, 3H) (of h W_hh^T + b_hh) and dh0."""
    hs, gates, gh_ns = cache
    T, B, G = gates.shape
    H = G // 3
    alloc = np.empty_like if batch_sizes is None else np.zeros_like
    dAx, dAh = alloc(gates), alloc(gates)
    dh = dh_n.copy()
    tmp, tmp2 = np.empty((B, H), gates.dtype), np.empty((B, H), gates.dtype)
    dh_rec = np.empty((B, H), gates.dtype)
    for t, p, _ in _backward_order(T, reverse):
        n = _live(batch_sizes, t, B)
        a, dax, dah = gates[t, :n], dAx[t, :n], dAh[t, :n]
        r, z, cand = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        dr, dz, dn = dax[:, :H], dax[:, H : 2 * H], dax[:, 2 * H :]
        dh_, t1, t2, h_prev = dh[:n], tmp[:n], tmp2[:n], hs[p, :n]
        if dH is not None:
            dh_ += dH[t, :n]
        np.subtract(1.0, z, out=t1)
        t1 *= dh_  # dL/dn = dh * (1 - z)
        np.multiply(cand, cand, out=t2)
        np.subtract(1.0, t2, out=t2)
        np.multiply(t1, t2, out=dn)  # da_n = dL/dn * (1 - n^2)
        np.subtract(h_prev, cand, out=dz)
        dz *= dh_  # dL/dz = dh * (h_prev - n)
        np.subtract(1.0, z, out=t1)
        t1 *= z
        dz *= t1  # da_z
        np.multiply(dn, gh_ns[t, :n], out=dr)  # dL/dr = da_n * gh_n
        np.subtract(1.0, r, out=t1)
        t1 *= r
        dr *= t1  # da_r
        dah[:, : 2 * H] = dax[:, : 2 * H]
        np.multiply(dn, r, out=dah[:, 2 * H :])  # d(gh_n) = da_n * r
        dh_ *= z  # dh_prev = dh * z ...
        dh_ += np.matmul(dah, W_hh, out=dh_rec[:n])  # ... + da_h W_hh
    return dAx, dAh, dh


# ------------------------------------------------------------------------------------------ RNN
def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """XW (T, B, H) = x W_ih^T + b_ih + b_hh. Returns hs (T+1, B, H)."""
    T, B, H = XW.shape
    hs = _new_states(T, h0, reverse)
    act = tanh if nonlinearity == "tanh" else relu
    W_hh_T = W_hh.T
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a = np.matmul(hs[p, :n], W_hh_T, out=hs[q, :n])
            a += XW[t, :n]
            act(a, out=a)  # h = act(x W_ih^T + h_prev W_hh^T + b)
            if n < B:
                hs[q, n:] = hs[p, n:]
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """Returns dA (T, B, H), the gradient of the pre-activations, and dh0."""
    (hs,) = cache
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dA = np.empty((T, B, H), hs.dtype) if batch_sizes is None else np.zeros((T, B, H), hs.dtype)
    dh = dh_n.copy()
    for t, _, q in _backward_order(T, reverse):
        n = _live(batch_sizes, t, B)
        dh_, da, h = dh[:n], dA[t, :n], hs[q, :n]
        if dH is not None:
            dh_ += dH[t, :n]
        if nonlinearity == "tanh":
            np.multiply(h, h, out=da)
            np.subtract(1.0, da, out=da)
            da *= dh_  # da = dh * (1 - h^2)
        else:
            np.greater(h, 0, out=da)
            da *= dh_  # da = dh * [h > 0]
        np.matmul(da, W_hh, out=dh_)  # dh_prev = da W_hh
    return dA, dh
