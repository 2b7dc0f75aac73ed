"""A small ONNX graph builder: named values, initializers, nodes, and the opset each node needs.

``Graph`` collects what an exporter adds and encodes it with :mod:`rnnlab.io.onnx.proto`.
Every node is checked against the model's opset when it is added: the signatures written here
(``Unsqueeze`` with its axes as an input, ``Slice`` with inputs, ...) exist from the opset in
``MIN_OPSET`` on, and an older opset is refused with a message naming the one needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnlab.io.onnx import proto

# The opset from which each operator exists in the form written here.
MIN_OPSET = {
    "Add": 7, "Cast": 6, "Concat": 4, "Gather": 1, "GRU": 7, "Identity": 1, "Less": 9,
    "LSTM": 7, "MatMul": 9, "Mul": 7, "Range": 11, "Reshape": 5, "RNN": 7, "Shape": 1,
    "Slice": 10, "Transpose": 1, "Unsqueeze": 13, "Exp": 6, "Sqrt": 6, "Max": 8, "Sum": 8,
    "Sub": 7, "TopK": 11, "Div": 7, "Mod": 10, "Pad": 11, "ReduceSum": 13, "Tanh": 6,
    "Where": 9, "Softmax": 1, "LogSoftmax": 1, "Min": 8,
}
_WHY = {"Unsqueeze": "Unsqueeze (axes as an input)", "Slice": "Slice (starts/ends as inputs)",
        "TopK": "TopK (smallest first)", "ReduceSum": "ReduceSum (axes as an input)",
        "Pad": "Pad (pads as an input)"}
OPSETS = range(10, 22)  # Slice-10 is used by every export; 21: the newest tested
# The IR version that each opset came with (onnx.helper.VERSION_TABLE): ONNX Runtime accepts a
# model whose IR version is at least its opset's.
IR_VERSION = {10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9,
              21: 10}


def check_opset(opset: object) -> int:
    """The opset as an int, or a ValueError naming the supported range. Whether it is new
    enough for the operators a graph uses is checked node by node (:meth:`Graph.op`)."""
    if isinstance(opset, bool) or not isinstance(opset, int | np.integer) or opset not in OPSETS:
        raise ValueError(f"opset: expected an int from {OPSETS[0]} to {OPSETS[-1]}, got "
                         f"{opset!r}")
    return int(opset)


class Graph:
    """An ONNX graph being built: ``g.input``, ``g.constant``, ``g.op``, ``g.output``, then
    ``g.to_bytes()``. Value names are made unique by a counter suffix."""

    def __init__(self, name: str, opset: int) -> None:
        self.name = name
        self.opset = opset
        self._nodes: list[bytes] = []
        self._initializers: list[bytes] = []
        self._inputs: list[bytes] = []
        self._outputs: list[bytes] = []
        self._used: set[str] = set()
        self.signature: dict[str, dict] = {"inputs": {}, "outputs": {}}  # name -> dtype, shape

    def fresh(self, hint: str) -> str:
        """A value name not used yet: ``hint``, else ``hint_1``, ``hint_2``, ..."""
        name, k = hint, 0
        while name in self._used:
            k += 1
            name = f"{hint}_{k}"
        self._used.add(name)
        return name

    def input(self, name: str, dtype: object, dims: Sequence[proto.Dim]) -> str:
        """A graph input; dims are sizes or names of dynamic dimensions (``"batch"``)."""
        if name in self._used:
            raise ValueError(f"onnx graph input: expected a new name, got {name!r} again")
        self._used.add(name)
        self._inputs.append(proto.value_info(name, proto.elem_type(dtype), dims))
        self.signature["inputs"][name] = {"dtype": str(np.dtype(dtype)), "shape": list(dims)}
        return name

    def constant(self, hint: str, array: np.ndarray) -> str:
        """An initializer (a constant tensor stored in the model)."""
        name = self.fresh(hint)
        self._initializers.append(proto.tensor(name, np.asarray(array)))
        return name

    def ints(self, hint: str, values: Sequence[int]) -> str:
        """A 1-D int64 initializer (shapes, axes, slice bounds)."""
        return self.constant(hint, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1,
           **attributes: object) -> list[str]:
        """Add one node; returns its output names (fresh names from ``op_type`` when
        ``outputs`` is a count). Refuses an operator the opset is too old for."""
        need = MIN_OPSET[op_type]
        if self.opset < need:
            raise ValueError(f"opset: {_WHY.get(op_type, op_type)} needs opset {need} or newer, "
                             f"got opset {self.opset}")
        if isinstance(outputs, int):
            outputs = [self.fresh(f"{op_type.lower()}") for _ in range(outputs)]
        else:
            outputs = [self.fresh(o) if o else "" for o in outputs]
        name = self.fresh(f"node_{op_type}")
        self._nodes.append(proto.node(op_type, inputs, outputs, name, attributes))
        return list(outputs)

    def output(self, name: str, value: str, dtype: object, dims: Sequence[proto.Dim]) -> None:
        """Expose ``value`` as the graph output ``name`` (through an Identity node)."""
        if name in self._used:
            raise ValueError(f"onnx graph output: expected a new name, got {name!r} again")
        self._used.add(name)
        self._nodes.append(proto.node("Identity", [value], [name], self.fresh("node_Identity")))
        self._outputs.append(proto.value_info(name, proto.elem_type(dtype), dims))
        self.signature["outputs"][name] = {"dtype": str(np.dtype(dtype)), "shape": list(dims)}

    def to_bytes(self, *, producer_version: str, doc_string: str = "",
                 metadata: dict[str, str] | None = None) -> bytes:
        """The encoded ModelProto."""
        body = proto.graph(self._nodes, self.name, self._initializers, self._inputs,
                           self._outputs)
        return proto.model(body, ir_version=IR_VERSION[self.opset], opset=self.opset,
                           producer_name="rnnlab", producer_version=producer_version,
                           doc_string=doc_string, metadata=metadata)
