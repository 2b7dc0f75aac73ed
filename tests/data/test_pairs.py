"""Sequence pairs for seq2seq: reading, the book's split, synthetic tasks, encoding, batching."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from rnnlab.data.pairs import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    addition_pairs,
    book_split,
    build_vocabs,
    date_pairs,
    decode,
    deduplicate,
    encode,
    minibatches,
    read_pairs,
)
from rnnlab.data.text import UNK, DataError

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]  # fmt: skip
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@pytest.fixture(scope="module")
def addition():
    return read_pairs(shared_data("dlfs2-seq2seq/addition.txt"))


@pytest.fixture(scope="module")
def dates():
    return read_pairs(shared_data("dlfs2-seq2seq/date.txt"))


def _write(tmp_path: Path, text: str | bytes, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _parse_date(text: str) -> tuple[date, str]:
    """Independent reader of the date.txt shapes: (the date, the shape with digits as 9)."""
    numeric = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d\d)", text)
    if numeric:
        m, d, yy = map(int, numeric.groups())
        return date(2000 + yy if yy < 70 else 1900 + yy, m, d), "m/d/yy"
    named = re.fullmatch(r"(?:(\w+), )?(\w+) (\d{1,2}), (\d{4})", text)
    assert named, text
    weekday, month, d, y = named.groups()
    case = "upper" if month.isupper() else "lower" if month.islower() else "title"
    assert month in (month.upper(), month.lower(), month.title()), text
    full = month.lower() in MONTHS
    names = MONTHS if full else [name[:3] for name in MONTHS]
    m = names.index(month.lower()) + 1
    day = date(int(y), m, int(d))
    if weekday is not None:
        assert weekday.lower() == WEEKDAYS[day.weekday()], text
        assert weekday == {"upper": weekday.upper(), "lower": weekday.lower()}.get(case, weekday)
    kind = "month" if full and month.lower() != "may" else "mon" if not full else "may"
    return day, f"{'weekday, ' if weekday else ''}{kind} {case}"


# ----------------------------------------------------------------------------- reading


def test_read_pairs_book_format_strips_padding_and_splits_at_first_underscore(tmp_path):
    path = _write(tmp_path, "16+75  _91  \n\n1+2    _3    \r\na b_c_d \n")
    assert read_pairs(path) == [("16+75", "91"), ("1+2", "3"), ("a b", "c_d")]


def test_read_pairs_tsv_detected_from_first_non_empty_line(tmp_path):
    path = _write(tmp_path, "\n  \nhello world\tbonjour  \r\nx_y\tz\n", name="p.tsv")
    assert read_pairs(path) == [("hello world", "bonjour"), ("x_y", "z")]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("a\tb\nc\td\te\n", "line 2", "exactly one tab"),
        ("a\tb\n\nno tab here\n", "line 3", "exactly one tab"),
        ("1+1_2\n\n2+2 4\n", "line 3", "'_'"),
        ("1+1_2\n   _4\n", "line 2", "non-empty source"),
        ("1+1_2\n2+2_   \n", "line 2", "non-empty target"),
        ("a\tb\n\tb\n", "line 2", "non-empty source"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path, text, where, what):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_pairs(path)
    message = str(info.value)
    assert str(path) in message and f"{where}:" in message and what in message
    assert "\n" not in message


def test_read_pairs_empty_file_is_a_data_error(tmp_path):
    for text in ("", "\n \n"):
        path = _write(tmp_path, text)
        with pytest.raises(DataError, match=re.escape(str(path))):
            read_pairs(path)


def test_read_pairs_non_utf8_names_file_byte_and_line(tmp_path):
    path = _write(tmp_path, b"1+1_2\n2+2_\xff4\n")
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert f"{path}, line 2: expected UTF-8 text, got the bytes b'\\xff' at byte 10" in str(
        info.value)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "nope.txt")


def test_real_addition_file(addition):
    assert len(addition) == 50_000
    assert addition[:2] == [("16+75", "91"), ("52+607", "659")]
    for source, target in addition:
        a, b = source.split("+")
        assert int(a) + int(b) == int(target)


def test_real_date_file(dates):
    assert len(dates) == 50_000
    assert dates[0] == ("september 27, 1994", "1994-09-27")
    assert len(deduplicate(dates)) == 41_578
    assert all(len(s) <= 29 and len(t) == 10 for s, t in dates)


# ----------------------------------------------------------------------------- splits


def test_deduplicate_keeps_first_occurrences_in_order():
    pairs = [("a", "1"), ("b", "2"), ("a", "1"), ("a", "2"), ("b", "2")]
    assert deduplicate(pairs) == [("a", "1"), ("b", "2"), ("a", "2")]


def _legacy_permutation(n: int, seed: int) -> np.ndarray:
    """The book's order, with the global legacy RNG on purpose (state restored afterwards)."""
    saved = np.random.get_state()  # noqa: NPY002 - the book's own calls are the oracle
    try:
        indices = np.arange(n)
        np.random.seed(seed)  # noqa: NPY002
        np.random.shuffle(indices)  # noqa: NPY002
        return indices
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def test_book_split_sizes_and_order_match_the_book():
    pairs = [(str(i), str(i)) for i in range(50_000)]
    saved = np.random.get_state()[1].copy()  # noqa: NPY002 - checks the global RNG is untouched
    train, test = book_split(pairs)
    assert np.array_equal(np.random.get_state()[1], saved)  # noqa: NPY002
    assert (len(train), len(test)) == (45_000, 5_000)
    order = [int(s) for s, _ in train + test]
    assert order == _legacy_permutation(50_000, 1984).tolist()
    assert sorted(order) == list(range(50_000))
    assert book_split(pairs) == (train, test)
    assert book_split(pairs, seed=1)[0] != train


