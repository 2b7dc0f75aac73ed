"""GPU benchmark: rnnlab on CuPy (device="cuda") against torch's cuDNN on the same GPU, float32.

Cases (issue 16): LSTM forward+backward at (T, B, H) = (35, 128, 1500), (100, 256, 1024),
(100, 64, 512), (35, 20, 650), (35, 20, 200), (200, 1, 128), a GRU at (35, 20, 650) (input size
D = H, one layer), and LM training tokens/s for zaremba-small, zaremba-medium and medium at batch
128 (vocabulary 10,000 as PTB's, random ids, SGD with clipping at 5, state carried).

Method
------
* rnnlab and torch run in separate worker processes (this script with ``--worker``): the rnnlab
  worker never imports torch and the torch worker never imports rnnlab. Each worker runs every
  case; the parent alternates them (rnnlab, torch, rnnlab, ...) for ``--repeats`` rounds and
  reports, per side and case, the median over rounds of each worker's median.
* TF32 is off in torch (``allow_tf32 = False`` for matmul and cuDNN): both sides compute in
  float32. cuDNN is on (torch's default for nn.LSTM / nn.GRU on a GPU).
* One iteration: rnnlab ``zero_grad(lazy=True)``, ``out, _ = m(x)``, ``m.backward(dout)``; torch
  ``zero_grad(set_to_none=True)``, ``out, _ = m(x)``, ``(out * dout).sum().backward()``; both
  followed by a device synchronisation inside the timed region. An LM step is forward, loss,
  backward, gradient norm, clipping and the SGD update.
* Timing: warm-up for ``--warmup`` iterations, then iterations timed one by one with
  ``time.perf_counter`` for at least ``--min-time`` seconds and ``--min-iters`` iterations.

Usage (from the repository root; benchmarks/gpu_check.sh runs it after the GPU tests):
    PYTHONPATH=src python benchmarks/gpu.py                 # the table, 3 rounds
    PYTHONPATH=src python benchmarks/gpu.py --repeats 1 --min-time 0.2   # quicker
    PYTHONPATH=src python benchmarks/gpu.py --json out.json

``ratio`` is rnnlab ms / torch ms (above 1: rnnlab slower); the LM table gives rnnlab's tokens/s
over torch's (below 1: rnnlab slower). Targets (issue 16): ratio <= 1.2 where B >= 64, <= 2.0 at
B = 20; LM training >= 0.8x torch's tokens/s for zaremba-medium. ``--smoke`` runs tiny shapes on
the CPU (both sides), to check this script where there is no GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MARKER = "@@GPU_RESULT@@ "
LAYER_CASES = [("lstm", 35, 128, 1500), ("lstm", 100, 256, 1024), ("lstm", 100, 64, 512),
               ("lstm", 35, 20, 650), ("lstm", 35, 20, 200), ("lstm", 200, 1, 128),
               ("gru", 35, 20, 650)]
# name, hidden (= embedding), layers, dropout, batch, bptt (zaremba's presets)
LM_CASES = [("zaremba-small", 200, 2, 0.0, 20, 20), ("zaremba-medium", 650, 2, 0.5, 20, 35),
            ("medium, batch 128", 650, 2, 0.5, 128, 35)]
VOCAB = 10_000
SMOKE_LAYER_CASES = [("lstm", 5, 4, 8), ("gru", 5, 4, 8)]
SMOKE_LM_CASES = [("tiny", 8, 2, 0.5, 4, 5)]


def _cases(args):
    """(layer cases, LM cases, vocabulary, device)."""
    if args.smoke:
        return SMOKE_LAYER_CASES, SMOKE_LM_CASES, 50, "cpu"
    return LAYER_CASES, LM_CASES, VOCAB, "cuda"


def _median_time(step, sync, warmup: int, min_time: float, min_iters: int) -> float:
    """Median seconds of ``step`` (synchronised) after ``warmup`` untimed iterations."""
    for _ in range(warmup):
        step()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------- rnnlab
def _rnnlab_cases(args) -> dict:
    import numpy as np

    import rnnlab
    from rnnlab import optim
    from rnnlab.models.language_model import LanguageModel, LMConfig
    from rnnlab.nn.backend import array_module

    assert "torch" not in sys.modules, "the rnnlab worker must not import torch"
    layer_cases, lm_cases, vocab, device = _cases(args)
    xp = array_module(device)
    sync = xp.cuda.Device().synchronize if device == "cuda" else (lambda: None)
    g = np.random.default_rng(0)
    out = {}
    for kind, T, B, H in layer_cases:
        cls = rnnlab.LSTM if kind == "lstm" else rnnlab.GRU
        m = cls(H, H, dtype=np.float32, seed=0, device=device)
        x = xp.asarray(g.standard_normal((T, B, H), dtype=np.float32))
        dout = xp.asarray(g.standard_normal((T, B, H), dtype=np.float32))

        def step(m=m, x=x, dout=dout):
            m.zero_grad(lazy=True)
            m(x)
            m.backward(dout)

        out[f"{kind} {T}x{B}x{H}"] = _median_time(step, sync, args.warmup, args.min_time,
                                                  args.min_iters)
    for name, H, L, p, B, T in lm_cases:
        cfg = LMConfig(vocab_size=vocab, embed_size=H, hidden_size=H, num_layers=L, dropout=p,
                       init_range=0.05)
        model = LanguageModel(cfg, seed=0, device=device)
        opt = optim.SGD(model.parameters(), lr=1.0)
        ids = g.integers(0, vocab, size=(T + 1, B))
        carry = [model.initial_state(B)]

        def step(model=model, opt=opt, ids=ids, carry=carry, B=B):
            model.zero_grad(lazy=True)
            _, _, carry[0] = model.forward_loss(ids[:-1], ids[1:], carry[0], scale=1.0 / B)
            model.backward_loss()
            grads, rows = model.grads_and_rows()
            optim.clipped_step(opt, grads, 5.0, rows)

        out[f"lm {name}"] = T * B / _median_time(step, sync, args.warmup, args.min_time,
                                                 args.min_iters)
    return out


# -------------------------------------------------------------------------------------- torch
def _torch_cases(args) -> dict:
    import torch

    assert "rnnlab" not in sys.modules, "the torch worker must not import rnnlab"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    layer_cases, lm_cases, vocab, device = _cases(args)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    out = {}
    for kind, T, B, H in layer_cases:
        cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
        m = cls(H, H, device=dev)
        x = torch.randn(T, B, H, device=dev, requires_grad=True)
        dout = torch.randn(T, B, H, device=dev)

        def step(m=m, x=x, dout=dout):
            m.zero_grad(set_to_none=True)
            x.grad = None
            y, _ = m(x)
            (y * dout).sum().backward()

        out[f"{kind} {T}x{B}x{H}"] = _median_time(step, sync, args.warmup, args.min_time,
                                                  args.min_iters)
    for name, H, L, p, B, T in lm_cases:
        emb = torch.nn.Embedding(vocab, H, device=dev)
        rnn = torch.nn.LSTM(H, H, num_layers=L, dropout=p if L > 1 else 0.0, device=dev)
        dec = torch.nn.Linear(H, vocab, device=dev)
        drop = torch.nn.Dropout(p)
        params = [*emb.parameters(), *rnn.parameters(), *dec.parameters()]
        opt = torch.optim.SGD(params, lr=1.0)
        ids = torch.randint(0, vocab, (T + 1, B), device=dev)
        zeros = torch.zeros(L, B, H, device=dev)
        carry = [(zeros, zeros.clone())]

        def step(emb=emb, rnn=rnn, dec=dec, drop=drop, params=params, opt=opt, ids=ids,
                 carry=carry, B=B, V=vocab):
            opt.zero_grad(set_to_none=True)
            h, state = rnn(drop(emb(ids[:-1])), carry[0])
            logits = dec(drop(h))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                                     ids[1:].reshape(-1), reduction="sum") / B
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            carry[0] = tuple(s.detach() for s in state)

        out[f"lm {name}"] = T * B / _median_time(step, sync, args.warmup, args.min_time,
                                                 args.min_iters)
    return out


# ------------------------------------------------------------------------------------- parent
def _worker(lib: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--warmup",
           str(args.warmup), "--min-time", str(args.min_time), "--min-iters", str(args.min_iters),
           *(["--smoke"] if args.smoke else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(f"{lib} worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}\n")
        return {}
    return json.loads(lines[-1][len(MARKER):])


def _versions() -> str:
    probe = ("import cupy, torch; print(cupy.__version__, torch.__version__, "
             "torch.backends.cudnn.version(), torch.cuda.get_device_name(0))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode:
        return "not available (" + (done.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return done.stdout.strip()


def _fmt(v) -> str:
    return "error" if v is None else f"{v:,.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["rnnlab", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of both workers (default 3)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations per case")
    ap.add_argument("--min-time", type=float, default=0.5, dest="min_time",
                    help="timed seconds per case at least (default 0.5)")
    ap.add_argument("--min-iters", type=int, default=5, dest="min_iters")
    ap.add_argument("--worker-timeout", type=float, default=240, dest="worker_timeout")
    ap.add_argument("--json", metavar="FILE", help="also write the medians here")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on the CPU: checks the script without a GPU")
    args = ap.parse_args()
    if args.worker:
        result = (_rnnlab_cases if args.worker == "rnnlab" else _torch_cases)(args)
        print(MARKER + json.dumps(result), flush=True)
        return 0
    rounds: dict[str, list[dict]] = {"rnnlab": [], "torch": []}
    failed: set[str] = set()
    for r in range(args.repeats):
        for lib in ("rnnlab", "torch"):
            if lib in failed:  # a worker that failed once is not run again
                continue
            t0 = time.perf_counter()
            rounds[lib].append(_worker(lib, args))
            if not rounds[lib][-1]:
                failed.add(lib)
            print(f"round {r + 1}/{args.repeats} {lib}: {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)

    def median(lib, key):
        values = [rd[key] for rd in rounds[lib] if key in rd]
        return statistics.median(values) if values else None

    print(f"cupy, torch, cuDNN, GPU: {_versions()}; float32, TF32 off, medians of "
          f"{args.repeats} rounds")
    print()
    print("| case (T,B,H) fwd+bwd | torch cuDNN ms | rnnlab ms | ratio |")
    print("|---|---|---|---|")
    table = {}
    layer_cases, lm_cases, _, _ = _cases(args)
    for kind, T, B, H in layer_cases:
        key = f"{kind} {T}x{B}x{H}"
        t, m = median("torch", key), median("rnnlab", key)
        ratio = m / t if t and m else None
        t_ms = t * 1e3 if t else None
        m_ms = m * 1e3 if m else None
        table[key] = {"torch_ms": t_ms, "rnnlab_ms": m_ms, "ratio": ratio}
        print(f"| {kind.upper()} {T},{B},{H} | {_fmt(t_ms)} | {_fmt(m_ms)} | {_fmt(ratio)} |")
    print()
    print("| LM training | torch tokens/s | rnnlab tokens/s | rnnlab / torch |")
    print("|---|---|---|---|")
    for name, *_ in lm_cases:
        key = f"lm {name}"
        t, m = median("torch", key), median("rnnlab", key)
        share = m / t if t and m else None
        table[key] = {"torch_tokens_s": t, "rnnlab_tokens_s": m, "rnnlab_over_torch": share}
        print(f"| {name} | {_fmt(t)} | {_fmt(m)} | {_fmt(share)} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"versions": _versions(), "rounds": rounds, "table": table}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
