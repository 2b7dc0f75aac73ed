"""How speech recognisers are scored: accuracy and a confusion matrix for isolated words; the
edit distance for label strings (digit error rate = substitutions + deletions + insertions over
the reference digits, as word error rate is defined) and whole-string accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions that turn
    ``ref`` into ``hyp`` (one row of the dynamic programme at a time)."""
    row = list(range(len(hyp) + 1))  # d(0, j) = j insertions
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i  # d(i, 0) = i deletions
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1,  # delete r
                                       row[j - 1] + 1,  # insert h
                                       prev + (r != h))  # substitute (or match)
    return row[-1]


def error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Summed edit distance over summed reference length (a digit or word error rate)."""
    if len(refs) != len(hyps):
        raise ValueError(f"hyps: expected {len(refs)} (one per reference), got {len(hyps)}")
    total = sum(len(r) for r in refs)
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True)) / max(total, 1)


def string_accuracy(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """The share of utterances whose whole label string is right."""
    return float(np.mean([list(r) == list(h) for r, h in zip(refs, hyps, strict=True)]))


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], classes: int) -> np.ndarray:
    """(classes, classes) counts: row = gold, column = predicted."""
    gold, pred = np.asarray(gold, np.int64), np.asarray(pred, np.int64)
    return np.bincount(gold * classes + pred, minlength=classes * classes).reshape(classes,
                                                                                   classes)


def format_confusion(confusion: np.ndarray, names: Sequence[str]) -> str:
    """The confusion matrix as text, with per-class recall."""
    width = max(4, *(len(n) for n in names), len(str(confusion.max())))
    head = " " * width + " " + " ".join(f"{n:>{width}}" for n in names) + "  recall"
    lines = [head]
    for i, n in enumerate(names):
        total = confusion[i].sum()
        recall = f"{confusion[i, i] / total:7.1%}" if total else "      -"
        lines.append(f"{n:>{width}} " + " ".join(f"{c:>{width}}" for c in confusion[i])
                     + " " + recall)
    return "\n".join(lines)


def nearest_neighbour_accuracy(train: np.ndarray, train_labels: Sequence[int],
                               test: np.ndarray, test_labels: Sequence[int]) -> float:
    """1-nearest-neighbour (Euclidean) accuracy of fixed-size vectors: the anchor the issue
    computes on averaged MFCCs."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    d = (test ** 2).sum(1)[:, None] - 2 * test @ train.T + (train ** 2).sum(1)[None, :]
    pred = np.asarray(train_labels)[d.argmin(axis=1)]
    return float(np.mean(pred == np.asarray(test_labels)))
