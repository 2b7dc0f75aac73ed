"""Speech features: MFCCs or log-mel energies, with deltas, as small pure functions.

The pipeline (``features``), each step a function below:

    x (T,) -> pre_emphasis -> frames (N, L) * window -> power_spectrum (N, nfft//2+1)
      -> @ mel_filterbank.T (N, mels) -> log_mel -> [mfcc: dct_ii (N, ceps) -> lift]
      -> [deltas, delta-deltas appended] -> [normalize] -> (N, dim) float32

It computes what python_speech_features 0.6 (psf) computes with ``winfunc=np.hamming``,
``appendEnergy=False`` and the same nfft, filters, band edges, pre-emphasis and lifter: the
frames, the filterbank bins and the deltas follow psf's conventions, and the tests check it.
Our defaults (``FeatureConfig``), stated because libraries differ: 8000 Hz, 25 ms frames every
10 ms, nfft the next power of two >= the frame (256 at 8 kHz; psf's default is 512), 26 HTK mel
filters over 0..rate/2 Hz, pre-emphasis 0.97, a symmetric Hamming window (``np.hamming``, as psf
with ``winfunc=np.hamming``; torch's default window is periodic), 13 cepstra with c0 kept as the
0th cepstral coefficient (psf's default replaces it with the log frame energy; we do not), lifter
22, deltas and delta-deltas over +-2 frames, and per-utterance mean and variance normalisation.

Decisions:
- Short audio: psf zero-pads a signal shorter than one frame into one frame; ``features`` refuses
  it ("0.010 s of audio (80 samples) is shorter than one 0.025 s frame (200 samples)"), since a
  frame that is mostly padding describes nothing. ``frames`` itself keeps psf's convention.
- Silence: filterbank energies are floored at the float64 epsilon before the log (psf replaces
  exact zeros with it), and a dimension that does not vary normalises to 0, so digital silence
  gives finite features (all zeros when normalised).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.fft

from rnnlab.data.text import DataError
from rnnlab.validate import check_non_negative_int, check_number, check_positive_int

KINDS = ("mfcc", "logmel")
WINDOWS = {"hamming": np.hamming, "hann": np.hanning, "rectangular": np.ones}
EPS = np.finfo(np.float64).eps  # the floor of an energy before its log (psf's)


def _samples(seconds: float, rate: int) -> int:
    """Seconds as a whole number of samples, rounding halves up (psf's ``round_half_up``)."""
    return int(math.floor(seconds * rate + 0.5))


@dataclass
class FeatureConfig:
    """How ``features`` turns audio into frames of features (defaults in the module docstring).

    ``rate`` Hz; ``frame``, ``hop`` in seconds; ``nfft`` None: the next power of two >= the frame
    in samples; ``mels`` filters from ``low`` to ``high`` Hz (None: rate/2); ``ceps`` cepstra kept
    (mfcc only); ``lifter`` L (0: none); ``preemph`` a (0: none); ``window`` one of WINDOWS;
    ``kind`` "mfcc" or "logmel"; ``deltas`` 0, 1 or 2 (append deltas, then delta-deltas) over
    +-``delta_width`` frames; ``normalize``: per-utterance mean 0, variance 1 per dimension.
    ``asdict(cfg)`` and ``FeatureConfig.from_dict`` round-trip it.
    """

    rate: int = 8000
    frame: float = 0.025
    hop: float = 0.010
    nfft: int | None = None
    mels: int = 26
    low: float = 0.0
    high: float | None = None
    ceps: int = 13
    lifter: int = 22
    preemph: float = 0.97
    window: str = "hamming"
    kind: str = "mfcc"
    deltas: int = 2
    delta_width: int = 2
    normalize: bool = True

    def __post_init__(self) -> None:
        self.rate = check_positive_int("rate", self.rate)
        self.frame = check_number("frame", self.frame, low=1.0 / self.rate)
        self.hop = check_number("hop", self.hop, low=1.0 / self.rate)
        if self.nfft is not None:
            self.nfft = check_positive_int("nfft", self.nfft)
            if self.nfft < self.frame_len:
                raise ValueError(f"nfft: expected at least the frame length {self.frame_len} "
                                 f"samples, got {self.nfft}")
        self.mels = check_positive_int("mels", self.mels)
        self.high = self.rate / 2 if self.high is None else \
            check_number("high", self.high, low=0.0, high=self.rate / 2)
        self.low = check_number("low", self.low, low=0.0, high=self.high, high_open=True)
        self.ceps = check_positive_int("ceps", self.ceps)
        if self.kind == "mfcc" and self.ceps > self.mels:
            raise ValueError(f"ceps: expected at most mels={self.mels}, got {self.ceps}")
        self.lifter = check_non_negative_int("lifter", self.lifter)
        self.preemph = check_number("preemph", self.preemph, low=0.0, high=1.0)
        if self.window not in WINDOWS:
            raise ValueError(f"window: expected one of {', '.join(WINDOWS)}, got {self.window!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        self.deltas = check_non_negative_int("deltas", self.deltas)
        if self.deltas > 2:
            raise ValueError(f"deltas: expected 0, 1 or 2, got {self.deltas!r}")
        self.delta_width = check_positive_int("delta_width", self.delta_width)
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize: expected True or False, got {self.normalize!r}")
        mel_filterbank(self.mels, self.fft_size, self.rate, self.low, self.high)  # checks bins

    @property
    def frame_len(self) -> int:
        return _samples(self.frame, self.rate)

    @property
    def hop_len(self) -> int:
        return _samples(self.hop, self.rate)

    @property
    def fft_size(self) -> int:
        """``nfft``, or the next power of two >= the frame length."""
        return self.nfft if self.nfft is not None else 1 << (self.frame_len - 1).bit_length()

    @property
    def dim(self) -> int:
        """Features per frame: (ceps or mels) * (1 + deltas)."""
        return (self.ceps if self.kind == "mfcc" else self.mels) * (1 + self.deltas)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """The inverse of ``asdict``; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"FeatureConfig: unknown keys {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- steps


def pre_emphasis(x: np.ndarray, a: float) -> np.ndarray:
    """y[0] = x[0], y[n] = x[n] - a x[n-1]: a first-order high-pass that lifts the high
    frequencies speech spectra lose (about +6 dB per octave for a near 1)."""
    return np.concatenate([x[:1], x[1:] - a * x[:-1]])


def frames(x: np.ndarray, frame_len: int, hop: int) -> np.ndarray:
    """x (T,) cut into frames (N, frame_len) starting every ``hop`` samples (a copy).

    psf's ``framesig`` convention: N = 1 if T <= frame_len, else 1 + ceil((T - frame_len) / hop),
    and the end is zero-padded so that every sample lies in a frame (the last frame may be
    partly zeros; a signal shorter than a frame gives one padded frame).
    """
    n = 1 if len(x) <= frame_len else 1 + -(-(len(x) - frame_len) // hop)
    padded = np.concatenate([x, np.zeros((n - 1) * hop + frame_len - len(x))])
    starts = hop * np.arange(n)[:, None]  # (N, 1)
    return padded[starts + np.arange(frame_len)]  # (N, frame_len)


def power_spectrum(frames: np.ndarray, nfft: int) -> np.ndarray:
    """P = |rfft(frame, nfft)|^2 / nfft, (N, L) -> (N, nfft//2+1); frames are zero-padded to
    nfft (nfft < L is an error rather than psf's truncation)."""
    if nfft < frames.shape[-1]:
        raise ValueError(f"nfft: expected at least the frame length {frames.shape[-1]}, "
                         f"got {nfft}")
    return np.abs(scipy.fft.rfft(frames, nfft, axis=-1)) ** 2 / nfft


def mel(f: np.ndarray | float) -> np.ndarray | float:
    """Hz to mel, HTK's formula: m = 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray | float:
    """Mel to Hz, the inverse of ``mel``: f = 700 (10^(m / 2595) - 1)."""
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filterbank(mels: int, nfft: int, rate: int, low: float = 0.0,
                   high: float | None = None) -> np.ndarray:
    """(mels, nfft//2+1) triangular filters, equally spaced in mel from ``low`` to ``high`` Hz
    (None: rate/2).

    psf's ``get_filterbanks`` placement, so the two agree exactly: mels+2 points equally spaced
    in mel, each put on FFT bin b = floor((nfft + 1) f / rate); filter j rises linearly from 0
    at b[j] to 1 at b[j+1] and falls to 0 at b[j+2]: (k - b[j]) / (b[j+1] - b[j]) for
    b[j] <= k < b[j+1], (b[j+2] - k) / (b[j+2] - b[j+1]) for b[j+1] <= k < b[j+2] (unnormalised:
    every filter peaks at 1). Two points on the same bin would leave a filter without its peak
    or empty: that is an error (fewer mels or a larger nfft fixes it).
    """
    high = rate / 2 if high is None else high
    if not 0 <= low < high <= rate / 2:
        raise ValueError(f"mel_filterbank: expected 0 <= low < high <= rate/2 = {rate / 2:g}, "
                         f"got low={low:g}, high={high:g}")
    b = np.floor((nfft + 1) * mel_to_hz(np.linspace(mel(low), mel(high), mels + 2)) / rate)
    if np.any(np.diff(b) == 0):
        raise ValueError(f"mel_filterbank: {mels} filters over {low:g}..{high:g} Hz need more "
                         f"FFT bins than nfft={nfft} gives at {rate} Hz (two filter edges fall "
                         f"on the same bin): use fewer mels or a larger nfft")
    k = np.arange(nfft // 2 + 1)[None, :]  # (1, K)
    left, mid, right = b[:-2, None], b[1:-1, None], b[2:, None]  # (mels, 1) each
    rise = np.where((left <= k) & (k < mid), (k - left) / (mid - left), 0.0)
    fall = np.where((mid <= k) & (k < right), (right - k) / (right - mid), 0.0)
    return rise + fall  # (mels, K)


def log_mel(power: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """log(max(P @ fb.T, eps)): (N, K) power spectra -> (N, mels) log filterbank energies; the
    float64 epsilon floor keeps silence finite (psf puts eps where an energy is exactly 0)."""
    return np.log(np.maximum(power @ fb.T, EPS))


def dct_ii(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` coefficients of the orthonormal DCT-II along the last axis:
    c_k = s_k sum_m x_m cos(pi k (2m + 1) / 2M), s_0 = sqrt(1/M), s_k = sqrt(2/M)."""
    return scipy.fft.dct(x, type=2, norm="ortho", axis=-1)[..., :n]


def lift(c: np.ndarray, L: int) -> np.ndarray:
    """Sinusoidal liftering: c_n * (1 + L/2 sin(pi n / L)); L = 0 leaves c as it is."""
    if L == 0:
        return c
    n = np.arange(c.shape[-1])
    return c * (1.0 + L / 2.0 * np.sin(np.pi * n / L))


def deltas(feat: np.ndarray, width: int) -> np.ndarray:
    """Regression deltas over +-N = ``width`` frames, (N_frames, D) -> (N_frames, D):
    d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2), the first and last frames
    repeated past the edges (psf's ``delta``)."""
    T = len(feat)
    padded = np.pad(feat, ((width, width), (0, 0)), mode="edge")  # (T + 2N, D)
    num = sum(n * (padded[width + n:width + n + T] - padded[width - n:width - n + T])
              for n in range(1, width + 1))
    return num / (2 * sum(n * n for n in range(1, width + 1)))


def normalize(feat: np.ndarray) -> np.ndarray:
    """(feat - mean) / std per dimension over the frames (population std): mean 0, variance 1.
    A dimension that does not vary (std <= 1e-12 |mean|, constant up to rounding) becomes 0."""
    mean = feat.mean(axis=0)
    std = feat.std(axis=0)
    flat = std <= 1e-12 * np.abs(mean)
    return np.where(flat, 0.0, (feat - mean) / np.where(flat, 1.0, std))


# ----------------------------------------------------------------------------- pipeline


def features(x: np.ndarray, cfg: FeatureConfig | None = None) -> np.ndarray:
    """x (T,) audio at ``cfg.rate`` Hz -> (N, cfg.dim) float32 features (the pipeline in the
    module docstring; computed in float64). N follows ``frames``; T shorter than one frame is a
    DataError. For mfcc, c0 is the 0th cepstral coefficient (no log-energy replacement)."""
    cfg = FeatureConfig() if cfg is None else cfg
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype.kind not in "iuf":
        raise ValueError(f"features: expected a 1-D real array of samples, got shape {x.shape} "
                         f"dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("features: expected finite samples, got NaN or infinity")
    if len(x) < cfg.frame_len:
        raise DataError(f"{len(x) / cfg.rate:.3f} s of audio ({len(x)} samples) is shorter than "
                        f"one {cfg.frame:.3f} s frame ({cfg.frame_len} samples at {cfg.rate} Hz)")
    window = WINDOWS[cfg.window](cfg.frame_len)
    f = frames(pre_emphasis(x, cfg.preemph), cfg.frame_len, cfg.hop_len) * window  # (N, L)
    fb = mel_filterbank(cfg.mels, cfg.fft_size, cfg.rate, cfg.low, cfg.high)
    out = log_mel(power_spectrum(f, cfg.fft_size), fb)  # (N, mels)
    if cfg.kind == "mfcc":
        out = lift(dct_ii(out, cfg.ceps), cfg.lifter)  # (N, ceps)
    parts = [out]
    for _ in range(cfg.deltas):
        parts.append(deltas(parts[-1], cfg.delta_width))
    out = np.concatenate(parts, axis=1)  # (N, dim)
    if cfg.normalize:
        out = normalize(out)
    return out.astype(np.float32)
