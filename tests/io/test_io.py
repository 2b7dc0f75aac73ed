"""Atomic writes, the NumPy safetensors reader/writer, and checkpoints that survive failures."""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest
from conftest import require_module

from rnnlab.io import (
    CheckpointError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_files,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    load_file,
    load_metadata,
    save_checkpoint,
    save_file,
)
from rnnlab.io import checkpoint as checkpoint_module

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16]
SHAPES = [(), (0,), (3, 4), (2, 0, 3), (5,)]


def _tensors(rng):
    return {
        "rnn.weight_ih_l0": rng.standard_normal((8, 3)).astype(np.float32),
        "rnn.bias": rng.standard_normal(8),
        "ids": rng.integers(-5, 5, (2, 3)),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), np.float32),
    }


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _raw_file(path, header, data=b"", pad=True):
    """Write a safetensors-like file by hand, for the corruption tests."""
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_writes(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2.5, "é"], "y": None})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {
        "x": [1, 2.5, "é"], "y": None}
    atomic_write_bytes(tmp_path / "a.bin", b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.json", "a.txt"]


@pytest.mark.parametrize("fail", ["replace", "fsync", "body"])
def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("injected failure")

    if fail == "body":
        with pytest.raises(OSError, match="injected"), atomic_open(target) as f:
            f.write(b"half")
            boom()
    else:
        monkeypatch.setattr(os, fail, boom)
        with pytest.raises(OSError, match="injected"):
            atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_files_lands_the_set(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    a.write_bytes(b"old a")
    atomic_write_files({a: b"new a", b: b"new b"})
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.json"]
    with pytest.raises(ValueError, match="expected distinct paths"):
        atomic_write_files({a: b"1", str(a): b"2"})
    assert a.read_bytes() == b"new a"


@pytest.mark.parametrize("fail", [("fsync", 2), ("fsync", 3), ("replace", 2), ("replace", 3)])
def test_atomic_write_files_failure_part_way_changes_nothing(tmp_path, monkeypatch, fail):
    """A failure while writing the second or the last file, or after one or two renames: every
    old file is as it was, the new one absent, and no temporary file left."""
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "m.json"
    a.write_bytes(b"old a")
    c.write_bytes(b"old json")  # b.onnx is new
    _fail_on_call(monkeypatch, os, *fail)
    with pytest.raises(OSError, match="injected"):
        atomic_write_files({a: b"new a", b: b"new b", c: b"new json"})
    monkeypatch.undo()
    assert (a.read_bytes(), c.read_bytes()) == (b"old a", b"old json")
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "m.json"]


def test_atomic_write_files_copies_where_links_are_refused(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")

    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    _fail_on_call(monkeypatch, os, "replace", 2)
    with pytest.raises(OSError, match="injected"):
        atomic_write_files({a: b"new a", b: b"new b"})
    monkeypatch.undo()
    assert (a.read_bytes(), b.read_bytes()) == (b"old a", b"old b")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_atomic_write_json_rejects_non_json_before_touching_disk(tmp_path):
    target = tmp_path / "s.json"
    target.write_text("{}")
    with pytest.raises(TypeError, match="expected a JSON-able object"):
        atomic_write_json(target, {"a": np.zeros(2)})
    assert target.read_text() == "{}" and os.listdir(tmp_path) == ["s.json"]


# ----------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_safetensors_round_trip(tmp_path, rng, dtype, shape):
    array = (rng.standard_normal(shape) * 10).astype(dtype)
    save_file({"x": array}, tmp_path / "t.safetensors")
    back = load_file(tmp_path / "t.safetensors")["x"]
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.c_contiguous and back.flags.writeable and back.flags.aligned


def test_safetensors_layout_and_metadata(tmp_path, rng):
    tensors = _tensors(rng)
    tensors["strided"] = rng.standard_normal((4, 6))[:, ::2]      # non-contiguous input
    tensors["big_endian"] = np.arange(3, dtype=">f4")
    path = tmp_path / "t.safetensors"
    save_file(tensors, path, metadata={"format": "np", "note": "é"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header.pop("__metadata__") == {"format": "np", "note": "é"}
    assert list(header) == sorted(tensors)
    position = 0
    for name in sorted(tensors):
        begin, end = header[name]["data_offsets"]
        assert begin == position
        position = end
    assert 8 + n + position == len(raw)
    assert header["rnn.weight_ih_l0"] == {"dtype": "F32", "shape": [8, 3],
                                         "data_offsets": header["rnn.weight_ih_l0"]["data_offsets"]}
    back = load_file(path)
    expected = {**tensors, "big_endian": tensors["big_endian"].astype(np.float32)}
    _assert_same(back, expected)
    assert load_metadata(path) == {"format": "np", "note": "é"}
    save_file({}, tmp_path / "empty.safetensors")
    assert load_file(tmp_path / "empty.safetensors") == {}
    assert load_metadata(tmp_path / "empty.safetensors") == {}


def test_our_files_load_with_the_safetensors_package(tmp_path, rng):
    st = require_module("safetensors.numpy")
    tensors = _tensors(rng)
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"k": "v"})
    _assert_same(st.load_file(str(tmp_path / "ours.safetensors")), tensors)


def test_package_files_load_with_ours(tmp_path, rng):
    st = require_module("safetensors.numpy")
    tensors = {**_tensors(rng), "flags": np.array([True, False]), "h": np.ones(3, np.float16)}
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    _assert_same(load_file(tmp_path / "theirs.safetensors"), tensors)
    assert load_metadata(tmp_path / "theirs.safetensors") == {"k": "v"}


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]}}
CORRUPT = {
    "overlap": ({**GOOD, "b": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}},
                bytes(12), "overlaps"),
    "gap": ({**GOOD, "b": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}},
            bytes(20), "gap of 4 bytes"),
    "trailing": (GOOD, bytes(20), "4 trailing bytes"),
    "short_data": (GOOD, bytes(12), "out of range"),
    "size_mismatch": ({**GOOD, "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                      bytes(16), "span 8 bytes, but shape \\[3\\] of F32 needs 12"),
    "unknown_dtype": ({**GOOD, "a": {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}},
                      bytes(16), "unknown dtype 'F128'"),
    "bf16": ({**GOOD, "a": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}},
             bytes(16), "BF16 has no NumPy equivalent"),
    "bad_shape": ({**GOOD, "a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
                  bytes(16), "shape as a list of integers"),
    "missing_key": ({**GOOD, "a": {"dtype": "F32", "shape": [2]}}, bytes(16),
                    "expected an object with keys"),
    "bad_metadata": ({**GOOD, "__metadata__": {"k": 1}}, bytes(16), "__metadata__"),
    "not_object": ([1, 2], b"", "expected the header to be a JSON object"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_malformed_headers_raise_checkpoint_error(tmp_path, case):
    header, data, what = CORRUPT[case]
    path = _raw_file(tmp_path / f"{case}.safetensors", header, data)
    for fn in (load_file, load_metadata):
        with pytest.raises(CheckpointError, match=what) as info:
            fn(path)
        assert str(path) in str(info.value)


def test_good_handmade_file_loads(tmp_path):
    path = _raw_file(tmp_path / "good.safetensors", GOOD,
                     np.array([1, 2], "<f4").tobytes() + np.array([7], "<i8").tobytes())
    back = load_file(path)
    np.testing.assert_array_equal(back["a"], [1, 2])
    assert back["b"].tolist() == [7]


def test_truncated_and_garbage_files(tmp_path, rng):
    path = tmp_path / "t.safetensors"
    save_file(_tensors(rng), path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cases = {
        "tiny": (raw[:5], "shorter than the 8-byte header length"),
        "header_cut": (raw[:8 + n // 2], "header length .* beyond the end of the file"),
        "data_cut": (raw[:-3], "out of range|trailing"),
        "garbage": (bytes(rng.integers(0, 256, 256, dtype=np.uint8)), "beyond the end|JSON"),
        "not_json": (struct.pack("<Q", 8) + b"{nope!!}", "not valid UTF-8 JSON"),
        "not_utf8": (struct.pack("<Q", 8) + b"{\"\xff\xfe\":1}", "not valid UTF-8 JSON"),
        "duplicate": (struct.pack("<Q", 16) + b'{"a":{},"a":{}} ', "duplicate keys"),
        "empty": (b"", "shorter than the 8-byte"),
    }
    for name, (content, what) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=what) as info:
            load_file(bad)
        assert str(bad) in str(info.value), name
        assert isinstance(info.value, ValueError)


def test_save_file_rejects_bad_input(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="expected one of the dtypes .* got object"):
        save_file({"a": np.array([None])}, path)
    with pytest.raises(TypeError, match="expected one of the dtypes .* got complex128"):
        save_file({"a": np.zeros(2, complex)}, path)
    with pytest.raises(TypeError, match="'a' expected a numpy array, got list"):
        save_file({"a": [1.0]}, path)
    with pytest.raises(ValueError, match="expected tensor names that are strings"):
        save_file({"__metadata__": np.zeros(1)}, path)
    with pytest.raises(TypeError, match="metadata as a dict of str -> str"):
        save_file({"a": np.zeros(1)}, path, metadata={"k": 1})
    assert not path.exists() and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- checkpoints


def _state():
    return {"config": {"hidden": 8, "layers": [1, 2]}, "vocab": ["<unk>", "é", "the"],
            "epoch": 3, "step": 120, "metrics": {"valid_ppl": 123.5}, "rng": [1, 2, 3]}


def _opt_arrays(rng):
    return {"exp_avg/w": rng.standard_normal((3, 2)), "exp_avg_sq/w": rng.random((3, 2))}


def _listing(path):
    return sorted(os.listdir(path))


def test_checkpoint_round_trip(tmp_path, rng):
    ckpt = tmp_path / "run" / "checkpoint"
    weights, state, arrays = _tensors(rng), _state(), _opt_arrays(rng)
    save_checkpoint(ckpt, weights, state, arrays)
    assert _listing(ckpt) == ["checkpoint.json", "model.safetensors", "optimizer.safetensors"]
    document = json.loads((ckpt / "checkpoint.json").read_text(encoding="utf-8"))
    assert document["format"] == "rnnlab-checkpoint" and document["version"] == 1
    assert set(document["sha256"]) == {"model.safetensors", "optimizer.safetensors"}
    w, s, a = load_checkpoint(str(ckpt))
    _assert_same(w, weights)
    _assert_same(a, arrays)
    assert s == state
    save_checkpoint(ckpt, weights, state)  # no optimizer arrays
    assert load_checkpoint(ckpt)[2] == {}


def test_checkpoint_overwrite_leaves_no_siblings(tmp_path, rng):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, _tensors(rng), {"epoch": 1})
    new = _tensors(rng)
    save_checkpoint(ckpt, new, {"epoch": 2}, _opt_arrays(rng))
    w, s, _ = load_checkpoint(ckpt)
    _assert_same(w, new)
    assert s == {"epoch": 2}
    assert _listing(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_file_in_checkpoint_is_detected(tmp_path, rng, name, damage):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, _tensors(rng), _state(), _opt_arrays(rng))
    raw = bytearray((ckpt / name).read_bytes())
    if damage == "flip":
        raw[-5] ^= 0x10  # a bit in the data: still a well-formed safetensors file
    else:
        raw = raw[:-4]
    (ckpt / name).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{name} is corrupted or truncated"):
        load_checkpoint(ckpt)


def test_checkpoint_load_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint directory: checkpoint.json "
                                              "is missing"):
        load_checkpoint(tmp_path / "plain")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is not a checkpoint directory"):
        load_checkpoint(tmp_path / "file")

    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, _tensors(rng), _state())
    good = (ckpt / "checkpoint.json").read_text(encoding="utf-8")
    document = json.loads(good)
    cases = {
        good[: len(good) // 2]: "checkpoint.json is malformed JSON",
        json.dumps({**document, "format": "other"}): "not an rnnlab checkpoint directory",
        json.dumps([1]): "not an rnnlab checkpoint directory",
        json.dumps({**document, "version": 2}): "unsupported checkpoint version 2; expected 1",
        json.dumps({**document, "sha256": {}}): "expected \"sha256\"",
    }
    for text, what in cases.items():
        (ckpt / "checkpoint.json").write_text(text, encoding="utf-8")
        with pytest.raises(CheckpointError, match=what):
            load_checkpoint(ckpt)
    (ckpt / "checkpoint.json").write_text(good, encoding="utf-8")
    os.remove(ckpt / "optimizer.safetensors")
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing"):
        load_checkpoint(ckpt)


def test_save_checkpoint_rejects_bad_state_before_writing(tmp_path, rng):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TypeError, match="expected a JSON-able state dict"):
        save_checkpoint(ckpt, _tensors(rng), {"bad": np.zeros(2)})
    with pytest.raises(ValueError, match=r"state keys \['version'\] are reserved"):
        save_checkpoint(ckpt, _tensors(rng), {"version": 3})
    with pytest.raises(TypeError, match="expected one of the dtypes"):
        save_checkpoint(ckpt, {"w": np.array([None])}, {})
    assert _listing(tmp_path) == []


def test_save_checkpoint_refuses_to_replace_other_things(tmp_path, rng):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a checkpoint directory"):
        save_checkpoint(tmp_path / "notes", _tensors(rng), {})
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a directory"):
        save_checkpoint(tmp_path / "file", _tensors(rng), {})
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert _listing(tmp_path) == ["file", "notes"]


def _fail_on_call(monkeypatch, module, name, n):
    """Make ``module.name`` raise on its n-th call (1-based); earlier calls go through."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(f"injected failure in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("where", [
    ("os", "replace", 1),                  # writing model.safetensors
    ("os", "replace", 3),                  # writing checkpoint.json
    ("checkpoint", "save_file", 2),        # writing optimizer.safetensors
    ("os", "rename", 1),                   # moving the old checkpoint aside
    ("os", "rename", 2),                   # moving the new one in: rolled back
], ids=["model-file", "json", "optimizer-file", "rename-old", "rename-new"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, rng, monkeypatch, where):
    ckpt = tmp_path / "ckpt"
    old_weights = _tensors(rng)
    save_checkpoint(ckpt, old_weights, {"epoch": 1}, _opt_arrays(rng))
    module = os if where[0] == "os" else checkpoint_module
    _fail_on_call(monkeypatch, module, where[1], where[2])
    with pytest.raises(OSError, match="injected failure"):
        save_checkpoint(ckpt, _tensors(rng), {"epoch": 2}, _opt_arrays(rng))
    monkeypatch.undo()
    assert _listing(tmp_path) == ["ckpt"]  # no DIR.tmp-* or DIR.old-* left behind
    w, s, _ = load_checkpoint(ckpt)
    _assert_same(w, old_weights)
    assert s == {"epoch": 1}


def test_recovers_from_crash_mid_swap(tmp_path, rng, monkeypatch):
    ckpt = tmp_path / "ckpt"
    old_weights = _tensors(rng)
    save_checkpoint(ckpt, old_weights, {"epoch": 1})

    # A crash right after DIR -> DIR.old-*: every later rename fails, so nothing is rolled back.
    real_rename, calls = os.rename, []

    def crash_after_first(src, dst):
        calls.append(src)
        if len(calls) > 1:
            raise OSError("injected crash")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_after_first)
    with pytest.raises(OSError, match="injected crash"):
        save_checkpoint(ckpt, _tensors(rng), {"epoch": 2})
    monkeypatch.undo()
    leftovers = _listing(tmp_path)
    assert "ckpt" not in leftovers
    assert len(leftovers) == 1 and re.fullmatch(r"ckpt\.old-[0-9a-f]{8}", leftovers[0])

    # a half-written DIR.tmp-* from an even earlier crash, and a damaged old copy, are ignored
    (tmp_path / "ckpt.tmp-0123abcd").mkdir()
    (tmp_path / "ckpt.tmp-0123abcd" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "ckpt.old-00000000").mkdir()
    (tmp_path / "ckpt.old-00000000" / "checkpoint.json").write_text("{")
    newer = os.stat(tmp_path / leftovers[0]).st_mtime + 100
    os.utime(tmp_path / "ckpt.old-00000000", (newer, newer))  # tried first, and skipped

    with pytest.warns(RuntimeWarning, match="loaded the previous checkpoint"):
        w, s, _ = load_checkpoint(ckpt)
    _assert_same(w, old_weights)
    assert s == {"epoch": 1}

    new = _tensors(rng)  # the next save restores DIR and clears the leftovers
    save_checkpoint(ckpt, new, {"epoch": 2})
    assert _listing(tmp_path) == ["ckpt"]
    _assert_same(load_checkpoint(ckpt)[0], new)


def test_damaged_leftovers_only_give_checkpoint_error(tmp_path):
    (tmp_path / "ckpt.old-0123abcd").mkdir()
    (tmp_path / "ckpt.old-0123abcd" / "checkpoint.json").write_text("{")
    with pytest.raises(CheckpointError, match="does not exist, and the copies left by an "
                                              "interrupted save are damaged"):
        load_checkpoint(tmp_path / "ckpt")
