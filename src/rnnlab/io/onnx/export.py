"""``export_onnx``: an RNN, LSTM or GRU layer as an ONNX model file.

Graph inputs and outputs (shape legend as in :mod:`rnnlab.nn.recurrent`; T and B are dynamic,
named ``time`` and ``batch``):

    input    (T, B, D) float32, or (B, T, D) when the layer is batch_first
    lengths  (B,) int64, any order, each in [1, T]           only with ``with_lengths=True``
    h0, c0   (L*K, B, H) float32 (c0 for LSTM)               only with ``with_state=True``
    output   like rnnlab's: (T, B, K*H) or (B, T, K*H); zeros past each sequence's end
    h_n, c_n (L*K, B, H): the states after each sequence's last step (c_n for LSTM)

Without ``lengths`` every sequence runs the full T steps; without ``h0`` the states start at
zero. With ``lengths`` the output is masked in the graph (opset 11 or newer: Range). The graph
computes in float32 (ONNX Runtime has no float64 RNN kernel) and is the layer's evaluation:
no dropout between layers, whether the layer is in training mode or not. ``batch_first`` is a
Transpose on either side of the time-major operators (ONNX Runtime refuses ``layout=1`` for
RNN, LSTM and GRU alike).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from rnnlab.io.atomic import atomic_write_files
from rnnlab.io.onnx import proto
from rnnlab.io.onnx.graph import Graph, check_opset
from rnnlab.io.onnx.recurrent import OP_TYPE, add_recurrent
from rnnlab.nn.recurrent import LSTM


def check_layer(module: object) -> None:
    """TypeError unless ``module`` is an rnnlab RNN, LSTM or GRU layer."""
    if type(module) not in OP_TYPE:
        raise TypeError(f"export_onnx: expected an rnnlab RNN, LSTM or GRU layer, got "
                        f"{type(module).__name__} (not supported)")


def layer_graph(module, opset: int, with_lengths: bool, with_state: bool) -> Graph:
    """The graph of one recurrent layer (see the module docstring)."""
    check_layer(module)
    g = Graph(f"rnnlab_{type(module).__name__}", check_opset(opset))
    D, H = module.input_size, module.hidden_size
    LK = module.num_layers * module.num_directions
    seq = ["batch", "time"] if module.batch_first else ["time", "batch"]
    x = g.input("input", "float32", [*seq, D])
    lengths = None
    if with_lengths:
        lengths = g.op("Cast", [g.input("lengths", "int64", ["batch"])], to=proto.INT32)[0]
    names = ["h0", "c0"][:1 + isinstance(module, LSTM)]
    states = None
    if with_state:
        states = [g.input(n, "float32", [LK, "batch", H]) for n in names]
    if module.batch_first:
        x = g.op("Transpose", [x], perm=[1, 0, 2])[0]
    y, finals = add_recurrent(g, module, x, lengths, states)
    if module.batch_first:
        y = g.op("Transpose", [y], perm=[1, 0, 2])[0]
    g.output("output", y, "float32", [*seq, module.num_directions * H])
    for n, f in zip(names, finals, strict=True):
        g.output(n.replace("0", "_n"), f, "float32", [LK, "batch", H])
    return g


def model_bytes(g: Graph, doc_string: str = "", metadata: dict[str, str] | None = None) -> bytes:
    """``g`` encoded as an ONNX model file."""
    from rnnlab import __version__

    return g.to_bytes(producer_version=__version__, doc_string=doc_string, metadata=metadata)


def write_files(files: Mapping[Path, bytes]) -> None:
    """Write ``files`` together, all or none (:func:`~rnnlab.io.atomic.atomic_write_files`);
    OSError in one line, naming the first path, if they cannot be written."""
    try:
        atomic_write_files(files)
    except OSError as e:
        raise OSError(f"export_onnx: expected a writable file path, got "
                      f"{os.fspath(next(iter(files)))!r} ({e.strerror or e})") from None


def write_model(g: Graph, path: str | os.PathLike, doc_string: str = "",
                metadata: dict[str, str] | None = None) -> None:
    """Encode ``g`` and write it to ``path`` atomically; OSError in one line if it cannot."""
    write_files({Path(path): model_bytes(g, doc_string, metadata)})


def write_model_and_json(g: Graph, out: str | os.PathLike, meta: dict, doc_string: str = "",
                         json_path: str | os.PathLike | None = None,
                         also: Mapping[Path, bytes] | None = None) -> Path:
    """Write the model to ``out``, ``meta`` (with the model's file name and opset) to
    ``json_path`` (default: ``out`` with the suffix ``.json``) and the files of ``also`` (other
    models of the export) as one set: all of them land, or none and the old files stay.
    Returns the JSON's path."""
    out = Path(out)
    meta = {"format": "rnnlab-onnx", "model": out.name, "opset": g.opset, **meta}
    text = json.dumps(meta, ensure_ascii=False, indent=1) + "\n"
    json_path = out.with_suffix(".json") if json_path is None else Path(json_path)
    model = model_bytes(g, doc_string, metadata={"rnnlab.task": str(meta.get("task"))})
    write_files({**(also or {}), out: model, json_path: text.encode("utf-8")})
    return json_path


def export_onnx(module, path: str | os.PathLike, *, opset: int = 17,
                with_lengths: bool = False, with_state: bool = False) -> None:
    """Write ``module`` (an RNN, LSTM or GRU layer) to ``path`` as an ONNX model.

    ``with_lengths`` adds the ``lengths`` input, ``with_state`` the initial states ``h0``
    (and ``c0``); see :mod:`rnnlab.io.onnx.export` for the graph's inputs and outputs. The file
    appears whole or not at all.
    """
    g = layer_graph(module, opset, bool(with_lengths), bool(with_state))
    write_model(g, path, doc_string=repr(module))
