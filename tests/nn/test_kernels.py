"""The kernel sets of rnnlab.nn.kernels: the compiled set equals the NumPy set on random inputs,
the selection (environment, select, use_kernels) works, a backward runs on its forward's set,
and without numba everything runs on the NumPy set."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

import rnnlab
from rnnlab.nn import kernels

KINDS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
SRC = Path(__file__).resolve().parents[2] / "src"


def _compiled():
    require_module("numba")
    return kernels._load("compiled")


def _random_inputs(kind, dtype, rng, T=7, B=5, H=6):
    G = KINDS[kind] * H
    return dict(
        XW=rng.standard_normal((T, B, G)).astype(dtype),
        W_hh=(0.5 * rng.standard_normal((G, H))).astype(dtype),
        b_hh=rng.standard_normal(G).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        c0=rng.standard_normal((B, H)).astype(dtype),
        dH=rng.standard_normal((T, B, H)).astype(dtype),
        dh_n=rng.standard_normal((B, H)).astype(dtype),
        dc_n=rng.standard_normal((B, H)).astype(dtype),
    )


def _run(ks, kind, a, batch_sizes, reverse):
    """Forward and backward of one kernel set: (forward cache, backward results), as lists."""
    XW = a["XW"].copy()  # the forward overwrites it
    if kind == "lstm":
        cache = ks.lstm_forward(XW, a["W_hh"], a["h0"], a["c0"], batch_sizes, reverse)
        dA, (dh0, dc0) = ks.lstm_backward(cache, a["W_hh"], a["dH"], a["dh_n"], a["dc_n"],
                                          batch_sizes, reverse)
        return list(cache), [dA, dh0, dc0]
    if kind == "gru":
        cache = ks.gru_forward(XW, a["W_hh"], a["b_hh"], a["h0"], batch_sizes, reverse)
        dAx, dAh, dh0 = ks.gru_backward(cache, a["W_hh"], a["dH"], a["dh_n"], batch_sizes,
                                        reverse)
        return list(cache), [dAx, dAh, dh0]
    nl = kind[4:]
    cache = ks.rnn_forward(XW, a["W_hh"], a["h0"], nl, batch_sizes, reverse)
    dA, dh0 = ks.rnn_backward(cache, a["W_hh"], a["dH"], a["dh_n"], nl, batch_sizes, reverse)
    return list(cache), [dA, dh0]


@pytest.mark.parametrize("product", ["hand", "blas", "python"])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_equals_numpy_kernels(dtype, kind, reverse, lengths, product, monkeypatch):
    """The three step-product paths (a compiled loop, numba's BLAS call, the time loop in Python
    with NumPy's matmul) against the NumPy set: float64 to 1e-12, float32 to float32's rounding.
    Forward: every part of the cache at the live rows (padded rows are never read); backward: the
    pre-activation gradients and the initial-state gradients."""
    compiled = _compiled()
    monkeypatch.setattr(compiled, "HAND_LOOP_MAX", 1 << 40 if product == "hand" else 0)
    monkeypatch.setattr(kernels, "PYTHON_LOOP_MIN", 0 if product == "python" else 1 << 62)
    assert kernels.loop_in_python(5, 4, 1) == (product == "python")
    rng = np.random.default_rng(3)
    a = _random_inputs(kind, dtype, rng)
    T, B = a["XW"].shape[:2]
    batch_sizes = np.array([5, 5, 4, 2, 2, 1, 1]) if lengths else None
    live = np.arange(B)[None, :] < (batch_sizes if lengths else np.full(T, B))[:, None]
    cache_n, grads_n = _run(kernels.numpy, kind, a, batch_sizes, reverse)
    cache_c, grads_c = _run(compiled, kind, a, batch_sizes, reverse)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=2e-6)
    for i, (got, want) in enumerate(zip(cache_c, cache_n, strict=True)):
        assert got.dtype == dtype and got.shape == want.shape
        if got.shape[0] == T + 1:  # state histories: every row (padded rows carry the state)
            np.testing.assert_allclose(got, want, err_msg=f"cache[{i}]", **tol)
        else:
            np.testing.assert_allclose(got[live], want[live], err_msg=f"cache[{i}]", **tol)
    for i, (got, want) in enumerate(zip(grads_c, grads_n, strict=True)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, err_msg=f"backward[{i}]", **tol)
    if lengths:
        assert np.all(grads_c[0][~live] == 0)  # padded positions get no gradient


@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_single_step_runs_the_python_loop_on_the_weights_view(dtype, kind, lengths, monkeypatch):
    """One time step (generation, beam search) takes the compiled set's Python loop whatever its
    size, never the whole-loop function (whose compile it saves), and reads W_hh^T as a view
    (no per-call copy, in either set); forward and backward equal the NumPy set's."""
    compiled = _compiled()
    monkeypatch.setattr(kernels, "PYTHON_LOOP_MIN", 1 << 62)  # every T > 1 shape: whole loop
    assert kernels.loop_in_python(5, 6, 4, 1) and not kernels.loop_in_python(5, 6, 4, 2)

    def whole_loop(*args):
        raise AssertionError("the whole-loop function ran for one step")

    for name in ("_lstm_forward", "_lstm_backward", "_gru_forward", "_gru_backward",
                 "_rnn_forward", "_rnn_backward"):
        monkeypatch.setattr(compiled, name, whole_loop)
    copies = []  # the arrays np.ascontiguousarray had to copy
    real = np.ascontiguousarray

    def ascontiguousarray(x, *args, **kwargs):
        out = real(x, *args, **kwargs)
        if not np.shares_memory(out, x):
            copies.append(out.shape)
        return out

    monkeypatch.setattr(kernels.numpy.np, "ascontiguousarray", ascontiguousarray)
    a = _random_inputs(kind, dtype, np.random.default_rng(5), T=1)
    batch_sizes = np.array([3]) if lengths else None
    cache_n, grads_n = _run(kernels.numpy, kind, a, batch_sizes, False)
    cache_c, grads_c = _run(compiled, kind, a, batch_sizes, False)
    assert a["W_hh"].T.shape not in copies  # StepProduct kept W_hh.T as a view
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=2e-6)
    live = slice(None, 3 if lengths else None)
    for got, want in zip(cache_c, cache_n, strict=True):
        rows = slice(None) if got.shape[0] == 2 else (slice(None), live)  # states: every row
        np.testing.assert_allclose(got[rows], want[rows], **tol)
    for got, want in zip(grads_c, grads_n, strict=True):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("kind", list(KINDS))
