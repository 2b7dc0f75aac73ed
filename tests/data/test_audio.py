"""WAV reading (checked against soundfile, which writes every format and reads it back as the
oracle), resampling (a tone in band kept, one above the new Nyquist removed), bad files, and a
real Free Spoken Digit Dataset file from ../shared/data."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from conftest import require_module, shared_data
from scipy.io import wavfile

from rnnlab.data import audio
from rnnlab.data.audio import AudioError, list_wavs, read_wav, resample, wav_info
from rnnlab.data.text import DataError

# subtype -> the largest error against the float64 signal written: one quantisation step
# 2**-(bits - 1) (libsndfile scales by 2**(bits-1) - 1, so rounding can be off by up to a step),
# float32 rounding for FLOAT, none for DOUBLE.
FORMATS = {"PCM_U8": 2.0 ** -7, "PCM_16": 2.0 ** -15, "PCM_24": 2.0 ** -23,
           "PCM_32": 2.0 ** -31, "FLOAT": 2.0 ** -24, "DOUBLE": 0.0}


def wav_bytes(data: bytes, channels: int = 1, rate: int = 8000, bits: int = 16, tag: int = 1,
              data_size: int | None = None, before: bytes = b"", after: bytes = b"") -> bytes:
    """A RIFF/WAVE file by hand: a 16-byte 'fmt ' chunk, chunks ``before`` the data, a 'data'
    chunk holding ``data`` (declaring ``data_size`` bytes), and bytes ``after`` it."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + before
            + b"data" + struct.pack("<I", size) + data + after)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_bytes(tmp_path, content: bytes, name: str = "bad.wav"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def error(path, **kwargs) -> str:
    """The one-line message of the AudioError that read_wav raises; it names the file."""
    with pytest.raises(AudioError) as info:
        read_wav(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.fixture
def sf():
    return require_module("soundfile")


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("subtype", list(FORMATS))
def test_formats_read_back_as_written(tmp_path, sf, rng, subtype):
    x = rng.uniform(-0.9, 0.9, 1000)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 8000, subtype=subtype)
    y, rate = read_wav(path)
    assert rate == 8000 and y.dtype == np.float64 and y.shape == x.shape
    assert np.abs(y - x).max() <= FORMATS[subtype]
    # soundfile reads the same values: integers scaled by 2**(bits-1), 8-bit offset by 128
    np.testing.assert_array_equal(y, sf.read(path, dtype="float64")[0])


def test_24_bit_is_scaled_from_its_left_justified_int32(tmp_path, sf):
    # scipy returns 24-bit samples as int32 << 8: full scale must stay 1.0, not 256.0
    x = np.array([0.0, 0.5, -0.5, -1.0, 1.0 - 2.0 ** -23, 2.0 ** -23])
    path = tmp_path / "24.wav"
    sf.write(path, x, 16000, subtype="PCM_24")
    assert wavfile.read(path)[1].dtype == np.int32
    y, rate = read_wav(path)
    assert rate == 16000 and wav_info(path).bits == 24
    np.testing.assert_array_equal(y, x)


def test_8_bit_is_unsigned_around_128(tmp_path):
    path = write_bytes(tmp_path, wav_bytes(bytes([0, 64, 128, 192, 255]), bits=8))
    np.testing.assert_array_equal(read_wav(path)[0], [-1.0, -0.5, 0.0, 0.5, 127 / 128])


@pytest.mark.parametrize("channels", [2, 3])
def test_channels_are_mixed_by_their_mean(tmp_path, sf, rng, channels):
    x = rng.uniform(-0.9, 0.9, (500, channels))
    path = tmp_path / "multi.wav"
    sf.write(path, x, 8000, subtype="DOUBLE")
    y, _ = read_wav(path)
    np.testing.assert_allclose(y, x.mean(axis=1), rtol=0, atol=1e-15)
    assert wav_info(path).channels == channels


def test_skipped_chunks_do_not_warn(tmp_path, sf):
    # libsndfile writes a PEAK chunk into float WAVs (scipy warns "Chunk (non-data) not
    # understood"); a broken chunk after the samples warns too. Both are read silently.
    path = tmp_path / "float.wav"
    sf.write(path, np.zeros(100) + 0.25, 8000, subtype="FLOAT")
    odd = write_bytes(tmp_path, wav_bytes(b"\x00\x40" * 10, before=b"cue " + struct.pack(
        "<I", 4) + b"abcd", after=b"ab"), "odd.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_wav(path)[0][0] == 0.25
        np.testing.assert_array_equal(read_wav(odd)[0], np.full(10, 0.5))


# ----------------------------------------------------------------------------- resampling


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def amplitude(x: np.ndarray, freq: float, rate: int) -> float:
    """The amplitude of the ``freq`` Hz component (x spans a whole number of its periods)."""
    t = np.arange(len(x)) / rate
    return 2 * abs(np.mean(x * np.exp(-2j * np.pi * freq * t)))


def test_resample_keeps_a_tone_in_band_and_removes_one_above_nyquist():
    x = tone(440, 16000) + tone(6000, 16000)
    y = resample(x, 16000, 8000)
    assert y.shape == (8000,)
    inner = slice(400, -400)  # away from the filter's edge transients
    assert amplitude(y[inner], 440, 8000) == pytest.approx(1.0, rel=0.01)
    # 6 kHz would alias to 2 kHz if samples were only dropped: it must be > 40 dB down
    assert 20 * np.log10(amplitude(y[inner], 2000, 8000)) < -40
    dropped = x[::2]
    assert amplitude(dropped[inner], 2000, 8000) == pytest.approx(1.0, rel=0.01)


def test_resample_rates(tmp_path, sf):
    x = tone(300, 8000, 0.5)
    assert resample(x, 8000, 22050).shape == (int(np.ceil(4000 * 22050 / 8000)),)
    assert resample(x, 8000, 8000) is not x
    path = tmp_path / "t.wav"
    sf.write(path, x, 8000, subtype="DOUBLE")
    y, rate = read_wav(path, rate=16000)
    assert rate == 16000 and len(y) == 8000
    np.testing.assert_allclose(y[200:-200], tone(300, 16000, 0.5)[200:-200], atol=0.01)
    with pytest.raises(ValueError, match="to_rate: expected a positive integer"):
        resample(x, 8000, 0)


# ----------------------------------------------------------------------------- bad files


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_wav(tmp_path / "nope.wav")
    assert "expected a WAV file, got a directory" in error(tmp_path)


def test_not_a_wav(tmp_path):
    assert "got an empty file" in error(write_bytes(tmp_path, b"", "empty.wav"))
    text = write_bytes(tmp_path, b"hello, this is text and not audio\n", "text.wav")
    assert "expected a WAV file (a RIFF/WAVE header), got b'hello, this '" in error(text)
    avi = write_bytes(tmp_path, b"RIFF\x04\x00\x00\x00AVI ", "avi.wav")
    assert "RIFF/WAVE header" in error(avi)


def test_corrupt_header(tmp_path):
    assert "expected a 'fmt ' chunk, got the end" in error(
        write_bytes(tmp_path, b"RIFF\x04\x00\x00\x00WAVE"))
    no_fmt = b"RIFF" + struct.pack("<I", 12) + b"WAVEdata" + struct.pack("<I", 0)
    assert "expected a 'fmt ' chunk before the 'data' chunk" in error(
        write_bytes(tmp_path, no_fmt))
    assert "expected a 'data' chunk, got the end" in error(
        write_bytes(tmp_path, wav_bytes(b"")[:36]))
    zero = wav_bytes(b"\x00\x00" * 4, channels=0)
    assert "expected nonzero channels" in error(write_bytes(tmp_path, zero))
    short_fmt = b"RIFF" + struct.pack("<I", 20) + b"WAVEfmt " + struct.pack("<I", 4) + b"\x01\x00"
    assert "'fmt ' chunk of at least 16 bytes, got 2" in error(write_bytes(tmp_path, short_fmt))


def test_truncated_and_partial_data(tmp_path, sf):
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(1000), 8000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-100])
    assert "truncated: expected 2000 bytes of samples (as the header says), got 1900" in \
        error(path)
    odd = write_bytes(tmp_path, wav_bytes(b"\x00" * 7))
    assert "expected a whole number of 2-byte frames in the 'data' chunk, got 7 bytes" in \
        error(odd)


