"""Reproduce Zaremba et al. (2014) 'small' on Penn Treebank with the rnnlab CLI and report.

    .venv/bin/python benchmarks/ptb_reproduction.py [--data ../shared/data/ptb] [--out runs/ptb]

Runs ``rnnlab train lm --preset zaremba-small`` (2x200 LSTM, 20 steps, batch 20, U(-0.1, 0.1),
SGD lr 1 halved each epoch after epoch 4, clip 5, 13 epochs, no dropout; loss summed over the
unrolled steps and averaged over the batch), unless --out already holds a finished run, then
prints per-epoch validation perplexity, the final valid/test perplexity and the wall time next
to the published numbers (120.7 valid, 114.5 test). Takes tens of minutes: CI never runs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "ptb"))
    args = parser.parse_args()
    out = Path(args.out)
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "rnnlab.cli", "train", "lm", "--preset", "zaremba-small",
               "--data", args.data, "--out", str(out), "--samples", "0"]
        subprocess.run(cmd, check=True)
        print(f"wall time {time.perf_counter() - start:.0f} s")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    print("| epoch | lr | train loss | tokens/s | valid ppl |")
    print("|---:|---:|---:|---:|---:|")
    for r in records:
        if "valid_ppl" in r and not r.get("final"):
            print(f"| {r['epoch']} | {r['lr']:g} | {r['loss']:.3f} | {r['tokens_per_s']:,.0f} | "
                  f"{r['valid_ppl']:.2f} |")
    final = records[-1]
    print(f"final: valid ppl {final['valid_ppl']:.2f} (published 120.7), "
          f"test ppl {final['test_ppl']:.2f} (published 114.5)")


if __name__ == "__main__":
    main()
