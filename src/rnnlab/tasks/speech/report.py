"""Pictures of what a speech model heard: the spectrogram, and below it the posteriors of every
frame (for CTC: the frames where each label was emitted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from rnnlab.data.features import FeatureConfig, features
from rnnlab.plots import pyplot


def plot_transcription(x: np.ndarray, feature_cfg: FeatureConfig, frame_log_probs: np.ndarray,
                       stack: int, names: Sequence[str], text: str, path: str | Path,
                       blank: int | None = None, title: str = "") -> None:
    """x: the samples at the feature rate; frame_log_probs (U, outputs) one row per model step
    (each ``stack`` frames); ``blank`` the CTC blank (None for a classifier)."""
    plt = pyplot()
    spec = features(x, replace(feature_cfg, kind="logmel", deltas=0, normalize=False))
    hop = feature_cfg.hop
    post = np.exp(frame_log_probs).T  # (outputs, U)
    seconds = len(x) / feature_cfg.rate
    step = stack * hop
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 2.5 * seconds + 3), 5.5),
                                   sharex=True, height_ratios=[1.2, 1])
    ax1.imshow(spec.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, len(spec) * hop, 0, spec.shape[1]))
    ax1.set_ylabel("mel band")
    ax1.set_title(title or f"heard: {text!r}")
    rows = [*names, "blank"] if blank is not None else list(names)
    ax2.imshow(post, origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1,
               extent=(0, post.shape[1] * step, -0.5, len(rows) - 0.5), interpolation="nearest")
    ax2.set_yticks(range(len(rows)), rows)
    ax2.set_ylabel("posterior")
    ax2.set_xlabel("time (s)")
    if blank is not None:  # where each label was emitted: a frame whose best class is no blank
        best = frame_log_probs.argmax(axis=1)
        prev = blank
        for u, k in enumerate(best):
            if k != blank and k != prev:
                t = (u + 0.5) * step
                ax1.axvline(t, color="cyan", lw=1)
                ax1.text(t, spec.shape[1] * 0.92, names[k], color="cyan", ha="center",
                         fontsize=11, weight="bold")
            prev = k
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

