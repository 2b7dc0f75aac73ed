"""Run a benchmark script again as a worker process and read its result.

Each side of a comparison (rnnlab, torch) runs in its own process: OpenBLAS's and torch's thread
pools spin against each other in one process. A worker prints its result as JSON on its last
line of stdout. (``speed.py`` keeps its own runner: it goes on past a failed or timed-out case
and reports it in the table, where these scripts stop.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_worker(script: str, side: str, *args: str, timeout: float = 1800.0) -> dict:
    """``python SCRIPT --worker SIDE ARGS...`` -> the JSON object it printed last; a worker
    still running after ``timeout`` seconds is killed and reported."""
    cmd = [sys.executable, script, "--worker", side, *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(),
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{side} worker timed out after {timeout:.0f} s: {cmd}") from None
    if out.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
