#!/usr/bin/env bash
# Issue 16's GPU check, in one go on a machine with an NVIDIA GPU, CuPy and torch with cuDNN:
#   1. the GPU tests (tests/nn/test_cuda.py: every layer and the LM step on cuda against NumPy
#      and cuDNN) and the device / kernel-source tests,
#   2. benchmarks/gpu.py: rnnlab on CuPy against torch cuDNN, printed as a table.
# Run from anywhere; it works in the repository root with whatever python is there (PYTHON, else
# .venv/bin/python, else python3), sets PYTHONPATH=src and installs nothing. About 3-4 minutes.
# Exit status: 0 when the tests passed and the benchmark printed its table.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY="$(command -v python3 || command -v python)"; fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
"$PY" - <<'PY'
import importlib
for name in ("numpy", "cupy", "torch", "pytest", "hypothesis", "scipy", "numba"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as err:  # noqa: BLE001
        print(f"{name} missing ({type(err).__name__})")
PY

status=0
echo "== GPU tests"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 150 "$PY" -m pytest -q -p no:cacheprovider -rs tests/nn/test_cuda.py \
        tests/nn/test_cuda_sources.py tests/nn/test_device.py || status=1
else
    echo "pytest missing: tests not run"; status=1
fi

echo "== benchmark (rnnlab on CuPy vs torch cuDNN)"
timeout 180 "$PY" benchmarks/gpu.py --repeats 3 --min-time 0.3 --worker-timeout 50 || status=1
exit $status