def test_compiled_kernels_propagate_nan(kind):
    """No nnan/ninf in FASTMATH: a NaN in the input reaches the states and the gradients (the
    trainer's NaN guard relies on it), and sigma(-1000) is 0, not NaN."""
    compiled = _compiled()
    a = _random_inputs(kind, np.float64, np.random.default_rng(4))
    a["XW"][2, 1, 0] = np.nan
    a["XW"][3, 0, :] = -1000.0  # exp overflows to inf: 1 / (1 + inf) = 0
    cache, grads = _run(compiled, kind, a, None, False)
    hs = cache[0]
    assert np.all(np.isnan(hs[3:, 1]).any(axis=-1))  # the NaN spreads through row 1's state
    assert not np.isnan(hs[:, 0]).any()
    cache_n, grads_n = _run(kernels.numpy, kind, a, None, False)
    for got, want in zip(cache + grads, cache_n + grads_n, strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # NaN where NumPy has it


# ----------------------------------------------------------------------------- selection


def test_select_active_and_use_kernels():
    require_module("numba")
    before = kernels.active()
    with kernels.use_kernels("numpy") as name:
        assert name == "numpy" and kernels.active() == "numpy"
        with kernels.use_kernels("compiled"):
            assert kernels.active() == "compiled"
        assert kernels.active() == "numpy"
    assert kernels.active() == before
    with pytest.raises(ValueError, match="expected one of auto, numpy, compiled, got 'fast'"):
        kernels.select("fast")
    assert kernels.active() == before


@pytest.mark.parametrize("forward_set, backward_set", [("numpy", "compiled"),
                                                       ("compiled", "numpy")])
def test_backward_runs_on_the_forward_set(forward_set, backward_set, monkeypatch):
    """The cache names the set that made it: switching sets between forward and backward
    still runs the matching backward."""
    require_module("numba")
    x = np.random.default_rng(0).standard_normal((5, 3, 2))
    lstm = rnnlab.LSTM(2, 4, dtype=np.float64, seed=1)
    with kernels.use_kernels(forward_set):
        out, _ = lstm(x)
        dx_want, _ = lstm.backward(np.ones_like(out))
        lstm(x)
    assert lstm._cache.runs[0][0].kernels == forward_set

    def refuse(*args, **kwargs):
        raise AssertionError("backward ran on another set than its forward")

    monkeypatch.setattr(kernels._load(backward_set), "lstm_backward", refuse)
    with kernels.use_kernels(backward_set):
        dx, _ = lstm.backward(np.ones_like(out))
    np.testing.assert_array_equal(dx, dx_want)


def test_without_numba_everything_runs_on_numpy(monkeypatch):
    """numba missing (its import blocked): auto falls back to numpy, compiled is an error that
    names numba and the way out, and the layers work."""
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "rnnlab.nn.kernels.compiled", raising=False)
    monkeypatch.setattr(kernels, "_sets", {"numpy": kernels.numpy})
    monkeypatch.setattr(kernels, "_choice", "auto")
    monkeypatch.setattr(kernels, "_resolved", None)
    assert kernels.active() == "numpy"
    with pytest.raises(ImportError, match="expected numba to be importable.*RNNLAB_KERNELS=numpy"):
        kernels.select("compiled")
    assert kernels.active() == "numpy"
    gru = rnnlab.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    out, _ = gru(np.ones((5, 2, 3)), lengths=[5, 2])
    dx, _ = gru.backward(np.ones_like(out))
    assert gru._cache.runs[1][1].kernels == "numpy"
    assert np.isfinite(dx).all() and np.all(dx[2:, 1] == 0)


