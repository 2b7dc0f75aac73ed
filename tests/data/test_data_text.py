"""Text data: reading, tokenization, vocabulary, corpora and truncated-BPTT batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnlab.data import (
    Corpus,
    DataError,
    Vocabulary,
    batchify,
    bptt_windows,
    load_corpus,
    num_windows,
    read_text,
    tokenize_chars,
    tokenize_words,
)

# ----------------------------------------------------------------------------- tokenization


def test_tokenize_words_appends_eos_per_line():
    assert tokenize_words("a b\n\n c  d \n") == ["a", "b", "<eos>", "<eos>", "c", "d", "<eos>"]


def test_tokenize_words_without_final_newline_still_ends_the_last_line():
    assert tokenize_words("a b\nc") == ["a", "b", "<eos>", "c", "<eos>"]
    assert tokenize_words("x\n\n") == ["x", "<eos>", "<eos>"]
    assert tokenize_words("") == []


def test_tokenize_words_strips_carriage_returns():
    assert tokenize_words("a b\r\nc\r\n") == ["a", "b", "<eos>", "c", "<eos>"]


def test_tokenize_chars_keeps_every_character():
    assert tokenize_chars("ab\n é") == ["a", "b", "\n", " ", "é"]


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_orders_specials_then_frequency_then_first_appearance():
    v = Vocabulary.build(["c", "b", "a", "b", "a", "d", "<unk>"])
    # a and b both appear twice: b came first. c, d and the literal <unk> once.
    assert v.itos == ["<unk>", "b", "a", "c", "d"]
    assert v.unk_id == 0
    assert v.stoi == {t: i for i, t in enumerate(v.itos)}
    assert len(v) == 5


def test_vocab_is_deterministic():
    tokens = list("the quick brown fox jumps over the lazy dog " * 3)
    assert Vocabulary.build(tokens).itos == Vocabulary.build(list(tokens)).itos


def test_vocab_min_freq_and_max_size():
    tokens = ["a"] * 3 + ["b"] * 2 + ["c"]
    assert Vocabulary.build(tokens, min_freq=2).itos == ["<unk>", "a", "b"]
    assert Vocabulary.build(tokens, max_size=2).itos == ["<unk>", "a"]
    v = Vocabulary.build(tokens, specials=("<pad>", "<unk>"))
    assert v.itos[:2] == ["<pad>", "<unk>"] and v.unk_id == 1


def test_vocab_rejects_bad_arguments():
    with pytest.raises(ValueError, match="expected to contain '<unk>'"):
        Vocabulary.build(["a"], specials=("<pad>",))
    with pytest.raises(ValueError, match="min_freq: expected a positive integer"):
        Vocabulary.build(["a"], min_freq=0)
    with pytest.raises(ValueError, match="max_size: expected at least 2"):
        Vocabulary.build(["a"], max_size=1, specials=("<pad>", "<unk>"))
    with pytest.raises(DataError, match="duplicates"):
        Vocabulary(["<unk>", "a", "a"])


def test_encode_maps_unknowns_and_reports_them():
    v = Vocabulary.build(["a", "b", "a"])
    ids = v.encode(["a", "z", "b", "y", "z"])
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [1, 0, 2, 0, 0])
    ids2, unknown = v.encode(["a", "z", "b", "y", "z"], return_unknown=True)
    np.testing.assert_array_equal(ids2, ids)
    assert unknown == ["z", "y"]
    assert v.encode(["<unk>"], return_unknown=True)[1] == []


def test_encode_decode_round_trip():
    v = Vocabulary.build(tokenize_chars("hello world"), level="char")
    np.testing.assert_array_equal(v.encode("hello"), v.encode(list("hello")))
    assert "".join(v.decode(v.encode("hello"))) == "hello"
    assert v.decode(np.array([[1, 2]])) == [v.itos[1], v.itos[2]]
    with pytest.raises(ValueError, match=r"expected values in \[0, 9\), got 9"):
        v.decode([9])
    word = Vocabulary.build(["hi"], level="word")
    with pytest.raises(TypeError, match="expected a list of words"):
        word.encode("hi there")


def test_vocab_save_load_round_trip(tmp_path):
    v = Vocabulary.build(tokenize_words("le café\nthe cat\n"), level="word")
    path = tmp_path / "vocab.json"
    v.save(path)
    assert list(tmp_path.iterdir()) == [path]  # the temp file was renamed, not left behind
    w = Vocabulary.load(path)
    assert w == v
    assert w.level == "word" and w.itos == v.itos and w.fingerprint() == v.fingerprint()
    assert json.loads(path.read_text(encoding="utf-8")) == v.to_dict()
    assert Vocabulary.from_dict(v.to_dict()) == v
    v.save(path)  # overwriting an existing file works
    assert Vocabulary.load(path) == v


def test_vocab_equality_and_fingerprint():
    a = Vocabulary.build(["x", "y", "y"])
    b = Vocabulary(["<unk>", "y", "x"])
    c = Vocabulary(["<unk>", "x", "y"])
    assert a == b and a != c
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64
    assert a != ["<unk>", "y", "x"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "invalid JSON"),
        ('["<unk>"]', "expected a JSON object"),
        ('{"unk": "<unk>"}', r"missing field\(s\) \['itos'\]"),
        ('{"itos": ["a"], "unk": "<unk>"}', "expected the unknown token"),
        ('{"itos": ["<unk>"], "unk": "<unk>", "extra": 1}', "unknown field"),
        ('{"itos": ["<unk>"], "unk": "<unk>", "level": "byte"}', "expected level"),
    ],
)
def test_vocab_load_rejects_malformed_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_vocab_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*nope.json"):
        Vocabulary.load(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- reading


def test_read_text_reports_offset_and_line_of_bad_utf8(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"first line\nsecond \xc3\xa9\nthird \xff here\n")
    with pytest.raises(DataError) as info:
        read_text(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"{path}, line 3: expected UTF-8 text, got the bytes b'\\xff' at byte 27" in msg


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_read_text_rejects_empty_files(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="expected text") as info:
        read_text(path)
    assert str(path) in str(info.value)


def test_read_text_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*missing.txt"):
        read_text(tmp_path / "missing.txt")


def test_read_text_drops_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhi\n")
    assert read_text(path) == "hi\n"


# ----------------------------------------------------------------------------- corpora


def test_plain_file_is_split_contiguously_by_ratio(tmp_path):
    path = tmp_path / "tiny.txt"
    text = "abcdefghij" * 10  # 100 chars
    path.write_text(text, encoding="utf-8")
    c = load_corpus(path, level="char", split=(0.8, 0.1, 0.1))
    assert isinstance(c, Corpus)
    assert (len(c.train), len(c.valid), len(c.test)) == (80, 10, 10)
    assert "".join(c.vocab.decode(np.concatenate([c.train, c.valid, c.test]))) == text
    assert (c.level, c.name, c.source, c.vocab.level) == ("char", "tiny", str(path), "char")


def test_plain_file_unknowns_in_valid_and_test_map_to_unk(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("a b a b\na b a b\nz\n", encoding="utf-8")  # 12 tokens with <eos>
    c = load_corpus(path, level="word", split=(0.7, 0.15, 0.15))  # 8 / 2 / 2 tokens
    assert c.vocab.itos == ["<unk>", "a", "b", "<eos>"]
    assert c.vocab.decode(c.valid) == ["b", "<eos>"]
    assert c.vocab.decode(c.test) == ["<unk>", "<eos>"]  # "z" never appears in train


def test_split_boundaries_are_not_shifted_by_rounding(tmp_path):
    path = tmp_path / "ten.txt"
    path.write_text("0123456789" * 2, encoding="utf-8")
    c = load_corpus(path, level="char", split=(0.7, 0.2, 0.1))  # 0.7 + 0.2 = 0.8999999999999999
    assert (len(c.train), len(c.valid), len(c.test)) == (14, 4, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"level": "byte"}, ValueError, "level: expected one of"),
        ({"split": (0.9, 0.1)}, ValueError, "three positive ratios"),
        ({"split": (0.9, 0.1, 0.0)}, ValueError, "three positive ratios"),
        ({"split": (0.8, 0.1, 0.2)}, ValueError, "summing to 1"),
        ({"min_freq": 0}, ValueError, "min_freq"),
    ],
)
def test_load_corpus_rejects_bad_arguments(tmp_path, kwargs, error, match):
    path = tmp_path / "t.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(error, match=match):
        load_corpus(path, **kwargs)


def test_load_corpus_too_small_to_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hi", encoding="utf-8")
    with pytest.raises(DataError, match="too few to split"):
        load_corpus(path, level="char")


def test_load_corpus_bad_directory_lists_the_expected_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_corpus(tmp_path)
    msg = str(info.value)
    for name in ("ptb.train.txt", "wiki.test.tokens", "notes.txt"):
        assert name in msg


def test_load_corpus_incomplete_directory_names_the_missing_files(tmp_path):
    (tmp_path / "ptb.train.txt").write_text("a b\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing ptb.valid.txt, ptb.test.txt"):
        load_corpus(tmp_path, level="word")


def test_load_corpus_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        load_corpus(tmp_path / "absent.txt")


def test_directory_layout_uses_its_own_splits(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a b c \n b c \n", encoding="utf-8")
    (tmp_path / "ptb.valid.txt").write_text(" c a \n", encoding="utf-8")
    (tmp_path / "ptb.test.txt").write_text(" d \n", encoding="utf-8")
    c = load_corpus(tmp_path, level="word")
    assert c.name == "ptb"
    assert c.vocab.itos == ["<unk>", "b", "c", "<eos>", "a"]
    assert c.vocab.decode(c.test) == ["<unk>", "<eos>"]
    chars = load_corpus(tmp_path, level="char")
    assert chars.vocab.decode(chars.test) == [" ", "<unk>", " ", "\n"]


def test_bundled_corpus_loads():
    c = load_corpus(None, level="char")
    assert c.source == "bundled:tinyshakespeare" and c.name == "tinyshakespeare"
    assert len(c.vocab) == 65 + 1  # 65 distinct characters and <unk>
    assert len(c.train) + len(c.valid) + len(c.test) == 1_115_394
    assert len(c.train) == 1_003_854  # the first 90%
    assert "".join(c.vocab.decode(c.train[:14])) == "First Citizen:"
    word = load_corpus("tinyshakespeare", level="word")
    assert len(word.train) + len(word.valid) + len(word.test) == 202_651 + 40_000


# ----------------------------------------------------------------------------- batching


def test_batchify_layout():
    data = batchify(np.arange(11), 3)  # N = 3, the last 2 tokens are dropped
    np.testing.assert_array_equal(data, [[0, 3, 6], [1, 4, 7], [2, 5, 8]])
    assert data.shape == (3, 3) and data.flags.c_contiguous


def test_batchify_short_corpus_error():
    with pytest.raises(DataError, match=r"corpus \(5 tokens\) is shorter than one batch window"):
        batchify(np.arange(5), 3)
    with pytest.raises(DataError, match="at least 6 tokens"):
        batchify(np.arange(5), 3)
    assert batchify(np.arange(6), 3).shape == (2, 3)


def test_batchify_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        batchify(np.arange(10), 0)
    with pytest.raises(TypeError, match="1-D integer array"):
        batchify(np.zeros((4, 2), dtype=np.int64), 2)


def test_bptt_windows_explicit_example():
    data = batchify(np.arange(12), 2)  # (6, 2): columns 0..5 and 6..11
    windows = list(bptt_windows(data, 2))
    assert [x.shape for x, _ in windows] == [(2, 2), (2, 2), (1, 2)]
    x, y = windows[0]
    np.testing.assert_array_equal(x, [[0, 6], [1, 7]])
    np.testing.assert_array_equal(y, [[1, 7], [2, 8]])
    x, y = windows[-1]
    np.testing.assert_array_equal(x, [[4, 10]])
    np.testing.assert_array_equal(y, [[5, 11]])


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 200), batch_size=st.integers(1, 8), bptt=st.integers(1, 40))
def test_bptt_windows_cover_every_target_once(n, batch_size, bptt):
    assume(n // batch_size >= 2)  # fewer than 2 rows make no window: nothing to check
    data = batchify(np.arange(n, dtype=np.int64), batch_size)
    windows = list(bptt_windows(data, bptt))
    assert len(windows) == num_windows(data.shape[0], bptt)
    assert all(x.shape == y.shape and x.shape[0] <= bptt for x, y in windows)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in windows]), data[:-1])
    np.testing.assert_array_equal(np.concatenate([y for _, y in windows]), data[1:])


def test_num_windows():
    assert [num_windows(n, 3) for n in (0, 1, 2, 4, 5, 7, 8)] == [0, 0, 1, 1, 2, 2, 3]


# ----------------------------------------------------------------------------- real datasets


def test_ptb_word_level_counts():
    c = load_corpus(shared_data("ptb"), level="word")
    assert c.name == "ptb"
    assert len(c.vocab) == 10_000
    assert "<eos>" in c.vocab and c.vocab.unk_id == 0
    assert (len(c.train), len(c.valid), len(c.test)) == (929_589, 73_760, 82_430)
    assert int((c.test == c.vocab.unk_id).sum()) == 4_794  # only the file's own <unk>s


def test_wikitext2_word_level_counts():
    c = load_corpus(shared_data("wikitext-2"), level="word")
    assert c.name == "wikitext-2"
    assert len(c.vocab) == 33_278
    assert (len(c.train), len(c.valid), len(c.test)) == (2_088_628, 217_646, 245_569)
