"""ONNX export: the hand-written protobuf against the onnx package (bytes and fields), and every
exported layer checked by ``onnx.checker`` and run by ONNX Runtime against rnnlab's forward
over a seeded grid (cells, layers, directions, layouts, bias, lengths, initial states)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require_module

import rnnlab
from rnnlab.io.onnx import Graph, export_onnx, proto
from rnnlab.io.onnx.graph import OPSETS

CELLS = {"lstm": (rnnlab.LSTM, {}), "gru": (rnnlab.GRU, {}), "rnn_tanh": (rnnlab.RNN, {}),
         "rnn_relu": (rnnlab.RNN, {"nonlinearity": "relu"})}


@pytest.fixture(scope="module")
def onnx():
    return require_module("onnx")


@pytest.fixture(scope="module")
def ort():
    return require_module("onnxruntime")


def _session(ort, path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- protobuf writer


@pytest.mark.parametrize("n, encoded", [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"),
                                        (300, "ac02"), (2**63 - 1, "ffffffffffffffff7f"),
                                        (-1, "ffffffffffffffffff01")])
def test_varint(n, encoded):
    assert proto.varint(n) == bytes.fromhex(encoded)


def test_messages_equal_the_onnx_packages_bytes(onnx):
    """Fields in field-number order, repeated scalars unpacked: SerializeToString's bytes."""
    from onnx import helper, numpy_helper

    g = np.random.default_rng(0)
    for array in (g.standard_normal((2, 3)).astype(np.float32), np.arange(-3, 3, dtype=np.int64),
                  np.array([7], np.int32), g.standard_normal(4), np.array(2.5, np.float32)):
        assert proto.tensor("w", array) == numpy_helper.from_array(array, "w").SerializeToString()
    for value in (-3, 5, 0.25, "forward", [1, -2, 3], [0.5, -1.5], ["Tanh", "Relu"]):
        assert proto.attribute("a", value) == helper.make_attribute("a", value).SerializeToString()
    node = proto.node("LSTM", ["x", "W", "R", "", "lens"], ["y", "y_h"], "n0",
                      {"hidden_size": 4, "direction": "bidirectional", "clip": 2.5})
    ref = helper.make_node("LSTM", ["x", "W", "R", "", "lens"], ["y", "y_h"], name="n0",
                           hidden_size=4, direction="bidirectional", clip=2.5)
    assert node == ref.SerializeToString()
    info = proto.value_info("x", proto.FLOAT, ["time", "batch", 3])
    ref_info = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["time", "batch", 3])
    assert info == ref_info.SerializeToString()


def test_model_round_trips_through_onnx_load(onnx, tmp_path):
    g = Graph("roundtrip", 17)
    x = g.input("x", "float32", ["batch", 3])
    w = g.constant("w", np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5)
    shape = g.ints("shape", [-1, 2])
    y = g.op("MatMul", [x, w])[0]
    g.output("y", g.op("Reshape", [y, shape])[0], "float32", ["batch", 2])
    data = g.to_bytes(producer_version="9.9", doc_string="doc é", metadata={"k": "v ü"})
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    m = onnx.load(os.fspath(path))
    onnx.checker.check_model(m, full_check=True)
    assert (m.ir_version, m.producer_name, m.producer_version, m.doc_string) == (
        8, "rnnlab", "9.9", "doc é")
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    assert {p.key: p.value for p in m.metadata_props} == {"k": "v ü"}
    assert m.graph.name == "roundtrip"
    (inp,) = m.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "x" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(inits["w"], np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5)
    np.testing.assert_array_equal(inits["shape"], [-1, 2])
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Reshape", "Identity"]
    assert list(m.graph.node[0].input) == ["x", "w"]
    assert [o.name for o in m.graph.output] == ["y"]


def test_big_endian_arrays_are_written_little_endian(onnx):
    from onnx import numpy_helper

    array = np.arange(6, dtype=">f4").reshape(2, 3)
    back = numpy_helper.to_array(onnx.TensorProto.FromString(proto.tensor("w", array)))
    np.testing.assert_array_equal(back, array)


