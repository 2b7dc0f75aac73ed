"""A directory of labelled recordings, its splits, and connected utterances made from it.

Recordings are named ``{label}_{speaker}_{take}.wav`` (the Free Spoken Digit Dataset's
convention: ``7_theo_12.wav`` is take 12 of speaker theo saying "seven"); the label is what a
classifier learns, and for connected speech each label is one symbol of the transcript.

Splits (every one returns recording indices):

    official      takes 0-4 are test, the rest train (FSDD's README: 2,700 / 300)
    speaker S     every recording of speaker S is test, the other speakers' are train
    valid         a seeded fraction of train set aside for model selection, the same share of
                  every (speaker, label) pair
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.audio import list_wavs, read_wav
from rnnlab.data.text import DataError

NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)\.wav$", re.IGNORECASE)
OFFICIAL_TEST_TAKES = 5  # FSDD: takes 0-4 are the test set


@dataclass(frozen=True)
class Recording:
    path: Path
    label: str
    speaker: str
    take: int


def index_recordings(directory: str | Path) -> list[Recording]:
    """Every ``{label}_{speaker}_{take}.wav`` under ``directory`` (or its ``recordings/``),
    sorted by name. A WAV named otherwise is an error that names it."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: expected a directory of {{label}}_{{speaker}}_{{take}}.wav "
                        "recordings")
    if (root / "recordings").is_dir() and not any(root.glob("*.wav")):
        root = root / "recordings"
    recordings = []
    for path in list_wavs(root):
        m = NAME.match(path.name)
        if m is None:
            raise DataError(f"{path}: expected a name {{label}}_{{speaker}}_{{take}}.wav (e.g. "
                            "7_theo_12.wav), got another")
        recordings.append(Recording(path, m["label"], m["speaker"], int(m["take"])))
    return recordings


def labels_of(recordings: Sequence[Recording]) -> list[str]:
    """The sorted label set (class i is ``labels[i]``)."""
    return sorted({r.label for r in recordings})


def split_indices(recordings: Sequence[Recording], test_speaker: str = "",
                  ) -> tuple[list[int], list[int]]:
    """(train, test) indices: the official take split, or every recording of ``test_speaker``
    as test."""
    if test_speaker:
        speakers = sorted({r.speaker for r in recordings})
        if test_speaker not in speakers:
            raise DataError(f"test speaker: expected one of {', '.join(speakers)}, got "
                            f"{test_speaker!r}")
        test = [i for i, r in enumerate(recordings) if r.speaker == test_speaker]
    else:
        test = [i for i, r in enumerate(recordings) if r.take < OFFICIAL_TEST_TAKES]
    held = set(test)
    train = [i for i in range(len(recordings)) if i not in held]
    if not train or not test:
        raise DataError(f"expected recordings in both train and test, got {len(train)} and "
                        f"{len(test)} (the test takes are 0-{OFFICIAL_TEST_TAKES - 1})")
    return train, test


def valid_indices(recordings: Sequence[Recording], train: Sequence[int], fraction: float,
                  seed: int) -> tuple[list[int], list[int]]:
    """Split ``train`` into (fit, valid): ``fraction`` of every (speaker, label) group, drawn
    with ``seed``, goes to valid (at least one per group when fraction > 0)."""
    if fraction <= 0:
        return list(train), []
    rng = np.random.default_rng([seed, 7])
    groups: dict[tuple, list[int]] = {}
    for i in train:
        groups.setdefault((recordings[i].speaker, recordings[i].label), []).append(i)
    valid = []
    for key in sorted(groups):
        members = groups[key]
        n = max(1, round(fraction * len(members)))
        if n >= len(members):
            continue  # a group too small to split stays in fit
        valid.extend(members[j] for j in rng.choice(len(members), n, replace=False))
    held = set(valid)
    return [i for i in train if i not in held], sorted(valid)


def load_audio(recordings: Sequence[Recording], rate: int, progress=None) -> list[np.ndarray]:
    """Every recording's samples at ``rate`` (float32), in order; ``progress()`` after each."""
    out = []
    for r in recordings:
        x, _ = read_wav(r.path, rate=rate)
        out.append(x.astype(np.float32))
        if progress is not None:
            progress()
    return out


# ----------------------------------------------------------------------------- connected speech
@dataclass
class Joining:
    """How connected utterances are made: 1 to ``max_len`` recordings, each peak-normalised
    and scaled by a random gain in [``min_gain``, 1], separated (and led and trailed) by
    pauses of ``min_pause``..``max_pause`` seconds, the whole under white noise ``snr`` dB
    (a range) below its RMS."""

    min_len: int = 1
    max_len: int = 7
    min_pause: float = 0.05
    max_pause: float = 0.3
    min_gain: float = 0.3
    snr: tuple = (20.0, 40.0)

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"lengths: expected 1 <= min_len <= max_len, got {self.min_len} "
                             f"and {self.max_len}")
        if not 0 <= self.min_pause <= self.max_pause:
            raise ValueError(f"pauses: expected 0 <= min_pause <= max_pause, got "
                             f"{self.min_pause} and {self.max_pause}")
        if not 0 < self.min_gain <= 1:
            raise ValueError(f"min_gain: expected a number in (0, 1], got {self.min_gain}")
        self.snr = tuple(float(s) for s in self.snr)


def join(audio: Sequence[np.ndarray], pool: Sequence[int], labels: Sequence[int], rate: int,
         rng: np.random.Generator, how: Joining, change=None) -> tuple[np.ndarray, list[int]]:
    """One connected utterance from recordings of ``pool`` -> (samples, label ids);
    ``change(x)`` (e.g. a speed perturbation) is applied to each recording first."""
    n = int(rng.integers(how.min_len, how.max_len + 1))
    picks = rng.choice(len(pool), n)
    pieces = []
    for j in picks:
        x = audio[pool[j]] if change is None else change(audio[pool[j]])
        peak = float(np.abs(x).max()) or 1.0
        pause = rng.uniform(how.min_pause, how.max_pause)
        pieces.append(np.zeros(int(pause * rate), np.float32))
        pieces.append(x * np.float32(rng.uniform(how.min_gain, 1.0) / peak))
    pieces.append(np.zeros(int(rng.uniform(how.min_pause, how.max_pause) * rate), np.float32))
    y = np.concatenate(pieces)
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) or 1.0
    snr = rng.uniform(*how.snr)
    y += (rng.standard_normal(len(y)) * rms * 10 ** (-snr / 20)).astype(np.float32)
    return y, [labels[pool[j]] for j in picks]


def joined_set(audio: Sequence[np.ndarray], pool: Sequence[int], labels: Sequence[int],
               rate: int, count: int, seed: int, how: Joining) -> list[tuple[np.ndarray, list]]:
    """``count`` connected utterances drawn with ``seed``: a fixed evaluation set."""
    rng = np.random.default_rng([seed, 11])
    return [join(audio, pool, labels, rate, rng, how) for _ in range(count)]

