"""Speech task pieces: the recordings' index and splits (official takes, held-out speaker,
stratified validation), connected utterances (labels in order, pauses, levels, reproducible),
the scores (edit distance by hand and against a brute-force oracle, digit error rate, confusion
matrix, 1-nearest-neighbour), and on the real FSDD the official split's sizes."""

from __future__ import annotations

import numpy as np
import pytest
from audio_helpers import RATE, TONES, write_corpus
from conftest import shared_data

from rnnlab.data.text import DataError
from rnnlab.tasks.speech.corpus import (
    Joining,
    index_recordings,
    join,
    joined_set,
    labels_of,
    split_indices,
    valid_indices,
)
from rnnlab.tasks.speech.metrics import (
    confusion_matrix,
    edit_distance,
    error_rate,
    format_confusion,
    nearest_neighbour_accuracy,
    string_accuracy,
)


def test_index_and_splits(tmp_path):
    root = write_corpus(tmp_path / "c")
    recs = index_recordings(root)
    assert len(recs) == 3 * 2 * 8 and labels_of(recs) == ["0", "1", "2"]
    assert recs == sorted(recs, key=lambda r: r.path.name)
    train, test = split_indices(recs)
    assert sorted({recs[i].take for i in test}) == [0, 1, 2, 3, 4]
    assert len(test) == 3 * 2 * 5 and len(train) == 3 * 2 * 3
    train, test = split_indices(recs, "bob")
    assert {recs[i].speaker for i in test} == {"bob"} and {recs[i].speaker for i in train} == {
        "ann"}
    fit, valid = valid_indices(recs, train, 0.34, seed=0)
    assert sorted(fit + valid) == sorted(train) and not set(fit) & set(valid)
    groups = {(recs[i].speaker, recs[i].label) for i in valid}
    assert groups == {("ann", lab) for lab in TONES}  # every (speaker, label) gives its share
    assert valid == valid_indices(recs, train, 0.34, seed=0)[1]  # seeded
    assert valid != valid_indices(recs, train, 0.34, seed=5)[1]
    assert valid_indices(recs, train, 0.0, seed=0) == (train, [])


def test_index_refuses(tmp_path):
    with pytest.raises(DataError, match="expected a directory"):
        index_recordings(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: expected .wav files"):
        index_recordings(tmp_path / "empty")
    root = write_corpus(tmp_path / "c", takes=1)
    (root / "hello.wav").write_bytes((root / "0_ann_0.wav").read_bytes())
    with pytest.raises(DataError, match=r"hello.wav: expected a name \{label\}_\{speaker\}"):
        index_recordings(root)
    recs = index_recordings(write_corpus(tmp_path / "d", takes=2))
    with pytest.raises(DataError, match="test speaker: expected one of ann, bob, got 'cy'"):
        split_indices(recs, "cy")
    only_test = [r for r in recs if r.take < 5]
    with pytest.raises(DataError, match="expected recordings in both train and test"):
        split_indices(only_test)


def test_join_keeps_labels_in_order_with_pauses():
    audio = [np.full(800, 0.5, np.float32) * (i + 1) for i in range(3)]
    labels = [0, 1, 2]
    how = Joining(min_len=3, max_len=3, min_pause=0.1, max_pause=0.1, min_gain=1.0,
                  snr=(200.0, 200.0))  # no noise to speak of, fixed pauses
    y, lab = join(audio, [0, 1, 2], labels, RATE, np.random.default_rng(0), how)
    assert len(lab) == 3 and len(y) == 3 * 800 + 4 * 800
    loud = np.abs(y) > 0.25  # every recording is peak-normalised to gain 1
    starts = np.flatnonzero(np.diff(loud.astype(int)) == 1) + 1
    assert starts.tolist() == [800, 2400, 4000]  # a 0.1 s pause before each, one after
    a = joined_set(audio, [0, 1, 2], labels, RATE, 4, seed=3, how=Joining())
    b = joined_set(audio, [0, 1, 2], labels, RATE, 4, seed=3, how=Joining())
    assert all(np.array_equal(x1, x2) and l1 == l2 for (x1, l1), (x2, l2) in zip(a, b,
                                                                                 strict=True))
    assert all(1 <= len(lab) <= 7 for _, lab in a)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        Joining(min_len=3, max_len=2)


def _brute_edit_distance(a, b):
    """The distance by trying every alignment recursively (small inputs only)."""
    if not a or not b:
        return len(a) + len(b)
    return min(_brute_edit_distance(a[1:], b) + 1, _brute_edit_distance(a, b[1:]) + 1,
               _brute_edit_distance(a[1:], b[1:]) + (a[0] != b[0]))


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance([1, 2, 3], []) == 3
    assert edit_distance([4, 0, 9, 6], [4, 0, 9, 6]) == 0
    g = np.random.default_rng(0)
    for _ in range(200):
        a = g.integers(0, 3, g.integers(0, 6)).tolist()
        b = g.integers(0, 3, g.integers(0, 6)).tolist()
        assert edit_distance(a, b) == _brute_edit_distance(a, b), (a, b)


def test_rates_and_confusion():
    refs = [[1, 2, 3], [4], [5, 5]]
    hyps = [[1, 2, 3], [], [5, 6, 5]]
    assert error_rate(refs, hyps) == pytest.approx(2 / 6)  # one deletion, one insertion
    assert string_accuracy(refs, hyps) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="expected 3"):
        error_rate(refs, hyps[:2])
    m = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    text = format_confusion(m, ["a", "b", "c"])
    assert "50.0%" in text and "100.0%" in text
    train = np.array([[0.0, 0.0], [10.0, 10.0]])
    assert nearest_neighbour_accuracy(train, [0, 1], np.array([[1.0, 1.0], [9.0, 8.0]]),
                                      [0, 0]) == 0.5


def test_official_split_of_fsdd():
    root = shared_data("fsdd")
    recs = index_recordings(root)
    train, test = split_indices(recs)
    assert (len(recs), len(train), len(test)) == (3000, 2700, 300)
    assert labels_of(recs) == [str(d) for d in range(10)]
    assert len({r.speaker for r in recs}) == 6
    train, test = split_indices(recs, "theo")
    assert len(test) == 500 and len(train) == 2500
