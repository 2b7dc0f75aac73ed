"""Recurrent language model: Embedding -> dropout -> RNN/LSTM/GRU stack -> dropout -> Linear.

    e_t = E[w_t]                      (T, B, E)   embedding
    h_t = RNN(dropout(e_t), h_{t-1})  (T, B, H)   stacked cells, dropout between layers
    logits_t = dropout(h_t) W^T + b   (T, B, V)   W = E when the weights are tied
    p(w_{t+1} | w_<=t) = softmax(logits_t)

``forward``/``backward`` work on logits (generation, any loss). Training and evaluation use
``forward_loss``/``backward_loss``: the same model with the decoder and the softmax cross-entropy
fused (:class:`rnnlab.nn.layers.LinearCrossEntropy`), which never hands out the (T, B, V) logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.nn.backend import Seed, array_module, make_rng, resolve_dtype, to_device
from rnnlab.nn.layers import Dropout, Embedding, Linear, LinearCrossEntropy
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import GRU, LSTM, RNN

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclass
class LMConfig:
    """Architecture of a :class:`LanguageModel` (saved with every checkpoint)."""

    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn
    embed_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout: float = 0.0  # on the embedding output, between layers and before the decoder
    tie_weights: bool = False  # decoder.weight is embedding.weight (needs embed == hidden)
    init_range: float | None = 0.1  # U(-r, r) for every weight (Zaremba et al.); None = torch's
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {self.cell!r}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(
                f"tie_weights: expected embed_size == hidden_size, got {self.embed_size} "
                f"and {self.hidden_size}"
            )
        resolve_dtype(self.dtype)

    def num_parameters(self) -> int:
        """Parameter values of the model, from the config alone: embedding V*E, the recurrent
        stack, the decoder H*V + V (its weight counted once, as the embedding's, when tied)."""
        V, E, H = self.vocab_size, self.embed_size, self.hidden_size
        rnn = CELLS[self.cell].count_parameters(E, H, self.num_layers)
        return V * E + rnn + (0 if self.tie_weights else H * V) + V

    def to_dict(self) -> dict:
        return asdict(self)


class LanguageModel(Module):
    """Word- or character-level recurrent language model; see the module docstring."""

    def __init__(self, config: LMConfig, seed: Seed = None, device: str = "cpu") -> None:
        super().__init__()
        self.config = config
        rng = make_rng(seed)
        dt = resolve_dtype(config.dtype)
        V, E, H = config.vocab_size, config.embed_size, config.hidden_size
        require_parameters(f"LanguageModel({config.cell}, vocab_size={V}, embed_size={E}, "
                           f"hidden_size={H}, num_layers={config.num_layers})",
                           config.num_parameters(), dt)  # the whole model, before any layer
        self.embedding = self._add_child("embedding", Embedding(V, E, dtype=dt, seed=rng))
        self.rnn = self._add_child("rnn", CELLS[config.cell](
            E, H, num_layers=config.num_layers, dropout=config.dropout if config.num_layers > 1
            else 0.0, dtype=dt, seed=rng))
        self.decoder = self._add_child("decoder", Linear(H, V, dtype=dt, seed=rng))
        if config.tie_weights:
            self.decoder._remove_param("weight")
        self.readout = LinearCrossEntropy(self.decoder)
        self.drop_in = Dropout(config.dropout, seed=rng)
        self.drop_out = Dropout(config.dropout, seed=rng)
        self.dtype = dt
        self._rng = rng
        if config.init_range is not None:
            for p in self.parameters().values():
                p[...] = rng.uniform(-config.init_range, config.init_range, p.shape)
        if device != "cpu":  # drawn on the host: a seed gives the same model on every device
            self.to(device)

    def train(self, mode: bool = True) -> LanguageModel:
        super().train(mode)
        self.drop_in.train(mode)
        self.drop_out.train(mode)
        return self

    def _decoder_weight(self):
        return self.embedding._params["weight"] if self.config.tie_weights else None

    def initial_state(self, batch_size: int):
        """Zero state for ``batch_size`` streams, in the RNN's format."""
        shape = (self.rnn.num_layers, batch_size, self.config.hidden_size)
        xp = array_module(self.device)
        h = xp.zeros(shape, self.dtype)
        return (h, xp.zeros(shape, self.dtype)) if self.rnn.has_cell_state else h

    def _hidden(self, ids: np.ndarray, state):
        """ids -> the recurrent stack's outputs after the output dropout, and the final state."""
        if self.device != "cpu" and state is not None:  # e.g. a carried state from a checkpoint
            state = (tuple(to_device(s, self.device) for s in state) if isinstance(state, tuple)
                     else to_device(state, self.device))
        h, state = self.rnn(self.drop_in(self.embedding(ids)), state)
        return self.drop_out(h), state

    def _backward_hidden(self, dh: np.ndarray) -> None:
        de, _ = self.rnn.backward(self.drop_out.backward(dh))
        self.embedding.backward(self.drop_in.backward(de))

    def _decoder_dweight(self):
        """Where the decoder's weight gradient goes: the embedding's when tied."""
        return self.embedding._grad("weight") if self.config.tie_weights else None

    def forward(self, ids: np.ndarray, state=None):
        """ids (T, B) int -> logits (T, B, V) and the final state (carried to the next window)."""
        h, state = self._hidden(ids, state)
        return self.decoder(h, weight=self._decoder_weight()), state

    __call__ = forward

    def backward(self, dlogits: np.ndarray) -> None:
        """Accumulate every parameter's gradient from dL/dlogits (T, B, V)."""
        self._backward_hidden(self.decoder.backward(dlogits, weight=self._decoder_weight(),
                                                    dweight=self._decoder_dweight()))

    def forward_loss(self, ids: np.ndarray, targets: np.ndarray, state=None,
                     scale: float | None = 1.0, mask: np.ndarray | None = None):
        """ids, targets (T, B) -> (summed NLL over the counted targets, their count, final state).

        With a ``scale``, :meth:`backward_loss` then accumulates the gradients of
        ``scale * summed NLL``; ``scale=None`` evaluates only. ``mask`` (T, B) bool: targets
        that count.
        """
        h, state = self._hidden(ids, state)
        total, count = self.readout(h, targets, scale=scale, mask=mask,
                                    weight=self._decoder_weight())
        return total, count, state

    def backward_loss(self) -> None:
        """Accumulate every parameter's gradient of the loss of the last :meth:`forward_loss`."""
        self._backward_hidden(self.readout.backward(weight=self._decoder_weight(),
                                                    dweight=self._decoder_dweight()))
