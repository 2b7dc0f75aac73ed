"""Training a language model: truncated BPTT over parallel streams, evaluation, checkpoints.

The loop (one window of T steps over B streams):

    model.zero_grad(lazy=True)                  marked; backward writes the first part
    nll, _, state = model.forward_loss(x, y, state)   state carried in, gradient truncated
    loss = nll / B                              summed over T, averaged over B (Zaremba et al.)
    model.backward_loss()                       dL/dlogits = (softmax - onehot) / B
    grads, rows = model.grads_and_rows()        rows: the embedding rows the window saw
    norm = clipped_step(optimizer, grads, clip, rows)   global L2 norm (logged), then the step
                                                with the clipping factor inside the update

Perplexity is exp(mean NLL per token) over every target token of a split. A run directory holds
``checkpoint/`` (weights and optimizer state in safetensors, the rest in JSON), ``config.json``,
``vocab.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from rnnlab import optim
from rnnlab.data.text import Corpus, Vocabulary, batchify, bptt_windows
from rnnlab.io.atomic import atomic_write_json, atomic_write_text
from rnnlab.io.checkpoint import CheckpointError, load_checkpoint, run_checkpoint, save_checkpoint
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.training.progress import Progress
from rnnlab.validate import check_non_negative_int, check_number, check_positive_int

TRAIN_KEYS = ("epoch", "step", "loss", "lr", "grad_norm", "tokens_per_s")
RUN_KEYS = ("model_config", "train_config", "vocab", "data", "optimizer", "rng", "epoch",
            "window", "step")  # what a language-model checkpoint's JSON must hold


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights became NaN/Inf; the last good checkpoint is
    kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped :meth:`Trainer.fit`. ``signum`` says which signal;
    ``at_once`` is True for a second signal, which stops wherever the loop is and saves nothing
    (the checkpoint on disk stays as it was)."""

    def __init__(self, signum: int, at_once: bool = False) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.at_once = signum, at_once


class _Stop(Exception):
    """A signal asked :func:`evaluate` to give up (its result would not be used)."""


