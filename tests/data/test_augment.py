"""Speech perturbations: speed moves tempo and pitch together by the stated factor, the noise
has the drawn SNR, the silence and the masks land where they should, the "off" recipe changes
nothing, and everything is reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.augment import Perturbation, add_noise, mask, perturb, speed

RATE = 8000


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize("up,down", [(10, 9), (10, 11), (20, 19)])
def test_speed_moves_tempo_and_pitch(up, down):
    t = np.arange(RATE) / RATE
    x = np.sin(2 * np.pi * 1000.0 * t)
    y = speed(x, up, down)
    assert len(y) == int(np.ceil(len(x) * up / down))  # down/up times as fast
    assert _peak_hz(y) == pytest.approx(1000.0 * down / up, abs=2.0)
    assert speed(x, 1, 1) is x


def test_noise_has_the_drawn_snr():
    g = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 440.0 * np.arange(4 * RATE) / RATE)
    for snr in (10.0, 30.0):
        noise = add_noise(x, snr, g) - x
        got = 10 * np.log10(np.mean(x ** 2) / np.mean(noise ** 2))
        assert got == pytest.approx(snr, abs=0.2)
    assert add_noise(x, np.inf, g) is x
    silence = np.zeros(100)
    assert np.array_equal(add_noise(silence, 10.0, g), silence)


def test_perturb_shift_and_reproducibility():
    x = np.ones(800)
    how = Perturbation(speeds=((1, 1),), snr=(np.inf, np.inf), shift=0.05)
    y = perturb(x, RATE, np.random.default_rng(1), how)
    nz = np.flatnonzero(y)
    assert len(nz) == 800 and nz[-1] - nz[0] == 799  # the recording, silence around it
    assert 800 <= len(y) <= 800 + 2 * 400
    how = Perturbation()
    a = perturb(x, RATE, np.random.default_rng(3), how)
    b = perturb(x, RATE, np.random.default_rng(3), how)
    assert np.array_equal(a, b)
    assert np.array_equal(perturb(x, RATE, np.random.default_rng(3), Perturbation.off()), x)


def test_masks():
    feats = np.ones((50, 39), np.float32)
    how = Perturbation(time_masks=1, time_width=6, band_masks=1, band_width=3)
    g = np.random.default_rng(0)
    for _ in range(20):
        out = mask(feats, g, how, block=13)
        zero_rows = np.flatnonzero((out == 0).all(axis=1))
        zero_cols = np.flatnonzero((out == 0).all(axis=0))
        assert len(zero_rows) <= 6 and np.all(np.diff(zero_rows) == 1)
        assert len(zero_cols) % 3 == 0 and len(zero_cols) <= 9
        if len(zero_cols):  # the same coefficients in each block of 13: value, delta, delta2
            base = zero_cols[zero_cols < 13]
            assert np.array_equal(zero_cols, np.concatenate([base, base + 13, base + 26]))
    assert np.array_equal(mask(feats, g, Perturbation.off(), 13), feats)
    assert feats.min() == 1.0  # the input is not changed


def test_bad_recipes():
    with pytest.raises(ValueError, match="speeds"):
        Perturbation(speeds=((0, 1),))
    with pytest.raises(ValueError, match="snr"):
        Perturbation(snr=(30.0, 10.0))
    with pytest.raises(ValueError, match="expected numbers >= 0"):
        Perturbation(time_masks=-1)