def test_empty_data_chunk(tmp_path):
    assert "expected audio samples, got an empty 'data' chunk (0 bytes)" in error(
        write_bytes(tmp_path, wav_bytes(b"")))


def test_unsupported_formats(tmp_path, sf):
    path = tmp_path / "ulaw.wav"
    sf.write(path, np.zeros(100), 8000, subtype="ULAW")
    assert "expected PCM (8/16/24/32-bit) or float (32/64-bit) WAV samples, got: Unknown wave " \
           "file format: MULAW" in error(path)
    half = write_bytes(tmp_path, wav_bytes(b"\x00\x00" * 4, tag=3))  # 16-bit float
    assert "16-bit floating-point" in error(half)


def test_non_finite_float_samples(tmp_path):
    data = np.array([0.0, np.nan, 1.0], dtype="<f4").tobytes()
    assert "expected finite samples, got nan at sample 1" in error(
        write_bytes(tmp_path, wav_bytes(data, bits=32, tag=3)))


def test_max_seconds_is_refused_from_the_header(tmp_path, monkeypatch):
    # an hour at 8 kHz, 16-bit: 57.6 MB of samples in a sparse file (nothing written to disk)
    size = 3600 * 8000 * 2
    path = write_bytes(tmp_path, wav_bytes(b"", data_size=size), "hour.wav")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + size)

    def no_reading(*args, **kwargs):
        raise AssertionError("samples were read")

    monkeypatch.setattr(audio.wavfile, "read", no_reading)
    assert "expected at most max_seconds=60 s of audio, got 3600.000 s (28800000 samples at " \
           "8000 Hz); not read" in error(path, max_seconds=60)
    assert wav_info(path).seconds == 3600.0


