"""Text corpora for language modelling: read, tokenize, build a vocabulary, batch for BPTT.

Conventions (those of Mikolov's PTB setup, Zaremba et al. 2014 and PyTorch's
``word_language_model`` example, so perplexities are comparable):

- word level: each line is split on whitespace and gets one ``<eos>``;
  char level: every character (newlines included) is a token;
- the vocabulary is built from the train split only; unknown tokens map to ``<unk>``;
- ``batchify`` cuts the id stream into B contiguous streams, time-major ``(N, B)``;
  ``bptt_windows`` walks it in windows of T steps with targets shifted by one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from rnnlab.validate import check_positive_int

UNK = "<unk>"
EOS = "<eos>"
LEVELS = ("word", "char")
BUNDLED = "tinyshakespeare"

# Directory layouts recognised by load_corpus: name -> (train, valid, test) file names.
_LAYOUTS = {
    "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "wikitext-2": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
}

PathLike = str | os.PathLike


class DataError(ValueError):
    """A problem with user-supplied data (a file, a corpus, a vocabulary), not with the code."""


# ----------------------------------------------------------------------------- reading


def read_utf8(path: PathLike, what: str = "text", error: type[DataError] = DataError) -> str:
    """A whole file as strict UTF-8. FileNotFoundError if it is missing; ``error`` (a DataError)
    if it is a directory or not valid UTF-8, naming the file, the line and the byte offset."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if p.is_dir():
        raise error(f"{path}: expected a {what} file, got a directory")
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}, line {line}: expected UTF-8 text, got the bytes "
                    f"{data[e.start:e.end]!r} at byte {e.start} ({e.reason})") from None


def read_text(path: PathLike) -> str:
    """Read a whole file as strict UTF-8 (a leading byte-order mark is dropped).

    Raises FileNotFoundError if the file is missing, and DataError if it is a directory, empty or
    whitespace only, or not valid UTF-8 (naming the line and the byte offset).
    """
    text = read_utf8(path)
    text = text.removeprefix("\ufeff")
    if not text.strip():
        got = "an empty file" if not text else f"only whitespace ({len(text)} characters)"
        raise DataError(f"{path}: expected text, got {got}")
    return text


def tokenize_words(text: str) -> list[str]:
    """Split each line on whitespace and end it with ``<eos>`` (an empty line gives a lone one).

    Lines are ``text.split("\\n")``; only the empty piece after a final newline is dropped.
    """
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def tokenize_chars(text: str) -> list[str]:
    """Every character is a token, newlines included."""
    return list(text)


# ----------------------------------------------------------------------------- vocabulary


