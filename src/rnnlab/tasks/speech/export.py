"""A trained speech model (classifier or CTC) as an ONNX graph: feature frames in, posteriors out.

    features (T, B, D) float32   frames as rnnlab's features make them (the JSON holds the
                                 FeatureConfig: rate, frame, hop, mels, kind, deltas, ...)
    lengths  (B,) int64          frames per utterance, any order

The graph of :class:`rnnlab.models.classifier.SequenceClassifier` (dropout off)::

    frame stacking (k > 1): Pad T to a multiple of k, Transpose to (B, T, D), Reshape
        (B, T/k, k*D), Transpose back: step u = [x_{uk}; ...; x_{uk+k-1}];
        steps = (lengths + k - 1) / k
    h = RNN^L(x', steps)                                     (U, B, KH), zeros past each end
    output "class":  p = pool(h)  (B, KH)
        mean       ReduceSum(h, axis 0) / steps             (h is zero past each end)
        last       [h^fwd at each end; h^bwd at step 0]: the last layer's final states
        attention  s = v . tanh(W_k h_u + W_q q)  (W_q q a constant), -inf past each end,
                   a = Softmax over u, p = sum_u a_u h_u
        log_probs = LogSoftmax(p W^T + b)                    (B, C)
    output "ctc":    log_probs = LogSoftmax(h W^T + b)       (U, B, C + 1); class C is the blank

Outputs ``log_probs`` and ``steps`` (B,) int64 (the steps each utterance has). CTC's greedy
decoding: the argmax of each step up to ``steps``, repeats merged, blanks dropped.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rnnlab.io.onnx import proto
from rnnlab.io.onnx.export import write_model_and_json
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.layers import add_linear
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.classifier import SequenceClassifier
from rnnlab.tasks.speech.task import load_speech


def _stack(g: Graph, x: str, lengths: str, k: int, D: int) -> tuple[str, str]:
    """Frame stacking by k (see the module docstring)."""
    T = g.op("Gather", [g.op("Shape", [x])[0], g.ints("zero", [0])], axis=0)[0]  # (1,)
    kk = g.ints("k", [k])
    pad = g.op("Mod", [g.op("Sub", [kk, g.op("Mod", [T, kk])[0]])[0], kk])[0]  # (1,)
    pads = g.op("Concat", [g.ints("pads_head", [0, 0, 0]), pad, g.ints("pads_tail", [0, 0])],
                axis=0)[0]
    x = g.op("Pad", [x, pads])[0]  # (U*k, B, D), zeros at the end
    x = g.op("Transpose", [x], perm=[1, 0, 2])[0]
    x = g.op("Reshape", [x, g.ints("shape", [0, -1, k * D])])[0]  # (B, U, k*D)
    x = g.op("Transpose", [x], perm=[1, 0, 2])[0]
    steps = g.op("Div", [g.op("Add", [lengths, g.ints("k_minus_1", [k - 1])])[0], kk])[0]
    return x, steps


def _valid(g: Graph, h: str, steps: str) -> str:
    """(U, B) bool: step u of utterance b is inside it."""
    U = g.op("Gather", [g.op("Shape", [h])[0], g.constant("zero", np.array(0))], axis=0)[0]
    u = g.op("Range", [g.constant("zero", np.array(0)), U, g.constant("one", np.array(1))])[0]
    return g.op("Less", [g.op("Reshape", [u, g.ints("shape", [-1, 1])])[0],
                         g.op("Reshape", [steps, g.ints("shape", [1, -1])])[0]])[0]


def _pool(g: Graph, model: SequenceClassifier, h: str, steps: str, finals: list[str]) -> str:
    c, H = model.config, model.config.hidden
    if c.pool == "mean":
        total = g.op("ReduceSum", [h, g.ints("axes", [0])], keepdims=0)[0]  # (B, KH)
        count = g.op("Cast", [g.op("Reshape", [steps, g.ints("shape", [-1, 1])])[0]],
                     to=proto.FLOAT)[0]
        return g.op("Div", [total, count])[0]
    if c.pool == "last":
        K, L = c.directions, c.layers
        rows = g.op("Slice", [finals[0], g.ints("starts", [(L - 1) * K]),
                              g.ints("ends", [L * K]), g.ints("axes", [0])])[0]  # (K, B, H)
        rows = g.op("Transpose", [rows], perm=[1, 0, 2])[0]
        return g.op("Reshape", [rows, g.ints("shape", [0, K * H])])[0]  # (B, K*H)
    p = model.attention.state_dict()
    pq = (p["weight_query"] @ model.state_dict()["query"]).astype(np.float32)  # W_q q (A,)
    pk = g.op("MatMul", [h, g.constant("attention.weight_key_t",
                                       p["weight_key"].T.astype(np.float32))])[0]  # (U, B, A)
    e = g.op("Tanh", [g.op("Add", [pk, g.constant("attention.query_projected", pq)])[0]])[0]
    s = g.op("MatMul", [e, g.constant("attention.v", p["v"].astype(np.float32))])[0]  # (U, B)
    s = g.op("Where", [_valid(g, h, steps), s, g.constant("minus_inf", np.float32(-np.inf))])[0]
    a = g.op("Softmax", [g.op("Transpose", [s], perm=[1, 0])[0]], axis=1)[0]  # (B, U)
    a = g.op("Reshape", [a, g.ints("shape", [0, 1, -1])])[0]  # (B, 1, U)
    hb = g.op("Transpose", [h], perm=[1, 0, 2])[0]  # (B, U, KH)
    return g.op("Reshape", [g.op("MatMul", [a, hb])[0], g.ints("shape", [0, -1])])[0]


def speech_graph(model: SequenceClassifier, opset: int) -> Graph:
    """The graph of ``model``'s :meth:`log_probs` (see the module docstring)."""
    c = model.config
    g = Graph("rnnlab_speech", check_opset(opset))
    x = g.input("features", "float32", ["time", "batch", c.inputs])
    lengths = g.input("lengths", "int64", ["batch"])
    steps = lengths
    if c.stack > 1:
        x, steps = _stack(g, x, lengths, c.stack, c.inputs)
    h, finals = add_recurrent(g, model.rnn, x, g.op("Cast", [steps], to=proto.INT32)[0],
                              name="rnn")
    if c.output == "ctc":
        logp = g.op("LogSoftmax", [add_linear(g, model.head, h, "head")], axis=2)[0]
        g.output("log_probs", logp, "float32", ["steps", "batch", c.outputs])
    else:
        z = add_linear(g, model.head, _pool(g, model, h, steps, finals), "head")
        g.output("log_probs", g.op("LogSoftmax", [z], axis=1)[0], "float32",
                 ["batch", c.outputs])
    g.output("steps", steps, "int64", ["batch"])
    return g


def export_speech(run: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> list[Path]:
    """Export the speech model of run directory ``run`` (its best weights) to ``out`` and its
    description (classes, features, decoding) to ``out`` with the suffix ``.json``."""
    sm, _, _ = load_speech(Path(run))
    g = speech_graph(sm.model, opset)
    c = sm.model.config
    meta = {"task": "speech", **g.signature, "output": c.output, "classes": sm.classes,
            "blank": c.blank, "stack": c.stack, "features": asdict(sm.features),
            "decode": "ctc greedy: argmax per step, merge repeats, drop blank"
                      if c.output == "ctc" else "argmax"}
    doc = f"rnnlab speech model ({c.cell}, {c.output})"
    return [Path(out), write_model_and_json(g, out, meta, doc)]
