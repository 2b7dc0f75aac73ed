"""Encoder-decoder (seq2seq) with optional attention and 'peeky' decoder, hand-written backward.

Shapes: Ts source steps, Tt target steps, B batch, E embedding, H encoder hidden, K directions
(2 if bidirectional), Hd = K H decoder hidden, V_s / V_t vocabularies. Time-major throughout.

    e_s      = E_src[src]                                  (Ts, B, E)
    m, s_n   = Encoder(e_s, lengths=src_lengths)           m: (Ts, B, Hd) memory; final states
    s_0      = bridge(s_n)                                 per layer [fwd; bwd] -> (L, B, Hd)
    p        = h of s_0's top layer                        (B, Hd) the encoder summary ('peeky')
    x_t      = [E_tgt[y_{t-1}], p]  (p only if peeky)      (Tt, B, E [+ Hd]) teacher forcing
    h_t      = Decoder(x_t, s_0)                           (Tt, B, Hd)
    c_t, a_t = Attention(h_t, m, src_lengths)              (Tt, B, Hd), weights (Tt, B, Ts)
    z_t      = [h_t, c_t, p]  (c_t with attention, p if peeky)
    logits_t = z_t W^T + b                                 (Tt, B, V_t)
    loss     = cross-entropy of logits_t against y_t, summed over the real (unpadded) targets

The decoder input starts with <bos> and its targets end with <eos>; the encoder's final state
reaches the decoder through s_0 (and through p with peeky), so the backward pass carries the
gradient from the decoder into the encoder by hand: dL/ds_n = bridge^-1(dL/ds_0) (+ dL/dp).
Attention here is Luong-style (global attention computed from the decoder's output h_t, after the
recurrent step), so the decoder runs as one fast layer call over all Tt steps in training; the
three score functions (dot, general, additive) plug into the same place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.nn.attention import SCORES, Attention, Keys
from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.layers import Embedding, Linear, LinearCrossEntropy
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.nn.ops import log_softmax
from rnnlab.nn.recurrent import GRU, LSTM
from rnnlab.validate import check_positive_int

CELLS = {"lstm": LSTM, "gru": GRU}
ATTENTION = ("none", *SCORES)


@dataclass
class Seq2SeqConfig:
    """Architecture of a :class:`Seq2Seq` model (saved with every checkpoint)."""

    src_vocab: int
    tgt_vocab: int
    cell: str = "lstm"  # lstm | gru
    embed_size: int = 16
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False  # encoder only; the decoder then has 2 * hidden_size units
    attention: str = "none"  # none | dot | general | additive
    peeky: bool = False  # feed the encoder summary to every decoder step and to the readout
    reverse_source: bool = False  # the source is read backwards (applied when encoding text)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {self.cell!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention: expected one of {ATTENTION}, got {self.attention!r}")
        for name in ("src_vocab", "tgt_vocab", "embed_size", "hidden_size", "num_layers"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        resolve_dtype(self.dtype)

    @property
    def decoder_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def num_parameters(self) -> int:
        """Parameter values of the model, from the config alone: both embeddings, encoder,
        decoder, the attention's weights (general Hd*Hd; additive 2 Hd*Hd + Hd, A = Hd) and the
        readout (F + 1) V_t, F = Hd (1 + attention + peeky)."""
        E, Hd, L, cell = self.embed_size, self.decoder_size, self.num_layers, CELLS[self.cell]
        encoder = cell.count_parameters(E, self.hidden_size, L, bidirectional=self.bidirectional)
        decoder = cell.count_parameters(E + Hd * self.peeky, Hd, L)
        attention = {"none": 0, "dot": 0, "general": Hd * Hd, "additive": 2 * Hd * Hd + Hd}
        features = Hd * (1 + (self.attention != "none") + self.peeky)
        return ((self.src_vocab + self.tgt_vocab) * E + encoder + decoder
                + attention[self.attention] + (features + 1) * self.tgt_vocab)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Memory:
    """What the encoder hands the decoder: outputs, the decoder's initial state, the summary."""

    outputs: np.ndarray  # (Ts, B, Hd)
    lengths: np.ndarray  # (B,)
    state: object  # decoder state: (h, c) each (L, B, Hd) for LSTM, h for GRU
    summary: np.ndarray  # (B, Hd): top-layer h of ``state``
    keys: Keys | None = None  # the outputs prepared for attention once, when decoding

    def rows(self, idx) -> Memory:
        """The memory of the batch columns ``idx`` (without the decoder state)."""
        return Memory(self.outputs[:, idx], self.lengths[idx], None, self.summary[idx],
                      None if self.keys is None else self.keys.rows(idx))


