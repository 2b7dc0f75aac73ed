"""Synchronous data-parallel training over MPI (``mpiexec -n K rnnlab train ...``).

Every rank holds the whole model and trains on its own shard of each batch; after backward the
gradients are averaged, so every rank takes the same step and the weights stay equal. One step
on K ranks (rank r saw n_r items: tokens, words, targets, utterances):

    loss_r, n_r = task.step(shard_r)          forward, loss (mean over n_r), backward
    N, loss = sum_r n_r, sum_r n_r loss_r / N  Allreduce 1 (float64, small): the counts, and
    rows = union_r rows_r                        the rows each rank's embedding gradient touched
    g = sum_r (n_r / N) g_r                    Allreduce 2 (SUM): one flat gradient buffer,
                                                 an embedding's gradient as its touched rows only
    clipped_step(g, rows)                      the global norm after the reduction: one step

Weighting by n_r makes the step the one a single process takes on the K shards together (a
task's loss is a mean over its items), also when the shards differ in length (sentences,
utterances). At the start the weights and the optimizer state are broadcast from rank 0, after
a check that every rank has the same configuration and data. Checkpoints and logs are rank 0's.

``world()`` is a single process (:class:`Solo`, nothing imported) unless the process was
started by an MPI launcher with more than one rank; only then is ``mpi4py`` imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping

import numpy as np

# what MPI launchers put in each rank's environment: the number of ranks
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


# seconds a failing rank waits before MPI_Abort, so that mpiexec forwards the error line it just
# printed (without it the line was lost in one CI run in many: the abort ended the forwarding)
ABORT_GRACE_S = 0.5


class DistributedError(RuntimeError):
    """The ranks of a data-parallel run disagree (configuration, data, weights, rank count)."""


def launched_size() -> int:
    """How many ranks the launcher started (1 when not started by ``mpiexec``)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def part(items, rank: int, size: int):
    """Rank ``rank``'s contiguous part of a global batch of ``items`` (a list or an array),
    cut into ``size`` parts whose lengths differ by at most one (the first ones longer)."""
    n = len(items)
    start = rank * (n // size) + min(rank, n % size)
    stop = start + n // size + (rank < n % size)
    return items[start:stop]


def fingerprint(config: Mapping) -> str:
    """sha256 of a JSON-able configuration (keys sorted): what every rank must agree on."""
    return digest(json.dumps(config, sort_keys=True, default=str))


def digest(*parts) -> str:
    """sha256 (hex) of arrays (their dtype, shape and bytes) and strings, in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            h.update(p.encode())
        else:
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _differences(mine: Mapping, theirs: Mapping, prefix: str = "") -> list[str]:
    """The dotted keys where two nested configurations differ, with both values."""
    out = []
    for key in sorted(set(mine) | set(theirs), key=str):
        a, b = mine.get(key, "<absent>"), theirs.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({b!r} on rank 0, {a!r} here)")
    return out


class Solo:
    """One process: every collective is the identity. The Trainer's single-process path does
    not call them at all (no copies, no cost)."""

    rank, size = 0, 1

    @property
    def is_root(self) -> bool:
        return True

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPIWorld:
    """The ranks of ``MPI.COMM_WORLD`` (mpi4py, buffer-form collectives only: no pickling)."""

    def __init__(self, comm=None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise DistributedError(
                f"started by an MPI launcher with {launched_size()} processes, but mpi4py is "
                "not installed: pip install 'rnnlab[mpi]'"
            ) from err
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._buffer: GradientBuffer | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ per step
    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on one (an agreed stop)."""
        buf = np.array([float(bool(flag))])
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return bool(buf[0] > 0)

    def reduce_step(self, loss: float, items: int, grads: Mapping[str, np.ndarray],
                    rows: Mapping[str, np.ndarray], sparse: tuple[str, ...]):
        """One step's reduction over the ranks, in two Allreduce calls: first the loss, the
        item counts and which rows of each sparse gradient (an embedding's) any rank touched
        (float64, small), then one flat buffer of every gradient weighted by its rank's share
        of the items, the sparse ones as the touched rows only.
        Returns (mean loss, items, the reduced gradients, their rows)."""
        if self._buffer is None or not self._buffer.fits(grads):
            self._buffer = GradientBuffer(grads, sparse)
        buf = self._buffer
        head = buf.head(loss * items if items else 0.0, items, rows)
        self.comm.Allreduce(self.MPI.IN_PLACE, head, op=self.MPI.SUM)
        total, count = float(head[0]), int(head[1])
        n = buf.pack(grads, items / count if count else 0.0, head)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf.flat[:n], op=self.MPI.SUM)
        reduced, union = buf.unpack()
        return (total / count if count else math.nan), count, reduced, union

    # ------------------------------------------------------------------ at start and at saves
    def broadcast(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Overwrite ``arrays`` (in place) with rank 0's, through one flat buffer."""
        items = list(arrays.items())
        if not items:
            return
        for name, a in items:
            if not a.flags.c_contiguous:
                raise ValueError(f"broadcast: {name} is not contiguous")
        dtype = np.result_type(*(a.dtype for _, a in items))
        flat = np.concatenate([a.reshape(-1).astype(dtype, copy=False) for _, a in items])
        self.comm.Bcast(flat, root=0)
        at = 0
        for _, a in items:
            a.reshape(-1)[...] = flat[at:at + a.size]
            at += a.size

    def _allgather_bytes(self, data: bytes) -> list[bytes]:
        sizes = np.zeros(self.size, np.int64)
        self.comm.Allgather(np.array([len(data)], np.int64), sizes)
        out = np.empty(int(sizes.sum()), np.uint8)
        counts = sizes.tolist()
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
        self.comm.Allgatherv(np.frombuffer(data, np.uint8),
                             [out, counts, displs, self.MPI.BYTE])
        return [out[d:d + c].tobytes() for d, c in zip(displs, counts, strict=True)]

    def allgather_json(self, obj) -> list:
        """Every rank's ``obj`` (JSON-able), on every rank, in rank order."""
        return [json.loads(b) for b in self._allgather_bytes(json.dumps(obj).encode())]

    def allgather_arrays(self, arrays: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Every rank's arrays (small ones: a carried state), on every rank, in rank order."""
        header = [[k, str(a.dtype), list(a.shape)] for k, a in arrays.items()]
        headers = self.allgather_json(header)
        raw = self._allgather_bytes(b"".join(np.ascontiguousarray(a).tobytes()
                                             for a in arrays.values()))
        out = []
        for head, data in zip(headers, raw, strict=True):
            got, at = {}, 0
            for key, dtype, shape in head:
                n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                got[key] = np.frombuffer(data[at:at + n], dtype).reshape(shape).copy()
                at += n
            out.append(got)
        return out

    def check_same(self, what: str, config: Mapping) -> None:
        """Raise :class:`DistributedError` on every rank unless every rank's ``config`` is rank
        0's (each rank names the keys where its own differs)."""
        digests = self.allgather_json(fingerprint(config))
        if len(set(digests)) == 1:
            return
        others = [r for r, d in enumerate(digests) if d != digests[0]]
        root = self.allgather_json(config if self.is_root else None)[0]
        if self.is_root:
            raise DistributedError(f"rank 0: the {what} of rank(s) {others} differ from rank "
                                   "0's (each names what differs); every rank must start the "
                                   "same run on the same data")
        diff = _differences(config, root) or ["its serialisation"]
        raise DistributedError(f"rank {self.rank}: the {what} differs from rank 0's in "
                               f"{'; '.join(diff[:4])}")

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (a rank that raised must not leave the others waiting
        in a collective)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)  # the launcher forwards output asynchronously: let it pass
        self.comm.Abort(code)


class GradientBuffer:
    """The buffers of one step's reduction: a small float64 head (loss x items, items, and per
    sparse gradient a row-touched count vector with a last entry counting the ranks whose
    gradient was dense) and one flat array for every gradient: the dense ones whole at fixed
    places, then each sparse one as the rows any rank touched (the whole array when a rank's
    was dense). Only the used prefix of the flat array travels."""

    def __init__(self, grads: Mapping[str, np.ndarray], sparse: tuple[str, ...]) -> None:
        self.dtype = np.result_type(*(g.dtype for g in grads.values()))
        self.shapes = {k: g.shape for k, g in grads.items()}
        self.sparse = tuple(k for k in sparse if k in grads and grads[k].ndim == 2)
        self.flat = np.empty(sum(g.size for g in grads.values()), self.dtype)
        self.views, at = {}, 0
        for k, g in grads.items():
            if k not in self.sparse:
                self.views[k] = self.flat[at:at + g.size].reshape(g.shape)
                at += g.size
        self.dense_end = at
        self.heads, hat = {}, 2
        for k in self.sparse:
            self.heads[k] = (hat, hat + grads[k].shape[0] + 1)
            hat += grads[k].shape[0] + 1
        self.head_size = hat
        self.full = {k: np.zeros(grads[k].shape, self.dtype) for k in self.sparse}
        self.last = {k: np.empty(0, np.int64) for k in self.sparse}  # rows set in full[k]
        self.union: dict[str, np.ndarray | None] = {}
        self.segments: dict[str, tuple[int, int]] = {}
        self.used = 0  # the length of the flat buffer's prefix the last step sent

    def fits(self, grads: Mapping[str, np.ndarray]) -> bool:
        return {k: g.shape for k, g in grads.items()} == self.shapes

    def head(self, weighted_loss: float, items: int,
             rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """This rank's head: [loss x items, items, row counts..., dense flag, ...]."""
        h = np.zeros(self.head_size, np.float64)
        h[0], h[1] = weighted_loss, items
        for k, (a, b) in self.heads.items():
            if not items:  # an empty part: touched nothing
                continue
            if k in rows:
                h[a:b - 1][rows[k]] = 1.0
            else:
                h[b - 1] = 1.0
        return h

    def pack(self, grads: Mapping[str, np.ndarray], weight: float, head: np.ndarray) -> int:
        """Write ``weight`` x ``grads`` into the flat buffer given the reduced ``head``; returns
        the length of the buffer's used prefix."""
        w = self.dtype.type(weight)
        for k, view in self.views.items():
            np.multiply(grads[k], w, out=view)
        at = self.dense_end
        for k, (a, b) in self.heads.items():
            g = grads[k]
            union = None if head[b - 1] > 0 else np.flatnonzero(head[a:b - 1])
            n = g.size if union is None else union.size * g.shape[1]
            seg = self.flat[at:at + n]
            if union is None:
                np.multiply(g, w, out=seg.reshape(g.shape))
            else:
                np.multiply(g[union], w, out=seg.reshape(union.size, g.shape[1]))
            self.union[k], self.segments[k] = union, (at, at + n)
            at += n
        self.used = at
        return at

    def unpack(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The reduced gradients (views of the buffer; a sparse one in its own full-size array,
        zero outside its rows) and the rows of the sparse ones."""
        grads, rows = dict(self.views), {}
        for k in self.sparse:
            a, b = self.segments[k]
            union, full = self.union[k], self.full[k]
            if union is None:
                grads[k] = self.flat[a:b].reshape(full.shape)
                continue
            full[self.last[k]] = 0
            full[union] = self.flat[a:b].reshape(union.size, full.shape[1])
            self.last[k] = union
            grads[k], rows[k] = full, union
        return {k: grads[k] for k in self.shapes}, rows


_WORLD: Solo | MPIWorld | None = None


def world() -> Solo | MPIWorld:
    """This process's ranks: :class:`MPIWorld` under an MPI launcher with more than one rank,
    else :class:`Solo` (mpi4py is then never imported)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIWorld() if launched_size() > 1 else Solo()
    return _WORLD
