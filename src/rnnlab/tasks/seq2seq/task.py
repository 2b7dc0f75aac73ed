"""Training a seq2seq model on character-level pairs: epochs of teacher forcing, exact-match tests.

One step (a minibatch of (source, target) pairs):

    src  = encode(sources, reverse=reverse_source)       (Ts, B) padded, lengths
    tgt_in, tgt_out = [<bos>] + target, target + [<eos>]  (Tt, B)
    loss = mean cross-entropy over the real target tokens
    model.backward_loss();  clip the global gradient norm;  Adam step

After every epoch the whole test set is decoded greedily and scored: ``test_exact_match`` (the
fraction of answers decoded exactly) and ``test_char_acc`` (the fraction of target characters
right at their position). A record is appended to ``metrics.jsonl`` and ``checkpoint/`` is
replaced atomically (weights, optimizer state, both vocabularies, configs, the epoch).

Data (``data``): "addition" and "date" are generated (:mod:`rnnlab.data.pairs`, ``size`` pairs);
any other value is a file in the book's format (``16+75  _91``) or a TSV of source<TAB>target.
Generated and file pairs alike are split as in the book: shuffled with seed 1984, the last 10%
held out; ``dedup`` removes repeated pairs first (``date.txt`` holds duplicates, which then
appear in both parts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab import optim
from rnnlab.data import pairs as P
from rnnlab.data.text import Vocabulary
from rnnlab.io.atomic import atomic_write_json
from rnnlab.io.checkpoint import load_checkpoint, run_checkpoint, save_checkpoint
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.lm.task import TrainingDiverged, append_record, dataclass_from_dict, keep_records
from rnnlab.tasks.seq2seq.translate import greedy_decode
from rnnlab.training.progress import Progress
from rnnlab.validate import check_positive_int

GENERATED = {"addition": P.addition_pairs, "date": P.date_pairs}
KIND = "seq2seq"


@dataclass
class Seq2SeqTrainConfig:
    """How to train (saved with every checkpoint)."""

    data: str = "addition"  # addition | date | a file path
    size: int = 50000  # pairs generated for "addition" / "date"
    dedup: bool = False  # drop repeated pairs before splitting
    epochs: int = 25
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    clip: float = 5.0  # global gradient L2 norm (0: off)
    lr_decay: float = 1.0  # multiply lr by this every epoch after lr_decay_start (1: constant)
    lr_decay_start: int = 0
    seed: int = 0  # initialisation and minibatch order (the split always uses 1984)
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
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
          batch_size: int = 1000, max_length: int | None = None) -> dict:
    """Greedy-decode every pair's source: exact-match rate and per-position character accuracy."""
    bos, eos = P.special_id(tgt_vocab, P.BOS), P.special_id(tgt_vocab, P.EOS)
    limit = max_length or max(len(t) for _, t in pairs) + 5
    exact = chars = total = 0
    for s in range(0, len(pairs), batch_size):
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


