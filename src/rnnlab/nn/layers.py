"""Feed-forward layers with hand-written backward: Embedding, Linear, Dropout, SoftmaxCrossEntropy.

Each layer has the same shape as the recurrent ones: parameters and ``grads`` (accumulated until
``zero_grad``), ``forward`` caching what ``backward`` needs, ``backward(dout)`` returning the
gradient of the input. Names and initialisation follow ``torch.nn``.
"""

from __future__ import annotations

import numpy as np

from rnnlab.nn.backend import (
    Seed,
    device_of,
    dropout_mask,
    is_device_array,
    make_rng,
    resolve_dtype,
    to_device,
    xp_of,
)
from rnnlab.nn.memory import require_parameters
from rnnlab.nn.module import Module
from rnnlab.validate import check_array, check_positive_int, is_array


def _no_cache(layer: object):
    raise RuntimeError(
        f"{type(layer).__name__}.backward: expected a forward call before backward (one "
        "backward per forward), got none"
    )


def check_ids(name: str, ids: object, upper: int) -> np.ndarray:
    """Integer ids in [0, upper)."""
    if not is_array(ids) or not np.issubdtype(ids.dtype, np.integer):
        got = ids.dtype if is_array(ids) else type(ids).__name__
        raise TypeError(f"{name}: expected an integer numpy array, got {got}")
    if ids.size and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(
            f"{name}: expected ids in [0, {upper}), got min {ids.min()} max {ids.max()}"
        )
    return ids


