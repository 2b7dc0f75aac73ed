"""Embedding and Linear layers as ONNX nodes (float32).

    Embedding   e = Gather(E, ids, axis=0)          ids (...) int64 -> (..., dim)
    Linear      y = MatMul(x, W^T) + b               x (..., in) -> (..., out)
"""

from __future__ import annotations

import numpy as np

from rnnlab.io.onnx.graph import Graph
from rnnlab.nn.layers import Embedding, Linear


def add_embedding(g: Graph, layer: Embedding, ids: str, name: str) -> tuple[str, str]:
    """The rows of ``layer``'s table picked by ``ids``, and the table's name."""
    table = g.constant(f"{name}.weight", layer.state_dict()["weight"].astype(np.float32))
    return g.op("Gather", [table, ids], axis=0)[0], table


def add_linear(g: Graph, layer: Linear, x: str, name: str, weight_t: str | None = None) -> str:
    """x W^T + b; ``weight_t`` names an existing W^T (tied weights) instead of the layer's."""
    params = layer.state_dict()
    if weight_t is None:
        weight_t = g.constant(f"{name}.weight_t", params["weight"].T.astype(np.float32))
    y = g.op("MatMul", [x, weight_t])[0]
    if "bias" in params:
        y = g.op("Add", [y, g.constant(f"{name}.bias", params["bias"].astype(np.float32))])[0]
    return y
