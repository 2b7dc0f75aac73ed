"""The NumPy kernel set: the equations of :mod:`rnnlab.nn.cells`, in place over a whole sequence.

This set is the fallback when numba is missing (and ``RNNLAB_KERNELS=numpy``); the compiled set
(:mod:`rnnlab.nn.kernels.compiled`) takes the same arguments and returns the same caches.

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

from rnnlab.nn.ops import relu, sigmoid, tanh


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


CHUNK_BYTES = 1 << 18  # backward factors are computed for ~256 KiB of gates at a time


def _backward_chunks(T: int, reverse: bool, step_bytes: int):
    """Blocks of consecutive time steps in backward order: (lo, hi, steps), where ``steps`` are
    the (t, prev, cur) triples of [lo, hi) in the order backward visits them. A block is as
    many steps as fit in CHUNK_BYTES, so its factors are computed in a few vectorised calls and
    are still in cache when the steps use them."""
    k = max(1, CHUNK_BYTES // max(step_bytes, 1))
    order = list(_backward_order(T, reverse))
    for s in range(0, T, k):
        block = order[s:s + k]
        lo, hi = min(block[0][0], block[-1][0]), max(block[0][0], block[-1][0]) + 1
        yield lo, hi, block


def _live(batch_sizes, t: int, B: int) -> int:
    return B if batch_sizes is None else int(batch_sizes[t])


def _new_states(T: int, h0: np.ndarray, reverse: bool) -> np.ndarray:
    hs = np.empty((T + 1, *h0.shape), h0.dtype)
    hs[T if reverse else 0] = h0
    return hs


def state_rows(T: int, reverse: bool, keep: bool) -> np.ndarray:
    """Where the state after position k (0..T, the ``p``/``q`` of a step) is stored: row k of a
    (T+1)-row history when the forward keeps its cache (``keep``), else one of two rows used in
    turn (a step reads one, writes the other), placed so that the final state lands where the
    full history has it: row 1 = -1 forward, row 0 reverse (what the layers read as the final
    state). The initial state goes to ``rows[T if reverse else 0]``."""
    k = np.arange(T + 1, dtype=np.int64)
    return k if keep else (k + (0 if reverse else T + 1)) % 2


def check_kept(rows: int, needed: int) -> None:
    """A backward's guard: the cache must come from a forward that kept every step (a per-step
    buffer of ``needed`` rows), not from an inference forward (``keep`` false)."""
    if rows < needed:
        raise ValueError(f"backward: expected the cache of a forward that kept every step "
                         f"({needed} rows), got one of an inference forward ({rows} rows: "
                         "keep=False, e.g. under rnnlab.nn.no_grad())")


def cell_states(T: int, c0, reverse: bool, rows: np.ndarray, xp=np):
    """The cell-state history: T+1 rows, or 2 (:func:`state_rows`), holding c0 at its place;
    ``xp`` the array module (the cuda set passes CuPy)."""
    cs = xp.empty((int(rows.max()) + 1, *c0.shape), c0.dtype)
    cs[rows[T if reverse else 0]] = c0
    return cs


def _cpu_has_avx512() -> bool:
    """Whether the CPU runs AVX-512 (NumPy's runtime CPU detection; False where it is not
    found)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return False
    return bool(__cpu_features__.get("AVX512F", False))


# Step GEMMs of float32 are padded to a multiple of PAD_ROWS rows (1: never). Where OpenBLAS runs
# its AVX2 (Haswell) kernels its time is a saw-tooth in the rows with minima at multiples of 8
# ((n, 650) x (650, 2600): n = 20 0.73 ms, n = 24 0.65 ms; benchmarks/RESULTS.md section 4). On
# AVX-512 CPUs (OpenBLAS's SkylakeX kernels) it is not: 20 and 24 rows took the same time or 24
# longer (74.5 / 75.4 us at 200 units, 549 / 592 us at 650), and in a layer, where padding costs
# two copies per step, the 35 x 20 LSTM's step products took 17-22% longer padded (section 11).
# Read at every call, so tests can force padding on any host.
PAD_ROWS = 1 if _cpu_has_avx512() else 8


