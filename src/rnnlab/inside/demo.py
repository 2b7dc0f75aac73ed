"""A two-minute tour of the engine: an LSTM learns to continue a noisy sine wave.

Everything is the library's own: the LSTM's forward and hand-written backward, and a linear
readout y = h W^T + b written out below. Plain SGD with momentum; loss is mean squared error.
"""

from __future__ import annotations

import time

import numpy as np

from rnnlab.nn.recurrent import LSTM


def make_batch(rng: np.random.Generator, T: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Sine waves with random phase and frequency; the target is the next value."""
    phase = rng.uniform(0, 2 * np.pi, size=(1, B, 1))
    freq = rng.uniform(0.1, 0.3, size=(1, B, 1))
    t = np.arange(T + 1)[:, None, None]
    wave = np.sin(freq * t + phase) + 0.05 * rng.standard_normal((T + 1, B, 1))
    wave = wave.astype(np.float32)
    return wave[:-1], wave[1:]  # x (T, B, 1), y (T, B, 1)


def run(steps: int = 300, hidden: int = 32, seed: int = 0, log=print) -> float:
    """Train and return the final test MSE (the naive 'repeat last value' baseline is printed)."""
    rng = np.random.default_rng(seed)
    lstm = LSTM(1, hidden, seed=rng)
    W = (rng.standard_normal((1, hidden)) / np.sqrt(hidden)).astype(np.float32)
    b = np.zeros(1, np.float32)
    params = [*lstm.parameters().values(), W, b]
    velocity = [np.zeros_like(p) for p in params]
    lr, momentum, T, B = 0.05, 0.9, 40, 32
    log(f"LSTM(1, {hidden}) + linear readout, {sum(p.size for p in params)} parameters; "
        f"SGD lr={lr} momentum={momentum}, batch {B}, {T} steps per sequence, seed {seed}")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = make_batch(rng, T, B)
        out, _ = lstm(x)  # (T, B, H)
        pred = out @ W.T + b  # y_hat = h W^T + b
        err = pred - y
        loss = float(np.mean(err**2))
        dpred = 2 * err / err.size  # dL/dy_hat
        dW, db = (dpred.reshape(-1, 1).T @ out.reshape(-1, hidden)), dpred.sum(axis=(0, 1))
        lstm.zero_grad()
        lstm.backward(dpred @ W)  # dL/dh = dL/dy_hat W
        grads = [*lstm.grads.values(), dW, db]
        for p, g, v in zip(params, grads, velocity, strict=True):
            v *= momentum
            v -= lr * g
            p += v
        if step % 50 == 0 or step == 1:
            log(f"step {step:4d}  train mse {loss:.5f}  ({time.perf_counter() - start:.1f} s)")
    x, y = make_batch(np.random.default_rng(seed + 1), 200, 64)
    out, _ = lstm.eval()(x)
    test = float(np.mean((out @ W.T + b - y) ** 2))
    naive = float(np.mean((x - y) ** 2))
    log(f"test mse {test:.5f}  (repeat-last-value baseline {naive:.5f})")
    _, _, internals = lstm(x[:5, :1], return_internals=True)
    gates = internals["l0"]
    log("one sequence, first 5 steps: mean gate activations (i, f, g, o) and |c|:")
    for t in range(5):
        vals = "  ".join(f"{k}={gates[k][t, 0].mean():+.3f}" for k in "ifgo")
        log(f"  t={t}  {vals}  |c|={np.abs(gates['c'][t, 0]).mean():.3f}")
    return test
