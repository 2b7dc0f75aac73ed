"""Long-time-lag benchmarks: can a cell learn the adding problem or the copy task at lag T?

The model is one recurrent layer (RNN, LSTM or GRU) and a linear readout, trained with Adam and
global-norm gradient clipping on fresh random batches (:mod:`rnnlab.data.synthetic`):

    adding   x (T, B, 2) -> h_T -> y_hat = h_T W^T + b  (B,)      L = mean (y_hat - y)^2
             dL/dy_hat = 2 (y_hat - y) / B, and dL/dh_t is zero except at t = T.
    copy     ids (T+2L, B) -> one-hot (T+2L, B, S+2) -> h_t -> logits_t = h_t W^T + b
             (T+2L, B, S+1)                                       L = mean cross-entropy per step

Every ``eval_every`` steps the model is scored on a fixed test set drawn from a generator
seeded by ``(seed, 3)``, so it never overlaps the training stream ``(seed, 2)`` and is the same
for every cell and init at a given seed. Solved means test MSE < 0.01 (adding; the
predict-the-mean baseline is ~0.167) or test accuracy on the recalled symbols > 0.99 (copy; the
memoryless baseline's loss is L log S / (T + 2L)).

Initialisations of the gate biases (:func:`init_gate_biases`; gate order LSTM i, f, g, o and
GRU r, z, n as in torch.nn):

    default  PyTorch's: every weight and bias from U(-1/sqrt(H), 1/sqrt(H))
    forget1  the LSTM forget-gate bias (GRU: update-gate bias) + 1 (Gers et al. 2000;
             Jozefowicz et al. 2015): the state is kept by default
    chrono   Tallec & Ollivier 2018: b_f ~ log U(1, T_max - 1), b_i = -b_f (LSTM); the GRU
             update gate's bias b_z ~ log U(1, T_max - 1). A unit then forgets on a time
             scale of about exp(b) steps, spread over 1..T_max. T_max is the sequence length.
             The values go into ``bias_hh``; the matching rows of ``bias_ih`` are zeroed, so
             the summed bias is exactly the chrono value.
    (every init leaves a plain RNN at PyTorch's default)

Float32 subnormals. A gradient that vanishes over the time steps passes through float32's
subnormal range (1.4e-45 .. 1.2e-38) on its way to zero, and on CPUs where subnormal arithmetic
takes a microcode slow path that can make the backward pass of a long sequence much slower.
Measured on the development machine (AMD EPYC Zen 3, NumPy 2.4, OpenBLAS 0.3.31 Haswell
kernels, one thread), LSTM H = 128, batch 64, the adding loss's real dL/dh_T, T = 400:

    weights                       dA entries subnormal  steps with any   backward, kernel / flushed
    trained (adding T=100)        0                     0 / 400          103-114 ms / 107-108 ms
    PyTorch default init          11 %                  258 / 400        101-129 ms / 107-121 ms
    chrono init (T_max = 400)     0                     0 / 400          105-131 ms / 108 ms
    chrono init, dL/dh_T * 1e-30  37 %                  400 / 400        105-107 ms / 114-115 ms

"flushed" is a copy of the kernel's loop that sets carried dh, dc entries below float32's tiny
to zero after every step. The ranges are repeated runs on a shared machine: the columns do not
differ beyond the noise (the flush itself costs up to ~20 us a step), and one backward step's
operations (a (64, 512) @ (512, 128) GEMM and the elementwise products) cost the same, 119-125
us, with all-normal, all-subnormal and all-zero operands. So subnormals do occur (at default
init; not after training, not at chrono init), but they slow nothing here, and the training
loop applies no flush: the carried dh, dc live inside the kernels' time loop, and flushing them
would mean changing that loop for no measured gain. (On Intel cores, where an operation with a
subnormal result can cost ~100 cycles, the same measurement may come out differently.)

Saving (:func:`save_model`, ``rnnlab bench longdep --save FILE``). The trained model's
``state_dict()`` (``rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0,
readout.weight, readout.bias``, in the run's dtype) goes into one safetensors file, written
atomically; its ``__metadata__`` holds ``format`` ("rnnlab.tasks.longdep"), ``version`` ("1"),
``config`` (the resolved :class:`LongDepConfig` as JSON) and ``result`` (JSON: steps run, the
final test metrics, baseline, solved, solved_step). :func:`load_model` reads it back and checks
it; :func:`build_model` re-creates the same run's untrained model from the config alone.
``rnnlab gradflow --weights FILE`` uses both.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.synthetic import (
    adding_problem,
    constant_baseline_mse,
    copy_baseline,
    copy_task,
)
from rnnlab.io.checkpoint import load_run_checkpoint
from rnnlab.io.safetensors import CheckpointError, load_file, load_metadata, save_file
from rnnlab.models.longdep import CELLS, INITS, TASKS, LongDepModel, init_gate_biases
from rnnlab.nn import no_grad
from rnnlab.optim import Adam
from rnnlab.training import SAVE_MINUTES, LoopConfig, Task, Trainer, dataclass_from_dict
from rnnlab.validate import check_positive_int

SOLVED_MSE = 0.01  # adding: test MSE below this
SOLVED_ACC = 0.99  # copy: accuracy on the recalled symbols above this
EVAL_BYTES = 1 << 26  # the test set is scored in chunks of about 64 MiB of gate activations
SAVE_FORMAT, SAVE_VERSION = "rnnlab.tasks.longdep", "1"  # the metadata of a --save file


# ----------------------------------------------------------------------------- config
@dataclass
class LongDepConfig:
    """One benchmark run. ``clip`` 0 turns clipping off; ``symbols`` and ``length`` are the
    copy task's S and L; ``stop_when_solved`` ends the run at the first evaluation that meets
    the success criterion."""

    task: str = "adding"
    T: int = 100
    cell: str = "lstm"
    hidden: int = 128
    batch: int = 64
    steps: int = 10_000
    lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    init: str = "chrono"
    eval_every: int = 200
    test_size: int = 1000
    dtype: str = "float32"
    symbols: int = 8
    length: int = 10
    stop_when_solved: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("task", TASKS), ("cell", tuple(CELLS)), ("init", INITS),
                              ("dtype", ("float32", "float64"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("T", "hidden", "batch", "steps", "eval_every", "test_size", "symbols",
                     "length"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        if self.task == "adding" and self.T < 2:
            raise ValueError(f"T: expected at least 2 for the adding problem, got {self.T}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.clip, int | float) and math.isfinite(self.clip)
                and self.clip >= 0):
            raise ValueError(f"clip: expected a number >= 0 (0: off), got {self.clip!r}")

    @property
    def steps_per_sequence(self) -> int:
        """Time steps the layer runs: T (adding) or T + 2 * length (copy)."""
        return self.T if self.task == "adding" else self.T + 2 * self.length


def build_model(cfg: LongDepConfig) -> LongDepModel:
    """The run's model before training: weights from the stream ``(seed, 1)``, then the gate
    biases of ``cfg.init`` from ``(seed, 4)`` (T_max = the sequence length). Deterministic:
    the same config always gives the same untrained model."""
    if not isinstance(cfg, LongDepConfig):
        raise TypeError(f"cfg: expected a LongDepConfig, got {type(cfg).__name__}")
    model = LongDepModel(cfg.task, cfg.cell, cfg.hidden, cfg.symbols, cfg.dtype,
                         seed=np.random.default_rng([cfg.seed, 1]))
    init_gate_biases(model.rnn, cfg.init, cfg.steps_per_sequence,
                     np.random.default_rng([cfg.seed, 4]))
    return model


# ----------------------------------------------------------------------------- save, load
SUMMARY_KEYS = ("steps", "test_mse", "test_loss", "test_acc", "baseline", "solved",
                "solved_step")


def check_output_path(what: str, path: str | os.PathLike) -> Path:
    """Fail before training, not after it, when the file ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}: expected a file name, got the directory {path}")
    if not path.parent.is_dir():
        raise ValueError(f"{what}: the directory {path.parent} of {path} does not exist")
    return path