def _gemm_rows(n: int, dtype: np.dtype) -> int:
    """How many rows to hand the step GEMM for ``n`` live rows: n rounded up to a multiple of
    :data:`PAD_ROWS` for float32, unless n % PAD_ROWS is 0 or 1 (a single row is a GEMV; one row
    over a multiple costs less than seven padding rows)."""
    if dtype != np.float32 or PAD_ROWS == 1 or n % PAD_ROWS in (0, 1):
        return n
    return n + PAD_ROWS - n % PAD_ROWS


class StepProduct:
    """``x @ M`` for the few rows of one time step: the recurrent product of every step
    (``h W_hh^T`` forward, ``da W_hh`` backward), the rows padded as :func:`_gemm_rows` says.
    Padding rows hold zeros or an earlier step's rows; their results are never read.

    ``M`` is copied once to C order: OpenBLAS's GEMM with a transposed right operand (``W_hh.T``
    as a view) took 1.4x as long per step (20 x 200 @ 200 x 800 float32, two threads: 72.9 us
    against 53.8 us on a C-ordered copy; 64 x 256: 208 against 165 us; benchmarks/RESULTS.md
    section 11), and the copy costs one pass over W_hh per sequence. A one-step sequence
    (``steps`` = 1: generation and beam search, one token per call) keeps the view: there the
    copy would cost more than the one product it serves (1 x 256 @ 256 x 1024: a 1 MB copy, about
    0.45 ms, for a product of a few us)."""

    def __init__(self, M: np.ndarray, B: int, steps: int = 2) -> None:
        self.M = M if steps == 1 else np.ascontiguousarray(M)
        rows = _gemm_rows(B, M.dtype)
        self.x = np.zeros((rows, M.shape[0]), M.dtype)
        self.y = np.empty((rows, M.shape[1]), M.dtype)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        n = x.shape[0]
        m = _gemm_rows(n, self.M.dtype)
        if m == n:
            return np.matmul(x, self.M, out=self.y[:n] if out is None else out)
        self.x[:n] = x
        np.matmul(self.x[:m], self.M, out=self.y[:m])
        if out is None:
            return self.y[:n]
        out[...] = self.y[:n]
        return out


# ----------------------------------------------------------------------------------------- LSTM
def _activate_gates(a, H, scale):
    """a = [a_i, a_f, a_g, a_o] (n, 4H) -> [sigma(a_i), sigma(a_f), tanh(a_g), sigma(a_o)]."""
    sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # i, f
    tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])  # g
    sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])  # o


def _activate_gates_one_exp(a, H, scale):
    """The same with one exp over all four gates (float32): tanh(x) = 2 sigma(2x) - 1, so with
    ``scale`` = (-1, -1, -2, -1) per gate block, 1 / (1 + exp(scale * a)) gives sigma(a_i),
    sigma(a_f), sigma(2 a_g), sigma(a_o) in 4 passes where the three calls above take 13."""
    a *= scale
    np.exp(a, out=a)
    a += 1.0
    np.reciprocal(a, out=a)  # i, f, o; sigma(2 a_g) in g's place
    g = a[:, 2 * H : 3 * H]
    g *= 2.0
    g -= 1.0  # g = 2 sigma(2 a_g) - 1 = tanh(a_g)


