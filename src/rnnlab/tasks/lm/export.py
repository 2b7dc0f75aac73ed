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

import json
import os
from pathlib import Path

import numpy as np

from rnnlab.io.atomic import atomic_write_text
from rnnlab.io.onnx.export import write_model
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.language_model import LanguageModel
from rnnlab.tasks.lm.task import load_run


def lm_graph(model: LanguageModel, opset: int) -> tuple[Graph, dict]:
    """The graph of ``model`` and the description of its inputs and outputs."""
    g = Graph("rnnlab_language_model", check_opset(opset))
    rnn, cfg = model.rnn, model.config
    L, H, V = rnn.num_layers, cfg.hidden_size, cfg.vocab_size
    names = ["h0", "c0"][:1 + rnn.has_cell_state]
    ids = g.input("ids", "int64", ["time", "batch"])
    states = [g.input(n, "float32", [L, "batch", H]) for n in names]
    E = model.embedding.state_dict()["weight"].astype(np.float32)
    table = g.constant("embedding.weight", E)
    e = g.op("Gather", [table, ids], axis=0)[0]  # (T, B, E)
    y, finals = add_recurrent(g, rnn, e, None, states, name="rnn")
    decoder = model.decoder.state_dict()
    if cfg.tie_weights:
        w_t = g.op("Transpose", [table], perm=[1, 0])[0]  # E^T (E, V), stored once
    else:
        w_t = g.constant("decoder.weight_t", decoder["weight"].T.astype(np.float32))  # (H, V)
    logits = g.op("MatMul", [y, w_t])[0]
    if "bias" in decoder:
        logits = g.op("Add", [logits, g.constant("decoder.bias",
                                                 decoder["bias"].astype(np.float32))])[0]
    g.output("logits", logits, "float32", ["time", "batch", V])
    for n, f in zip(names, finals, strict=True):
        g.output(n.replace("0", "_n"), f, "float32", [L, "batch", H])
    state = {"shape": [L, "batch", H], "dtype": "float32", "initial": "zeros"}
    io = {"inputs": {"ids": {"shape": ["time", "batch"], "dtype": "int64"},
                     **{n: state for n in names}},
          "outputs": {"logits": {"shape": ["time", "batch", V], "dtype": "float32"},
                      **{n.replace("0", "_n"): state for n in names}},
          "state": {n: n.replace("0", "_n") for n in names}}
    return g, io


def export_lm(run: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> Path:
    """Export the language model of run directory ``run`` to ``out`` (.onnx) and write its
    description to ``out`` with the suffix ``.json``; returns the JSON's path."""
    model, vocab, state, _, _ = load_run(Path(run))
    model.eval()
    g, io = lm_graph(model, opset)
    out = Path(out)
    meta = {"format": "rnnlab-onnx", "task": "language_model", "model": out.name,
            "opset": g.opset, "cell": model.config.cell, "level": state["data"]["level"],
            **io, "vocab": vocab.to_dict()}
    text = json.dumps(meta, ensure_ascii=False, indent=1) + "\n"
    write_model(g, out, doc_string=f"rnnlab language model ({model.config.cell})",
                metadata={"rnnlab.task": "language_model"})
    json_path = out.with_suffix(".json")
    atomic_write_text(json_path, text)
    return json_path
