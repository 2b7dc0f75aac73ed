"""Training a seq2seq model on character-level pairs: epochs of teacher forcing, exact-match tests.

One step (a minibatch of (source, target) pairs):

    src  = encode(sources, reverse=reverse_source)       (Ts, B) padded, lengths
    tgt_in, tgt_out = [<bos>] + target, target + [<eos>]  (Tt, B)
    loss = mean cross-entropy over the real target tokens
    model.backward_loss()     (the Trainer then clips the global gradient norm; Adam step)

After every epoch the whole test set is decoded greedily and scored: ``test_exact_match`` (the
fraction of answers decoded exactly) and ``test_char_acc`` (the fraction of target characters
right at their position); a run that stops inside an epoch (``max_steps``) scores its last
weights in a closing record (``"final": true``). The Trainer (:mod:`rnnlab.training`) appends
the epoch's record to ``metrics.jsonl`` and replaces ``checkpoint/`` atomically, at each epoch's
end and periodically inside one (weights, optimizer state, both vocabularies, configs, the
position in the epoch).

Data (``data``): "addition" and "date" are generated (:mod:`rnnlab.data.pairs`, ``size`` pairs);
any other value is a file in the book's format (``16+75  _91``) or a TSV of source<TAB>target.
Generated and file pairs alike are split as in the book: shuffled with seed 1984, the last 10%
held out; ``dedup`` removes repeated pairs first (``date.txt`` holds duplicates, which then
appear in both parts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab import optim
from rnnlab.data import pairs as P
from rnnlab.data.text import Vocabulary
from rnnlab.io.checkpoint import load_run_checkpoint
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.seq2seq.translate import greedy_decode
from rnnlab.training import LoopConfig, ShardedBatches, Stop, Task, dataclass_from_dict
from rnnlab.training.distributed import digest
from rnnlab.validate import check_positive_int

GENERATED = {"addition": P.addition_pairs, "date": P.date_pairs}
KIND = "seq2seq"


@dataclass
class Seq2SeqTrainConfig(LoopConfig):
    """How to train (saved with every checkpoint); the loop's own settings (``save_every``,
    ``save_minutes``, ...) are :class:`~rnnlab.training.LoopConfig`'s."""

    data: str = "addition"  # addition | date | a file path
    size: int = 50000  # pairs generated for "addition" / "date"
    dedup: bool = False  # drop repeated pairs before splitting
    epochs: int = 25
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    clip: float = 5.0  # global gradient L2 norm (0: off)
    log_every: int = 0  # one metrics record per epoch (its loss the epoch's mean)
    lr_decay: float = 1.0  # multiply lr by this every epoch after lr_decay_start (1: constant)
    lr_decay_start: int = 0
    seed: int = 0  # initialisation and minibatch order (the split always uses 1984)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("size", "epochs", "batch_size", "eval_batch_size"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip: expected a number >= 0, got {self.clip!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay: expected a factor in (0, 1], got {self.lr_decay!r}")
        if (isinstance(self.lr_decay_start, bool) or not isinstance(self.lr_decay_start, int)
                or self.lr_decay_start < 0):
            raise ValueError(f"lr_decay_start: expected an epoch >= 0, got "
                             f"{self.lr_decay_start!r}")


def load_pairs(cfg: Seq2SeqTrainConfig) -> tuple[list[P.Pair], list[P.Pair], str]:
    """(train, test, a description of the data) for ``cfg.data``."""
    if cfg.data in GENERATED:
        pairs = GENERATED[cfg.data](cfg.size, seed=0)
        what = f"{cfg.data} (generated, {cfg.size:,} pairs)"
    else:
        pairs = P.read_pairs(cfg.data)
        what = f"{cfg.data} ({len(pairs):,} pairs)"
    if cfg.dedup:
        pairs = P.deduplicate(pairs)
        what += f", {len(pairs):,} distinct"
    train, test = P.book_split(pairs)
    if not train or not test:
        raise ValueError(f"{cfg.data}: expected enough pairs for a train and a test part, "
                         f"got {len(pairs)}")
    return train, test, what