def test_book_split_small_sizes_and_fraction():
    pairs = [(str(i), "x") for i in range(70)]
    assert [len(part) for part in book_split(pairs)] == [63, 7]
    assert [len(part) for part in book_split(pairs, test_fraction=0.25)] == [53, 17]
    assert book_split(pairs, test_fraction=0)[1] == []
    with pytest.raises(ValueError, match="test_fraction"):
        book_split(pairs, test_fraction=1.0)


def test_book_split_real_addition(addition):
    train, test = book_split(addition)
    assert (len(train), len(test)) == (45_000, 5_000)
    expected = [addition[i] for i in _legacy_permutation(50_000, 1984)]
    assert train + test == expected


# ----------------------------------------------------------------------------- synthetic


def test_addition_pairs_are_correct_sums_in_range():
    pairs = addition_pairs(2000, seed=3)
    operands = []
    for source, target in pairs:
        assert re.fullmatch(r"\d+\+\d+", source)
        a, b = map(int, source.split("+"))
        assert target == str(a + b)
        operands += [a, b]
    assert min(operands) >= 0 and max(operands) <= 999
    assert max(operands) >= 990 and min(operands) <= 9  # the whole range is used
    assert all(int(s.split("+")[0]) < 10 for s, _ in addition_pairs(50, digits=1))


def test_addition_pairs_deterministic_per_seed():
    assert addition_pairs(100, seed=5) == addition_pairs(100, seed=5)
    assert addition_pairs(100, seed=5) != addition_pairs(100, seed=6)
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        addition_pairs(0)


def test_date_pairs_targets_match_sources():
    pairs = date_pairs(3000, seed=7)
    shapes = Counter()
    for source, target in pairs:
        day, shape = _parse_date(source)
        assert day == date.fromisoformat(target)
        assert date(1970, 1, 1) <= day <= date(2017, 12, 31)
        assert len(source) <= 29
        shapes[shape] += 1
    named = {k for k in shapes if k != "m/d/yy" and "may" not in k}
    assert len(named) == 9 and shapes["m/d/yy"] > 500  # 3 forms x 3 cases, plus numeric


def test_date_pairs_deterministic_per_seed():
    assert date_pairs(200, seed=1) == date_pairs(200, seed=1)
    assert date_pairs(200, seed=1) != date_pairs(200, seed=2)


def test_date_pairs_shapes_are_those_of_date_txt(dates):
    def shapes(pairs):
        return {(_parse_date(s)[1], re.sub(r"\d", "9", s).count("9")) for s, _ in pairs}

    for s, t in dates:
        assert _parse_date(s)[0] == date.fromisoformat(t)  # the test parser reads the real file
    assert shapes(date_pairs(20_000, seed=0)) == shapes(dates)


