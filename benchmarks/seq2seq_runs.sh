#!/bin/bash
# The seq2seq runs behind RESULTS.md section 6 (one core each), on the book's data files.
# Usage: bash benchmarks/seq2seq_runs.sh [OUT_DIR]   (default runs/s2s)
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/s2s}
D=../shared/data/dlfs2-seq2seq
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
run() {
  name=$1; shift
  [ -f "$OUT/$name/metrics.jsonl" ] && return
  rm -rf "${OUT:?}/$name"
  .venv/bin/rnnlab train seq2seq "$@" --out "$OUT/$name" --no-progress > "$OUT/$name.log" 2>&1
}
run add-plain --data $D/addition.txt --epochs 25
run add-rev --data $D/addition.txt --reverse --epochs 25
run add-rev-peeky --data $D/addition.txt --reverse --peeky --epochs 25
run add-attn-rev --data $D/addition.txt --attention dot --reverse --epochs 25
run date-attn --data $D/date.txt --attention dot --reverse --hidden 256 --epochs 10
run date-attn-dedup --data $D/date.txt --dedup --attention dot --reverse --hidden 256 --epochs 10
