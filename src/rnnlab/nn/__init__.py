"""The math: cells (one step, the readable specification), kernels (the fast time loops),
recurrent layers, the other layers, the forecasting losses, CTC, attention, the Module base
and ``no_grad`` (inference without the backward's memory).
Imports nothing above it."""

from rnnlab.nn.attention import Attention
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.crf import CRF
from rnnlab.nn.ctc import CTCLoss
from rnnlab.nn.grad_mode import is_grad_enabled, no_grad
from rnnlab.nn.layers import Dropout, Embedding, Linear, LinearCrossEntropy, SoftmaxCrossEntropy
from rnnlab.nn.losses import GaussianNLL, PinballLoss
from rnnlab.nn.memory import NotEnoughMemory, available_bytes, require_memory
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import GRU, LSTM, RNN

__all__ = ["CRF", "CTCLoss", "GRU", "LSTM", "RNN", "Attention", "Dropout", "Embedding", "GRUCell",
           "GaussianNLL", "LSTMCell", "Linear", "LinearCrossEntropy", "Module", "NotEnoughMemory",
           "PinballLoss", "RNNCell", "SoftmaxCrossEntropy", "available_bytes", "is_grad_enabled",
           "no_grad", "require_memory"]