# ----------------------------------------------------------------------------- ids


def test_build_vocabs_specials_first_and_sides_apart():
    src, tgt = build_vocabs([("ab+", "12"), ("ba", "3")])
    for vocab in (src, tgt):
        assert vocab.itos[:4] == list(SPECIALS) == [PAD, UNK, BOS, EOS]
        assert vocab.level == "char"
    assert set(src.itos[4:]) == {"a", "b", "+"}
    assert set(tgt.itos[4:]) == {"1", "2", "3"}


def test_encode_pads_at_the_end_time_major():
    src, _ = build_vocabs([("abc", "x")])
    ids, lengths = encode(["ab", "cab", "a"], src)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.shape == (3, 3) and lengths.tolist() == [2, 3, 1]
    a, b, c = (src.stoi[ch] for ch in "abc")
    assert ids.T.tolist() == [[a, b, 0], [c, a, b], [a, 0, 0]]


def test_encode_reverse_bos_eos_and_unknown():
    src, _ = build_vocabs([("abc", "x")])
    ids, lengths = encode(["abz", "c"], src, bos=True, eos=True, reverse=True)
    a, b, c = (src.stoi[ch] for ch in "abc")
    assert lengths.tolist() == [5, 3]
    assert ids[:, 0].tolist() == [2, 1, b, a, 3]  # <bos> z(unk) b a <eos>
    assert ids[:, 1].tolist() == [2, c, 3, 0, 0]
    only_eos, n = encode([""], src, eos=True)
    assert only_eos.tolist() == [[3]] and n.tolist() == [1]


def test_encode_decode_round_trip():
    pairs = date_pairs(300, seed=4)
    src, tgt = build_vocabs(pairs)
    sources = [s for s, _ in pairs]
    ids, lengths = encode(sources, src, reverse=True)
    for b, s in enumerate(sources):
        assert decode(ids[: lengths[b], b], src) == s[::-1]
        assert decode(ids[:, b], src) == s[::-1]  # padding is skipped
    targets = [t for _, t in pairs]
    ids, _ = encode(targets, tgt, bos=True, eos=True)
    assert [decode(ids[:, b], tgt) for b in range(len(targets))] == targets


def test_decode_stops_at_first_eos():
    src, _ = build_vocabs([("ab", "x")])
    a, b = src.stoi["a"], src.stoi["b"]
    assert decode([2, a, 0, b, 3, a, b], src) == "ab"
    assert decode(np.array([1, a]), src) == UNK + "a"
    with pytest.raises(ValueError, match="expected values in"):
        decode([len(src)], src)
    with pytest.raises(ValueError, match="1-D"):
        decode(np.zeros((2, 2), dtype=np.int64), src)


def test_encode_errors():
    src, _ = build_vocabs([("ab", "x")])
    with pytest.raises(ValueError, match="at least one string"):
        encode([], src)
    with pytest.raises(ValueError, match=r"strings\[1\]: expected a non-empty"):
        encode(["a", ""], src)
    with pytest.raises(TypeError, match="list of str, got a single str"):
        encode("ab", src)
    with pytest.raises(TypeError, match=r"strings\[1\]: expected a str, got int"):
        encode(["a", 3], src)
    from rnnlab.data.text import Vocabulary

    plain = Vocabulary.build("ab", level="char")
    with pytest.raises(DataError, match="<pad>"):
        encode(["a"], plain)


# ----------------------------------------------------------------------------- batching


def test_minibatches_cover_every_pair_once():
    pairs = addition_pairs(10, seed=1)
    batches = list(minibatches(pairs, 4, None))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sum(batches, []) == pairs
    shuffled = list(minibatches(pairs, 4, np.random.default_rng(0)))
    flat = sum(shuffled, [])
    assert sorted(flat) == sorted(pairs) and flat != pairs
    again = list(minibatches(pairs, 4, np.random.default_rng(0)))
    assert again == shuffled


def test_minibatches_checks_arguments_at_the_call():
    with pytest.raises(ValueError, match="batch_size"):
        minibatches([("a", "b")], 0, None)
    with pytest.raises(TypeError, match="Generator"):
        minibatches([("a", "b")], 1, 42)
