"""Seq2seq training time per epoch: rnnlab vs the same model in torch.nn (seconds per epoch).

Task: addition pairs (``addition_pairs(50000)``, ``book_split`` -> 45,000 training pairs, 352
batches of 128 per epoch), embed 16, hidden 128, one LSTM layer, Adam 1e-3, clip 5, float32. A
step is ``Seq2SeqTrainer.train_step`` on pre-encoded batches: encoder over the padded source ->
decoder with teacher forcing from the encoder's final state -> optional attention / peeky ->
readout -> cross-entropy summed over real targets / their count -> backward -> clip -> Adam. The
torch side is the same model in torch.nn (LSTMs over ``pack_padded_sequence(enforce_sorted=
False)``, masked attention in plain torch ops). Configs: ``plain``, ``reversed+peeky``,
``attention`` (dot, reversed), ``attention-additive`` (additive, reversed).

The parent encodes the first batches of one shuffled epoch (seed 0) into a temporary .npz that
both sides read (same batches, same order). Each side runs in ITS OWN PROCESS with the same
thread count (OpenBLAS and torch's OpenMP pools spin-wait and slow each other in one process),
the two alternate over rounds; a worker runs 3 warm-up steps, then times ``--steps`` steps and
reports the median; s/epoch = median step x 352, medians over rounds. An untimed check process
first loads rnnlab's initial weights into the torch model and compares loss and gradients on
batch 0; the parameter counts of the two sides are asserted equal.

    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 .venv/bin/python benchmarks/seq2seq_speed.py \
        [--configs plain,reversed+peeky,attention,attention-additive] [--rounds 3] \
        [--steps 60] [--threads 2]

The last line is the ratio torch/rnnlab in time per epoch (above 1: rnnlab is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from importlib.metadata import version

from worker import run_worker  # benchmarks/worker.py, beside this script

CONFIGS = {  # name: (attention score, peeky, reverse_source)
    "plain": ("none", False, False),
    "reversed+peeky": ("none", True, True),
    "attention": ("dot", False, True),
    "attention-additive": ("additive", False, True),
}
E, H, BATCH, WARMUP, PAD = 16, 128, 128, 3, 0
STEPS_PER_EPOCH = -(-45000 // BATCH)  # 352


def make_batches(path: str, n: int) -> None:
    """The first ``n`` batches of one shuffled epoch (cycled if n > 352), encoded -> .npz."""
    import numpy as np

    from rnnlab.data import pairs as P
    from rnnlab.tasks.seq2seq.task import encode_batch

    train, _ = P.book_split(P.addition_pairs(50000, seed=0))
    assert len(train) == 45000
    src_vocab, tgt_vocab = P.build_vocabs(train)
    assert src_vocab.stoi[P.PAD] == tgt_vocab.stoi[P.PAD] == PAD
    batches = list(P.minibatches(train, BATCH, np.random.default_rng(0)))
    arrays = {"vocab": np.array([len(src_vocab), len(tgt_vocab)])}
    for i in range(n):
        batch = batches[i % len(batches)]
        for rev in (0, 1):  # encoded as the trainer encodes them
            src, src_len, tin, tout, tlen = encode_batch(batch, src_vocab, tgt_vocab, bool(rev))
            arrays[f"src{rev}_{i}"] = src
        arrays.update({f"srclen_{i}": src_len, f"tin_{i}": tin, f"tout_{i}": tout,
                       f"tlen_{i}": tlen})
    np.savez(path, **arrays)


def load_batches(path: str, config: str, torch=None) -> tuple[list[tuple], int, int]:
    import numpy as np

    rev = int(CONFIGS[config][2])
    with np.load(path) as f:
        n = sum(k.startswith("tin_") for k in f.files)
        keys = (f"src{rev}", "srclen", "tin", "tout", "tlen")
        batches = [tuple(f[f"{k}_{i}"] for k in keys) for i in range(n)]
        vs, vt = (int(v) for v in f["vocab"])
    if torch is not None:
        batches = [tuple(torch.from_numpy(a) for a in b) for b in batches]
    return batches, vs, vt


def _median_step(step, batches: list[tuple], steps: int) -> float:
    for i in range(WARMUP):
        step(batches[i])
    times = []
    for i in range(WARMUP, WARMUP + steps):
        start = time.perf_counter()
        step(batches[i])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rnnlab_model(config: str, vs: int, vt: int):
    from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig

    score, peeky, rev = CONFIGS[config]
    return Seq2Seq(Seq2SeqConfig(vs, vt, "lstm", E, H, attention=score, peeky=peeky,
                                 reverse_source=rev), seed=0)


def torch_model(config: str, vs: int, vt: int):
    """The same model in torch.nn, with rnnlab's parameter names (state dicts interchange)."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    score, peeky, _ = CONFIGS[config]

    class TorchSeq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.src_embedding = nn.Embedding(vs, E)
            self.encoder = nn.LSTM(E, H)
            self.tgt_embedding = nn.Embedding(vt, E)
            self.decoder = nn.LSTM(E + H * peeky, H)
            if score != "none":
                self.attention = nn.Module()
                if score == "additive":
                    k = H ** -0.5
                    for name, shape in (("weight_query", (H, H)), ("weight_key", (H, H)),
                                        ("v", (H,))):
                        self.attention.register_parameter(
                            name, nn.Parameter(torch.empty(shape).uniform_(-k, k)))
            self.readout = nn.Linear(H * (1 + (score != "none") + peeky), vt)

        def _rnn(self, rnn, x, lengths, state=None):
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, state = rnn(packed, state)
            return pad_packed_sequence(out, total_length=x.shape[0])[0], state

        def forward(self, src, src_len, tgt_in, tgt_out, tgt_len):
            m, state = self._rnn(self.encoder, self.src_embedding(src), src_len)
            p = state[0][-1]  # bridge: the identity for one unidirectional layer
            x = self.tgt_embedding(tgt_in)
            T, B = tgt_in.shape
            if peeky:
                x = torch.cat([x, p.expand(T, B, H)], -1)
            h, _ = self._rnn(self.decoder, x, tgt_len, state)
            parts = [h]
            if score != "none":
                if score == "dot":
                    s = torch.einsum("tbh,jbh->tbj", h, m)
                else:
                    a = self.attention
                    pre = torch.tanh((h @ a.weight_query.T)[:, None] + (m @ a.weight_key.T)[None])
                    s = torch.einsum("tjba,a->tbj", pre, a.v)
                pad = torch.arange(m.shape[0])[None, :] >= src_len[:, None]  # (B, Ts)
                weights = torch.softmax(s.masked_fill(pad[None], float("-inf")), dim=-1)
                parts.append(torch.einsum("tbj,jbh->tbh", weights, m))
            if peeky:
                parts.append(p.expand(T, B, H))
            logits = self.readout(torch.cat(parts, -1) if len(parts) > 1 else h)
            total = nn.functional.cross_entropy(logits.reshape(-1, vt), tgt_out.reshape(-1),
                                                reduction="sum", ignore_index=PAD)
            return total / tgt_len.sum()

    torch.manual_seed(0)
    return TorchSeq2Seq()


