"""The time loops of the recurrent layers, in interchangeable kernel sets.

``numpy``     :mod:`rnnlab.nn.kernels.numpy`, NumPy calls per time step (always available).
``compiled``  :mod:`rnnlab.nn.kernels.compiled`, the whole sequence in one numba-compiled call.
``cuda``      :mod:`rnnlab.nn.kernels.cuda`, CuPy: cuBLAS per step and fused gate kernels.

All take the same arguments and return the same caches; the readable one-step math in
:mod:`rnnlab.nn.cells` is the specification of all, and the same tests run on each.

The arrays' device picks the set first: CuPy arrays always run on ``cuda`` (and NumPy arrays
never do); for NumPy arrays the choice below applies.

Which set runs: the environment variable ``RNNLAB_KERNELS`` = ``auto`` (the default: per
forward, the set :func:`auto_prefers_compiled` picks for its batch size, hidden size and dtype,
the NumPy set whenever numba does not import), ``numpy`` or ``compiled`` (an error if numba does
not import), read when this package is imported; :func:`select` and :func:`use_kernels` change
it at run time, :func:`active` names the choice in force and :func:`for_shape` the set a given
forward runs on. numba is imported on the first kernel call, not with rnnlab.

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

# auto's rule (:func:`auto_prefers_compiled`): the compiled set where batch * hidden is at most
# this, for every dtype. At one BLAS thread the float32 compiled set was faster on all 80 points
# of benchmarks/kernels.py --grid (0.17-0.95x), but at the default two threads
# (benchmarks/speed.py, RESULTS section 11) its step product does not use the second core: at
# 35 x 20 x 200 the LSTM took 8.0 ms (inference) and 23.9 ms (training) against the NumPy set's
# 6.5 and 14.5, while at 200 x 1 x 128 it took 1.1 and 2.1 against 3.6 and 6.3. float64 (libm's
# scalar exp and tanh): 0.5-0.6x at 1 x 128, 0.9-1.03x from 20 x 256 up, one thread.
AUTO_COMPILED_MAX = 2560
# ... and only up to this many hidden units: above it the compiled step product calls SciPy's
# OpenBLAS (numba's np.dot), a second thread pool beside NumPy's, and with two threads the pools
# stall each other: a 1 x 400 LSTM step took 8 ms instead of 0.1 (measured at H = 128, 256: no
# stall; 400, 650: 8 ms per call). One BLAS pool for both sets is the real fix (issue 15).
AUTO_COMPILED_MAX_HIDDEN = 256


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


def auto_prefers_compiled(batch: int, hidden: int, dtype) -> bool:
    """The rule ``auto`` follows for a forward of ``batch`` rows and ``hidden`` units per
    direction: the compiled set when ``batch * hidden <= AUTO_COMPILED_MAX`` (small batches,
    where per-step call overhead dominates) and ``hidden <= AUTO_COMPILED_MAX_HIDDEN``, else the
    NumPy set. ``dtype`` is part of the
    signature because the measurements are per dtype; today both follow the same limit."""
    return batch * hidden <= AUTO_COMPILED_MAX and hidden <= AUTO_COMPILED_MAX_HIDDEN


def for_shape(batch: int, hidden: int, dtype) -> str:
    """The set (``"numpy"`` or ``"compiled"``) a forward of ``batch`` rows and ``hidden`` units
    runs on under the current choice."""
    name = active()
    if name != "auto":
        return name
    return "compiled" if auto_prefers_compiled(batch, hidden, dtype) else "numpy"


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


def _set_for(x, batch: int, hidden: int, dtype) -> str:
    """The set a forward on ``x`` runs on: ``cuda`` for a CuPy array, else by shape."""
    if is_device_array(x):
        _load("cuda")
        return "cuda"
    return for_shape(batch, hidden, dtype)


def _owner(cache: tuple, x, batch: int, hidden: int, dtype) -> ModuleType:
    """The kernel set that made ``cache`` (for an untagged tuple, the one ``x`` runs on)."""
    return _load(getattr(cache, "kernels", None) or _set_for(x, batch, hidden, dtype))


# The dispatchers the layers call; the arguments are documented in the numpy set. W_hh is
# (G, H): its second axis is the hidden size.
def lstm_forward(XW, W_hh, h0, c0, batch_sizes=None, reverse=False) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype)
    return _tagged(_sets[name].lstm_forward(XW, W_hh, h0, c0, batch_sizes, reverse), name)


def lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype)
    return owner.lstm_backward(cache, W_hh, dH, dh_n, dc_n, batch_sizes, reverse)


def gru_forward(XW, W_hh, b_hh, h0, batch_sizes=None, reverse=False) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype)
    return _tagged(_sets[name].gru_forward(XW, W_hh, b_hh, h0, batch_sizes, reverse), name)


def gru_backward(cache, W_hh, dH, dh_n, batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype)
    return owner.gru_backward(cache, W_hh, dH, dh_n, batch_sizes, reverse)


def rnn_forward(XW, W_hh, h0, nonlinearity="tanh", batch_sizes=None, reverse=False) -> _Run:
    name = _set_for(XW, XW.shape[1], W_hh.shape[1], XW.dtype)
    run = _sets[name].rnn_forward(XW, W_hh, h0, nonlinearity, batch_sizes, reverse)
    return _tagged(run, name)


def rnn_backward(cache, W_hh, dH, dh_n, nonlinearity="tanh", batch_sizes=None, reverse=False):
    owner = _owner(cache, dh_n, dh_n.shape[0], W_hh.shape[1], dh_n.dtype)
    return owner.rnn_backward(cache, W_hh, dH, dh_n, nonlinearity, batch_sizes, reverse)


__all__ = ["AUTO_COMPILED_MAX", "AUTO_COMPILED_MAX_HIDDEN", "CHOICES", "ENV", "active",
           "auto_prefers_compiled", "for_shape", "gru_backward", "gru_forward", "lstm_backward",
           "lstm_forward", "rnn_backward", "rnn_forward", "select", "use_kernels"]
