"""ForecasterEnsemble: the loss and gradients are the members' own; the combined distribution
is the equal mixture's moment-matched Gaussian (Gaussian heads) or the averaged quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.models.forecaster import (
    Forecaster,
    ForecasterConfig,
    ForecasterEnsemble,
    make_forecaster,
)


def _data(rng, T=6, B=5, F=3, H=2):
    x = rng.standard_normal((T, B, F))
    y = rng.standard_normal((B, H))
    mask = rng.random((B, H)) > 0.2
    return x, y, mask


@pytest.mark.parametrize("output", ["gaussian", "quantile"])
def test_loss_and_gradients_are_the_members_own(output):
    cfg = ForecasterConfig(inputs=3, horizon=2, hidden=4, output=output, ar=2, members=3)
    ens = make_forecaster(cfg, seed=1)
    assert isinstance(ens, ForecasterEnsemble)
    x, y, mask = _data(np.random.default_rng(0))
    ens.zero_grad()
    loss = ens.forward_loss(x, y, mask)
    ens.backward_loss(0.5)
    grads = ens.grads
    total = 0.0
    for k in range(3):
        alone = Forecaster(ForecasterConfig(inputs=3, horizon=2, hidden=4, output=output, ar=2),
                           seed=99)
        alone.load_state_dict({n[3:]: v for n, v in ens.state_dict().items()
                               if n.startswith(f"m{k}.")})
        alone.zero_grad()
        total += alone.forward_loss(x, y, mask)
        alone.backward_loss(0.5)
        for name, g in alone.grads.items():
            np.testing.assert_allclose(grads[f"m{k}.{name}"], g, rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(total, rel=1e-12)
    assert cfg.num_parameters() == sum(p.size for p in ens.parameters().values())


def test_members_start_from_different_weights():
    ens = make_forecaster(ForecasterConfig(inputs=3, horizon=2, hidden=4, members=2), seed=0)
    sd = ens.state_dict()
    assert not np.allclose(sd["m0.head.weight"], sd["m1.head.weight"])


def test_gaussian_mixture_moments():
    cfg = ForecasterConfig(inputs=3, horizon=2, hidden=4, members=2)
    ens = make_forecaster(cfg, seed=3).eval()
    x, _, _ = _data(np.random.default_rng(1))
    d = ens.distribution(x)
    (a, b) = (m.distribution(x) for m in ens.members)
    # the mixture 0.5 N(mu_a, s_a^2) + 0.5 N(mu_b, s_b^2), written out
    mu = 0.5 * (a["forecast"] + b["forecast"])
    var = (0.5 * (a["sigma"] ** 2 + (a["forecast"] - mu) ** 2)
           + 0.5 * (b["sigma"] ** 2 + (b["forecast"] - mu) ** 2))
    np.testing.assert_allclose(d["forecast"], mu, rtol=1e-12)
    np.testing.assert_allclose(d["sigma"], np.sqrt(var), rtol=1e-10)
    np.testing.assert_allclose(d["upper_95"] - d["forecast"], 1.959963984540054 * np.sqrt(var),
                               rtol=1e-10)


def test_quantiles_are_averaged():
    cfg = ForecasterConfig(inputs=3, horizon=2, hidden=4, output="quantile", members=3)
    ens = make_forecaster(cfg, seed=4).eval()
    x, _, _ = _data(np.random.default_rng(2))
    d = ens.distribution(x)
    parts = [m.distribution(x) for m in ens.members]
    for key in ("forecast", "lower_80", "upper_95"):
        np.testing.assert_allclose(d[key], np.mean([p[key] for p in parts], axis=0), rtol=1e-12)


def test_train_eval_reaches_every_member():
    ens = make_forecaster(ForecasterConfig(inputs=3, horizon=1, hidden=4, dropout=0.3,
                                           layers=2, members=2), seed=0)
    ens.eval()
    assert not any(m.training or m.drop.training or m.rnn.training for m in ens.members)
    ens.train()
    assert all(m.training and m.drop.training and m.rnn.training for m in ens.members)


def test_members_must_be_positive():
    with pytest.raises(ValueError, match="members"):
        ForecasterConfig(inputs=3, members=0)
