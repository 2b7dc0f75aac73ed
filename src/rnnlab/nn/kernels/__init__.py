"""The time loops of the recurrent layers, in interchangeable kernel sets.

``numpy``     :mod:`rnnlab.nn.kernels.numpy`, NumPy calls per time step (always available).
``compiled``  :mod:`rnnlab.nn.kernels.compiled`, the cell arithmetic numba-compiled: the whole
              sequence in one call, or (large steps) one call per step beside NumPy's matmul.
``cuda``      :mod:`rnnlab.nn.kernels.cuda`, CuPy: cuBLAS per step and fused gate kernels.

All take the same arguments and return the same caches; the readable one-step math in
:mod:`rnnlab.nn.cells` is the specification of all, and the same tests run on each.

The arrays' device picks the set first: CuPy arrays always run on ``cuda`` (and NumPy arrays
never do); for NumPy arrays the choice below applies.

Which set runs: the environment variable ``RNNLAB_KERNELS`` = ``auto`` (the default: per
forward, the set :func:`auto_prefers_compiled` picks for its dtype and shape, float32 always
compiled; the NumPy set whenever numba does not import), ``numpy`` or ``compiled`` (an error
if numba does not import), read when this package is imported; :func:`select` and
:func:`use_kernels` change it at run time, :func:`active` names the choice in force and
:func:`for_shape` the set a given forward runs on. numba is imported on the first kernel
call, not with rnnlab.

A forward's cache remembers the set that made it, and the matching backward always runs on that
set (the caches are the same today, but a set may keep private buffers in them).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

from rnnlab.nn.backend import is_device_array
from rnnlab.nn.kernels import numpy as _numpy_set

ENV = "RNNLAB_KERNELS"
CHOICES = ("auto", "numpy", "compiled")

_sets: dict[str, ModuleType] = {"numpy": _numpy_set}


def _check_choice(name: object, where: str) -> str:
    if name not in CHOICES:
        raise ValueError(f"{where}: expected one of {', '.join(CHOICES)}, got {name!r}")
    return str(name)


DEFAULT = "auto"
_choice = _check_choice(os.environ.get(ENV, DEFAULT).strip().lower() or DEFAULT, ENV)
_resolved: str | None = None  # the set `_choice` resolved to, once a kernel ran

# The compiled set runs its whole time loop in one compiled call while one step's product
# (rows x gates x hidden multiply-adds) stays below this; from it on, the time loop runs in
# Python, the step product through NumPy's matmul and the step's cell arithmetic through one
# compiled call. The compiled loop's product is numba's np.dot, i.e. SciPy's OpenBLAS, a second
# thread pool beside NumPy's: below about 2^19 multiply-adds OpenBLAS runs a GEMM on one thread
# and the two pools never meet, from it on both spin up and stall each other (an LSTM layer at
# 35 x 2 x 256 or 35 x 32 x 64, 2^19 each: 8.0 ms per forward instead of 3.0 and 1.2; at 2^18
# the compiled loop is as fast as the Python one or faster: benchmarks/RESULTS.md section 11).
PYTHON_LOOP_MIN = 1 << 19


def loop_in_python(batch: int, hidden: int, gates: int, steps: int = 2) -> bool:
    """Whether the compiled set runs ``steps`` steps of ``batch`` rows, ``hidden`` units and
    ``gates`` gate blocks (LSTM 4, GRU 3, RNN 1) with its time loop in Python (see above). A
    single step (generation, beam search) always does: one compiled call of the step's cells
    costs what the whole-loop call costs (1 x 1 x 256 LSTM: 64 against 58 us, the same host),
    and a program that only ever runs single steps on a shape then never compiles the whole-loop
    function, 1-1.7 s of a first run's start (benchmarks/RESULTS.md section 11)."""
    return steps == 1 or batch * gates * hidden * hidden >= PYTHON_LOOP_MIN



def _load(name: str) -> ModuleType:
    if name not in _sets:
        try:
            _sets[name] = importlib.import_module(f"{__name__}.{name}")
        except ImportError as err:
            raise ImportError(
                f"kernel set {name!r}: expected numba to be importable (pip install numba, or "
                f"{ENV}=numpy), got {type(err).__name__}: {err}"
            ) from err
    return _sets[name]


def _resolve(choice: str) -> str:
    if choice != "auto":
        _load(choice)
        return choice
    try:
        _load("compiled")
    except ImportError:  # numba not installed: the expected way to get the NumPy set
        return "numpy"
    except Exception as err:  # numba present but unusable (e.g. no writable cache directory)
        warnings.warn(f"kernel set 'compiled' failed to load ({type(err).__name__}: {err}); "
                      f"running on the NumPy kernels (set {ENV}=numpy to silence this)",
                      RuntimeWarning, stacklevel=3)
        return "numpy"
    return "auto"


