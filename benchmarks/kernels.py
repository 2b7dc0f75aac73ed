"""Kernel-set benchmark: rnnlab's recurrent layers on the ``numpy``, ``compiled`` and ``auto``
kernel sets (rnnlab.nn.kernels), float32, all in one process.

Method
------
* One process, one thread: run it as ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` (the script
  warns otherwise). The sets are compared in the same process on the same module and inputs, so
  a busy host slows all of them alike, as far as that goes.
* Per shape, cell and mode the sets are alternated: one block of calls on each set in turn (the
  order rotates every round), ``--repeats`` rounds. A block is at least ``--block-time`` seconds
  and at least 3 calls; its time per call is the block's mean. The table shows, per set, the
  median over rounds, and the ratios compiled / numpy and auto / numpy (below 1: faster than
  NumPy's).
* Modes: ``infer`` is ``eval()`` and one forward; ``train`` is ``train()``, ``zero_grad``, a
  forward and ``backward`` (as benchmarks/speed.py's fwd and fwdbwd).
* Every set is warmed up before timing (the compiled set compiles on its first call, or loads its
  machine code from numba's disk cache).
* ``auto`` is the per-call rule of rnnlab.nn.kernels (:func:`rnnlab.nn.kernels.for_shape`); the
  ``auto=`` column names the set it picked.

Usage
-----
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/kernels.py      # the default rows
    ... python benchmarks/kernels.py --grid --T 20     # B in {1,4,20,64} x H in {64,...,650}
    ... python benchmarks/kernels.py --shapes 35x20x650 --cells lstm --modes train --repeats 9
    ... python benchmarks/kernels.py --markdown

Shapes are ``TxBxH`` (input size D = H) or ``TxBxDxH``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import rnnlab  # noqa: E402
from rnnlab.nn import kernels  # noqa: E402

DEFAULT_SHAPES = [(35, 20, 200, 200), (35, 20, 650, 650), (100, 64, 256, 256),
                  (100, 64, 512, 512), (200, 1, 128, 128)]  # benchmarks/speed.py's rows
GRID_B = (1, 4, 20, 64)
GRID_H = (64, 128, 256, 512, 650)
SETS = ("numpy", "compiled", "auto")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], parts[2]
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    raise argparse.ArgumentTypeError(f"expected TxBxH or TxBxDxH, got {text!r}")


def make_step(cell: str, mode: str, T: int, B: int, D: int, H: int, seed: int = 0):
    cls = rnnlab.LSTM if cell == "lstm" else rnnlab.GRU
    m = cls(D, H, dtype="float32", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    dout = rng.standard_normal((T, B, H), dtype=np.float32)
    if mode == "infer":
        m.eval()

        def step():
            return m(x)
    else:
        m.train()

        def step():
            m.zero_grad(lazy=True)
            out, _ = m(x)
            return m.backward(dout)
    return step


def time_block(step, block_time: float) -> float:
    """Mean ms per call over a block of at least ``block_time`` seconds and 3 calls."""
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < block_time:
        step()
        n += 1
    return (time.perf_counter() - t0) / n * 1e3


def measure(step, sets, repeats: int, block_time: float) -> dict[str, float]:
    for name in sets:  # warm-up: compile or load, touch the buffers
        with kernels.use_kernels(name):
            time_block(step, block_time / 2)
    times: dict[str, list[float]] = {name: [] for name in sets}
    for r in range(repeats):
        order = sets[r % len(sets):] + sets[:r % len(sets)]
        for name in order:
            with kernels.use_kernels(name):
                times[name].append(time_block(step, block_time))
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=None)
    ap.add_argument("--grid", action="store_true",
                    help=f"B in {GRID_B} x H in {GRID_H} at --T (instead of the default rows)")
    ap.add_argument("--T", type=int, default=35, help="sequence length of the --grid shapes")
    ap.add_argument("--cells", nargs="+", choices=("lstm", "gru"), default=["lstm", "gru"])
    ap.add_argument("--modes", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block-time", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var) != "1":
            print(f"warning: {var} is not 1; BLAS threads make the timings noisier",
                  file=sys.stderr)
    if args.grid:
        shapes = [(args.T, B, H, H) for B in GRID_B for H in GRID_H]
    else:
        shapes = args.shapes or DEFAULT_SHAPES
    sets = list(args.sets)
    cols = ["shape TxBxDxH", "cell", "mode"] + [f"{s} ms" for s in sets]
    cols += [f"{s}/numpy" for s in sets if s != "numpy" and "numpy" in sets] + ["auto="]
    sep = " | " if args.markdown else "  "
    lines = [sep.join(cols)]
    if args.markdown:
        lines = ["| " + lines[0] + " |", "|" + "---|" * len(cols)]
    print("\n".join(lines), flush=True)
    for T, B, D, H in shapes:
        for cell in args.cells:
            for mode in args.modes:
                step = make_step(cell, mode, T, B, D, H)
                ms = measure(step, sets, args.repeats, args.block_time)
                row = [f"{T}x{B}x{D}x{H}", cell, mode] + [f"{ms[s]:.3f}" for s in sets]
                if "numpy" in sets:
                    row += [f"{ms[s] / ms['numpy']:.2f}" for s in sets if s != "numpy"]
                with kernels.use_kernels("auto"):
                    row.append(kernels.for_shape(B, H, np.float32))
                text = sep.join(row)
                print(f"| {text} |" if args.markdown else text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
