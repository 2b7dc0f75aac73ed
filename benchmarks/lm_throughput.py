"""Language-model training throughput: rnnlab vs the same model in torch.nn (tokens/s).

One training step = embedding -> 2-layer LSTM -> linear decoder -> softmax cross-entropy
(summed over the window, averaged over the batch) -> backward -> clip the global gradient norm
at 5 -> SGD. Both sides use float32 and 2 threads, each runs in ITS OWN PROCESS (OpenBLAS and
torch's OpenMP thread pools spin-wait and slow each other 10-100x in one process), the two
alternate (rnnlab, torch, rnnlab, torch, ...) and the medians over rounds are reported.
Data: the PTB training split when ../shared/data/ptb is present, else random ids.
Each side runs the step as its own library is meant to be used: rnnlab through its training
engine's step (``Trainer.train_step`` with the language model's task: zero_grad(lazy=True), the
clipping factor applied inside the SGD update, the embedding's norm and update over the rows
the window saw, the NaN checks), torch with zero_grad() (set to None),
clip_grad_norm_ and SGD (a dense embedding gradient, nn.Embedding's default). The arithmetic is
the same; only the memory traffic differs.

    .venv/bin/python benchmarks/lm_throughput.py [--presets zaremba-small,zaremba-medium]
                                                [--rounds 3] [--windows 30]

The last line is the ratio rnnlab/torch in tokens/s (above 1: rnnlab is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from worker import run_worker  # benchmarks/worker.py, beside this script

PRESETS = {  # (hidden = embed, bptt, batch, dropout) as in Zaremba et al. 2014
    "zaremba-small": (200, 20, 20, 0.0),
    "zaremba-medium": (650, 35, 20, 0.5),
}
VOCAB = 10000
PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb" / "ptb.train.txt"


def _ids(n: int):
    import numpy as np

    if PTB.exists():
        words = PTB.read_text(encoding="utf-8").replace("\n", " <eos> ").split()
        index: dict[str, int] = {}
        ids = np.array([index.setdefault(w, len(index)) for w in words[: n + 1]], np.int64)
        return np.minimum(ids, VOCAB - 1), "ptb"
    return np.random.default_rng(0).integers(0, VOCAB, n + 1), "random"


def _tokens_per_s(step, windows: int, tokens_per_window: int, warmup: int = 3) -> float:
    """Run ``warmup`` untimed windows, then time ``windows`` more."""
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + windows):
        step(i)
    return windows * tokens_per_window / (time.perf_counter() - start)


def worker_rnnlab(preset: str, windows: int, threads: int) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(threads)
    assert "torch" not in sys.modules
    from rnnlab.data.text import UNK, Corpus, Vocabulary
    from rnnlab.models import LanguageModel, LMConfig
    from rnnlab.tasks.lm.task import LMTask, TrainConfig
    from rnnlab.training import Trainer

    H, T, B, p = PRESETS[preset]
    ids, source = _ids((windows + 4) * T * B)
    vocab = Vocabulary([UNK, *(f"w{i}" for i in range(1, VOCAB))])
    corpus = Corpus(ids, ids[:2], ids[:2], vocab, "word", source, source)
    model = LanguageModel(LMConfig(VOCAB, "lstm", H, H, 2, dropout=p, init_range=0.1), seed=0)
    cfg = TrainConfig(batch_size=B, bptt=T, optimizer="sgd", lr=1.0, clip=5.0, loss="sum_time")
    task = LMTask(model, corpus, cfg)  # the engine's own step, as `rnnlab train lm` runs it
    trainer = Trainer(task, None, log=lambda _: None, progress=False)
    task.epoch_batches(1, 0)

    def step(i: int):
        trainer.train_step(task.batch(i))

    tokens_per_s = _tokens_per_s(step, windows, T * B)
    blas = threadpool_info()[0]
    return {"tokens_per_s": tokens_per_s, "source": source,
            "blas": f"{blas['internal_api']} {blas['version']} x{blas['num_threads']}"}


def worker_torch(preset: str, windows: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    assert "rnnlab" not in sys.modules
    H, T, B, p = PRESETS[preset]
    ids, source = _ids((windows + 4) * T * B)
    data = torch.from_numpy(ids[: (len(ids) - 1) // B * B].reshape(B, -1).T.copy())

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, H)
            self.drop = torch.nn.Dropout(p)
            self.rnn = torch.nn.LSTM(H, H, 2, dropout=p)
            self.dec = torch.nn.Linear(H, VOCAB)
            for w in self.parameters():
                torch.nn.init.uniform_(w, -0.1, 0.1)

        def forward(self, x, state):
            h, state = self.rnn(self.drop(self.emb(x)), state)
            return self.dec(self.drop(h)), state

    model = LM()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state = (torch.zeros(2, B, H), torch.zeros(2, B, H))

    def step(i: int):
        nonlocal state
        x, y = data[i * T:(i + 1) * T], data[i * T + 1:(i + 1) * T + 1]
        opt.zero_grad()
        logits, state = model(x, tuple(s.detach() for s in state))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1),
                                                 reduction="sum") / B
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return {"tokens_per_s": _tokens_per_s(step, windows, T * B), "source": source,
            "blas": f"torch {torch.__version__} x{torch.get_num_threads()}"}


def run(side: str, preset: str, windows: int, threads: int) -> dict:
    return run_worker(__file__, side, "--presets", preset, "--windows", str(windows),
                      "--threads", str(threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="zaremba-small,zaremba-medium")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=0, help="timed windows (0: per preset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["rnnlab", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    presets = args.presets.split(",")
    if args.worker:
        fn = worker_rnnlab if args.worker == "rnnlab" else worker_torch
        print(json.dumps(fn(presets[0], args.windows, args.threads)))
        return
    print(f"# LM training throughput, {time.strftime('%Y-%m-%d')}, {args.threads} threads, "
          f"{args.rounds} alternating rounds, each side in its own process")
    print("| preset | rnnlab tokens/s | torch tokens/s | ratio rnnlab/torch |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for preset in presets:
        windows = args.windows or (40 if preset == "zaremba-small" else 8)
        rn, tc = [], []
        for _ in range(args.rounds):
            r = run("rnnlab", preset, windows, args.threads)
            t = run("torch", preset, windows, args.threads)
            rn.append(r["tokens_per_s"])
            tc.append(t["tokens_per_s"])
        a, b = statistics.median(rn), statistics.median(tc)
        ratios[preset] = a / b
        print(f"| {preset} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |  (data: {r['source']}; "
              f"{r['blas']}; {t['blas']})")
    print("ratio rnnlab/torch tokens/s: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
