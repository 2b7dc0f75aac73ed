"""Text generation from a language model: greedy, or sampling with temperature, top-k, top-p;
and autocomplete suggestions (the most likely next tokens after a prompt).

    p = softmax(logits / temperature)
    top-k: keep the k most probable tokens;  top-p: keep the smallest set whose mass >= p
    renormalise, draw the next token, feed it back as the next input.
"""

from __future__ import annotations

import numpy as np

from rnnlab.models.language_model import LanguageModel
from rnnlab.nn import no_grad
from rnnlab.nn.backend import Seed, make_rng, to_host
from rnnlab.nn.ops import log_softmax


def next_token_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                            top_p: float = 1.0) -> np.ndarray:
    """Probabilities (float64, summing to 1) after temperature, top-k and top-p filtering."""
    if not 0 < temperature < np.inf:
        raise ValueError(f"temperature: expected a finite positive number, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k: expected 0 (off) or a positive integer, got {top_k}")
    z = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # a tiny temperature sends (z - max) / T to -inf: p = 0
        p = np.exp(log_softmax((z - z.max()) / temperature))  # shifted before dividing
    if 0 < top_k < p.size:  # exactly k, also on ties (the lower id wins among equals)
        keep = np.argsort(-p, kind="stable")[:top_k]
        filtered = np.zeros_like(p)
        filtered[keep] = p[keep]
        p = filtered
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        mass = np.cumsum(p[order]) / p.sum()
        keep = order[: int(np.searchsorted(mass, top_p) + 1)]  # smallest set reaching top_p
        filtered = np.zeros_like(p)
        filtered[keep] = p[keep]
        p = filtered
    return p / p.sum()


def _prime(model: LanguageModel, prompt_ids):
    """Run the prompt through the model in eval mode (the caller restores the mode): the
    logits (T, 1, V) and the state after its last token."""
    if len(prompt_ids) == 0:
        raise ValueError("prompt: expected at least one token, got none")
    model.eval()
    return model(np.asarray(prompt_ids, dtype=np.int64).reshape(-1, 1))  # (T, B=1)


@no_grad()
def generate(model: LanguageModel, prompt_ids: list[int] | np.ndarray, length: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
             seed: Seed = None, banned: list[int] | None = None) -> list[int]:
    """Continue ``prompt_ids`` by ``length`` tokens; returns only the new ids.

    ``banned`` ids are never produced (e.g. ``<unk>`` in a character model, where it stands
    for no real character).
    """
    rng = make_rng(seed)
    was_training = model.training
    logits, state = _prime(model, prompt_ids)
    out: list[int] = []
    for _ in range(length):
        last = to_host(logits[-1, 0])  # sampling happens on the host
        if banned:
            last = last.copy()
            last[banned] = -np.inf
        if greedy:
            token = int(np.argmax(last))
        else:
            p = next_token_distribution(last, temperature, top_k, top_p)
            token = int(rng.choice(p.size, p=p))
        out.append(token)
        logits, state = model(np.array([[token]], dtype=np.int64), state)
    model.train(was_training)
    return out


def suggest(model: LanguageModel, prompt_ids: list[int] | np.ndarray, n: int,
            banned: list[int] | None = None) -> list[tuple[int, float]]:
    """Autocomplete: the ``n`` most likely next tokens after ``prompt_ids`` as (id, probability),
    most likely first; p = softmax(logits) of the prompt's last step (float64). ``banned`` ids
    are left out of the list (their probability is not moved to the others)."""
    if n < 1:
        raise ValueError(f"n: expected a positive integer, got {n}")
    was_training = model.training
    logits, _ = _prime(model, prompt_ids)
    model.train(was_training)
    p = np.exp(log_softmax(to_host(logits[-1, 0]).astype(np.float64)))
    order = [int(i) for i in np.argsort(-p, kind="stable") if not banned or i not in banned]
    return [(i, float(p[i])) for i in order[:n]]
