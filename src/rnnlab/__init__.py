"""rnnlab: recurrent neural networks from first principles in NumPy.

RNN, LSTM and GRU cells and sequence layers with hand-derived backpropagation through time,
API-compatible with ``torch.nn`` (names, shapes, gate order, initialisation).

The package in layers, each importing only those below it (checked by ``lint-imports``):
``cli`` > ``inside`` > ``tasks`` > ``training`` > ``models`` > ``optim``, ``data``, ``io`` >
``nn`` > ``validate``, ``plots``.
"""

from rnnlab.io.onnx import export_onnx
from rnnlab.nn import GRU, LSTM, RNN, Attention, GRUCell, LSTMCell, Module, RNNCell, no_grad

__all__ = ["GRU", "Attention", "GRUCell", "LSTM", "LSTMCell", "Module", "RNN", "RNNCell",
           "export_onnx", "no_grad"]
__version__ = "0.1.0"