def test_attributes_read_back(onnx):
    from onnx import helper

    data = proto.node("Op", ["a"], ["b"], "n", {"i": -7, "f": 1.5, "s": "relu", "ints": [3, -1],
                                                "floats": [0.5, 2.0], "strings": ["x", "yz"],
                                                "t": np.array([[1, 2]], np.int64)})
    node = onnx.NodeProto.FromString(data)
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got["i"] == -7 and got["f"] == 1.5 and got["s"] == b"relu"
    assert list(got["ints"]) == [3, -1] and list(got["floats"]) == [0.5, 2.0]
    assert list(got["strings"]) == [b"x", b"yz"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(got["t"]), [[1, 2]])


# ----------------------------------------------------------------------------- the layers


def _grid():
    """A seeded grid: every cell x direction x layout, three draws of the rest each; lengths in
    a shuffled order that include 1 and T; every third case a batch of one."""
    g = np.random.default_rng(17)
    cases = []
    for cell in CELLS:
        for bidirectional in (False, True):
            for batch_first in (False, True):
                for k in range(3):
                    cases.append(dict(
                        cell=cell, bidirectional=bidirectional, batch_first=batch_first,
                        layers=int(g.integers(1, 4)), bias=bool(g.random() < 0.7),
                        lengths=bool(k != 1), state=bool(g.random() < 0.5),
                        batch=1 if k == 2 else int(g.integers(2, 6)), T=int(g.integers(1, 8)),
                        seed=int(g.integers(1 << 30))))
    return cases


def _id(case):
    return "-".join([case["cell"], f"L{case['layers']}", "bi" if case["bidirectional"] else "uni",
                     "bf" if case["batch_first"] else "tm", "bias" if case["bias"] else "nobias",
                     "lens" if case["lengths"] else "full", "h0" if case["state"] else "zero",
                     f"B{case['batch']}", f"T{case['T']}"])


def _lengths(g, B, T):
    lens = g.integers(1, T + 1, B)
    lens[0], lens[-1] = 1, T  # one of length 1 and one full (the same one when B == 1)
    return g.permutation(lens).astype(np.int64)


GRID = _grid()


@pytest.mark.parametrize("case", GRID, ids=[_id(c) for c in GRID])
def test_onnx_runtime_equals_rnnlab(onnx, ort, tmp_path, case):
    cls, kwargs = CELLS[case["cell"]]
    D, H, B, T, K = 3, 4, case["batch"], case["T"], 1 + case["bidirectional"]
    layer = cls(D, H, num_layers=case["layers"], bias=case["bias"],
                batch_first=case["batch_first"], bidirectional=case["bidirectional"],
                seed=case["seed"], **kwargs)
    layer.eval()
    path = tmp_path / "layer.onnx"
    export_onnx(layer, path, with_lengths=case["lengths"], with_state=case["state"])
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)

    g = np.random.default_rng(case["seed"])
    x = g.standard_normal((B, T, D) if case["batch_first"] else (T, B, D)).astype(np.float32)
    feeds, state, lengths = {"input": x}, None, None
    if case["lengths"]:
        feeds["lengths"] = lengths = _lengths(g, B, T)
    if case["state"]:
        names = ("h0", "c0") if cls is rnnlab.LSTM else ("h0",)
        for n in names:
            feeds[n] = g.standard_normal((case["layers"] * K, B, H)).astype(np.float32)
        state = tuple(feeds[n] for n in names) if cls is rnnlab.LSTM else feeds["h0"]
    out, finals = layer(x, state, lengths=lengths)
    expected = [out, *(finals if cls is rnnlab.LSTM else (finals,))]

    got = _session(ort, path).run(None, feeds)
    assert [o.name for o in _session(ort, path).get_outputs()] == (
        ["output", "h_n", "c_n"] if cls is rnnlab.LSTM else ["output", "h_n"])
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if lengths is not None:  # past each sequence's end: exactly zero, as rnnlab's
        out_tb = got[0].transpose(1, 0, 2) if case["batch_first"] else got[0]
        pad = np.arange(T)[:, None] >= lengths[None, :]
        assert (out_tb[pad] == 0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_one_short_sequence_in_a_batch_of_one(ort, tmp_path, cell):
    """ONNX Runtime's padded steps and the reverse direction's final state, with one sequence
    shorter than the input (the grid's batches of one run the full length)."""
    cls, kwargs = CELLS[cell]
    layer = cls(3, 4, num_layers=2, bidirectional=True, seed=5, **kwargs)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path, with_lengths=True)
    x = np.random.default_rng(1).standard_normal((5, 1, 3)).astype(np.float32)
    lens = np.array([2], np.int64)
    out, finals = layer(x, lengths=lens)
    expected = [out, *(finals if cls is rnnlab.LSTM else (finals,))]
    got = _session(ort, path).run(None, {"input": x, "lengths": lens})
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert (got[0][2:] == 0).all() and (got[0][:2] != 0).any()
    ops = {n.op_type for n in require_module("onnx").load(os.fspath(path)).graph.node}
    assert {"Range", "Less", "Mul"} <= ops  # the zeros are the graph's, not the runtime's


