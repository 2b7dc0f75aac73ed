"""Array backend per device, dtype policy and seeded randomness.

A module's arrays live on one device: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy, imported the first
time ``"cuda"`` is asked for and never before, so rnnlab installs and runs without it). The same
module code runs on both through :func:`array_module`. Every module takes a ``dtype`` (float32 by
default, float64 for gradient checks) and draws its randomness from an explicit
:class:`numpy.random.Generator` on the host (weights are drawn there, so a seed gives the same
model on either device; dropout masks on a GPU are made there from seeds drawn from it).
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

DEVICES = ("cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """"cuda" was asked for where CuPy or a GPU is missing (a one-line message)."""

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Seed = int | np.random.Generator | None


def resolve_dtype(dtype: object) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype, accepting only float32 and float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype: expected np.float32 or np.float64, got {dtype!r}") from err
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype: expected np.float32 or np.float64, got {dt}")
    return dt


def make_rng(seed: Seed) -> np.random.Generator:
    """A Generator from an int seed, an existing Generator (used as is) or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, int | np.integer) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise TypeError(f"seed: expected an int, a numpy.random.Generator or None, got {seed!r}")


def dropout_mask(rng: np.random.Generator, shape: tuple, p: float, dtype: np.dtype,
                 device: str = "cpu"):
    """Inverted dropout's mask: 0 with probability ``p``, else 1 / (1 - p), in ``dtype``, on
    ``device``. On "cuda" the mask is made on the GPU from one seed drawn from ``rng`` (no
    host-side draw of a mask, no transfer): the same seed gives the same masks, but not the
    CPU's.

    The uniforms are drawn in float32 (half the bytes of float64) and turned into the mask in
    one pass: 1.40 -> 1.17 ms for a (35, 20, 650) mask (benchmarks/RESULTS.md section 4).
    """
    if device != "cpu":
        from rnnlab.nn.kernels.cuda import dropout_mask as on_gpu

        return on_gpu(int(rng.integers(1 << 63)), shape, p, dtype, array_module(device))
    keep = 1.0 - p
    kept = rng.random(shape, dtype=np.float32) < np.float32(keep)
    return np.multiply(kept, dtype.type(1.0 / keep), dtype=dtype)


def resolve_device(device: object) -> str:
    """``device`` as ``"cpu"`` or ``"cuda"`` (``"cuda"`` checks that CuPy and a GPU are there)."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(map(repr, DEVICES))}, got "
                         f"{device!r}")
    if device == "cuda":
        _cupy()
    return str(device)


_checked: list[ModuleType] = []  # CuPy, once a GPU was found (the check is not repeated)


def _cupy() -> ModuleType:
    """CuPy, imported now; a one-line error when it or a usable GPU is missing."""
    if _checked:
        return _checked[0]
    try:
        import cupy
    except ImportError as err:
        raise DeviceUnavailable(f"device 'cuda': expected CuPy to be importable (pip install "
                                f"cupy-cuda13x, or use device='cpu'), got {err}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001 - no driver, no device: CuPy raises its own types
        raise DeviceUnavailable(f"device 'cuda': expected a CUDA GPU, got "
                                f"{type(err).__name__}: {err}") from None
    if count < 1:
        raise DeviceUnavailable("device 'cuda': expected a CUDA GPU, got none (use "
                                "device='cpu')")
    _checked.append(cupy)
    return cupy


def array_module(device: str) -> ModuleType:
    """The array module of ``device``: numpy for "cpu", cupy for "cuda"."""
    return np if device == "cpu" else _cupy()


def is_device_array(x: object) -> bool:
    """Whether ``x`` is a CuPy array (without importing CuPy: if it is not loaded, no)."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def device_of(x: object) -> str:
    """``"cuda"`` for a CuPy array, else ``"cpu"``."""
    return "cuda" if is_device_array(x) else "cpu"


def xp_of(x: object) -> ModuleType:
    """The array module ``x`` belongs to (numpy for anything that is not a CuPy array)."""
    return sys.modules["cupy"] if is_device_array(x) else np


def to_host(x):
    """A NumPy array with ``x``'s values (``x`` itself when it is already one)."""
    return x.get() if is_device_array(x) else x


def to_device(x, device: str):
    """``x`` on ``device``: the same array when it is already there, else a copy."""
    if device == "cpu":
        return to_host(x)
    return x if is_device_array(x) else array_module(device).asarray(x)
