"""A toy treebank in CoNLL-U for the tagger's tests: n sentences DET (ADJ) NOUN VERB DET (ADJ)
NOUN . with the adjectives drawn, so sentences differ in length (6 to 8 words)."""

from __future__ import annotations

import numpy as np

WORDS = {  # UPOS, XPOS, forms
    "det": ("DET", "DT", ["the", "a", "this", "every"]),
    "noun": ("NOUN", "NN", ["dog", "cat", "bank", "duck", "river", "tree", "house", "car"]),
    "verb": ("VERB", "VBD", ["saw", "liked", "fed", "found", "painted", "washed"]),
    "adj": ("ADJ", "JJ", ["big", "red", "old", "small"]),
    "punct": ("PUNCT", ".", ["."]),
}


def write_treebank(path, n: int, seed: int, extras: bool = False) -> None:
    """n sentences DET (ADJ) NOUN VERB DET (ADJ) NOUN . ; with ``extras`` the first sentence
    also has a multiword token range and an empty node (kept, but not words)."""
    g = np.random.default_rng(seed)
    out = []
    for s in range(n):
        parts = ["det", "noun", "verb", "det", "noun", "punct"]
        for pos in (4, 1):
            if g.random() < 0.4:
                parts.insert(pos, "adj")
        words = [(k, WORDS[k][2][g.integers(len(WORDS[k][2]))]) for k in parts]
        if s % 3 == 0:
            words[0] = ("det", words[0][1].capitalize())
        out.append(f"# sent_id = s{seed}-{s}")
        out.append(f"# text = {' '.join(w for _, w in words)}")
        if extras and s == 0:
            out.append(f"1-2\t{words[0][1]}{words[1][1]}\t_\t_\t_\t_\t_\t_\t_\t_")
        for i, (k, w) in enumerate(words, 1):
            upos, xpos, _ = WORDS[k]
            out.append(f"{i}\t{w}\t{w.lower()}\t{upos}\t{xpos}\t_\t0\tdep\t_\t_")
            if extras and s == 0 and i == 3:
                out.append("3.1\tghost\tghost\tNOUN\tNN\t_\t_\t_\t2:dep\t_")
        out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
