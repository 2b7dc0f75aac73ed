"""Batches of sequences of similar length: little padding, few wasted recurrent steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_batches(lengths: Sequence[int], batch_size: int,
                   rng: np.random.Generator | None = None) -> list[list[int]]:
    """Sequence indices in batches of similar length. With ``rng``: equal lengths in random
    order and the batches shuffled (one training epoch); without, in length order."""
    lengths = np.asarray(lengths)
    tie = rng.random(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = np.lexsort((tie, lengths))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
