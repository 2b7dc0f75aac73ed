"""Connectionist temporal classification (Graves et al. 2006): the loss with its hand-written
gradient, and the best-path and prefix-beam-search decoders.

Shapes: T frames, B sequences, C classes (one of them ``blank``), S labels. Time-major like the
rest: logits (T, B, C); sequence b has T_b = input_lengths[b] frames and S_b =
target_lengths[b] labels; frames past T_b are padding (no loss, no gradient). In the math
frames are 1..T; in the code 0..T-1.

A path pi (one class per frame) collapses to a labelling B(pi) by merging repeats, then dropping
blanks. With y_t = softmax(logits_t) (the loss normalises the logits itself)::

    p(l | x) = sum_{pi : B(pi) = l} prod_t y_t(pi_t)          loss_b = -log p(l_b | x_b)

The sum runs over the extended labelling l' = (blank, l_1, blank, l_2, ..., l_S, blank) of
length 2S + 1, in log space (every ``logaddexp`` is a stable log-sum-exp; the only Python loop
is over time, vectorised over the batch and over s)::

    alpha_1(s) = log y_1(l'_s)                                             for s in {1, 2}
    alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2) if skip(s))
                 + log y_t(l'_s)
    beta_T(s)  = log y_T(l'_s)                                             for s in {2S+1, 2S}
    beta_t(s)  = lse(beta_{t+1}(s), beta_{t+1}(s+1), beta_{t+1}(s+2) if skip(s+2))
                 + log y_t(l'_s)
    skip(s)    = l'_s != blank and l'_s != l'_{s-2}    (a repeat needs the blank between)
    log p      = lse(alpha_T(2S+1), alpha_T(2S))

Both alpha and beta include y_t (Graves' convention), so the occupancy of state s is
gamma_t(s) = exp(alpha_t(s) + beta_t(s) - log y_t(l'_s) - log p), and with the log-softmax
folded in the gradient is the clean::

    dloss/dlogits_t(k) = y_t(k) - sum_{s : l'_s = k} gamma_t(s)

A sequence with no valid alignment (T_b < S_b + the number of adjacent repeats) has p = 0: an
infinite loss and, as in torch, a NaN gradient; ``zero_infinity`` makes both 0 instead.

Decoders (scores are logits or log-probabilities, (T, B, C); lengths (B,) or None for all T):
``greedy_decode`` (best path: argmax per frame, merge repeats, drop blanks),
``best_path_alignment`` (the same labels with the frame at which each starts),
``prefix_beam_search`` / ``beam_decode`` (CTC prefix beam search, no language model) and
``sequence_log_prob`` (log p(l | x) of one sequence: -loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rnnlab.nn.layers import _no_cache
from rnnlab.validate import check_scale

REDUCTIONS = ("none", "sum", "mean")
NEG_INF = -math.inf


# -- the boundary
def _check_scores(name: str, x: object) -> np.ndarray:
    """A float32/float64 (T, B, C) array with T, B, C >= 1."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected a float32 or float64 numpy array, got {got}")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{name}: expected a 3-D array (T, B, C) with T, B, C >= 1, got shape "
                         f"{x.shape}")
    return x


def _check_blank(blank: object, C: int | None = None) -> int:
    if isinstance(blank, bool) or not isinstance(blank, int | np.integer) or blank < 0 or (
            C is not None and blank >= C):
        where = f"in [0, C={C})" if C is not None else ">= 0"
        raise ValueError(f"blank: expected an integer {where}, got {blank!r}")
    return int(blank)


def _int_vector(name: str, x: object, B: int, high: int | None, legend: str) -> np.ndarray:
    """``B`` integers in [0, high] (no upper bound when ``high`` is None)."""
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"{name}: expected shape (B,) = ({B},), got {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or (high is not None and arr.max() > high):
        raise ValueError(f"{name}: expected values in {legend}, got min {arr.min()} max "
                         f"{arr.max()}")
    return arr


