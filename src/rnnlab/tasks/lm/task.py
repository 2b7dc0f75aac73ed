"""Language modelling on the training engine: truncated BPTT over parallel streams.

One step (one window of T steps over B streams, :meth:`LMTask.step`):

    nll, _, state = model.forward_loss(x, y, state)   state carried in, gradient truncated
    loss = nll / B                              summed over T, averaged over B (Zaremba et al.)
    model.backward_loss()                       dL/dlogits = (softmax - onehot) / B

(``loss = mean`` divides by T B instead.) The Trainer (:mod:`rnnlab.training`) does the rest:
clipping, the optimizer step, epochs, checkpoints, signals, metrics. Perplexity is
exp(mean NLL per token) over every target token of a split, measured on the validation split
after each epoch and on validation and test at the end. A run directory holds ``checkpoint/``
(weights and optimizer state in safetensors, the rest in JSON), ``config.json``,
``vocab.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab import optim
from rnnlab.data.text import Corpus, Vocabulary, batchify, bptt_windows
from rnnlab.io.checkpoint import CheckpointError, load_run_checkpoint
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.nn import no_grad
from rnnlab.training import LoopConfig, Stop, Task, dataclass_from_dict
from rnnlab.validate import check_non_negative_int, check_number, check_positive_int

KIND = "language_model"
RUN_KEYS = ("model_config", "train_config", "vocab", "data", "optimizer", "rng", "epoch",
            "position", "step")  # what a language-model checkpoint's JSON must hold


def perplexity(loss: float) -> float:
    """exp(mean NLL per token); inf (not an OverflowError) for a loss above ~709 nats."""
    return math.exp(loss) if loss < 709.0 else math.inf


@dataclass
class TrainConfig(LoopConfig):
    """How to train a language model (saved with every checkpoint); the loop's own settings
    (``save_every``, ``save_minutes``, ...) are :class:`~rnnlab.training.LoopConfig`'s."""

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
        super().__post_init__()
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


def make_optimizer(params: dict, cfg: TrainConfig) -> optim.Optimizer:
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = optim.Adam if cfg.optimizer == "adam" else optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@no_grad()
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
                raise Stop
            nll, _, state = model.forward_loss(x_all[i:i + bptt], y_all[i:i + bptt], state,
                                               scale=None, mask=valid[i:i + bptt])
            total += nll
    finally:
        model.train(was_training)
    return total / n