def active() -> str:
    """The kernel choice in force: ``"numpy"``, ``"compiled"``, or ``"auto"`` (numba imports and
    each forward picks one of the two by its shape: :func:`for_shape`). ``auto`` without numba
    is ``"numpy"``."""
    global _resolved
    if _resolved is None:
        _resolved = _resolve(_choice)
    return _resolved


def auto_prefers_compiled(batch: int, hidden: int, dtype, gates: int = 4) -> bool:
    """The rule ``auto`` follows for a forward of ``batch`` rows and ``hidden`` units per
    direction: float32 always runs on the compiled set (at two BLAS threads it was 1.05-1.4x
    faster than the NumPy set on every shape measured, batch 1 up to 3.5x); float64 only where
    the compiled set keeps its whole loop compiled (:func:`loop_in_python` false): its cell
    arithmetic calls libm's exp and tanh one element at a time, which NumPy's vectorised ufuncs
    beat once a step has many rows (35 x 20 x 200 LSTM inference 17.0 ms in the Python loop
    against 11.1 ms), while at batch 1 the compiled loop wins (200 x 1 x 128: 3.2 ms against
    5.0 ms)."""
    return np.dtype(dtype) == np.float32 or not loop_in_python(batch, hidden, gates)


def for_shape(batch: int, hidden: int, dtype, gates: int = 4) -> str:
    """The set (``"numpy"`` or ``"compiled"``) a forward of ``batch`` rows, ``hidden`` units and
    ``gates`` gate blocks runs on under the current choice."""
    name = active()
    if name != "auto":
        return name
    return "compiled" if auto_prefers_compiled(batch, hidden, dtype, gates) else "numpy"


def select(name: str) -> str:
    """Run the following forwards on kernel set ``name`` (``auto``, ``numpy`` or ``compiled``);
    returns the set it resolved to. ``compiled`` raises ImportError when numba is missing."""
    global _choice, _resolved
    choice = _check_choice(name, "kernels.select")
    resolved = _resolve(choice)
    _choice, _resolved = choice, resolved
    return resolved


@contextmanager
def use_kernels(name: str) -> Iterator[str]:
    """``with use_kernels("numpy"): ...``: :func:`select` inside the block, the previous choice
    after it."""
    before = _choice
    try:
        yield select(name)
    finally:
        select(before)


class _Run(tuple):
    """A forward's cache (the tuple its kernel set returned), tagged with that set's name."""

    kernels: str


def _tagged(cache: tuple, name: str) -> _Run:
    run = _Run(cache)
    run.kernels = name
    return run


def _set_for(x, batch: int, hidden: int, dtype, gates: int) -> str:
    """The set a forward on ``x`` runs on: ``cuda`` for a CuPy array, else by shape."""
    if is_device_array(x):
        _load("cuda")
        return "cuda"
    return for_shape(batch, hidden, dtype, gates)


def _owner(cache: tuple, x, batch: int, hidden: int, dtype, gates: int) -> ModuleType:
    """The kernel set that made ``cache`` (for an untagged tuple, the one ``x`` runs on)."""
    return _load(getattr(cache, "kernels", None) or _set_for(x, batch, hidden, dtype, gates))


# The dispatchers the layers call; the arguments are documented in the numpy set. W_hh is
# (G, H): its second axis is the hidden size. ``keep`` false (inference, rnnlab.nn.no_grad):
# the forward stores only what it returns (hidden states, final cell state); its cache then
# serves no backward, and a backward given it raises ValueError.
def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False, keep=True) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype, 4)
    return _tagged(_sets[name].lstm_forward(XW, W_hh, h0, c0, batch_sizes, reverse, keep), name)


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype, 4)
    return owner.lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes, reverse)


def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False, keep=True) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype, 3)
    return _tagged(_sets[name].gru_forward(XW, W_hh, b_hh, h0, batch_sizes, reverse, keep),
                   name)


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype, 3)
    return owner.gru_backward(cache, W_hh, dH, dh_n, batch_sizes, reverse)


def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=True) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype, 1)
    run = _sets[name].rnn_forward(XW, W_hh, h0, nonlinearity, batch_sizes, reverse, keep)
    return _tagged(run, name)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype, 1)
    return owner.rnn_backward(cache, W_hh, dH, dh_n, nonlinearity, batch_sizes, reverse)


__all__ = ["CHOICES", "ENV", "PYTHON_LOOP_MIN", "active", "auto_prefers_compiled", "for_shape",
           "gru_backward", "gru_forward", "loop_in_python", "lstm_backward", "lstm_forward",
           "rnn_backward", "rnn_forward", "select", "use_kernels"]
