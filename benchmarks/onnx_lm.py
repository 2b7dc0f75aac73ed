"""Language-model inference: rnnlab vs the exported model in ONNX Runtime vs torch.nn.

Two workloads on an embedding -> 2-layer LSTM -> linear decoder model (vocabulary 10000, float32):
scoring windows (T x B tokens per call, the state carried between calls) and generation (one
token per call, batch 1, the state fed back: the latency a deployment sees). rnnlab runs its
forward; ONNX Runtime runs the graph of ``rnnlab export`` (``rnnlab.tasks.lm.export.lm_graph``)
on the CPU provider; torch runs the same architecture in torch.nn under ``inference_mode``.
Each side runs in its own process with the same thread count, the sides alternate, and the
medians over rounds are reported (tokens/s, higher is faster).

    .venv/bin/python benchmarks/onnx_lm.py [--hidden 200,650] [--rounds 3] [--calls 30]
                                           [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from worker import run_worker  # benchmarks/worker.py, beside this script

VOCAB, LAYERS, T, B = 10000, 2, 35, 20
SIDES = ("rnnlab", "onnxruntime", "torch")


def _rate(call, calls: int, tokens: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return calls * tokens / (time.perf_counter() - start)


def _ids(shape):
    import numpy as np

    return np.random.default_rng(0).integers(0, VOCAB, shape).astype(np.int64)


def _rnnlab_model(hidden: int):
    from rnnlab.models.language_model import LanguageModel, LMConfig

    model = LanguageModel(LMConfig(VOCAB, "lstm", hidden, hidden, LAYERS), seed=0)
    model.eval()
    return model


def worker_rnnlab(hidden: int, calls: int, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    model = _rnnlab_model(hidden)
    window, token = _ids((T, B)), _ids((1, 1))
    state = {"window": None, "token": None}

    from rnnlab.nn import no_grad

    @no_grad()  # inference, as onnxruntime and torch (no_grad) run it
    def score():
        _, state["window"] = model(window, state["window"])

    @no_grad()
    def generate():
        _, state["token"] = model(token, state["token"])

    return {"window": _rate(score, calls, T * B), "generate": _rate(generate, 10 * calls, 1)}


def worker_onnxruntime(hidden: int, calls: int, threads: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from rnnlab.tasks.lm.export import lm_graph

    data = lm_graph(_rnnlab_model(hidden), 17).to_bytes(producer_version="bench")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.onnx"
        path.write_bytes(data)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    window, token = _ids((T, B)), _ids((1, 1))
    zeros = {n: np.zeros((LAYERS, b, hidden), np.float32) for n, b in (("w", B), ("t", 1))}
    state = {"window": (zeros["w"], zeros["w"]), "token": (zeros["t"], zeros["t"])}

    def run(ids, key):
        h, c = state[key]
        _, h, c = session.run(None, {"ids": ids, "h0": h, "c0": c})
        state[key] = (h, c)

    return {"window": _rate(lambda: run(window, "window"), calls, T * B),
            "generate": _rate(lambda: run(token, "token"), 10 * calls, 1),
            "version": ort.__version__}


def worker_torch(hidden: int, calls: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    assert "rnnlab" not in sys.modules
    emb, rnn = torch.nn.Embedding(VOCAB, hidden), torch.nn.LSTM(hidden, hidden, LAYERS)
    dec = torch.nn.Linear(hidden, VOCAB)
    window, token = torch.from_numpy(_ids((T, B))), torch.from_numpy(_ids((1, 1)))
    state = {"window": None, "token": None}

    def run(ids, key):
        with torch.inference_mode():
            h, state[key] = rnn(emb(ids), state[key])
            dec(h)

    return {"window": _rate(lambda: run(window, "window"), calls, T * B),
            "generate": _rate(lambda: run(token, "token"), 10 * calls, 1),
            "version": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="200,650")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30, help="timed windows per round "
                        "(generation times 10x as many single tokens)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(h) for h in args.hidden.split(",")]
    if args.worker:
        fn = {"rnnlab": worker_rnnlab, "onnxruntime": worker_onnxruntime,
              "torch": worker_torch}[args.worker]
        print(json.dumps(fn(sizes[0], args.calls, args.threads)))
        return
    print(f"# LM inference, {time.strftime('%Y-%m-%d')}, {args.threads} threads, "
          f"{args.rounds} alternating rounds, each side in its own process; tokens/s")
    print("| hidden | workload | rnnlab | ONNX Runtime | torch |")
    print("|---:|---|---:|---:|---:|")
    for hidden in sizes:
        results: dict[str, list[dict]] = {s: [] for s in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                results[side].append(run_worker(__file__, side, "--hidden", str(hidden),
                                                "--calls", str(args.calls),
                                                "--threads", str(args.threads)))
        for workload, what in (("window", f"window {T}x{B}"), ("generate", "1 token, B=1")):
            cells = [statistics.median(r[workload] for r in results[s]) for s in SIDES]
            print(f"| {hidden} | {what} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")
    print(f"(onnxruntime {results['onnxruntime'][0]['version']}, "
          f"torch {results['torch'][0]['version']})")


if __name__ == "__main__":
    main()
