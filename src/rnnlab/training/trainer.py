"""The training engine: one loop for every task.

One step (the same for every task; the task only says how a batch becomes a loss):

    model.zero_grad(lazy=True)                  marked; backward writes the first part
    loss, items = task.step(batch)              forward, loss, backward (task's own scaling)
    grads, rows = model.grads_and_rows()        rows: the embedding rows the batch saw
    norm = clipped_step(optimizer, grads, clip, rows)   global L2 norm (logged), then the step
                                                with the clipping factor inside the update

Around it the Trainer owns, once: epochs of batches (resumable at any position), LR schedules
(a step decay per epoch, a plateau decay on the task's score), evaluation after each epoch,
early stopping, the NaN/Inf guard (nothing non-finite is ever saved; the last good checkpoint
stays), the progress bar, ``metrics.jsonl``, SIGINT/SIGTERM deferred to a step boundary, then
save and exit, checkpoints at each epoch's end, every ``save_every`` steps and every
``save_minutes`` of training (safetensors + JSON, atomic), and :meth:`Trainer.restore`, after
which the run goes on bit-identically to one that never stopped.

A run directory holds ``checkpoint/``, ``config.json`` and ``metrics.jsonl`` (plus what the task
adds, e.g. ``vocab.json``). Without a directory (``out=None``) nothing is written.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab import optim
from rnnlab.io.atomic import atomic_write_json
from rnnlab.io.checkpoint import save_checkpoint
from rnnlab.nn.backend import device_of, xp_of
from rnnlab.nn.grad_mode import no_grad
from rnnlab.nn.module import Module
from rnnlab.training import distributed
from rnnlab.training.config import LoopConfig
from rnnlab.training.progress import Progress
from rnnlab.training.records import append_record, keep_records, read_records
from rnnlab.training.signals import DeferredSignals, Interrupted, signal_number

TRAIN_KEYS = ("epoch", "step", "loss", "lr", "grad_norm")  # + "<items>_per_s"
BEST = "best/"  # the checkpoint arrays of the kept weights (Task.keep_best)
RANK_ARRAY = re.compile(r"rank[1-9][0-9]*/")  # the task arrays of data-parallel ranks 1, 2, ...


def kept_weights(weights: dict, arrays: dict, best: bool = True) -> dict:
    """The weights a trained model is used with: those of the best score when ``best`` and the
    run kept them (Task.keep_best), else the last ones."""
    kept = {k[len(BEST):]: v for k, v in arrays.items() if k.startswith(BEST)}
    return kept if best and kept else weights


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights became NaN/Inf; the last good checkpoint is
    kept."""


class Stop(Exception):
    """A signal asked an evaluation to give up (its result would not be used)."""


