"""Data: text corpora, vocabularies and truncated-BPTT batching (``text``); seq2seq pairs
(``pairs``)."""

from rnnlab.data.text import (
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

__all__ = [
    "Corpus",
    "DataError",
    "Vocabulary",
    "batchify",
    "bptt_windows",
    "load_corpus",
    "num_windows",
    "read_text",
    "tokenize_chars",
    "tokenize_words",
]