def worker_rnnlab(config: str, path: str, steps: int, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    assert "torch" not in sys.modules
    from rnnlab import optim

    batches, vs, vt = load_batches(path, config)
    model = rnnlab_model(config, vs, vt)
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step(b):  # Seq2SeqTrainer.train_step on pre-encoded batches
        src, src_len, tgt_in, tgt_out, tgt_len = b
        model.zero_grad(lazy=True)  # as the trainers do (torch: set_to_none)
        model.forward_loss(src, src_len, tgt_in, tgt_out, tgt_len, scale=1.0 / int(tgt_len.sum()))
        model.backward_loss()
        grads, rows = model.grads_and_rows()
        optim.clipped_step(opt, grads, 5.0, rows)

    assert "torch" not in sys.modules
    return {"step_s": _median_step(step, batches, steps),
            "params": sum(p.size for p in model.parameters().values())}


def worker_torch(config: str, path: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    assert "rnnlab" not in sys.modules
    batches, vs, vt = load_batches(path, config, torch)
    model = torch_model(config, vs, vt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(b):
        opt.zero_grad()
        model(*b).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    assert "rnnlab" not in sys.modules and torch.get_num_threads() == threads
    return {"step_s": _median_step(step, batches, steps),
            "params": sum(p.numel() for p in model.parameters())}


def worker_check(config: str, path: str, steps: int, threads: int) -> dict:
    """Not timed: rnnlab's initial weights in the torch model, loss and gradients on batch 0."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # both libraries in one process: one thread each, no spin-waiting
    torch.set_num_threads(1)
    batches, vs, vt = load_batches(path, config)
    ours, theirs = rnnlab_model(config, vs, vt), torch_model(config, vs, vt)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    count = int(batches[0][4].sum())
    total, _ = ours.forward_loss(*batches[0], scale=1.0 / count)
    ours.backward_loss()
    loss = theirs(*(torch.from_numpy(a) for a in batches[0]))
    loss.backward()
    grads = dict(theirs.named_parameters())
    worst = max(float(np.abs(g - grads[k].grad.numpy()).max() / (np.abs(g).max() + 1e-12))
                for k, g in ours.grads.items())
    return {"loss_diff": abs(total / count - loss.item()), "grad_rel_diff": worst}


def run(side: str, config: str, path: str, steps: int, threads: int) -> dict:
    return run_worker(__file__, side, "--configs", config, "--data", path, "--steps", str(steps),
                      "--threads", str(threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per worker")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["rnnlab", "torch", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configs = args.configs.split(",")
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"--configs: expected names from {list(CONFIGS)}, got {c!r}")
    if args.worker:
        fn = {"rnnlab": worker_rnnlab, "torch": worker_torch, "check": worker_check}[args.worker]
        print(json.dumps(fn(configs[0], args.data, args.steps, args.threads)))
        return
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = next((f"{i['internal_api']} {i['version']}" for i in threadpool_info()
                 if i["user_api"] == "blas"), "blas ?")
    print(f"# seq2seq addition training time per epoch ({STEPS_PER_EPOCH} steps of {BATCH}), "
          f"{time.strftime('%Y-%m-%d')}; numpy {np.__version__}, {blas}, torch {version('torch')};"
          f" {args.threads} threads; median of {args.steps} steps x {args.rounds} alternating "
          f"rounds, each side in its own process")
    print("| config | params | rnnlab s/epoch | torch s/epoch | ratio torch/rnnlab |")
    print("|---|---:|---:|---:|---:|")
    ratios, checks = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batches.npz")
        make_batches(path, WARMUP + args.steps)
        for config in configs:
            chk = run("check", config, path, args.steps, args.threads)
            checks.append(f"{config}: loss diff {chk['loss_diff']:.1e}, "
                          f"max relative grad diff {chk['grad_rel_diff']:.1e}")
            rn, tc = [], []
            for _ in range(args.rounds):
                r = run("rnnlab", config, path, args.steps, args.threads)
                t = run("torch", config, path, args.steps, args.threads)
                assert r["params"] == t["params"], (config, r["params"], t["params"])
                rn.append(r["step_s"] * STEPS_PER_EPOCH)
                tc.append(t["step_s"] * STEPS_PER_EPOCH)
            a, b = statistics.median(rn), statistics.median(tc)
            ratios[config] = b / a
            print(f"| {config} | {r['params']:,} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    print("check (rnnlab weights in torch, batch 0): " + "; ".join(checks))
    print("ratio torch/rnnlab time per epoch: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
