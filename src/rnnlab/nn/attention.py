"""Attention of decoder queries over encoder states, with hand-written backward.

Three score functions (Luong et al. 2015 "dot" and "general", Bahdanau et al. 2015 "additive"),
a softmax masked to each sequence's valid keys, and the weighted sum of the values. Everything is
time-major like the recurrent layers: query (Tq, B, Hq), keys (Tk, B, Hk), values (Tk, B, Hv).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlab.nn.backend import Seed, make_rng, resolve_dtype
from rnnlab.nn.layers import _no_cache
from rnnlab.nn.module import Module
from rnnlab.nn.ops import tanh
from rnnlab.validate import check_array, check_lengths, check_positive_int

SCORES = ("dot", "general", "additive")


@dataclass(frozen=True)
class Keys:
    """Keys checked once, and for the additive score projected once (W_k k_j, (Tk, B, A)), for
    many forward calls over the same keys: one per step when decoding. From
    :meth:`Attention.prepare`; ``rows`` selects batch columns (beam hypotheses)."""

    keys: np.ndarray  # (Tk, B, Hk)
    projected: np.ndarray | None

    def rows(self, idx) -> Keys:
        return Keys(self.keys[:, idx], None if self.projected is None else self.projected[:, idx])


class Attention(Module):
    """Attention of decoder queries over encoder keys/values, time-major, hand-written backward.

    scores s[t, b, j] (Tq, B, Tk)::

        dot       s = q_t . k_j                       (query_size == key_size)
        general   s = q_t^T W k_j                     "weight" (query_size, key_size)
        additive  s = v . tanh(W_q q_t + W_k k_j)     "weight_query" (A, query_size),
                                                      "weight_key" (A, key_size), "v" (A,)

    ``a[t, b, :]`` = softmax over j of ``s[t, b, j]``, taken over the valid keys
    ``j < lengths[b]`` only (padded keys get weight exactly 0), and
    ``context[t, b] = sum_j a[t, b, j] values[j, b]``.

    Backward (``da`` = dL/da, ``dctx`` = dL/dcontext)::

        da      = dctx . values_j (+ dweights)     dvalues[j, b] = sum_t a[t, b, j] dctx[t, b]
        ds      = a * (da - sum_j a * da)          (0 at padded keys, since a is 0 there)

    then each score's own chain rule. Parameter gradients accumulate until ``zero_grad``.
    Initialisation as torch.nn.Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): fan_in is key_size
    for "weight" and "weight_key", query_size for "weight_query" and A for "v".
    """

    def __init__(self, query_size: int, key_size: int | None = None, score: str = "dot",
                 attn_size: int | None = None, dtype: object = np.float32,
                 seed: Seed = None) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        self.query_size = check_positive_int("query_size", query_size)
        self.key_size = check_positive_int(
            "key_size", query_size if key_size is None else key_size)
        # A, the width of the additive score's hidden layer; unused by the other scores
        self.attn_size = check_positive_int(
            "attn_size", self.key_size if attn_size is None else attn_size)
        if score == "dot" and self.key_size != self.query_size:
            raise ValueError(
                f"key_size: expected key_size == query_size ({self.query_size}) for score='dot' "
                f"(use 'general' or 'additive' for different sizes), got {self.key_size}")
        self.score = score
        self.dtype = resolve_dtype(dtype)
        rng = make_rng(seed)
        Hq, Hk, A = self.query_size, self.key_size, self.attn_size

        def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            k = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-k, k, shape).astype(self.dtype)

        if score == "general":
            self._add_param("weight", uniform((Hq, Hk), Hk))
        elif score == "additive":
            self._add_param("weight_query", uniform((A, Hq), Hq))
            self._add_param("weight_key", uniform((A, Hk), Hk))
            self._add_param("v", uniform((A,), A))
        self._cache: tuple | None = None

    def _check_keys(self, keys: np.ndarray, B: int | None) -> np.ndarray:
        k = check_array("keys", keys, self.dtype, (None, B, self.key_size),
                        ("Tk", "B", "key_size"))
        if k.shape[0] == 0:
            raise ValueError(f"keys: expected at least one key step (Tk >= 1), got {k.shape}")
        return k

    def prepare(self, keys: np.ndarray) -> Keys:
        """keys (Tk, B, Hk) -> :class:`Keys` for repeated :meth:`forward` calls: checked now,
        and projected now for the additive score, instead of at every call."""
        k = self._check_keys(keys, None)
        return Keys(k, k @ self._params["weight_key"].T if self.score == "additive" else None)

    def forward(self, query: np.ndarray, keys: np.ndarray | Keys,
                values: np.ndarray | None = None,
                lengths: object = None) -> tuple[np.ndarray, np.ndarray]:
        """query (Tq, B, Hq), keys (Tk, B, Hk) or :class:`Keys` from :meth:`prepare`, values
        (Tk, B, Hv) or None (values = keys), lengths (B,) integers in [1, Tk] or None (every key
        valid).

        Returns context (Tq, B, Hv) and the weights a (Tq, B, Tk), a copy the caller may keep.
        """
        q = check_array("query", query, self.dtype, (None, None, self.query_size),
                        ("Tq", "B", "query_size"))
        B = q.shape[1]
        if isinstance(keys, Keys):
            k, pk = keys.keys, keys.projected
            if k.shape[1] != B:
                raise ValueError(f"keys: expected prepared keys for batch {B} (as query), got "
                                 f"{k.shape[1]}")
        else:
            k, pk = self._check_keys(keys, B), None
        Tk = k.shape[0]
        shared = values is None
        vals = k if shared else check_array("values", values, self.dtype, (Tk, B, None),
                                            ("Tk", "B", "value_size"))
        valid = np.ones((B, Tk), bool)
        if lengths is not None:
            lens = check_lengths(lengths, B, Tk)
            valid = np.arange(Tk) < lens[:, None]  # (B, Tk): key j of sequence b is real

        p = self._params
        if self.score == "dot":
            s = np.einsum("tbh,jbh->tbj", q, k)
            extra = ()
        elif self.score == "general":
            qW = q @ p["weight"]  # (Tq, B, Hk): q^T W once per query, not W k per key
            s = np.einsum("tbh,jbh->tbj", qW, k)
            extra = (qW,)
        else:
            pq = q @ p["weight_query"].T  # W_q q_t  (Tq, B, A)
            if pk is None:
                pk = k @ p["weight_key"].T  # W_k k_j  (Tk, B, A)
            with np.errstate(over="ignore"):  # ops.tanh: exp may overflow, harmlessly
                h = tanh(np.add(pq[:, None], pk[None]))  # (Tq, Tk, B, A), kept for backward
            s = (h @ p["v"]).transpose(0, 2, 1)  # v . h: one GEMV over all (t, j, b)
            extra = (h,)

        # stable masked softmax: the max is over valid keys (at least one per row), exp(-inf)
        # is exactly 0 at padded keys, and the max itself contributes exp(0) = 1 to the sum
        s = np.where(valid[None], s, self.dtype.type(-np.inf))
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        a = e / e.sum(axis=-1, keepdims=True)  # (Tq, B, Tk)
        context = np.einsum("tbj,jbv->tbv", a, vals)  # (Tq, B, Hv)
        self._cache = (q, k, vals, shared, a, extra)
        return context, a.copy()

    __call__ = forward

    def backward(self, dcontext: np.ndarray, dweights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """dcontext (Tq, B, Hv) and optionally dweights (Tq, B, Tk), a further gradient with
        respect to the weights -> (dquery, dkeys, dvalues).

        When forward had values=None, dvalues is None and dkeys holds both the key and the value
        contributions. Rows of dkeys/dvalues at padded keys are exactly 0.
        """
        if self._cache is None:
            _no_cache(self)
        q, k, vals, shared, a, extra = self._cache
        Tq, B, Tk = a.shape
        dctx = check_array("dcontext", dcontext, self.dtype, (Tq, B, vals.shape[2]),
                           ("Tq", "B", "value_size"))
        da = np.einsum("tbv,jbv->tbj", dctx, vals)
        if dweights is not None:
            da = da + check_array("dweights", dweights, self.dtype, (Tq, B, Tk),
                                  ("Tq", "B", "Tk"))
        self._cache = None  # checks passed: the cache is used up

        dvals = np.einsum("tbj,tbv->jbv", a, dctx)
        ds = a * (da - (a * da).sum(axis=-1, keepdims=True))  # softmax backward, 0 where a = 0

        p = self._params
        if self.score == "dot":
            dq = np.einsum("tbj,jbh->tbh", ds, k)
            dk = np.einsum("tbj,tbh->jbh", ds, q)
        elif self.score == "general":
            (qW,) = extra
            dqW = np.einsum("tbj,jbh->tbh", ds, k)  # (Tq, B, Hk)
            self._grad_add_matmul("weight", q.reshape(-1, self.query_size).T,
                                  dqW.reshape(-1, self.key_size))
            dq = dqW @ p["weight"].T
            dk = np.einsum("tbj,tbh->jbh", ds, qW)
        else:
            (h,) = extra
            A = self.attn_size
            dsT = np.ascontiguousarray(ds.transpose(0, 2, 1))  # (Tq, Tk, B) like h's first axes
            self._grad_add_matmul("v", dsT.reshape(-1), h.reshape(-1, A))  # dv = sum of ds h
            dpre = np.multiply(h, h)  # dpre = ds v (1 - h^2), (Tq, Tk, B, A), in place:
            np.subtract(1.0, dpre, out=dpre)
            dpre *= p["v"]
            dpre *= dsT[..., None]
            dpq = dpre.sum(axis=1)  # (Tq, B, A)
            dpk = dpre.sum(axis=0)  # (Tk, B, A)
            self._grad_add_matmul("weight_query", dpq.reshape(-1, A).T,
                                  q.reshape(-1, self.query_size))
            self._grad_add_matmul("weight_key", dpk.reshape(-1, A).T,
                                  k.reshape(-1, self.key_size))
            dq = dpq @ p["weight_query"]
            dk = dpk @ p["weight_key"]
        if shared:
            return dq, dk + dvals, None
        return dq, dk, dvals
