"""Speech features against python_speech_features 0.6 (psf), the independent oracle: every step
(frames, power spectrum, filterbank, log filterbank energies, MFCCs, deltas) on a real Free
Spoken Digit Dataset file and on random signals; then the properties of each small function and
the decisions (silence, audio shorter than a frame, normalisation).

Tolerances reached: the float64 steps (frames, power spectra, log filterbank energies, MFCCs)
are bit-identical to psf's with NumPy 2.4 and SciPy 1.17 (both FFTs are pocketfft); they are
asserted to 1e-12 relative, so another FFT build may differ by rounding. The float32 output of
``features`` is psf's float64 value rounded to float32 (at most 6e-8 relative; asserted 1e-7).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import scipy.fft
from conftest import require_module, shared_data

from rnnlab.data.audio import read_wav
from rnnlab.data.features import (
    FeatureConfig,
    dct_ii,
    deltas,
    features,
    frames,
    lift,
    log_mel,
    mel,
    mel_filterbank,
    mel_to_hz,
    normalize,
    power_spectrum,
    pre_emphasis,
)
from rnnlab.data.text import DataError

RTOL = 1e-12  # float64 steps vs psf


@pytest.fixture
def psf():
    return require_module("python_speech_features")


def close(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL) -> None:
    """Equal to ``rtol`` relative to the largest magnitude of ``ref`` (values near 0 in a
    spectrum or a cepstrum carry the rounding of the large ones)."""
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def psf_args(cfg: FeatureConfig) -> dict:
    """psf's keyword arguments for our config (c0 kept: appendEnergy=False)."""
    return dict(samplerate=cfg.rate, winlen=cfg.frame, winstep=cfg.hop, nfilt=cfg.mels,
                nfft=cfg.fft_size, lowfreq=cfg.low, highfreq=cfg.high, preemph=cfg.preemph)


