"""Shared test fixtures.

PyTorch is the oracle. Locally a missing torch skips the parity tests; in CI (CI=true) it is an
error, so the comparisons can never be skipped silently there.
"""

from __future__ import annotations

import os

import numpy as np
import pytest


def _load_torch():
    try:
        import torch
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(
                "PyTorch is required in CI as the test oracle: pip install -e '.[test]'"
            ) from None
        return None
    torch.set_num_threads(1)
    return torch


TORCH = _load_torch()


@pytest.fixture
def torch():
    """The torch module, or a skip when it is absent outside CI."""
    if TORCH is None:
        pytest.skip("PyTorch not installed (pip install -e '.[test]')")
    return TORCH


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