def save_model(model: LongDepModel, cfg: LongDepConfig, path: str | os.PathLike,
               result: dict | None = None) -> None:
    """Write ``model.state_dict()`` to the safetensors file ``path`` atomically, with the
    config and a summary of ``result`` (if given) in its metadata (see the module docstring)."""
    if not isinstance(cfg, LongDepConfig):
        raise TypeError(f"cfg: expected a LongDepConfig, got {type(cfg).__name__}")
    summary = {k: result[k] for k in SUMMARY_KEYS if k in result} if result else {}
    metadata = {"format": SAVE_FORMAT, "version": SAVE_VERSION,
                "config": json.dumps(asdict(cfg), sort_keys=True),
                "result": json.dumps(summary, sort_keys=True)}
    save_file(model.state_dict(), check_output_path("save", path), metadata=metadata)


def load_model(path: str | os.PathLike) -> tuple[LongDepModel, LongDepConfig, dict]:
    """Read a file written by :func:`save_model`: (the trained model, its config, the result
    summary). Anything else raises ValueError naming the file and what was expected."""
    path = Path(path)

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: expected a file written by 'rnnlab bench longdep --save', "
                          f"but {why}")

    try:
        meta = load_metadata(path)
    except CheckpointError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise bad(f"it is not a valid safetensors file ({reason})") from None
    if meta.get("format") != SAVE_FORMAT:
        raise bad(f"its metadata has no format {SAVE_FORMAT!r} (got {meta.get('format')!r})")
    if meta.get("version") != SAVE_VERSION:
        raise bad(f"it has format version {meta.get('version')!r}; this rnnlab reads version "
                  f"{SAVE_VERSION!r}")
    try:
        cfg = LongDepConfig(**json.loads(meta.get("config", "")))
        summary = json.loads(meta.get("result", "{}"))
    except (ValueError, TypeError) as err:
        raise bad(f"its config metadata is not a valid LongDepConfig ({err})") from None
    model = LongDepModel(cfg.task, cfg.cell, cfg.hidden, cfg.symbols, cfg.dtype, seed=0)
    tensors = load_file(path)
    expected = {k: (v.shape, v.dtype) for k, v in model.parameters().items()}
    found = {k: (v.shape, v.dtype) for k, v in tensors.items()}
    if found != expected:
        raise bad(f"its tensors {_describe(found)} do not match the config's model "
                  f"{_describe(expected)}")
    try:
        model.load_state_dict(tensors)
    except ValueError as err:
        raise bad(str(err)) from None
    return model, cfg, summary if isinstance(summary, dict) else {}


