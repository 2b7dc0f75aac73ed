"""Speed benchmark: rnnlab (NumPy, hand-written BPTT) versus torch.nn on CPU, float32.

Method
------
* Every measurement runs in a fresh worker process (this script re-invoked with ``--worker``).
  rnnlab and torch never share a process: OpenBLAS' pthreads and torch's OpenMP threads spin
  (busy-wait) for a while after each call, and two spinning pools in one process slow both sides
  10-100x. The rnnlab worker never imports torch (it checks ``sys.modules`` and fails if torch got
  imported), the torch worker never imports rnnlab.
* Threads: the rnnlab worker limits NumPy's BLAS with ``threadpoolctl.threadpool_limits(N)`` and
  verifies through ``threadpool_info()`` that every BLAS library reports N threads; the torch worker
  calls ``torch.set_num_threads(N)`` and verifies ``torch.get_num_threads()``. N = 2 by default.
* Timing: each worker does warm-up iterations (at least ``--warmup`` iterations and
  ``--warmup-time`` seconds), then times iterations one by one with ``time.perf_counter`` (at least
  ``--min-iters`` iterations and ``--min-time`` seconds, garbage collector off) and reports the
  median. The parent alternates the two implementations (rnnlab, torch, rnnlab, torch, ...) for
  ``--repeats`` rounds (default 3) over all cases and reports, per side, the median over rounds.
* Modes: ``fwd`` is inference (rnnlab ``eval()``; torch ``eval()`` under ``torch.no_grad()``).
  ``fwdbwd`` is one training step without the optimizer: torch ``zero_grad``, ``out, _ = m(x)``,
  ``(out * dout).sum().backward()`` with ``x.requires_grad``; rnnlab ``zero_grad(lazy=True)``,
  ``out, _ = m(x)``, ``m.backward(dout)``. Initial states are zeros, inputs standard normal.
* FLOP model (GEMMs only, the products of ``case_gemms``): per layer and direction the forward
  costs ``2*T*B*G*H*(D_k + H)`` with G = 4 (LSTM) or 3 (GRU), D_0 = input size, D_k = dirs*H
  above; forward+backward costs 3x that.
  GFLOP/s are also shown as a percentage of the machine's float32 GEMM rate, measured in its own
  worker process with NumPy at the same thread count (1024x1024 @ 1024x1024, median of the
  iterations), once per round; the best round is used as the peak.
* GEMM floor (``case_gemms``): the time of the row's matrix products alone (input projection,
  T step products, and backward's step products, dx, dW_ih, dW_hh) at NumPy's BLAS, the same
  shapes and threads, timed in the rnnlab worker after the case. Its ratio to torch's time
  says how far a row is from the limit this BLAS sets: above 1, no work outside the GEMMs can
  close the gap.
* Interference: other processes on the machine distort multi-threaded timings badly (a
  descheduled BLAS/OpenMP thread stalls the whole team). Each worker measures the CPU time that
  other processes used during its timed window (/proc/stat minus its own CPU time). Before every
  worker the parent waits (up to ``--max-wait`` s) until less than ``--contention`` of the CPUs
  are busy, reruns a disturbed worker up to ``--retries`` times, and leaves still-disturbed
  rounds out of the medians when clean rounds exist (the table marks ``!`` if none did).
* ``--check`` first verifies that both implementations agree: one torch worker builds each module
  with a fixed seed, runs forward+backward with random initial state and writes inputs, weights,
  outputs and gradients to a temporary .npz; one rnnlab worker loads those weights into rnnlab,
  recomputes and writes its own .npz; the parent compares them
  (max |a - b| / max(1, max |torch|) <= ``--check-tol``, default 1e-4).

Usage
-----
    .venv/bin/python benchmarks/speed.py                      # full table, 3 rounds (~10 min
                                                              # on a 2-CPU machine)
    .venv/bin/python benchmarks/speed.py --quick              # 1 shape, short timing
    .venv/bin/python benchmarks/speed.py --cells lstm --modes fwdbwd --shapes 35x20x650
    .venv/bin/python benchmarks/speed.py --layers 2 --bidirectional --check
    .venv/bin/python benchmarks/speed.py --check-only         # correctness check, no timing
    .venv/bin/python benchmarks/speed.py --markdown --json results.json  # for RESULTS.md
    .venv/bin/python benchmarks/speed.py --native-blas        # unset OPENBLAS_CORETYPE/L2_SIZE

Shapes are ``TxBxH`` (input size D = H) or ``TxBxDxH``. ``ratio`` is rnnlab ms / torch ms, so
values above 1 mean rnnlab is slower. A worker that fails has its stderr printed and its cell in
the table reads ``error``; a value marked ``*`` is a median over fewer rounds than requested.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULT_MARKER = "@@SPEED_RESULT@@ "
DEFAULT_SHAPES: list[tuple[int, int, int, int]] = [  # (T, B, D, H)
    (35, 20, 200, 200),
    (35, 20, 650, 650),
    (100, 64, 256, 256),
    (100, 64, 512, 512),
    (200, 1, 128, 128),
]
QUICK_SHAPE = (35, 20, 200, 200)
GATES = {"lstm": 4, "gru": 3}
MODES = ("fwd", "fwdbwd")
IMPLS = ("rnnlab", "torch")
NATIVE_BLAS_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REPO_SRC = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------------------------
# Cases and FLOP model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    cell: str
    mode: str
    T: int
    B: int
    D: int
    H: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def label(self) -> str:
        return f"{self.cell} {self.mode} T={self.T} B={self.B} D={self.D} H={self.H}"


def case_gemms(case: Case) -> dict[tuple[int, int, int], int]:
    """The matrix products one timed step of ``case`` makes in rnnlab's layers, as
    {(M, K, N): count}, per layer and direction: the input projection (T*B, D_k) @ (D_k, G*H)
    once and the step product (B, H) @ (H, G*H) T times; forward+backward adds the backward's
    step products (B, G*H) @ (G*H, H) T times, dx (T*B, G*H) @ (G*H, D_k), dW_ih (G*H, T*B) @
    (T*B, D_k) and dW_hh (G*H, T*B) @ (T*B, H). Their time at NumPy's BLAS is the GEMM floor:
    what this decomposition costs with nothing else (cells, copies, Python) taking any time."""
    dirs = 2 if case.bidirectional else 1
    gh = GATES[case.cell] * case.H
    T, B, H = case.T, case.B, case.H
    out: dict[tuple[int, int, int], int] = {}
    for k in range(case.layers):
        d_k = case.D if k == 0 else dirs * H
        shapes = [((T * B, d_k, gh), 1), ((B, H, gh), T)]
        if case.mode == "fwdbwd":
            shapes += [((B, gh, H), T), ((T * B, gh, d_k), 1), ((gh, T * B, d_k), 1),
                       ((gh, T * B, H), 1)]
        for shape, n in shapes:
            out[shape] = out.get(shape, 0) + dirs * n
    return out


def time_gemm_floor(case: Case, seconds: float = 0.15) -> float:
    """The GEMM floor of ``case`` in ms (:func:`case_gemms`), each product timed with
    ``np.matmul(a, b, out=c)`` on C-ordered float32 operands (:func:`_time_loop`'s median)."""
    import numpy as np

    rng = np.random.default_rng(0)
    timing = {"warmup": 1, "warmup_time": 0.0, "min_iters": 5, "min_time": seconds,
              "max_iters": 2000}
    total = 0.0
    for (m, k, n), count in case_gemms(case).items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        total += count * _time_loop(lambda a=a, b=b, c=c: np.matmul(a, b, out=c),
                                    timing)["median_ms"]
    return total


def case_flops(case: Case) -> float:
    """GEMM FLOPs of the timed step, those of :func:`case_gemms`: per layer and direction the
    forward's 2*T*B*G*H*(D_k + H), and for forward+backward 3x that (the backward's four
    products cost twice the forward's two)."""
    return sum(2.0 * m * k * n * count for (m, k, n), count in case_gemms(case).items())


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """Parse ``TxBxH`` (D = H) or ``TxBxDxH`` into (T, B, D, H)."""
    parts = [int(p) for p in text.lower().replace("*", "x").split("x") if p]
    if len(parts) == 3:
        t, b, h = parts
        return (t, b, h, h)
    if len(parts) == 4:
        t, b, d, h = parts
        return (t, b, d, h)
    raise argparse.ArgumentTypeError(f"shape {text!r}: expected TxBxH or TxBxDxH")


# --------------------------------------------------------------------------------------------
# Worker side (runs in a child process; imports numpy + either rnnlab or torch, never both)
# --------------------------------------------------------------------------------------------


def _limit_numpy_blas(threads: int) -> dict[str, Any]:
    """Limit NumPy's BLAS to ``threads`` threads and verify it; return the BLAS description."""
    from threadpoolctl import threadpool_info, threadpool_limits

    limiter = threadpool_limits(limits=threads)
    globals()["_THREADPOOL_LIMITER"] = limiter  # keep the limit alive for the whole process
    info = threadpool_info()
    blas = [d for d in info if d.get("user_api") == "blas"]
    if not blas:
        raise RuntimeError(f"threadpoolctl found no BLAS library: {info}")
    wrong = [d for d in blas if d.get("num_threads") != threads]
    if wrong:
        raise RuntimeError(f"BLAS thread count is not {threads} after threadpool_limits: {wrong}")
    first = blas[0]
    return {
        "blas": first.get("internal_api"),
        "blas_version": first.get("version"),
        "blas_prefix": first.get("prefix"),
        "blas_architecture": first.get("architecture"),
        "blas_threading_layer": first.get("threading_layer"),
        "blas_threads": first.get("num_threads"),
        "blas_libraries": len(blas),
        "threadpools": [
            {k: d.get(k) for k in ("internal_api", "prefix", "version", "num_threads")}
            for d in info
        ],
        "env_OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "env_OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }


def _import_rnnlab(module: str) -> Any:
    """Import the implementation under test, falling back to the repository's src/ folder."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0] or not REPO_SRC.is_dir():
            raise
        sys.path.insert(0, str(REPO_SRC))
        return importlib.import_module(module)


def _rnnlab_module(rl: Any, case: Case, seed: int | None = None) -> Any:
    """The rnnlab layer a case describes, float32."""
    cls = rl.LSTM if case.cell == "lstm" else rl.GRU
    return cls(case.D, case.H, num_layers=case.layers, bidirectional=case.bidirectional,
               dtype="float32", seed=seed)


def _inputs(case: Case, seed: int) -> tuple[Any, Any]:
    """Standard-normal float32 input x (T, B, D) and output gradient dout (T, B, dirs*H)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dirs = 2 if case.bidirectional else 1
    x = rng.standard_normal((case.T, case.B, case.D), dtype=np.float32)
    dout = rng.standard_normal((case.T, case.B, dirs * case.H), dtype=np.float32)
    return x, dout


def cpu_busy_seconds() -> float | None:
    """Busy CPU seconds summed over all CPUs since boot (from /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    vals = [int(v) for v in fields[1:9]] + [0] * max(0, 9 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = vals[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _time_loop(step: Callable[[], object], spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then time ``step`` repeatedly; return median and raw times in milliseconds.

    Also estimates ``foreign_load``: the fraction of all CPUs that other processes kept busy
    while this loop was timed (system busy time minus this process' CPU time).
    """
    t0 = time.perf_counter()
    n_warm = 0
    while n_warm < spec["warmup"] or time.perf_counter() - t0 < spec["warmup_time"]:
        step()
        n_warm += 1
    gc.collect()
    gc.disable()
    try:
        times: list[float] = []
        busy0, own0 = cpu_busy_seconds(), _own_cpu_seconds()
        t_start = time.perf_counter()
        while len(times) < spec["max_iters"] and (
            len(times) < spec["min_iters"] or time.perf_counter() - t_start < spec["min_time"]
        ):
            a = time.perf_counter()
            step()
            times.append((time.perf_counter() - a) * 1e3)
        wall = time.perf_counter() - t_start
        busy1, own1 = cpu_busy_seconds(), _own_cpu_seconds()
    finally:
        gc.enable()
    foreign = None
    if busy0 is not None and busy1 is not None and wall > 0:
        foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    return {
        "median_ms": statistics.median(times),
        "times_ms": times,
        "warmup_iters": n_warm,
        "foreign_load": foreign,
    }


def worker_rnnlab(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one case with rnnlab (must not import torch)."""
    import numpy as np

    blas = _limit_numpy_blas(spec["threads"])
    rl = _import_rnnlab(spec["module"])
    case = Case(**spec["case"])
    m = _rnnlab_module(rl, case, seed=spec["seed"])
    x, dout = _inputs(case, spec["seed"])
    if case.mode == "fwd":
        m.eval()
        # inference as torch's side runs it (no_grad): nothing kept for a backward (a module
        # from before no_grad existed keeps its cache)
        no_grad = getattr(getattr(rl, "nn", None), "no_grad", contextlib.nullcontext)

        def step() -> object:
            with no_grad():
                return m(x)
    else:
        m.train()

        def step() -> object:
            m.zero_grad(lazy=True)
            out, _ = m(x)
            return m.backward(dout)

    res = _time_loop(step, spec)
    res["gemm_floor_ms"] = time_gemm_floor(case)
    if "torch" in sys.modules:
        raise RuntimeError("torch was imported in the rnnlab worker process")
    version = getattr(rl, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _pkg_version

            version = _pkg_version(spec["module"])
        except Exception:  # noqa: BLE001 - version is informational only
            version = "?"
    res.update(blas)
    res.update(
        {
            "numpy": np.__version__,
            "impl_version": version,
            "impl_file": getattr(rl, "__file__", None),
        }
    )
    return res


def _torch_setup(threads: int) -> Any:
    """Import torch, set and verify its intra-op thread count."""
    import torch

    torch.set_num_threads(threads)
    got = torch.get_num_threads()
    if got != threads:
        raise RuntimeError(f"torch.get_num_threads() = {got}, wanted {threads}")
    return torch


def _torch_info(torch: Any) -> dict[str, Any]:
    cfg = torch.__config__.show()
    blas = next(
        (p.split("=", 1)[1] for p in cfg.replace(",", " ").split() if p.startswith("BLAS_INFO=")),
        "?",
    )
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_blas": blas,
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "torch_mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _torch_module(torch: Any, case: Case) -> Any:
    cls = torch.nn.LSTM if case.cell == "lstm" else torch.nn.GRU
    return cls(case.D, case.H, num_layers=case.layers, bidirectional=case.bidirectional)


def worker_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one case with torch.nn (must not import rnnlab)."""
    torch = _torch_setup(spec["threads"])
    case = Case(**spec["case"])
    torch.manual_seed(spec["seed"])
    m = _torch_module(torch, case)
    x_np, dout_np = _inputs(case, spec["seed"])
    x = torch.from_numpy(x_np)
    dout = torch.from_numpy(dout_np)
    if case.mode == "fwd":
        m.eval()

        def step() -> object:
            return m(x)

        with torch.no_grad():
            res = _time_loop(step, spec)
    else:
        m.train()
        x.requires_grad_(True)

        def step() -> object:
            m.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = m(x)
            (out * dout).sum().backward()
            return out

        res = _time_loop(step, spec)
    if spec["module"] in sys.modules:
        raise RuntimeError(f"{spec['module']} was imported in the torch worker process")
    res.update(_torch_info(torch))
    return res


def worker_gemm(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure NumPy float32 GEMM throughput (n x n @ n x n) at the benchmark's thread count."""
    import numpy as np

    blas = _limit_numpy_blas(spec["threads"])
    n = spec["gemm_n"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    res = _time_loop(lambda: np.matmul(a, b, out=c), {**spec, "min_iters": 10})
    res["gflops"] = 2.0 * n**3 / (res["median_ms"] * 1e-3) / 1e9
    res["n"] = n
    res.update(blas)
    res["numpy"] = np.__version__
    return res


def worker_check_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """Reference run for --check: write inputs, torch weights, outputs and gradients to .npz."""
    import numpy as np

    torch = _torch_setup(spec["threads"])
    files = []
    for i, cdict in enumerate(spec["cases"]):
        case = Case(**cdict)
        torch.manual_seed(spec["seed"])
        m = _torch_module(torch, case)
        m.train()
        dirs = 2 if case.bidirectional else 1
        x_np, dout_np = _inputs(case, spec["seed"])
        rng = np.random.default_rng(spec["seed"] + 1)
        state_shape = (case.layers * dirs, case.B, case.H)
        h0_np = rng.standard_normal(state_shape, dtype=np.float32)
        c0_np = rng.standard_normal(state_shape, dtype=np.float32)
        x = torch.from_numpy(x_np).requires_grad_(True)
        h0 = torch.from_numpy(h0_np).requires_grad_(True)
        c0 = torch.from_numpy(c0_np).requires_grad_(True)
        if case.cell == "lstm":
            out, (hn, cn) = m(x, (h0, c0))
        else:
            out, hn = m(x, h0)
        (out * torch.from_numpy(dout_np)).sum().backward()
        arrays = {
            "in.x": x_np,
            "in.h0": h0_np,
            "in.dout": dout_np,
            "out.out": out.detach().numpy(),
            "out.h_n": hn.detach().numpy(),
            "out.dx": x.grad.numpy(),
            "out.dh0": h0.grad.numpy(),
        }
        if case.cell == "lstm":
            arrays.update(
                {"in.c0": c0_np, "out.c_n": cn.detach().numpy(), "out.dc0": c0.grad.numpy()}
            )
        for name, p in m.named_parameters():
            arrays["w." + name] = p.detach().numpy()
            arrays["out.grad." + name] = p.grad.numpy()
        path = Path(spec["dir"]) / f"case{i}_torch.npz"
        np.savez(path, **arrays)
        files.append(str(path))
    return {"files": files, **_torch_info(torch)}


def worker_check_rnnlab(spec: dict[str, Any]) -> dict[str, Any]:
    """rnnlab side of --check: load torch's weights and inputs, recompute, write .npz."""
    import numpy as np

    _limit_numpy_blas(spec["threads"])
    rl = _import_rnnlab(spec["module"])
    files = []
    for i, cdict in enumerate(spec["cases"]):
        case = Case(**cdict)
        ref = np.load(Path(spec["dir"]) / f"case{i}_torch.npz")
        m = _rnnlab_module(rl, case)
        m.load_state_dict({k[2:]: ref[k] for k in ref.files if k.startswith("w.")})
        m.train()
        m.zero_grad()
        arrays: dict[str, Any] = {}
        if case.cell == "lstm":
            out, (hn, cn) = m(ref["in.x"], (ref["in.h0"], ref["in.c0"]))
            dx, (dh0, dc0) = m.backward(ref["in.dout"])
            arrays.update({"out.c_n": cn, "out.dc0": dc0})
        else:
            out, hn = m(ref["in.x"], ref["in.h0"])
            dx, dh0 = m.backward(ref["in.dout"])
        arrays.update({"out.out": out, "out.h_n": hn, "out.dx": dx, "out.dh0": dh0})
        for name, g in m.grads.items():
            arrays["out.grad." + name] = g
        path = Path(spec["dir"]) / f"case{i}_rnnlab.npz"
        np.savez(path, **arrays)
        files.append(str(path))
    if "torch" in sys.modules:
        raise RuntimeError("torch was imported in the rnnlab worker process")
    return {"files": files}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "rnnlab": worker_rnnlab,
    "torch": worker_torch,
    "gemm": worker_gemm,
    "check-torch": worker_check_torch,
    "check-rnnlab": worker_check_rnnlab,
}


def worker_main(kind: str, spec_json: str) -> int:
    """Entry point of a worker process: run one job, print one JSON result line."""
    try:
        result = WORKERS[kind](json.loads(spec_json))
    except Exception:  # noqa: BLE001 - reported to the parent through stderr and exit code
        traceback.print_exc()
        return 1
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    """Outcome of one worker process."""

    ok: bool
    data: dict[str, Any]
    error: str = ""


def run_worker(
    kind: str, spec: dict[str, Any], args: argparse.Namespace, env: dict[str, str]
) -> WorkerResult:
    """Run one worker process; on failure print its stderr and return ok=False."""
    cmd = [args.python, str(Path(__file__).resolve()), "--worker", kind, "--spec", json.dumps(spec)]
    what = f"{kind} worker" + (f" ({Case(**spec['case']).label})" if "case" in spec else "")
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=args.worker_timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"timed out after {args.worker_timeout} s"
        tail = exc.stderr if isinstance(exc.stderr, str) else ""
        print(f"\n!! {what} {msg}\n{tail}", file=sys.stderr)
        return WorkerResult(False, {}, msg)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        msg = f"exit code {proc.returncode}"
        print(
            f"\n!! {what} failed ({msg}); stderr:\n{proc.stderr.rstrip()}\n"
            f"stdout:\n{proc.stdout.rstrip()[-2000:]}",
            file=sys.stderr,
        )
        last = proc.stderr.strip().splitlines()
        return WorkerResult(False, {}, last[-1] if last else msg)
    return WorkerResult(True, json.loads(lines[-1][len(RESULT_MARKER) :]))


def system_busy_fraction(interval: float) -> float | None:
    """Fraction of all CPUs busy during ``interval`` seconds (this process sleeps meanwhile)."""
    b0, t0 = cpu_busy_seconds(), time.perf_counter()
    time.sleep(interval)
    b1, t1 = cpu_busy_seconds(), time.perf_counter()
    if b0 is None or b1 is None:
        return None
    return (b1 - b0) / ((t1 - t0) * (os.cpu_count() or 1))


def wait_for_idle(args: argparse.Namespace) -> float | None:
    """Wait (at most --max-wait s) until other processes use <= --contention of the CPUs."""
    deadline = time.perf_counter() + args.max_wait
    while True:
        busy = system_busy_fraction(0.25)
        if busy is None or busy <= args.contention or time.perf_counter() >= deadline:
            return busy


def measure(
    kind: str, spec: dict[str, Any], args: argparse.Namespace, env: dict[str, str]
) -> WorkerResult:
    """Run a timing worker; rerun it (up to --retries times) if other processes disturbed it.

    Keeps the attempt with the least foreign CPU load. Failed workers are not retried.
    """
    best: WorkerResult | None = None
    for attempt in range(args.retries + 1):
        if args.max_wait > 0:
            wait_for_idle(args)
        res = run_worker(kind, spec, args, env)
        if not res.ok:
            return res if best is None else best
        res.data["attempt"] = attempt + 1
        load = res.data.get("foreign_load") or 0.0
        if best is None or load < (best.data.get("foreign_load") or 0.0):
            best = res
        if load <= args.contention:
            break
    assert best is not None
    return best


def _contended(res: WorkerResult, args: argparse.Namespace) -> bool:
    return res.ok and (res.data.get("foreign_load") or 0.0) > args.contention


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of the worker processes (--native-blas removes OpenBLAS overrides)."""
    env = dict(os.environ)
    if args.native_blas:
        for key in NATIVE_BLAS_UNSET:
            env.pop(key, None)
    return env


def compare_check(
    files_ref: list[str], files_impl: list[str], cases: list[Case], tol: float
) -> tuple[bool, list[str]]:
    """Compare torch and rnnlab --check outputs; return (all ok, report lines)."""
    import numpy as np

    ok_all = True
    lines = []
    for case, fr, fi in zip(cases, files_ref, files_impl, strict=True):
        ref = np.load(fr)
        got = np.load(fi)
        worst, worst_key, problems = 0.0, "", []
        for key in sorted(k for k in ref.files if k.startswith("out.")):
            if key not in got.files:
                problems.append(f"{key[4:]} missing")
                continue
            a, b = np.asarray(got[key]), ref[key]
            if a.shape != b.shape:
                problems.append(f"{key[4:]} shape {a.shape} != torch {b.shape}")
                continue
            if not np.all(np.isfinite(a)):
                problems.append(f"{key[4:]} not finite")
                continue
            err = float(np.max(np.abs(a.astype(np.float64) - b)) / max(1.0, np.max(np.abs(b))))
            if err > worst:
                worst, worst_key = err, key[4:]
            if err > tol:
                problems.append(f"{key[4:]} err {err:.2e}")
        ok = not problems
        ok_all &= ok
        status = "ok" if ok else "MISMATCH: " + "; ".join(problems)
        lines.append(
            f"  {case.cell} T={case.T} B={case.B} D={case.D} H={case.H}: "
            f"max rel err {worst:.1e} ({worst_key or '-'}) {status}"
        )
    return ok_all, lines


def run_check(cases: list[Case], args: argparse.Namespace, env: dict[str, str]) -> bool:
    """--check: torch worker writes reference .npz files, rnnlab worker recomputes, compare."""
    uniq = list(
        dict.fromkeys(
            Case(c.cell, "fwdbwd", c.T, c.B, c.D, c.H, c.layers, c.bidirectional) for c in cases
        )
    )
    print(
        f"checking rnnlab against torch on {len(uniq)} case(s) "
        f"(forward+backward, tol {args.check_tol:g})...",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="rnnlab_speed_check_") as tmp:
        spec = {
            "cases": [asdict(c) for c in uniq],
            "dir": tmp,
            "seed": args.seed,
            "threads": args.threads,
            "module": args.module,
        }
        ref = run_worker("check-torch", spec, args, env)
        if not ref.ok:
            print("check: torch reference worker failed", file=sys.stderr)
            return False
        got = run_worker("check-rnnlab", spec, args, env)
        if not got.ok:
            print("check: rnnlab worker failed", file=sys.stderr)
            return False
        ok, lines = compare_check(ref.data["files"], got.data["files"], uniq, args.check_tol)
    print("check " + ("passed" if ok else "FAILED") + ":\n" + "\n".join(lines), file=sys.stderr)
    return ok


def timing_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "threads": args.threads,
        "seed": args.seed,
        "module": args.module,
        "warmup": args.warmup,
        "warmup_time": args.warmup_time,
        "min_iters": args.min_iters,
        "min_time": args.min_time,
        "max_iters": args.max_iters,
        "gemm_n": args.gemm_n,
    }


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    cases: list[Case],
    runs: dict[tuple[int, str], list[WorkerResult]],
    gemm_gflops: float | None,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Per case: medians over rounds, ratio, GFLOP/s and % of GEMM rate."""
    rows = []
    for i, case in enumerate(cases):
        row: dict[str, Any] = {"case": asdict(case), "flops": case_flops(case)}
        for impl in IMPLS:
            res = runs.get((i, impl), [])
            ok = [r for r in res if r.ok]
            clean = [r for r in ok if not _contended(r, args)]
            ms = [r.data["median_ms"] for r in ok]
            # disturbed measurements are known-bad: use the clean rounds when there are any
            med = _median_or_none([r.data["median_ms"] for r in (clean or ok)])
            row[impl] = {
                "median_ms": med,
                "round_ms": ms,
                "rounds_ok": len(ms),
                "rounds": args.repeats,
                "contended_rounds": len(ok) - len(clean),
                "clean_rounds": len(clean),
                "foreign_load": [r.data.get("foreign_load") for r in res if r.ok],
                "min_ms": min(ms) if ms else None,
                "max_ms": max(ms) if ms else None,
                "errors": [r.error for r in res if not r.ok],
                "gflops": case_flops(case) / (med * 1e-3) / 1e9 if med else None,
            }
        r_ms, t_ms = row["rnnlab"]["median_ms"], row["torch"]["median_ms"]
        row["ratio"] = r_ms / t_ms if r_ms and t_ms else None
        floors = [r.data["gemm_floor_ms"] for r in runs.get((i, "rnnlab"), [])
                  if r.ok and "gemm_floor_ms" in r.data]
        row["gemm_floor_ms"] = _median_or_none(floors)
        f_ms = row["gemm_floor_ms"]
        row["floor_ratio"] = f_ms / t_ms if f_ms and t_ms else None
        g = row["rnnlab"]["gflops"]
        row["pct_gemm_peak"] = 100.0 * g / gemm_gflops if g and gemm_gflops else None
        tg = row["torch"]["gflops"]
        row["torch_pct_gemm_peak"] = 100.0 * tg / gemm_gflops if tg and gemm_gflops else None
        rows.append(row)
    return rows


def _fmt_ms(side: dict[str, Any]) -> str:
    if side["median_ms"] is None:
        return "error"
    v = side["median_ms"]
    s = f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"
    return (
        s
        + ("*" if side["rounds_ok"] < side["rounds"] else "")
        + ("!" if side["rounds_ok"] and not side["clean_rounds"] else "")
    )


def format_table(rows: list[dict[str, Any]], markdown: bool) -> str:
    """Aligned pipe table (valid markdown when ``markdown`` adds the alignment row)."""
    show_d = any(r["case"]["D"] != r["case"]["H"] for r in rows)
    headers = (
        ["cell", "mode", "T", "B"]
        + (["D"] if show_d else [])
        + ["H", "rnnlab ms", "torch ms", "ratio", "rnnlab GFLOP/s", "% of GEMM peak",
           "GEMM floor ms", "floor / torch"]
    )
    body = []
    for r in rows:
        c = r["case"]
        g = r["rnnlab"]["gflops"]
        body.append(
            [c["cell"], c["mode"], str(c["T"]), str(c["B"])]
            + ([str(c["D"])] if show_d else [])
            + [
                str(c["H"]),
                _fmt_ms(r["rnnlab"]),
                _fmt_ms(r["torch"]),
                f"{r['ratio']:.2f}x" if r["ratio"] else "error",
                f"{g:.1f}" if g else "error",
                f"{r['pct_gemm_peak']:.1f}%" if r["pct_gemm_peak"] else "error",
                f"{r['gemm_floor_ms']:.3g}" if r.get("gemm_floor_ms") else "-",
                f"{r['floor_ratio']:.2f}x" if r.get("floor_ratio") else "-",
            ]
        )
    left = {0, 1}
    widths = [max(len(h), *(len(b[j]) for b in body)) for j, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if j in left else c.rjust(w)
            for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    lines = [line(headers)]
    if markdown:
        lines.append(
            "|"
            + "|".join(
                ("-" * (w + 2)) if j in left else ("-" * (w + 1) + ":")
                for j, w in enumerate(widths)
            )
            + "|"
        )
    else:
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [line(b) for b in body]
    return "\n".join(lines)


def _first_ok(results: list[WorkerResult]) -> dict[str, Any]:
    return next((r.data for r in results if r.ok), {})


def header_info(
    args: argparse.Namespace,
    gemm: list[WorkerResult],
    runs: dict[tuple[int, str], list[WorkerResult]],
    gemm_gflops: float | None,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
    started: str,
) -> dict[str, Any]:
    """Collect the environment description printed above the table."""
    rl = _first_ok([r for (_, impl), rs in runs.items() if impl == "rnnlab" for r in rs])
    th = _first_ok([r for (_, impl), rs in runs.items() if impl == "torch" for r in rs])
    gm = _first_ok(gemm)
    blas_src = rl or gm
    return {
        "date": started,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": blas_src.get("numpy", "?"),
        "rnnlab_module": args.module,
        "rnnlab_version": rl.get("impl_version", "?"),
        "blas": blas_src.get("blas", "?"),
        "blas_version": blas_src.get("blas_version", "?"),
        "blas_prefix": blas_src.get("blas_prefix", "?"),
        "blas_architecture": blas_src.get("blas_architecture", "?"),
        "blas_threading_layer": blas_src.get("blas_threading_layer", "?"),
        "blas_threads": blas_src.get("blas_threads", "?"),
        "env_OPENBLAS_CORETYPE": blas_src.get("env_OPENBLAS_CORETYPE"),
        "env_OPENBLAS_L2_SIZE": blas_src.get("env_OPENBLAS_L2_SIZE"),
        "native_blas": args.native_blas,
        "torch": th.get("torch", "?"),
        "torch_threads": th.get("torch_threads", "?"),
        "torch_blas": th.get("torch_blas", "?"),
        "torch_mkldnn": th.get("torch_mkldnn", "?"),
        "torch_capability": th.get("torch_capability", "?"),
        "threads": args.threads,
        "gemm_gflops": gemm_gflops,
        "gemm_rounds_gflops": [r.data["gflops"] for r in gemm if r.ok],
        "gemm_n": args.gemm_n,
        "layers": args.layers,
        "bidirectional": args.bidirectional,
        "repeats": args.repeats,
        "load_start": load_start,
        "load_end": load_end,
    }


def format_header(h: dict[str, Any], markdown: bool) -> str:
    """Human-readable (or markdown bullet) description of the run's environment."""
    gemm = f"{h['gemm_gflops']:.1f} GFLOP/s" if h["gemm_gflops"] else "error"
    rounds = ", ".join(f"{g:.0f}" for g in h["gemm_rounds_gflops"])
    core = h["env_OPENBLAS_CORETYPE"]
    items = [
        ("date", h["date"]),
        ("CPU", f"{h['cpu']} ({h['cpus']} logical CPUs, {h['affinity']} usable), {h['platform']}"),
        ("python", h["python"]),
        (
            "numpy",
            f"{h['numpy']}; BLAS {h['blas']} {h['blas_version']} ({h['blas_prefix']}, "
            f"{h['blas_threading_layer']}), core type (threadpoolctl 'architecture') "
            f"{h['blas_architecture']}, {h['blas_threads']} threads (verified)",
        ),
        (
            "OpenBLAS env",
            f"OPENBLAS_CORETYPE={core if core is not None else '<unset>'}, "
            f"OPENBLAS_L2_SIZE={h['env_OPENBLAS_L2_SIZE'] or '<unset>'}"
            + (" (--native-blas)" if h["native_blas"] else ""),
        ),
        (
            "torch",
            f"{h['torch']}; BLAS {h['torch_blas']}, mkldnn {h['torch_mkldnn']}, "
            f"CPU capability {h['torch_capability']}, {h['torch_threads']} threads "
            "(verified)",
        ),
        ("rnnlab", f"{h['rnnlab_version']} (module {h['rnnlab_module']})"),
        (
            "float32 GEMM rate",
            f"{gemm} (numpy {h['gemm_n']}^3 matmul, {h['threads']} threads, "
            f"best of rounds: {rounds})",
        ),
        (
            "setup",
            f"{h['layers']} layer(s), "
            f"{'bidirectional' if h['bidirectional'] else 'unidirectional'}, float32, "
            f"{h['repeats']} alternating rounds, one process per measurement",
        ),
        (
            "load average",
            "start "
            + " ".join(f"{v:.2f}" for v in h["load_start"])
            + ", end "
            + " ".join(f"{v:.2f}" for v in h["load_end"]),
        ),
    ]
    if markdown:
        return "\n".join(f"- **{k}**: {v}" for k, v in items)
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.rjust(width)}: {v}" for k, v in items)


def build_cases(args: argparse.Namespace) -> list[Case]:
    shapes = args.shapes or ([QUICK_SHAPE] if args.quick else DEFAULT_SHAPES)
    return [
        Case(cell, mode, t, b, d, h, args.layers, args.bidirectional)
        for cell in args.cells
        for (t, b, d, h) in shapes
        for mode in args.modes
    ]


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [s.strip().lower() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma list of {choices}, got {text!r}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="rnnlab vs torch.nn CPU speed benchmark (float32, one process per run).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--cells", type=_csv(tuple(GATES)), default="lstm,gru", help="comma list of cells"
    )
    p.add_argument("--modes", type=_csv(MODES), default="fwd,fwdbwd", help="comma list of modes")
    p.add_argument(
        "--shapes",
        type=lambda s: [parse_shape(x) for x in s.split(",") if x],
        default=None,
        help="comma list of TxBxH or TxBxDxH; None means "
        + ",".join(f"{t}x{b}x{h}" for t, b, _, h in DEFAULT_SHAPES)
        + " (--quick: 35x20x200)",
    )
    p.add_argument("--layers", type=int, default=1, help="num_layers")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional modules")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternating rounds (rnnlab, torch) per case; median over rounds",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one shape (unless --shapes) and short timing per worker",
    )
    p.add_argument("--threads", type=int, default=2, help="BLAS / torch intra-op threads")
    p.add_argument("--warmup", type=int, default=2, help="minimum warm-up iterations")
    p.add_argument("--warmup-time", type=float, default=0.3, help="minimum warm-up seconds")
    p.add_argument("--min-iters", type=int, default=5, help="minimum timed iterations")
    p.add_argument("--min-time", type=float, default=1.0, help="minimum timed seconds")
    p.add_argument("--max-iters", type=int, default=1000, help="maximum timed iterations")
    p.add_argument("--gemm-n", type=int, default=1024, help="GEMM size for the peak measurement")
    p.add_argument(
        "--native-blas",
        action="store_true",
        help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the workers' env",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="first verify rnnlab matches torch (forward+backward) on the cases",
    )
    p.add_argument("--check-only", action="store_true", help="run --check and exit")
    p.add_argument(
        "--check-tol",
        type=float,
        default=1e-4,
        help="max |a-b| / max(1, max|torch|) allowed by --check",
    )
    p.add_argument("--markdown", action="store_true", help="print header + table as markdown")
    p.add_argument("--json", metavar="OUT", default=None, help="save raw results as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    p.add_argument(
        "--module",
        default="rnnlab",
        help="module implementing the rnnlab API (to benchmark a stand-in)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for worker processes")
    p.add_argument(
        "--contention",
        type=float,
        default=0.1,
        help="fraction of all CPUs used by other processes above which a "
        "measurement counts as disturbed (waited for beforehand, retried after)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=15.0,
        help="seconds to wait for the machine to go idle before each worker (0: off)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="reruns of a worker whose timing window was disturbed",
    )
    p.add_argument("--worker-timeout", type=float, default=900.0, help="seconds per worker")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for name, value in (
            ("warmup_time", 0.1),
            ("min_time", 0.25),
            ("min_iters", 3),
            ("max_wait", 5.0),
        ):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    if args.repeats < 1 or args.layers < 1 or args.threads < 1:
        p.error("--repeats, --layers and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec or "{}")

    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    load_start = os.getloadavg()
    env = worker_env(args)
    cases = build_cases(args)
    if args.repeats < 3:
        print(
            f"note: --repeats {args.repeats} < 3; medians over rounds are less robust",
            file=sys.stderr,
        )
    if not args.native_blas and any(k in os.environ for k in NATIVE_BLAS_UNSET):
        print(
            "note: "
            + ", ".join(f"{k}={os.environ[k]}" for k in NATIVE_BLAS_UNSET if k in os.environ)
            + " is set and passed to the workers (--native-blas removes it)",
            file=sys.stderr,
        )
    busy = system_busy_fraction(0.5)
    if busy is not None and busy > args.contention:
        print(
            f"warning: other processes use {busy:.0%} of the CPUs; timings may be noisy "
            f"(each worker waits up to {args.max_wait:g} s for idle and is retried up to "
            f"{args.retries} times if disturbed)",
            file=sys.stderr,
        )

    check_ok = None
    if args.check or args.check_only:
        check_ok = run_check(cases, args, env)
        if args.check_only:
            return 0 if check_ok else 1

    spec = timing_spec(args)
    gemm: list[WorkerResult] = []
    runs: dict[tuple[int, str], list[WorkerResult]] = {}
    t_begin = time.perf_counter()
    for rnd in range(args.repeats):
        g = measure("gemm", spec, args, env)
        gemm.append(g)
        gtxt = f"{g.data['gflops']:.1f} GFLOP/s" if g.ok else "error"
        print(f"[round {rnd + 1}/{args.repeats}] GEMM {gtxt}", file=sys.stderr)
        for i, case in enumerate(cases):
            parts = []
            for impl in IMPLS:
                res = measure(impl, {**spec, "case": asdict(case)}, args, env)
                runs.setdefault((i, impl), []).append(res)
                parts.append(
                    f"{impl} "
                    + (
                        f"{res.data['median_ms']:.3f} ms (other load "
                        f"{res.data.get('foreign_load') or 0:.2f}, try {res.data['attempt']})"
                        if res.ok
                        else "error"
                    )
                )
            print(
                f"[round {rnd + 1}/{args.repeats}] {case.label}: " + ", ".join(parts),
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - t_begin

    gemm_ok = [r.data["gflops"] for r in gemm if r.ok]
    gemm_gflops = max(gemm_ok) if gemm_ok else None
    rows = summarize(cases, runs, gemm_gflops, args)
    header = header_info(args, gemm, runs, gemm_gflops, load_start, os.getloadavg(), started)
    print()
    if args.markdown:
        print("### rnnlab vs torch.nn speed (CPU, float32)\n")
    else:
        print("rnnlab vs torch.nn speed (CPU, float32)")
    print(format_header(header, args.markdown))
    print()
    print(format_table(rows, args.markdown))
    print()
    notes = [
        "ratio = rnnlab ms / torch ms (> 1: rnnlab slower); ms = median over rounds of "
        "per-process medians; GFLOP/s counts GEMM FLOPs only (fwd+bwd = 3x fwd).",
        "GEMM floor = the time rnnlab's matrix products alone take at NumPy's BLAS (the same "
        "shapes and thread count, timed in the rnnlab worker; cells, copies and Python free); "
        "floor / torch > 1: this row cannot reach torch's time with these products at this "
        "BLAS's speed.",
    ]
    if any(r[s]["rounds_ok"] < args.repeats for r in rows for s in IMPLS):
        notes.append("* = some rounds failed; median over the successful ones.")
    n_cont = sum(r[s]["contended_rounds"] for r in rows for s in IMPLS)
    if n_cont:
        notes.append(
            f"{n_cont} measurement(s) stayed disturbed (other processes used "
            f"> {args.contention:.0%} of the CPUs) after retries; they are left out of "
            "the medians when clean rounds exist (! = no clean round)."
        )
    if check_ok is not None:
        notes.append(f"--check: {'passed' if check_ok else 'FAILED'} (tol {args.check_tol:g}).")
    notes.append(f"benchmark wall time {elapsed:.0f} s.")
    print("\n".join(("- " if args.markdown else "") + n for n in notes))

    if args.json:
        payload = {
            "header": header,
            "args": {k: v for k, v in vars(args).items() if k not in ("worker", "spec")},
            "check_ok": check_ok,
            "results": rows,
            "raw": {f"{i}:{impl}": [asdict(r) for r in rs] for (i, impl), rs in runs.items()},
            "gemm": [asdict(r) for r in gemm],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        print(f"raw results written to {args.json}", file=sys.stderr)
    failed = any(r["ratio"] is None for r in rows) or check_ok is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
