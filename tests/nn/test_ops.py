"""The in-place nonlinearities: both float32 tanh paths are accurate, float64 is exact."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.nn import ops


@pytest.mark.parametrize("size", [100, ops.SMALL * 4])  # np.tanh path, exp-based path
def test_float32_tanh_and_sigmoid_accuracy(size):
    x = np.linspace(-100, 100, size).astype(np.float32)
    x[: size // 2] = np.linspace(-3, 3, size // 2, dtype=np.float32)  # dense near 0
    want_t = np.tanh(x.astype(np.float64))
    want_s = 1 / (1 + np.exp(-x.astype(np.float64)))
    with np.errstate(over="ignore"):
        got_t = ops.tanh(x.copy(), out=np.empty_like(x))
        got_s = ops.sigmoid(x, out=np.empty_like(x))
    assert got_t.dtype == got_s.dtype == np.float32
    assert np.abs(got_t - want_t).max() < 2e-7
    assert np.abs(got_s - want_s).max() < 2e-7
    assert np.all(np.isfinite(got_t)) and np.all(np.isfinite(got_s))


def test_in_place_and_float64_exact():
    x = np.random.default_rng(0).standard_normal(10_000) * 5
    np.testing.assert_array_equal(ops.tanh(x.copy()), np.tanh(x))
    y = x.astype(np.float32)
    want = np.tanh(y.astype(np.float64))
    with np.errstate(over="ignore"):
        ops.tanh(y, out=y)  # in place on the large (exp-based) path
    assert np.abs(y - want).max() < 2e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_softmax_matches_torch_and_is_stable(torch, dtype):
    z = np.random.default_rng(0).standard_normal((4, 7)).astype(dtype) * 5
    z[0, 2] = 1e4  # overflows a naive exp
    z[1] = -1e4
    got = ops.log_softmax(z)
    exp = torch.log_softmax(torch.from_numpy(z.astype(np.float64)), dim=-1).numpy()
    assert got.dtype == dtype and np.all(np.isfinite(got))
    tol = 1e-12 if dtype == np.float64 else 1e-6  # float64: as exact as torch's own result
    np.testing.assert_allclose(got, exp, rtol=tol, atol=tol)
