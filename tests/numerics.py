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


def assert_close(got, exp, rtol: float, atol: float, what: str = "") -> None:
    """Same shape, and allclose with the absolute tolerance scaled by the magnitude of the
    expected array (so one atol serves small and large values)."""
    got, exp = np.asarray(got), np.asarray(exp)
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != expected {exp.shape}"
    scale = max(1.0, float(np.max(np.abs(exp)))) if exp.size else 1.0
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol * scale, err_msg=what)