def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, 4H) = x W_ih^T + b_ih + b_hh; becomes the gate activations i, f, g, o in place.

    Returns (hs, cs, gates, tanh_cs): states (T+1, B, H), activations (T, B, 4H), tanh(c) (T, B, H).
    ``keep`` false (inference, :func:`rnnlab.nn.no_grad`): cs has two rows used in turn, the final
    c at row 0 reverse and -1 forward (:func:`state_rows`), and tanh_cs one row of scratch; the
    cache then serves no backward.
    """
    T, B, G = XW.shape
    H = G // 4
    crow = state_rows(T, reverse, keep)
    hs, cs = _new_states(T, h0, reverse), cell_states(T, c0, reverse, crow)
    gates = XW
    tanh_cs = np.empty((T if keep else 1, B, H), XW.dtype)
    recurrent = StepProduct(W_hh.T, B, T)
    ig = np.empty((B, H), XW.dtype)
    activate = _activate_gates_one_exp if XW.dtype == np.float32 else _activate_gates
    scale = np.repeat(np.array([-1.0, -1.0, -2.0, -1.0], XW.dtype), H)
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a = gates[t, :n]
            a += recurrent(hs[p, :n])  # a = x W_ih^T + h W_hh^T + b
            activate(a, H, scale)  # i, f, g, o
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c_prev, c_new = cs[crow[p]], cs[crow[q]]
            c = np.multiply(f, c_prev[:n], out=c_new[:n])  # c = f * c_prev ...
            c += np.multiply(i, g, out=ig[:n])  # ... + i * g
            tanh_c = tanh(c, out=tanh_cs[t % len(tanh_cs), :n])
            np.multiply(o, tanh_c, out=hs[q, :n])  # h = o * tanh(c)
            if n < B:
                hs[q, n:] = hs[p, n:]
                c_new[n:] = c_prev[n:]
    return hs, cs, gates, tanh_cs


def _lstm_factors(gates4, c_prev, tanh_c, P, M):
    """The parts of the LSTM step derivative that do not depend on the incoming gradient,
    for a block of time steps at once (vectorised over time, no per-step Python overhead):

        P = [g i (1-i), c_prev f (1-f), i (1-g^2), tanh(c) o (1-o)]     (.., 4, H)
        M = o (1 - tanh(c)^2)                                            (.., H)

    so that the step itself is da_{i,f,g} = dc * P_{i,f,g}, da_o = dh * P_o, dc += dh * M.
    """
    i, f, g, o = gates4[..., 0, :], gates4[..., 1, :], gates4[..., 2, :], gates4[..., 3, :]
    Pi, Pf, Pg, Po = P[..., 0, :], P[..., 1, :], P[..., 2, :], P[..., 3, :]
    np.subtract(1.0, i, out=Pi)
    Pi *= i
    Pi *= g  # g * sigma'(a_i)
    np.subtract(1.0, f, out=Pf)
    Pf *= f
    Pf *= c_prev  # c_prev * sigma'(a_f)
    np.multiply(g, g, out=Pg)
    np.subtract(1.0, Pg, out=Pg)
    Pg *= i  # i * tanh'(a_g)
    np.subtract(1.0, o, out=Po)
    Po *= o
    Po *= tanh_c  # tanh(c) * sigma'(a_o)
    np.multiply(tanh_c, tanh_c, out=M)
    np.subtract(1.0, M, out=M)
    M *= o  # o * tanh'(c)


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    """Returns dA (T, B, 4H), the gradient of the pre-activations, and (dh0, dc0).

    ``dH`` (T, B, H) is dL/d(output) of this direction (any strides) or None. Per step:

        dh = dh_next + dH[t];  dc = dc_next + dh * o (1 - tanh(c)^2)
        da_i, da_f, da_g = dc * P_{i,f,g};  da_o = dh * P_o     (P from :func:`_lstm_factors`)
        dc_prev = dc * f;  dh_prev = da W_hh
    """
    hs, cs, gates, tanh_cs = cache
    T, B, G = gates.shape
    H = G // 4
    check_kept(len(cs), T + 1)
    gates4 = gates.reshape(T, B, 4, H)
    dA = np.empty_like(gates)
    dA4 = dA.reshape(T, B, 4, H)
    M = np.empty_like(tanh_cs)
    c_prev = cs[1:] if reverse else cs[:T]
    dh, dc = dh_n.copy(), dc_n.copy()
    tmp = np.empty((B, H), gates.dtype)
    recurrent = StepProduct(W_hh, B, T)
    with np.errstate(all="ignore"):  # padded rows hold stale values; they are zeroed below
        for lo, hi, steps in _backward_chunks(T, reverse, B * G * gates.itemsize):
            _lstm_factors(gates4[lo:hi], c_prev[lo:hi], tanh_cs[lo:hi], dA4[lo:hi], M[lo:hi])
            for t, _, _ in steps:
                n = _live(batch_sizes, t, B)
                da4, dh_, dc_ = dA4[t, :n], dh[:n], dc[:n]
                if dH is not None:
                    dh_ += dH[t, :n]
                dc_ += np.multiply(dh_, M[t, :n], out=tmp[:n])  # dc += dh * o * tanh'(c)
                da4[:, :3] *= dc_[:, None, :]  # da_i, da_f, da_g
                da4[:, 3] *= dh_  # da_o
                dc_ *= gates4[t, :n, 1]  # dc_prev = dc * f
                recurrent(dA[t, :n], out=dh_)  # dh_prev = da W_hh
                if n < B:
                    dA[t, n:] = 0.0
    return dA, (dh, dc)


# ------------------------------------------------------------------------------------------ GRU
def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, 3H) = x W_ih^T + b_ih; becomes the activations r, z, n in place.

    Returns (hs, gates, gh_ns): states (T+1, B, H), activations (T, B, 3H) and the recurrent part
    of the candidate, gh_n = h W_hn^T + b_hn (T, B, H), which the reset gate scales. ``keep``
    false (inference): gh_ns is one row of scratch and the cache serves no backward.
    """
    T, B, G = XW.shape
    H = G // 3
    hs = _new_states(T, h0, reverse)
    gates = XW
    gh_ns = np.empty((T if keep else 1, B, H), XW.dtype)
    recurrent = StepProduct(W_hh.T, B, T)
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a, h_prev = gates[t, :n], hs[p, :n]
            gh = recurrent(h_prev)  # h W_hh^T (n, 3H), a scratch row block
            if b_hh is not None:
                gh += b_hh
            a[:, : 2 * H] += gh[:, : 2 * H]
            sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # r, z
            r, z, cand = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            gh_n = gh_ns[t % len(gh_ns), :n]
            gh_n[...] = gh[:, 2 * H :]
            cand += np.multiply(r, gh_n, out=gh[:, :H])
            tanh(cand, out=cand)  # n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
            h = np.subtract(h_prev, cand, out=hs[q, :n])
            h *= z
            h += cand  # h = n + z * (h_prev - n) = (1 - z) * n + z * h_prev
            if n < B:
                hs[q, n:] = hs[p, n:]
    return hs, gates, gh_ns


