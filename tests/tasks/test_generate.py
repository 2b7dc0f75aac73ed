"""Sampling filters and generation from a language model."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.models import LanguageModel, LMConfig
from rnnlab.tasks.lm.generate import generate, next_token_distribution, suggest


def test_temperature_sharpens_and_flattens():
    logits = np.array([2.0, 1.0, 0.0])
    base = next_token_distribution(logits)
    np.testing.assert_allclose(base, np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)
    cold = next_token_distribution(logits, temperature=0.5)
    hot = next_token_distribution(logits, temperature=2.0)
    assert cold[0] > base[0] > hot[0]
    np.testing.assert_allclose(cold, np.exp(2 * logits) / np.exp(2 * logits).sum(), rtol=1e-12)


def test_top_k_keeps_the_k_most_likely():
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    p = next_token_distribution(logits, top_k=2)
    np.testing.assert_allclose(p, [0, 0.4 / 0.7, 0, 0.3 / 0.7], rtol=1e-12)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    p = next_token_distribution(logits, top_p=0.65)  # 0.4 + 0.3 = 0.7 >= 0.65
    np.testing.assert_allclose(p, [0, 0.4 / 0.7, 0, 0.3 / 0.7], rtol=1e-12)
    p = next_token_distribution(logits, top_p=0.4)  # the top token alone reaches 0.4
    np.testing.assert_allclose(p, [0, 1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"temperature": 0}, {"temperature": float("nan")},
                                    {"temperature": float("inf")}, {"top_p": 0},
                                    {"top_p": 1.5}, {"top_p": float("nan")}, {"top_k": -1}])
def test_bad_sampling_options(kwargs):
    with pytest.raises(ValueError, match="expected"):
        next_token_distribution(np.zeros(3), **kwargs)


def _model():
    return LanguageModel(LMConfig(vocab_size=12, embed_size=8, hidden_size=8, num_layers=1),
                         seed=3)


def test_greedy_generation_follows_the_argmax_step_by_step():
    model = _model()
    out = generate(model, [1, 2, 3], 6, greedy=True)
    ids = [1, 2, 3]
    for token in out:  # recompute each step from the whole prefix
        logits, _ = model(np.array(ids, dtype=np.int64)[:, None])
        assert token == int(np.argmax(logits[-1, 0]))
        ids.append(token)


def test_sampling_is_seeded_and_in_range():
    model = _model()
    a = generate(model, [0], 50, seed=7)
    b = generate(model, [0], 50, seed=7)
    c = generate(model, [0], 50, seed=8)
    assert a == b and a != c
    assert all(0 <= t < 12 for t in a)


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="prompt"):
        generate(_model(), [], 5)


def test_banned_ids_are_never_generated():
    model = _model()
    free = generate(model, [0], 300, temperature=3.0, seed=1)  # hot: every id is likely
    assert 5 in free  # so the ban below is not passing vacuously
    banned = generate(model, [0], 300, temperature=3.0, seed=1, banned=[5])
    assert 5 not in banned
    logits, _ = model(np.array([[0]], dtype=np.int64))
    best = int(np.argmax(logits[-1, 0]))
    assert generate(model, [0], 1, greedy=True)[0] == best
    assert generate(model, [0], 1, greedy=True, banned=[best])[0] != best


def test_a_tiny_temperature_is_the_argmax_not_nan():
    """(z - max) / T before exp: with T = 1e-310, z / T alone overflows to inf and inf - inf
    made every probability NaN."""
    p = next_token_distribution(np.array([1.0, 3.0, 2.0, 3.0 - 1e-9]), temperature=1e-310)
    assert np.all(np.isfinite(p))
    assert p.tolist() == [0.0, 1.0, 0.0, 0.0]
    q = next_token_distribution(np.array([0.5, -0.5]), temperature=1e300)  # nearly uniform
    np.testing.assert_allclose(q, [0.5, 0.5], atol=1e-12)


def test_top_k_keeps_exactly_k_on_ties():
    p = next_token_distribution(np.log(np.array([0.1, 0.3, 0.3, 0.3])), top_k=2)
    assert np.count_nonzero(p) == 2
    np.testing.assert_allclose(p, [0, 0.5, 0.5, 0], atol=1e-12)


def test_suggest_lists_the_most_likely_next_tokens_with_softmax_probabilities():
    model = _model()
    prompt = [3, 1, 4, 1, 5]
    z = model(np.array(prompt).reshape(-1, 1))[0][-1, 0].astype(np.float64)
    softmax = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # by hand, from the logits
    ranked = np.argsort(-softmax)
    got = suggest(model, prompt, 4)
    assert [i for i, _ in got] == ranked[:4].tolist()
    np.testing.assert_allclose([p for _, p in got], softmax[ranked[:4]], rtol=1e-12)
    banned = int(ranked[0])
    assert [i for i, _ in suggest(model, prompt, 3, banned=[banned])] == ranked[1:4].tolist()
    with pytest.raises(ValueError, match="positive"):
        suggest(model, prompt, 0)