@pytest.mark.parametrize("opset, with_lengths", [(OPSETS[0], False), (11, True), (13, True),
                                                 (17, True), (OPSETS[-1], True)])
def test_every_supported_opset_runs(onnx, ort, tmp_path, opset, with_lengths):
    layer = rnnlab.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path, opset=opset, with_lengths=with_lengths)
    m = onnx.load(os.fspath(path))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == opset
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    lens = np.array([2, 5, 1] if with_lengths else [5, 5, 5], np.int64)
    feeds = {"input": x, "lengths": lens} if with_lengths else {"input": x}
    got = _session(ort, path).run(None, feeds)
    out, (h, c) = layer(x, lengths=lens)
    for a, b in zip(got, (out, h, c), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_dynamic_time_and_batch(onnx, ort, tmp_path):
    layer = rnnlab.GRU(2, 3, seed=1)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    session = _session(ort, path)
    for T, B in ((1, 1), (9, 2), (4, 7)):
        x = np.random.default_rng(T).standard_normal((T, B, 2)).astype(np.float32)
        out, h = layer(x)
        got_out, got_h = session.run(None, {"input": x})
        np.testing.assert_allclose(got_out, out, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_h, h, rtol=1e-5, atol=1e-5)


def test_float64_layer_exports_in_float32(ort, tmp_path):
    layer = rnnlab.LSTM(2, 3, dtype=np.float64, seed=2)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    got = _session(ort, path).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(got[0], layer(x)[0], rtol=1e-5, atol=1e-5)


def test_a_layer_with_dropout_exports_its_evaluation(ort, tmp_path):
    """Dropout between layers is training's: the graph is the eval-mode forward, and exporting
    leaves the layer's mode alone."""
    layer = rnnlab.GRU(2, 3, num_layers=3, dropout=0.5, seed=4)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    assert layer.training
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    got = _session(ort, path).run(None, {"input": x})
    layer.eval()
    for a, b in zip(got, layer(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


def _one_line(excinfo):
    return "\n" not in str(excinfo.value)


@pytest.mark.parametrize("module", [rnnlab.LSTMCell(2, 3), rnnlab.nn.Linear(2, 3), "LSTM"])
def test_unsupported_module_is_named(tmp_path, module):
    with pytest.raises(TypeError, match=type(module).__name__) as e:
        export_onnx(module, tmp_path / "m.onnx")
    assert _one_line(e) and "expected an rnnlab RNN, LSTM or GRU" in str(e.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("opset", [OPSETS[0] - 1, OPSETS[-1] + 1, "17", 17.0, True])
def test_bad_opset(tmp_path, opset):
    with pytest.raises(ValueError, match=r"opset: expected an int from \d+ to \d+, got") as e:
        export_onnx(rnnlab.GRU(2, 3), tmp_path / "m.onnx", opset=opset)
    assert _one_line(e) and not list(tmp_path.iterdir())


def test_opset_10_cannot_mask_lengths_and_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"opset: Range needs opset 11 or newer, got opset 10"):
        export_onnx(rnnlab.GRU(2, 3), tmp_path / "m.onnx", opset=10, with_lengths=True)
    assert not list(tmp_path.iterdir())


def test_opset_too_old_for_an_operator_names_the_one_needed():
    g = Graph("g", 12)
    with pytest.raises(ValueError, match=r"Unsqueeze \(axes as an input\) needs opset 13 or "
                                         r"newer, got opset 12") as e:
        g.op("Unsqueeze", ["x", "axes"])
    assert _one_line(e)


def test_unwritable_path(tmp_path):
    layer = rnnlab.RNN(2, 3)
    for path in (tmp_path / "missing" / "m.onnx", tmp_path):
        with pytest.raises(OSError, match="export_onnx: expected a writable file path") as e:
            export_onnx(layer, path)
        assert _one_line(e)
    assert list(tmp_path.iterdir()) == []
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.tmp-*"))


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left on device"):
        export_onnx(rnnlab.LSTM(2, 3), path)
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
