"""Speech recognition on the training engine: isolated words (one label per recording) and
connected speech (a label string per utterance, trained with CTC).

Data: a directory of ``{label}_{speaker}_{take}.wav`` recordings (:mod:`.corpus`). Each
recording is read at the feature rate (resampled when it differs), turned into frames of
features (:mod:`rnnlab.data.features`: log-mel or MFCC with deltas, normalised per utterance)
and fed to a :class:`~rnnlab.models.classifier.SequenceClassifier`.

    task "digits"      one step: a batch of recordings of similar length,
                       loss = mean cross-entropy of the pooled softmax
    task "connected"   each epoch draws ``utterances`` new utterances, each 1-7 training
                       recordings joined with pauses, gains and noise (seeded, resumable);
                       loss = mean CTC loss per utterance

After each epoch the validation recordings (a seeded share of train) are scored: accuracy, or
the digit error rate of greedy decoding. The best model is kept; at the end it is scored on
test (for connected speech: greedy and prefix beam search) beside the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from rnnlab.data.augment import Perturbation, mask, perturb, speed
from rnnlab.data.batching import length_batches
from rnnlab.data.features import FeatureConfig, features
from rnnlab.data.text import DataError
from rnnlab.io.checkpoint import load_run_checkpoint
from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
from rnnlab.nn import no_grad
from rnnlab.nn.ctc import beam_decode, greedy_decode, sequence_log_prob
from rnnlab.optim import Adam, ReduceOnPlateau
from rnnlab.tasks.speech.corpus import (
    Joining,
    Recording,
    join,
    joined_set,
    load_audio,
    split_indices,
    valid_indices,
)
from rnnlab.tasks.speech.metrics import (
    confusion_matrix,
    error_rate,
    nearest_neighbour_accuracy,
    string_accuracy,
)
from rnnlab.training import (
    LoopConfig,
    ShardedBatches,
    Stop,
    Task,
    dataclass_from_dict,
    kept_weights,
)
from rnnlab.training.distributed import digest
from rnnlab.training.progress import Progress
from rnnlab.validate import check_non_negative_int, check_positive_int

KIND = "speech"
TASKS = ("digits", "connected")


@dataclass
class SpeechTrainConfig(LoopConfig):
    """How to train a speech model (saved with every checkpoint); the loop's own settings are
    :class:`~rnnlab.training.LoopConfig`'s."""

    task: str = "digits"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3  # Adam; halved when validation stops improving for lr_patience epochs
    lr_patience: int = 2
    clip: float = 5.0
    log_every: int = 0  # one metrics record per epoch
    patience: int = 10  # epochs without a better validation score before stopping (0: never)
    valid: float = 0.1  # share of the training recordings held out for model selection
    test_speaker: str = ""  # all of this speaker's recordings are test (else: official split)
    utterances: int = 2000  # connected: new training utterances per epoch
    eval_utterances: int = 500  # connected: utterances in the validation and test sets
    max_len: int = 7  # connected: at most this many recordings per utterance
    beam: int = 8  # connected: prefix beam width for the final test decoding
    augment: bool = True  # perturb the training audio each epoch (rnnlab.data.augment)
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("batch_size", "utterances", "eval_utterances", "max_len", "beam",
                     "eval_batch_size"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.lr_patience = check_non_negative_int("lr_patience", self.lr_patience)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.valid, int | float) and 0 <= self.valid < 0.5):
            raise ValueError(f"valid: expected a share in [0, 0.5), got {self.valid!r}")


# ----------------------------------------------------------------------------- batches
@dataclass
class SpeechBatch:
    """Padded frames (T, B, D) time-major, their lengths (B,), and the targets: class ids (B,)
    or label strings padded (B, S) with their lengths (B,)."""

    x: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    target_lengths: np.ndarray | None = None


