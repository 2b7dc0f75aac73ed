"""Helpers shared by the test modules (imported as ``from numerics import ...``: pytest puts
this directory on sys.path)."""

from __future__ import annotations

import numpy as np


def central_difference(f, arr: np.ndarray, idx, eps: float = 1e-6) -> float:
    """(f(arr[idx] + eps) - f(arr[idx] - eps)) / (2 eps) for the scalar f(), changing ``arr`` in
    place and restoring it."""
    old = arr[idx]
    arr[idx] = old + eps
    up = f()
    arr[idx] = old - eps
    down = f()
    arr[idx] = old
    return (up - down) / (2 * eps)


def numeric_grad(f, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of ``arr`` (in place)."""
    g = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        g[idx] = central_difference(f, arr, idx, eps)
    return g
