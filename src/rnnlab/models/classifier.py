"""A sequence classifier over frames: a (Bi)LSTM/GRU, pooled into one softmax over classes, or
read out at every frame for CTC. Nothing here knows about speech: any (T, B, D) feature
sequences with lengths will do.

For the frames x_1..x_T of a sequence (time-major, padded past each length):

    x'_u  = [x_{ku+1}; ...; x_{ku+k}]            frame stacking (``stack`` = k; zero-padded at
                                                the end): k times fewer steps to run
    h_u   = RNN^L(x'_1..x'_U)_u                 (Bi)LSTM or GRU, dropout between layers
    output "class" (one label per sequence):
        p     = pool(h_1..h_U)                  "last":  [h^fwd_U; h^bwd_1]
                                                "mean":  sum_u h_u / U
                                                "attention": sum_u a_u h_u,
                                                   a = softmax_u(v . tanh(W_q q + W_k h_u)),
                                                   q a learned query
        z     = W dropout(p) + b                (B, C)
        loss  = mean_b -log softmax(z_b)[y_b]
    output "ctc" (a label sequence per sequence, alignment unknown):
        z_u   = W dropout(h_u) + b              (U, B, C + 1): class C is CTC's blank
        loss  = mean_b CTC(z_b, y_b)            :class:`rnnlab.nn.ctc.CTCLoss`

Backward mirrors it: the loss gives dz, the head gives dp (or dh_u), the pooling spreads dp over
the steps it read (evenly for "mean", by a_u and through the scores for "attention", to the two
ends for "last"), and the recurrent layer takes it from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.nn.attention import Attention
from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.ctc import CTCLoss
from rnnlab.nn.layers import Dropout, Linear, SoftmaxCrossEntropy
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.nn.ops import log_softmax
from rnnlab.nn.recurrent import GRU, LSTM
from rnnlab.validate import check_lengths, check_positive_int

CELLS = {"lstm": LSTM, "gru": GRU}
POOLS = ("last", "mean", "attention")
OUTPUTS = ("class", "ctc")


@dataclass
class ClassifierConfig:
    """Architecture of a :class:`SequenceClassifier` (saved with every checkpoint). ``inputs``
    is the feature size per frame; ``classes`` the labels (CTC adds a blank after them)."""

    inputs: int
    classes: int
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.2
    pool: str = "mean"  # output "class" only
    output: str = "class"
    stack: int = 1  # frames stacked into one step
    attn_size: int = 64  # pool "attention" only
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("inputs", "classes", "hidden", "layers", "stack", "attn_size"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        for name, choices in (("cell", tuple(CELLS)), ("pool", POOLS), ("output", OUTPUTS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: expected one of {', '.join(choices)}, got "
                                 f"{getattr(self, name)!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional: expected true or false, got "
                             f"{self.bidirectional!r}")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {p!r}")
        resolve_dtype(self.dtype)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def outputs(self) -> int:
        """The head's width: the classes, and CTC's blank."""
        return self.classes + (self.output == "ctc")

    @property
    def blank(self) -> int | None:
        """CTC's blank index (the last output), or None for a classifier."""
        return self.classes if self.output == "ctc" else None

    def num_parameters(self) -> int:
        K, H = self.directions, self.hidden
        n = CELLS[self.cell].count_parameters(self.inputs * self.stack, H, self.layers,
                                              bidirectional=self.bidirectional)
        n += (K * H + 1) * self.outputs
        if self.output == "class" and self.pool == "attention":
            n += K * H + 2 * self.attn_size * K * H + self.attn_size  # query, W_q, W_k, v
        return n

    def to_dict(self) -> dict:
        return asdict(self)