class Embedding(Module):
    """Lookup table: ``out[...] = weight[ids[...]]``; weight (V, E) drawn from N(0, 1) as in torch.

    Backward scatters ``dout`` into the rows that were looked up, adding up repeated ids. The
    layer remembers which rows of its gradient may be non-zero, so that a lazy ``zero_grad``
    costs the zeroing of those rows only and a training loop can skip the others
    (:meth:`Module.grads_and_rows`); once the gradient is handed out, any row may be.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: object = np.float32,
                 seed: Seed = None) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.dtype = resolve_dtype(dtype)
        V, E = self.num_embeddings, self.embedding_dim  # Python ints: no overflow
        require_parameters(f"Embedding({V}, {E})", V * E, self.dtype)
        rng = make_rng(seed)
        self._add_param("weight", rng.standard_normal((num_embeddings, embedding_dim))
                        .astype(self.dtype))
        self._ids: np.ndarray | None = None
        self._rows: np.ndarray | None = np.empty(0, np.int64)  # may be non-zero; None: any

    _sparse_grads = ("weight",)

    def _clear_stale(self) -> None:
        if self.device != "cpu":  # no row bookkeeping on a GPU: the whole gradient is zeroed
            self._rows = None
            return super()._clear_stale()
        if "weight" in self._stale:
            if self._rows is not None:
                self._grads["weight"][self._rows] = 0.0  # the only rows that can be non-zero
                self._stale.discard("weight")
            self._rows = np.empty(0, np.int64)  # (else the base class zeroes all of it)
        super()._clear_stale()

    def _handed_out(self) -> None:
        self._rows = None

    def _moved(self, device: str) -> None:
        super()._moved(device)
        self._rows = None  # after a move any row may be non-zero

    def _grad(self, name: str) -> np.ndarray:  # another layer adds to it (weight tying)
        g = super()._grad(name)
        self._rows = None
        return g

    def _grad_rows(self) -> dict[str, np.ndarray]:
        if self._rows is None or self.device != "cpu":  # on a GPU the dense update is cheap
            return {}
        return {"weight": self._rows}

    def forward(self, ids: np.ndarray) -> np.ndarray:
        self._ids = check_ids("ids", ids, self.num_embeddings)
        if self.device != "cpu":  # ids usually come from the host's data loader
            self._ids = to_device(self._ids, self.device)
        return self._params["weight"][self._ids]  # (..., E)

    __call__ = forward

    def backward(self, dout: np.ndarray) -> None:
        if self._ids is None:
            _no_cache(self)
        E = self.embedding_dim
        dout = check_array("dout", dout, self.dtype, (*self._ids.shape, E),
                           (*("N" for _ in self._ids.shape), "E"))
        ids = self._ids.ravel()
        if ids.size == 0:
            return
        if self.device != "cpu":
            self._scatter_add(ids, dout.reshape(-1, E))
            return
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        first = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # run starts
        if "weight" in self._stale:
            self._clear_stale()
        rows = sorted_ids[first]
        # one summed row per distinct id (np.add.at does the same row by row, 1.5x slower:
        # benchmarks/RESULTS.md section 4)
        self._grads["weight"][rows] += np.add.reduceat(dout.reshape(-1, E)[order], first, axis=0)
        if self._rows is not None:
            self._rows = np.union1d(self._rows, rows)

    def _scatter_add(self, ids, rows) -> None:
        """grad[ids[k]] += rows[k] on a GPU, repeated ids added up (atomics)."""
        g = self._grad("weight")
        xp = xp_of(g)
        if hasattr(xp.add, "at"):
            xp.add.at(g, ids, rows)
        else:  # older CuPy
            import cupyx

            cupyx.scatter_add(g, ids, rows)


class Linear(Module):
    """y = x W^T + b over the last axis (time-distributed). W (out, in), b (out,).

    Initialisation as torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for both.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: object = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.dtype = resolve_dtype(dtype)
        n_in, n_out = self.in_features, self.out_features  # Python ints: no overflow
        require_parameters(f"Linear({n_in}, {n_out})", (n_in + bool(bias)) * n_out, self.dtype)
        rng = make_rng(seed)
        k = 1.0 / np.sqrt(in_features)
        shape = (out_features, in_features)
        self._add_param("weight", rng.uniform(-k, k, shape).astype(self.dtype))
        if bias:
            self._add_param("bias", rng.uniform(-k, k, out_features).astype(self.dtype))
        self._x: np.ndarray | None = None

    def checked(self, x: np.ndarray, weight: np.ndarray | None = None):
        """(W, x) after checking both: ``weight`` overrides the layer's own (tying)."""
        W = self._params["weight"] if weight is None else weight
        if W.shape != (self.out_features, self.in_features):
            raise ValueError(f"weight: expected shape {(self.out_features, self.in_features)}, "
                             f"got {W.shape}")
        lead = max(np.ndim(x) - 1, 1)
        # no finiteness pass: inside a model a NaN is the trainer's to catch (at the loss)
        x = check_array("x", x, self.dtype, (*(None,) * lead, self.in_features),
                        (*("N",) * lead, "in_features"), finite=False)
        return W, x

    def forward(self, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """``weight`` overrides the layer's own (weight tying: the embedding matrix)."""
        W, x = self.checked(x, weight)
        self._x = x
        # one GEMM over all leading axes: (T, B, in) @ (in, out) would run T separate GEMMs
        y = (x.reshape(-1, self.in_features) @ W.T).reshape(*x.shape[:-1], self.out_features)
        if "bias" in self._params:
            y += self._params["bias"]
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray, weight: np.ndarray | None = None,
                 dweight: np.ndarray | None = None) -> np.ndarray:
        """Returns dx; adds dW into ``grads['weight']`` (or into ``dweight`` when tied)."""
        if self._x is None:
            _no_cache(self)
        W = self._params["weight"] if weight is None else weight
        want = (*self._x.shape[:-1], self.out_features)
        if not is_array(dy) or dy.shape != want or dy.dtype != self.dtype:
            raise ValueError(f"dy: expected a {self.dtype} array of shape {want}, "
                             f"got {getattr(dy, 'dtype', type(dy).__name__)} {np.shape(dy)}")
        x2 = self._x.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        if dweight is None:
            self._grad_add_matmul("weight", dy2.T, x2)  # dW = dy^T x
        else:
            dweight += dy2.T @ x2
        if "bias" in self._params:
            self._grad_add("bias", dy2.sum(axis=0))  # db = sum of dy
        return (dy2 @ W).reshape(self._x.shape)  # dx = dy W


class Dropout(Module):
    """Inverted dropout: in training, zero each unit with probability p and scale the rest by
    1/(1-p); in eval mode the identity. Masks come from the layer's seeded generator."""

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self._rng = make_rng(seed)
        self._mask: np.ndarray | None = None
        self._called = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._called = True
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = dropout_mask(self._rng, x.shape, self.p, x.dtype, device_of(x))
        return x * self._mask

    __call__ = forward

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if not self._called:
            _no_cache(self)
        if self._mask is not None and dout.shape != self._mask.shape:
            raise ValueError(f"dout: expected shape {self._mask.shape}, got {dout.shape}")
        return dout if self._mask is None else dout * self._mask


BLOCK = 1 << 16  # elements per block of rows in the softmax (256 KiB of float32)