def _python(code, **env):
    run_env = {k: v for k, v in os.environ.items() if k != "RNNLAB_KERNELS"}
    run_env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True,
                          text=True, timeout=300)


def test_environment_variable_chooses_the_set():
    require_module("numba")
    show = "import rnnlab.nn.kernels as k; print(k.active())"
    assert _python(show).stdout.split() == ["auto"]  # the default: numba present
    assert _python(show, RNNLAB_KERNELS="auto").stdout.split() == ["auto"]
    assert _python(show, RNNLAB_KERNELS="numpy").stdout.split() == ["numpy"]
    assert _python(show, RNNLAB_KERNELS="compiled").stdout.split() == ["compiled"]
    bad = _python(show, RNNLAB_KERNELS="cuda")
    assert bad.returncode != 0
    assert "RNNLAB_KERNELS: expected one of auto, numpy, compiled, got 'cuda'" in bad.stderr


@pytest.mark.parametrize("batch, hidden, dtype, gates, want", [
    (1, 128, np.float32, 4, "compiled"),  # float32: always compiled
    (64, 650, np.float32, 4, "compiled"),
    (64, 650, np.float32, 3, "compiled"),
    (1, 128, np.float64, 4, "compiled"),  # float64: while the compiled loop stays whole
    (1, 362, np.float64, 4, "compiled"),  # 4 x 362^2 = 524,176 < 2^19
    (1, 363, np.float64, 4, "numpy"),  # 4 x 363^2 = 527,076
    (1, 418, np.float64, 3, "compiled"),  # GRU: 3 x 418^2 = 524,172
    (1, 419, np.float64, 3, "numpy"),
    (20, 128, np.float64, 4, "numpy"),
    (64, 650, np.float64, 1, "numpy"),
])
def test_auto_picks_the_set_by_shape(batch, hidden, dtype, gates, want):
    require_module("numba")
    assert kernels.auto_prefers_compiled(batch, hidden, dtype, gates) == (want == "compiled")
    with kernels.use_kernels("auto") as name:
        assert name == "auto" and kernels.active() == "auto"
        assert kernels.for_shape(batch, hidden, dtype, gates) == want
    with kernels.use_kernels("numpy"):
        assert kernels.for_shape(batch, hidden, dtype, gates) == "numpy"  # only auto looks