def append_record(path: Path, record: dict) -> None:
    """Add one JSON line to a metrics file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def keep_records(path: Path, keep: Callable[[dict], bool],
                 log: Callable[[str], object] = print) -> None:
    """Rewrite a metrics file (atomically) with only the records ``keep`` accepts: a resumed
    run drops what was written after its checkpoint (a crash between the two). A last line
    torn by a crash while it was appended is dropped too; a damaged line elsewhere is an error
    that names the file and line."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            records.append((ln, json.loads(ln)))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                log(f"{path}: dropped an incomplete last line")
                continue
            raise ValueError(f"{path}, line {i + 1}: not a JSON record ({err})") from None
    kept = [ln for ln, r in records if keep(r)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def _new_interval() -> dict:
    """Sums over the steps of one metrics interval (between two records)."""
    return {"loss": 0.0, "tokens": 0, "norm": 0.0, "n": 0}


def perplexity(loss: float) -> float:
    """exp(mean NLL per token); inf (not an OverflowError) for a loss above ~709 nats."""
    return math.exp(loss) if loss < 709.0 else math.inf


@dataclass
class TrainConfig:
    """How to train (saved with every checkpoint)."""

    epochs: int = 3
    batch_size: int = 32
    bptt: int = 64
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 3e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 1.0  # max global gradient L2 norm; 0 disables clipping
    loss: str = "mean"  # "mean" over tokens, or "sum_time" (sum over T, mean over B)
    lr_schedule: str = "none"  # none | step | plateau
    lr_decay_start: int = 4  # step: epochs at the initial lr
    lr_decay: float = 0.5  # step: factor per epoch after the start; plateau: factor
    patience: int = 0  # early stopping after this many evaluations without improvement (0: off)
    eval_batch_size: int = 10
    seed: int = 0
    log_every: int = 50  # optimizer steps between metric records
    max_steps: int = 0  # stop after this many steps in total (0: no limit)

    def __post_init__(self) -> None:
        choices = {"optimizer": ("sgd", "adam", "adamw"), "loss": ("mean", "sum_time"),
                   "lr_schedule": ("none", "step", "plateau")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "bptt", "eval_batch_size", "log_every"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        for name in ("lr_decay_start", "patience", "max_steps", "seed"):
            setattr(self, name, check_non_negative_int(name, getattr(self, name)))
        for name in ("lr", "lr_decay"):  # factors: finite and > 0
            if check_number(name, getattr(self, name)) == 0:
                raise ValueError(f"{name}: expected a finite number > 0, got 0")
        check_number("clip", self.clip)
        check_number("weight_decay", self.weight_decay)
        check_number("momentum", self.momentum, high=1.0, high_open=True)


def dataclass_from_dict(cls, values: dict):
    """Build a config dataclass, rejecting unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(known)}"
        )
    return cls(**values)


def make_optimizer(params: dict, cfg: TrainConfig) -> optim.Optimizer:
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = optim.Adam if cfg.optimizer == "adam" else optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def evaluate(model: LanguageModel, ids: np.ndarray, batch_size: int, bptt: int,
             stop: Callable[[], bool] | None = None) -> float:
    """Mean NLL per token over every target of ``ids`` (perplexity = exp of it).

    The stream is cut into ``batch_size`` contiguous pieces; the shorter ones are padded at their
    end and the padding is masked out, so no token is dropped and none counted twice. ``stop``
    is asked between windows; when it says True the evaluation is abandoned (the Trainer's
    Ctrl-C does not wait for a long validation).
    """
    n = len(ids) - 1  # targets
    if n < 1:
        raise ValueError(f"evaluate: expected at least 2 tokens (an input and its target), "
                         f"got {len(ids)}")
    was_training = model.training
    B = max(1, min(batch_size, n))
    per = -(-n // B)  # ceil
    starts = np.arange(B) * per
    x_all = np.zeros((per, B), np.int64)
    y_all = np.zeros((per, B), np.int64)
    valid = np.zeros((per, B), bool)
    for b, s in enumerate(starts):
        m = max(0, min(per, n - s))
        x_all[:m, b], y_all[:m, b], valid[:m, b] = ids[s:s + m], ids[s + 1:s + m + 1], True
    state, total = model.initial_state(B), 0.0
    model.eval()
    try:
        for i in range(0, per, bptt):
            if stop is not None and stop():
                raise _Stop
            nll, _, state = model.forward_loss(x_all[i:i + bptt], y_all[i:i + bptt], state,
                                               scale=None, mask=valid[i:i + bptt])
            total += nll
    finally:
        model.train(was_training)
    return total / n


class Trainer:
    """Runs epochs of truncated BPTT with evaluation, metrics, checkpoints and resumption."""

    def __init__(self, model: LanguageModel, corpus: Corpus, cfg: TrainConfig, out_dir: Path,
                 log: Callable[[str], None] = print, progress: bool = True) -> None:
        self.model, self.corpus, self.cfg = model, corpus, cfg
        self.out = Path(out_dir)
        self.log = log
        self.progress = progress
        self.train_data = batchify(corpus.train, cfg.batch_size)
        self.train_sha256 = train_fingerprint(corpus)  # saved with every checkpoint
        self.optimizer = make_optimizer(model.parameters(), cfg)
        self.schedule = None
        if cfg.lr_schedule == "step":
            self.schedule = optim.StepDecay(self.optimizer, cfg.lr_decay_start, cfg.lr_decay)
        elif cfg.lr_schedule == "plateau":
            self.schedule = optim.ReduceOnPlateau(self.optimizer, factor=cfg.lr_decay)
        self.epoch, self.window, self.step = 1, 0, 0
        self.state = model.initial_state(cfg.batch_size)
        self.best_valid = math.inf
        self.bad_evals = 0
        self.finished = False
        self.stop_reason = ""
        self.last_record: dict = {}
        self.sums = _new_interval()  # the steps since the last metrics record
        self._signal: int | None = None  # SIGINT/SIGTERM seen during fit, acted on between steps

    # ------------------------------------------------------------------ one step
    def train_step(self, x: np.ndarray, y: np.ndarray):
        model, cfg = self.model, self.cfg
        T, B = x.shape
        model.zero_grad(lazy=True)  # marks them; backward writes its first part
        scale = 1.0 / B if cfg.loss == "sum_time" else 1.0 / (T * B)
        try:
            nll, _, state = model.forward_loss(x, y, self.state, scale=scale)
        except ValueError:  # the layers refuse non-finite inputs: were the weights the cause?
            self._check_weights()
            raise
        loss = nll / (T * B)
        if not math.isfinite(loss):
            self._diverged(f"loss {loss}")
        model.backward_loss()
        grads, rows = model.grads_and_rows()  # rows: the embedding's, the ids it saw
        norm = optim.clipped_step(self.optimizer, grads, cfg.clip, rows)
        if not math.isfinite(norm):
            self._diverged(f"gradient norm {norm}")
        self.state = state
        return loss, norm

    def _diverged(self, what: str, where: str | None = None):
        ckpt = self.out / "checkpoint"
        kept = (f"the last good checkpoint in {ckpt} is kept" if ckpt.exists()
                else "no checkpoint had been written yet")
        where = where or f"at epoch {self.epoch}, step {self.step + 1}"
        raise TrainingDiverged(
            f"training diverged {where} ({what}); {kept} (try a lower --lr or --clip)"
        )

    def _check_weights(self) -> None:
        """Diverged if a weight is NaN/Inf (a step can overflow them while the loss and the
        gradient norm it saw were finite). One pass over the weights: run before every save
        and evaluation, not every step."""
        bad = [k for k, p in self.model.parameters().items() if not np.isfinite(p).all()]
        if bad:
            self._diverged(f"non-finite weights in {', '.join(bad[:3])}",
                           f"by step {self.step} (epoch {self.epoch})")

    @contextlib.contextmanager
    def _signals_deferred(self):
        """While fit runs (in the main thread), SIGINT and SIGTERM only set a flag, and the loop
        stops where its state is whole: before a step, or instead of an evaluation (which it
        gives up). So the checkpoint never holds half a step (weights updated, counters not;
        a dropout generator advanced), a metrics record twice, or half an epoch's bookkeeping.
        A second signal stops at once and saves nothing. A signal the process ignores (a
        background job's SIGINT), or one handled from C, is left alone."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):  # no print here: it could re-enter a write in progress
            if self._signal is not None:
                raise Interrupted(signum, at_once=True)
            self._signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is not None and old is not signal.SIG_IGN:
                previous[sig] = old
                signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop_requested(self) -> bool:
        return self._signal is not None

    def _evaluate(self, ids: np.ndarray) -> float:
        """Evaluation that a signal abandons (then the loop stops, with the state unchanged)."""
        try:
            return evaluate(self.model, ids, self.cfg.eval_batch_size, self.cfg.bptt,
                            stop=self._stop_requested)
        except _Stop:
            raise Interrupted(self._signal) from None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``epochs`` (or ``max_steps``); returns the final metrics record."""
        cfg = self.cfg
        self._signal = None
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = self.out / "metrics.jsonl"
        if self.step == 0 and metrics.exists():  # left by a run that saved no checkpoint
            self.log(f"{metrics}: replacing the records of an earlier run that saved no "
                     "checkpoint")
            metrics.unlink()
        windows = list(bptt_windows(self.train_data, cfg.bptt))
        record: dict = {}
        try:
            with self._signals_deferred():
                while self.epoch <= cfg.epochs and not self.finished:
                    if isinstance(self.schedule, optim.StepDecay):
                        self.schedule.set_epoch(self.epoch)
                    record = self._run_epoch(windows)
                    if self.finished:
                        break
                if self._signal is not None:  # it came during the last epoch's bookkeeping
                    raise Interrupted(self._signal)
                if self.finished or self.epoch > cfg.epochs:
                    record = self._final_record(record)
        except Interrupted as err:
            if err.at_once:  # wherever it landed: the checkpoint on disk stays as it was
                self.log(f"stopped at once: not saved; {self.out / 'checkpoint'} holds the last "
                         "saved state")
                raise
            self.save()
            self.log(f"interrupted: checkpoint saved in {self.out / 'checkpoint'} "
                     f"(epoch {self.epoch}, step {self.step}); continue with --resume")
            raise
        except KeyboardInterrupt:  # not from a signal fit saw (raised by code it called)
            self.log(f"interrupted: not saved (the state may be half a step); "
                     f"{self.out / 'checkpoint'} holds the last saved state")
            raise
        return record

    def _run_epoch(self, windows) -> dict:
        cfg = self.cfg
        bar = Progress(total=len(windows), desc=f"epoch {self.epoch}/{cfg.epochs}",
                       enabled=self.progress, initial=self.window)
        sums = self.sums  # a resumed run goes on with the interval it was in
        tick = time.perf_counter()
        with bar:
            while self.window < len(windows):
                if self._signal is not None:
                    raise Interrupted(self._signal)
                if cfg.max_steps and self.step >= cfg.max_steps:  # resumed at or past the limit
                    self.finished, self.stop_reason = True, "max_steps"
                    break
                x, y = windows[self.window]
                loss, norm = self.train_step(x, y)
                self.window += 1
                self.step += 1
                sums["loss"] += loss
                sums["tokens"] += x.size
                sums["norm"] += norm
                sums["n"] += 1
                elapsed = time.perf_counter() - tick
                bar.update(loss=f"{loss:.3f}", ppl=f"{math.exp(min(loss, 50)):.1f}",
                           tok_s=f"{sums['tokens'] / max(elapsed, 1e-9):.0f}", gnorm=f"{norm:.2f}")
                if self.step % cfg.log_every == 0:
                    self._write_metrics(self._record(sums, elapsed))
                    self.sums = sums = _new_interval()
                    tick = time.perf_counter()
                if cfg.max_steps and self.step >= cfg.max_steps:
                    self.finished, self.stop_reason = True, "max_steps"
                    break
        record = self._record(sums, time.perf_counter() - tick) if sums["n"] else {}
        if not self.finished:
            record = self._end_of_epoch(record)
        else:
            self.save()  # with the open interval, for --resume
        return record

    def _record(self, sums, elapsed) -> dict:
        n = max(sums["n"], 1)
        return {"epoch": self.epoch, "step": self.step, "loss": sums["loss"] / n,
                "lr": self.optimizer.lr, "grad_norm": sums["norm"] / n,
                "tokens_per_s": sums["tokens"] / max(elapsed, 1e-9)}

    def _end_of_epoch(self, record: dict) -> dict:
        cfg = self.cfg
        self._check_weights()
        valid = self._evaluate(self.corpus.valid)  # a signal here stops before any change
        self.sums = _new_interval()  # the epoch's last interval ends with it
        record = {**(record or self._last_train_record()),
                  "valid_loss": valid, "valid_ppl": perplexity(valid)}
        self._write_metrics(record)
        self.log(f"epoch {self.epoch}: train loss {record['loss']:.4f}, valid loss {valid:.4f} "
                 f"(ppl {perplexity(valid):.2f}), lr {self.optimizer.lr:g}")
        if valid < self.best_valid:
            self.best_valid, self.bad_evals = valid, 0
        else:
            self.bad_evals += 1
        if isinstance(self.schedule, optim.ReduceOnPlateau):
            self.schedule.step(valid)
        if cfg.patience and self.bad_evals >= cfg.patience:
            self.log(f"early stop: no improvement for {self.bad_evals} evaluations")
            self.finished, self.stop_reason = True, "early_stop"
        self.epoch += 1
        self.window = 0
        self.state = self.model.initial_state(cfg.batch_size)
        self.save()
        return record

    def _final_record(self, record: dict) -> dict:
        done = self.last_record
        if "valid_loss" in done and done.get("step") == self.step:  # the weights it measured
            valid = done["valid_loss"]
        else:
            valid = self._evaluate(self.corpus.valid)
        test = self._evaluate(self.corpus.test)
        last = record or self._last_train_record()
        final = {**{k: last[k] for k in TRAIN_KEYS},
                 "valid_loss": valid, "valid_ppl": perplexity(valid),
                 "test_loss": test, "test_ppl": perplexity(test), "final": True}
        self._write_metrics(final)
        self.log(f"final: valid ppl {perplexity(valid):.2f}, test ppl {perplexity(test):.2f} "
                 f"(valid loss {valid:.4f}, test loss {test:.4f} nats/token)")
        return final

    def _last_train_record(self) -> dict:
        """The most recent training figures (when an epoch ended right after a record)."""
        last = {"epoch": min(self.epoch, self.cfg.epochs), "step": self.step,
                "lr": self.optimizer.lr}
        return {**{k: self.last_record.get(k) for k in TRAIN_KEYS}, **last}

    def _write_metrics(self, record: dict) -> None:
        self.last_record = record
        append_record(self.out / "metrics.jsonl", record)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write ``checkpoint/`` atomically (a failed write leaves the previous one intact).
        Weights that are no longer finite are never written: that raises TrainingDiverged."""
        self._check_weights()
        carry = self.state if isinstance(self.state, tuple) else (self.state,)
        arrays, meta = self.optimizer.state_dict()
        arrays = {**arrays, **{f"carry/{i}": s for i, s in enumerate(carry)}}
        state = {
            "kind": "language_model",
            "model_config": self.model.config.to_dict(),
            "train_config": asdict(self.cfg),
            "vocab": self.corpus.vocab.to_dict(),
            "data": {"source": _absolute(self.corpus.source), "level": self.corpus.level,
                     "train_sha256": self.train_sha256},
            "optimizer": meta,
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "rng": self.model.rng_states(),
            "epoch": self.epoch, "window": self.window, "step": self.step,
            "best_valid": self.best_valid if math.isfinite(self.best_valid) else None,
            "bad_evals": self.bad_evals, "finished": self.finished,
            "stop_reason": self.stop_reason, "last_record": self.last_record,
            "interval": {k: self.sums[k] for k in ("loss", "norm", "n")},
        }
        save_checkpoint(self.out / "checkpoint", self.model.state_dict(), state, arrays)
        atomic_write_json(self.out / "config.json", {"model": state["model_config"],
                                                    "train": state["train_config"],
                                                    "data": state["data"]})
        self.corpus.vocab.save(self.out / "vocab.json")

    def restore(self, state: dict, weights: dict, arrays: dict) -> None:
        """Continue exactly where a saved run stopped. The corpus must be the run's: the same
        vocabulary and, when the checkpoint recorded it, the same training ids (an edited text
        with the same vocabulary would silently shift every window)."""
        data = state.get("data", {})
        if Vocabulary.from_dict(state["vocab"]).fingerprint() != self.corpus.vocab.fingerprint():
            raise ValueError(f"{self.out}: the data's vocabulary does not match the checkpoint's")
        if data.get("train_sha256") not in (None, self.train_sha256):
            raise ValueError(f"{self.out}: the training text in {self.corpus.source} is not the "
                             "one this run started with (same vocabulary, other tokens): "
                             "resuming would train on other windows")
        self.model.load_state_dict(weights)
        carry = [arrays.pop(k) for k in sorted(k for k in list(arrays) if k.startswith("carry/"))]
        self.optimizer.load_state_dict(arrays, state["optimizer"])
        if self.schedule and state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"])
        self.model.set_rng_states(state["rng"])
        self.epoch, self.window, self.step = state["epoch"], state["window"], state["step"]
        best = state.get("best_valid")
        self.best_valid = math.inf if best is None else best
        self.bad_evals = state.get("bad_evals", 0)
        self.stop_reason = state.get("stop_reason", "")
        # a run stopped by --max-steps goes on when resumed; one that stopped early does not
        self.finished = bool(state.get("finished")) and self.stop_reason != "max_steps"
        self.last_record = state.get("last_record") or {}
        # the open metrics interval (its throughput restarts: tokens count from here)
        self.sums = {**_new_interval(), **state.get("interval", {})}
        self.state = tuple(carry) if len(carry) == 2 else carry[0]
        # records written after the checkpoint (a crash between the two) go: the metrics then
        # read as if the run had never stopped
        keep_records(self.out / "metrics.jsonl",
                     lambda r: r.get("step", 0) <= self.step and not r.get("final"), self.log)



def train_fingerprint(corpus: Corpus) -> str:
    """sha256 (hex) of the training split's token ids: a resumed run must see the same stream
    (an edited text with the same vocabulary would silently shift every window)."""
    return hashlib.sha256(np.ascontiguousarray(corpus.train, np.int64).tobytes()).hexdigest()


def _absolute(source: str) -> str:
    """The data's location as saved in a checkpoint: absolute, so that ``eval`` and ``--resume``
    find it from any working directory (the bundled corpus keeps its name)."""
    if source.startswith("bundled:"):
        return source
    return str(Path(source).resolve())


def load_run(path: Path):
    """Load a run directory (or its ``checkpoint/``): model, vocabulary and the saved state."""
    ckpt = run_checkpoint(path)
    weights, state, arrays = load_checkpoint(ckpt)
    if state.get("kind") != "language_model":
        raise ValueError(f"{ckpt}: expected a language-model checkpoint, got {state.get('kind')!r}")
    missing = [k for k in RUN_KEYS if k not in state]
    missing += [f"data.{k}" for k in ("source", "level") if k not in state.get("data", {})]
    if missing:
        raise CheckpointError(f"{ckpt}: the run's state lacks {', '.join(missing)}; expected "
                              f"{', '.join(RUN_KEYS)} (a damaged or hand-edited checkpoint)")
    config = dataclass_from_dict(LMConfig, state["model_config"])
    model = LanguageModel(config, seed=0)
    model.load_state_dict(weights)
    vocab = Vocabulary.from_dict(state["vocab"])
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{ckpt}: vocabulary has {len(vocab)} entries but the model expects "
            f"{config.vocab_size}: the checkpoint and its vocabulary do not match"
        )
    return model, vocab, state, weights, arrays
