"""Training-time perturbations of speech: new versions of each recording every epoch, so a model
learns the words rather than the recordings.

On the samples (before features):

    speed       y = resample_poly(x, up, down): down/up times the speed, the pitch moved with
                it (as Kaldi's speed perturbation, Ko et al. 2015, factors 0.9-1.1)
    noise       y = x + n,  n ~ N(0, (rms(x) 10^(-snr/20))^2), snr drawn in dB
    shift       silence of a random length before and after

On the features (after normalisation, where 0 is each dimension's mean), SpecAugment's masks
(Park et al. 2019):

    time mask   frames t0 .. t0 + w - 1 set to 0, w ~ U{0, ..., width}
    band mask   dimensions f0 .. f0 + w - 1 set to 0 (of each block of ``block`` dimensions, so
                the deltas of a masked coefficient are masked too)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

SPEEDS = ((10, 9), (20, 19), (1, 1), (20, 21), (10, 11))  # (up, down): speeds 0.9 ... 1.1


@dataclass
class Perturbation:
    """The recipe; ``off()`` gives one that changes nothing."""

    speeds: tuple = SPEEDS
    snr: tuple = (15.0, 40.0)  # dB; noise drawn in this range
    shift: float = 0.05  # seconds of silence at most, before and after
    time_masks: int = 2
    time_width: int = 6  # frames
    band_masks: int = 1
    band_width: int = 3  # dimensions (of each block)

    def __post_init__(self) -> None:
        self.speeds = tuple((int(u), int(d)) for u, d in self.speeds)
        if not self.speeds or any(u < 1 or d < 1 for u, d in self.speeds):
            raise ValueError(f"speeds: expected (up, down) pairs of positive integers, got "
                             f"{self.speeds!r}")
        if len(self.snr) != 2 or self.snr[0] > self.snr[1]:
            raise ValueError(f"snr: expected a range (low, high) in dB, got {self.snr!r}")
        if self.shift < 0 or min(self.time_masks, self.time_width, self.band_masks,
                                 self.band_width) < 0:
            raise ValueError("shift and the mask counts and widths: expected numbers >= 0")

    @classmethod
    def off(cls) -> Perturbation:
        return cls(speeds=((1, 1),), snr=(np.inf, np.inf), shift=0.0, time_masks=0,
                   band_masks=0)


def speed(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``x`` played down/up times as fast (len(x) * up / down samples at the same rate)."""
    if up == down:
        return x
    return resample_poly(x, up, down).astype(x.dtype, copy=False)


def add_noise(x: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise ``snr`` dB under the RMS of ``x`` (silence gets none)."""
    if not np.isfinite(snr):
        return x
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return x + (rng.standard_normal(len(x)) * rms * 10.0 ** (-snr / 20.0)).astype(x.dtype)


def perturb(x: np.ndarray, rate: int, rng: np.random.Generator, how: Perturbation
            ) -> np.ndarray:
    """One new version of the samples ``x``: speed, silence around, noise."""
    up, down = how.speeds[int(rng.integers(len(how.speeds)))]
    y = speed(x, up, down)
    if how.shift > 0:
        before, after = (int(rng.uniform(0, how.shift) * rate) for _ in range(2))
        y = np.concatenate([np.zeros(before, y.dtype), y, np.zeros(after, y.dtype)])
    low, high = how.snr
    return add_noise(y, low if low == high else float(rng.uniform(low, high)), rng)


def mask(feats: np.ndarray, rng: np.random.Generator, how: Perturbation, block: int
         ) -> np.ndarray:
    """SpecAugment's time and band masks on (N, D) normalised features (a copy)."""
    out = feats.copy()
    N, D = out.shape
    for _ in range(how.time_masks):
        w = int(rng.integers(0, how.time_width + 1))
        if 0 < w < N:
            t0 = int(rng.integers(0, N - w + 1))
            out[t0:t0 + w] = 0.0
    for _ in range(how.band_masks):
        w = int(rng.integers(0, how.band_width + 1))
        if 0 < w < block:
            f0 = int(rng.integers(0, block - w + 1))
            for start in range(0, D, block):  # the coefficient and its deltas
                out[:, start + f0:start + f0 + w] = 0.0
    return out
