"""The few ONNX protobuf messages an exporter needs, encoded by hand (no protobuf, no onnx).

The protobuf wire format: a message is a run of fields, each ``key value`` with
``key = varint(field_number << 3 | wire_type)``:

    wire 0  varint            int32/int64/enum/bool; 7 bits a byte, low bits first, high bit =
                              "more"; a negative int64 is its 64-bit two's complement (10 bytes)
    wire 2  length-delimited  varint(len) then the bytes: strings, bytes, nested messages
    wire 5  32-bit            float, little-endian

onnx.proto is proto2, so a repeated scalar is written unpacked (one ``key value`` per element);
fields are written in field-number order, as protobuf's own serializer does, so for the same
content these functions give the very bytes ``SerializeToString`` gives. The field numbers
below are those of onnx.proto (onnx 1.x; they never change once released).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np

# TensorProto.DataType (onnx.proto: enum DataType)
FLOAT, INT32, INT64, DOUBLE = 1, 6, 7, 11
_ELEM_TYPES = {np.dtype("float32"): FLOAT, np.dtype("int32"): INT32, np.dtype("int64"): INT64,
               np.dtype("float64"): DOUBLE}

# AttributeProto.AttributeType (onnx.proto: enum AttributeType)
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR = 1, 2, 3, 4
_ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 6, 7, 8

Dim = int | str  # a fixed size (dim_value) or a named dynamic one (dim_param)


# ----------------------------------------------------------------------------- wire format


def varint(n: int) -> bytes:
    """Base-128 varint of ``n``; negatives as 64-bit two's complement (protobuf's int64)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def int_field(field: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return _key(field, 0) + varint(int(value))


def float_field(field: int, value: float) -> bytes:
    """A float field (wire type 5, little-endian IEEE 754 single)."""
    return _key(field, 5) + struct.pack("<f", value)


def bytes_field(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2): bytes, a string or an encoded message."""
    return _key(field, 2) + varint(len(data)) + data


def string_field(field: int, text: str) -> bytes:
    return bytes_field(field, text.encode("utf-8"))


def _repeated(encode, field: int, values: Iterable) -> bytes:
    return b"".join(encode(field, v) for v in values)


# ----------------------------------------------------------------------------- messages


def elem_type(dtype: object) -> int:
    """The TensorProto.DataType code of a NumPy dtype (either byte order)."""
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype not in _ELEM_TYPES:
        raise TypeError(f"onnx: expected one of the dtypes {sorted(map(str, _ELEM_TYPES))}, "
                        f"got {dtype}")
    return _ELEM_TYPES[dtype]


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9 (little-endian, C order)."""
    array = np.asarray(array)
    code = elem_type(array.dtype)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return (_repeated(int_field, 1, array.shape) + int_field(2, code)
            + string_field(8, name) + bytes_field(9, raw))


def attribute(name: str, value: object) -> bytes:
    """AttributeProto: name = 1, f = 2, i = 3, s = 4, t = 5, floats = 7, ints = 8, strings = 9,
    type = 20; the type follows the Python value (int, float, str, array or a list of one)."""
    head = string_field(1, name)
    if isinstance(value, bool | int | np.integer):
        return head + int_field(3, int(value)) + int_field(20, _ATTR_INT)
    if isinstance(value, float):
        return head + float_field(2, value) + int_field(20, _ATTR_FLOAT)
    if isinstance(value, str):
        return head + string_field(4, value) + int_field(20, _ATTR_STRING)
    if isinstance(value, np.ndarray):
        return head + bytes_field(5, tensor("", value)) + int_field(20, _ATTR_TENSOR)
    if isinstance(value, list | tuple) and value:
        if all(isinstance(v, str) for v in value):
            return head + _repeated(string_field, 9, value) + int_field(20, _ATTR_STRINGS)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return head + _repeated(int_field, 8, value) + int_field(20, _ATTR_INTS)
        if all(isinstance(v, float) for v in value):
            return head + _repeated(float_field, 7, value) + int_field(20, _ATTR_FLOATS)
    raise TypeError(f"onnx attribute {name!r}: expected an int, float, str, array or a non-empty "
                    f"list of one kind, got {value!r:.80}")


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str,
         attributes: dict[str, object] | None = None) -> bytes:
    """NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5. An absent
    optional input is the empty name ``""``."""
    attrs = attributes or {}
    return (_repeated(string_field, 1, inputs) + _repeated(string_field, 2, outputs)
            + string_field(3, name) + string_field(4, op_type)
            + b"".join(bytes_field(5, attribute(k, v)) for k, v in sorted(attrs.items())))


def _dimension(dim: Dim) -> bytes:
    """TensorShapeProto.Dimension: dim_value = 1, dim_param = 2."""
    if isinstance(dim, str):
        return string_field(2, dim)
    return int_field(1, dim)


def value_info(name: str, code: int, dims: Sequence[Dim]) -> bytes:
    """ValueInfoProto (name = 1, type = 2) of a tensor: TypeProto.tensor_type = 1 ->
    TypeProto.Tensor (elem_type = 1, shape = 2) -> TensorShapeProto (dim = 1)."""
    shape = b"".join(bytes_field(1, _dimension(d)) for d in dims)
    tensor_type = int_field(1, code) + bytes_field(2, shape)
    return string_field(1, name) + bytes_field(2, bytes_field(1, tensor_type))


def graph(nodes: Sequence[bytes], name: str, initializers: Sequence[bytes],
          inputs: Sequence[bytes], outputs: Sequence[bytes], doc_string: str = "") -> bytes:
    """GraphProto: node = 1, name = 2, initializer = 5, doc_string = 10, input = 11,
    output = 12 (each element an encoded message)."""
    return (_repeated(bytes_field, 1, nodes) + string_field(2, name)
            + _repeated(bytes_field, 5, initializers)
            + (string_field(10, doc_string) if doc_string else b"")
            + _repeated(bytes_field, 11, inputs) + _repeated(bytes_field, 12, outputs))


def model(graph_bytes: bytes, *, ir_version: int, opset: int, producer_name: str,
          producer_version: str, doc_string: str = "",
          metadata: dict[str, str] | None = None) -> bytes:
    """ModelProto: ir_version = 1, producer_name = 2, producer_version = 3, doc_string = 6,
    graph = 7, opset_import = 8 (OperatorSetIdProto: domain = 1, version = 2; the default
    domain "" is left unset), metadata_props = 14 (StringStringEntryProto: key = 1,
    value = 2)."""
    props = b"".join(bytes_field(14, string_field(1, k) + string_field(2, v))
                     for k, v in (metadata or {}).items())
    return (int_field(1, ir_version) + string_field(2, producer_name)
            + string_field(3, producer_version)
            + (string_field(6, doc_string) if doc_string else b"")
            + bytes_field(7, graph_bytes) + bytes_field(8, int_field(2, opset)) + props)
