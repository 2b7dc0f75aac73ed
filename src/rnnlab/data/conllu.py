"""CoNLL-U (Universal Dependencies) read and written losslessly, for part-of-speech tagging.

The format (https://universaldependencies.org/format.html): UTF-8 text with LF line ends; each
sentence is its ``#`` comment lines, then its token lines of 10 tab-separated fields::

    ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC

then one blank line (the last sentence too). IDs are of three kinds:

- ``1``, ``2``, ... the syntactic *words*, numbered from 1 in order: what a tagger tags;
- ``1-2`` a multiword token (``don't`` over the words ``do`` ``n't``), just before its first word;
- ``8.1`` an empty node (enhanced dependencies), after word 8 (``0.1`` before word 1).

Ranges and empty nodes are kept and written back, but they are not words. A ``Sentence`` keeps
every comment and every field as the exact strings of the file, so ``format_conllu(read_conllu(p))``
is the file, byte for byte. Tagging (``Sentence.with_tags``) replaces only the UPOS and XPOS
fields of the words.

Reading is strict where the format is: an input the reader accepts is one it can write back
exactly. Every error is one line naming the file, the 1-based line and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rnnlab.data.text import DataError, PathLike, read_utf8

COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
ID, FORM, LEMMA, UPOS, XPOS, FEATS, HEAD, DEPREL, DEPS, MISC = range(10)

# The 17 universal part-of-speech tags of UD v2.
UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.([1-9][0-9]*)")

Row = tuple[str, ...]  # the 10 fields of one token line


class ConlluError(DataError):
    """A CoNLL-U file (or sentence) that does not follow the format."""


class _BadRow(Exception):
    """Raised by ``_check_rows``: row ``index`` of a sentence is wrong; the caller adds where."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


# ----------------------------------------------------------------------------- sentences


@dataclass(frozen=True)
class Sentence:
    """One CoNLL-U sentence: its comment lines and its token lines, as the file has them.

    ``comments``: every comment line, ``#`` included, in order. ``rows``: every token line split
    into its 10 fields (strings, ``_`` where unspecified): words, multiword-token ranges and
    empty nodes, in file order. The constructor checks the structure (10 non-empty fields with
    no tab or line break, IDs as the format wants them) and raises ConlluError if it is wrong.

    Sentences are immutable: ``with_tags`` returns a new one.
    """

    comments: tuple[str, ...]
    rows: tuple[Row, ...]
    # Positions in ``rows`` of the syntactic words (integer IDs).
    _words: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("comments", "rows"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a sequence of lines, got a single str")
        comments = tuple(self.comments)
        rows = tuple(tuple(row) for row in self.rows)
        _check_characters(comments, rows)
        if not rows:
            raise ConlluError("sentence: expected at least one token line, got none")
        try:
            words = _check_rows(rows)
        except _BadRow as e:
            raise ConlluError(f"sentence, row {e.index + 1}: {e.message}") from None
        object.__setattr__(self, "comments", comments)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "_words", words)

    @classmethod
    def _unchecked(
        cls, comments: tuple[str, ...], rows: tuple[Row, ...], words: tuple[int, ...]
    ) -> Sentence:
        # The parser has already checked everything (with line numbers); skip doing it again.
        sentence = object.__new__(cls)
        object.__setattr__(sentence, "comments", comments)
        object.__setattr__(sentence, "rows", rows)
        object.__setattr__(sentence, "_words", words)
        return sentence

    @property
    def words(self) -> list[Row]:
        """The syntactic words' rows (integer IDs 1..n), without ranges or empty nodes."""
        rows = self.rows
        return [rows[i] for i in self._words]

    def __len__(self) -> int:
        """The number of syntactic words."""
        return len(self._words)

    def forms(self) -> list[str]:
        """FORM of each word."""
        return [row[FORM] for row in self.words]

    def upos(self) -> list[str]:
        """UPOS (universal tag, column 4) of each word."""
        return [row[UPOS] for row in self.words]

    def xpos(self) -> list[str]:
        """XPOS (language-specific tag, column 5; Penn Treebank tags in EWT) of each word."""
        return [row[XPOS] for row in self.words]

    @property
    def metadata(self) -> dict[str, str]:
        """``{key: value}`` from the ``# key = value`` comments (split at the first ``=``, both
        sides stripped; a repeated key keeps its last value). Other comments are left out."""
        out: dict[str, str] = {}
        for line in self.comments:
            key, sep, value = line[1:].partition("=")
            key = key.strip()
            if sep and key:
                out[key] = value.strip()
        return out

    @property
    def sent_id(self) -> str | None:
        """The ``# sent_id = ...`` value, or None."""
        return self.metadata.get("sent_id")

    @property
    def text(self) -> str | None:
        """The ``# text = ...`` value (the sentence as raw text), or None."""
        return self.metadata.get("text")

    def with_tags(
        self, upos: Sequence[str] | None = None, xpos: Sequence[str] | None = None
    ) -> Sentence:
        """A new Sentence whose words have these UPOS and/or XPOS tags (None: keep the column).

        Each given sequence holds one tag per word (``len(self)``); a tag is a non-empty string
        without whitespace (``_`` for none). Every other field, every comment, and every range
        and empty-node row stay exactly as they were.
        """
        new_upos = _check_tags("upos", upos, len(self))
        new_xpos = _check_tags("xpos", xpos, len(self))
        rows = list(self.rows)
        for k, i in enumerate(self._words):
            row = list(rows[i])
            if new_upos is not None:
                row[UPOS] = new_upos[k]
            if new_xpos is not None:
                row[XPOS] = new_xpos[k]
            rows[i] = tuple(row)
        return Sentence._unchecked(self.comments, tuple(rows), self._words)

    def to_conllu(self) -> str:
        """The sentence as CoNLL-U text: comments, token lines, and the blank line ending it."""
        lines = [*self.comments, *("\t".join(row) for row in self.rows)]
        return "\n".join(lines) + "\n\n"


