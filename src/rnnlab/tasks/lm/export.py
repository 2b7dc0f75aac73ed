"""A trained language model as an ONNX graph that runs step by step, without rnnlab.

    ids     (T, B) int64                     token ids (the vocabulary in the JSON beside)
    h0, c0  (L, B, H) float32                the state carried in (zeros to start; c0: LSTM)
    e       = Gather(E, ids)                 (T, B, E) embedding
    y, h_n (, c_n) = RNN/LSTM/GRU ops(e, h0 (, c0))   (T, B, H), see rnnlab.io.onnx.recurrent
    logits  = MatMul(y, W^T) + b             (T, B, V); W is E when the weights are tied

Generation feeds one token (T = 1) and the state returned by the step before. Dropout is off,
as in rnnlab's evaluation. ``export_lm`` writes the model and, beside it, ``<name>.json``: the
vocabulary, the data level (``char`` or ``word``) and the input/output names and shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

from rnnlab.io.onnx.export import write_model_and_json
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.layers import add_embedding, add_linear
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.language_model import LanguageModel
from rnnlab.tasks.lm.task import load_run


def lm_graph(model: LanguageModel, opset: int) -> Graph:
    """The graph of ``model`` (see the module docstring)."""
    g = Graph("rnnlab_language_model", check_opset(opset))
    rnn, cfg = model.rnn, model.config
    L, H, V = rnn.num_layers, cfg.hidden_size, cfg.vocab_size
    names = ["h0", "c0"][:1 + rnn.has_cell_state]
    ids = g.input("ids", "int64", ["time", "batch"])
    states = [g.input(n, "float32", [L, "batch", H]) for n in names]
    e, table = add_embedding(g, model.embedding, ids, "embedding")  # (T, B, E)
    y, finals = add_recurrent(g, rnn, e, None, states, name="rnn")
    w_t = None
    if cfg.tie_weights:  # E^T (E, V) from the embedding's table, stored once
        w_t = g.op("Transpose", [table], perm=[1, 0])[0]
    logits = add_linear(g, model.decoder, y, "decoder", w_t)  # (T, B, V)
    g.output("logits", logits, "float32", ["time", "batch", V])
    for n, f in zip(names, finals, strict=True):
        g.output(n.replace("0", "_n"), f, "float32", [L, "batch", H])
    return g


def export_lm(run: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> list[Path]:
    """Export the language model of run directory ``run`` to ``out`` (.onnx) and write its
    description to ``out`` with the suffix ``.json``; returns both paths."""
    model, vocab, state, _, _ = load_run(Path(run))
    model.eval()
    g = lm_graph(model, opset)
    names = ["h0", "c0"][:1 + model.rnn.has_cell_state]
    meta = {"task": "language_model", "cell": model.config.cell,
            "level": state["data"]["level"], **g.signature,
            "state": {n: n.replace("0", "_n") for n in names}, "initial_state": "zeros",
            "vocab": vocab.to_dict()}
    doc = f"rnnlab language model ({model.config.cell})"
    return [Path(out), write_model_and_json(g, out, meta, doc)]
