"""Audio helpers shared by the speech tests (imported as ``from audio_helpers import ...``:
pytest puts this directory on sys.path)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.io import wavfile

RATE = 8000
TONES = {"0": 300.0, "1": 700.0, "2": 1500.0}


def write_corpus(root, speakers=("ann", "bob"), takes=8, seed=0):
    """A tiny FSDD-like directory: each label a tone, each speaker a level, 0.15-0.3 s."""
    g = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for (label, f), (s, speaker), take in itertools.product(TONES.items(),
                                                           enumerate(speakers), range(takes)):
        n = int(g.integers(int(0.15 * RATE), int(0.3 * RATE)))
        t = np.arange(n) / RATE
        x = (0.3 + 0.2 * s) * np.sin(2 * np.pi * f * t) * np.hanning(n)
        x += 0.01 * g.standard_normal(n)
        wavfile.write(root / f"{label}_{speaker}_{take}.wav", RATE,
                      (x * 32767).astype(np.int16))
    return root
