"""A sequence tagger: word and character features, a stacked BiLSTM, one output head per tag set.

For the words w_1..w_n of a sentence (time-major and padded, like the rest of rnnlab):

    e_t   = E_word[w_t]                        the word's id (rare words are <unk>; in training
                                               each word becomes <unk> with probability
                                               ``word_dropout``, so <unk> is learned too)
    c_t   = [fwd_n; bwd_1] of a BiLSTM over E_char[characters of w_t]   its spelling: prefixes,
                                               suffixes, capitals, digits
    x_t   = dropout([e_t; c_t])
    h_t   = BiLSTM^L(x_1..x_n)_t               (dropout between layers)
    s^k_t = W_k dropout(h_t) + b_k             one head per tag set k (e.g. UPOS and XPOS)
    loss  = sum_k NLL_k / tokens               NLL_k: the summed cross-entropy of softmax(s^k_t)
                                               ("softmax"), or a linear-chain CRF's negative
                                               log-likelihood of each sentence's tags ("crf")

The character BiLSTM runs once per distinct spelling in a batch, not once per token, and its
final states are gathered for every token (their gradients scattered back). Backward mirrors the
forward line by line: heads, dropout, BiLSTM, the split of x_t, the gather, the character
BiLSTM's final states, both embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.crf import CRF
from rnnlab.nn.layers import Dropout, Embedding, Linear, LinearCrossEntropy
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import LSTM
from rnnlab.validate import check_positive_int

OUTPUTS = ("softmax", "crf")


@dataclass
class TaggerConfig:
    """Architecture of a :class:`Tagger` (saved with every checkpoint). ``heads`` maps each tag
    set's name to its number of tags, e.g. {"upos": 18, "xpos": 51}."""

    words: int
    chars: int
    heads: dict = field(default_factory=dict)
    word_dim: int = 100
    char_dim: int = 32
    char_hidden: int = 64
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.33
    word_dropout: float = 0.25
    output: str = "softmax"  # softmax | crf
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("words", "chars", "word_dim", "char_dim", "char_hidden", "hidden", "layers"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        if not self.heads or not all(isinstance(k, str) for k in self.heads):
            raise ValueError(f"heads: expected a dict of tag-set names to tag counts, got "
                             f"{self.heads!r}")
        self.heads = {k: check_positive_int(f"heads[{k!r}]", v) for k, v in self.heads.items()}
        for name in ("dropout", "word_dropout"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {p!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output: expected one of {OUTPUTS}, got {self.output!r}")
        resolve_dtype(self.dtype)

    @property
    def input_size(self) -> int:
        return self.word_dim + 2 * self.char_hidden

    def num_parameters(self) -> int:
        """Every weight, counted from the config alone."""
        n = self.words * self.word_dim + self.chars * self.char_dim
        n += LSTM.count_parameters(self.char_dim, self.char_hidden, bidirectional=True)
        n += LSTM.count_parameters(self.input_size, self.hidden, self.layers, bidirectional=True)
        for k in self.heads.values():
            n += 2 * self.hidden * k + k + (k * k + 2 * k if self.output == "crf" else 0)
        return n

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaggerBatch:
    """Sentences padded to T words, time-major. ``spellings`` holds the distinct word forms of
    the batch as character ids (L, U) with their lengths (U,); ``spelling`` (T, B) says which
    one each token is. ``tags`` maps each head to its gold ids (T, B) (empty when tagging)."""

    words: np.ndarray  # (T, B) int64 word ids
    lengths: np.ndarray  # (B,) words per sentence
    spelling: np.ndarray  # (T, B) int64 row of each token's spelling in ``spellings``
    spellings: np.ndarray  # (L, U) int64 character ids, 0-padded
    spelling_lengths: np.ndarray  # (U,)
    tags: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """(T, B) True at the real words."""
        return np.arange(self.words.shape[0])[:, None] < self.lengths[None, :]


class Tagger(Module):
    """See the module docstring. ``unk_id`` is the word id that word dropout substitutes."""

    def __init__(self, config: TaggerConfig, unk_id: int = 1, seed: Seed = None) -> None:
        super().__init__()
        c = self.config = config
        rng = self._rng = make_rng(seed)
        dt = self.dtype = resolve_dtype(config.dtype)
        require_parameters(f"Tagger(words={c.words}, hidden={c.hidden}, layers={c.layers})",
                           c.num_parameters(), dt)
        self.unk_id = unk_id
        self.word_embedding = self._add_child("word_embedding",
                                              Embedding(c.words, c.word_dim, dtype=dt, seed=rng))
        self.char_embedding = self._add_child("char_embedding",
                                              Embedding(c.chars, c.char_dim, dtype=dt, seed=rng))
        self.char_rnn = self._add_child("char_rnn", LSTM(c.char_dim, c.char_hidden,
                                                         bidirectional=True, dtype=dt, seed=rng))
        self.rnn = self._add_child("rnn", LSTM(c.input_size, c.hidden, num_layers=c.layers,
                                               dropout=c.dropout if c.layers > 1 else 0.0,
                                               bidirectional=True, dtype=dt, seed=rng))
        self.heads = {k: self._add_child(f"{k}_head", Linear(2 * c.hidden, n, dtype=dt, seed=rng))
                      for k, n in c.heads.items()}
        self.readouts = {k: LinearCrossEntropy(h) for k, h in self.heads.items()}
        self.crfs = ({k: self._add_child(f"{k}_crf", CRF(n, dtype=dt, seed=rng))
                      for k, n in c.heads.items()} if c.output == "crf" else {})
        self.drop_in = Dropout(c.dropout, seed=rng)
        self.drop_out = Dropout(c.dropout, seed=rng)
        self._cache = None

    def train(self, mode: bool = True) -> Tagger:
        super().train(mode)
        self.drop_in.train(mode)
        self.drop_out.train(mode)
        return self

    # ------------------------------------------------------------------ forward
    def _features(self, batch: TaggerBatch) -> np.ndarray:
        """The BiLSTM's outputs after dropout, (T, B, 2H)."""
        words = batch.words
        if self.training and self.config.word_dropout > 0:  # <unk> is learned, not only seen
            drop = self._rng.random(words.shape, dtype=np.float32) < self.config.word_dropout
            words = np.where(drop, self.unk_id, words)
        e = self.word_embedding(words)  # (T, B, Ew)
        _, (h_n, _) = self.char_rnn(self.char_embedding(batch.spellings),
                                    lengths=batch.spelling_lengths)  # h_n (2, U, Hc)
        spelled = np.concatenate([h_n[0], h_n[1]], axis=-1)  # (U, 2Hc): [fwd_n; bwd_1]
        c = spelled[batch.spelling]  # (T, B, 2Hc), gathered per token
        x = self.drop_in(np.concatenate([e, c], axis=-1))  # (T, B, Ew + 2Hc)
        h, _ = self.rnn(x, lengths=batch.lengths)  # (T, B, 2H), zero past each length
        self._cache = (batch, spelled.shape)
        return self.drop_out(h)

    def scores(self, batch: TaggerBatch) -> dict[str, np.ndarray]:
        """Tag scores (T, B, K) per head (the CRF's emissions, or the softmax's logits)."""
        h = self._features(batch)
        self._cache = None
        return {k: head(h) for k, head in self.heads.items()}

    def forward_loss(self, batch: TaggerBatch, scale: float | None = 1.0) -> tuple[float, int]:
        """The summed NLL over every head and the number of tokens; with a ``scale``,
        :meth:`backward_loss` then adds the gradients of ``scale`` * the summed NLL."""
        h = self._features(batch)
        mask = batch.mask
        total = 0.0
        for k in self.heads:
            if k not in batch.tags:
                raise ValueError(f"batch.tags: expected gold tags for the head {k!r}, got "
                                 f"{sorted(batch.tags)}")
            if self.crfs:
                emissions = self.heads[k](h)
                total += self.crfs[k](emissions, batch.tags[k], lengths=batch.lengths,
                                      reduction="sum")
            else:
                nll, _ = self.readouts[k](h, batch.tags[k], scale=scale, mask=mask)
                total += nll
        self._scale = scale
        return total, int(batch.lengths.sum())

    def backward_loss(self) -> None:
        """Add the gradients of the last :meth:`forward_loss` (times its scale) into ``grads``."""
        if self._cache is None:
            raise RuntimeError("Tagger.backward_loss: expected a forward_loss call first")
        batch, spelled_shape = self._cache
        self._cache = None
        dh = None
        for k in self.heads:
            if self.crfs:
                d = self.heads[k].backward(self.crfs[k].backward(scale=self._scale))
            else:
                d = self.readouts[k].backward()
            dh = d if dh is None else dh + d
        dx, _ = self.rnn.backward(self.drop_out.backward(dh))  # (T, B, Ew + 2Hc)
        dx = self.drop_in.backward(dx)
        Ew = self.config.word_dim
        self.word_embedding.backward(np.ascontiguousarray(dx[..., :Ew]))
        dspelled = np.zeros(spelled_shape, self.dtype)  # scatter-add of the gather
        np.add.at(dspelled, batch.spelling[batch.mask], dx[..., Ew:][batch.mask])
        Hc = self.config.char_hidden
        dh_n = np.stack([dspelled[:, :Hc], dspelled[:, Hc:]])  # (2, U, Hc)
        L, U = batch.spellings.shape
        dchars, _ = self.char_rnn.backward(np.zeros((L, U, 2 * Hc), self.dtype),
                                           (dh_n, np.zeros_like(dh_n)))
        self.char_embedding.backward(dchars)

    # ------------------------------------------------------------------ inference
    def predict(self, batch: TaggerBatch) -> dict[str, list[np.ndarray]]:
        """The best tag ids of every sentence, per head: argmax per token, or Viterbi with a
        CRF. Runs in eval mode (no dropout) and gives the model's mode back."""
        was_training = self.training
        self.eval()
        try:
            scores = self.scores(batch)
        finally:
            self.train(was_training)
        out = {}
        for k, s in scores.items():
            if self.crfs:
                out[k] = [np.asarray(p) for p in self.crfs[k].decode(s, lengths=batch.lengths)]
            else:
                best = s.argmax(axis=-1)  # (T, B)
                out[k] = [best[:n, b] for b, n in enumerate(batch.lengths)]
        return out
