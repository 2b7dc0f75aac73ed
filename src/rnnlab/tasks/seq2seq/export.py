"""A trained encoder-decoder as two ONNX graphs: the encoder, and one decoder step.

Encoder (``<stem>.encoder.onnx``; Ts source steps, B sequences, L layers, Hd decoder units)::

    src (Ts, B) int64, src_lengths (B,) int64 (any order; the source reversed first when the
    JSON says ``reverse_source``)
    memory, s_n = Encoder(Gather(E_src, src), src_lengths)         memory (Ts, B, Hd)
    h0 (, c0)   = bridge(s_n): Reshape (L, K, B, H), Transpose (0, 2, 1, 3), Reshape (L, B, K*H)
    summary     = h0[L - 1]                                         (B, Hd)

Decoder step (``<stem>.decoder.onnx``), the equations of :meth:`Seq2Seq.decode_step`::

    y_prev (B,) int64, h (, c) (L, B, Hd), memory (Ts, B, Hd), src_lengths (B,),
    summary (B, Hd) (only with peeky)
    x     = [E_tgt[y_prev]; summary (peeky)]                  one step (1, B, E [+ Hd])
    o, h_n (, c_n) = Decoder(x, h (, c))                      o (B, Hd)
    attention (dot, general, additive): s_j = o . m_j, o^T W m_j or v . tanh(W_q o + W_k m_j);
              -inf past each source's end; a = Softmax_j(s); context = sum_j a_j m_j
    log_probs = LogSoftmax([o; context; summary] W^T + b)    (B, V_t)   (+ weights a (B, Ts))

Greedy decoding: y_prev = <bos>, state = the encoder's h0 (, c0); each step take the argmax,
feed it and h_n (, c_n) back, stop at <eos> (the JSON holds both ids and the vocabularies).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnnlab.data.pairs import BOS, EOS, PAD, special_id
from rnnlab.io.onnx import proto
from rnnlab.io.onnx.export import model_bytes, write_model_and_json
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.layers import add_embedding, add_linear
from rnnlab.io.onnx.recurrent import add_recurrent
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.tasks.seq2seq.task import load_seq2seq


def _state_names(model: Seq2Seq) -> list[str]:
    return ["h", "c"] if model.config.cell == "lstm" else ["h"]


def encoder_graph(model: Seq2Seq, opset: int) -> Graph:
    c = model.config
    L, K, H, Hd = c.num_layers, 1 + c.bidirectional, c.hidden_size, c.decoder_size
    g = Graph("rnnlab_seq2seq_encoder", check_opset(opset))
    src = g.input("src", "int64", ["src_time", "batch"])
    lengths = g.input("src_lengths", "int64", ["batch"])
    e, _ = add_embedding(g, model.src_embedding, src, "src_embedding")
    memory, finals = add_recurrent(g, model.encoder, e, g.op("Cast", [lengths],
                                                               to=proto.INT32)[0], name="encoder")
    g.output("memory", memory, "float32", ["src_time", "batch", Hd])
    for n, s in zip(_state_names(model), finals, strict=True):
        s = g.op("Reshape", [s, g.ints("shape", [L, K, -1, H])])[0]
        s = g.op("Transpose", [s], perm=[0, 2, 1, 3])[0]
        s = g.op("Reshape", [s, g.ints("shape", [L, -1, K * H])])[0]  # (L, B, Hd)
        g.output(n, s, "float32", [L, "batch", Hd])
        if n == "h":
            top = g.op("Gather", [s, g.constant("top", np.array(L - 1))], axis=0)[0]
    g.output("summary", top, "float32", ["batch", Hd])
    return g


def _attention(g: Graph, model: Seq2Seq, o: str, memory: str, lengths: str) -> tuple[str, str]:
    """Context (B, Hd) and weights (B, Ts) of the query o (B, Hd) over memory (Ts, B, Hd)."""
    p = model.attention.state_dict()
    score = model.config.attention
    m = g.op("Transpose", [memory], perm=[1, 0, 2])[0]  # (B, Ts, Hd)
    q = g.op("Reshape", [o, g.ints("shape", [0, 1, -1])])[0]  # (B, 1, Hd)
    if score == "additive":
        pq = g.op("MatMul", [q, g.constant("attention.weight_query_t",
                                           p["weight_query"].T.astype(np.float32))])[0]
        pk = g.op("MatMul", [m, g.constant("attention.weight_key_t",
                                           p["weight_key"].T.astype(np.float32))])[0]
        t = g.op("Tanh", [g.op("Add", [pq, pk])[0]])[0]  # (B, Ts, A)
        s = g.op("MatMul", [t, g.constant("attention.v", p["v"].astype(np.float32))])[0]
        s = g.op("Reshape", [s, g.ints("shape", [0, 1, -1])])[0]  # (B, 1, Ts)
    else:
        if score == "general":  # q^T W
            q = g.op("MatMul", [q, g.constant("attention.weight",
                                              p["weight"].astype(np.float32))])[0]
        s = g.op("MatMul", [q, g.op("Transpose", [m], perm=[0, 2, 1])[0]])[0]  # (B, 1, Ts)
    Ts = g.op("Gather", [g.op("Shape", [memory])[0], g.constant("zero", np.array(0))], axis=0)[0]
    j = g.op("Range", [g.constant("zero", np.array(0)), Ts, g.constant("one", np.array(1))])[0]
    valid = g.op("Less", [g.op("Reshape", [j, g.ints("shape", [1, 1, -1])])[0],
                          g.op("Reshape", [lengths, g.ints("shape", [-1, 1, 1])])[0]])[0]
    s = g.op("Where", [valid, s, g.constant("minus_inf", np.float32(-np.inf))])[0]
    a = g.op("Softmax", [s], axis=2)[0]  # (B, 1, Ts)
    context = g.op("Reshape", [g.op("MatMul", [a, m])[0], g.ints("shape", [0, -1])])[0]
    return context, g.op("Reshape", [a, g.ints("shape", [0, -1])])[0]


def decoder_graph(model: Seq2Seq, opset: int) -> Graph:
    c = model.config
    L, Hd = c.num_layers, c.decoder_size
    g = Graph("rnnlab_seq2seq_decoder_step", check_opset(opset))
    y = g.input("y_prev", "int64", ["batch"])
    names = _state_names(model)
    states = [g.input(n, "float32", [L, "batch", Hd]) for n in names]
    memory = g.input("memory", "float32", ["src_time", "batch", Hd])
    lengths = g.input("src_lengths", "int64", ["batch"])
    summary = g.input("summary", "float32", ["batch", Hd]) if c.peeky else None
    x, _ = add_embedding(g, model.tgt_embedding, g.op("Reshape", [y, g.ints("shape", [1, -1])])[0],
                         "tgt_embedding")  # (1, B, E)
    if c.peeky:
        x = g.op("Concat", [x, g.op("Reshape", [summary, g.ints("shape", [1, -1, Hd])])[0]],
                 axis=2)[0]
    o, finals = add_recurrent(g, model.decoder, x, None, states, name="decoder")
    o = g.op("Reshape", [o, g.ints("shape", [-1, Hd])])[0]  # (B, Hd)
    parts, weights = [o], None
    if model.attention is not None:
        context, weights = _attention(g, model, o, memory, lengths)
        parts.append(context)
    if c.peeky:
        parts.append(summary)
    z = g.op("Concat", parts, axis=1)[0] if len(parts) > 1 else o
    logp = g.op("LogSoftmax", [add_linear(g, model.readout, z, "readout")], axis=1)[0]
    g.output("log_probs", logp, "float32", ["batch", c.tgt_vocab])
    for n, s in zip(names, finals, strict=True):
        g.output(f"{n}_n", s, "float32", [L, "batch", Hd])
    if weights is not None:
        g.output("weights", weights, "float32", ["batch", "src_time"])
    return g


def export_seq2seq(run: str | os.PathLike, out: str | os.PathLike, opset: int = 17) -> list[Path]:
    """Write ``<stem>.encoder.onnx``, ``<stem>.decoder.onnx`` beside ``out`` and ``out`` with
    the suffix ``.json`` (vocabularies, special ids, both graphs' inputs and outputs), the
    three together or none."""
    model, src_vocab, tgt_vocab, _, _ = load_seq2seq(Path(run))
    out = Path(out)
    enc, dec = encoder_graph(model, opset), decoder_graph(model, opset)
    enc_path, dec_path = (out.with_name(f"{out.stem}.{part}.onnx") for part in ("encoder",
                                                                                "decoder"))
    c = model.config
    meta = {"task": "seq2seq", "encoder": {"model": enc_path.name, **enc.signature},
            "decoder": {"model": dec_path.name, **dec.signature},
            "state": {n: f"{n}_n" for n in _state_names(model)},
            "reverse_source": c.reverse_source, "level": "char",
            "bos": special_id(tgt_vocab, BOS), "eos": special_id(tgt_vocab, EOS),
            "src_pad": special_id(src_vocab, PAD),
            "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict()}
    encoder = {enc_path: model_bytes(enc, "rnnlab seq2seq encoder")}
    json_path = write_model_and_json(dec, dec_path, meta, "rnnlab seq2seq decoder step",
                                     json_path=out.with_suffix(".json"), also=encoder)
    return [enc_path, dec_path, json_path]
