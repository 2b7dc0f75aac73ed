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

import json
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
from rnnlab.io.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.progress import Progress
from rnnlab.train import TrainingDiverged
from rnnlab.translate import greedy_decode

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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip: expected a number >= 0, got {self.clip!r}")


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
    bos, eos = tgt_vocab.stoi[P.BOS], tgt_vocab.stoi[P.EOS]
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

    def train_step(self, batch: list[P.Pair]) -> tuple[float, float]:
        """One minibatch: returns (mean loss per target token, gradient norm before clipping)."""
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
        return loss, norm

    def _diverged(self, what: str):
        kept = (f"the checkpoint of epoch {self.epoch} is kept" if self.epoch else
                "no checkpoint was written yet")
        raise TrainingDiverged(f"training diverged at epoch {self.epoch + 1} ({what}); {kept} "
                               "(try a lower --lr or --clip)")

    def fit(self) -> dict:
        """Train ``cfg.epochs`` epochs; returns the last metrics record."""
        self.out.mkdir(parents=True, exist_ok=True)
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
                loss, norm = self.train_step(batch)
                losses.append(loss)
                tokens += sum(len(t) + 1 for _, t in batch)
                bar.update(loss=f"{loss:.4f}", grad_norm=f"{norm:.2f}")
        train_time = time.perf_counter() - start
        self.epoch += 1
        scores = score(self.model, self.test, self.src_vocab, self.tgt_vocab,
                       cfg.eval_batch_size)
        record = {"epoch": self.epoch, "loss": float(np.mean(losses)), "lr": lr,
                  "test_exact_match": scores["exact_match"], "test_char_acc": scores["char_acc"],
                  "train_seconds": round(train_time, 2),
                  "tokens_per_s": round(tokens / train_time, 1)}
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.save()
        self.log(f"epoch {self.epoch}: loss {record['loss']:.4f}, test exact match "
                 f"{record['test_exact_match']:.2%}, char accuracy {record['test_char_acc']:.2%}"
                 f" ({train_time:.1f} s)")
        return record

    def save(self) -> None:
        """Replace ``checkpoint/`` atomically; also write config.json beside it."""
        arrays, meta = self.optimizer.state_dict()
        state = {"kind": KIND, "model_config": self.model.config.to_dict(),
                 "train_config": asdict(self.cfg), "src_vocab": self.src_vocab.to_dict(),
                 "tgt_vocab": self.tgt_vocab.to_dict(), "optimizer": meta, "epoch": self.epoch,
                 "rng": self.rng.bit_generator.state}  # metrics.jsonl holds the history
        save_checkpoint(self.out / "checkpoint", self.model.state_dict(), state, arrays)
        atomic_write_json(self.out / "config.json", {"model": state["model_config"],
                                                    "train": state["train_config"]})


def load_seq2seq(path: str | Path) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict]:
    """A run directory (or its ``checkpoint/``) -> (model, source vocab, target vocab, state)."""
    path = Path(path)
    ckpt = path if (path / "checkpoint.json").is_file() else path / "checkpoint"
    weights, state, _ = load_checkpoint(ckpt)
    if state.get("kind") != KIND:
        raise ValueError(f"{ckpt}: expected a seq2seq checkpoint, got {state.get('kind')!r}")
    config = Seq2SeqConfig(**state["model_config"])
    src_vocab = Vocabulary.from_dict(state["src_vocab"])
    tgt_vocab = Vocabulary.from_dict(state["tgt_vocab"])
    if (len(src_vocab), len(tgt_vocab)) != (config.src_vocab, config.tgt_vocab):
        raise ValueError(f"{ckpt}: vocabularies of {len(src_vocab)} / {len(tgt_vocab)} entries "
                         f"do not match the model's {config.src_vocab} / {config.tgt_vocab}")
    model = Seq2Seq(config, seed=0)
    model.load_state_dict(weights)
    model.eval()
    return model, src_vocab, tgt_vocab, state