def _lengths(lengths: object, B: int, T: int) -> np.ndarray:
    if lengths is None:
        return np.full(B, T, np.int64)
    return _int_vector("lengths", lengths, B, T, f"[0, T={T}]")


def _padded_targets(targets: object, target_lengths: object, B: int, C: int,
                    blank: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets padded (B, S) or concatenated (sum S_b,) -> (labels (B, S) with ``blank`` past
    each length, S_b (B,)); every label within the lengths in [0, C) and not blank."""
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        got = targets.dtype if isinstance(targets, np.ndarray) else type(targets).__name__
        raise TypeError(f"targets: expected an integer numpy array, got {got}")
    if targets.ndim == 2:
        if targets.shape[0] != B:
            raise ValueError(f"targets: expected padded shape (B={B}, S), got {targets.shape}")
        S = targets.shape[1]
        Sb = _int_vector("target_lengths", target_lengths, B, S, f"[0, S={S}]")
    elif targets.ndim == 1:
        Sb = _int_vector("target_lengths", target_lengths, B, None, "[0, inf)")
        if targets.shape[0] != Sb.sum():
            raise ValueError(f"targets: expected a concatenation of sum(target_lengths) = "
                             f"{Sb.sum()} labels, got shape {targets.shape}")
        S = int(Sb.max())
    else:
        raise ValueError(f"targets: expected a 2-D padded (B, S) or 1-D concatenated array, got "
                         f"shape {targets.shape}")
    within = np.arange(S) < Sb[:, None]  # (B, S)
    labels = np.full((B, S), blank, np.int64)
    labels[within] = targets[within] if targets.ndim == 2 else targets  # row-major = concat order
    if within.any():
        used = labels[within]
        if used.min() < 0 or used.max() >= C:
            raise ValueError(f"targets: expected ids in [0, C={C}) within target_lengths, got "
                             f"min {used.min()} max {used.max()}")
    if (within & (labels == blank)).any():
        b, i = (int(v) for v in np.argwhere(within & (labels == blank))[0])
        raise ValueError(f"targets: expected labels other than blank={blank} within "
                         f"target_lengths, got blank at sequence {b}, position {i}")
    return labels, Sb


# -- the math
def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log y = x - max - log(sum(exp(x - max))) over the last axis."""
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """out[:, s] = a[:, s - k], -inf where s - k is out of range (k may be negative)."""
    out = np.full_like(a, NEG_INF)
    if k > 0:
        out[:, k:] = a[:, :-k]
    else:
        out[:, :k] = a[:, -k:]
    return out


def _extend(labels: np.ndarray, blank: int) -> tuple[np.ndarray, np.ndarray]:
    """labels (B, S) -> l' (B, 2S+1) (blanks interleaved) and skip (B, 2S+1): whether state s
    may be entered from s-2 (a non-blank differing from the label before the blank)."""
    B, S = labels.shape
    ext = np.full((B, 2 * S + 1), blank, np.int64)
    ext[:, 1::2] = labels
    skip = np.zeros(ext.shape, bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, skip


def _alpha(logy: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Forward variables (T, B, 2S+1) from logy[t, b, s] = log y_t(l'_s); the frames past a
    sequence's length run on (on zeroed logits) and are never read."""
    alpha = np.full_like(logy, NEG_INF)
    alpha[0, :, :2] = logy[0, :, :2]  # a path starts in the first blank or the first label
    for t in range(1, logy.shape[0]):
        a = alpha[t - 1]
        # alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2) if skip(s))
        #              + log y_t(l'_s)
        alpha[t] = np.logaddexp(np.logaddexp(a, _shift(a, 1)),
                                np.where(skip, _shift(a, 2), NEG_INF)) + logy[t]
    return alpha


def _beta(logy: np.ndarray, skip: np.ndarray, Tb: np.ndarray, Sb: np.ndarray) -> np.ndarray:
    """Backward variables (T, B, 2S+1): started at each sequence's last frame T_b - 1, -inf
    past it. States past 2S_b start at -inf and only feed states further right, so they stay
    -inf and never leak into the real ones."""
    T, B, L = logy.shape
    s = np.arange(L)
    end = (s == 2 * Sb[:, None]) | (s == 2 * Sb[:, None] - 1)  # the final blank or last label
    skip_next = np.zeros_like(skip)
    skip_next[:, :-2] = skip[:, 2:]  # may state s go on to s+2
    beta = np.full_like(logy, NEG_INF)
    for t in range(T - 1, -1, -1):
        b1 = beta[t + 1] if t + 1 < T else np.full((B, L), NEG_INF, logy.dtype)
        # beta_t(s) = lse(beta_{t+1}(s), beta_{t+1}(s+1), beta_{t+1}(s+2) if skip(s+2))
        #             + log y_t(l'_s)
        step = np.logaddexp(np.logaddexp(b1, _shift(b1, -1)),
                            np.where(skip_next, _shift(b1, -2), NEG_INF)) + logy[t]
        start = np.where(end, logy[t], NEG_INF)  # beta_{T_b}(s) = log y(l'_s) at the end states
        beta[t] = np.where((t == Tb - 1)[:, None], start,
                           np.where((t < Tb - 1)[:, None], step, NEG_INF))
    return beta


def _log_likelihood(alpha: np.ndarray, Tb: np.ndarray, Sb: np.ndarray) -> np.ndarray:
    """log p(l_b | x_b) (B,) = lse(alpha_{T_b}(2S_b+1), alpha_{T_b}(2S_b)); with no frames it is
    log 1 for an empty target and log 0 otherwise."""
    b = np.arange(alpha.shape[1])
    last = alpha[np.maximum(Tb - 1, 0), b]  # (B, 2S+1)
    on_blank = last[b, 2 * Sb]
    on_label = np.where(Sb > 0, last[b, np.maximum(2 * Sb - 1, 0)], NEG_INF)
    log_p = np.logaddexp(on_blank, on_label)
    return np.where(Tb > 0, log_p, np.where(Sb == 0, 0.0, NEG_INF)).astype(alpha.dtype)


class CTCLoss:
    """CTC loss of unnormalised logits against label sequences (the equations and shapes are in
    the module docstring); the numbers, arguments and reductions are torch's
    ``F.ctc_loss(log_softmax(logits), ...)``.

    ``forward(logits (T, B, C), targets, input_lengths (B,), target_lengths (B,))``: targets
    padded (B, S) (entries past a length are ignored) or the 1-D concatenation of all targets.
    ``reduction``: "none" -> the (B,) losses in the logits' dtype; "sum" -> their sum; "mean"
    -> the mean over the batch of loss_b / max(S_b, 1) (torch's definition), both floats.
    ``backward(scale)`` -> scale * dloss/dlogits (T, B, C), 0 past each input length; for
    "none" ``scale`` may be (B,), the upstream gradient. One backward per forward.
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        self.blank = _check_blank(blank)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
        if not isinstance(zero_infinity, bool):
            raise TypeError(f"zero_infinity: expected a bool, got {type(zero_infinity).__name__}")
        self.reduction = reduction
        self.zero_infinity = zero_infinity
        self._cache = None

    def forward(self, logits: np.ndarray, targets: np.ndarray, input_lengths: np.ndarray,
                target_lengths: np.ndarray) -> float | np.ndarray:
        """The reduced loss (a float), or for "none" the (B,) losses; caches for backward."""
        x = _check_scores("logits", logits)
        T, B, C = x.shape
        blank = _check_blank(self.blank, C)
        Tb = _int_vector("input_lengths", input_lengths, B, T, f"[0, T={T}]")
        labels, Sb = _padded_targets(targets, target_lengths, B, C, blank)
        valid = np.arange(T)[:, None] < Tb  # (T, B)
        x = np.where(valid[:, :, None], x, x.dtype.type(0))  # junk there: no NaN warnings
        logy_all = _log_softmax(x)  # (T, B, C) log y_t(k)
        ext, skip = _extend(labels, blank)
        logy = np.take_along_axis(logy_all, np.broadcast_to(ext, (T, *ext.shape)), axis=2)
        alpha = _alpha(logy, skip)
        log_p = _log_likelihood(alpha, Tb, Sb)  # (B,), -inf where no alignment exists
        dropped = np.isinf(log_p) & self.zero_infinity
        nll = np.where(dropped, log_p.dtype.type(0), -log_p)
        self._cache = (logy_all, logy, alpha, ext, skip, log_p, Tb, Sb, valid, dropped)
        if self.reduction == "none":
            return nll
        if self.reduction == "sum":
            return float(nll.sum(dtype=np.float64))
        return float((nll / np.maximum(Sb, 1)).mean(dtype=np.float64))

    __call__ = forward

    def _weights(self, scale: object, Sb: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """dLoss/dloss_b (B,): the upstream scale over what the reduction divides by."""
        B = Sb.shape[0]
        s = check_scale(scale, B, self.reduction == "none")
        divisor = B * np.maximum(Sb, 1) if self.reduction == "mean" else np.ones(B)
        return np.broadcast_to(s / divisor, (B,)).astype(dtype)

    def backward(self, scale: float | np.ndarray = 1.0) -> np.ndarray:
        """scale * dLoss/dlogits (T, B, C) = w_b (y_t - occupancy_t), 0 past each length."""
        if self._cache is None:
            _no_cache(self)
        logy_all, logy, alpha, ext, skip, log_p, Tb, Sb, valid, dropped = self._cache
        w = self._weights(scale, Sb, logy.dtype)
        self._cache = None
        beta = _beta(logy, skip, Tb, Sb)
        with np.errstate(invalid="ignore"):  # -inf - (-inf) = NaN where p = 0, as in torch
            gamma = np.exp(alpha + beta - logy - log_p[:, None])  # (T, B, 2S+1) occupancies
        C = logy_all.shape[2]
        onehot = (ext[:, :, None] == np.arange(C)).astype(logy.dtype)  # (B, 2S+1, C): l'_s = k
        occupancy = np.matmul(gamma.transpose(1, 0, 2), onehot).transpose(1, 0, 2)  # (T, B, C)
        grad = np.exp(logy_all) - occupancy  # dloss_b/dlogits_t(k) = y_t(k) - sum gamma_t(s)
        keep = valid & ~dropped  # past T_b, or a dropped infinite loss: no gradient
        return np.where(keep[:, :, None], grad * w[:, None], logy.dtype.type(0))


# -- decoding
def _decoder_inputs(scores: object, lengths: object, blank: object):
    s = _check_scores("scores", scores)
    T, B, C = s.shape
    return s, _lengths(lengths, B, T), _check_blank(blank, C)


def best_path_alignment(scores: np.ndarray, lengths: np.ndarray | None = None,
                        blank: int = 0) -> list[tuple[list[int], list[int]]]:
    """Best path: pi_t = argmax_k scores_t(k) (ties to the lowest id), collapsed. Per sequence
    (labels, frames): frames[i] is the frame at which labels[i] starts (its first frame in the
    best path), e.g. to plot where each label was emitted."""
    s, L, blank = _decoder_inputs(scores, lengths, blank)
    path = s.argmax(axis=2)  # (T, B)
    prev = np.vstack([np.full((1, path.shape[1]), -1), path[:-1]])
    starts = (path != blank) & (path != prev)  # a new label: not blank, not a repeat
    out = []
    for b, n in enumerate(L):
        frames = np.flatnonzero(starts[:n, b])
        out.append((path[frames, b].tolist(), frames.tolist()))
    return out


def greedy_decode(scores: np.ndarray, lengths: np.ndarray | None = None,
                  blank: int = 0) -> list[list[int]]:
    """Best-path labels per sequence: argmax per frame, merge repeats, drop blanks."""
    return [labels for labels, _ in best_path_alignment(scores, lengths, blank)]


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats (the beam search is scalar code)."""
    if a < b:
        a, b = b, a
    return a if b == NEG_INF else a + math.log1p(math.exp(b - a))


def _prefix_beams(lp: list[list[float]], beam: int, blank: int) -> list[tuple[list[int], float]]:
    """Prefix beam search over one sequence's log y (T, C). Each prefix keeps two log
    probabilities: of the paths so far that collapse to it and end in blank (pb) or in its last
    label (pnb); both are needed because a repeated label extends the prefix only after a
    blank, and otherwise merges into it."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for row in lp:
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, blank_end, p, nxt=nxt):
            if p == NEG_INF:  # no path: a prefix of probability 0 would only take a slot
                return
            cell = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            cell[0 if blank_end else 1] = _lae(cell[0 if blank_end else 1], p)

        for prefix, (pb, pnb) in beams.items():
            total = _lae(pb, pnb)
            add(prefix, True, total + row[blank])  # a blank keeps the prefix
            for k, yk in enumerate(row):
                if k == blank:
                    continue
                if prefix and k == prefix[-1]:
                    add(prefix + (k,), False, pb + yk)  # a repeat counts after a blank only
                    add(prefix, False, pnb + yk)  # ... and merges into the last label otherwise
                else:
                    add(prefix + (k,), False, total + yk)
        ranked = sorted(nxt.items(), key=lambda kv: (-_lae(*kv[1]), kv[0]))
        beams = {p: (pb, pnb) for p, (pb, pnb) in ranked[:beam]}
    ranked = sorted(((list(p), _lae(pb, pnb)) for p, (pb, pnb) in beams.items()),
                    key=lambda r: (-r[1], r[0]))
    return ranked


def prefix_beam_search(log_probs: np.ndarray, lengths: np.ndarray | None = None, beam: int = 8,
                       blank: int = 0) -> list[list[tuple[list[int], float]]]:
    """CTC prefix beam search without a language model. ``log_probs`` (T, B, C): log
    probabilities or logits (normalised here: log-softmax leaves log-probabilities as they are).
    Per sequence the final beam, best first: (labels, log p(labels | x) summed over the paths the
    beam kept). With a beam as wide as the number of prefixes nothing is pruned and each log p
    is exact."""
    s, L, blank = _decoder_inputs(log_probs, lengths, blank)
    if isinstance(beam, bool) or not isinstance(beam, int | np.integer) or beam < 1:
        raise ValueError(f"beam: expected a positive integer, got {beam!r}")
    lp = _log_softmax(s.astype(np.float64))
    return [_prefix_beams(lp[:n, b].tolist(), int(beam), blank) for b, n in enumerate(L)]


def beam_decode(log_probs: np.ndarray, lengths: np.ndarray | None = None, beam: int = 8,
                blank: int = 0) -> list[tuple[list[int], float]]:
    """The best (labels, log probability) per sequence of :func:`prefix_beam_search`."""
    return [ranked[0] for ranked in prefix_beam_search(log_probs, lengths, beam, blank)]


def sequence_log_prob(log_probs: np.ndarray, labels: Sequence[int], blank: int = 0) -> float:
    """log p(labels | x) of one sequence, log_probs (T, C) (log probabilities or logits): the
    negative CTC loss, e.g. as a decoder's confidence."""
    if not isinstance(log_probs, np.ndarray) or log_probs.ndim != 2:
        raise ValueError(f"log_probs: expected a 2-D array (T, C), got shape "
                         f"{np.shape(log_probs)}")
    target = np.asarray(labels).reshape(1, -1)
    if target.size == 0:
        target = target.astype(np.int64)  # an empty list is float64 to numpy
    nll = CTCLoss(blank, "none")(log_probs[:, None], target, [log_probs.shape[0]],
                                 [target.shape[1]])
    return -float(nll[0])
