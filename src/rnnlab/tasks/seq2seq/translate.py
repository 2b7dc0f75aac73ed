"""Decoding a trained :class:`~rnnlab.models.seq2seq.Seq2Seq`: greedy and beam search.

Both start the decoder at ``<bos>`` from the encoder's state and stop a hypothesis at ``<eos>``
or after ``max_length`` tokens. Beam search keeps the ``beam`` best partial hypotheses by summed
log-probability. With ``beam=1`` it is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.nn import no_grad


@dataclass
class Decoded:
    """One decoded sequence: token ids (without <bos>/<eos>), its log-probability, and the
    attention weights of each emitted step (steps, Ts) when the model attends."""

    ids: list[int]
    logprob: float
    attention: np.ndarray | None = field(default=None, repr=False)


def _rows(state, idx):
    return tuple(s[:, idx] for s in state) if isinstance(state, tuple) else state[:, idx]


@no_grad()
def greedy_decode(model: Seq2Seq, src: np.ndarray, src_lengths: np.ndarray, bos: int, eos: int,
                  max_length: int) -> list[Decoded]:
    """src (Ts, B) -> B decoded sequences, taking the most likely token at every step."""
    was_training = model.training
    model.eval()
    memory = model.encode(src, src_lengths, decoding=True)
    B = src.shape[1]
    y = np.full(B, bos, np.int64)
    state = memory.state
    logprob = np.zeros(B)
    steps = np.zeros(B, np.int64)  # decoder steps each sequence took (its <eos> included)
    tokens, weights = [], []
    done = np.zeros(B, bool)
    for _ in range(max_length):
        logp, state, w = model.decode_step(y, state, memory)
        y = logp.argmax(axis=1)
        live = ~done
        logprob[live] += logp[live, y[live]]
        steps[live] += 1
        tokens.append(y)
        if w is not None:
            weights.append(w)
        done |= y == eos
        if done.all():
            break
    model.train(was_training)
    ids = np.stack(tokens, axis=1)  # (B, steps): each row read up to its own <eos>
    att = np.stack(weights, axis=1) if weights else None  # (B, steps, Ts)
    return [Decoded(ids[b, :steps[b] - done[b]].tolist(), float(logprob[b]),
                    None if att is None else att[b, :steps[b]]) for b in range(B)]


@no_grad()
def beam_search(model: Seq2Seq, src: np.ndarray, bos: int, eos: int, max_length: int,
                beam: int = 5) -> Decoded:
    """One source sequence src (Ts,) -> the best hypothesis of a beam of width ``beam``."""
    if beam < 1:
        raise ValueError(f"beam: expected a positive integer, got {beam}")
    was_training = model.training
    model.eval()
    memory = model.encode(src[:, None], np.array([len(src)]), decoding=True)
    repeated = memory.rows(np.zeros(beam, np.int64))  # once per hypothesis, built once
    hyps: list[tuple[list[int], float, list]] = [([], 0.0, [])]  # ids, summed log p, attention
    state = memory.state
    finished: list[tuple[list[int], float, list]] = []
    for _ in range(max_length):
        mem = repeated.rows(slice(0, len(hyps)))
        y = np.array([h[0][-1] if h[0] else bos for h in hyps], np.int64)
        logp, new_state, w = model.decode_step(y, state, mem)
        total = np.array([h[1] for h in hyps])[:, None] + logp  # (k, V)
        flat = np.argsort(-total, axis=None, kind="stable")[: 2 * beam]
        keep_rows, next_hyps = [], []
        for f in flat:
            r, tok = divmod(int(f), total.shape[1])
            att = hyps[r][2] + ([w[r]] if w is not None else [])
            if tok == eos:
                finished.append((hyps[r][0], float(total[r, tok]), att))
            else:
                next_hyps.append((hyps[r][0] + [tok], float(total[r, tok]), att))
                keep_rows.append(r)
            if len(next_hyps) == beam:
                break
        best_done = max((f[1] for f in finished), default=-np.inf)
        # stop when no live hypothesis can beat the best finished one (log p only decreases)
        if not next_hyps or len(finished) >= beam or best_done >= next_hyps[0][1]:
            break
        hyps = next_hyps
        state = _rows(new_state, np.array(keep_rows))
    if not finished:  # nothing ended within max_length: the best live hypothesis
        finished = hyps
    model.train(was_training)
    ids, logprob, att = max(finished, key=lambda f: f[1])
    return Decoded(list(ids), logprob, np.stack(att) if att else None)
