"""Run a benchmark script again as a worker process and read its result.

Each side of a comparison (rnnlab, torch) runs in its own process: OpenBLAS's and torch's thread
pools spin against each other in one process. A worker prints its result as JSON on its last
line of stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_worker(script: str, side: str, *args: str) -> dict:
    """``python SCRIPT --worker SIDE ARGS...`` -> the JSON object it printed last."""
    cmd = [sys.executable, script, "--worker", side, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