class Seq2Seq(Module):
    """Encoder-decoder; see the module docstring for the equations."""

    def __init__(self, config: Seq2SeqConfig, seed: Seed = None) -> None:
        super().__init__()
        self.config = c = config
        rng = make_rng(seed)
        dt = resolve_dtype(c.dtype)
        Hd, E = c.decoder_size, c.embed_size
        require_parameters(f"Seq2Seq({c.cell}, src_vocab={c.src_vocab}, tgt_vocab={c.tgt_vocab}, "
                           f"embed_size={E}, hidden_size={c.hidden_size}, num_layers="
                           f"{c.num_layers})", c.num_parameters(), dt)  # before any layer
        cell = CELLS[c.cell]
        self.src_embedding = self._add_child("src_embedding", Embedding(c.src_vocab, E, dt, rng))
        self.encoder = self._add_child("encoder", cell(
            E, c.hidden_size, c.num_layers, bidirectional=c.bidirectional, dtype=dt, seed=rng))
        self.tgt_embedding = self._add_child("tgt_embedding", Embedding(c.tgt_vocab, E, dt, rng))
        self.decoder = self._add_child("decoder", cell(
            E + (Hd if c.peeky else 0), Hd, c.num_layers, dtype=dt, seed=rng))
        self.attention = None
        if c.attention != "none":
            self.attention = self._add_child("attention", Attention(
                Hd, Hd, score=c.attention, dtype=dt, seed=rng))
        features = Hd * (1 + (c.attention != "none") + c.peeky)
        self.readout = self._add_child("readout", Linear(features, c.tgt_vocab, dtype=dt,
                                                         seed=rng))
        self.loss_layer = LinearCrossEntropy(self.readout)
        self._cache = None

    # ------------------------------------------------------------------ encoder -> decoder state
    def _bridge(self, state):
        """Encoder final states (L*K, B, H) -> decoder initial states (L, B, K*H)."""
        L, K, H = self.config.num_layers, 1 + self.config.bidirectional, self.config.hidden_size

        def one(s):
            B = s.shape[1]
            return np.ascontiguousarray(s.reshape(L, K, B, H).transpose(0, 2, 1, 3)).reshape(
                L, B, K * H)
        return tuple(one(s) for s in state) if isinstance(state, tuple) else one(state)

    def _unbridge(self, dstate):
        """The gradient of :meth:`_bridge`: (L, B, K*H) -> (L*K, B, H)."""
        L, K, H = self.config.num_layers, 1 + self.config.bidirectional, self.config.hidden_size

        def one(d):
            B = d.shape[1]
            return np.ascontiguousarray(d.reshape(L, B, K, H).transpose(0, 2, 1, 3)).reshape(
                L * K, B, H)
        return tuple(one(d) for d in dstate) if isinstance(dstate, tuple) else one(dstate)

    @staticmethod
    def _top_h(state) -> np.ndarray:
        return (state[0] if isinstance(state, tuple) else state)[-1]

    def encode(self, src: np.ndarray, src_lengths: np.ndarray, decoding: bool = False) -> Memory:
        """src (Ts, B) ids, src_lengths (B,) -> :class:`Memory` (the encoder keeps its cache).
        ``decoding``: step by step with fixed weights, so the attention's keys are prepared
        once here instead of at every :meth:`decode_step`."""
        outputs, final = self.encoder(self.src_embedding(src), lengths=src_lengths)
        state = self._bridge(final)
        keys = self.attention.prepare(outputs) if decoding and self.attention is not None else None
        return Memory(outputs, np.asarray(src_lengths), state, self._top_h(state), keys)

    # ------------------------------------------------------------------ decoder
    def _decoder_features(self, tgt_in: np.ndarray, memory: Memory, state,
                          tgt_lengths: np.ndarray | None):
        """Decoder inputs -> readout features z (T, B, F), the new state and attention weights."""
        c = self.config
        x = self.tgt_embedding(tgt_in)  # (T, B, E)
        T, B = tgt_in.shape
        if c.peeky:
            x = np.concatenate([x, np.broadcast_to(memory.summary, (T, B, c.decoder_size))], -1)
        h, state = self.decoder(x, state, lengths=tgt_lengths)  # (T, B, Hd)
        parts, weights = [h], None
        if self.attention is not None:
            keys = memory.outputs if memory.keys is None else memory.keys
            context, weights = self.attention(h, keys, lengths=memory.lengths)
            parts.append(context)
        if c.peeky:
            parts.append(np.broadcast_to(memory.summary, (T, B, c.decoder_size)))
        z = np.concatenate(parts, axis=-1) if len(parts) > 1 else h
        return z, state, weights

    def _teacher_forced(self, src, src_lengths, tgt_in, tgt_lengths):
        """Encode, then run the decoder on the given inputs: readout features z (Tt, B, F) and
        attention weights; the encoder's memory is kept for backward."""
        for name, ids in (("src", src), ("tgt_in", tgt_in)):
            if not isinstance(ids, np.ndarray) or ids.ndim != 2:
                raise ValueError(f"{name}: expected an integer array (T, B), got "
                                 f"{getattr(ids, 'shape', type(ids).__name__)}")
        if src.shape[1] != tgt_in.shape[1]:
            raise ValueError(f"tgt_in: expected batch {src.shape[1]} (as src), got "
                             f"{tgt_in.shape[1]}")
        memory = self.encode(src, src_lengths)
        z, _, weights = self._decoder_features(tgt_in, memory, memory.state, tgt_lengths)
        self._cache = memory
        return z, weights

    def forward(self, src, src_lengths, tgt_in, tgt_lengths=None):
        """Teacher-forced logits (Tt, B, V_t) and attention weights (Tt, B, Ts) or None."""
        z, weights = self._teacher_forced(src, src_lengths, tgt_in, tgt_lengths)
        return self.readout(z), weights

    __call__ = forward

    def forward_loss(self, src, src_lengths, tgt_in, tgt_out, tgt_lengths,
                     scale: float | None = 1.0):
        """Summed cross-entropy of the real targets (positions t < tgt_lengths[b]) and their
        count; with a ``scale``, :meth:`backward_loss` then adds the gradients of scale * loss."""
        if tgt_lengths is None:
            raise ValueError("tgt_lengths: expected the target lengths (B,) (the loss counts "
                             "positions t < tgt_lengths[b]), got None")
        z, _ = self._teacher_forced(src, src_lengths, tgt_in, tgt_lengths)
        mask = np.arange(tgt_in.shape[0])[:, None] < np.asarray(tgt_lengths)[None, :]  # (Tt, B)
        return self.loss_layer(z, tgt_out, scale=scale, mask=mask)

    def backward(self, dlogits: np.ndarray) -> None:
        """Accumulate every parameter's gradient from dL/dlogits (after :meth:`forward`)."""
        self._backward_features(self.readout.backward(dlogits))

    def backward_loss(self) -> None:
        """Accumulate every parameter's gradient of the last :meth:`forward_loss`."""
        self._backward_features(self.loss_layer.backward())

    def _backward_features(self, dz: np.ndarray) -> None:
        if self._cache is None:
            raise RuntimeError("Seq2Seq.backward: expected a forward call before backward, "
                               "got none")
        memory, self._cache = self._cache, None
        c, Hd = self.config, self.config.decoder_size
        dh = np.ascontiguousarray(dz[..., :Hd])
        k = Hd
        dmemory = np.zeros_like(memory.outputs)
        if self.attention is not None:
            dquery, dkeys, _ = self.attention.backward(dz[..., k:k + Hd])
            dh += dquery
            dmemory += dkeys  # keys are values: dkeys carries both
            k += Hd
        dsummary = dz[..., k:k + Hd].sum(axis=0) if c.peeky else None
        dx, dstate = self.decoder.backward(dh)
        E = c.embed_size
        if c.peeky:
            dsummary += dx[..., E:].sum(axis=0)
        self.tgt_embedding.backward(np.ascontiguousarray(dx[..., :E]))
        if dsummary is not None:  # p is the top layer's initial h: its gradient joins there
            (dstate[0] if isinstance(dstate, tuple) else dstate)[-1] += dsummary
        de, _ = self.encoder.backward(dmemory, self._unbridge(dstate))
        self.src_embedding.backward(de)

    # ------------------------------------------------------------------ inference, one step
    def decode_step(self, y_prev: np.ndarray, state, memory: Memory):
        """One decoder step for inference: y_prev (B,) ids -> (log-probabilities (B, V_t), the
        new state, attention weights (B, Ts) or None)."""
        z, state, weights = self._decoder_features(y_prev[None, :], memory, state, None)
        logp = log_softmax(self.readout(z)[0])
        return logp, state, (None if weights is None else weights[0])
