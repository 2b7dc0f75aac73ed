"""Linear-chain conditional random field: its loss and hand-written gradient, Viterbi, marginals.

The layer on top of a BiLSTM tagger. Time-major like the rest: emissions e (T, B, K) from the
recurrent layers, gold tags y (T, B); sequence b has lengths[b] = L steps and the steps past L
are padding, ignored (no score, no gradient). In the math steps are 1..L; in the code 0..L-1.

    score(y) = start[y_1] + sum_{t=1..L} e[t, y_t] + sum_{t=2..L} trans[y_{t-1}, y_t] + end[y_L]
    log Z    = log sum_{y'} exp score(y')                          (all K^L tag sequences)
    NLL      = log Z - score(gold)

Forward algorithm (log space: each log-sum-exp ``lse`` is shifted by its max; vectorised over
the batch and the tags, the only Python loop is over time)::

    alpha_1[k] = start[k] + e[1, k]
    alpha_t[k] = lse_i(alpha_{t-1}[i] + trans[i, k]) + e[t, k]
    log Z      = lse_k(alpha_L[k] + end[k])

Backward algorithm, marginals and the gradient (the NLL is log Z minus a linear function of the
scores, and the gradient of log Z with respect to a score is its expected count)::

    beta_L[k]      = end[k]
    beta_t[k]      = lse_j(trans[k, j] + e[t+1, j] + beta_{t+1}[j])
    p_t[k]         = exp(alpha_t[k] + beta_t[k] - log Z)                           p(y_t = k)
    xi_t[i, j]     = exp(alpha_{t-1}[i] + trans[i, j] + e[t, j] + beta_t[j] - log Z)
                                                                     p(y_{t-1} = i, y_t = j)
    dNLL/de[t, k]  = p_t[k] - [y_t = k]
    dNLL/dstart    = p_1 - onehot(y_1)        (= dNLL/de[1]: start adds to e[1])
    dNLL/dend      = p_L - onehot(y_L)        (= dNLL/de[L]: end adds to e[L])
    dNLL/dtrans    = sum_{t=2..L} xi_t - sum_{t=2..L} onehot(y_{t-1}) onehot(y_t)^T

Viterbi is the same recursion as alpha with max in place of lse, keeping the argmax.

Parameter names, shapes, their order, the meaning of ``transitions[i, j]`` (tag i followed by
tag j) and the U(-0.1, 0.1) initialisation are pytorch-crf's (``torchcrf.CRF``), so state dicts
load either way; its ``forward`` returns the log-likelihood, ours its negative (a loss).
"""

from __future__ import annotations

import numpy as np

from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.layers import _no_cache
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.validate import check_array, check_lengths, check_positive_int, check_scale