class Vocabulary:
    """A bijection between tokens and ids ``0..V-1``; ``<unk>`` is always present.

    Attributes: ``itos`` (id -> token), ``stoi`` (token -> id), ``unk`` (the unknown token),
    ``unk_id``, ``level`` ("word", "char" or None).
    """

    def __init__(self, itos: Sequence[str], unk: str = UNK, level: str | None = None) -> None:
        itos = list(itos)
        bad = next((t for t in itos if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"vocabulary: expected str tokens, got {type(bad).__name__} {bad!r}")
        if unk not in itos:
            raise DataError(f"vocabulary: expected the unknown token {unk!r} among the tokens")
        stoi = {t: i for i, t in enumerate(itos)}
        if len(stoi) != len(itos):
            dup = [t for t, c in Counter(itos).items() if c > 1]
            raise DataError(f"vocabulary: expected distinct tokens, got duplicates {dup[:5]!r}")
        if level is not None and level not in LEVELS:
            raise DataError(f"vocabulary: expected level in {LEVELS} or None, got {level!r}")
        self.itos = itos
        self.stoi = stoi
        self.unk = unk
        self.unk_id = stoi[unk]
        self.level = level

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (UNK,),
        level: str | None = None,
    ) -> Vocabulary:
        """Specials first, then tokens by decreasing count, ties by first appearance.

        Tokens seen fewer than ``min_freq`` times are left out; ``max_size`` caps the total size,
        specials included. ``specials`` must contain ``<unk>``.
        """
        min_freq = check_positive_int("min_freq", min_freq)
        specials = list(specials)
        if UNK not in specials:
            raise ValueError(f"specials: expected to contain {UNK!r}, got {specials!r}")
        if max_size is not None:
            max_size = check_positive_int("max_size", max_size)
            if max_size < len(specials):
                raise ValueError(
                    f"max_size: expected at least {len(specials)} (the specials), got {max_size}"
                )
        counts = Counter(tokens)  # insertion order = first appearance
        # sorted() is stable, so equal counts keep their first-appearance order.
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        taken = set(specials)
        itos = specials + [t for t, c in ranked if c >= min_freq and t not in taken]
        if max_size is not None:
            itos = itos[:max_size]
        return cls(itos, unk=UNK, level=level)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.itos, self.unk, self.level) == (other.itos, other.unk, other.level)

    __hash__ = None  # mutable, like a list

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.itos[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"Vocabulary(size={len(self)}, level={self.level!r}, itos=[{head}{more}])"

    def encode(
        self, tokens: Iterable[str], return_unknown: bool = False
    ) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """Token ids as int64 (unknown tokens -> ``unk_id``).

        With ``return_unknown=True`` also returns the distinct unknown tokens, in order of first
        appearance, so a caller can warn. A plain string is read as a sequence of characters,
        which only makes sense for a char vocabulary (TypeError for a word one).
        """
        if isinstance(tokens, str) and self.level == "word":
            raise TypeError(
                "tokens: expected a list of words for a word vocabulary, got a str "
                "(tokenize it first, e.g. with tokenize_words)"
            )
        if not isinstance(tokens, Sequence):
            tokens = list(tokens)
        get, unk_id = self.stoi.get, self.unk_id
        ids = np.fromiter((get(t, unk_id) for t in tokens), dtype=np.int64, count=len(tokens))
        if not return_unknown:
            return ids
        unknown = dict.fromkeys(t for t in tokens if t not in self.stoi)
        return ids, list(unknown)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Tokens for the ids (an iterable of ints, or an integer array of any shape, flattened)."""
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.size == 0:
            return []
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids: expected integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise ValueError(f"ids: expected values in [0, {len(self)}), got {bad}")
        itos = self.itos
        return [itos[i] for i in arr.ravel().tolist()]

    def fingerprint(self) -> str:
        """sha256 (hex) of ``itos`` as compact UTF-8 JSON: equal iff the id mapping is equal."""
        blob = json.dumps(self.itos, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict:
        """JSON-able form: ``{"itos": [...], "unk": "<unk>", "level": ...}``."""
        return {"itos": list(self.itos), "unk": self.unk, "level": self.level}

    @classmethod
    def from_dict(cls, d: object) -> Vocabulary:
        """Inverse of ``to_dict``; DataError on a missing, unknown or ill-typed field."""
        if not isinstance(d, dict):
            raise DataError(f"vocabulary: expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("itos", "unk") if k not in d]
        if missing:
            raise DataError(f"vocabulary: missing field(s) {missing}; expected itos, unk, level")
        unknown = sorted(set(d) - {"itos", "unk", "level"})
        if unknown:
            raise DataError(f"vocabulary: unknown field(s) {unknown}; expected itos, unk, level")
        if not isinstance(d["itos"], list):
            got = type(d["itos"]).__name__
            raise DataError(f"vocabulary: expected itos to be a list, got {got}")
        if not isinstance(d["unk"], str):
            got = type(d["unk"]).__name__
            raise DataError(f"vocabulary: expected unk to be a str, got {got}")
        return cls(d["itos"], unk=d["unk"], level=d.get("level"))

    def save(self, path: PathLike) -> None:
        """Write JSON atomically: a temp file in the same directory, fsync, then os.replace."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: PathLike) -> Vocabulary:
        """Read a file written by ``save``; DataError naming the file if it is malformed."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            d = json.loads(p.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: expected vocabulary JSON, got invalid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------- corpora


@dataclass
class Corpus:
    """Token-id streams of the three splits and the vocabulary (built on train) that made them."""

    train: np.ndarray  # (n_train,) int64
    valid: np.ndarray  # (n_valid,) int64
    test: np.ndarray  # (n_test,) int64
    vocab: Vocabulary
    level: str
    name: str
    source: str  # a path, or "bundled:tinyshakespeare"


def _tokenize(text: str, level: str) -> list[str]:
    return tokenize_words(text) if level == "word" else tokenize_chars(text)


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    try:
        fracs = tuple(float(r) for r in split)
    except (TypeError, ValueError):
        raise ValueError(f"split: expected three positive ratios, got {split!r}") from None
    if len(fracs) != 3 or not all(r > 0 and math.isfinite(r) for r in fracs):
        raise ValueError(f"split: expected three positive ratios (train/valid/test), got {split!r}")
    if not math.isclose(sum(fracs), 1.0, abs_tol=1e-9):
        raise ValueError(f"split: expected ratios summing to 1, got {split!r} (sum {sum(fracs)})")
    return fracs


def _find_layout(directory: Path) -> tuple[str, list[Path]]:
    for name, files in _LAYOUTS.items():
        paths = [directory / f for f in files]
        present = [p.is_file() for p in paths]
        if all(present):
            return name, paths
        if any(present):
            lost = [f for f, ok in zip(files, present, strict=True) if not ok]
            raise DataError(f"{directory}: incomplete {name} layout, missing {', '.join(lost)}")
    expected = " or ".join(", ".join(files) for files in _LAYOUTS.values())
    found = sorted(p.name for p in directory.iterdir())
    shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
    raise DataError(
        f"{directory}: expected a corpus directory with {expected}; "
        f"got {shown or 'an empty directory'}"
    )


def _encode_splits(
    parts: Sequence[list[str]], level: str, min_freq: int, max_vocab: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Vocabulary]:
    vocab = Vocabulary.build(parts[0], min_freq=min_freq, max_size=max_vocab, level=level)
    train, valid, test = (vocab.encode(p) for p in parts)
    return train, valid, test, vocab


def _split_stream(tokens: list[str], fracs: tuple[float, float, float], where: str) -> list:
    n = len(tokens)
    # Round before flooring so that 0.7 + 0.2 = 0.8999999999999999 still cuts 10 tokens at 9.
    a = math.floor(round(n * fracs[0], 6))
    b = math.floor(round(n * (fracs[0] + fracs[1]), 6))
    parts = [tokens[:a], tokens[a:b], tokens[b:]]
    if min(len(p) for p in parts) < 2:
        sizes = "/".join(str(len(p)) for p in parts)
        raise DataError(
            f"{where}: {n} tokens are too few to split by {fracs} "
            f"(got {sizes} train/valid/test); expected at least 2 tokens in every split "
            "(an input and its target)"
        )
    return parts


def load_corpus(
    path: PathLike | None = None,
    level: str = "char",
    split: Sequence[float] = (0.9, 0.05, 0.05),
    min_freq: int = 1,
    max_vocab: int | None = None,
) -> Corpus:
    """Load a corpus as three id streams with a vocabulary built on train.

    ``path`` is one of: None or "tinyshakespeare" (the bundled corpus); a directory holding
    ``ptb.{train,valid,test}.txt`` (Penn Treebank) or ``wiki.{train,valid,test}.tokens``
    (WikiText-2), whose own splits are used (``split`` is then ignored); or a UTF-8 text file,
    cut contiguously by ``split`` in token positions. ``level`` is "word" or "char".
    """
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    fracs = _check_split(split)
    min_freq = check_positive_int("min_freq", min_freq)
    if max_vocab is not None:
        max_vocab = check_positive_int("max_vocab", max_vocab)

    if path is None or str(path) == BUNDLED:
        ref = resources.files("rnnlab.data").joinpath("corpora", f"{BUNDLED}.txt")
        with resources.as_file(ref) as p:
            text = read_text(p)
        parts = _split_stream(_tokenize(text, level), fracs, f"bundled:{BUNDLED}")
        return Corpus(
            *_encode_splits(parts, level, min_freq, max_vocab),
            level=level,
            name=BUNDLED,
            source=f"bundled:{BUNDLED}",
        )

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"corpus not found: {path} (expected a text file, a directory with ptb.*.txt or "
            f"wiki.*.tokens, None or {BUNDLED!r})"
        )
    if p.is_dir():
        name, files = _find_layout(p)
        parts = [_tokenize(read_text(f), level) for f in files]
        for f, part in zip(files, parts, strict=True):
            if len(part) < 2:
                raise DataError(f"{f}: expected at least 2 tokens (an input and its target), "
                                f"got {len(part)}")
    else:
        name = p.stem
        parts = _split_stream(_tokenize(read_text(p), level), fracs, str(path))
    return Corpus(
        *_encode_splits(parts, level, min_freq, max_vocab), level=level, name=name, source=str(path)
    )


# ----------------------------------------------------------------------------- batching


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a 1-D id stream into ``batch_size`` contiguous streams, time-major.

    Returns ``data`` of shape (N, B) with N = len(ids) // B and ``data[:, b] = ids[b*N:(b+1)*N]``;
    the last ``len(ids) % B`` tokens are dropped. DataError if N < 2 (no input/target pair).
    """
    B = check_positive_int("batch_size", batch_size)
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids: expected a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    n = ids.shape[0]
    N = n // B
    if N < 2:
        raise DataError(
            f"corpus ({n} tokens) is shorter than one batch window: batch_size={B} needs at "
            f"least {2 * B} tokens (2 per stream: one input and one target); "
            f"use a smaller batch_size or more data"
        )
    return np.ascontiguousarray(ids[: N * B].reshape(B, N).T)  # (N, B)


def num_windows(N: int, bptt: int) -> int:
    """Number of windows ``bptt_windows`` yields for N time steps: ceil((N - 1) / bptt)."""
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 0:
        raise ValueError(f"N: expected a non-negative integer, got {N!r}")
    bptt = check_positive_int("bptt", bptt)
    return max(0, -(-(int(N) - 1) // bptt))


def bptt_windows(data: np.ndarray, bptt: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` windows of shape (T, B), T = bptt (the last one may be shorter).

    Windows start at i = 0, bptt, 2*bptt, ... while i < N - 1; ``x = data[i:i+T]`` and
    ``y = data[i+1:i+1+T]``, so every position 1..N-1 is a target exactly once. The caller
    carries the hidden state from one window to the next (truncated BPTT). x and y are views.
    """
    bptt = check_positive_int("bptt", bptt)
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        shape = getattr(data, "shape", type(data).__name__)
        raise TypeError(f"data: expected a 2-D array (N, B) from batchify, got {shape}")
    N = data.shape[0]
    for i in range(0, N - 1, bptt):
        T = min(bptt, N - 1 - i)
        yield data[i : i + T], data[i + 1 : i + 1 + T]  # (T, B), (T, B)