def _describe(arrays: dict) -> str:
    return "{" + ", ".join(f"{k}: {d} {tuple(s)}" for k, (s, d) in sorted(arrays.items())) + "}"


# ----------------------------------------------------------------------------- data, eval
def make_batch(cfg: LongDepConfig, n: int, rng: np.random.Generator):
    """``n`` sequences of ``cfg``'s task: adding (x, y) or copy (ids, target ids)."""
    if cfg.task == "adding":
        return adding_problem(n, cfg.T, rng)
    return copy_task(n, cfg.T, rng, symbols=cfg.symbols, length=cfg.length)


@no_grad()
def evaluate(model: LongDepModel, x: np.ndarray, y: np.ndarray, length: int) -> dict:
    """Test metrics, scored in chunks: adding {test_mse}; copy {test_loss, test_acc}, the
    accuracy over the last ``length`` steps (the recalled symbols) of every sequence."""
    model.eval()
    steps, n = x.shape[0], x.shape[1]
    per_seq = steps * model.rnn.gates * model.rnn.hidden_size * model.dtype.itemsize
    chunk = max(1, min(n, EVAL_BYTES // per_seq))
    sq = ce = 0.0
    correct = 0
    for s in range(0, n, chunk):
        xb, yb = x[:, s:s + chunk], y[..., s:s + chunk]
        pred = model.forward(xb)
        if model.task == "adding":
            sq += float(np.sum((pred.astype(np.float64) - yb) ** 2))
        else:
            ce += model.criterion(pred, yb) * yb.size
            correct += int(np.sum(pred[-length:].argmax(axis=-1) == yb[-length:]))
    model.train()
    if model.task == "adding":
        return {"test_mse": sq / n}
    return {"test_loss": ce / y.size, "test_acc": correct / (length * n)}


def is_solved(task: str, metrics: dict) -> bool:
    """Adding: test MSE < 0.01. Copy: accuracy on the recalled symbols > 0.99."""
    if task == "adding":
        return metrics["test_mse"] < SOLVED_MSE
    return metrics["test_acc"] > SOLVED_ACC


def _progress(cfg: LongDepConfig, step: int, train_loss: float, metrics: dict,
              baseline: float, elapsed: float) -> str:
    if cfg.task == "adding":
        scores = f"train_mse {train_loss:.4f}  test_mse {metrics['test_mse']:.4f}"
    else:
        scores = (f"train_loss {train_loss:.4f}  test_loss {metrics['test_loss']:.4f}  "
                  f"test_acc {metrics['test_acc']:.3f}")
    return (f"step {step:>{len(str(cfg.steps))}}/{cfg.steps}  {scores}  "
            f"(baseline {baseline:.4f})  {elapsed:.1f} s")


# ----------------------------------------------------------------------------- training
class LongDepTask(Task):
    """A long-lag benchmark run for :class:`rnnlab.training.Trainer`: fresh random batches from
    the stream ``(seed, 2)``, and an "epoch" of ``eval_every`` steps, each ending with the
    fixed test set's metrics (the last one shorter, so that the run ends at ``steps``)."""

    kind, items = "longdep", "sequences"

    def __init__(self, cfg: LongDepConfig, save_every: int = 0,
                 save_minutes: float = 0.0) -> None:
        self.config = cfg
        self.model = build_model(cfg)
        self.cfg = LoopConfig(epochs=-(-cfg.steps // cfg.eval_every), clip=cfg.clip,
                              log_every=0, save_every=save_every, save_minutes=save_minutes)
        self.rng = np.random.default_rng([cfg.seed, 2])
        self.x_test, self.y_test = make_batch(cfg, cfg.test_size,
                                              np.random.default_rng([cfg.seed, 3]))
        if cfg.task == "adding":
            # the marked values do not depend on T: two steps per sequence draw the same targets
            _, y_ref = adding_problem(10_000, 2, np.random.default_rng([cfg.seed, 5]))
            self.baseline, self.metric = constant_baseline_mse(self.y_test, y_ref), "test_mse"
        else:
            self.baseline = copy_baseline(cfg.T, cfg.symbols, cfg.length)
            self.metric = "test_acc"
        self.start = time.perf_counter()

    def make_optimizer(self):
        return Adam(self.model.parameters(), lr=self.config.lr), None

    def epoch_batches(self, epoch: int, position: int) -> int:
        return min(self.config.eval_every, self.config.steps - (epoch - 1) * self.config.eval_every)

    def batch(self, index: int):
        return make_batch(self.config, self.config.batch, self.rng)

    def step(self, batch) -> tuple[float, int]:
        x, y = batch
        loss = self.model.loss(x, y)
        if math.isfinite(loss):
            self.model.backward()
        return loss, x.shape[1]

    def evaluate(self, stop) -> dict:
        return evaluate(self.model, self.x_test, self.y_test, self.config.length)


    def done(self, metrics: dict) -> str | None:
        solved = is_solved(self.config.task, metrics)
        return "solved" if solved and self.config.stop_when_solved else None


    def describe(self, record: dict, seconds: float) -> str:
        return _progress(self.config, record["step"], record["loss"], record, self.baseline,
                         time.perf_counter() - self.start)


    def state_dict(self, in_epoch: bool):
        return {}, {"longdep_config": asdict(self.config), "data_rng": self.rng.bit_generator.state}

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        if state.get("longdep_config") != asdict(self.config):
            raise ValueError("the checkpoint's longdep run has another configuration: "
                             f"{state.get('longdep_config')}")
        self.rng.bit_generator.state = state["data_rng"]

    def run_config(self) -> dict:
        return {"longdep": asdict(self.config), "train": asdict(self.cfg)}



def saved_config(out: str | os.PathLike) -> LongDepConfig:
    """The configuration of the run saved in the directory ``out``."""
    _, _, state, _ = load_run_checkpoint(out, LongDepTask.kind, "rnnlab bench longdep --out")
    return dataclass_from_dict(LongDepConfig, state["longdep_config"])


def train_longdep(cfg: LongDepConfig, log: Callable[[str], object] = print,
                  save: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                  resume: bool = False, save_every: int = 0,
                  save_minutes: float = SAVE_MINUTES) -> dict:
    """Train, evaluating every ``eval_every`` steps and at the end; returns the results.

    ``save``: write the trained model to this safetensors file (:func:`save_model`); its
    directory is checked before training starts. ``out``: a run directory for checkpoints
    and ``metrics.jsonl`` (saved after each evaluation, every ``save_every`` steps and every
    ``save_minutes``); ``resume`` continues the run saved there.

    Keys: ``task, T, cell, init, steps`` (steps run), the final test metrics (``test_mse``, or
    ``test_loss`` and ``test_acc``), ``baseline``, ``solved``, ``solved_step`` (first
    evaluation that met the criterion, or None), ``curve`` (a list of (step, mean train loss
    since the previous evaluation, test metric), the metric being test MSE or test accuracy),
    ``wall_s`` (training and evaluation time), ``params`` and ``config``.
    """
    if save is not None:
        check_output_path("save", save)
    task = LongDepTask(cfg, save_every, save_minutes if out is not None else 0.0)
    trainer = Trainer(task, out, log=log, progress=False)
    if resume:
        if out is None:
            raise ValueError("resume: expected a run directory (out) to resume from")
        _, weights, state, arrays = load_run_checkpoint(out, task.kind,
                                                        "rnnlab bench longdep --out")
        trainer.restore(state, weights, arrays)
        log(f"resuming {out} at step {trainer.step}")
    n_params = sum(p.size for p in task.model.parameters().values())
    log(f"longdep: {cfg}")
    log(f"{type(task.model.rnn).__name__}({task.model.rnn.input_size}, {cfg.hidden}) + Linear "
        f"readout, {n_params:,} parameters; {cfg.steps_per_sequence} steps per sequence; "
        f"baseline {task.baseline:.4f}")
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    evals = [r for r in trainer.history if task.metric in r]
    metrics = {k: evals[-1][k] for k in ("test_mse", "test_loss", "test_acc") if k in evals[-1]}
    curve = [(r["step"], r["loss"], r[task.metric]) for r in evals]
    solved_step = next((r["step"] for r in evals if is_solved(cfg.task, r)), None)
    result = {"task": cfg.task, "T": cfg.T, "cell": cfg.cell, "init": cfg.init,
              "steps": trainer.step, **metrics, "baseline": task.baseline,
              "solved": is_solved(cfg.task, metrics), "solved_step": solved_step,
              "curve": curve, "wall_s": wall, "params": n_params, "config": asdict(cfg)}
    if save is not None:
        save_model(task.model, cfg, save, result)
    return result


def format_last_line(result: dict) -> str:
    """The one-line summary, e.g.
    ``task=adding T=200 cell=lstm test_mse=0.0043 baseline=0.167 solved=yes``."""
    head = f"task={result['task']} T={result['T']} cell={result['cell']}"
    solved = "yes" if result["solved"] else "no"
    if result["task"] == "adding":
        return (f"{head} test_mse={result['test_mse']:.4f} baseline={result['baseline']:.3f} "
                f"solved={solved}")
    return (f"{head} test_loss={result['test_loss']:.4f} baseline={result['baseline']:.4f} "
            f"test_acc={result['test_acc']:.4f} solved={solved}")
