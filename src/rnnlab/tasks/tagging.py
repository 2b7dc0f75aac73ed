"""Sequence tagging on the training engine: part-of-speech tags (UPOS and XPOS) from CoNLL-U.

Data: a Universal Dependencies treebank (``*-ud-train.conllu``, ``-dev``, ``-test``). The words
of a sentence are its syntactic words (integer IDs; multiword-token ranges and empty nodes are
kept in the files but are not words), with gold tokenization, as the field reports POS accuracy.

One step (a batch of sentences of similar length, :meth:`TaggingTask.step`):

    nll, n = model.forward_loss(batch)         summed over the words of every head
    loss = nll / n                             mean per word (summed over the heads)
    model.backward_loss()                      scale 1/n

After each epoch the dev set is tagged: ``dev_<head>_acc`` per head. The model with the best dev
accuracy of the first head is kept (its weights travel in the checkpoint), and at the end the
kept model tags dev and test: ``test_<head>_acc`` and the accuracy on words unseen in training.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.batching import length_batches
from rnnlab.data.conllu import Sentence, read_conllu
from rnnlab.data.text import DataError, Vocabulary
from rnnlab.io.checkpoint import load_run_checkpoint
from rnnlab.models.tagger import Tagger, TaggerBatch, TaggerConfig
from rnnlab.nn import no_grad
from rnnlab.optim import Adam
from rnnlab.training import (
    LoopConfig,
    ShardedBatches,
    Stop,
    Task,
    dataclass_from_dict,
    kept_weights,
)
from rnnlab.training.distributed import digest
from rnnlab.validate import check_positive_int

KIND = "tagger"
HEADS = ("upos", "xpos")
PAD, UNK = "<pad>", "<unk>"
SPLITS = ("train", "dev", "test")


@dataclass
class TaggingTrainConfig(LoopConfig):
    """How to train a tagger (saved with every checkpoint); the loop's own settings are
    :class:`~rnnlab.training.LoopConfig`'s."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3  # Adam
    clip: float = 5.0
    log_every: int = 0  # one metrics record per epoch
    patience: int = 5  # epochs without a better dev accuracy before stopping (0: never)
    min_freq: int = 2  # a word seen fewer times in train is <unk>
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "min_freq", "eval_batch_size"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")


# ----------------------------------------------------------------------------- data
def find_splits(data: str | Path | None = None, train=None, dev=None, test=None) -> dict:
    """The three CoNLL-U files: ``*-ud-{train,dev,test}.conllu`` in the directory ``data``,
    each replaceable by an explicit path."""
    found = {}
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise DataError(f"{root}: expected a directory holding *-ud-train.conllu, "
                            "*-ud-dev.conllu and *-ud-test.conllu")
        for split in SPLITS:
            hits = sorted(root.glob(f"*-ud-{split}.conllu"))
            if len(hits) > 1:
                raise DataError(f"{root}: expected one *-ud-{split}.conllu, got "
                                f"{', '.join(h.name for h in hits)}")
            if hits:
                found[split] = hits[0]
    for split, path in (("train", train), ("dev", dev), ("test", test)):
        if path is not None:
            found[split] = Path(path)
    missing = [s for s in ("train", "dev") if s not in found]
    if missing:
        raise DataError(f"expected the {' and '.join(missing)} file(s): give --data DIR with "
                        f"*-ud-{{train,dev,test}}.conllu or --{missing[0]} FILE")
    return found


