"""ONNX export written with NumPy alone: a protobuf encoder for the few messages needed
(:mod:`~rnnlab.io.onnx.proto`), a graph builder (:mod:`~rnnlab.io.onnx.graph`), the recurrent
layers as ONNX operators (:mod:`~rnnlab.io.onnx.recurrent`) and :func:`export_onnx`."""

from rnnlab.io.onnx.export import export_onnx
from rnnlab.io.onnx.graph import Graph

__all__ = ["Graph", "export_onnx"]
