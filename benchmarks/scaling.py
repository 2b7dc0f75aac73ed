"""Data-parallel scaling: tokens/s of 1 and 2 ranks (one thread each) for the Zaremba language
models on PTB, the allreduce's share of the step, and a model of the scaling to N machines.

Method
------
* Each measurement is one ``mpiexec -n K`` job of this script in ``--worker`` mode (K = 1 is a
  plain process: no MPI at all). Every rank limits its BLAS to one thread (threadpoolctl, checked)
  and trains through the engine's own step (``Trainer.train_step``: forward, backward, the
  allreduce of one flat gradient buffer, clipping, SGD) on its block of the PTB streams, per-rank
  batch 20 as in the paper (weak scaling: 2 ranks take 2 x 20 streams per step).
* Warm-up steps, then ``--steps`` timed steps; per step the wall time (the slowest rank)
  and the time in the reduction (both Allreduce calls and the packing: median over steps and
  ranks), and the bytes the gradient Allreduce sent. tokens/s = K * B * T / step time.
* 1 and 2 ranks alternate for ``--rounds`` rounds; the medians over rounds are reported. Nothing
  else should run on the machine (2 ranks use both cores of a 2-core machine).
* The model: a ring allreduce moves 2 (N-1)/N of the buffer through each machine's link, plus
  2 (N-1) latencies; with the measured compute time per step t_c (this machine's one core per
  rank, or a faster one) the step takes t_c + t_ar (no overlap of communication and backward:
  rnnlab reduces once, after backward), efficiency t_c / (t_c + t_ar).

    .venv/bin/python benchmarks/scaling.py [--presets zaremba-small,zaremba-medium]
                                           [--rounds 3] [--steps 12] [--bandwidth-gbit 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ("zaremba-small", "zaremba-medium")
PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def worker(preset: str, steps: int, warmup: int) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1)
    assert all(p["num_threads"] == 1 for p in threadpool_info()), threadpool_info()

    from rnnlab.data.text import load_corpus
    from rnnlab.models.language_model import LanguageModel, LMConfig
    from rnnlab.tasks.lm.presets import DEFAULT_LM, PRESETS
    from rnnlab.tasks.lm.task import LMTask, TrainConfig
    from rnnlab.training import Trainer, world

    p = {**DEFAULT_LM, **PRESETS[preset]}
    corpus = load_corpus(PTB if PTB.exists() else None, level=p["level"])
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), cell=p["cell"],
                                   embed_size=p["embed"], hidden_size=p["hidden"],
                                   num_layers=p["layers"], dropout=p["dropout"],
                                   init_range=p["init_range"]), seed=0)
    cfg = TrainConfig(batch_size=p["batch_size"], bptt=p["bptt"], optimizer="sgd", lr=p["lr"],
                      clip=p["clip"], loss=p["loss"], save_minutes=0)
    comm = world()
    trainer = Trainer(LMTask(model, corpus, cfg), None, progress=False, comm=comm)
    reduce_times: list[float] = []
    if comm.size > 1:
        trainer._start_parallel()
        inner = comm.reduce_step

        def timed(*args, **kwargs):
            t = time.perf_counter()
            result = inner(*args, **kwargs)
            reduce_times.append(time.perf_counter() - t)
            return result

        comm.reduce_step = timed
    task = trainer.task
    task.epoch_batches(1, 0)
    step_times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        trainer.train_step(task.batch(i))
        step_times.append(time.perf_counter() - t)
    step_times, reduce_times = step_times[warmup:], reduce_times[warmup:]
    result = {"step_s": statistics.median(step_times),
              "reduce_s": statistics.median(reduce_times) if reduce_times else 0.0,
              "buffer_bytes": (comm._buffer.used * comm._buffer.flat.itemsize
                               if comm.size > 1 else 0),
              "params": int(sum(v.size for v in model.parameters().values())),
              "tokens_per_step": comm.size * cfg.batch_size * cfg.bptt}
    if comm.size > 1:
        everyone = comm.allgather_json(result)
        result["reduce_s"] = statistics.median(r["reduce_s"] for r in everyone)
        result["step_s"] = max(r["step_s"] for r in everyone)
    if comm.is_root:
        print("RESULT " + json.dumps(result), flush=True)


def run(preset: str, ranks: int, steps: int, warmup: int) -> dict:
    me = [sys.executable, __file__, "--worker", preset, "--steps", str(steps),
          "--warmup", str(warmup)]
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = me if ranks == 1 else [str(mpiexec), "-n", str(ranks), *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{preset} x {ranks} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def ring_seconds(nbytes: int, machines: int, gbit: float, latency_s: float) -> float:
    """A ring allreduce of ``nbytes`` over ``machines`` links of ``gbit`` Gbit/s."""
    if machines == 1:
        return 0.0
    n = machines
    return 2 * (n - 1) / n * nbytes / (gbit * 1e9 / 8) + 2 * (n - 1) * latency_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", metavar="PRESET", help=argparse.SUPPRESS)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bandwidth-gbit", type=float, default=10.0)
    ap.add_argument("--latency-us", type=float, default=50.0)
    ap.add_argument("--json", metavar="OUT", help="write the measurements here")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup)
        return
    rows = {}
    for preset in args.presets.split(","):
        got: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.rounds):
            for ranks in (1, 2):
                res = run(preset, ranks, args.steps, args.warmup)
                got[ranks].append(res)
                print(f"  round {r + 1} {preset} x {ranks}: step {res['step_s'] * 1e3:.0f} ms, "
                      f"allreduce {res['reduce_s'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("step_s", "reduce_s")}
               for k, v in got.items()}
        one, two = got[1][0], got[2][0]
        rows[preset] = {"one": med[1], "two": med[2], "params": one["params"],
                        "buffer_bytes": two["buffer_bytes"],
                        "tokens_per_step": (one["tokens_per_step"], two["tokens_per_step"])}
    print("| model | params | buffer MB | 1 rank tok/s | 2 ranks tok/s | speed-up | efficiency "
          "| allreduce ms | allreduce share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, r in rows.items():
        t1 = r["tokens_per_step"][0] / r["one"]["step_s"]
        t2 = r["tokens_per_step"][1] / r["two"]["step_s"]
        print(f"| {preset} | {r['params']:,} | {r['buffer_bytes'] / 1e6:.1f} | {t1:,.0f} | "
              f"{t2:,.0f} | {t2 / t1:.2f}x | {t2 / t1 / 2:.0%} | "
              f"{r['two']['reduce_s'] * 1e3:.1f} | "
              f"{r['two']['reduce_s'] / r['two']['step_s']:.1%} |")
    print(f"\nModelled efficiency over N machines, one rank each, {args.bandwidth_gbit:g} "
          f"Gbit/s, {args.latency_us:g} us per message, ring allreduce after backward (no "
          "overlap); compute per step as measured here (1 core) and 8x faster (a many-core "
          "machine):")
    print("| model | compute/step | N=2 | N=4 | N=8 | N=16 | N=32 |")
    print("|---|---|---|---|---|---|---|")
    for preset, r in rows.items():
        base = r["one"]["step_s"]
        for label, tc in (("1 core", base), ("8x faster", base / 8)):
            effs = [tc / (tc + ring_seconds(r["buffer_bytes"], n, args.bandwidth_gbit,
                                            args.latency_us * 1e-6)) for n in (2, 4, 8, 16, 32)]
            print(f"| {preset} | {label}: {tc * 1e3:.0f} ms | "
                  + " | ".join(f"{e:.0%}" for e in effs) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