@dataclass
class Vocabs:
    """Word ids (lowercased forms seen ``min_freq`` times in train), character ids (every
    character of train; others are <unk>), the tag sets, and the lowercased forms of train (to
    tell seen words from unseen ones when scoring)."""

    words: Vocabulary
    chars: Vocabulary
    tags: dict  # head -> list of tag strings (id = position)
    seen: frozenset

    @classmethod
    def build(cls, sentences: Sequence[Sentence], min_freq: int = 2) -> Vocabs:
        counts = Counter(f.lower() for s in sentences for f in s.forms())
        words = [PAD, UNK, *sorted(w for w, c in counts.items() if c >= min_freq)]
        chars = [PAD, UNK, *sorted({ch for s in sentences for f in s.forms() for ch in f})]
        tags = {h: sorted({t for s in sentences for t in _gold(s, h)}) for h in HEADS}
        return cls(Vocabulary(words), Vocabulary(chars), tags, frozenset(counts))

    def to_dict(self) -> dict:
        return {"words": self.words.itos, "chars": self.chars.itos, "tags": self.tags,
                "seen": sorted(self.seen)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabs:
        return cls(Vocabulary(d["words"]), Vocabulary(d["chars"]), d["tags"],
                   frozenset(d["seen"]))


def _gold(sentence: Sentence, head: str) -> list[str]:
    return sentence.upos() if head == "upos" else sentence.xpos()


class Encoded:
    """One sentence as ids: ``words`` (n,), ``forms`` (the strings), ``tags`` {head: (n,)} with
    -1 for a gold tag the model does not know (it can never be predicted: counted wrong)."""

    __slots__ = ("forms", "tags", "words")

    def __init__(self, sentence: Sentence, vocabs: Vocabs, tag_ids: dict | None) -> None:
        self.forms = sentence.forms()
        self.words = vocabs.words.encode([f.lower() for f in self.forms])
        self.tags = {h: np.array([ids.get(t, -1) for t in _gold(sentence, h)], np.int64)
                     for h, ids in (tag_ids or {}).items()}


def encode_all(sentences: Sequence[Sentence], vocabs: Vocabs, what: str = "",
               log: Callable[[str], object] = print, with_tags: bool = True) -> list[Encoded]:
    """Encode sentences; a gold tag unseen in train is warned about once per tag set."""
    tag_ids = ({h: {t: i for i, t in enumerate(names)} for h, names in vocabs.tags.items()}
               if with_tags else None)
    encoded = [Encoded(s, vocabs, tag_ids) for s in sentences]
    for h in vocabs.tags if with_tags else ():
        unseen = Counter(t for s, e in zip(sentences, encoded, strict=True)
                         for t, i in zip(_gold(s, h), e.tags[h], strict=True) if i < 0)
        if unseen:
            log(f"warning: {what}: {sum(unseen.values())} {h.upper()} tag(s) never seen in "
                f"training ({', '.join(sorted(unseen))}): counted as wrong")
    return encoded


def make_batch(items: Sequence[Encoded], vocabs: Vocabs, with_tags: bool = True) -> TaggerBatch:
    """Pad a list of sentences into a :class:`TaggerBatch` (time-major)."""
    lengths = np.array([len(e.words) for e in items], np.int64)
    T, B = int(lengths.max()), len(items)
    words = np.zeros((T, B), np.int64)
    spelling = np.zeros((T, B), np.int64)
    index: dict[str, int] = {}
    for b, e in enumerate(items):
        words[:len(e.words), b] = e.words
        spelling[:len(e.words), b] = [index.setdefault(f, len(index)) for f in e.forms]
    forms = list(index)
    spelling_lengths = np.array([len(f) for f in forms], np.int64)
    spellings = np.zeros((int(spelling_lengths.max()), len(forms)), np.int64)
    for u, f in enumerate(forms):
        spellings[:len(f), u] = vocabs.chars.encode(list(f))
    tags = {}
    if with_tags:
        for h in vocabs.tags:
            t = np.zeros((T, B), np.int64)
            for b, e in enumerate(items):
                t[:len(e.words), b] = np.maximum(e.tags[h], 0)  # unknown gold: any valid id
            tags[h] = t
    return TaggerBatch(words, lengths, spelling, spellings, spelling_lengths, tags)


@no_grad()
def predict(model: Tagger, encoded: Sequence[Encoded], vocabs: Vocabs, batch_size: int = 256,
            stop: Callable[[], bool] | None = None) -> list[dict[str, np.ndarray]]:
    """The predicted tag ids of every sentence, per head, in the sentences' order."""
    out: list = [None] * len(encoded)
    for idx in length_batches([len(e.words) for e in encoded], batch_size):
        if stop is not None and stop():
            raise Stop
        pred = model.predict(make_batch([encoded[i] for i in idx], vocabs, with_tags=False))
        for j, i in enumerate(idx):
            out[i] = {h: pred[h][j] for h in pred}
    return out


def score(model: Tagger, encoded: Sequence[Encoded], vocabs: Vocabs, batch_size: int = 256,
          stop: Callable[[], bool] | None = None) -> dict:
    """Accuracy per head over every word, and over the words unseen in training."""
    preds = predict(model, encoded, vocabs, batch_size, stop)
    unseen = _unseen(encoded, vocabs)
    result = {}
    for h in vocabs.tags:
        _, _, right = _hits(encoded, preds, h)
        result[f"{h}_acc"] = float(right.mean())
        result[f"{h}_unseen_acc"] = float(right[unseen].mean()) if unseen.any() else math.nan
    result["unseen_words"] = int(unseen.sum())
    return result


def _unseen(encoded: Sequence[Encoded], vocabs: Vocabs) -> np.ndarray:
    """(words,) True where the word's form never occurs in training."""
    return np.concatenate([[f.lower() not in vocabs.seen for f in e.forms] for e in encoded])


def _hits(encoded: Sequence[Encoded], preds: Sequence[dict], head: str):
    """(gold, predicted, right) over every word of the sentences, for one head."""
    gold = np.concatenate([e.tags[head] for e in encoded])
    pred = np.concatenate([p[head] for p in preds])
    return gold, pred, gold == pred


def most_frequent_tag(train: Sequence[Sentence], sentences: Sequence[Sentence],
                      head: str = "upos") -> float:
    """The baseline every tagger is measured against: each word gets the tag it had most often
    in training (ties: the tag first in sorted order); a word never seen gets the most frequent
    tag of all. Returns its accuracy over every word of ``sentences``."""
    per_word: dict[str, Counter] = {}
    overall: Counter = Counter()
    for s in train:
        for f, t in zip(s.forms(), _gold(s, head), strict=True):
            per_word.setdefault(f, Counter())[t] += 1
            overall[t] += 1
    best = {f: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for f, c in per_word.items()}
    fallback = min(overall.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    right = total = 0
    for s in sentences:
        for f, t in zip(s.forms(), _gold(s, head), strict=True):
            right += best.get(f, fallback) == t
            total += 1
    return right / max(total, 1)


# ----------------------------------------------------------------------------- the task
class TaggingTask(ShardedBatches, Task):
    """A tagger, its treebank and its train config, for :class:`rnnlab.training.Trainer`."""

    kind, items = KIND, "words"
    keep_best = True  # the model kept: the best dev accuracy of the first head

    def __init__(self, model: Tagger, vocabs: Vocabs, splits: dict[str, list[Sentence]],
                 cfg: TaggingTrainConfig, paths: dict | None = None,
                 log: Callable[[str], object] = print) -> None:
        self.model, self.vocabs, self.cfg = model, vocabs, cfg
        self.paths = {k: str(Path(v).resolve()) for k, v in (paths or {}).items()}
        self.data = {k: encode_all(v, vocabs, k, log) for k, v in splits.items()}
        self.baselines = {f"{k}_{h}_baseline": most_frequent_tag(splits["train"], v, h)
                          for k, v in splits.items() if k != "train" for h in vocabs.tags}
        self.rng = np.random.default_rng([cfg.seed, 1])
        self._epoch_rng = self.rng.bit_generator.state
        self._batches: list[list[int]] = []

    def data_fingerprint(self) -> str:
        return digest(*(x for e in self.data["train"]
                        for x in ("\n".join(e.forms), e.words, *e.tags.values())))

    def make_optimizer(self):
        return Adam(self.model.parameters(), lr=self.cfg.lr), None

    def epoch_batches(self, epoch: int, position: int) -> int:
        self._epoch_rng = self.rng.bit_generator.state
        train = self.data["train"]
        self._batches = length_batches([len(e.words) for e in train],
                                       self.global_batch_size(), self.rng)
        return len(self._batches)

    def batch(self, index: int) -> TaggerBatch | None:
        idx = self.own_part(self._batches[index])
        if idx is None:
            return None
        return make_batch([self.data["train"][i] for i in idx], self.vocabs)

    def step(self, batch: TaggerBatch) -> tuple[float, int]:
        n = int(batch.lengths.sum())
        nll, _ = self.model.forward_loss(batch, scale=1.0 / n)
        loss = nll / n
        if math.isfinite(loss):
            self.model.backward_loss()
        return loss, n

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        scores = score(self.model, self.data["dev"], self.vocabs, self.cfg.eval_batch_size, stop)
        return {f"dev_{k}": v for k, v in scores.items()}

    def score(self, metrics: dict) -> float:
        return -metrics[f"dev_{next(iter(self.vocabs.tags))}_acc"]

    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict:
        result = {}  # the engine has loaded the kept weights
        for split in ("dev", "test"):
            if split in self.data:
                scores = score(self.model, self.data[split], self.vocabs,
                               self.cfg.eval_batch_size, stop)
                result.update({f"{split}_{k}": v for k, v in scores.items()})
        return {**result, **self.baselines}

    def describe(self, record: dict, seconds: float) -> str:
        heads = list(self.vocabs.tags)
        if record.get("final"):
            parts = [f"{s} {h.upper()} {record[f'{s}_{h}_acc']:.2%} (most frequent tag "
                     f"{record[f'{s}_{h}_baseline']:.2%})" for s in ("dev", "test")
                     for h in heads if f"{s}_{h}_acc" in record]
            return "final (best dev model): " + ", ".join(parts)
        accs = ", ".join(f"dev {h.upper()} {record[f'dev_{h}_acc']:.2%}" for h in heads)
        return f"epoch {record['epoch']}: loss {record['loss']:.4f}, {accs} ({seconds:.0f} s)"


    def state_dict(self, in_epoch: bool):
        return {}, {"model_config": self.model.config.to_dict(),
                        "vocabs": self.vocabs.to_dict(), "rng": self.model.rng_states(),
                        "data": self.paths,
                        "data_rng": self._epoch_rng if in_epoch else self.rng.bit_generator.state}

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        if Vocabs.from_dict(state["vocabs"]).to_dict() != self.vocabs.to_dict():
            raise ValueError("the treebank's vocabularies do not match the checkpoint's: "
                             "resume with the training data the run started with")
        self.rng.bit_generator.state = state["data_rng"]
        self.model.set_rng_states(state["rng"])

    def run_config(self) -> dict:
        return {"model": self.model.config.to_dict(), "train": asdict(self.cfg)}



def load_tagger(path: str | Path, best: bool = True):
    """A run directory (or its ``checkpoint/``) -> (model in eval mode, vocabs, state, weights,
    arrays). ``best``: the weights with the best dev accuracy (else the last ones)."""
    _, weights, state, arrays = load_run_checkpoint(path, KIND, "rnnlab train tagger")
    config = dataclass_from_dict(TaggerConfig, state["model_config"])
    vocabs = Vocabs.from_dict(state["vocabs"])
    model = Tagger(config, unk_id=vocabs.words.unk_id, seed=0)
    model.load_state_dict(kept_weights(weights, arrays, best))
    model.eval()
    return model, vocabs, state, weights, arrays


def read_splits(paths: dict) -> dict[str, list[Sentence]]:
    return {split: read_conllu(path) for split, path in paths.items()}


# ----------------------------------------------------------------------------- reports
def tag_report(encoded: Sequence[Encoded], preds: Sequence[dict], vocabs: Vocabs) -> dict:
    """Accuracy per head (all words, words seen and unseen in training), per-tag precision,
    recall and F1, and the first head's confusion matrix (gold rows, predicted columns).
    Returns {"text": the printed report, "accuracy": {head: acc}, "confusion": (K, K)}."""
    unseen = _unseen(encoded, vocabs)
    lines, accuracy, confusion = [], {}, None
    lines.append(f"{len(encoded):,} sentences, {unseen.size:,} words ({int(unseen.sum()):,} "
                 f"unseen in training)")
    for h, names in vocabs.tags.items():
        gold, pred, right = _hits(encoded, preds, h)
        accuracy[h] = float(right.mean())
        parts = [f"{h.upper()} accuracy {right.mean():.2%}"]
        if (~unseen).any():
            parts.append(f"seen words {right[~unseen].mean():.2%}")
        if unseen.any():
            parts.append(f"unseen words {right[unseen].mean():.2%}")
        lines.append(", ".join(parts))
        lines.append(f"  {'tag':<8} {'precision':>9} {'recall':>7} {'F1':>7} {'gold':>7}")
        for i, name in enumerate(names):
            tp = int(np.sum((pred == i) & right))
            n_pred, n_gold = int(np.sum(pred == i)), int(np.sum(gold == i))
            if not n_gold and not n_pred:
                continue
            p = tp / n_pred if n_pred else 0.0
            r = tp / n_gold if n_gold else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            lines.append(f"  {name:<8} {p:9.2%} {r:7.2%} {f1:7.2%} {n_gold:7,}")
        if confusion is None:
            K = len(names)
            known = gold >= 0
            confusion = np.bincount(gold[known] * K + pred[known], minlength=K * K).reshape(K, K)
    return {"text": "\n".join(lines), "accuracy": accuracy, "confusion": confusion}
