"""Sequence layers RNN, LSTM and GRU: the ``torch.nn`` API over NumPy, with hand-written BPTT.

Shape legend: T time steps, B batch, D input features, H hidden units, L layers,
K = 2 if bidirectional else 1 directions, G gates (LSTM 4, GRU 3, RNN 1).

    x    (T, B, D)   or (B, T, D) with batch_first, or unbatched (T, D)
    h0   (L*K, B, H) row ``layer * K + direction``; LSTM state is the pair (h0, c0)
    out  (T, B, K*H) the last layer's hidden states, both directions concatenated

Parameters are named, shaped, ordered and initialised exactly as in ``torch.nn``
(``weight_ih_l{k}[_reverse]`` (G*H, D_k), ``weight_hh_l{k}[_reverse]`` (G*H, H), ``bias_ih_…``,
``bias_hh_…`` (G*H,), all drawn from U(-1/sqrt(H), 1/sqrt(H))), so a PyTorch state dict loads
as is. A layer owns the loop over layers and directions; the time loop lives in
:mod:`rnnlab.nn.kernels`, the one-step math in :mod:`rnnlab.nn.cells`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.nn import kernels
from rnnlab.nn.backend import (
    Seed,
    array_module,
    device_of,
    dropout_mask,
    make_rng,
    resolve_device,
    resolve_dtype,
)
from rnnlab.nn.grad_mode import is_grad_enabled
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.validate import (
    check_array,
    check_lengths,
    check_positive_int,
    check_state,
    is_array,
)


def _outputs(states: np.ndarray, reverse: bool) -> np.ndarray:
    """The per-step outputs (T, B, H) of a kernel's state history (T+1, B, H): the state after
    time t is row t+1 going forward and row t in reverse (see :mod:`rnnlab.nn.kernels`)."""
    return states[:-1] if reverse else states[1:]


def _previous(states: np.ndarray, reverse: bool) -> np.ndarray:
    """The state each step started from: row t forward, row t+1 in reverse."""
    return states[1:] if reverse else states[:-1]


@dataclass
class _Cache:
    """What backward needs from the last forward."""

    out_shape: tuple
    unbatched: bool
    order: np.ndarray | None  # batch permutation that sorts sequences by decreasing length
    inverse: np.ndarray | None  # its inverse, to put results back in the caller's order
    valid: np.ndarray | None  # (T, B, 1) 1 at live steps, 0 at padding (sorted batch)
    batch_sizes: np.ndarray | None  # live sequences per time step (sorted batch)
    inputs: list = field(default_factory=list)  # per layer: its (T, B, D_k) input, after dropout
    masks: list = field(default_factory=list)  # per layer > 0: dropout mask applied to its input
    runs: list = field(default_factory=list)  # per layer: per direction: the kernel's cache


class _RecurrentBase(Module):
    gates = 1
    has_cell_state = False
    fold_hidden_bias = True  # b_hh joins the hoisted input projection (not GRU's: r scales it)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: object = np.float32,
        seed: Seed = None,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not (
            0.0 <= dropout < 1.0
        ):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dtype = resolve_dtype(dtype)
        self._rng = make_rng(seed)
        self._cache: _Cache | None = None
        self.device = resolve_device(device)
        require_parameters(  # before reset_parameters allocates them
            f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers="
            f"{self.num_layers}{', bidirectional=True' * self.bidirectional})",
            self.count_parameters(self.input_size, self.hidden_size, self.num_layers, self.bias,
                                  self.bidirectional), self.dtype)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    @classmethod
    def count_parameters(cls, input_size: int, hidden_size: int, num_layers: int = 1,
                         bias: bool = True, bidirectional: bool = False) -> int:
        """The number of parameter values such a layer holds, without building it: per layer
        and direction G*H (D_k + H) weights and 2 G*H biases, D_0 = input_size, D_k = K*H."""
        H, K = int(hidden_size), 2 if bidirectional else 1
        G = cls.gates * H
        per_direction = [G * (D + H) + 2 * G * bool(bias) for D in (int(input_size), K * H)]
        return K * (per_direction[0] + (int(num_layers) - 1) * per_direction[1])

    def _suffix(self, layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn`` does."""
        self._params.clear()
        self._grads.clear()
        self._stale.clear()
        H, G = self.hidden_size, self.gates * self.hidden_size
        k = 1.0 / np.sqrt(H)
        for layer in range(self.num_layers):
            D = self.input_size if layer == 0 else H * self.num_directions
            for d in range(self.num_directions):
                s = self._suffix(layer, d)
                shapes = {f"weight_ih{s}": (G, D), f"weight_hh{s}": (G, H)}
                if self.bias:
                    shapes.update({f"bias_ih{s}": (G,), f"bias_hh{s}": (G,)})
                for name, shape in shapes.items():
                    self._add_param(name, self._rng.uniform(-k, k, size=shape).astype(self.dtype))
        if self.device != "cpu":  # drawn on the host: a seed gives the same weights everywhere
            self.to(self.device)

    def _xp(self):
        """The array module of the layer's device (numpy or cupy)."""
        return array_module(self.device)

    def _weights(self, layer: int, direction: int):
        s, p = self._suffix(layer, direction), self._params
        return p[f"weight_ih{s}"], p[f"weight_hh{s}"], p.get(f"bias_ih{s}"), p.get(f"bias_hh{s}")

    # ------------------------------------------------------------------ per-kind hooks
    def _project(self, X, layer, direction, rows=None):
        """XW = X W_ih^T + biases, (T, B, G*H), a fresh buffer the kernel may overwrite.

        ``rows``: the flat (t, b) positions that are inside their sequence (lengths given); only
        they are projected (padding can be most of a batch, e.g. a character LSTM over words of
        1 to 60 letters). The other rows are left unset: the kernels never read them forward,
        and zero their gradient backward."""
        W_ih, _, b_ih, b_hh = self._weights(layer, direction)
        xp = self._xp()
        T, B, D = X.shape
        bias = None if b_ih is None else (b_ih + b_hh if self.fold_hidden_bias else b_ih)
        if rows is None:
            XW = xp.matmul(X.reshape(T * B, D), W_ih.T).reshape(T, B, -1)
            if bias is not None:
                XW += bias
            return XW
        packed = xp.matmul(X.reshape(T * B, D)[rows], W_ih.T)  # (N, G*H), N = sum of lengths
        if bias is not None:
            packed += bias
        XW = xp.empty((T * B, packed.shape[1]), self.dtype)
        XW[rows] = packed
        return XW.reshape(T, B, -1)

    def _run(self, XW, layer, direction, state0, batch_sizes, keep):  # -> kernel cache
        raise NotImplementedError

    def _final(self, run, reverse):
        """The state after each sequence's last step: the kernels' caches start with the state
        histories (hs, and cs for LSTM), whose last step is row 0 in reverse, row T forward."""
        return tuple(s[0] if reverse else s[-1] for s in run[:1 + self.has_cell_state])

    def _run_backward(self, run, layer, direction, dH, dstate, batch_sizes):
        """-> (dA_x, dA_h, dstate0): gradients of XW, of h W_hh^T + b_hh, and of the state0."""
        raise NotImplementedError

    # ------------------------------------------------------------------ forward
    def __call__(self, x, state=None, lengths=None, return_internals=False):
        return self.forward(x, state, lengths, return_internals)

    def forward(self, x, state=None, lengths=None, return_internals: bool = False):
        """Run the layer over a batch of sequences; see the class docstring for shapes."""
        X, unbatched = self._time_major_input(x)
        xp = self._xp()
        T, B, _ = X.shape
        states0 = self._initial_states(state, B, unbatched)  # each (L*K, B, H)
        order = inverse = batch_sizes = valid = rows = None
        if lengths is not None:
            lens = check_lengths(lengths, B, T)
            if unbatched:
                raise ValueError("lengths: expected no lengths for an unbatched (T, D) input")
            if lens.min() < T:
                order = np.argsort(-lens, kind="stable")
                inverse = np.argsort(order)
                batch_sizes = (lens[order][None, :] > np.arange(T)[:, None]).sum(axis=1)
                valid = self._valid_mask(batch_sizes, T, B)
                rows = np.flatnonzero(valid.reshape(T * B))
                if xp is not np:  # the permutations and masks index device arrays
                    order, inverse, valid, rows = map(xp.asarray, (order, inverse, valid, rows))
                X = X[:, order]
                states0 = [s[:, order] for s in states0]
        cache = _Cache(out_shape=np.shape(x), unbatched=unbatched, order=order, inverse=inverse,
                       valid=valid, batch_sizes=batch_sizes)
        # Under no_grad the kernels store only what they return and nothing is cached for a
        # backward (the internals need the whole cache, so they keep it).
        keep = is_grad_enabled() or return_internals
        finals = [xp.empty_like(s) for s in states0]
        inp = X
        H, K = self.hidden_size, self.num_directions
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                mask = dropout_mask(self._rng, inp.shape, self.dropout, self.dtype, self.device)
                inp = inp * mask
                cache.masks.append(mask)
            else:
                cache.masks.append(None)
            if keep:
                cache.inputs.append(inp)
            out = xp.empty((T, B, K * H), self.dtype)
            runs = []
            for d in range(K):
                row = layer * K + d
                run = self._run(self._project(inp, layer, d, rows), layer, d,
                                [s[row] for s in states0], batch_sizes, keep)
                if keep:
                    runs.append(run)
                hs = run[0]
                out[:, :, d * H:(d + 1) * H] = _outputs(hs, bool(d))
                for final, value in zip(finals, self._final(run, d), strict=True):
                    final[row] = value
            if valid is not None:
                out *= valid
            cache.runs.append(runs)
            inp = out
        self._cache = cache if keep else None
        out = self._to_user(inp, inverse, unbatched)
        finals = [self._state_to_user(s, inverse, unbatched) for s in finals]
        result_state = tuple(finals) if self.has_cell_state else finals[0]
        if return_internals:
            return out, result_state, self._internals(cache)
        return out, result_state

    def _valid_mask(self, batch_sizes, T, B):
        return (np.arange(B)[None, :] < batch_sizes[:, None]).astype(self.dtype)[:, :, None]

    # ------------------------------------------------------------------ backward
    def backward(self, dout, dstate=None):
        """Backpropagate through the last forward call.

        Returns ``(dx, dstate0)`` shaped like ``(x, state0)``; parameter gradients are added to
        ``self.grads`` (they accumulate, as in PyTorch, until :meth:`zero_grad`).
        """
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: expected a forward call before backward, "
                "got none (or the cache was already consumed, or the forward ran under "
                "rnnlab.nn.no_grad(), which keeps nothing for backward)"
            )
        dOut = self._time_major_grad(dout, cache)
        T, B, _ = dOut.shape
        dfinals = self._final_state_grads(dstate, cache, B)
        order, batch_sizes = cache.order, cache.batch_sizes
        if order is not None:
            dOut = dOut[:, order]
            dfinals = [s[:, order] for s in dfinals]
        xp = self._xp()
        dstates0 = [xp.empty_like(s) for s in dfinals]
        H, K = self.hidden_size, self.num_directions
        for layer in reversed(range(self.num_layers)):
            inp = cache.inputs[layer]
            dinp = xp.empty(inp.shape, inp.dtype)  # direction 0 writes it (C order), 1 adds
            for d in range(K):
                row = layer * K + d
                run = cache.runs[layer][d]
                dA_x, dA_h, ds0 = self._run_backward(
                    run, layer, d, dOut[:, :, d * H:(d + 1) * H], [s[row] for s in dfinals],
                    batch_sizes,
                )
                for target, value in zip(dstates0, ds0, strict=True):
                    target[row] = value
                self._accumulate(layer, d, inp, _previous(run[0], bool(d)), dA_x, dA_h, dinp)
            if cache.masks[layer] is not None:
                dinp *= cache.masks[layer]
            dOut = dinp
        dx = self._to_user(dOut, cache.inverse, cache.unbatched)
        dstates0 = [self._state_to_user(s, cache.inverse, cache.unbatched) for s in dstates0]
        return dx, (tuple(dstates0) if self.has_cell_state else dstates0[0])

    def _accumulate(self, layer, d, inp, h_prev, dA_x, dA_h, dinp):
        """The weight gradients as single GEMMs over all time steps; dx = dA_x W_ih (direction
        0 writes ``dinp``, direction 1 adds to it)."""
        s = self._suffix(layer, d)
        W_ih = self._params[f"weight_ih{s}"]
        TB = inp.shape[0] * inp.shape[1]
        ax, ah = dA_x.reshape(TB, -1), dA_h.reshape(TB, -1)
        self._grad_add_matmul(f"weight_ih{s}", ax.T, inp.reshape(TB, -1))
        self._grad_add_matmul(f"weight_hh{s}", ah.T, h_prev.reshape(TB, -1))
        if self.bias:
            db_x = ax.sum(axis=0)
            self._grad_add(f"bias_ih{s}", db_x)
            self._grad_add(f"bias_hh{s}", db_x if dA_h is dA_x else ah.sum(axis=0))  # LSTM: 1 dA
        if d == 0:
            self._xp().matmul(ax, W_ih, out=dinp.reshape(TB, -1))
        else:
            dinp += (ax @ W_ih).reshape(dinp.shape)

    # ------------------------------------------------------------------ boundary: checks, layout
    def _time_major_input(self, x):
        D = self.input_size
        xp = self._xp()
        if is_array(x):
            self._check_device("x", x)
        if is_array(x) and x.ndim == 2:
            x = check_array("x", x, self.dtype, (None, D), ("T", "input_size"))
            return xp.ascontiguousarray(x[:, None, :]), True
        dims = ("B", "T", "input_size") if self.batch_first else ("T", "B", "input_size")
        if is_array(x) and x.ndim != 3:
            raise ValueError(
                f"x: expected a 3-D array ({', '.join(dims)}={D}) or an unbatched 2-D array "
                f"(T, input_size={D}), got shape {x.shape}"
            )
        x = check_array("x", x, self.dtype, (None, None, D), dims)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x: expected at least one time step and one sequence, got {x.shape}")
        X = x.transpose(1, 0, 2) if self.batch_first else x
        return xp.ascontiguousarray(X), False

    def _check_device(self, name, x):
        if device_of(x) != self.device:
            raise ValueError(f"{name}: expected an array on {self.device!r} (the layer's device; "
                             f"move it, or the layer with .to), got one on {device_of(x)!r}")

    def _state_shape(self, B, unbatched):
        LK = self.num_layers * self.num_directions
        return (LK, self.hidden_size) if unbatched else (LK, B, self.hidden_size)

    def _states_as_list(self, name, state):
        if self.has_cell_state:
            if not isinstance(state, tuple | list) or len(state) != 2:
                raise TypeError(
                    f"{name}: expected a tuple (h, c) of two arrays, got {type(state).__name__}"
                )
            return list(state)
        return [state]

    def _initial_states(self, state, B, unbatched):
        shape = self._state_shape(B, unbatched)
        if state is None:
            return [self._xp().zeros((shape[0], B, self.hidden_size), self.dtype)
                    for _ in range(1 + self.has_cell_state)]
        names = ("h0", "c0") if self.has_cell_state else ("h0",)
        states = self._states_as_list("state", state)
        for n, s in zip(names, states, strict=True):
            if is_array(s):
                self._check_device(n, s)
        return [
            self._xp().ascontiguousarray(
                check_state(n, s, self.dtype, shape).reshape(shape[0], B, -1))
            for n, s in zip(names, states, strict=True)
        ]

    def _time_major_grad(self, dout, cache):
        dims = ("T", "B", "K*H")
        if self.batch_first and not cache.unbatched:
            dims = ("B", "T", "K*H")
        want = cache.out_shape[:-1] + (self.num_directions * self.hidden_size,)
        if is_array(dout):
            self._check_device("dout", dout)
        dout = check_array("dout", dout, self.dtype, want, dims[-len(want):])
        if cache.unbatched:
            return dout[:, None, :]
        return dout.transpose(1, 0, 2) if self.batch_first else dout

    def _final_state_grads(self, dstate, cache, B):
        shape = self._state_shape(B, cache.unbatched)
        n = 1 + self.has_cell_state
        if dstate is None:
            return [self._xp().zeros((shape[0], B, self.hidden_size), self.dtype)
                    for _ in range(n)]
        names = ("dh_n", "dc_n") if self.has_cell_state else ("dh_n",)
        parts = self._states_as_list("dstate", dstate)
        return [
            self._xp().zeros((shape[0], B, self.hidden_size), self.dtype) if g is None
            else check_state(nm, g, self.dtype, shape).reshape(shape[0], B, -1)
            for nm, g in zip(names, parts, strict=True)
        ]

    def _to_user(self, Y, inverse, unbatched):
        if inverse is not None:
            Y = Y[:, inverse]
        if unbatched:
            return Y[:, 0]
        return self._xp().ascontiguousarray(Y.transpose(1, 0, 2)) if self.batch_first else Y

    def _state_to_user(self, S, inverse, unbatched):
        if inverse is not None:
            S = S[:, inverse]
        return S[:, 0] if unbatched else S

    # ------------------------------------------------------------------ inspection
    def _internals(self, cache):
        result, valid = {}, cache.valid
        for layer, runs in enumerate(cache.runs):
            for d, run in enumerate(runs):
                parts = self._internal_parts(run, d)
                for k, v in parts.items():
                    # rows past a sequence's end were never computed: zeros, not v * 0
                    v = (self._xp().where(valid > 0, v, 0).astype(v.dtype) if valid is not None
                         else v.copy())
                    parts[k] = self._to_user(v, cache.inverse, cache.unbatched)
                result[self._suffix(layer, d)[1:]] = parts
        return result

    def _internal_parts(self, run, d):
        return {"h": _outputs(run[0], bool(d))}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype}"
                + (f", device={self.device!r}" if self.device != "cpu" else ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class LSTM(_RecurrentBase):
    """Long short-term memory, ``torch.nn.LSTM``-compatible.

        i = sigma(x W_ii^T + b_ii + h W_hi^T + b_hi)      input gate
        f = sigma(x W_if^T + b_if + h W_hf^T + b_hf)      forget gate
        g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)       candidate cell state
        o = sigma(x W_io^T + b_io + h W_ho^T + b_ho)      output gate
        c' = f * c + i * g;   h' = o * tanh(c')

    All four gates come from one fused affine product over the stacked blocks [i, f, g, o].
    ``out, (h_n, c_n) = lstm(x, (h0, c0), lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))``.
    """

    gates = 4
    has_cell_state = True

    def _run(self, XW, layer, direction, state0, batch_sizes, keep):
        h0, c0 = state0
        return kernels.lstm_forward(XW, self._weights(layer, direction)[1], h0, c0, batch_sizes,
                                    bool(direction), keep)

    def _run_backward(self, run, layer, direction, dH, dstate, batch_sizes):
        W_hh = self._weights(layer, direction)[1]
        dA, ds0 = kernels.lstm_backward(run, W_hh, dH, dstate[0], dstate[1], batch_sizes,
                                        bool(direction))
        return dA, dA, ds0

    def _internal_parts(self, run, d):
        hs, cs, gates, _ = run
        H = self.hidden_size
        parts = {name: gates[:, :, k * H:(k + 1) * H] for k, name in enumerate("ifgo")}
        parts["c"] = _outputs(cs, bool(d))
        parts["h"] = _outputs(hs, bool(d))
        return parts


class GRU(_RecurrentBase):
    """Gated recurrent unit, ``torch.nn.GRU``-compatible.

        r = sigma(x W_ir^T + b_ir + h W_hr^T + b_hr)      reset gate
        z = sigma(x W_iz^T + b_iz + h W_hz^T + b_hz)      update gate
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)) candidate
        h' = (1 - z) * n + z * h

    ``out, h_n = gru(x, h0, lengths=None)``;  ``dx, dh0 = gru.backward(dout, dh_n)``.
    """

    gates = 3
    fold_hidden_bias = False  # b_hn stays inside: r scales (h W_hn^T + b_hn)

    def _run(self, XW, layer, direction, state0, batch_sizes, keep):
        _, W_hh, _, b_hh = self._weights(layer, direction)
        return kernels.gru_forward(XW, W_hh, b_hh, state0[0], batch_sizes, bool(direction), keep)

    def _run_backward(self, run, layer, direction, dH, dstate, batch_sizes):
        W_hh = self._weights(layer, direction)[1]
        dAx, dAh, dh0 = kernels.gru_backward(run, W_hh, dH, dstate[0], batch_sizes,
                                             bool(direction))
        return dAx, dAh, (dh0,)

    def _internal_parts(self, run, d):
        hs, gates, _ = run
        H = self.hidden_size
        parts = {name: gates[:, :, k * H:(k + 1) * H] for k, name in enumerate("rzn")}
        parts["h"] = _outputs(hs, bool(d))
        return parts


class RNN(_RecurrentBase):
    """Elman RNN, ``torch.nn.RNN``-compatible: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).

    ``nonlinearity`` is ``"tanh"`` (default) or ``"relu"``.
    ``out, h_n = rnn(x, h0, lengths=None)``;  ``dx, dh0 = rnn.backward(dout, dh_n)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: object = np.float32,
                 seed: Seed = None, device: str = "cpu") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, device)

    def _run(self, XW, layer, direction, state0, batch_sizes, keep):
        W_hh = self._weights(layer, direction)[1]
        return kernels.rnn_forward(XW, W_hh, state0[0], self.nonlinearity, batch_sizes,
                                   bool(direction), keep)

    def _run_backward(self, run, layer, direction, dH, dstate, batch_sizes):
        W_hh = self._weights(layer, direction)[1]
        dA, dh0 = kernels.rnn_backward(run, W_hh, dH, dstate[0], self.nonlinearity, batch_sizes,
                                       bool(direction))
        return dA, dA, (dh0,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"