def encode_batch(batch: list[P.Pair], src_vocab: Vocabulary, tgt_vocab: Vocabulary,
                 reverse: bool):
    """Pairs -> src, src_lengths, tgt_in, tgt_out, tgt_lengths (time-major, padded)."""
    src, src_len = P.encode([s for s, _ in batch], src_vocab, reverse=reverse)
    tgt, n = P.encode([t for _, t in batch], tgt_vocab, bos=True, eos=True)  # <bos> t <eos>
    # decoder inputs <bos> t, targets t <eos>: one sequence, shifted (a shorter column's <eos>
    # left in tgt_in sits past its length, where nothing reads it)
    return src, src_len, tgt[:-1], tgt[1:], n - 1


def score(model: Seq2Seq, pairs: list[P.Pair], src_vocab: Vocabulary, tgt_vocab: Vocabulary,
          batch_size: int = 1000, max_length: int | None = None,
          stop: Callable[[], bool] | None = None) -> dict:
    """Greedy-decode every pair's source: exact-match rate and per-position character accuracy.
    ``stop`` is asked between batches; when it says True the scoring is abandoned
    (:class:`~rnnlab.training.Stop`)."""
    bos, eos = P.special_id(tgt_vocab, P.BOS), P.special_id(tgt_vocab, P.EOS)
    limit = max_length or max(len(t) for _, t in pairs) + 5
    exact = chars = total = 0
    for s in range(0, len(pairs), batch_size):
        if stop is not None and stop():
            raise Stop
        batch = pairs[s:s + batch_size]
        src, src_len = P.encode([p[0] for p in batch], src_vocab,
                                reverse=model.config.reverse_source)
        for (_, target), d in zip(batch, greedy_decode(model, src, src_len, bos, eos, limit),
                                  strict=True):
            guess = P.decode(d.ids, tgt_vocab)
            exact += guess == target
            chars += sum(a == b for a, b in zip(guess, target, strict=False))
            total += len(target)
    return {"exact_match": exact / len(pairs), "char_acc": chars / max(total, 1)}


