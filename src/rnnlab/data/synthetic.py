"""Synthetic long-time-lag tasks: the adding problem and the copy-memory task.

Both are time-major, like every sequence layer here: axis 0 is time, axis 1 the batch.

Adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015 and Arjovsky et
al. 2016). Each sequence has T steps of two channels:

    x[t, b, 0] ~ U[0, 1)                        the values
    x[t, b, 1] = 1 at exactly two steps, else 0  the markers: one at a step in the first half
                                                 [0, T//2), one in the second half [T//2, T)
    y[b] = sum of the two marked values          in [0, 2), mean 1, variance 2/12 = 1/6

so a model that ignores the input and predicts the mean scores MSE 1/6 ~ 0.167, and a model
has to carry the first marked value across at least one and up to T - 1 steps to do better.

Copy-memory task (Arjovsky et al. 2016, "Unitary evolution RNNs"). Symbols are ids: 0 is the
blank, 1..S the data symbols (S = ``symbols``), S + 1 the delimiter. With L = ``length`` each
sequence has T + 2L steps::

    step   0 .. L-1      L .. L+T-2     L+T-1        L+T .. T+2L-1
    x      a_1 .. a_L    0 (T-1 times)  S+1          0 (L times)
    y      0 (all the first L+T steps)               a_1 .. a_L

The data symbols a_k are uniform on 1..S. The model reads the symbols, waits T steps and,
after the delimiter, must write them back in order. Targets use the S + 1 classes 0..S.
A memoryless model can at best emit blanks where blanks are due (loss 0) and a uniform guess
over the S symbols on the last L steps (loss log S each), so its mean cross-entropy per step
is ``L log(S) / (T + 2L)``: :func:`copy_baseline`.
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab.validate import check_positive_int


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def adding_problem(n: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding-problem sequences of ``T`` steps: x (T, n, 2) float32, y (n,) float32.

    Channel 0 holds U[0, 1) values, channel 1 a marker that is 1 at one step drawn uniformly
    from the first half [0, T//2) and one from the second half [T//2, T); y is the sum of the
    two marked values. T must be at least 2.
    """
    n = check_positive_int("n", n)
    T = check_positive_int("T", T)
    if T < 2:
        raise ValueError(f"T: expected at least 2 steps (one marker in each half), got {T}")
    rng = _check_rng(rng)
    half = T // 2
    values = rng.random((T, n), dtype=np.float32)  # (T, n)
    first = rng.integers(0, half, size=n)  # a step in [0, T//2)
    second = rng.integers(half, T, size=n)  # a step in [T//2, T)
    cols = np.arange(n)
    x = np.zeros((T, n, 2), np.float32)
    x[:, :, 0] = values
    x[first, cols, 1] = 1.0
    x[second, cols, 1] = 1.0
    y = values[first, cols] + values[second, cols]  # float32 sum of the two marked values
    return x, y


def copy_task(n: int, T: int, rng: np.random.Generator, symbols: int = 8,
              length: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``n`` copy-memory sequences: x ids and y ids, both (T + 2*length, n) int64.

    See the module docstring for the layout: ``length`` data symbols from 1..symbols, T - 1
    blanks (0), the delimiter (symbols + 1), ``length`` blanks; the target is 0 everywhere
    except the last ``length`` steps, which repeat the data symbols. Inputs take
    ``symbols + 2`` values, targets ``symbols + 1``.
    """
    n = check_positive_int("n", n)
    T = check_positive_int("T", T)
    symbols = check_positive_int("symbols", symbols)
    length = check_positive_int("length", length)
    rng = _check_rng(rng)
    steps = T + 2 * length
    data = rng.integers(1, symbols + 1, size=(length, n), dtype=np.int64)  # (L, n)
    x = np.zeros((steps, n), np.int64)
    y = np.zeros((steps, n), np.int64)
    x[:length] = data
    x[length + T - 1] = symbols + 1  # the delimiter: "write them back now"
    y[-length:] = data
    return x, y


def one_hot(ids: np.ndarray, depth: int, dtype: object = np.float32) -> np.ndarray:
    """ids (...) -> (..., depth) one-hot vectors, the recurrent layers' input for the copy task."""
    out = np.zeros((*ids.shape, depth), dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def constant_baseline_mse(y_test: np.ndarray, y_train: np.ndarray) -> float:
    """MSE on ``y_test`` of always predicting the mean of ``y_train`` (about 1/6 when adding)."""
    y_test = np.asarray(y_test, np.float64)
    y_train = np.asarray(y_train, np.float64)
    if y_test.size == 0 or y_train.size == 0:
        raise ValueError(f"expected non-empty targets, got {y_test.size} test and "
                         f"{y_train.size} train values")
    return float(np.mean((y_test - y_train.mean()) ** 2))


def copy_baseline(T: int, symbols: int = 8, length: int = 10) -> float:
    """Mean cross-entropy per step of the best memoryless copy-task model (nats):
    blanks where blanks are due, a uniform guess over the symbols on the last ``length`` steps:
    ``length * log(symbols) / (T + 2 * length)``."""
    T = check_positive_int("T", T)
    symbols = check_positive_int("symbols", symbols)
    length = check_positive_int("length", length)
    return length * math.log(symbols) / (T + 2 * length)