def test_max_seconds_allows_shorter_files(tmp_path):
    path = write_bytes(tmp_path, wav_bytes(b"\x00\x00" * 8000))
    assert len(read_wav(path, max_seconds=1.0)[0]) == 8000
    with pytest.raises(ValueError, match="max_seconds: expected a finite number >= 0"):
        read_wav(path, max_seconds=-1)


def test_audio_error_is_a_data_error():
    assert issubclass(AudioError, DataError)


# ----------------------------------------------------------------------------- listing


def test_list_wavs(tmp_path):
    for name in ["b.wav", "a.WAV", "c.txt", "d.wav.bak"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.wav").mkdir()
    assert [p.name for p in list_wavs(tmp_path)] == ["a.WAV", "b.wav"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AudioError, match=f"^{empty}: expected .wav files, got none$"):
        list_wavs(empty)
    with pytest.raises(AudioError, match="expected a directory"):
        list_wavs(tmp_path / "c.txt")
    with pytest.raises(FileNotFoundError):
        list_wavs(tmp_path / "missing")


# ----------------------------------------------------------------------------- real data


def test_fsdd_file_reads_as_scipy_reads_it():
    path = shared_data("fsdd/recordings/0_george_0.wav")
    rate, raw = wavfile.read(path)
    x, got_rate = read_wav(path)
    assert got_rate == rate == 8000 and raw.dtype == np.int16
    assert x.shape == raw.shape == (wav_info(path).frames,)
    np.testing.assert_array_equal(x, raw / 32768.0)
    assert np.abs(x).max() <= 1.0