def test_auto_layer_runs_record_their_set():
    """Under auto each forward picks its set; the cache records it and backward follows."""
    require_module("numba")
    x = np.random.default_rng(0).standard_normal((4, 3, 2))
    with kernels.use_kernels("auto"):
        for hidden, want in [(8, "compiled"), (500, "numpy")]:  # 3 x 3 x 500^2 >= 2^19
            gru = rnnlab.GRU(2, hidden, dtype=np.float64, seed=1)
            out, _ = gru(x)
            assert gru._cache.runs[0][0].kernels == want
            with kernels.use_kernels("numpy"):
                want_out, _ = gru(x)
                want_dx, _ = gru.backward(np.ones_like(out))
            gru(x)
            dx, _ = gru.backward(np.ones_like(out))
            np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)
        for hidden, want in [(8, "compiled"), (500, "compiled")]:  # float32: always compiled
            lstm = rnnlab.LSTM(2, hidden, dtype=np.float32, seed=1)
            lstm(x.astype(np.float32))
            assert lstm._cache.runs[0][0].kernels == want


def test_environment_without_numba():
    block = "import sys; sys.modules['numba'] = None; "
    train = (block + "import numpy as np, rnnlab, rnnlab.nn.kernels as k; "
             "m = rnnlab.LSTM(3, 4, num_layers=2, dropout=0.5, seed=0); "
             "out, _ = m(np.ones((6, 2, 3), np.float32)); m.backward(np.ones_like(out)); "
             "print(k.active())")
    done = _python(train)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["numpy"]
    refused = _python(train, RNNLAB_KERNELS="compiled")
    assert refused.returncode != 0
    assert "kernel set 'compiled': expected numba to be importable" in refused.stderr


# ----------------------------------------------------------------------- float32 activations
ULP_BOUND = 3  # float32 sigma and tanh of the compiled set, in units in the last place
TINY = np.finfo(np.float32).tiny  # 2^-126, the smallest normal float32


def _activations(x):
    compiled = _compiled()
    sig, tanh = np.empty_like(x), np.empty_like(x)
    compiled.apply_activations(x, sig, tanh)
    return sig, tanh


def _ulps(got, want64):
    """|got - want| in units of the float32 spacing at want (want in float64)."""
    spacing = np.spacing(np.abs(want64).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want64) / spacing


def _float32_grid():
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    random_floats = bits.view(np.float32)  # every binade, both signs
    return np.concatenate([np.linspace(-100, 100, 2_000_001, dtype=np.float32),
                           np.linspace(-1e-3, 1e-3, 200_001, dtype=np.float32),
                           random_floats[np.isfinite(random_floats)]])


def test_float32_activations_within_3_ulp():
    """sigma and tanh of the compiled float32 kernels against float64 NumPy on a dense grid and
    on random bit patterns: within 3 ulp (tanh also near 0, where its relative error stays below
    4e-7); sigma below the smallest normal float32 (x < -87) within 2^-126 absolutely."""
    x = _float32_grid()
    sig, tanh = _activations(x)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        sig_want = 1.0 / (1.0 + np.exp(-x64))
    tanh_want = np.tanh(x64)
    normal = sig_want >= TINY
    assert _ulps(sig, sig_want)[normal].max() <= ULP_BOUND
    assert np.abs(sig - sig_want)[~normal].max() <= TINY
    assert _ulps(tanh, tanh_want).max() <= ULP_BOUND
    small = (np.abs(x) < 1e-2) & (x != 0)
    assert (np.abs(tanh[small] - tanh_want[small]) / np.abs(tanh_want[small])).max() < 4e-7


