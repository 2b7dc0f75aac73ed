"""One time step of each recurrent cell, forward and backward: the math, line by line.

Shapes: B batch, D input features, H hidden units. Weights follow ``torch.nn``: ``W_ih`` is
(G*H, D) and ``W_hh`` is (G*H, H) with the G gate blocks stacked in PyTorch's order (LSTM: i, f,
g, o; GRU: r, z, n; RNN: one block). Every step takes ``xw = x @ W_ih.T + b_ih``, the input
projection, so a sequence layer can compute it for all time steps with one GEMM before its loop.

These functions are the readable reference: each equation is one line. The sequence layers in
:mod:`rnnlab.nn.kernels` run the same equations in place over preallocated buffers, and the tests
prove the two agree (a layer equals a loop over its cell).
"""

from __future__ import annotations

import numpy as np

from rnnlab.nn import ops
from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.module import Module
from rnnlab.validate import check_array, check_positive_int, check_state


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ops.sigmoid(x)


def tanh(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ops.tanh(x)


# ----------------------------------------------------------------------------------------- LSTM
def lstm_step(xw, h_prev, c_prev, W_hh, b_hh):
    """LSTM step. Returns (h, c) and the cache backward needs."""
    a = xw + h_prev @ W_hh.T + b_hh  # (B, 4H) pre-activations: ONE fused affine product
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i = sigmoid(a_i)  # input gate
    f = sigmoid(a_f)  # forget gate
    g = tanh(a_g)  # candidate cell state (C~)
    o = sigmoid(a_o)  # output gate
    c = f * c_prev + i * g  # c_t = f * c_{t-1} + i * g
    tanh_c = tanh(c)
    h = o * tanh_c  # h_t = o * tanh(c_t)
    return (h, c), (h_prev, c_prev, i, f, g, o, tanh_c)


def lstm_step_backward(dh, dc, cache, W_hh):
    """Backward of :func:`lstm_step`. ``dc`` is dL/dc_t arriving from step t+1.

    Returns da (B, 4H), the gradient of the pre-activations, and (dh_prev, dc_prev).
    """
    h_prev, c_prev, i, f, g, o, tanh_c = cache
    do = dh * tanh_c  # h = o * tanh(c)
    dc = dc + dh * o * (1 - tanh_c**2)
    df = dc * c_prev  # c = f * c_prev + i * g
    di = dc * g
    dg = dc * i
    dc_prev = dc * f
    da_i = di * i * (1 - i)  # sigma' = sigma (1 - sigma)
    da_f = df * f * (1 - f)
    da_g = dg * (1 - g**2)  # tanh' = 1 - tanh^2
    da_o = do * o * (1 - o)
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=1)  # (B, 4H), gate order i, f, g, o
    dh_prev = da @ W_hh
    return da, (dh_prev, dc_prev)


# ------------------------------------------------------------------------------------------ GRU
def gru_step(xw, h_prev, W_hh, b_hh):
    """GRU step (PyTorch's variant: the reset gate multiplies W_hn h + b_hn)."""
    gh = h_prev @ W_hh.T + b_hh  # (B, 3H)
    xw_r, xw_z, xw_n = np.split(xw, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = sigmoid(xw_r + gh_r)  # reset gate
    z = sigmoid(xw_z + gh_z)  # update gate
    n = tanh(xw_n + r * gh_n)  # candidate: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h = (1 - z) * n + z * h_prev  # h_t = (1 - z) * n + z * h_{t-1}
    return h, (h_prev, r, z, n, gh_n)


def gru_step_backward(dh, cache, W_hh):
    """Backward of :func:`gru_step`. Returns (da_x, da_h, dh_prev).

    da_x (B, 3H) is the gradient of xw, da_h (B, 3H) that of gh = h_prev W_hh^T + b_hh; they differ
    only in the n block, where r sits between them.
    """
    h_prev, r, z, n, gh_n = cache
    dn = dh * (1 - z)
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n**2)  # tanh'
    dr = da_n * gh_n
    dgh_n = da_n * r
    da_r = dr * r * (1 - r)  # sigma'
    da_z = dz * z * (1 - z)
    da_x = np.concatenate([da_r, da_z, da_n], axis=1)
    da_h = np.concatenate([da_r, da_z, dgh_n], axis=1)
    dh_prev = dh * z + da_h @ W_hh
    return da_x, da_h, dh_prev


