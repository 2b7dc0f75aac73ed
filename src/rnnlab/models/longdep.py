"""The long-time-lag benchmarks' model: one recurrent layer and a linear readout, with the gate
bias initialisations compared by ``rnnlab bench longdep`` (see :mod:`rnnlab.tasks.longdep`)."""

from __future__ import annotations

import numpy as np

from rnnlab.data.synthetic import one_hot
from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.layers import Linear, SoftmaxCrossEntropy
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import GRU, LSTM, RNN

TASKS = ("adding", "copy")
CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
INITS = ("default", "forget1", "chrono")


# ----------------------------------------------------------------------------- init
def init_gate_biases(layer: RNN | LSTM | GRU, init: str, t_max: int,
                     rng: np.random.Generator) -> None:
    """Set the first layer's gate biases in place for ``init`` (see the module docstring).

    LSTM rows: i = [0, H), f = [H, 2H). GRU rows: z = [H, 2H). A plain RNN is left alone.
    """
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    if init == "default" or isinstance(layer, RNN) or not layer.bias:
        return
    H = layer.hidden_size
    p = layer.parameters()
    b_ih, b_hh = p["bias_ih_l0"], p["bias_hh_l0"]
    i, f = slice(0, H), slice(H, 2 * H)  # LSTM's i and f; GRU's z is rows [H, 2H) too
    if init == "forget1":
        b_hh[f] += 1.0
        return
    b = np.log(rng.uniform(1.0, max(t_max - 1.0, 1.0), size=H))  # log U(1, T_max - 1)
    b_hh[f], b_ih[f] = b, 0.0
    if isinstance(layer, LSTM):
        b_hh[i], b_ih[i] = -b, 0.0


# ----------------------------------------------------------------------------- model
class LongDepModel(Module):
    """One recurrent layer and a linear readout; ``loss`` runs forward, ``backward`` after it
    fills ``grads`` (keys ``rnn.*`` and ``readout.*``)."""

    def __init__(self, task: str, cell: str, hidden: int, symbols: int = 8,
                 dtype: object = np.float32, seed: Seed = None) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {', '.join(CELLS)}, got {cell!r}")
        rng = make_rng(seed)
        self.task, self.symbols, self.dtype = task, symbols, resolve_dtype(dtype)
        D, K = (2, 1) if task == "adding" else (symbols + 2, symbols + 1)
        self.rnn = self._add_child("rnn", CELLS[cell](D, hidden, dtype=self.dtype, seed=rng))
        self.readout = self._add_child("readout", Linear(hidden, K, dtype=self.dtype, seed=rng))
        self.criterion = SoftmaxCrossEntropy()
        self._cache = None
        self._dout = np.zeros((0, 0, 0), self.dtype)  # the adding task's dL/dh, reused

    def _zero_dout(self, shape: tuple) -> np.ndarray:
        """A (T, B, H) gradient that is 0 before its last step, reused across steps of one shape
        (every step writes only the last row, which the next step overwrites)."""
        if self._dout.shape != shape:
            self._dout = np.zeros(shape, self.dtype)
        return self._dout

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The layer's input: adding x as is, copy ids one-hot (T', B, S+2)."""
        if self.task == "copy":
            return one_hot(x, self.symbols + 2, self.dtype)
        return x.astype(self.dtype, copy=False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Adding: predictions (B,). Copy: logits (T', B, S+1)."""
        out, _ = self.rnn(self.inputs(x))  # (T', B, H)
        if self.task == "adding":
            return self.readout(out[-1])[:, 0]  # y_hat = h_T W^T + b
        return self.readout(out)  # logits_t = h_t W^T + b

    __call__ = forward

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward and the loss (adding: MSE; copy: mean cross-entropy per step)."""
        pred = self.forward(x)
        if self.task == "adding":
            err = pred - y.astype(self.dtype, copy=False)
            self._cache = (err, x.shape)
            return float(np.mean(err.astype(np.float64) ** 2))
        self._cache = (None, x.shape)
        return self.criterion(pred, y)

    def backward(self) -> None:
        """Add dL/dparameters of the last :meth:`loss` into ``grads``."""
        if self._cache is None:
            raise RuntimeError("LongDepModel.backward: expected a loss() call before backward")
        err, shape = self._cache
        self._cache = None
        if self.task == "adding":
            dpred = (2.0 / err.shape[0]) * err  # dL/dy_hat = 2 (y_hat - y) / B
            dh_T = self.readout.backward(dpred[:, None].astype(self.dtype))  # (B, H)
            dout = self._zero_dout((shape[0], shape[1], self.rnn.hidden_size))
            dout[-1] = dh_T  # only h_T reaches the loss (the rest stays 0: backward reads it)
        else:
            dout = self.readout.backward(self.criterion.backward())  # (T', B, H)
        self.rnn.backward(dout)
