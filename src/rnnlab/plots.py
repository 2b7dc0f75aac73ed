"""matplotlib figures (the optional ``plots`` extra): attention heatmaps, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLOTS_HINT = "plotting needs matplotlib: pip install rnnlab[plots]"


class PlotsUnavailable(ImportError):
    """matplotlib is not installed (the command line reports it as a one-line user error)."""


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or :class:`PlotsUnavailable` that says
    what to do. Commands that plot call it before their long work, not after it."""
    try:
        import matplotlib
    except ImportError as err:
        raise PlotsUnavailable(PLOTS_HINT) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attention(weights: np.ndarray, source: list[str], output: list[str],
                   path: str | Path, title: str = "") -> None:
    """Heatmap of attention weights (len(output), len(source)): row t says where output step t
    looked. ``output`` labels the rows (the emitted tokens, <eos> included)."""
    weights = np.asarray(weights)
    if weights.shape != (len(output), len(source)):
        raise ValueError(f"weights: expected shape {(len(output), len(source))} (output steps, "
                         f"source steps), got {weights.shape}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.32 * len(source), 1.0 + 0.32 * len(output)))
    im = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="equal")
    ax.set_xticks(range(len(source)), [repr(s)[1:-1] for s in source], fontsize=8)
    ax.set_yticks(range(len(output)), [repr(s)[1:-1] for s in output], fontsize=8)
    ax.set_xlabel("source (as the encoder read it)")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, names: list[str], path: str | Path, title: str = "",
                   gold: str = "gold", predicted: str = "predicted", rotate: bool = False
                   ) -> None:
    """A confusion matrix (gold rows, predicted columns) with each row normalised to 1 and the
    counts written in."""
    confusion = np.asarray(confusion)
    if confusion.shape != (len(names), len(names)):
        raise ValueError(f"confusion: expected shape {(len(names), len(names))}, got "
                         f"{confusion.shape}")
    plt = pyplot()
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 2, 0.45 * len(names) + 1.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90 if rotate else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(predicted)
    ax.set_ylabel(gold)
    for i, j in zip(*np.nonzero(confusion), strict=True):
        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=6,
                color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title or f"confusion (rows: {gold}, normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