def _counted_targets(targets: object, mask: object, shape: tuple, V: int, what: str,
                     ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check targets (``shape``) and mask; -> (flat targets, uncounted ones set to id 0 so they
    can be gathered; flat bool: counted)."""
    if not isinstance(targets, np.ndarray) or targets.shape != shape:
        raise ValueError(f"targets: expected shape {shape} ({what}), got {np.shape(targets)}")
    keep = np.ones(shape, bool)
    if mask is not None:
        keep = np.asarray(mask)
        if keep.dtype != bool or keep.shape != shape:
            raise ValueError(f"mask: expected a boolean array of shape {shape}, got "
                             f"{keep.dtype} {keep.shape}")
    if ignore_index is not None:
        keep = keep & (targets != ignore_index)
    t = np.where(keep, targets, 0).reshape(-1)
    check_ids("targets", t, V)
    return t, keep.reshape(-1)


def _softmax_blocks(z: np.ndarray, out: np.ndarray, t: np.ndarray, nll: np.ndarray,
                    bias: np.ndarray | None = None, scale: float | None = None,
                    probs: bool = True):
    """Row blocks of (N, V) logits, each small enough to stay in cache through all its passes:

        out = scale * softmax(z + bias)    (out may be z itself; scale None: softmax;
                                            probs=False: left unnormalised, loss only)
        nll = -log softmax(z + bias)[t]    (float64)

    Yields (start, out block, its targets, row index) so the caller can finish the block (its
    gradient) while it is still in cache.
    """
    rows = max(1, BLOCK // z.shape[1])
    for s in range(0, z.shape[0], rows):
        zb, ob, tb = z[s:s + rows], out[s:s + rows], t[s:s + rows]
        r = np.arange(zb.shape[0])
        if bias is not None:
            zb = np.add(zb, bias, out=ob)
        np.subtract(zb, zb.max(axis=1, keepdims=True), out=ob)  # shift for stability
        target = ob[r, tb]  # the shifted target logit
        np.exp(ob, out=ob)
        sums = ob.sum(axis=1, keepdims=True)
        nll[s:s + rows] = np.log(sums[:, 0]) - target  # -log softmax(z)[t]
        if not probs:
            pass
        elif scale is None:
            ob /= sums
        else:
            ob *= ob.dtype.type(scale) / sums
        yield s, ob, tb, r


class SoftmaxCrossEntropy:
    """Cross-entropy of softmax(logits) against integer targets, with dL/dlogits = p - onehot.

    ``reduction``: "mean" over the counted tokens or "sum". Targets equal to ``ignore_index``
    (or where ``mask`` is False) count for nothing and get zero gradient. The log-softmax is
    computed stably: log p = x - max - log(sum(exp(x - max))).
    """

    def __init__(self, reduction: str = "mean", ignore_index: int | None = None) -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.ignore_index = ignore_index
        self._cache = None

    def forward(self, logits: np.ndarray, targets: np.ndarray,
                mask: np.ndarray | None = None) -> float:
        """logits (..., V), targets (...) -> the loss (a Python float)."""
        if not isinstance(logits, np.ndarray) or logits.ndim < 1:
            raise ValueError(f"logits: expected an array (..., V), got {np.shape(logits)}")
        V = logits.shape[-1]
        t, k = _counted_targets(targets, mask, logits.shape[:-1], V,
                                "logits without the class axis", self.ignore_index)
        z = logits.reshape(-1, V)
        p = np.empty_like(z)  # softmax probabilities, kept for backward
        nll = np.empty(z.shape[0], np.float64)
        for _ in _softmax_blocks(z, p, t, nll):
            pass
        count = int(k.sum())
        total = float(nll[k].sum())
        self._cache = (p, t, k, count, logits.shape)
        if self.reduction == "sum":
            return total
        return total / max(count, 1)

    __call__ = forward

    def backward(self, scale: float = 1.0) -> np.ndarray:
        """dL/dlogits = (softmax - onehot) [/ count for "mean"] * scale; zero where ignored."""
        if self._cache is None:
            _no_cache(self)
        p, t, k, count, shape = self._cache
        d = p  # reuse the probabilities' buffer: backward is called once per forward
        d[np.arange(d.shape[0]), t] -= 1.0  # p - onehot
        if not k.all():
            d[~k] = 0.0
        factor = scale / max(count, 1) if self.reduction == "mean" else scale
        if factor != 1.0:
            d *= d.dtype.type(factor)
        self._cache = None
        return d.reshape(shape)


class LinearCrossEntropy:
    """A :class:`Linear` readout and the summed softmax cross-entropy, fused for training::

        logits  = x W^T + b                                  (N, V)
        loss    = -sum_n log softmax(logits_n)[t_n]          (over the counted rows)
        dlogits = scale * (softmax(logits) - onehot(t))      (0 on rows that do not count)
        dW += dlogits^T x;   db += sum_n dlogits_n;   dx = dlogits W

    The numbers are those of ``Linear`` followed by ``SoftmaxCrossEntropy(reduction="sum")`` and
    ``backward(scale)``; what changes is the memory traffic. The (N, V) logits are written by one
    GEMM into a workspace that is reused from call to call (a fresh 16 MB array per window costs
    page faults), and each cache-sized block of rows is turned into its loss and its dlogits
    (bias, shift, exp, sum, scale, minus the one-hot, bias gradient) while it is still in cache,
    instead of a pass over the whole array per operation. Backward is two GEMMs.
    """

    def __init__(self, linear: Linear) -> None:
        self.linear = linear
        self._work = np.empty((0, linear.out_features), linear.dtype)
        self._dW: np.ndarray | None = None
        self._cache = None

    def _workspace(self, n: int, like) -> np.ndarray:
        if self._work.shape[0] < n or xp_of(self._work) is not xp_of(like):
            self._work = xp_of(like).empty((n, self.linear.out_features), self.linear.dtype)
        return self._work[:n]

    def forward(self, x: np.ndarray, targets: np.ndarray, scale: float | None = 1.0,
                mask: np.ndarray | None = None, weight: np.ndarray | None = None):
        """x (..., in), targets (...) -> (summed NLL as a float, number of counted targets).

        ``scale``: the factor of the gradient that :meth:`backward` will return (for example
        1 / batch); None computes the loss only. ``weight`` overrides the layer's (tying).
        """
        lin = self.linear
        W, x = lin.checked(x, weight)
        V = lin.out_features
        t, keep = _counted_targets(targets, mask, x.shape[:-1], V, "x without its feature axis")
        x2 = x.reshape(-1, lin.in_features)
        if is_device_array(W):
            return self._forward_device(x, x2, W, t, keep, scale)
        z = np.matmul(x2, W.T, out=self._workspace(x2.shape[0], W))  # logits, one GEMM
        grad = scale is not None
        db = np.zeros(V, lin.dtype) if grad else None
        nll = np.empty(z.shape[0], np.float64)
        partial = not keep.all()
        for s, zb, tb, r in _softmax_blocks(z, z, t, nll, lin._params.get("bias"), scale,
                                            probs=grad):
            if grad:  # zb = scale * softmax: finish scale * (softmax - onehot) while in cache
                zb[r, tb] -= zb.dtype.type(scale)
                if partial:
                    zb[~keep[s:s + len(r)]] = 0.0
                db += zb.sum(axis=0)
        count = int(keep.sum())
        total = float(nll[keep].sum())
        self._cache = (x, z, db) if grad else None
        return total, count

    __call__ = forward

    def _forward_device(self, x, x2, W, t, keep, scale):
        """The same on a GPU: one GEMM, then one fused kernel per row for the bias, the loss and
        dlogits (:func:`rnnlab.nn.kernels.cuda.softmax_xent`); one read-back (the loss)."""
        from rnnlab.nn.kernels.cuda import softmax_xent

        lin = self.linear
        xp = xp_of(W)
        z = xp.matmul(x2, W.T, out=self._workspace(x2.shape[0], W))
        nll = xp.empty(z.shape[0], np.float64)
        softmax_xent(z, lin._params.get("bias"), xp.asarray(t, np.int64), xp.asarray(keep),
                     nll, scale)
        self._cache = (x, z, z.sum(axis=0)) if scale is not None else None
        return float(nll.sum()), int(keep.sum())

    def backward(self, weight: np.ndarray | None = None,
                 dweight: np.ndarray | None = None) -> np.ndarray:
        """Returns dx; adds dW into ``grads['weight']`` (or into ``dweight`` when tied) and db
        into ``grads['bias']``."""
        if self._cache is None:
            raise RuntimeError("LinearCrossEntropy.backward: expected a forward call with a "
                               "scale before backward, got none")
        x, d, db = self._cache
        self._cache = None
        lin = self.linear
        W = lin._params["weight"] if weight is None else weight
        x2 = x.reshape(-1, lin.in_features)
        xp = xp_of(W)
        if self._dW is None or self._dW.shape != W.shape or xp_of(self._dW) is not xp:
            self._dW = xp.empty(W.shape, lin.dtype)
        if dweight is None:
            lin._grad_add_matmul("weight", d.T, x2, scratch=self._dW)  # dW = dlogits^T x
        else:
            dweight += xp.matmul(d.T, x2, out=self._dW)
        if "bias" in lin._params:
            lin._grad_add("bias", db)  # db = sum of dlogits
        return (d @ W).reshape(x.shape)  # dx = dlogits W