# ------------------------------------------------------------------------------------------ RNN
def rnn_step(xw, h_prev, W_hh, b_hh, nonlinearity="tanh"):
    """Elman RNN step: h_t = act(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""
    a = xw + h_prev @ W_hh.T + b_hh
    h = tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
    return h, (h_prev, h)


def rnn_step_backward(dh, cache, W_hh, nonlinearity="tanh"):
    """Backward of :func:`rnn_step`. Returns (da, dh_prev)."""
    h_prev, h = cache
    da = dh * (1 - h**2) if nonlinearity == "tanh" else dh * (h > 0)
    dh_prev = da @ W_hh
    return da, dh_prev


# ---------------------------------------------------------------------------------- cell modules
class _Cell(Module):
    """Shared parts of the cell modules: parameters, input checks and the LIFO tape.

    Each forward pushes its cache on a tape and each backward pops the newest, so T forwards
    followed by T backwards (last step first) is backpropagation through time.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed: Seed = None):
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.dtype = resolve_dtype(dtype)
        rng = make_rng(seed)
        k = 1.0 / np.sqrt(hidden_size)
        G, H = self.gates * hidden_size, hidden_size
        shapes = {"weight_ih": (G, input_size), "weight_hh": (G, H)}
        if self.bias:
            shapes.update(bias_ih=(G,), bias_hh=(G,))
        for name, shape in shapes.items():
            self._add_param(name, rng.uniform(-k, k, size=shape).astype(self.dtype))
        self._tape: list = []

    def _weights(self):
        p = self._params
        G = self.gates * self.hidden_size
        zero = np.zeros(G, self.dtype)
        return p["weight_ih"], p["weight_hh"], p.get("bias_ih", zero), p.get("bias_hh", zero)

    def _check_x(self, x):
        return check_array("x", x, self.dtype, (None, self.input_size), ("batch", "input_size"))

    def _check_h(self, name, h, batch):
        if h is None:
            return np.zeros((batch, self.hidden_size), self.dtype)
        return check_state(name, h, self.dtype, (batch, self.hidden_size))

    def _pop(self):
        if not self._tape:
            raise RuntimeError(
                f"{type(self).__name__}.backward: expected a forward call before backward "
                "(the tape of forward steps is empty)"
            )
        return self._tape.pop()

    def _accumulate(self, x, h_prev, da_x, da_h):
        self._grad_add_matmul("weight_ih", da_x.T, x)
        self._grad_add_matmul("weight_hh", da_h.T, h_prev)
        if self.bias:
            self._grad_add("bias_ih", da_x.sum(axis=0))
            self._grad_add("bias_hh", da_h.sum(axis=0))

    def clear_tape(self) -> None:
        """Forget the cached forward steps (e.g. at a truncated-BPTT boundary)."""
        self._tape.clear()

    def _check_grad(self, name, d, like):
        return check_state(name, d, self.dtype, like.shape, allow_nonfinite=False)


class LSTMCell(_Cell):
    """One LSTM step, ``torch.nn.LSTMCell``-compatible: ``h, c = cell(x, (h, c))``.

    i, f, g, o = sigma, sigma, tanh, sigma of (x W_ih^T + b_ih + h W_hh^T + b_hh);
    c' = f * c + i * g;  h' = o * tanh(c').   x: (B, D); h, c: (B, H).
    """

    gates = 4

    def __call__(self, x, state=None):
        return self.forward(x, state)

    def forward(self, x: np.ndarray, state=None) -> tuple[np.ndarray, np.ndarray]:
        x = self._check_x(x)
        h, c = (None, None) if state is None else _pair("state", state)
        h = self._check_h("h", h, x.shape[0])
        c = self._check_h("c", c, x.shape[0])
        W_ih, W_hh, b_ih, b_hh = self._weights()
        (h_new, c_new), cache = lstm_step(x @ W_ih.T + b_ih, h, c, W_hh, b_hh)
        self._tape.append((x, cache))
        return h_new, c_new

    def backward(self, dh: np.ndarray, dc: np.ndarray | None = None):
        """Pop the newest step; return dx, (dh_prev, dc_prev) and accumulate ``grads``."""
        x, cache = self._pop()
        dh = self._check_grad("dh", dh, cache[0])
        dc = np.zeros_like(cache[1]) if dc is None else self._check_grad("dc", dc, cache[1])
        da, (dh_prev, dc_prev) = lstm_step_backward(dh, dc, cache, self._params["weight_hh"])
        self._accumulate(x, cache[0], da, da)
        return da @ self._params["weight_ih"], (dh_prev, dc_prev)


class GRUCell(_Cell):
    """One GRU step, ``torch.nn.GRUCell``-compatible: ``h = cell(x, h)``.

    r, z = sigma(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z});
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));  h' = (1 - z) * n + z * h.
    """

    gates = 3

    def __call__(self, x, h=None):
        return self.forward(x, h)

    def forward(self, x: np.ndarray, h: np.ndarray | None = None) -> np.ndarray:
        x = self._check_x(x)
        h = self._check_h("h", h, x.shape[0])
        W_ih, W_hh, b_ih, b_hh = self._weights()
        h_new, cache = gru_step(x @ W_ih.T + b_ih, h, W_hh, b_hh)
        self._tape.append((x, cache))
        return h_new

    def backward(self, dh: np.ndarray):
        """Pop the newest step; return dx, dh_prev and accumulate ``grads``."""
        x, cache = self._pop()
        dh = self._check_grad("dh", dh, cache[0])
        da_x, da_h, dh_prev = gru_step_backward(dh, cache, self._params["weight_hh"])
        self._accumulate(x, cache[0], da_x, da_h)
        return da_x @ self._params["weight_ih"], dh_prev


class RNNCell(_Cell):
    """One Elman RNN step, ``torch.nn.RNNCell``-compatible: ``h = cell(x, h)``.

    h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act = tanh or relu.
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32, seed: Seed = None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, seed)

    def __call__(self, x, h=None):
        return self.forward(x, h)

    def forward(self, x: np.ndarray, h: np.ndarray | None = None) -> np.ndarray:
        x = self._check_x(x)
        h = self._check_h("h", h, x.shape[0])
        W_ih, W_hh, b_ih, b_hh = self._weights()
        h_new, cache = rnn_step(x @ W_ih.T + b_ih, h, W_hh, b_hh, self.nonlinearity)
        self._tape.append((x, cache))
        return h_new

    def backward(self, dh: np.ndarray):
        """Pop the newest step; return dx, dh_prev and accumulate ``grads``."""
        x, cache = self._pop()
        dh = self._check_grad("dh", dh, cache[0])
        da, dh_prev = rnn_step_backward(dh, cache, self._params["weight_hh"], self.nonlinearity)
        self._accumulate(x, cache[0], da, da)
        return da @ self._params["weight_ih"], dh_prev


def _pair(name, state):
    if not isinstance(state, tuple | list) or len(state) != 2:
        raise TypeError(f"{name}: expected a tuple (h, c), got {type(state).__name__}")
    return state