REDUCTIONS = ("sum", "mean", "token_mean", "none")


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(x))) over ``axis``, shifted by the max so that nothing overflows."""
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))


class CRF(Module):
    """Linear-chain CRF over ``num_tags`` tags (the equations are in the module docstring).

    Shapes: T steps, B sequences, K tags. ``forward(emissions (T, B, K), tags (T, B), lengths
    (B,) or None, reduction)`` -> the NLL; ``backward(scale)`` -> dNLL/demissions (T, B, K), the
    parameter gradients added into ``grads``; ``decode`` -> Viterbi tag lists; ``marginals`` ->
    p(y_t = k) (T, B, K). Parameters: ``start_transitions`` (K,), ``end_transitions`` (K,),
    ``transitions`` (K, K), each drawn from U(-0.1, 0.1).
    """

    def __init__(self, num_tags: int, dtype: object = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.num_tags = check_positive_int("num_tags", num_tags)
        self.dtype = resolve_dtype(dtype)
        K = self.num_tags
        require_parameters(f"CRF({K})", K * K + 2 * K, self.dtype)
        rng = make_rng(seed)
        for name, shape in (("start_transitions", (K,)), ("end_transitions", (K,)),
                            ("transitions", (K, K))):
            self._add_param(name, rng.uniform(-0.1, 0.1, shape).astype(self.dtype))
        self._cache = None

    def _scores(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self._params
        return p["start_transitions"], p["end_transitions"], p["transitions"]

    # -- the boundary
    def _checked(self, emissions: object, lengths: object):
        """(emissions with their padding zeroed, lengths (B,), valid (T, B): t < lengths[b])."""
        K = self.num_tags
        e = check_array("emissions", emissions, self.dtype, (None, None, K), ("T", "B", "K"),
                        finite=False)
        T, B = e.shape[:2]
        if T < 1 or B < 1:
            raise ValueError(f"emissions: expected at least one step and one sequence (T, B, "
                             f"K={K}), got shape {e.shape}")
        L = np.full(B, T, np.int64) if lengths is None else check_lengths(lengths, B, T)
        valid = np.arange(T)[:, None] < L  # (T, B)
        e = np.where(valid[:, :, None], e, e.dtype.type(0))  # padding cannot leak, even NaN
        if not np.isfinite(e).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(e))[0])
            raise ValueError(f"emissions: expected finite values within lengths, got {e[bad]} "
                             f"at index {bad}")
        return e, L, valid

    def _checked_tags(self, tags: object, valid: np.ndarray) -> np.ndarray:
        """Tags (T, B) in [0, K) within lengths; padding may hold anything (set to 0 here)."""
        if not isinstance(tags, np.ndarray) or not np.issubdtype(tags.dtype, np.integer):
            got = tags.dtype if isinstance(tags, np.ndarray) else type(tags).__name__
            raise TypeError(f"tags: expected an integer numpy array, got {got}")
        if tags.shape != valid.shape:
            raise ValueError(f"tags: expected shape (T, B) = {valid.shape}, got {tags.shape}")
        y = np.where(valid, tags, 0)
        if y.min() < 0 or y.max() >= self.num_tags:
            raise ValueError(f"tags: expected ids in [0, {self.num_tags}) within lengths, got "
                             f"min {y.min()} max {y.max()}")
        return y

    def _weights(self, scale: object, reduction: str, L: np.ndarray) -> np.ndarray:
        """dLoss/dNLL_b (B,): the scale over what the reduction divides by."""
        B = L.shape[0]
        s = check_scale(scale, B, reduction == "none")
        divisor = {"sum": 1, "none": 1, "mean": B, "token_mean": int(L.sum())}[reduction]
        return np.broadcast_to(s / divisor, (B,)).astype(self.dtype)

    # -- the recursions (one loop over time each)
    def _alpha(self, e: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Forward algorithm: alpha (T, B, K), carried unchanged through the padding so that
        alpha[-1] is every sequence's alpha_L."""
        start, _, trans = self._scores()
        alpha = np.empty_like(e)
        alpha[0] = start + e[0]
        for t in range(1, e.shape[0]):
            step = _lse(alpha[t - 1][:, :, None] + trans, axis=1) + e[t]  # lse over i
            alpha[t] = np.where(valid[t][:, None], step, alpha[t - 1])
        return alpha

    def _beta(self, e: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Backward algorithm: beta (T, B, K), ``end`` at and past each sequence's last step."""
        _, end, trans = self._scores()
        beta = np.empty_like(e)
        beta[-1] = end
        for t in range(e.shape[0] - 2, -1, -1):
            step = _lse(trans + (e[t + 1] + beta[t + 1])[:, None, :], axis=2)  # lse over j
            beta[t] = np.where(valid[t + 1][:, None], step, end)
        return beta

    def _log_z(self, alpha: np.ndarray) -> np.ndarray:
        return _lse(alpha[-1] + self._params["end_transitions"], axis=1)  # (B,)

    @staticmethod
    def _posterior(alpha, beta, log_z, valid) -> np.ndarray:
        """p_t[k] (T, B, K), 0 past each length (where alpha + beta - log Z <= 0 still)."""
        return np.where(valid[:, :, None], np.exp(alpha + beta - log_z[:, None]), 0)

    # -- the public verbs
    def forward(self, emissions: np.ndarray, tags: np.ndarray,
                lengths: np.ndarray | None = None, reduction: str = "sum") -> float | np.ndarray:
        """emissions (T, B, K), tags (T, B), lengths (B,) in [1, T] or None (all T) -> the NLL:
        summed over the batch ("sum"), its mean over the sequences ("mean") or the sum divided by
        the number of tokens, sum(lengths) ("token_mean"), as a float; or per sequence, a (B,)
        array in the layer's dtype ("none")."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
        e, L, valid = self._checked(emissions, lengths)
        y = self._checked_tags(tags, valid)
        start, end, trans = self._scores()
        b = np.arange(e.shape[1])
        alpha = self._alpha(e, valid)
        log_z = self._log_z(alpha)
        emitted = np.take_along_axis(e, y[:, :, None], axis=2)[:, :, 0].sum(axis=0)  # 0 in pad
        gold = (start[y[0]] + emitted + (trans[y[:-1], y[1:]] * valid[1:]).sum(axis=0)
                + end[y[L - 1, b]])  # score(gold) (B,)
        nll = log_z - gold  # (B,)
        self._cache = (e, y, L, valid, alpha, log_z, reduction)
        if reduction == "none":
            return nll
        divisor = {"sum": 1, "mean": len(L), "token_mean": int(L.sum())}[reduction]
        return float(nll.sum(dtype=np.float64)) / divisor

    __call__ = forward

    def backward(self, scale: float | np.ndarray = 1.0) -> np.ndarray:
        """Returns dLoss/demissions (T, B, K), 0 past each length, for Loss = scale * the
        reduced NLL (with reduction "none": sum_b scale[b] * NLL_b, ``scale`` a number or (B,));
        adds dLoss/d start_transitions, end_transitions, transitions into ``grads``."""
        if self._cache is None:
            _no_cache(self)
        e, y, L, valid, alpha, log_z, reduction = self._cache
        w = self._weights(scale, reduction, L)  # (B,) dLoss/dNLL_b
        self._cache = None
        T, B, K = e.shape
        beta = self._beta(e, valid)
        p = self._posterior(alpha, beta, log_z, valid)
        onehot = (np.arange(K) == y[:, :, None]) & valid[:, :, None]
        de = (p - onehot) * w[:, None]  # dNLL/de = p_t - onehot(y_t), times dLoss/dNLL_b
        self._grad_add("start_transitions", de[0].sum(axis=0))  # start adds to e[0]
        self._grad_add("end_transitions", de[L - 1, np.arange(B)].sum(axis=0))  # end to e[L-1]
        self._grad_add("transitions", self._dtransitions(e, y, valid, alpha, beta, log_z, w))
        return de

    def _dtransitions(self, e, y, valid, alpha, beta, log_z, w) -> np.ndarray:
        """sum_b w_b (sum_t xi_t - gold pair counts) (K, K); one (B, K, K) step at a time."""
        K = self.num_tags
        trans = self._params["transitions"]
        right = np.where(valid[:, :, None], e + beta, -np.inf)  # -inf past L: xi_t = 0 there
        d = np.zeros_like(trans)
        for t in range(1, e.shape[0]):
            xi = np.exp(alpha[t - 1][:, :, None] + trans + right[t][:, None, :]
                        - log_z[:, None, None])  # (B, K, K) p(y_{t-1} = i, y_t = j)
            d += (w @ xi.reshape(-1, K * K)).reshape(K, K)
        pairs = (y[:-1] * K + y[1:]).ravel()  # gold (y_{t-1}, y_t) as flat ids
        d -= np.bincount(pairs, weights=(valid[1:] * w).ravel(), minlength=K * K).reshape(K, K)
        return d

    def decode(self, emissions: np.ndarray, lengths: np.ndarray | None = None) -> list[list[int]]:
        """Viterbi: the highest-scoring tag sequence of each sequence, ``lengths[b]`` ids long
        (max-sum in log space with backpointers; ties go to the lowest id)."""
        e, L, valid = self._checked(emissions, lengths)
        start, end, trans = self._scores()
        T, B, K = e.shape
        best = start + e[0]  # (B, K) the best prefix score ending in tag k
        back = np.zeros((T, B, K), np.intp)  # back[t, b, j]: the best tag before j at step t
        for t in range(1, T):
            cand = best[:, :, None] + trans  # (B, i, j)
            back[t] = cand.argmax(axis=1)
            best = np.where(valid[t][:, None], cand.max(axis=1) + e[t], best)
        tag = (best + end).argmax(axis=1)  # (B,) the best last tag
        path = np.empty((T, B), np.intp)
        b = np.arange(B)
        for t in range(T - 1, 0, -1):  # past a length the tag stays the last one
            path[t] = tag
            tag = np.where(valid[t], back[t, b, tag], tag)
        path[0] = tag
        return [path[:n, i].tolist() for i, n in enumerate(L)]

    def marginals(self, emissions: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """p(y_t = k | emissions) (T, B, K) by forward-backward; each step sums to 1 within
        the lengths, 0 past them."""
        e, _, valid = self._checked(emissions, lengths)
        alpha = self._alpha(e, valid)
        return self._posterior(alpha, self._beta(e, valid), self._log_z(alpha), valid)