def pad_frames(feats: Sequence[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
    """A list of (N_i, D) feature arrays -> (max N, B, D) zero-padded, and the N_i."""
    lengths = np.array([len(f) for f in feats], np.int64)
    x = np.zeros((int(lengths.max()), len(feats), feats[0].shape[1]), dtype)
    for b, f in enumerate(feats):
        x[:len(f), b] = f
    return x, lengths


def make_batch(feats: Sequence[np.ndarray], targets: Sequence, dtype, ctc: bool) -> SpeechBatch:
    x, lengths = pad_frames(feats, dtype)
    if not ctc:
        return SpeechBatch(x, lengths, np.asarray(targets, np.int64))
    target_lengths = np.array([len(t) for t in targets], np.int64)
    padded = np.zeros((len(targets), max(1, int(target_lengths.max()))), np.int64)
    for b, t in enumerate(targets):
        padded[b, :len(t)] = t
    return SpeechBatch(x, lengths, padded, target_lengths)


# ----------------------------------------------------------------------------- inference
@no_grad()
def recognise(model: SequenceClassifier, feats: Sequence[np.ndarray], batch_size: int = 64,
              beam: int = 0, stop: Callable[[], bool] | None = None,
              confidence: bool = True) -> list[dict]:
    """Each utterance's result, in order: ``labels`` (a list of class ids: one for a
    classifier), ``confidence`` (the class's probability, or the decoded string's probability
    p(labels | x) under CTC; with ``confidence=False`` greedy CTC decoding skips that sum over
    alignments and gives None) and ``log_probs`` (the posteriors: (C,) or (U, C + 1))."""
    ctc = model.config.output == "ctc"
    out: list = [None] * len(feats)
    for idx in length_batches([len(f) for f in feats], batch_size):
        if stop is not None and stop():
            raise Stop
        x, lengths = pad_frames([feats[i] for i in idx], model.dtype)
        logp, steps = model.log_probs(x, lengths)
        for j, i in enumerate(idx):
            if not ctc:
                k = int(logp[j].argmax())
                out[i] = {"labels": [k], "confidence": float(np.exp(logp[j, k])),
                          "log_probs": logp[j]}
                continue
            lp = logp[:steps[j], j:j + 1]
            if beam > 1:
                [(labels, score)] = beam_decode(lp, steps[j:j + 1], beam=beam,
                                                blank=model.config.blank)
            else:
                [labels] = greedy_decode(lp, steps[j:j + 1], blank=model.config.blank)
                score = (sequence_log_prob(lp[:, 0], labels, blank=model.config.blank)
                         if confidence else None)
            out[i] = {"labels": list(labels),
                      "confidence": None if score is None else float(np.exp(score)),
                      "log_probs": lp[:, 0]}
    return out


# ----------------------------------------------------------------------------- the task
class SpeechTask(ShardedBatches, Task):
    """A speech model, its recordings and its train config, for
    :class:`rnnlab.training.Trainer`."""

    kind, items = KIND, "utterances"
    keep_best = True

    def __init__(self, model: SequenceClassifier, feature_cfg: FeatureConfig,
                 recordings: Sequence[Recording], classes: Sequence[str],
                 cfg: SpeechTrainConfig, data: str | Path, progress: bool = True) -> None:
        self.model, self.feature_cfg, self.cfg = model, feature_cfg, cfg
        self.classes, self.data = list(classes), str(Path(data).resolve())
        self.ctc = cfg.task == "connected"
        if self.ctc != (model.config.output == "ctc"):
            raise ValueError(f"task {cfg.task!r} needs a model with output "
                             f"{'ctc' if self.ctc else 'class'}, got {model.config.output!r}")
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r.label for r in recordings} - set(index))
        if unknown:
            raise DataError(f"labels {unknown} are not among the model's classes {classes}")
        self.labels = [index[r.label] for r in recordings]
        self.recordings = list(recordings)
        train, test = split_indices(recordings, cfg.test_speaker)
        fit, valid = valid_indices(recordings, train, cfg.valid, cfg.seed)
        self.split = {"fit": fit, "valid": valid, "test": test}
        with Progress(len(recordings), "reading audio", progress) as bar:
            self.audio = load_audio(recordings, feature_cfg.rate, lambda: bar.update())
        self.rng = np.random.default_rng([cfg.seed, 3])
        self._epoch_rng = self.rng.bit_generator.state
        self.joining = Joining(max_len=cfg.max_len)
        self.perturbation = Perturbation() if cfg.augment else Perturbation.off()
        self.sets = self._evaluation_sets()
        self.confusion: np.ndarray | None = None  # of the test split, once it is scored
        self._feats: list[np.ndarray] = []
        self._targets: list = []
        self._batches: list[list[int]] = []

    def featurize(self, x: np.ndarray) -> np.ndarray:
        return features(x, self.feature_cfg).astype(self.model.dtype, copy=False)

    def _masked(self, feats: np.ndarray) -> np.ndarray:
        """SpecAugment's masks over each block of coefficients (and their deltas)."""
        block = self.feature_cfg.dim // (self.feature_cfg.deltas + 1)
        return mask(feats, self.rng, self.perturbation, block)

    def _evaluation_sets(self) -> dict:
        """{split: (features, targets)} for valid and test: the recordings themselves, or
        (connected) ``eval_utterances`` utterances joined from them with a fixed seed (the
        same for every run, so runs compare)."""
        sets = {}
        for name in ("valid", "test"):
            pool = self.split[name]
            if not pool:
                continue
            if self.ctc:
                joined = joined_set(self.audio, pool, self.labels, self.feature_cfg.rate,
                                    self.cfg.eval_utterances, 1 if name == "valid" else 2,
                                    self.joining)
                sets[name] = ([self.featurize(x) for x, _ in joined], [y for _, y in joined])
            else:
                sets[name] = ([self.featurize(self.audio[i]) for i in pool],
                              [self.labels[i] for i in pool])
        return sets

    # -- the engine's hooks
    def make_optimizer(self):
        opt = Adam(self.model.parameters(), lr=self.cfg.lr)
        if "valid" in self.sets:
            return opt, ReduceOnPlateau(opt, factor=0.5, patience=self.cfg.lr_patience)
        return opt, None

    def epoch_batches(self, epoch: int, position: int) -> int:
        self._epoch_rng = self.rng.bit_generator.state
        fit, rate, rng, how = self.split["fit"], self.feature_cfg.rate, self.rng, self.perturbation
        if self.ctc:  # new utterances, each recording at a random speed
            def change(x):
                return speed(x, *how.speeds[int(rng.integers(len(how.speeds)))])
            joined = [join(self.audio, fit, self.labels, rate, rng, self.joining, change)
                      for _ in range(self.cfg.utterances)]
            self._feats = [self._masked(self.featurize(x)) for x, _ in joined]
            self._targets = [y for _, y in joined]
        elif self.cfg.augment or not self._feats:  # else the same features every epoch
            self._feats = [self._masked(self.featurize(perturb(self.audio[i], rate, rng, how)))
                           for i in fit]
            self._targets = [self.labels[i] for i in fit]
        self._batches = length_batches([len(f) for f in self._feats],
                                       self.global_batch_size(), self.rng)
        return len(self._batches)

    def data_fingerprint(self) -> str:
        return digest(*self.audio, np.asarray(self.labels, np.int64))

    def batch(self, index: int) -> SpeechBatch | None:
        idx = self.own_part(self._batches[index])
        if idx is None:
            return None
        return make_batch([self._feats[i] for i in idx], [self._targets[i] for i in idx],
                          self.model.dtype, self.ctc)

    def step(self, batch: SpeechBatch) -> tuple[float, int]:
        loss = self.model.forward_loss(batch.x, batch.lengths, batch.targets,
                                       batch.target_lengths)
        if math.isfinite(loss):
            self.model.backward_loss()
        return loss, len(batch.lengths)

    def scores(self, split: str, beam: int = 0, stop=None) -> dict:
        """The split's metrics; for a classifier's test split the confusion matrix is kept in
        ``self.confusion`` (gold rows, recognised columns) for the report."""
        feats, targets = self.sets[split]
        results = recognise(self.model, feats, self.cfg.eval_batch_size, beam, stop,
                            confidence=False)
        hyps = [r["labels"] for r in results]
        if not self.ctc and split == "test":
            self.confusion = confusion_matrix(targets, [h[0] for h in hyps], len(self.classes))
        if not self.ctc:
            return {"acc": float(np.mean([h[0] == t for h, t in zip(hyps, targets,
                                                                    strict=True)])),
                    "nll": float(np.mean([-r["log_probs"][t] for r, t in zip(results, targets,
                                                                              strict=True)]))}
        return {"der": error_rate(targets, hyps), "string_acc": string_accuracy(targets, hyps)}

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        if "valid" not in self.sets:
            return {}
        return {f"valid_{k}": v for k, v in self.scores("valid", stop=stop).items()}

    def score(self, metrics: dict) -> float | None:
        if "valid" not in self.sets:
            return None
        # a classifier: the validation cross-entropy, finer-grained than the accuracy of a
        # few hundred recordings (which stops moving once they are all right)
        return metrics["valid_der"] if self.ctc else metrics["valid_nll"]

    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict:
        result = {}  # the engine has loaded the kept weights
        if self.ctc:
            result.update({f"test_greedy_{k}": v for k, v in self.scores("test",
                                                                         stop=stop).items()})
            result.update({f"test_beam_{k}": v for k, v in self.scores(
                "test", beam=self.cfg.beam, stop=stop).items()})
        else:
            result.update({f"test_{k}": v for k, v in self.scores("test", stop=stop).items()})
            result["test_nn_baseline"] = self.nearest_neighbour_baseline()
        return result

    def nearest_neighbour_baseline(self) -> float:
        """The issue's anchor: 1-nearest-neighbour on each recording's averaged MFCCs (no
        deltas, no normalisation), train -> test."""
        plain = replace(self.feature_cfg, kind="mfcc", deltas=0, normalize=False)
        train = [i for part in ("fit", "valid") for i in self.split[part]]
        def mean(i): return features(self.audio[i], plain).mean(axis=0)
        return nearest_neighbour_accuracy(
            np.stack([mean(i) for i in train]), [self.labels[i] for i in train],
            np.stack([mean(i) for i in self.split["test"]]),
            [self.labels[i] for i in self.split["test"]])

    def describe(self, record: dict, seconds: float) -> str:
        if record.get("final"):
            if self.ctc:
                return (f"final (best validation model): test digit error rate greedy "
                        f"{record['test_greedy_der']:.2%} (strings right "
                        f"{record['test_greedy_string_acc']:.2%}), beam {self.cfg.beam} "
                        f"{record['test_beam_der']:.2%} ({record['test_beam_string_acc']:.2%})")
            return (f"final (best validation model): test accuracy {record['test_acc']:.2%} "
                    f"(1-nearest-neighbour on averaged MFCCs {record['test_nn_baseline']:.2%})")
        line = f"epoch {record['epoch']}: loss {record['loss']:.4f}"
        if "valid_acc" in record:
            line += (f", valid accuracy {record['valid_acc']:.2%} (cross-entropy "
                     f"{record['valid_nll']:.4f})")
        if "valid_der" in record:
            line += (f", valid digit error rate {record['valid_der']:.2%} (strings right "
                     f"{record['valid_string_acc']:.2%})")
        return f"{line} ({seconds:.0f} s)"

    def state_dict(self, in_epoch: bool):
        return {}, {"model_config": self.model.config.to_dict(),
                    "features": asdict(self.feature_cfg), "classes": self.classes,
                    "data": self.data, "rng": self.model.rng_states(),
                    "data_rng": self._epoch_rng if in_epoch else self.rng.bit_generator.state}

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        if state["classes"] != self.classes:
            raise ValueError(f"the recordings' classes {self.classes} differ from the "
                             f"checkpoint's {state['classes']}: resume with the same data")
        self.rng.bit_generator.state = state["data_rng"]
        self.model.set_rng_states(state["rng"])

    def run_config(self) -> dict:
        return {"model": self.model.config.to_dict(), "features": asdict(self.feature_cfg),
                "train": asdict(self.cfg)}


@dataclass
class SpeechModel:
    """A trained speech model as :func:`load_speech` gives it."""

    model: SequenceClassifier
    features: FeatureConfig
    classes: list
    train: SpeechTrainConfig
    state: dict

    @property
    def ctc(self) -> bool:
        return self.model.config.output == "ctc"


def load_speech(path: str | Path, best: bool = True):
    """A run directory (or its ``checkpoint/``) -> :class:`SpeechModel` (model in eval mode)
    and the raw (weights, arrays) for resuming."""
    _, weights, state, arrays = load_run_checkpoint(path, KIND, "rnnlab train speech")
    config = dataclass_from_dict(ClassifierConfig, state["model_config"])
    model = SequenceClassifier(config, seed=0)
    model.load_state_dict(kept_weights(weights, arrays, best))
    model.eval()
    fcfg = dataclass_from_dict(FeatureConfig, state["features"])
    train = dataclass_from_dict(SpeechTrainConfig, state["train_config"])
    return SpeechModel(model, fcfg, list(state["classes"]), train, state), weights, arrays
