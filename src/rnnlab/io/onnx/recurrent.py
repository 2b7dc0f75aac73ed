"""RNN, LSTM and GRU layers as ONNX's own ``RNN``, ``LSTM`` and ``GRU`` operators.

One operator per layer, both directions in it (``direction="bidirectional"``), time-major
(``layout=0``). Per layer ``l`` the operator's inputs are, with K directions and G gates:

    W  (K, G*H, D_l)   weight_ih_l{l}[_reverse], gate blocks reordered (below)
    R  (K, G*H, H)     weight_hh_l{l}[_reverse], reordered likewise
    B  (K, 2*G*H)      [bias_ih, bias_hh] concatenated, reordered; zeros when bias=False
    sequence_lens (B,) int32;  initial_h, initial_c (K, B, H): rows l*K .. l*K+K-1 of h0, c0

Gate blocks, rnnlab (= torch.nn) -> ONNX:

    LSTM  [i, f, g, o] -> [i, o, f, c]     (g is ONNX's c)
    GRU   [r, z, n]    -> [z, r, h]        with linear_before_reset=1: n = tanh(x W_in^T + b_in
                                           + r * (h W_hn^T + b_hn)), torch's (and rnnlab's) form
    RNN   one block; activations ["Tanh"] or ["Relu"], one per direction

ONNX's Y is (T, K, B, H); Transpose(0, 2, 1, 3) and Reshape(0, 0, -1) make it rnnlab's
(T, B, K*H), the next layer's input. The final states Y_h, Y_c (K, B, H) of all layers are
concatenated into rnnlab's (L*K, B, H).

With ``sequence_lens`` the last layer's output is multiplied by the mask t < lengths[b]:
ONNX does not say what Y holds past a sequence's end (ONNX Runtime writes zeros, TensorFlow
repeats the last state), and rnnlab's output is zero there.
"""

from __future__ import annotations

import numpy as np

from rnnlab.io.onnx import proto
from rnnlab.io.onnx.graph import Graph
from rnnlab.nn.recurrent import GRU, LSTM, RNN

# Row blocks of rnnlab's stacked gate weights, in ONNX's order.
GATE_ORDER = {LSTM: [0, 3, 1, 2], GRU: [1, 0, 2], RNN: [0]}
OP_TYPE = {LSTM: "LSTM", GRU: "GRU", RNN: "RNN"}


def _reorder(array: np.ndarray, order: list[int]) -> np.ndarray:
    """Reorder the G stacked gate blocks (axis 0) of a weight or bias."""
    blocks = np.split(array, len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def layer_weights(module: RNN | LSTM | GRU, layer: int) -> tuple[np.ndarray, ...]:
    """ONNX's W, R, B of one layer (float32), directions stacked on axis 0."""
    kind, H = type(module), module.hidden_size
    order, G = GATE_ORDER[kind], module.gates * H
    params = module.state_dict()
    W, R, B = [], [], []
    for d in range(module.num_directions):
        s = f"_l{layer}" + ("_reverse" if d else "")
        W.append(_reorder(params[f"weight_ih{s}"], order))
        R.append(_reorder(params[f"weight_hh{s}"], order))
        if module.bias:
            B.append(np.concatenate([_reorder(params[f"bias_ih{s}"], order),
                                     _reorder(params[f"bias_hh{s}"], order)]))
        else:
            B.append(np.zeros(2 * G))
    return tuple(np.stack(a).astype(np.float32) for a in (W, R, B))


def _attributes(module: RNN | LSTM | GRU) -> dict[str, object]:
    K = module.num_directions
    attrs: dict[str, object] = {"hidden_size": module.hidden_size,
                                "direction": "bidirectional" if K == 2 else "forward"}
    if isinstance(module, GRU):
        attrs["linear_before_reset"] = 1
    if isinstance(module, RNN):
        attrs["activations"] = [module.nonlinearity.capitalize()] * K
    return attrs


def add_step_mask(g: Graph, y: str, lengths: str) -> str:
    """(T, B, 1) float32: 1 where t < lengths[b] (``lengths`` int32 (B,)), else 0."""
    T = g.op("Gather", [g.op("Shape", [y])[0], g.constant("zero", np.array(0))], axis=0)[0]
    T = g.op("Cast", [T], to=proto.INT32)[0]
    t = g.op("Range", [g.constant("zero", np.int32(0)), T, g.constant("one", np.int32(1))])[0]
    valid = g.op("Less", [g.op("Reshape", [t, g.ints("shape", [-1, 1, 1])])[0],
                          g.op("Reshape", [lengths, g.ints("shape", [1, -1, 1])])[0]])[0]
    return g.op("Cast", [valid], to=proto.FLOAT)[0]


def add_recurrent(g: Graph, module: RNN | LSTM | GRU, x: str, lengths: str | None = None,
                  states: list[str] | None = None, name: str = "") -> tuple[str, list[str]]:
    """Add ``module``'s layers to ``g``.

    ``x`` (T, B, D) float32, time-major; ``lengths`` (B,) int32 or None; ``states`` the names
    of h0 (and c0) (L*K, B, H), or None for zeros. Returns the names of the output (T, B, K*H)
    and of the final states [h_n (, c_n)] (L*K, B, H).
    """
    K, L = module.num_directions, module.num_layers
    op_type = OP_TYPE[type(module)]
    n_states = 2 if isinstance(module, LSTM) else 1
    finals: list[list[str]] = [[] for _ in range(n_states)]
    prefix = f"{name}." if name else ""
    inp = x
    for layer in range(L):
        W, R, B = layer_weights(module, layer)
        weights = [g.constant(f"{prefix}{op_type}_l{layer}.{n}", a)
                   for n, a in zip("WRB", (W, R, B), strict=True)]
        initial = [""] * n_states
        if states is not None:
            bounds = [g.ints("starts", [layer * K]), g.ints("ends", [(layer + 1) * K]),
                      g.ints("axes", [0])]
            initial = [g.op("Slice", [s, *bounds])[0] for s in states]
        inputs = [inp, *weights, lengths or "", *initial]
        while inputs[-1] == "":  # trailing optional inputs are left out
            inputs.pop()
        outs = g.op(op_type, inputs, [f"{prefix}Y_l{layer}", f"{prefix}Y_h_l{layer}",
                                      f"{prefix}Y_c_l{layer}"][:1 + n_states],
                    **_attributes(module))
        y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])[0]  # (T, B, K, H)
        inp = g.op("Reshape", [y, g.ints("shape", [0, 0, -1])])[0]  # (T, B, K*H)
        for k in range(n_states):
            finals[k].append(outs[1 + k])
    if lengths is not None:
        inp = g.op("Mul", [inp, add_step_mask(g, inp, lengths)])[0]
    states_out = [f[0] if L == 1 else g.op("Concat", f, axis=0)[0] for f in finals]
    return inp, states_out
