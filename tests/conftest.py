"""Shared test fixtures and helpers.

PyTorch is the oracle. Locally a missing torch skips the parity tests; in CI (CI=true) it is an
error, so the comparisons can never be skipped silently there. The same holds for the real
datasets in ../shared/data (``shared_data``) and the optional packages of the ``test`` extra
(``require_module``): skipped locally when absent, a failure in CI.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np
import pytest

try:
    from hypothesis import settings
except ImportError:  # a bare GPU machine (benchmarks/gpu_check.sh): its tests do not need it
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    settings = None

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Real datasets live next to the repository: ../shared/data from its root.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load_torch():
    try:
        import torch
    except ImportError:
        if CI:
            raise RuntimeError(
                "PyTorch is required in CI as the test oracle: pip install -e '.[test]'"
            ) from None
        return None
    torch.set_num_threads(1)
    return torch


TORCH = _load_torch()

# In CI a property test runs the same examples every time: a failure there reproduces, and a
# slow shared runner cannot fail a test on timing alone.
if settings is not None:
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if CI:
    settings.load_profile("ci")


def _unavailable(message: str) -> NoReturn:
    """Skip locally; in CI what a test needs is always there, so its absence is a failure."""
    if CI:
        pytest.fail(f"{message} (CI must have it: this test may not be skipped there)",
                    pytrace=False)
    pytest.skip(message)


def shared_data(relpath: str) -> Path:
    """The path of ``relpath`` under ../shared/data, or a skip (locally) / failure (in CI) when
    it does not exist."""
    path = SHARED_DATA / relpath
    if not path.exists():
        _unavailable(f"dataset not available: {path}")
    return path


def require_module(name: str) -> ModuleType:
    """``import name``, or a skip (locally) / failure (in CI) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        reason = str(err)
    _unavailable(f"{name} not installed ({reason}): pip install -e '.[test]'")


def ort_session(model):
    """An ONNX Runtime session on one thread (CPU provider) for a model given as bytes or a
    path; a skip locally (a failure in CI) without onnxruntime."""
    ort = require_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    if not isinstance(model, bytes):
        model = os.fspath(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def require_cuda() -> ModuleType:
    """CuPy with a usable GPU, or a skip. The one skip CI allows: it has no GPU (issue 16), so
    the GPU tests run where one is (benchmarks/gpu_check.sh) and skip everywhere else."""
    from rnnlab.nn.backend import array_module

    try:
        return array_module("cuda")
    except RuntimeError as err:
        pytest.skip(f"no GPU here: {err}")


def require_tool(name: str) -> str:
    """The path of the executable ``name`` (a compiler), or a skip, also in CI: the CUDA
    sources are compile-checked where nvcc (or a host C++ compiler) is installed."""
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: the CUDA kernel sources are checked where it is")
    return path


@pytest.fixture
def torch():
    """The torch module, or a skip when it is absent outside CI."""
    if TORCH is None:
        pytest.skip("PyTorch not installed (pip install -e '.[test]')")
    return TORCH


# "compiled-python-loop" is the compiled set with its time loop in Python (NumPy's matmul per
# step, the compiled cell arithmetic), which it otherwise takes only for large steps.
KERNEL_SETS = ("numpy", "compiled", "compiled-python-loop")


@pytest.fixture(params=KERNEL_SETS)
def kernel_set(request, monkeypatch):
    """Run the test once on each kernel set of rnnlab.nn.kernels (the layers' time loops), the
    compiled set with each of its two time loops. The compiled set needs numba: skipped locally
    without it, a failure in CI."""
    from rnnlab.nn import kernels

    name = request.param.split("-")[0]
    if name == "compiled":
        require_module("numba")
        loop_min = 0 if request.param == "compiled-python-loop" else 1 << 62
        monkeypatch.setattr(kernels, "PYTHON_LOOP_MIN", loop_min)
    with kernels.use_kernels(name):
        yield name


@pytest.fixture
def numpy_kernels():
    """Run the test on the NumPy kernel set: for results pinned bit for bit (a weight hash
    recorded with that set), which another kernel set reproduces only to rounding."""
    from rnnlab.nn import kernels

    with kernels.use_kernels("numpy"):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def lm_run(tmp_path):
    """A run directory holding a tiny language model's checkpoint: the checkpoint of another
    task, for the commands that must refuse it."""
    from rnnlab.cli.main import main

    out, text = tmp_path / "lm-run", tmp_path / "lm.txt"
    text.write_text("abc def ghi\n" * 50, encoding="utf-8")
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--max-steps", "1",
                 "--hidden", "4", "--embed", "4", "--layers", "1", "--batch-size", "2",
                 "--bptt", "4", "--samples", "0", "--no-progress"]) == 0
    return out