def steps(x: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our float64 intermediates: windowed frames, power spectra, log filterbank energies."""
    f = frames(pre_emphasis(x, cfg.preemph), cfg.frame_len, cfg.hop_len) * np.hamming(
        cfg.frame_len)
    p = power_spectrum(f, cfg.fft_size)
    return f, p, log_mel(p, mel_filterbank(cfg.mels, cfg.fft_size, cfg.rate, cfg.low, cfg.high))


def fsdd() -> np.ndarray:
    return read_wav(shared_data("fsdd/recordings/0_george_0.wav"))[0]


CONFIGS = {
    "default": FeatureConfig(),
    "16k-40-mels": FeatureConfig(rate=16000, mels=40, ceps=20, lifter=0, nfft=512),
    "band-no-preemph": FeatureConfig(low=100.0, high=3000.0, preemph=0.0, frame=0.032,
                                     hop=0.0125, nfft=512, delta_width=3),
}


def signals(rng, cfg: FeatureConfig) -> list[np.ndarray]:
    """Random signals whose lengths cover the frame arithmetic: one frame exactly, one sample
    more, a whole number of hops, and longer."""
    L, H = cfg.frame_len, cfg.hop_len
    return [rng.uniform(-1, 1, n) for n in (L, L + 1, L + 7 * H, L + 7 * H + 1, 3001)]


# ----------------------------------------------------------------------------- vs psf


@pytest.mark.parametrize("name", list(CONFIGS))
def test_steps_match_psf_on_random_signals(psf, rng, name):
    cfg = CONFIGS[name]
    fb = mel_filterbank(cfg.mels, cfg.fft_size, cfg.rate, cfg.low, cfg.high)
    np.testing.assert_array_equal(fb, psf.get_filterbanks(cfg.mels, cfg.fft_size, cfg.rate,
                                                          cfg.low, cfg.high))
    for x in signals(rng, cfg):
        f, p, lm = steps(x, cfg)
        ref_f = psf.sigproc.framesig(psf.sigproc.preemphasis(x, cfg.preemph),
                                     cfg.frame * cfg.rate, cfg.hop * cfg.rate, np.hamming)
        np.testing.assert_array_equal(f, ref_f)
        close(p, psf.sigproc.powspec(ref_f, cfg.fft_size))
        close(lm, np.log(psf.fbank(x, **psf_args(cfg), winfunc=np.hamming)[0]))
        ref = psf.mfcc(x, **psf_args(cfg), numcep=cfg.ceps, ceplifter=cfg.lifter,
                       appendEnergy=False, winfunc=np.hamming)
        close(lift(dct_ii(lm, cfg.ceps), cfg.lifter), ref)
        d = psf.delta(ref, cfg.delta_width)
        full = np.hstack([ref, d, psf.delta(d, cfg.delta_width)])
        ours = features(x, FeatureConfig(**{**asdict(cfg), "normalize": False}))
        assert ours.dtype == np.float32 and ours.shape == (len(ref), cfg.dim)
        close(ours, full, rtol=1e-7)


def test_mfcc_with_deltas_matches_psf_on_a_real_file(psf):
    x = fsdd()
    cfg = FeatureConfig(normalize=False)
    ref = psf.mfcc(x, **psf_args(cfg), appendEnergy=False, winfunc=np.hamming)
    d = psf.delta(ref, 2)
    expected = np.hstack([ref, d, psf.delta(d, 2)])
    ours = features(x, cfg)
    assert ours.shape == (1 + int(np.ceil((len(x) - 200) / 80)), 39)
    close(ours, expected, rtol=1e-7)
    # normalised: the same features standardised per dimension over the utterance
    close(features(x, FeatureConfig()), normalize(expected), rtol=1e-6)


def test_logmel_matches_psf_logfbank_and_fbank_on_a_real_file(psf):
    x = fsdd()
    cfg = FeatureConfig(kind="logmel", deltas=0, normalize=False)
    # psf's logfbank takes no window (it frames with a rectangular one); fbank takes one
    rect = FeatureConfig(**{**asdict(cfg), "window": "rectangular"})
    close(features(x, rect), psf.logfbank(x, **psf_args(cfg)), rtol=1e-7)
    ref = np.log(psf.fbank(x, **psf_args(cfg), winfunc=np.hamming)[0])
    close(steps(x, cfg)[2], ref)
    close(features(x, cfg), ref, rtol=1e-7)


def test_deltas_match_psf(psf, rng):
    feat = rng.normal(size=(17, 5))
    for width in (1, 2, 3, 9):
        close(deltas(feat, width), psf.delta(feat, width), rtol=1e-12)
    one = rng.normal(size=(1, 4))
    np.testing.assert_array_equal(deltas(one, 2), np.zeros((1, 4)))


# ----------------------------------------------------------------------------- the steps


def test_pre_emphasis():
    np.testing.assert_allclose(pre_emphasis(np.array([1.0, 2.0, 4.0]), 0.5), [1.0, 1.5, 3.0])


def test_frames_follow_psf_framesig_counts():
    x = np.arange(1.0, 11.0)
    np.testing.assert_array_equal(frames(x, 4, 3), [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])
    np.testing.assert_array_equal(frames(x, 4, 4), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]])
    np.testing.assert_array_equal(frames(x[:3], 4, 2), [[1, 2, 3, 0]])  # padded, one frame
    for n in range(200, 500):
        assert len(frames(np.ones(n), 200, 80)) == 1 + int(np.ceil((n - 200) / 80))


def test_power_spectrum_is_parseval_scaled():
    x = np.random.default_rng(0).normal(size=(3, 256))
    p = power_spectrum(x, 256)  # (3, 129): |X_k|^2 / nfft
    two_sided = p[:, 0] + 2 * p[:, 1:-1].sum(1) + p[:, -1]
    np.testing.assert_allclose(two_sided, (x ** 2).sum(1), rtol=1e-12)
    with pytest.raises(ValueError, match="nfft: expected at least the frame length 256"):
        power_spectrum(x, 128)


def test_mel_scale():
    assert mel(700.0) == pytest.approx(2595 * np.log10(2))
    assert mel(1000.0) == pytest.approx(1000.0, abs=0.1)  # the scale's anchor
    f = np.array([0.0, 100.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(mel(f)), f, atol=1e-9)


@pytest.mark.parametrize("mels,nfft,rate", [(26, 256, 8000), (40, 256, 8000), (40, 512, 16000)])
def test_filterbank_rows_are_triangles_peaking_at_1(mels, nfft, rate):
    fb = mel_filterbank(mels, nfft, rate)
    assert fb.shape == (mels, nfft // 2 + 1) and fb.min() >= 0
    np.testing.assert_array_equal(fb.max(axis=1), np.ones(mels))
    for row in fb:
        peak = int(np.argmax(row))
        assert np.all(np.diff(row[:peak + 1]) >= 0) and np.all(np.diff(row[peak:]) <= 0)
    # neighbours overlap so that the filters sum to 1 from the first peak to the last
    peaks = np.argmax(fb, axis=1)
    np.testing.assert_allclose(fb.sum(0)[peaks[0]:peaks[-1] + 1], 1.0, rtol=1e-12)
    assert np.all(np.diff(peaks) > 0)


def test_filterbank_refuses_filters_without_a_bin():
    with pytest.raises(ValueError, match="use fewer mels or a larger nfft"):
        mel_filterbank(64, 256, 8000)
    with pytest.raises(ValueError, match="expected 0 <= low < high <= rate/2 = 4000"):
        mel_filterbank(26, 256, 8000, high=5000.0)


def test_dct_ii_is_orthonormal():
    x = np.random.default_rng(1).normal(size=(4, 26))
    c = dct_ii(x, 26)
    np.testing.assert_allclose(scipy.fft.idct(c, type=2, norm="ortho", axis=-1), x, atol=1e-12)
    D = dct_ii(np.eye(26), 26)  # row m: the DCT of the m-th unit vector
    np.testing.assert_allclose(D @ D.T, np.eye(26), atol=1e-12)
    M, k, m = 26, np.arange(13)[:, None], np.arange(26)[None, :]
    scale = np.where(k == 0, np.sqrt(1 / M), np.sqrt(2 / M))
    np.testing.assert_allclose(dct_ii(x, 13), x @ (scale * np.cos(np.pi * k * (2 * m + 1)
                                                                  / (2 * M))).T, atol=1e-12)


def test_lift():
    c = np.ones((2, 13))
    np.testing.assert_allclose(lift(c, 22)[0], 1 + 11 * np.sin(np.pi * np.arange(13) / 22))
    assert lift(c, 0) is c


def test_deltas_of_a_ramp_are_its_slope():
    t = np.arange(20.0)[:, None]
    d = deltas(np.hstack([3 * t, -t]), 2)
    np.testing.assert_allclose(d[2:-2], np.tile([3.0, -1.0], (16, 1)))
    assert abs(d[0, 0]) < 3  # edges repeat the first frame, flattening the slope there


def test_normalize():
    feat = np.random.default_rng(2).normal(5, 3, size=(50, 4))
    feat[:, 2] = 7.3  # constant: stays 0, no NaN
    z = normalize(feat)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), [1, 1, 0, 1], atol=1e-12)
    np.testing.assert_array_equal(z[:, 2], 0.0)
    np.testing.assert_array_equal(normalize(feat[:1]), np.zeros((1, 4)))


# ----------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_silence_gives_finite_features(kind):
    x = np.zeros(4000)
    raw = features(x, FeatureConfig(kind=kind, normalize=False))
    assert np.all(np.isfinite(raw)) and np.all(raw == raw[0])
    np.testing.assert_array_equal(features(x, FeatureConfig(kind=kind)), 0.0)


def test_audio_shorter_than_a_frame_is_an_error():
    with pytest.raises(DataError, match=r"^0\.010 s of audio \(80 samples\) is shorter than one "
                                        r"0\.025 s frame \(200 samples at 8000 Hz\)$"):
        features(np.ones(80))
    assert features(np.random.default_rng(3).normal(size=200)).shape == (1, 39)


def test_bad_samples():
    with pytest.raises(ValueError, match="expected a 1-D real array"):
        features(np.ones((2, 400)))
    with pytest.raises(ValueError, match="expected finite samples"):
        features(np.full(400, np.nan))


def test_config_dim_defaults_and_round_trip():
    cfg = FeatureConfig()
    assert (cfg.frame_len, cfg.hop_len, cfg.fft_size, cfg.high, cfg.dim) == (200, 80, 256,
                                                                              4000.0, 39)
    assert FeatureConfig(rate=16000).fft_size == 512
    assert FeatureConfig(kind="logmel").dim == 78
    assert FeatureConfig(deltas=0).dim == 13 and FeatureConfig(deltas=1, ceps=12).dim == 24
    assert FeatureConfig.from_dict(asdict(cfg)) == cfg == FeatureConfig.from_dict(cfg.to_dict())
    with pytest.raises(ValueError, match="unknown keys colour"):
        FeatureConfig.from_dict({"colour": 1})


@pytest.mark.parametrize("kwargs,message", [
    ({"kind": "mel"}, "kind: expected one of mfcc, logmel, got 'mel'"),
    ({"window": "blackman"}, "window: expected one of hamming, hann, rectangular"),
    ({"deltas": 3}, "deltas: expected 0, 1 or 2, got 3"),
    ({"deltas": 1.0}, "deltas: expected an integer >= 0, got 1.0"),
    ({"ceps": 30}, "ceps: expected at most mels=26, got 30"),
    ({"nfft": 128}, "nfft: expected at least the frame length 200 samples, got 128"),
    ({"high": 5000.0}, "high: expected a finite number in"),
    ({"low": 4000.0}, "low: expected a finite number in"),
    ({"rate": 0}, "rate: expected a positive integer"),
    ({"lifter": -1}, "lifter: expected an integer >= 0"),
    ({"normalize": 1}, "normalize: expected True or False"),
    ({"mels": 64}, "use fewer mels or a larger nfft"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)
