"""Input checks for the public boundary: each error names what was expected and what came."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_number(name: str, value: object, low: float = 0.0, high: float = math.inf,
                 high_open: bool = False) -> float:
    """A finite real number in [low, high] (or [low, high) with ``high_open``)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        x = float(value)
        below_high = x < high if high_open else x <= high
        ok = math.isfinite(x) and low <= x and below_high
    if not ok:
        if high < math.inf:
            wanted = f" in [{low:g}, {high:g}{')' if high_open else ']'}"
        else:
            wanted = f" >= {low:g}" if low > -math.inf else ""
        raise ValueError(f"{name}: expected a finite number{wanted}, got {value!r}")
    return x


def check_scale(scale: object, batch: int, per_sequence: bool) -> float | np.ndarray:
    """A backward's upstream ``scale``: a finite number, or (``per_sequence``: a loss with
    reduction "none") also ``batch`` finite numbers, one per sequence."""
    if per_sequence and np.ndim(scale) == 1:
        s = np.asarray(scale, np.float64)
        if s.shape != (batch,) or not np.isfinite(s).all():
            raise ValueError(f"scale: expected a finite number or {batch} finite numbers (one "
                             f"per sequence), got shape {s.shape}")
        return s
    return check_number("scale", scale, low=-math.inf)


def check_non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def is_array(x: object) -> bool:
    """A NumPy array, or a CuPy one (CuPy is not imported for this: unloaded, nothing is one)."""
    cupy = sys.modules.get("cupy")
    return isinstance(x, np.ndarray) or (cupy is not None and isinstance(x, cupy.ndarray))


def _check_dtype(name: str, x: object, dtype: np.dtype) -> np.ndarray:
    if not is_array(x):
        raise TypeError(f"{name}: expected a numpy array of {dtype}, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype}, got {x.dtype} "
            f"(convert with .astype(np.{dtype}) or build the module with dtype=np.{x.dtype})"
            if np.issubdtype(x.dtype, np.floating)
            else f"{name}: expected dtype {dtype}, got {x.dtype}"
        )
    return x


def _check_finite(name: str, x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray):  # a GPU array: the check would stall the GPU's queue on
        return                         # every call; the trainers check the loss instead
    if not np.isfinite(x).all():
        bad = tuple(int(b) for b in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{name}: expected finite values, got {x[bad]} at index {bad}")


def check_array(
    name: str,
    x: object,
    dtype: np.dtype,
    shape: Sequence[int | None],
    dims: Sequence[str],
    finite: bool = True,
) -> np.ndarray:
    """Check dtype, rank, the fixed sizes in ``shape`` (None = any) and (if ``finite``) that
    every value is finite."""
    x = _check_dtype(name, x, dtype)
    named = zip(dims, shape, strict=True)
    legend = "(" + ", ".join(d if w is None else f"{d}={w}" for d, w in named) + ")"
    if x.ndim != len(shape):
        raise ValueError(f"{name}: expected a {len(shape)}-D array {legend}, got shape {x.shape}")
    if any(w is not None and w != g for w, g in zip(shape, x.shape, strict=True)):
        raise ValueError(f"{name}: expected shape {legend}, got shape {x.shape}")
    if finite:
        _check_finite(name, x)
    return x


def check_state(
    name: str, x: object, dtype: np.dtype, shape: tuple[int, ...], allow_nonfinite: bool = False
) -> np.ndarray:
    """Check that a state (or a state's gradient) has exactly ``shape``: nothing is broadcast."""
    x = _check_dtype(name, x, dtype)
    if x.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {x.shape}")
    if not allow_nonfinite:
        _check_finite(name, x)
    return x


def check_lengths(lengths: object, batch: int, steps: int) -> np.ndarray:
    """Sequence lengths: ``batch`` integers in [1, steps], in any order."""
    try:
        arr = np.asarray(lengths)
    except Exception as err:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(
            f"lengths: expected a sequence of {batch} integers, got {lengths!r}"
        ) from err
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"lengths: expected one length per sequence, {batch} in all, got shape {arr.shape}"
        )
    arr = arr.astype(np.int64)
    if arr.min() < 1 or arr.max() > steps:
        raise ValueError(
            f"lengths: expected values in [1, {steps}] (the padded length T), "
            f"got min {arr.min()} max {arr.max()}"
        )
    return arr