def _check_characters(comments: tuple[str, ...], rows: tuple[Row, ...]) -> None:
    """What the parser gets from splitting lines, checked for a Sentence built by hand."""
    for k, line in enumerate(comments):
        if not isinstance(line, str) or not line.startswith("#"):
            raise ConlluError(
                f"sentence, comment {k + 1}: expected a str starting with #, got {line!r}"
            )
        if "\n" in line or "\r" in line:
            raise ConlluError(f"sentence, comment {k + 1}: expected one line, got {line!r}")
    for k, row in enumerate(rows):
        bad = next((f for f in row if not isinstance(f, str)), None)
        if bad is not None:
            raise ConlluError(
                f"sentence, row {k + 1}: expected str fields, got {type(bad).__name__} {bad!r}"
            )
        if any(c in f for f in row for c in "\t\n\r"):
            raise ConlluError(
                f"sentence, row {k + 1}: expected fields without tabs or line breaks, got {row!r}"
            )


def _check_rows(rows: Sequence[Sequence[str]]) -> tuple[int, ...]:
    """Check the fields and IDs of a sentence's token lines; the positions of its words.

    Words are numbered 1..n in order; a range ``a-b`` (a < b) comes just before word a and ends
    within the sentence, ranges do not overlap; empty nodes after word k are k.1, k.2, ...
    Raises _BadRow naming the row.
    """
    words: list[int] = []
    n = 0  # words so far
    covered = 0  # the last word covered by a range so far
    ranges: list[tuple[int, int]] = []  # (row, last word) for the end-of-sentence check
    empty_after, empty_count = -1, 0  # the word the last empty nodes follow, how many
    for i, row in enumerate(rows):
        if len(row) != 10:
            raise _BadRow(
                i, f"expected 10 tab-separated fields ({' '.join(COLUMNS)}), got {len(row)}"
            )
        if "" in row:
            raise _BadRow(
                i,
                "expected a value in every field (_ when unspecified), "
                f"got an empty {COLUMNS[list(row).index('')]}",
            )
        id_ = row[ID]
        if _WORD_ID.fullmatch(id_):
            if int(id_) != n + 1:
                raise _BadRow(
                    i,
                    f"expected word ID {n + 1} (words are numbered 1, 2, ... in order), got {id_}",
                )
            n += 1
            words.append(i)
        elif m := _RANGE_ID.fullmatch(id_):
            a, b = int(m[1]), int(m[2])
            if a >= b:
                raise _BadRow(i, f"expected a multiword-token range a-b with a < b, got {id_}")
            if a != n + 1:
                raise _BadRow(i, f"expected a range starting at the next word, {n + 1}, got {id_}")
            if a <= covered:
                raise _BadRow(
                    i,
                    f"expected ranges that do not overlap, got {id_} inside an "
                    f"earlier range ending at word {covered}",
                )
            covered = b
            ranges.append((i, b))
        elif m := _EMPTY_ID.fullmatch(id_):
            expected = empty_count + 1 if empty_after == n else 1
            if (int(m[1]), int(m[2])) != (n, expected):
                raise _BadRow(
                    i,
                    f"expected empty node {n}.{expected} here (the empty nodes "
                    f"after word k are k.1, k.2, ...), got {id_}",
                )
            empty_after, empty_count = n, expected
        else:
            raise _BadRow(
                i,
                f"expected an ID: a word number (1, 2, ...), a range like 1-2 or "
                f"an empty node like 8.1, got {id_!r}",
            )
    if n == 0:
        raise _BadRow(
            len(rows) - 1, "expected at least one word (an integer ID) in the sentence, got none"
        )
    for i, b in ranges:
        if b > n:
            raise _BadRow(i, f"expected a range within the sentence's {n} words, got {rows[i][ID]}")
    return tuple(words)


