"""WAV files: read them as mono float64 in [-1, 1], resample with an anti-aliasing filter, and
list a directory of them.

Reading rules (``read_wav``); every error is a one-line AudioError (a DataError) naming the file:

- The samples are read by ``scipy.io.wavfile.read``. Before that, the RIFF header is walked here
  (a few dozen bytes, no samples) to learn the rate, the channels and the size of the ``data``
  chunk, so that an over-long file is refused before its samples are read (``max_seconds``), and
  a truncated file (a ``data`` chunk larger than what is left of the file) is an error instead of
  the shorter read scipy would silently return.
- Formats: PCM 8-bit (unsigned, offset 128), 16, 24 and 32-bit (signed), IEEE float 32 and 64
  bit, any number of channels, RIFF (little-endian), RIFX (big-endian) and RF64. Integers are
  scaled by their container: scipy returns every integer depth left-justified (24-bit as int32
  with the low byte 0), so dividing by 2**(container bits - 1) gives full scale 1.0 for all of
  them. Float samples are returned as stored (not clipped); a NaN or infinity is an error.
  Anything else (mu-law, A-law, ADPCM, ...) is an error.
- Several channels are mixed to mono by their mean.
- Errors: a missing file is FileNotFoundError; a directory, an empty file, a file that is not a
  RIFF/WAVE file, a header without a ``fmt `` or ``data`` chunk, a truncated or partial ``data``
  chunk, 0 samples and an unsupported format are AudioError.
- scipy's WavFileWarning is silenced, not raised: it warns about chunks it skips (a ``PEAK``,
  ``cue `` or ``bext`` chunk, which libsndfile and editors write routinely), a broken chunk
  after the samples, or a RIFF size larger than the file once the samples were read whole. In
  every case the samples are complete (the truncation check above has already run), so the file
  is read without a word.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from rnnlab.data.text import DataError, PathLike
from rnnlab.validate import check_number, check_positive_int


class AudioError(DataError):
    """A WAV file that cannot be read as audio (one line, naming the file)."""


@dataclass(frozen=True)
class WavInfo:
    """What the header of a WAV file says: ``frames`` samples per channel at ``rate`` Hz."""

    rate: int
    channels: int
    bits: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def _chunks_header(path: PathLike, f: BinaryIO) -> tuple[WavInfo, int, int, int]:
    """Walk the RIFF chunks up to ``data``: (info, data offset, data size, frame size), the
    sizes in bytes."""
    head = f.read(12)
    if not head:
        raise AudioError(f"{path}: expected a WAV file, got an empty file")
    kind = head[:4]
    if kind not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        raise AudioError(f"{path}: expected a WAV file (a RIFF/WAVE header), got {head!r}")
    order = ">" if kind == b"RIFX" else "<"
    fmt, rf64_size = None, None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            missing = "'fmt '" if fmt is None else "'data'"
            raise AudioError(f"{path}: expected a {missing} chunk, got the end of the file")
        name, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
        if name == b"data":
            if fmt is None:
                raise AudioError(f"{path}: expected a 'fmt ' chunk before the 'data' chunk, "
                                 f"got none")
            if kind == b"RF64" and size == 0xFFFFFFFF and rf64_size is not None:
                size = rf64_size
            channels, rate, block, bits = fmt
            return WavInfo(rate, channels, bits, size // block), f.tell(), size, block
        body = f.read(size + size % 2)  # chunks are padded to an even size
        if name == b"ds64" and len(body) >= 16:
            rf64_size = struct.unpack("<Q", body[8:16])[0]
        elif name == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{path}: expected a 'fmt ' chunk of at least 16 bytes, got "
                                 f"{len(body)}")
            _, channels, rate, _, block, bits = struct.unpack(order + "HHIIHH", body[:16])
            if not (channels and rate and block and bits):
                raise AudioError(f"{path}: expected nonzero channels, rate, frame size and "
                                 f"bit depth in the 'fmt ' chunk, got {channels} channels, "
                                 f"{rate} Hz, {block}-byte frames, {bits} bits")
            fmt = channels, rate, block, bits


def wav_info(path: PathLike) -> WavInfo:
    """The rate, channels, bit depth and length of a WAV file from its header alone (no samples
    are read). Checks that the header is sound and the ``data`` chunk complete; raises as
    ``read_wav`` does."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"WAV file not found: {path}")
    if p.is_dir():
        raise AudioError(f"{path}: expected a WAV file, got a directory")
    with open(p, "rb") as f:
        info, offset, size, block = _chunks_header(path, f)
        left = os.fstat(f.fileno()).st_size - offset
    if size > left:
        raise AudioError(f"{path}: truncated: expected {size} bytes of samples (as the header "
                         f"says), got {left}")
    if size % block:
        raise AudioError(f"{path}: expected a whole number of {block}-byte frames in the 'data' "
                         f"chunk, got {size} bytes")
    if info.frames == 0:
        raise AudioError(f"{path}: expected audio samples, got an empty 'data' chunk "
                         f"({size} bytes)")
    return info


