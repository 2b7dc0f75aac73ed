"""rnnlab: recurrent neural networks from first principles in NumPy.

RNN, LSTM and GRU cells and sequence layers with hand-derived backpropagation through time,
API-compatible with ``torch.nn`` (names, shapes, gate order, initialisation).
"""

from rnnlab.attention import Attention
from rnnlab.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.module import Module
from rnnlab.recurrent import GRU, LSTM, RNN

__all__ = ["GRU", "Attention", "GRUCell", "LSTM", "LSTMCell", "Module", "RNN", "RNNCell"]
__version__ = "0.1.0"
