"""Decoding a trained :class:`~rnnlab.models.seq2seq.Seq2Seq`: greedy and beam search.

Both start the decoder at ``<bos>`` from the encoder's state and stop a hypothesis at ``<eos>``
or after ``max_length`` tokens. Beam search keeps the ``beam`` best partial hypotheses by summed
log-probability; a finished one competes with score ``sum log p / length ** length_penalty``
(0: plain sum, 1: mean per token). With ``beam=1`` it is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnlab.models.seq2seq import Memory, Seq2Seq


@dataclass
class Decoded:
    """One decoded sequence: token ids (without <bos>/<eos>), its log-probability, and the
    attention weights of each emitted step (steps, Ts) when the model attends."""

    ids: list[int]
    logprob: float
    attention: np.ndarray | None = field(default=None, repr=False)


def _rows(state, idx):
    return tuple(s[:, idx] for s in state) if isinstance(state, tuple) else state[:, idx]


def _repeat(memory: Memory, k: int) -> Memory:
    """The memory of one source sequence, once per hypothesis of the beam (built once; a beam
    of fewer hypotheses uses the first rows)."""
    idx = np.zeros(k, np.int64)
    return Memory(memory.outputs[:, idx], memory.lengths[idx], None, memory.summary[idx])


def _first(memory: Memory, k: int) -> Memory:
    return Memory(memory.outputs[:, :k], memory.lengths[:k], None, memory.summary[:k])


def greedy_decode(model: Seq2Seq, src: np.ndarray, src_lengths: np.ndarray, bos: int, eos: int,
                  max_length: int) -> list[Decoded]:
    """src (Ts, B) -> B decoded sequences, taking the most likely token at every step."""
    was_training = model.training
    model.eval()
    memory = model.encode(src, src_lengths)
    B = src.shape[1]
    y = np.full(B, bos, np.int64)
    state = memory.state
    out: list[list[int]] = [[] for _ in range(B)]
    logprob = np.zeros(B)
    steps = np.zeros(B, np.int64)  # decoder steps each sequence took (its <eos> included)
    weights = []
    done = np.zeros(B, bool)
    for _ in range(max_length):
        logp, state, w = model.decode_step(y, state, memory)
        y = logp.argmax(axis=1)
        live = ~done
        logprob[live] += logp[live, y[live]]
        steps[live] += 1
        if w is not None:
            weights.append(w)
        for b in np.flatnonzero(live):
            if y[b] == eos:
                done[b] = True
            else:
                out[b].append(int(y[b]))
        if done.all():
            break
    model.train(was_training)
    att = np.stack(weights, axis=1) if weights else None  # (B, steps, Ts)
    return [Decoded(out[b], float(logprob[b]), None if att is None else att[b, :steps[b]])
            for b in range(B)]


def beam_search(model: Seq2Seq, src: np.ndarray, bos: int, eos: int, max_length: int,
                beam: int = 5, length_penalty: float = 0.0) -> Decoded:
    """One source sequence src (Ts,) -> the best hypothesis of a beam of width ``beam``."""
    if beam < 1:
        raise ValueError(f"beam: expected a positive integer, got {beam}")
    was_training = model.training
    model.eval()
    memory = model.encode(src[:, None], np.array([len(src)]))
    repeated = _repeat(memory, beam)
    hyps: list[tuple[list[int], float, list]] = [([], 0.0, [])]  # ids, summed log p, attention
    state = memory.state
    finished: list[tuple[float, list[int], float, list]] = []
    for _ in range(max_length):
        mem = _first(repeated, len(hyps))
        y = np.array([h[0][-1] if h[0] else bos for h in hyps], np.int64)
        logp, new_state, w = model.decode_step(y, state, mem)
        total = np.array([h[1] for h in hyps])[:, None] + logp  # (k, V)
        flat = np.argsort(-total, axis=None, kind="stable")[: 2 * beam]
        keep_rows, next_hyps = [], []
        for f in flat:
            r, tok = divmod(int(f), total.shape[1])
            att = hyps[r][2] + ([w[r]] if w is not None else [])
            if tok == eos:
                n = len(hyps[r][0]) + 1
                score = total[r, tok] / (n ** length_penalty)
                finished.append((score, hyps[r][0], float(total[r, tok]), att))
            else:
                next_hyps.append((hyps[r][0] + [tok], float(total[r, tok]), att))
                keep_rows.append(r)
            if len(next_hyps) == beam:
                break
        best_done = max((f[0] for f in finished), default=-np.inf)
        # stop when no live hypothesis can beat the best finished one (log p only decreases)
        if (not next_hyps or len(finished) >= beam
                or (length_penalty == 0.0 and best_done >= next_hyps[0][1])):
            break
        hyps = next_hyps
        state = _rows(new_state, np.array(keep_rows))
    if not finished:  # nothing ended within max_length: the best live hypothesis
        finished = [(h[1] / max(len(h[0]), 1) ** length_penalty, h[0], h[1], h[2])
                    for h in hyps]
    model.train(was_training)
    score, ids, logprob, att = max(finished, key=lambda f: f[0])
    return Decoded(list(ids), logprob, np.stack(att) if att else None)