class Task:
    """What an application tells the Trainer; everything else is the Trainer's. Subclass it and
    give what is yours; the hooks with a body here are optional.

    ``kind`` names the checkpoint; ``items`` what a batch counts ("tokens": records get
    ``tokens_per_s``). ``epoch_batches(epoch, position)`` prepares an epoch (``position`` > 0
    on resume) and returns its number of batches, ``batch(i)`` gives the i-th. ``step`` runs
    forward, loss and backward into ``model.grads`` and returns (mean loss, items). ``evaluate``
    returns the metrics recorded after each epoch (``stop()`` asked between pieces: raise
    :class:`Stop` when it says True); ``describe`` the line logged for each epoch's record and
    the closing one. ``state_dict`` holds the task's own state for a checkpoint (its RNGs,
    carried states, what identifies its data), as (arrays, JSON), and ``load_state_dict``
    checks and restores it, popping its own arrays from the dict it is given (the rest are the
    optimizer's).
    """

    kind: str
    items: str
    model: Module
    cfg: LoopConfig
    keep_best = False  # the Trainer keeps the weights of the best score (checkpoint: best/...)

    def make_optimizer(self) -> tuple[optim.Optimizer, Any]:
        raise NotImplementedError

    def epoch_batches(self, epoch: int, position: int) -> int:
        raise NotImplementedError

    def batch(self, index: int) -> Any:
        raise NotImplementedError

    def step(self, batch: Any) -> tuple[float, int]:
        raise NotImplementedError

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        raise NotImplementedError

    def describe(self, record: dict, seconds: float) -> str:
        raise NotImplementedError

    def state_dict(self, in_epoch: bool) -> tuple[dict[str, np.ndarray], dict]:
        raise NotImplementedError

    def load_state_dict(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        raise NotImplementedError

    def run_config(self) -> dict:
        raise NotImplementedError

    # optional
    def score(self, metrics: dict) -> float | None:
        """What early stopping and the plateau schedule minimise (None: neither applies)."""
        return None

    def on_best(self) -> None:
        """Called when an evaluation gave the best score so far."""

    def done(self, metrics: dict) -> str | None:
        """A reason to stop early after these metrics (None: go on)."""
        return None

    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict | None:
        """The metrics of the closing record (None: no closing record)."""
        return None

    def postfix(self, loss: float) -> dict:
        """More fields for the progress bar."""
        return {}

    def write_files(self, out: Path) -> None:
        """Files the run directory holds beside the checkpoint (written at each save)."""

    def data_fingerprint(self) -> str:
        """What identifies the training data (a hash): data-parallel ranks must agree on it."""
        return ""

    def shard(self, rank: int, size: int) -> None:
        """Data-parallel training: from now on train on rank ``rank``'s part of every batch of
        ``size`` times the configured batch size (:func:`rnnlab.training.distributed.part`),
        the same global batches on every rank; ``batch`` may then return None (an empty part).
        """
        raise distributed.DistributedError(
            f"the {self.kind} task does not support data-parallel training (mpiexec -n {size})")


class ShardedBatches:
    """Data-parallel sharding for a task whose batches are drawn from its examples (list it
    before :class:`Task` among the bases): every rank makes the same global batches of ranks x
    ``cfg.batch_size`` examples (its shuffles seeded from the run, not the rank) and trains on
    :meth:`own_part` of each. One process is rank 0 of 1."""

    _rank, _ranks = 0, 1

    def shard(self, rank: int, size: int) -> None:
        self._rank, self._ranks = rank, size

    def global_batch_size(self) -> int:
        """The examples of one batch over all ranks."""
        return self.cfg.batch_size * self._ranks

    def own_part(self, examples):
        """This rank's part of a global batch (:func:`rnnlab.training.distributed.part`); None
        when it is empty (the batch has fewer examples than there are ranks)."""
        mine = distributed.part(examples, self._rank, self._ranks)
        return mine if len(mine) else None


def _new_interval() -> dict:
    """Sums over the steps of one metrics interval (between two records)."""
    return {"loss": 0.0, "items": 0, "norm": 0.0, "n": 0}


class Trainer:
    """Trains ``task.model`` on ``task``'s batches; see the module docstring."""

    def __init__(self, task: Task, out_dir: str | Path | None,
                 log: Callable[[str], object] = print, progress: bool = True,
                 comm: distributed.Solo | distributed.MPIWorld | None = None) -> None:
        self.task, self.model, self.cfg = task, task.model, task.cfg
        self.out = Path(out_dir) if out_dir is not None else None
        # data-parallel (mpiexec -n K): each rank its part of every batch; rank 0 logs, writes
        self.comm = comm if comm is not None else distributed.world()
        self.parallel = self.comm.size > 1
        self.writes = self.out is not None and self.comm.is_root
        if not self.comm.is_root:
            log, progress = (lambda *_: None), False
        self.log, self.progress = log, progress
        if self.parallel:
            devices = {device_of(p) for p in self.model.parameters().values()}
            if devices - {"cpu"}:
                raise distributed.DistributedError(
                    "data-parallel training (mpiexec) runs on the CPU only for now: the model "
                    f"is on {', '.join(sorted(devices))}; use --device cpu, or one process")
            task.shard(self.comm.rank, self.comm.size)
            self._seed_rank()
            self._sparse = self.model.sparse_grad_names()
        self.optimizer, self.schedule = task.make_optimizer()
        self.epoch, self.position, self.step = 1, 0, 0
        self.best_score = math.inf
        self.best_weights: dict[str, np.ndarray] | None = None  # with task.keep_best
        self.bad_evals = 0
        self.finished = False
        self.stop_reason = ""
        self.last_record: dict = {}
        self.history: list[dict] = []  # every record of the run (the kept ones after a resume)
        self.sums = _new_interval()  # the steps since the last metrics record
        self.signals = DeferredSignals()
        self._in_epoch = False  # an epoch's batches are prepared and not all taken
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------ one step
    def train_step(self, batch) -> tuple[float, float]:
        """One optimizer step on ``batch``: returns (loss, gradient norm before clipping)."""
        model = self.model
        model.zero_grad(lazy=True)  # marks them; backward writes its first part
        try:
            # None: data-parallel, and this rank's part of the batch is empty
            loss, items = self.task.step(batch) if batch is not None else (0.0, 0)
        except ValueError:  # the layers refuse non-finite inputs: were the weights the cause?
            self._check_weights()
            raise
        if self.parallel:
            return self._parallel_step(loss, items)
        if not math.isfinite(loss):
            self._diverged(f"loss {loss}")
        grads, rows = model.grads_and_rows()  # rows: the embedding's, the ids it saw
        norm = self._update(grads, rows)
        if not math.isfinite(norm):
            self._diverged(f"gradient norm {norm}")
        self.sums["items"] += items
        return loss, norm

    def _parallel_step(self, loss: float, items: int) -> tuple[float, float]:
        """The step of every rank at once: the gradients averaged over the ranks, each rank's
        weighted by its share of the items (see :mod:`rnnlab.training.distributed`)."""
        grads, rows = self.model.grads_and_rows()
        loss, count, grads, rows = self.comm.reduce_step(loss, items, grads, rows, self._sparse)
        if count == 0:
            raise distributed.DistributedError(f"step {self.step + 1}: no rank had any "
                                               "example in its part of the batch")
        if not math.isfinite(loss):
            self._diverged(f"loss {loss}")
        norm = self._update(grads, rows)
        if not math.isfinite(norm):
            self._diverged(f"gradient norm {norm}")
        self.sums["items"] += int(count)
        return loss, norm

    def _update(self, grads: dict, rows: dict) -> float:
        """Clip and step; during warm-up at (s + 1) / W of the scheduled learning rate."""
        warmup = getattr(self.cfg, "warmup_steps", 0)
        if not warmup or self.step >= warmup:
            return optim.clipped_step(self.optimizer, grads, self.cfg.clip, rows)
        lr = self.optimizer.lr
        self.optimizer.lr = lr * (self.step + 1) / warmup
        try:
            return optim.clipped_step(self.optimizer, grads, self.cfg.clip, rows)
        finally:
            self.optimizer.lr = lr  # the schedule's, as saved

    def _seed_rank(self) -> None:
        """Each rank's own generator (dropout masks), seeded from the run's seed and its rank;
        rank 0 keeps the one a single process would have."""
        states = self.model.rng_states()
        if self.comm.rank == 0 or not states:
            return
        seed = getattr(self.cfg, "seed", 0)
        self.model.set_rng_states({k: np.random.default_rng([seed, self.comm.rank, i])
                                   .bit_generator.state for i, k in enumerate(states)})

    def _start_parallel(self) -> None:
        """Every rank the same run (configuration, data, position, rank count), then rank 0's
        weights and optimizer state on every rank."""
        self.comm.check_same("configuration or data", {
            "run": self.task.run_config(), "data": self.task.data_fingerprint(),
            "ranks": self.comm.size,
            "at": [self.epoch, self.position, self.step]})
        self.comm.broadcast(self.model.parameters())
        self.comm.broadcast(self.optimizer.buffers())

    def _diverged(self, what: str, where: str | None = None):
        if self.out is None:
            kept = "nothing is saved without a run directory"
        elif (self.out / "checkpoint").exists():
            kept = f"the last good checkpoint in {self.out / 'checkpoint'} is kept"
        else:
            kept = "no checkpoint had been written yet"
        where = where or f"at epoch {self.epoch}, step {self.step + 1}"
        raise TrainingDiverged(
            f"training diverged {where} ({what}); {kept} (try a lower --lr or --clip)"
        )

    def _check_weights(self) -> None:
        """Diverged if a weight is NaN/Inf (a step can overflow them while the loss and the
        gradient norm it saw were finite). One pass over the weights: run before every save
        and evaluation, not every step."""
        bad = [k for k, p in self.model.parameters().items() if not xp_of(p).isfinite(p).all()]
        if bad:
            self._diverged(f"non-finite weights in {', '.join(bad[:3])}",
                           f"by step {self.step} (epoch {self.epoch})")

    def _stop_requested(self) -> bool:
        """A signal asked to stop; with several ranks, one rank's signal stops them all, at the
        same point (every rank asks the same number of times: evaluations are the same)."""
        if self.parallel:
            return self.comm.any(self.signals.pending)
        return self.signals.pending

    def _raise_if_stopping(self) -> None:
        if self._stop_requested():
            raise Interrupted(signal_number(self.signals.signum))

    def _guarded(self, evaluation: Callable[[Callable[[], bool]], Any]):
        """An evaluation that a signal abandons (the loop then stops, its state unchanged);
        training mode comes back on any exit. It runs under ``no_grad``: its forwards keep
        nothing for a backward."""
        was_training = self.model.training
        try:
            with no_grad():
                return evaluation(self._stop_requested)
        except Stop:
            raise Interrupted(self.signals.signum) from None
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``epochs`` (or ``max_steps``, or an early stop); returns the last
        metrics record (the closing one when the task has one)."""
        cfg = self.cfg
        if self.parallel:
            self._start_parallel()
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            metrics = self.out / "metrics.jsonl"
            if self.step == 0 and metrics.exists():  # left by a run that saved no checkpoint
                self.log(f"{metrics}: replacing the records of an earlier run that saved no "
                         "checkpoint")
                metrics.unlink()
            atomic_write_json(self.out / "config.json", self.task.run_config())
        record: dict = {}
        self._last_save = time.monotonic()
        try:
            with self.signals.active():
                while self.epoch <= cfg.epochs and not self.finished:
                    if isinstance(self.schedule, optim.StepDecay):
                        self.schedule.set_epoch(self.epoch)
                    record = self._run_epoch() or record
                self._raise_if_stopping()  # it came in the last epoch's bookkeeping
                record = self._final_record(record)
        except Interrupted as err:
            if err.at_once:  # wherever it landed: the checkpoint on disk stays as it was
                self.log(f"stopped at once: not saved; {self._where()} holds the last saved "
                         "state")
                raise
            self.save()
            if self.writes:
                self.log(f"interrupted: checkpoint saved in {self.out / 'checkpoint'} "
                         f"(epoch {self.epoch}, step {self.step}); continue with --resume")
            raise
        except KeyboardInterrupt:  # not from a signal fit saw (raised by code it called)
            self.log(f"interrupted: not saved (the state may be half a step); {self._where()} "
                     "holds the last saved state")
            raise
        return record

    def _restore_ranks(self, state: dict, arrays: dict) -> dict:
        """Refuse a checkpoint of another rank count; take the ``rank<r>/`` arrays out of
        ``arrays`` and return this rank's under the task's own names (rank 0's are those)."""
        saved = (state.get("ranks") or {}).get("size", 1)
        if saved != self.comm.size:
            how = "one process" if saved == 1 else f"mpiexec -n {saved}"
            raise distributed.DistributedError(
                f"{state.get('source_checkpoint', 'the checkpoint')}: this run trained with "
                f"{saved} rank(s) and is resumed with {self.comm.size}: the data shards, "
                f"carried states and generators are per rank; resume it with {how}")
        mine = {}
        for key in [k for k in arrays if RANK_ARRAY.match(k)]:
            head, _, rest = key.partition("/")
            value = arrays.pop(key)
            if head == f"rank{self.comm.rank}":
                mine[rest] = value
        return mine

    def _where(self) -> str:
        return str(self.out / "checkpoint") if self.out is not None else "nothing"

    def _run_epoch(self) -> dict:
        cfg, task = self.cfg, self.task
        n = task.epoch_batches(self.epoch, self.position)
        self._in_epoch = True
        bar = Progress(total=n, desc=f"epoch {self.epoch}/{cfg.epochs}", enabled=self.progress,
                       initial=self.position)
        sums = self.sums  # a resumed run goes on with the interval it was in
        tick = epoch_tick = time.perf_counter()
        with bar:
            while self.position < n:
                self._raise_if_stopping()
                if cfg.max_steps and self.step >= cfg.max_steps:  # resumed at or past the limit
                    self.finished, self.stop_reason = True, "max_steps"
                    break
                loss, norm = self.train_step(task.batch(self.position))
                self.position += 1
                self.step += 1
                sums["loss"] += loss
                sums["norm"] += norm
                sums["n"] += 1
                elapsed = time.perf_counter() - tick
                bar.update(loss=f"{loss:.4f}", **task.postfix(loss),
                           **{f"{task.items}/s": f"{sums['items'] / max(elapsed, 1e-9):.0f}"},
                           gnorm=f"{norm:.2f}")
                if cfg.log_every and self.step % cfg.log_every == 0:
                    self._write(self._record(sums, elapsed))
                    self.sums = sums = _new_interval()
                    tick = time.perf_counter()
                if cfg.max_steps and self.step >= cfg.max_steps:
                    self.finished, self.stop_reason = True, "max_steps"
                    break
                if self._periodic_save_due():
                    self.save()
        record = self._record(sums, time.perf_counter() - tick) if sums["n"] else {}
        if self.finished:
            self.save()  # with the open interval, for --resume
            return record
        return self._end_of_epoch(record, time.perf_counter() - epoch_tick)

    def _periodic_save_due(self) -> bool:
        cfg = self.cfg
        if self.out is None:
            return False
        if cfg.save_every and self.step % cfg.save_every == 0:
            return True
        return bool(cfg.save_minutes) and (time.monotonic() - self._last_save
                                           >= 60.0 * cfg.save_minutes)

    def _record(self, sums: dict, elapsed: float) -> dict:
        n = max(sums["n"], 1)
        return {"epoch": self.epoch, "step": self.step, "loss": sums["loss"] / n,
                "lr": self.optimizer.lr, "grad_norm": sums["norm"] / n,
                f"{self.task.items}_per_s": sums["items"] / max(elapsed, 1e-9)}

    def _end_of_epoch(self, record: dict, seconds: float) -> dict:
        cfg = self.cfg
        self._check_weights()
        metrics = self._guarded(self.task.evaluate)  # a signal here stops before any change
        self.sums = _new_interval()  # the epoch's last interval ends with it
        record = {**(record or self._last_train_record()), **metrics}
        self._write(record)
        self.log(self.task.describe(record, seconds))
        score = self.task.score(metrics)
        if score is not None:
            if score < self.best_score:
                self.best_score, self.bad_evals = score, 0
                if self.task.keep_best:
                    self.best_weights = {k: v.copy() for k, v in self.model.state_dict().items()}
                self.task.on_best()
            else:
                self.bad_evals += 1
            if isinstance(self.schedule, optim.ReduceOnPlateau):
                self.schedule.step(score)
            if cfg.patience and self.bad_evals >= cfg.patience:
                self.log(f"early stop: no improvement for {self.bad_evals} evaluations")
                self.finished, self.stop_reason = True, "early_stop"
        reason = self.task.done(metrics)
        if reason and not self.finished:
            self.finished, self.stop_reason = True, reason
        self.epoch += 1
        self.position = 0
        self._in_epoch = False
        self.save()
        return record

    def _final_record(self, record: dict) -> dict:
        if not (self.finished or self.epoch > self.cfg.epochs):
            return record
        if self.best_weights is not None:  # the closing evaluation is the kept model's
            self.model.load_state_dict(self.best_weights)
        metrics = self._guarded(lambda stop: self.task.final(self.last_record, self.step, stop))
        if metrics is None:
            return record
        last = record or self._last_train_record()
        final = {**{k: last.get(k) for k in self._train_keys()}, **metrics, "final": True}
        self._write(final)
        self.log(self.task.describe(final, 0.0))
        return final

    def _train_keys(self) -> tuple[str, ...]:
        return (*TRAIN_KEYS, f"{self.task.items}_per_s")

    def _last_train_record(self) -> dict:
        """The most recent training figures (when an epoch ended right after a record)."""
        last = {"epoch": min(self.epoch, self.cfg.epochs), "step": self.step,
                "lr": self.optimizer.lr}
        return {**{k: self.last_record.get(k) for k in self._train_keys()}, **last}

    def _write(self, record: dict) -> None:
        self.last_record = record
        self.history.append(record)
        if self.writes:
            append_record(self.out / "metrics.jsonl", record)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write ``checkpoint/`` atomically (a failed write leaves the previous one intact).
        Weights that are no longer finite are never written: that raises TrainingDiverged."""
        if self.out is None:
            return
        self._check_weights()
        task_arrays, task_state = self.task.state_dict(self._in_epoch)
        ranks = self._gather_ranks(task_arrays) if self.parallel else {}
        if not self.writes:
            return
        arrays, meta = self.optimizer.state_dict()
        state = {
            "kind": self.task.kind,
            **task_state,
            "train_config": asdict(self.cfg),
            "optimizer": meta,
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "epoch": self.epoch, "position": self.position, "step": self.step,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "bad_evals": self.bad_evals, "finished": self.finished,
            "stop_reason": self.stop_reason, "last_record": self.last_record,
            "interval": {k: self.sums[k] for k in ("loss", "norm", "n")},
            "records": len(self.history),
            **ranks.pop("state", {}),
        }
        best = {f"{BEST}{k}": v for k, v in (self.best_weights or {}).items()}
        save_checkpoint(self.out / "checkpoint", self.model.state_dict(), state,
                        {**arrays, **task_arrays, **best, **ranks})
        self.task.write_files(self.out)
        self._last_save = time.monotonic()

    def _gather_ranks(self, task_arrays: dict) -> dict:
        """What differs between ranks, for rank 0's checkpoint: each rank's generator states
        and the task arrays of ranks 1.. (a language model's carried state; rank 0's are the
        task's own), as ``state["ranks"]`` and arrays ``rank<r>/<key>``; and a check that every
        rank's weights are still rank 0's."""
        weights = distributed.digest(*self.model.parameters().values())
        states = self.comm.allgather_json({"rng": self.model.rng_states(), "weights": weights})
        if len({s["weights"] for s in states}) != 1:
            raise distributed.DistributedError(
                f"by step {self.step} the ranks' weights differ (the reduction gave the ranks "
                "different sums); nothing was saved")
        per_rank = self.comm.allgather_arrays(task_arrays)
        out = {f"rank{r}/{k}": v for r, got in enumerate(per_rank) if r > 0
               for k, v in got.items()}
        return {"state": {"ranks": {"size": self.comm.size,
                                    "rng": [s["rng"] for s in states]}}, **out}

    def restore(self, state: dict, weights: dict, arrays: dict) -> None:
        """Continue exactly where a saved run stopped (the task checks that its data is the
        run's). ``metrics.jsonl`` loses the records written after the checkpoint (a crash
        between the two), so it then reads as if the run had never stopped."""
        arrays = dict(arrays)
        mine = self._restore_ranks(state, arrays)  # this rank's own task arrays
        best = {k[len(BEST):]: arrays.pop(k) for k in list(arrays) if k.startswith(BEST)}
        self.best_weights = best or None
        merged = {**arrays, **mine}
        self.task.load_state_dict(merged, state)  # takes its own arrays out of the dict
        for key in [k for k in arrays if k not in merged]:
            del arrays[key]
        if self.parallel:
            self.model.set_rng_states(state["ranks"]["rng"][self.comm.rank])
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(arrays, state["optimizer"])
        if self.schedule and state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.position, self.step = state["epoch"], state["position"], state["step"]
        best = state.get("best_score")
        self.best_score = math.inf if best is None else best
        self.bad_evals = state.get("bad_evals", 0)
        self.stop_reason = state.get("stop_reason", "")
        # a run stopped by --max-steps goes on when resumed; one that stopped early does not
        self.finished = bool(state.get("finished")) and self.stop_reason != "max_steps"
        self.last_record = state.get("last_record") or {}
        # the open metrics interval (its throughput restarts: items count from here)
        self.sums = {**_new_interval(), **state.get("interval", {})}
        if self.out is None:
            return
        n = state.get("records")
        if not self.writes:  # rank 0 keeps the file; the others only count its records
            records = read_records(self.out / "metrics.jsonl", lambda *_: None)
            self.history = [r for _, r in records[:n if n is not None else len(records)]]
            return
        if n is not None:
            keep = lambda i, r: i < n  # noqa: E731
        else:  # written before checkpoints counted their records
            keep = lambda i, r: (r.get("step", 0) <= self.step and not r.get("final")  # noqa: E731
                                 if "step" in r else r.get("epoch", 0) < self.epoch)
        self.history = keep_records(self.out / "metrics.jsonl", keep, self.log)
