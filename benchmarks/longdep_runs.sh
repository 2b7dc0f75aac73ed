#!/bin/bash
# The long-time-lag runs behind RESULTS.md section 5, one after another, one core each (the
# table's runs were made two at a time, in queues holding these same commands).
# Usage: bash benchmarks/longdep_runs.sh [OUT_DIR]   (default runs/longdep; a finished run is skipped)
# Then:  .venv/bin/python benchmarks/plot_runs.py longdep OUT_DIR/*.json --out benchmarks/figures
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/longdep}
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1  # one core each: two can run side by side
run() {
  name=$1; shift
  [ -f "$OUT/$name.json" ] && return
  .venv/bin/rnnlab bench longdep "$@" --json "$OUT/$name.json" --csv "$OUT/$name.csv" \
    > "$OUT/$name.log" 2>&1
}
run adding-T50-rnn-s0 --task adding --T 50 --cell rnn --steps 6000
run adding-T100-rnn-s0 --task adding --T 100 --cell rnn --steps 4000
run adding-T200-rnn-s0 --task adding --T 200 --cell rnn --steps 3000
for T in 50 100 200; do
  run adding-T$T-gru-s0 --task adding --T $T --cell gru --steps 6000
done
run adding-T50-lstm-s0 --task adding --T 50 --cell lstm --steps 6000
run adding-T100-lstm-s0 --task adding --T 100 --cell lstm --steps 6000 \
  --save "$OUT/adding-T100-lstm-s0.safetensors"
run adding-T200-lstm-s0 --task adding --T 200 --cell lstm --steps 6000
run adding-T100-rnn-save-s0 --task adding --T 100 --cell rnn --steps 2000 \
  --save "$OUT/adding-T100-rnn-save-s0.safetensors"   # a trained RNN for gradflow
run adding-T50-rnn256-s0 --task adding --T 50 --cell rnn --hidden 256 --steps 6000   # ~LSTM's params
run adding-T100-rnn256-s0 --task adding --T 100 --cell rnn --hidden 256 --steps 4000
for cell in gru lstm; do
  run copy-T50-$cell-s0 --task copy --T 50 --cell $cell --steps 8000
done
run copy-T50-rnn-s0 --task copy --T 50 --cell rnn --steps 4000
run copy-T100-lstm-s0 --task copy --T 100 --cell lstm --steps 4000
run copy-T100-rnn-s0 --task copy --T 100 --cell rnn --steps 2000
run copy-T200-gru-s0 --task copy --T 200 --cell gru --steps 2000
run copy-T200-lstm-s0 --task copy --T 200 --cell lstm --steps 2000
run adding-T400-lstm-s0 --task adding --T 400 --cell lstm --steps 6000
run adding-T400-gru-s0 --task adding --T 400 --cell gru --steps 6000
for cell in lstm rnn; do
  weights="$OUT/adding-T100-$cell-s0.safetensors"
  [ "$cell" = rnn ] && weights="$OUT/adding-T100-rnn-save-s0.safetensors"
  .venv/bin/rnnlab gradflow --weights "$weights" --T 1000 \
    --csv "$OUT/gradflow-$cell-trained.csv" --plot "$OUT/gradflow-$cell-trained.png"
done