def _to_float(data: np.ndarray) -> np.ndarray:
    """Samples as float64 with full scale 1.0 (see the module docstring for the scaling)."""
    if data.dtype == np.uint8:
        return (data.astype(np.float64) - 128.0) / 128.0
    if data.dtype.kind == "i":
        return data.astype(np.float64) / 2.0 ** (8 * data.dtype.itemsize - 1)
    return data.astype(np.float64)


def read_wav(path: PathLike, rate: int | None = None,
             max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float64 samples in [-1, 1] (rules in the module docstring).

    Returns ``(x, rate)``: x (T,) and the sample rate. With ``rate`` the samples are resampled
    to it (``resample``) and ``rate`` is returned. ``max_seconds``: a file longer than this is
    refused from its header, before its samples are read.
    """
    if rate is not None:
        rate = check_positive_int("rate", rate)
    if max_seconds is not None:
        max_seconds = check_number("max_seconds", max_seconds, low=0.0)
    info = wav_info(path)
    if max_seconds is not None and info.seconds > max_seconds:
        raise AudioError(f"{path}: expected at most max_seconds={max_seconds:g} s of audio, got "
                         f"{info.seconds:.3f} s ({info.frames} samples at {info.rate} Hz); "
                         f"not read")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            file_rate, data = wavfile.read(path)
    except (ValueError, struct.error, EOFError) as e:
        reason = " ".join(str(e).split())
        raise AudioError(f"{path}: expected PCM (8/16/24/32-bit) or float (32/64-bit) WAV "
                         f"samples, got: {reason}") from None
    x = _to_float(data)
    if x.ndim == 2:
        x = x.mean(axis=1)  # (T, C) -> (T,)
    if len(x) != info.frames:
        raise AudioError(f"{path}: expected {info.frames} samples (as the header says), "
                         f"got {len(x)}")
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise AudioError(f"{path}: expected finite samples, got {x[bad[0]]} at sample "
                         f"{bad[0]} ({len(bad)} in all)")
    if rate is not None and rate != file_rate:
        return resample(x, file_rate, rate), rate
    return x, int(file_rate)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``x`` (T, ...) resampled along axis 0 from ``from_rate`` to ``to_rate`` Hz (float64).

    Polyphase resampling, ``scipy.signal.resample_poly(x, up, down)`` with up/down =
    to_rate/from_rate in lowest terms (divided by their gcd): upsample by ``up``, low-pass,
    downsample by ``down``. The low-pass is scipy's default FIR, a Kaiser-windowed sinc (beta 5,
    about 54 dB of stopband attenuation, 20 * max(up, down) + 1 taps) with its cutoff at the
    lower of the two Nyquist frequencies, so content above the new Nyquist is removed instead of
    aliased (this is not sample dropping). The output has ceil(T * up / down) samples and no
    delay. Equal rates return a float64 copy.
    """
    from_rate = check_positive_int("from_rate", from_rate)
    to_rate = check_positive_int("to_rate", to_rate)
    x = np.asarray(x, dtype=np.float64)
    if from_rate == to_rate:
        return x.copy()
    g = math.gcd(from_rate, to_rate)
    return resample_poly(x, to_rate // g, from_rate // g, axis=0)


def list_wavs(directory: PathLike) -> list[Path]:
    """The ``.wav`` files (any case of the suffix) directly in ``directory``, sorted by name.
    FileNotFoundError if it does not exist; AudioError if it is not a directory or holds none."""
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"directory not found: {directory}")
    if not d.is_dir():
        raise AudioError(f"{directory}: expected a directory of .wav files, got a file")
    wavs = sorted(p for p in d.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise AudioError(f"{directory}: expected .wav files, got none")
    return wavs