class Seq2SeqTask(ShardedBatches, Task):
    """A seq2seq model, its pairs and its train config, for :class:`rnnlab.training.Trainer`.

    Each epoch shuffles the training pairs with the run's generator (seeded by ``seed``); a
    checkpoint taken inside an epoch keeps that generator's state from the epoch's start, so a
    resumed run draws the same order and goes on at the same batch."""

    kind, items = KIND, "tokens"

    def __init__(self, model: Seq2Seq, train: list[P.Pair], test: list[P.Pair],
                 src_vocab: Vocabulary, tgt_vocab: Vocabulary, cfg: Seq2SeqTrainConfig) -> None:
        self.model, self.train, self.test, self.cfg = model, train, test, cfg
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.rng = np.random.default_rng(cfg.seed)
        self._epoch_rng = self.rng.bit_generator.state  # before this epoch's shuffle
        self._batches: list[list[P.Pair]] = []

    def make_optimizer(self):
        opt = optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        return opt, optim.StepDecay(opt, self.cfg.lr_decay_start, self.cfg.lr_decay)

    def epoch_batches(self, epoch: int, position: int) -> int:
        self._epoch_rng = self.rng.bit_generator.state
        self._batches = list(P.minibatches(self.train, self.global_batch_size(), self.rng))
        return len(self._batches)

    def data_fingerprint(self) -> str:
        return digest("\n".join(f"{source}\t{target}" for source, target in self.train))

    def batch(self, index: int) -> list[P.Pair] | None:
        return self.own_part(self._batches[index])

    def step(self, batch: list[P.Pair]) -> tuple[float, int]:
        """One minibatch: (mean loss per target token, target tokens)."""
        model = self.model
        src, src_len, tgt_in, tgt_out, tgt_len = encode_batch(
            batch, self.src_vocab, self.tgt_vocab, model.config.reverse_source)
        count = int(tgt_len.sum())
        total, _ = model.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=1.0 / count)
        loss = total / count
        if math.isfinite(loss):
            model.backward_loss()
        return loss, count

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        scores = score(self.model, self.test, self.src_vocab, self.tgt_vocab,
                       self.cfg.eval_batch_size, stop=stop)
        return {"test_exact_match": scores["exact_match"], "test_char_acc": scores["char_acc"]}

    def score(self, metrics: dict) -> float:
        return -metrics["test_exact_match"]

    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict | None:
        if "test_exact_match" in last and last.get("step") == step:
            return None  # the last epoch's record scored these weights
        return self.evaluate(stop)  # stopped inside an epoch (max_steps): score them once

    def describe(self, record: dict, seconds: float) -> str:
        scores = (f"test exact match {record['test_exact_match']:.2%}, char accuracy "
                  f"{record['test_char_acc']:.2%}")
        if record.get("final"):
            return f"final (step {record['step']}): {scores}"
        return f"epoch {record['epoch']}: loss {record['loss']:.4f}, {scores} ({seconds:.1f} s)"

    def state_dict(self, in_epoch: bool):
        rng = self._epoch_rng if in_epoch else self.rng.bit_generator.state
        return {}, {"model_config": self.model.config.to_dict(),
                    "src_vocab": self.src_vocab.to_dict(), "tgt_vocab": self.tgt_vocab.to_dict(),
                    "data_rng": rng}

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        vocabs = [self.src_vocab.to_dict(), self.tgt_vocab.to_dict()]
        if [state["src_vocab"], state["tgt_vocab"]] != vocabs:
            raise ValueError(f"{state.get('source_checkpoint', 'the checkpoint')}: the data's "
                             "vocabularies do not match the checkpoint's")
        self.rng.bit_generator.state = state["data_rng"]

    def run_config(self) -> dict:
        return {"model": self.model.config.to_dict(), "train": asdict(self.cfg)}


def upgrade_state(state: dict, train_pairs: int) -> dict:
    """A checkpoint of release 0.1 (before the training engine; saved only at an epoch's end,
    ``epoch`` counting the finished epochs, ``rng`` the shuffling generator) in today's terms."""
    if "position" in state:
        return state
    cfg = state["train_config"]
    done = state["epoch"]
    return {**{k: v for k, v in state.items() if k != "rng"}, "data_rng": state["rng"],
            "epoch": done + 1, "position": 0, "step": done * -(-train_pairs // cfg["batch_size"])}


def load_seq2seq(path: str | Path) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict, dict]:
    """A run directory (or its ``checkpoint/``) -> (model, source vocab, target vocab, state,
    the optimizer's arrays)."""
    ckpt, weights, state, arrays = load_run_checkpoint(path, KIND, "rnnlab train seq2seq")
    state = {**state, "source_checkpoint": str(ckpt)}
    config = dataclass_from_dict(Seq2SeqConfig, state["model_config"])
    dataclass_from_dict(Seq2SeqTrainConfig, state["train_config"])  # a clear error if damaged
    src_vocab = Vocabulary.from_dict(state["src_vocab"])
    tgt_vocab = Vocabulary.from_dict(state["tgt_vocab"])
    if (len(src_vocab), len(tgt_vocab)) != (config.src_vocab, config.tgt_vocab):
        raise ValueError(f"{ckpt}: vocabularies of {len(src_vocab)} / {len(tgt_vocab)} entries "
                         f"do not match the model's {config.src_vocab} / {config.tgt_vocab}")
    model = Seq2Seq(config, seed=0)
    model.load_state_dict(weights)
    model.eval()
    return model, src_vocab, tgt_vocab, state, arrays