def _gru_factors(gates4, h_prev, gh_n, F, S):
    """The input-independent parts of the GRU step derivative, for a block of time steps:

        F = [gh_n r (1-r), (h_prev - n) z (1-z), (1-z) (1-n^2)]     (.., 3, H)

    so that da_z = dh F_z, da_n = dh F_n, da_r = da_n F_r. ``S`` is scratch space (.., H).
    """
    r, z, n = gates4[..., 0, :], gates4[..., 1, :], gates4[..., 2, :]
    Fr, Fz, Fn = F[..., 0, :], F[..., 1, :], F[..., 2, :]
    np.subtract(1.0, r, out=Fr)
    Fr *= r
    Fr *= gh_n  # gh_n * sigma'(a_r)
    np.subtract(1.0, z, out=Fz)
    Fz *= z
    Fz *= np.subtract(h_prev, n, out=S)  # (h_prev - n) * sigma'(a_z)
    np.multiply(n, n, out=Fn)
    np.subtract(1.0, Fn, out=Fn)
    Fn *= np.subtract(1.0, z, out=S)  # (1 - z) * tanh'(a_n)


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    """Returns dA_x (T, B, 3H) (gradient of XW), dA_h (T, B, 3H) (of h W_hh^T + b_hh) and dh0.

    Per step: dh = dh_next + dH[t]; da_z, da_n = dh F_z, dh F_n; da_r = da_n F_r;
    d(gh_n) = da_n r;  dh_prev = dh z + dA_h W_hh   (F from :func:`_gru_factors`).
    """
    hs, gates, gh_ns = cache
    T, B, G = gates.shape
    H = G // 3
    check_kept(len(gh_ns), T)
    gates4 = gates.reshape(T, B, 3, H)
    dAx, dAh = np.empty_like(gates), np.empty_like(gates)
    x4, h4 = dAx.reshape(T, B, 3, H), dAh.reshape(T, B, 3, H)
    h_prev = hs[1:] if reverse else hs[:T]
    dh = dh_n.copy()
    recurrent = StepProduct(W_hh, B, T)
    with np.errstate(all="ignore"):  # padded rows hold stale values; they are zeroed below
        for lo, hi, steps in _backward_chunks(T, reverse, B * G * gates.itemsize):
            _gru_factors(gates4[lo:hi], h_prev[lo:hi], gh_ns[lo:hi], x4[lo:hi],
                         h4[lo:hi, :, 0])
            for t, _, _ in steps:
                n = _live(batch_sizes, t, B)
                dx4, dh4, dh_ = x4[t, :n], h4[t, :n], dh[:n]
                if dH is not None:
                    dh_ += dH[t, :n]
                dx4[:, 1:] *= dh_[:, None, :]  # da_z, da_n
                dx4[:, 0] *= dx4[:, 2]  # da_r = da_n * F_r
                dh4[:, :2] = dx4[:, :2]
                np.multiply(dx4[:, 2], gates4[t, :n, 0], out=dh4[:, 2])  # d(gh_n) = da_n r
                rec = recurrent(dAh[t, :n])
                dh_ *= gates4[t, :n, 1]  # dh_prev = dh z ...
                dh_ += rec  # ... + da_h W_hh
                if n < B:
                    dAx[t, n:] = 0.0
                    dAh[t, n:] = 0.0
    return dAx, dAh, dh


