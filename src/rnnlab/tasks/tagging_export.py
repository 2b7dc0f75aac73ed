"""A trained tagger as an ONNX graph: token and character ids in, tag scores out.

Inputs (the batch format of :func:`rnnlab.tasks.tagging.make_batch`; T words, B sentences,
U distinct spellings of at most C characters; T, B, U, C dynamic)::

    words            (T, B) int64   lowercased word ids (0 = padding, <unk> for unknown words)
    lengths          (B,)   int64   words per sentence, any order
    spellings        (C, U) int64   character ids of each distinct word form, 0-padded
    spelling_lengths (U,)   int64   characters per form
    spelling         (T, B) int64   which form (column of ``spellings``) each token is

The graph (dropout off, as in tagging)::

    e        = Gather(E_word, words)                               (T, B, Ew)
    h_c      = BiLSTM(Gather(E_char, spellings), spelling_lengths) final states (2, U, Hc)
    spelled  = Reshape(Transpose(h_c, (1, 0, 2)), (0, -1))         (U, 2Hc) = [fwd_n; bwd_1]
    x        = Concat(e, Gather(spelled, spelling), axis=2)        (T, B, Ew + 2Hc)
    h        = BiLSTM^L(x, lengths)                                (T, B, 2H)
    <head>_scores = MatMul(h, W_k^T) + b_k                         (T, B, K) per tag set

Decoding: with the softmax output, the tag of a word is the argmax of its scores; with a CRF,
Viterbi over the scores (emissions) with the start, end and transition scores that the JSON
records per head (``crf``): score(y) = start[y_1] + sum_t e[t, y_t] + sum_{t>1}
trans[y_{t-1}, y_t] + end[y_L], ``trans[i, j]`` for tag i followed by tag j.
"""

from __future__ import annotations

import os
from pathlib import Path

from rnnlab.io.onnx import proto
from rnnlab.io.onnx.export import write_model_and_json
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.layers import add_embedding, add_linear
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.tagger import Tagger
from rnnlab.tasks.tagging import load_tagger


def tagger_graph(model: Tagger, opset: int) -> Graph:
    """The graph of ``model`` (see the module docstring)."""
    g = Graph("rnnlab_tagger", check_opset(opset))
    words = g.input("words", "int64", ["time", "batch"])
    lengths = g.input("lengths", "int64", ["batch"])
    spellings = g.input("spellings", "int64", ["chars", "forms"])
    spelling_lengths = g.input("spelling_lengths", "int64", ["forms"])
    spelling = g.input("spelling", "int64", ["time", "batch"])

    def int32(x: str) -> str:
        return g.op("Cast", [x], to=proto.INT32)[0]

    e, _ = add_embedding(g, model.word_embedding, words, "word_embedding")
    ce, _ = add_embedding(g, model.char_embedding, spellings, "char_embedding")
    _, (h_c, _) = add_recurrent(g, model.char_rnn, ce, int32(spelling_lengths), name="char_rnn")
    spelled = g.op("Transpose", [h_c], perm=[1, 0, 2])[0]  # (U, 2, Hc)
    spelled = g.op("Reshape", [spelled, g.ints("shape", [0, -1])])[0]  # (U, 2Hc)
    c = g.op("Gather", [spelled, spelling], axis=0)[0]  # (T, B, 2Hc)
    x = g.op("Concat", [e, c], axis=2)[0]
    h, _ = add_recurrent(g, model.rnn, x, int32(lengths), name="rnn")
    for k, head in model.heads.items():
        g.output(f"{k}_scores", add_linear(g, head, h, f"{k}_head"), "float32",
                 ["time", "batch", head.out_features])
    return g


def export_tagger(run: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> list[Path]:
    """Export the tagger of run directory ``run`` (its best dev weights) to ``out`` and its
    description (vocabularies, tag sets, decoding) to ``out`` with the suffix ``.json``."""
    model, vocabs, _, _, _ = load_tagger(Path(run))
    g = tagger_graph(model, opset)
    crf = {k: {n: p.tolist() for n, p in c.state_dict().items()} for k, c in model.crfs.items()}
    meta = {"task": "tagger", **g.signature,
            "decode": "viterbi" if crf else "argmax", **({"crf": crf} if crf else {}),
            "words": {"itos": vocabs.words.itos, "lowercase": True, "pad": 0,
                      "unk": vocabs.words.unk_id},
            "chars": {"itos": vocabs.chars.itos, "pad": 0, "unk": vocabs.chars.unk_id},
            "tags": vocabs.tags}
    return [Path(out), write_model_and_json(g, out, meta, "rnnlab tagger")]