def test_float32_activations_special_values():
    """NaN stays NaN (no nnan in FASTMATH); sigma(-inf) = 0, sigma(inf) = 1, tanh(+-inf) = +-1,
    and the clamped ranges give the limits: no overflow to NaN anywhere."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 88.5, -88.5, 89.0, -89.0, 1e30, -1e30,
                  np.finfo(np.float32).max, -np.finfo(np.float32).max, 10.0, -10.0, 1e-40],
                 np.float32)
    sig, tanh = _activations(x)
    assert np.isnan(sig[0]) and np.isnan(tanh[0])
    assert not np.isnan(sig[1:]).any() and not np.isnan(tanh[1:]).any()
    np.testing.assert_array_equal(sig[1:4], [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(tanh[1:4], [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(sig[[4, 6, 8, 10]], 1.0)
    assert np.all(sig[[5, 7, 9, 11]] <= TINY) and np.all(sig[[5, 7, 9, 11]] >= 0)
    np.testing.assert_array_equal(tanh[4:14], [1.0, -1.0] * 5)
    assert tanh[14] == np.float32(1e-40) and sig[14] == 0.5


def test_float64_activations_are_libm():
    """float64 keeps libm's exp and tanh: the 1e-10 parity with torch relies on it."""
    x = np.linspace(-30, 30, 10_001)
    sig, tanh = _activations(x)
    np.testing.assert_allclose(sig, 1.0 / (1.0 + np.exp(-x)), rtol=1e-15, atol=0)
    np.testing.assert_allclose(tanh, np.tanh(x), rtol=1e-15, atol=0)


def _host_has_avx2():
    try:
        with open("/proc/cpuinfo", encoding="ascii") as fh:
            return platform.machine() in ("x86_64", "AMD64") and " avx2" in fh.read()
    except OSError:
        return False


@pytest.mark.parametrize("kernel", ["_lstm_forward", "_gru_forward", "_rnn_forward"])
def test_float32_gate_loops_vectorise(kernel):
    """The float32 forwards' activation loops compile to SIMD code (x86-64 with AVX2): the
    shift that builds 2^n in the exp (``vpslld``) works on ymm/zmm registers, which only the
    vectorised loop does. A branch, an exception exit or a computed index in those loops makes
    LLVM keep them scalar (3-5x slower), with no other symptom."""
    if not _host_has_avx2():
        pytest.skip("the check reads x86-64 AVX2 assembly")
    compiled = _compiled()
    options = dict(getattr(compiled, kernel).targetoptions, cache=False)  # asm even if cached
    options.pop("nopython", None)
    fresh = require_module("numba").njit(**options)(getattr(compiled, kernel).py_func)
    a = _random_inputs("lstm" if "lstm" in kernel else "gru" if "gru" in kernel else "rnn_tanh",
                       np.float32, np.random.default_rng(6), T=2, B=2, H=16)
    T, B, G = a["XW"].shape
    sizes, f32 = np.full(T, B, np.int64), np.float32(1)
    hs = np.zeros((T + 1, B, 16), np.float32)
    if kernel == "_lstm_forward":
        fresh(a["XW"], a["W_hh"], hs, hs.copy(), np.arange(T + 1), hs[:T].copy(),
              np.empty((B, G), np.float32), sizes, False, 0, f32)
    elif kernel == "_gru_forward":
        fresh(a["XW"], a["W_hh"], a["b_hh"], hs, hs[:T].copy(), np.empty((B, G), np.float32),
              sizes, False, 0, f32)
    else:
        fresh(a["XW"], a["W_hh"], hs, sizes, False, False, 0, f32)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(r"vpslld\s+\$23, %[yz]mm", asm), "the float32 exp did not vectorise"


@pytest.mark.parametrize("pad, n, rows", [(8, 20, 24), (8, 13, 16), (8, 9, 9), (8, 16, 16),
                                          (1, 20, 20), (1, 13, 13)])
def test_step_product_pads_float32_rows_as_pad_rows_says(pad, n, rows, monkeypatch):
    """PAD_ROWS = 8 (AVX2 hosts) hands the GEMM a multiple of 8 rows, 1 (AVX-512 hosts) the live
    rows; either way the product is x @ M, and float64 is never padded."""
    from rnnlab.nn.kernels import numpy as numpy_set

    monkeypatch.setattr(numpy_set, "PAD_ROWS", pad)
    g = np.random.default_rng(2)
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append(a.shape[0])
        return real(a, b, out=out)

    monkeypatch.setattr(numpy_set.np, "matmul", spy)  # numpy's own; the @ below does not call it
    for dtype, want in ((np.float32, rows), (np.float64, n)):
        M = g.standard_normal((6, 10)).astype(dtype)
        x = g.standard_normal((n, 6)).astype(dtype)
        got = numpy_set.StepProduct(M, 24)(x)
        assert seen.pop() == want
        np.testing.assert_allclose(got, x @ M, rtol=1e-6)