# ------------------------------------------------------------------------------------------ RNN
def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False, keep=True):
    """XW (T, B, H) = x W_ih^T + b_ih + b_hh. Returns hs (T+1, B, H), the outputs, which is
    all backward reads: ``keep`` (for the same interface as LSTM and GRU) changes nothing."""
    T, B, H = XW.shape
    hs = _new_states(T, h0, reverse)
    act = tanh if nonlinearity == "tanh" else relu
    recurrent = StepProduct(W_hh.T, B, T)
    with np.errstate(over="ignore"):
        for t, p, q in _order(T, reverse):
            n = _live(batch_sizes, t, B)
            a = recurrent(hs[p, :n], out=hs[q, :n])
            a += XW[t, :n]
            act(a, out=a)  # h = act(x W_ih^T + h_prev W_hh^T + b)
            if n < B:
                hs[q, n:] = hs[p, n:]
    return (hs,)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """Returns dA (T, B, H), the gradient of the pre-activations, and dh0.

    Per step: dh = dh_next + dH[t];  da = dh act'(a);  dh_prev = da W_hh, with act'(a) = 1 - h^2
    (tanh) or [h > 0] (relu) computed for blocks of steps at once.
    """
    (hs,) = cache
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    h_all = hs[:T] if reverse else hs[1:]
    dA = np.empty((T, B, H), hs.dtype)
    dh = dh_n.copy()
    recurrent = StepProduct(W_hh, B, T)
    for lo, hi, steps in _backward_chunks(T, reverse, B * H * hs.itemsize):
        F = dA[lo:hi]
        if nonlinearity == "tanh":
            np.multiply(h_all[lo:hi], h_all[lo:hi], out=F)
            np.subtract(1.0, F, out=F)  # tanh' = 1 - h^2
        else:
            np.greater(h_all[lo:hi], 0, out=F)  # relu' = [h > 0]
        for t, _, _ in steps:
            n = _live(batch_sizes, t, B)
            dh_, da = dh[:n], dA[t, :n]
            if dH is not None:
                dh_ += dH[t, :n]
            da *= dh_  # da = dh act'(a)
            recurrent(da, out=dh_)  # dh_prev = da W_hh
            if n < B:
                dA[t, n:] = 0.0
    return dA, dh
