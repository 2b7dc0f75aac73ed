"""The safetensors format, written and read with NumPy alone (no pickle, nothing executed).

Layout of a file::

    N            8 bytes, little-endian unsigned 64-bit: the header's length in bytes
    header       N bytes of UTF-8 JSON, padded with spaces to a multiple of 8:
                 {"__metadata__": {str: str},                          (optional)
                  name: {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
                  ...}
    data         the tensors' raw little-endian C-order bytes; offsets are relative to the start
                 of this block, and the tensors tile it exactly: no gaps, no overlaps, no tail

We write tensors in sorted-name order. On load every one of those rules is checked, and a
violation raises :class:`CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnlab.io.atomic import atomic_open
from rnnlab.nn.backend import to_host

# safetensors dtype code -> NumPy dtype (little-endian)
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"),
    "I8": np.dtype("|i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
# Valid in the format, but NumPy has no such type.
_UNSUPPORTED = {"BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"}
_MAX_HEADER = 100_000_000  # the reference implementation's limit
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class CheckpointError(ValueError):
    """A checkpoint or safetensors file is malformed, truncated or corrupted."""


# ----------------------------------------------------------------------------- writing


def _prepare(tensors: object, metadata: object) -> tuple[bytes, list[np.ndarray]]:
    """Validate the inputs; return the padded header (with its length prefix) and the arrays."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"save_file: expected a dict of name -> array, got "
                        f"{type(tensors).__name__}")
    if metadata is not None and (
        not isinstance(metadata, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise TypeError(f"save_file: expected metadata as a dict of str -> str, got {metadata!r}")
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    arrays, offset = [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save_file: expected tensor names that are strings other than "
                             f"'__metadata__', got {name!r}")
        array = to_host(tensors[name])  # a GPU array is written from its host copy
        if not isinstance(array, np.ndarray | np.generic):
            raise TypeError(f"save_file: {name!r} expected a numpy array, got "
                            f"{type(array).__name__}")
        code = _CODES.get(array.dtype.newbyteorder("="))
        if code is None:
            raise TypeError(f"save_file: {name!r} expected one of the dtypes "
                            f"{sorted(str(d) for d in _CODES)}, got {array.dtype}")
        array = np.asarray(array, dtype=DTYPES[code], order="C")  # keeps 0-d arrays 0-d
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, arrays


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike,
              metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (and optional string ``metadata``) to ``path`` atomically."""
    header, arrays = _prepare(tensors, metadata)
    with atomic_open(path) as f:
        f.write(header)
        for array in arrays:
            f.write(array.reshape(-1).view(np.uint8).data)


# ----------------------------------------------------------------------------- reading


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_entry(path: Path, name: str, entry: object, data_size: int) -> tuple:
    """One tensor's header entry -> (dtype, shape, begin, end), or CheckpointError."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name!r}: {what}")

    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise bad(f"expected an object with keys {sorted(_ENTRY_KEYS)}, got {entry!r:.200}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if code in _UNSUPPORTED:
        raise bad(f"dtype {code} has no NumPy equivalent; expected one of {sorted(DTYPES)}")
    if code not in DTYPES:
        raise bad(f"unknown dtype {code!r}; expected one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"expected a shape as a list of integers >= 0, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)):
        raise bad(f"expected data_offsets [begin, end] of integers >= 0, got {offsets!r}")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise bad(f"data_offsets {offsets} out of range: the data block holds {data_size} bytes "
                  f"(file truncated?)")
    nbytes = math.prod(shape) * DTYPES[code].itemsize
    if end - begin != nbytes:
        raise bad(f"data_offsets {offsets} span {end - begin} bytes, but shape {shape} of "
                  f"{code} needs {nbytes}")
    return DTYPES[code], tuple(shape), begin, end


def _read_header(f: BinaryIO, path: Path) -> tuple[dict[str, tuple], dict[str, str], int]:
    """Parse and check the header: (entries by name, metadata, offset of the data block)."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise CheckpointError(f"{path}: file is {size} bytes, shorter than the 8-byte header "
                              f"length; not a safetensors file (or truncated)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > min(size - 8, _MAX_HEADER):
        raise CheckpointError(f"{path}: header length {n} goes beyond the end of the file "
                              f"({size} bytes); not a safetensors file (or truncated)")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: expected the header to be a JSON object, got "
                              f"{type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: expected __metadata__ to map strings to strings, got "
                              f"{metadata!r:.200}")
    data_size = size - 8 - n
    entries = {name: _check_entry(path, name, e, data_size) for name, e in header.items()}
    position = 0  # the tensors must tile the data block exactly
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin < position:
            raise CheckpointError(f"{path}: tensor {name!r} at bytes [{begin}, {end}) overlaps "
                                  f"the previous tensor, which ends at {position}")
        if begin > position:
            raise CheckpointError(f"{path}: gap of {begin - position} bytes before tensor "
                                  f"{name!r} at bytes [{begin}, {end})")
        position = end
    if position != data_size:
        raise CheckpointError(f"{path}: {data_size - position} trailing bytes after the last "
                              f"tensor (expected the data block to end at {position})")
    return entries, metadata, 8 + n


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into fresh, aligned, native-order arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        entries, _, start = _read_header(f, path)
        tensors = {}
        for name, (dtype, shape, begin, end) in sorted(entries.items()):
            array = np.empty(shape, dtype=dtype)
            f.seek(start + begin)
            if f.readinto(array.reshape(-1).view(np.uint8)) != end - begin:
                raise CheckpointError(f"{path}: tensor {name!r} is truncated (the file shrank "
                                      f"while being read)")
            tensors[name] = array.astype(dtype.newbyteorder("="), copy=False)
    return tensors


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} when absent); the header is checked."""
    path = Path(path)
    with open(path, "rb") as f:
        return _read_header(f, path)[1]