def _check_tags(name: str, tags: Sequence[str] | None, n: int) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        raise TypeError(f"{name}: expected a sequence of tags, got a single str {tags!r}")
    tags = list(tags)
    if len(tags) != n:
        raise ValueError(f"{name}: expected {n} tags (one per word), got {len(tags)}")
    for k, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise TypeError(f"{name}[{k}]: expected a str, got {type(tag).__name__} {tag!r}")
        if not tag or any(c.isspace() for c in tag):
            raise ValueError(
                f"{name}[{k}]: expected a non-empty tag without whitespace "
                f"(_ for none), got {tag!r}"
            )
    return tags


# ----------------------------------------------------------------------------- reading


def read_conllu(path: PathLike) -> list[Sentence]:
    """Read a CoNLL-U file: every sentence, with its comments, ranges and empty nodes.

    FileNotFoundError if the file is missing; ConlluError (a DataError) naming the file and line
    for bytes that are not UTF-8 and for everything ``parse_conllu`` rejects.
    """
    text = read_utf8(path, "CoNLL-U", ConlluError)
    return parse_conllu(text, name=str(path))


def parse_conllu(text: str, name: str = "<string>") -> list[Sentence]:
    """Parse CoNLL-U text (``name`` is used in error messages).

    Raises ConlluError, one line ``name, line N: expected ..., got ...``, for: an empty text or
    one without sentences; a byte-order mark; CR line ends; a token line without exactly 10
    tab-separated fields or with an empty field; a bad ID (not ``k``, ``a-b`` with a < b, or
    ``k.m``), word IDs not 1..n in order, a misplaced range or empty node; a comment between
    token lines; a blank line not ending a sentence (one blank line after each sentence, no
    more); a sentence without words; a last sentence not closed by a blank line.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    if not text:
        raise ConlluError(f"{name}: expected CoNLL-U sentences, got an empty file")
    if text[0] == "\ufeff":
        raise ConlluError(f"{name}, line 1: expected UTF-8 without a byte-order mark, got one")
    if "\r" in text:
        line = text.count("\n", 0, text.index("\r")) + 1
        raise ConlluError(
            f"{name}, line {line}: expected LF line ends, got a carriage return "
            "(CR LF: Windows line ends?)"
        )
    if text.isspace():
        raise ConlluError(f"{name}: expected CoNLL-U sentences, got no sentences (only whitespace)")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the empty piece after the final newline
    sentences: list[Sentence] = []
    comments: list[str] = []
    rows: list[list[str]] = []
    first = 0  # the line of the current sentence's first token line
    for number, line in enumerate(lines, start=1):
        where = f"{name}, line {number}"
        if not line:
            if rows:
                sentences.append(_sentence(comments, rows, name, first))
                comments, rows = [], []
            elif comments:
                raise ConlluError(
                    f"{where}: expected token lines after the comments (a "
                    "sentence has at least one word), got a blank line"
                )
            else:
                raise ConlluError(
                    f"{where}: expected a comment or a token line to start a "
                    "sentence, got a blank line (only one ends a sentence)"
                )
        elif line[0] == "#":
            if rows:
                raise ConlluError(
                    f"{where}: expected a token line or the blank line ending "
                    "the sentence, got a comment (comments go before the "
                    "token lines)"
                )
            comments.append(line)
        else:
            if line.isspace():
                raise ConlluError(
                    f"{where}: expected a token line or a blank line, got a "
                    f"line of only whitespace {line!r}"
                )
            if not rows:
                first = number
            rows.append(line.split("\t"))
    if rows or comments:
        what = "the last sentence's token lines" if rows else "the comments"
        none = "" if sentences else " (so no sentence is complete)"
        raise ConlluError(
            f"{name}, line {len(lines)}: expected a blank line after {what} "
            f"(CoNLL-U ends every sentence with one, the last too), got the end "
            f"of the file{none}"
        )
    return sentences


def _sentence(comments: list[str], rows: list[list[str]], name: str, first: int) -> Sentence:
    try:
        words = _check_rows(rows)
    except _BadRow as e:
        raise ConlluError(f"{name}, line {first + e.index}: {e.message}") from None
    return Sentence._unchecked(tuple(comments), tuple(map(tuple, rows)), words)


# ----------------------------------------------------------------------------- writing


def format_conllu(sentences: Sequence[Sentence]) -> str:
    """The sentences as CoNLL-U text, each ending with its blank line.

    For what ``parse_conllu`` returned this is the original text exactly. ValueError for no
    sentences (an empty file is not CoNLL-U), TypeError for an item that is not a Sentence.
    """
    if isinstance(sentences, Sentence):
        raise TypeError("sentences: expected a list of Sentence, got a single Sentence")
    parts = []
    for k, s in enumerate(sentences):
        if not isinstance(s, Sentence):
            raise TypeError(f"sentences[{k}]: expected a Sentence, got {type(s).__name__}")
        parts.append(s.to_conllu())
    if not parts:
        raise ValueError("sentences: expected at least one Sentence, got none")
    return "".join(parts)


def write_conllu(sentences: Sequence[Sentence], file: PathLike | TextIO) -> None:
    """Write ``format_conllu(sentences)`` to a path (UTF-8, LF line ends) or an open text file."""
    text = format_conllu(sentences)
    if hasattr(file, "write"):
        file.write(text)
    else:
        Path(file).write_bytes(text.encode("utf-8"))


# ----------------------------------------------------------------------------- plain tokens


def sentence_from_tokens(
    tokens: Sequence[str], sent_id: str | None = None, text: str | None = None
) -> Sentence:
    """A CoNLL-U sentence for plain tokens: ID and FORM filled, ``_`` in the 8 other columns.

    ``_`` marks an unspecified value in every column but ID (the format allows it; UD treebanks
    themselves must fill UPOS, HEAD and DEPREL). Comments: ``# sent_id = ...`` when given and
    ``# text = ...``, the given text or else the tokens joined by spaces. With ``text`` the
    tokens must appear in it in order, separated only by whitespace; a token directly followed
    by the next one gets ``SpaceAfter=No`` in MISC, as UD marks it.

    TypeError for a single str or a non-str token; ValueError for no tokens, an empty token,
    one with a tab or line break or surrounding whitespace, a ``sent_id`` or ``text`` that is
    empty or not one line, or tokens that do not spell ``text``.
    """
    if isinstance(tokens, str):
        raise TypeError("tokens: expected a list of str, got a single str (tokenize it first)")
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens: expected at least one token, got none")
    for k, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise TypeError(f"tokens[{k}]: expected a str, got {type(tok).__name__}")
        if not tok or tok != tok.strip() or any(c in tok for c in "\t\n\r"):
            raise ValueError(
                f"tokens[{k}]: expected a non-empty token without tabs, line "
                f"breaks or surrounding whitespace, got {tok!r}"
            )
    comments = []
    if sent_id is not None:
        comments.append(f"# sent_id = {_one_line('sent_id', sent_id)}")
    if text is None:
        text = " ".join(tokens)
        misc = ["_"] * len(tokens)
    else:
        text = _one_line("text", text)
        misc = _space_after(tokens, text)
    comments.append(f"# text = {text}")
    rows = [
        (str(k), tok, *["_"] * 7, m) for k, (tok, m) in enumerate(zip(tokens, misc, strict=True), 1)
    ]
    return Sentence(tuple(comments), tuple(rows))


def _one_line(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
    value = value.strip()
    if not value or "\n" in value or "\r" in value:
        raise ValueError(f"{name}: expected one non-empty line, got {value!r}")
    return value


def _space_after(tokens: list[str], text: str) -> list[str]:
    """MISC for each token: ``SpaceAfter=No`` where the next token follows without a space."""
    misc = []
    pos = 0
    for k, tok in enumerate(tokens):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith(tok, pos):
            raise ValueError(
                f"tokens[{k}]: expected the tokens to spell text in order, got "
                f"{tok!r} where text has {text[pos : pos + len(tok) + 10]!r}"
            )
        pos += len(tok)
        joined = k + 1 < len(tokens) and pos < len(text) and not text[pos].isspace()
        misc.append("SpaceAfter=No" if joined else "_")
    if text[pos:].strip():
        raise ValueError(
            f"tokens: expected the tokens to spell text, got {text[pos:].strip()!r} "
            "left over after the last one"
        )
    return misc