def stack_frames(x: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, B, D) frames -> (ceil(T/k), B, k*D): each step holds k consecutive frames (the end
    zero-padded), and each length becomes ceil(length / k)."""
    if k == 1:
        return x, lengths
    T, B, D = x.shape
    U = -(-T // k)
    padded = np.zeros((U * k, B, D), x.dtype)
    padded[:T] = x
    stacked = padded.reshape(U, k, B, D).transpose(0, 2, 1, 3).reshape(U, B, k * D)
    return np.ascontiguousarray(stacked), -(-lengths // k)


class SequenceClassifier(Module):
    """See the module docstring. Parameters ``rnn.*``, ``head.*`` (torch names) and, with
    attention pooling, ``query`` and ``attention.*``."""

    def __init__(self, config: ClassifierConfig, seed: Seed = None) -> None:
        super().__init__()
        c = self.config = config
        dt = self.dtype = resolve_dtype(config.dtype)
        require_parameters(f"SequenceClassifier({c.cell}, hidden={c.hidden}, layers={c.layers})",
                           c.num_parameters(), dt)
        rng = self._rng = make_rng(seed)
        width = c.directions * c.hidden
        self.rnn = self._add_child("rnn", CELLS[c.cell](
            c.inputs * c.stack, c.hidden, c.layers, dropout=c.dropout if c.layers > 1 else 0.0,
            bidirectional=c.bidirectional, dtype=dt, seed=rng))
        self.attention = None
        if c.output == "class" and c.pool == "attention":
            bound = 1.0 / np.sqrt(width)
            self._add_param("query", rng.uniform(-bound, bound, width).astype(dt))
            self.attention = self._add_child("attention", Attention(
                width, width, "additive", c.attn_size, dtype=dt, seed=rng))
        self.drop = Dropout(c.dropout, seed=rng)
        self.head = self._add_child("head", Linear(width, c.outputs, dtype=dt, seed=rng))
        self.loss = (SoftmaxCrossEntropy("mean") if c.output == "class"
                     else CTCLoss(blank=c.blank, reduction="sum"))
        self._cache = None

    def train(self, mode: bool = True) -> SequenceClassifier:
        super().train(mode)
        self.drop.train(mode)
        return self

    # ------------------------------------------------------------------ forward
    def _check(self, x: object, lengths: object) -> tuple[np.ndarray, np.ndarray]:
        D = self.config.inputs
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != D:
            raise ValueError(f"x: expected frames of shape (T, B, {D}), got {np.shape(x)}")
        if x.dtype != self.dtype:
            raise TypeError(f"x: expected dtype {self.dtype}, got {x.dtype}")
        T, B, _ = x.shape
        lens = (np.full(B, T, np.int64) if lengths is None
                else check_lengths(lengths, B, T).astype(np.int64))
        return x, lens

    def _pool(self, h: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(U, B, KH) steps -> (B, KH), as the config's ``pool`` says."""
        c, B = self.config, h.shape[1]
        if c.pool == "mean":
            mask = (np.arange(h.shape[0])[:, None] < lengths[None, :])[..., None]
            return (h * mask).sum(axis=0) / lengths[:, None].astype(h.dtype)
        if c.pool == "last":  # forward reads the sequence to its end, backward to its start
            p = h[lengths - 1, np.arange(B)].copy()
            if c.bidirectional:
                p[:, c.hidden:] = h[0, :, c.hidden:]
            return p
        query = np.broadcast_to(self._params["query"], (1, B, h.shape[2])).copy()
        context, _ = self.attention(query, h, lengths=lengths)
        return context[0]

    def _unpool(self, dp: np.ndarray, shape: tuple, lengths: np.ndarray) -> np.ndarray:
        """The pooling's backward: dp (B, KH) -> dh (U, B, KH)."""
        c, B = self.config, dp.shape[0]
        if c.pool == "mean":
            mask = (np.arange(shape[0])[:, None] < lengths[None, :])[..., None]
            return (mask * (dp / lengths[:, None].astype(dp.dtype))[None]).astype(dp.dtype)
        if c.pool == "last":
            dh = np.zeros(shape, dp.dtype)
            if c.bidirectional:
                dh[lengths - 1, np.arange(B), :c.hidden] = dp[:, :c.hidden]
                dh[0, :, c.hidden:] += dp[:, c.hidden:]
            else:
                dh[lengths - 1, np.arange(B)] = dp
            return dh
        dquery, dh, _ = self.attention.backward(dp[None])
        self._grad_add("query", dquery.sum(axis=(0, 1)))
        return dh

    def forward(self, x: np.ndarray, lengths: object = None) -> tuple[np.ndarray, np.ndarray]:
        """x (T, B, inputs), lengths (B,) -> (logits, step lengths): logits (B, C) for a
        classifier, (U, B, C + 1) per step for CTC, U = ceil(T / stack)."""
        x, lens = self._check(x, lengths)
        x, lens = stack_frames(x, lens, self.config.stack)
        h, _ = self.rnn(x, lengths=lens)  # (U, B, KH), zero past each length
        if self.config.output == "ctc":
            self._cache = (h.shape, lens)
            return self.head(self.drop(h)), lens
        p = self._pool(h, lens)  # (B, KH)
        self._cache = (h.shape, lens)
        return self.head(self.drop(p)), lens

    __call__ = forward

    def forward_loss(self, x: np.ndarray, lengths: object, targets: object,
                     target_lengths: object = None) -> float:
        """The mean loss per sequence: ``targets`` (B,) class ids for a classifier; for CTC,
        (B, S) label ids padded past ``target_lengths`` (B,)."""
        z, lens = self.forward(x, lengths)
        if self.config.output == "class":
            return float(self.loss.forward(z, np.asarray(targets)))
        B = z.shape[1]
        self._batch = B
        return float(self.loss.forward(z, targets, lens, target_lengths)) / B

    # ------------------------------------------------------------------ backward
    def backward_loss(self, scale: float = 1.0) -> None:
        """Gradients of ``scale`` x the last :meth:`forward_loss` into ``grads``."""
        if self._cache is None:
            raise RuntimeError("SequenceClassifier.backward_loss: expected a forward_loss call "
                               "first")
        shape, lens = self._cache
        self._cache = None
        if self.config.output == "ctc":
            dz = self.loss.backward(scale / self._batch)  # (U, B, C + 1)
            dh = self.drop.backward(self.head.backward(dz))
        else:
            dp = self.drop.backward(self.head.backward(self.loss.backward(scale)))
            dh = self._unpool(dp, shape, lens)
        self.rnn.backward(np.ascontiguousarray(dh, dtype=self.dtype))

    # ------------------------------------------------------------------ inference
    def log_probs(self, x: np.ndarray, lengths: object = None) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities in eval mode: (B, C) per sequence, or (U, B, C + 1) per step for
        CTC; and the step lengths. Gives the model's mode back."""
        was_training = self.training
        self.eval()
        try:
            z, lens = self.forward(x, lengths)
        finally:
            self._cache = None
            self.train(was_training)
        return log_softmax(z.astype(np.float64)), lens

    def frame_log_probs(self, x: np.ndarray, lengths: object = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities of the head at every step, (U, B, outputs), in eval mode: what CTC
        decodes, or for a classifier what each step alone would say (with "mean" pooling the
        pooled logits are exactly the mean of these steps' logits, the head being linear)."""
        was_training = self.training
        self.eval()
        try:
            x, lens = self._check(x, lengths)
            x, lens = stack_frames(x, lens, self.config.stack)
            h, _ = self.rnn(x, lengths=lens)
            z = self.head(h)
        finally:
            self.train(was_training)
        return log_softmax(z.astype(np.float64)), lens