class Seq2SeqTrainer:
    """Epochs of minibatch training with a test-set score, metrics and a checkpoint per epoch."""

    def __init__(self, model: Seq2Seq, train: list[P.Pair], test: list[P.Pair],
                 src_vocab: Vocabulary, tgt_vocab: Vocabulary, cfg: Seq2SeqTrainConfig,
                 out_dir: str | Path, log: Callable[[str], object] = print,
                 progress: bool = True) -> None:
        self.model, self.train, self.test, self.cfg = model, train, test, cfg
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.out, self.log, self.progress = Path(out_dir), log, progress
        self.optimizer = optim.Adam(model.parameters(), lr=cfg.lr)
        self.schedule = optim.StepDecay(self.optimizer, cfg.lr_decay_start, cfg.lr_decay)
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch = 0

    def train_step(self, batch: list[P.Pair]) -> tuple[float, float, int]:
        """One minibatch: returns (mean loss per target token, gradient norm before clipping,
        target tokens)."""
        model = self.model
        src, src_len, tgt_in, tgt_out, tgt_len = encode_batch(
            batch, self.src_vocab, self.tgt_vocab, model.config.reverse_source)
        model.zero_grad(lazy=True)  # marks them; backward writes its first part
        count = int(tgt_len.sum())
        total, _ = model.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=1.0 / count)
        loss = total / count
        if not math.isfinite(loss):
            self._diverged(f"loss {loss}")
        model.backward_loss()
        grads, rows = model.grads_and_rows()
        norm = optim.clipped_step(self.optimizer, grads, self.cfg.clip, rows)
        if not math.isfinite(norm):
            self._diverged(f"gradient norm {norm}")
        return loss, norm, count

    def _diverged(self, what: str):
        kept = (f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else
                "no checkpoint was written yet")
        raise TrainingDiverged(f"training diverged at epoch {self.epoch + 1} ({what}); {kept} "
                               "(try a lower --lr or --clip)")

    def fit(self) -> dict:
        """Train until ``cfg.epochs`` epochs are done; returns the last metrics record."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", {"model": self.model.config.to_dict(),
                                                    "train": asdict(self.cfg)})
        record: dict = {}
        while self.epoch < self.cfg.epochs:
            record = self._epoch()
        return record

    def _epoch(self) -> dict:
        cfg = self.cfg
        lr = self.schedule.set_epoch(self.epoch + 1)
        n_batches = -(-len(self.train) // cfg.batch_size)
        start = time.perf_counter()
        losses, tokens = [], 0
        with Progress(n_batches, f"epoch {self.epoch + 1}/{cfg.epochs}",
                      enabled=self.progress) as bar:
            for batch in P.minibatches(self.train, cfg.batch_size, self.rng):
                loss, norm, count = self.train_step(batch)
                losses.append(loss)
                tokens += count
                bar.update(loss=f"{loss:.4f}", grad_norm=f"{norm:.2f}")
        train_time = time.perf_counter() - start
        self.epoch += 1
        scores = score(self.model, self.test, self.src_vocab, self.tgt_vocab,
                       cfg.eval_batch_size)
        record = {"epoch": self.epoch, "loss": float(np.mean(losses)), "lr": lr,
                  "test_exact_match": scores["exact_match"], "test_char_acc": scores["char_acc"],
                  "train_seconds": round(train_time, 2),
                  "tokens_per_s": round(tokens / train_time, 1)}
        append_record(self.out / "metrics.jsonl", record)
        self.save()
        self.log(f"epoch {self.epoch}: loss {record['loss']:.4f}, test exact match "
                 f"{record['test_exact_match']:.2%}, char accuracy {record['test_char_acc']:.2%}"
                 f" ({train_time:.1f} s)")
        return record

    def save(self) -> None:
        """Replace ``checkpoint/`` atomically: weights, optimizer state, epoch, shuffling RNG."""
        arrays, meta = self.optimizer.state_dict()
        state = {"kind": KIND, "model_config": self.model.config.to_dict(),
                 "train_config": asdict(self.cfg), "src_vocab": self.src_vocab.to_dict(),
                 "tgt_vocab": self.tgt_vocab.to_dict(), "optimizer": meta, "epoch": self.epoch,
                 "rng": self.rng.bit_generator.state}  # metrics.jsonl holds the history
        save_checkpoint(self.out / "checkpoint", self.model.state_dict(), state, arrays)

    def restore(self, state: dict, arrays: dict) -> None:
        """Continue a saved run after its last finished epoch (the model holds its weights):
        the optimizer, the epoch and the shuffling RNG as they were, and metrics.jsonl without
        records of a later epoch (written before a crash), so the run goes on as if unbroken."""
        self.optimizer.load_state_dict(arrays, state["optimizer"])
        self.epoch = state["epoch"]
        self.rng.bit_generator.state = state["rng"]
        keep_records(self.out / "metrics.jsonl", lambda r: r["epoch"] <= self.epoch)


def load_seq2seq(path: str | Path) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict, dict]:
    """A run directory (or its ``checkpoint/``) -> (model, source vocab, target vocab, state,
    the optimizer's arrays)."""
    ckpt = run_checkpoint(path)
    weights, state, arrays = load_checkpoint(ckpt)
    if state.get("kind") != KIND:
        raise ValueError(f"{ckpt}: expected a seq2seq checkpoint, got {state.get('kind')!r}")
    config = dataclass_from_dict(Seq2SeqConfig, state["model_config"])
    src_vocab = Vocabulary.from_dict(state["src_vocab"])
    tgt_vocab = Vocabulary.from_dict(state["tgt_vocab"])
    if (len(src_vocab), len(tgt_vocab)) != (config.src_vocab, config.tgt_vocab):
        raise ValueError(f"{ckpt}: vocabularies of {len(src_vocab)} / {len(tgt_vocab)} entries "
                         f"do not match the model's {config.src_vocab} / {config.tgt_vocab}")
    model = Seq2Seq(config, seed=0)
    model.load_state_dict(weights)
    model.eval()
    return model, src_vocab, tgt_vocab, state, arrays
