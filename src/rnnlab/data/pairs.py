"""Character-level sequence pairs for seq2seq: read, split, generate, encode, batch.

Formats and conventions follow the toy tasks of "Deep Learning from Scratch 2" (addition.txt,
date.txt: ``<question padded with spaces>_<answer padded with spaces>``) so results are
comparable with the book; user data can also come as ``source<TAB>target`` lines.

- ``book_split`` reproduces the book's shuffle (NumPy's legacy RNG, seed 1984) and its last-10%
  test set;
- vocabularies are built from the training pairs only, with ``SPECIALS`` at ids 0..3;
- ``encode`` gives time-major ``(T, B)`` ids padded at the end, plus the lengths, the layout the
  recurrent runners take.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import date

import numpy as np

from rnnlab.data.text import UNK, DataError, PathLike, Vocabulary, read_text
from rnnlab.validate import check_positive_int

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3 in every pair vocabulary

Pair = tuple[str, str]

# English names, not calendar.month_name: those follow the process locale.
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# The 10 line shapes of date.txt: (template, case, number of its 50,000 lines with that shape).
# Numeric dates are month/day/two-digit year; named months and weekdays share one case.
_DATE_SHAPES = (
    ("{m}/{d}/{yy}", "", 12434),
    ("{month} {d}, {y}", "title", 6897),
    ("{weekday}, {month} {d}, {y}", "title", 6228),
    ("{mon} {d}, {y}", "title", 5740),
    ("{month} {d}, {y}", "lower", 3470),
    ("{month} {d}, {y}", "upper", 3438),
    ("{weekday}, {month} {d}, {y}", "lower", 3072),
    ("{weekday}, {month} {d}, {y}", "upper", 3034),
    ("{mon} {d}, {y}", "lower", 2932),
    ("{mon} {d}, {y}", "upper", 2755),
)
_FIRST_DAY, _LAST_DAY = date(1970, 1, 1), date(2017, 12, 31)


# ----------------------------------------------------------------------------- reading


def _parse_tsv(line: str, where: str) -> Pair:
    tabs = line.count("\t")
    if tabs != 1:
        raise DataError(
            f"{where}: expected source<TAB>target (exactly one tab), "
            f"got {tabs} tabs in {line[:60]!r}"
        )
    source, target = line.split("\t")
    return source, target.rstrip()


def _parse_book(line: str, where: str) -> Pair:
    if "_" not in line:
        raise DataError(f"{where}: expected question_answer (a '_'), got no '_' in {line[:60]!r}")
    source, target = line.split("_", 1)
    return source.rstrip(" "), target.rstrip()


def read_pairs(path: PathLike) -> list[Pair]:
    """Read (source, target) pairs from a book-format file or a TSV file.

    Book format (addition.txt, date.txt): each line is split at its first '_'; the source is the
    text before it without trailing spaces, the target the text after it without trailing
    whitespace. TSV: ``source<TAB>target`` (trailing whitespace of the target removed). The file is
    TSV if its first non-empty line holds a tab. Blank lines are skipped.

    Raises DataError naming the file and 1-based line for a TSV line without exactly one tab, a
    book line without '_' or an empty source or target; read_text's DataError for an empty file
    or bytes that are not UTF-8.
    """
    lines = read_text(path).split("\n")
    first = next(line for line in lines if line.strip())
    parse = _parse_tsv if "\t" in first else _parse_book
    pairs: list[Pair] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        source, target = parse(line.rstrip("\r"), where)
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{where}: expected a non-empty {side}, got {line[:60]!r}")
        pairs.append((source, target))
    return pairs


# ----------------------------------------------------------------------------- splits


def book_split(
    pairs: Sequence[Pair], seed: int = 1984, test_fraction: float = 0.1
) -> tuple[list[Pair], list[Pair]]:
    """Shuffle and split as the book's ``dataset/sequence.py``: returns (train, test).

    The order is ``np.random.seed(seed); np.random.shuffle(np.arange(n))``, computed with a local
    ``RandomState`` so the global RNG is untouched; the last ``int(n * test_fraction)`` shuffled
    pairs (n // 10 for 0.1, e.g. 45,000 / 5,000) are the test set.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in [0, 1), got {test_fraction!r}")
    n = len(pairs)
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    # Round before flooring so that float error (e.g. 0.1 * 70) cannot take one pair off.
    split_at = n - math.floor(round(n * test_fraction, 6))
    shuffled = [pairs[i] for i in indices.tolist()]
    return shuffled[:split_at], shuffled[split_at:]


def deduplicate(pairs: Sequence[Pair]) -> list[Pair]:
    """Keep the first occurrence of each identical (source, target) pair, in order.

    date.txt repeats lines, so without this the book's test set overlaps its training set.
    """
    return list(dict.fromkeys(tuple(p) for p in pairs))


# ----------------------------------------------------------------------------- synthetic data


def addition_pairs(n: int, seed: int = 0, digits: int = 3) -> list[Pair]:
    """``n`` pairs ``("a+b", str(a + b))`` with a, b uniform in [0, 10**digits), like addition.txt.

    Deterministic for a seed (NumPy's default_rng).
    """
    n = check_positive_int("n", n)
    digits = check_positive_int("digits", digits)
    ab = np.random.default_rng(seed).integers(0, 10**digits, size=(n, 2)).tolist()
    return [(f"{a}+{b}", str(a + b)) for a, b in ab]


def _format_date(day: date, template: str, case: str) -> str:
    month = _MONTHS[day.month - 1]
    text = template.format(
        m=day.month,
        d=day.day,
        yy=f"{day.year % 100:02d}",
        y=day.year,
        month=month,
        mon=month[:3],
        weekday=_WEEKDAYS[day.weekday()],
    )
    return text.upper() if case == "upper" else text.lower() if case == "lower" else text


def date_pairs(n: int, seed: int = 0) -> list[Pair]:
    """``n`` pairs (free-form date, ISO ``YYYY-MM-DD``), days uniform in 1970-01-01..2017-12-31.

    The sources take the 10 shapes of date.txt, in its proportions: ``9/27/94``, ``September 27,
    1994``, ``Sep 27, 1994`` and ``Tuesday, September 27, 1994``, named forms in title, upper or
    lower case. Deterministic for a seed (NumPy's default_rng).
    """
    n = check_positive_int("n", n)
    rng = np.random.default_rng(seed)
    days = rng.integers(_FIRST_DAY.toordinal(), _LAST_DAY.toordinal() + 1, size=n).tolist()
    weights = np.array([w for _, _, w in _DATE_SHAPES], dtype=np.float64)
    shapes = rng.choice(len(_DATE_SHAPES), size=n, p=weights / weights.sum()).tolist()
    pairs = []
    for ordinal, k in zip(days, shapes, strict=True):
        day = date.fromordinal(ordinal)
        template, case, _ = _DATE_SHAPES[k]
        pairs.append((_format_date(day, template, case), day.isoformat()))
    return pairs


# ----------------------------------------------------------------------------- ids


def build_vocabs(pairs: Sequence[Pair]) -> tuple[Vocabulary, Vocabulary]:
    """Character vocabularies (source, target) from the (training) pairs.

    ``SPECIALS`` take ids 0..3, then characters by decreasing count (``Vocabulary.build``).
    Source and target are kept apart so each softmax only covers its own side's characters.
    """
    sources = (c for s, _ in pairs for c in s)
    targets = (c for _, t in pairs for c in t)
    return (
        Vocabulary.build(sources, specials=SPECIALS, level="char"),
        Vocabulary.build(targets, specials=SPECIALS, level="char"),
    )


def special_id(vocab: Vocabulary, token: str) -> int:
    """The id of ``<pad>``, ``<bos>``, ``<eos>`` in ``vocab``, or a DataError naming it."""
    if token not in vocab:
        raise DataError(f"vocab: expected the special token {token!r} (use build_vocabs), got none")
    return vocab.stoi[token]


def encode(
    strings: Sequence[str],
    vocab: Vocabulary,
    bos: bool = False,
    eos: bool = False,
    reverse: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> ``(ids, lengths)``: ids (T, B) int64 time-major, lengths (B,) int64.

    Each column holds one string's character ids (unknown characters -> ``<unk>``), optionally
    reversed (the book's input reversal; done before ``<bos>``/``<eos>`` are added), then padded
    at the end with ``<pad>`` up to T, the longest length. ValueError for an empty list or a
    sequence of length 0; TypeError for a single str.
    """
    if isinstance(strings, str):
        raise TypeError("strings: expected a list of str, got a single str")
    for b, s in enumerate(strings):
        if not isinstance(s, str):
            raise TypeError(f"strings[{b}]: expected a str, got {type(s).__name__}")
    if len(strings) == 0:
        raise ValueError("strings: expected at least one string, got an empty list")
    pad_id = special_id(vocab, PAD)
    head = [special_id(vocab, BOS)] if bos else []
    tail = [special_id(vocab, EOS)] if eos else []
    columns = []
    for b, s in enumerate(strings):
        chars = s[::-1] if reverse else s
        ids = head + vocab.encode(chars).tolist() + tail
        if not ids:
            raise ValueError(f"strings[{b}]: expected a non-empty sequence, got {s!r}")
        columns.append(ids)
    lengths = np.array([len(c) for c in columns], dtype=np.int64)
    out = np.full((int(lengths.max()), len(columns)), pad_id, dtype=np.int64)
    for b, ids in enumerate(columns):
        out[: len(ids), b] = ids
    return out, lengths


def decode(ids: Sequence[int] | np.ndarray, vocab: Vocabulary) -> str:
    """One sequence of ids -> string: stops at the first ``<eos>``, skips ``<pad>`` and ``<bos>``.

    Unknown ids come back as the text ``<unk>``. ValueError for ids outside the vocabulary.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids: expected one 1-D sequence, got shape {arr.shape}")
    out = []
    for token in vocab.decode(arr):
        if token == EOS:
            break
        if token not in (PAD, BOS):
            out.append(token)
    return "".join(out)


def minibatches(
    pairs: Sequence[Pair], batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[list[Pair]]:
    """Consecutive batches of ``batch_size`` pairs (the last one may be smaller).

    With ``rng`` the pairs are first shuffled by ``rng.permutation`` (one epoch); without it they
    keep their order. Arguments are checked at the call, not at the first ``next``.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator or None, got {type(rng).__name__}")
    order = rng.permutation(len(pairs)) if rng is not None else np.arange(len(pairs))
    return _batches([pairs[i] for i in order.tolist()], batch_size)


def _batches(pairs: list[Pair], batch_size: int) -> Iterator[list[Pair]]:
    for start in range(0, len(pairs), batch_size):
        yield pairs[start : start + batch_size]