class LMTask(Task):
    """A language model, its corpus and its train config, for :class:`rnnlab.training.Trainer`.

    A batch is the window (x, y) at its index; the recurrent state is carried from one window
    to the next within an epoch (and saved with a checkpoint taken inside one)."""

    kind, items = KIND, "tokens"

    def __init__(self, model: LanguageModel, corpus: Corpus, cfg: TrainConfig) -> None:
        self.model, self.corpus, self.cfg = model, corpus, cfg
        self.train_data = batchify(corpus.train, cfg.batch_size)
        self.windows = list(bptt_windows(self.train_data, cfg.bptt))
        self.train_sha256 = train_fingerprint(corpus)  # saved with every checkpoint
        self.state = model.initial_state(cfg.batch_size)

    def make_optimizer(self):
        opt = make_optimizer(self.model.parameters(), self.cfg)
        if self.cfg.lr_schedule == "step":
            return opt, optim.StepDecay(opt, self.cfg.lr_decay_start, self.cfg.lr_decay)
        if self.cfg.lr_schedule == "plateau":
            return opt, optim.ReduceOnPlateau(opt, factor=self.cfg.lr_decay)
        return opt, None

    def data_fingerprint(self) -> str:
        return self.train_sha256

    def shard(self, rank: int, size: int) -> None:
        """Rank ``rank`` of ``size`` trains on its contiguous block of the ``size`` x B parallel
        streams a single process with batch ``size`` x B would cut: the hidden state stays on
        its rank, only gradients travel."""
        B = self.cfg.batch_size
        streams = batchify(self.corpus.train, B * size)
        self.train_data = np.ascontiguousarray(streams[:, rank * B:(rank + 1) * B])
        self.windows = list(bptt_windows(self.train_data, self.cfg.bptt))

    def epoch_batches(self, epoch: int, position: int) -> int:
        if position == 0:  # each epoch starts from a zero state
            self.state = self.model.initial_state(self.cfg.batch_size)
        return len(self.windows)

    def batch(self, index: int):
        return self.windows[index]

    def step(self, batch) -> tuple[float, int]:
        x, y = batch
        T, B = x.shape
        scale = 1.0 / B if self.cfg.loss == "sum_time" else 1.0 / (T * B)
        nll, _, state = self.model.forward_loss(x, y, self.state, scale=scale)
        loss = nll / (T * B)
        if math.isfinite(loss):
            self.model.backward_loss()
            self.state = state
        return loss, x.size

    def _evaluate(self, ids: np.ndarray, stop: Callable[[], bool]) -> float:
        return evaluate(self.model, ids, self.cfg.eval_batch_size, self.cfg.bptt, stop=stop)

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        valid = self._evaluate(self.corpus.valid, stop)
        return {"valid_loss": valid, "valid_ppl": perplexity(valid)}

    def score(self, metrics: dict) -> float:
        return metrics["valid_loss"]


    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict:
        if "valid_loss" in last and last.get("step") == step:  # the weights it measured
            valid = last["valid_loss"]
        else:
            valid = self._evaluate(self.corpus.valid, stop)
        test = self._evaluate(self.corpus.test, stop)
        return {"valid_loss": valid, "valid_ppl": perplexity(valid),
                "test_loss": test, "test_ppl": perplexity(test)}

    def describe(self, record: dict, seconds: float) -> str:
        if record.get("final"):
            return (f"final: valid ppl {record['valid_ppl']:.2f}, test ppl "
                    f"{record['test_ppl']:.2f} (valid loss {record['valid_loss']:.4f}, test loss "
                    f"{record['test_loss']:.4f} nats/token)")
        return (f"epoch {record['epoch']}: train loss {record['loss']:.4f}, valid loss "
                f"{record['valid_loss']:.4f} (ppl {record['valid_ppl']:.2f}), lr {record['lr']:g}")

    def postfix(self, loss: float) -> dict:
        return {"ppl": f"{math.exp(min(loss, 50)):.1f}"}

    def state_dict(self, in_epoch: bool):
        carry = self.state if isinstance(self.state, tuple) else (self.state,)
        arrays = {f"carry/{i}": s for i, s in enumerate(carry)} if in_epoch else {}
        return arrays, {"model_config": self.model.config.to_dict(),
                        "vocab": self.corpus.vocab.to_dict(), "data": self._data(),
                        "rng": self.model.rng_states()}

    def _data(self) -> dict:
        return {"source": _absolute(self.corpus.source), "level": self.corpus.level,
                "train_sha256": self.train_sha256}

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        """The corpus must be the run's: the same vocabulary and, when the checkpoint recorded
        it, the same training ids (an edited text with the same vocabulary would silently
        shift every window)."""
        where = state.get("source_checkpoint", "the checkpoint")
        if Vocabulary.from_dict(state["vocab"]).fingerprint() != self.corpus.vocab.fingerprint():
            raise ValueError(f"{where}: the data's vocabulary does not match the checkpoint's")
        if state.get("data", {}).get("train_sha256") not in (None, self.train_sha256):
            raise ValueError(f"{where}: the training text in {self.corpus.source} is not the "
                             "one this run started with (same vocabulary, other tokens): "
                             "resuming would train on other windows")
        carry = [arrays.pop(k) for k in sorted(k for k in list(arrays) if k.startswith("carry/"))]
        if carry:
            self.state = tuple(carry) if len(carry) == 2 else carry[0]
        self.model.set_rng_states(state["rng"])

    def run_config(self) -> dict:
        return {"model": self.model.config.to_dict(), "train": asdict(self.cfg),
                "data": self._data()}

    def write_files(self, out: Path) -> None:
        self.corpus.vocab.save(out / "vocab.json")


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


def _upgrade(state: dict) -> dict:
    """A checkpoint of release 0.1 (before the training engine) in today's terms: its data
    position was "window" and its best validation loss "best_valid"."""
    renames = {"window": "position", "best_valid": "best_score"}
    return {renames.get(k, k): v for k, v in state.items()}


def load_run(path: Path, device: str = "cpu"):
    """Load a run directory (or its ``checkpoint/``): model (on ``device``), vocabulary and the
    saved state. Checkpoints hold host arrays, so a run saved on either device loads on both."""
    ckpt, weights, state, arrays = load_run_checkpoint(path, KIND, "rnnlab train lm")
    state = {**_upgrade(state), "source_checkpoint": str(ckpt)}
    missing = [k for k in RUN_KEYS if k not in state]
    missing += [f"data.{k}" for k in ("source", "level") if k not in state.get("data", {})]
    if missing:
        raise CheckpointError(f"{ckpt}: the run's state lacks {', '.join(missing)}; expected "
                              f"{', '.join(RUN_KEYS)} (a damaged or hand-edited checkpoint)")
    config = dataclass_from_dict(LMConfig, state["model_config"])
    model = LanguageModel(config, seed=0, device=device)
    model.load_state_dict(weights)
    vocab = Vocabulary.from_dict(state["vocab"])
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{ckpt}: vocabulary has {len(vocab)} entries but the model expects "
            f"{config.vocab_size}: the checkpoint and its vocabulary do not match"
        )
    return model, vocab, state, weights, arrays
