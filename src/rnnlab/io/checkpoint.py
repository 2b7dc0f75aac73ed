"""Checkpoints: a directory that is either the complete old checkpoint or the complete new one.

A checkpoint directory ``DIR`` holds::

    model.safetensors       the weights
    optimizer.safetensors   the optimizer's arrays (possibly none)
    checkpoint.json         the caller's JSON-able state, plus "format": "rnnlab-checkpoint",
                            "version": 1 and "sha256": {file name: hex digest} of both files

Saving never damages the previous checkpoint. The whole new checkpoint is built and fsynced in a
sibling ``DIR.tmp-XXXXXXXX``; then two renames swap it in::

    DIR -> DIR.old-XXXXXXXX      (1)
    DIR.tmp-XXXXXXXX -> DIR      (2)
    remove DIR.old-XXXXXXXX and any stale DIR.tmp-* / DIR.old-* siblings

Renaming a directory is atomic, so after a crash at any point either ``DIR`` is a complete
checkpoint (the old one before (1), the new one after (2)), or -- between (1) and (2) only --
``DIR`` is missing and ``DIR.old-*`` is the complete old checkpoint: :func:`load_checkpoint`
then reads from it (it verifies the hashes, and takes the newest ``DIR.old-*`` that verifies)
and warns; the next save puts a new ``DIR`` in place and removes the leftovers. We chose this
over swapping single files inside ``DIR`` because a checkpoint is three files that must agree:
no sequence of per-file renames makes all three change at once. A failure while saving removes
the temporary directory and, if it happens between (1) and (2), renames the old one back.

Only one process may save to a given ``DIR`` at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rnnlab.io.atomic import atomic_write_json, fsync_directory
from rnnlab.io.safetensors import CheckpointError, load_file, save_file

FORMAT = "rnnlab-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "checkpoint.json"
_RESERVED = ("format", "version", "sha256")

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


# ----------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sibling_pattern(directory: Path, tag: str) -> re.Pattern:
    return re.compile(re.escape(directory.name) + rf"\.{tag}-[0-9a-f]{{8}}")


def _siblings(directory: Path, tag: str) -> list[Path]:
    """The ``DIR.<tag>-XXXXXXXX`` directories beside ``directory``."""
    pattern = _sibling_pattern(directory, tag)
    parent = directory.parent
    if not parent.is_dir():
        return []
    return [parent / e for e in os.listdir(parent)
            if pattern.fullmatch(e) and (parent / e).is_dir()]


def _new_sibling_name(directory: Path, tag: str) -> Path:
    while True:
        path = directory.with_name(f"{directory.name}.{tag}-{secrets.token_hex(4)}")
        if not os.path.lexists(path):
            return path


def _check_replaceable(directory: Path) -> None:
    """Refuse to replace a file, or a non-empty directory that is not a checkpoint."""
    if not os.path.lexists(directory):
        return
    if not directory.is_dir():
        raise FileExistsError(f"save_checkpoint: {directory} exists and is not a directory; "
                              "refusing to replace it")
    if any(directory.iterdir()) and not (directory / STATE_FILE).is_file():
        raise FileExistsError(f"save_checkpoint: {directory} exists and is not a checkpoint "
                              f"directory (no {STATE_FILE}); refusing to replace it")


def _swap_in(new: Path, directory: Path) -> None:
    """Rename ``new`` to ``directory``, moving an existing ``directory`` aside first."""
    old = None
    try:
        if os.path.lexists(directory):
            old = _new_sibling_name(directory, "old")
            os.rename(directory, old)                     # (1)
        os.rename(new, directory)                         # (2)
    except BaseException:
        if old is not None and not os.path.lexists(directory):
            try:
                os.rename(old, directory)                 # roll back (1)
            except OSError:
                pass  # DIR.old-* stays complete; load_checkpoint recovers from it
        shutil.rmtree(new, ignore_errors=True)
        raise
    fsync_directory(directory.parent)
    for stale in [*_siblings(directory, "old"), *_siblings(directory, "tmp")]:
        shutil.rmtree(stale, ignore_errors=True)


# ----------------------------------------------------------------------------- saving


def save_checkpoint(directory: str | os.PathLike, weights: dict[str, np.ndarray], state: dict,
                    optimizer_arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write a checkpoint to ``directory``, replacing the previous one atomically.

    ``state`` must be JSON-able and must not use the keys "format", "version" or "sha256".
    Nothing is touched unless it is; on any failure the previous checkpoint is left intact and
    no temporary directory remains.
    """
    directory = Path(directory)
    if not isinstance(state, Mapping):
        raise TypeError(f"save_checkpoint: expected state to be a dict, got "
                        f"{type(state).__name__}")
    clash = [k for k in _RESERVED if k in state]
    if clash:
        raise ValueError(f"save_checkpoint: state keys {clash} are reserved; expected none of "
                         f"{list(_RESERVED)}")
    try:
        json.dumps(state)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint: expected a JSON-able state dict, got: {e}") from None
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _new_sibling_name(directory, "tmp")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        save_file(weights, tmp / MODEL_FILE)
        save_file({} if optimizer_arrays is None else optimizer_arrays, tmp / OPTIMIZER_FILE)
        digests = {name: _sha256(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE)}
        document = {"format": FORMAT, "version": VERSION, "sha256": digests, **state}
        atomic_write_json(tmp / STATE_FILE, document)    # last: it vouches for the others
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, directory)


# ----------------------------------------------------------------------------- loading


def _read_document(directory: Path) -> dict:
    path = directory / STATE_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a checkpoint directory (it is not a directory)")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint directory: {STATE_FILE} is "
                              f"missing")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(f"{path} is malformed JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        got = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"{directory} is not an rnnlab checkpoint directory: {STATE_FILE} "
                              f"has format {got!r}, expected {FORMAT!r}")
    if document.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version "
                              f"{document.get('version')!r}; expected {VERSION}")
    digests = document.get("sha256")
    if not isinstance(digests, dict) or not all(
        isinstance(digests.get(name), str) for name in (MODEL_FILE, OPTIMIZER_FILE)
    ):
        raise CheckpointError(f"{path}: expected \"sha256\" to give the digests of "
                              f"{MODEL_FILE} and {OPTIMIZER_FILE}, got {digests!r:.200}")
    return document


def _load(directory: Path) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    document = _read_document(directory)
    arrays = {}
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
        if _sha256(path) != document["sha256"][name]:
            raise CheckpointError(f"{path}: {name} is corrupted or truncated (its sha256 does "
                                  f"not match the one recorded in {STATE_FILE})")
        arrays[name] = load_file(path)
    state = {k: v for k, v in document.items() if k not in _RESERVED}
    return arrays[MODEL_FILE], state, arrays[OPTIMIZER_FILE]


def _recover(directory: Path) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    """``directory`` is missing: read the newest ``DIR.old-*`` that verifies, if any."""
    candidates = sorted(_siblings(directory, "old"), key=lambda p: p.stat().st_mtime,
                        reverse=True)
    if not candidates:
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    errors = []
    for candidate in candidates:
        try:
            result = _load(candidate)
        except (CheckpointError, OSError) as e:
            errors.append(str(e))
            continue
        warnings.warn(f"{directory} is missing (a save was interrupted); loaded the previous "
                      f"checkpoint from {candidate}", RuntimeWarning, stacklevel=3)
        return result
    raise CheckpointError(f"checkpoint directory {directory} does not exist, and the copies left "
                          f"by an interrupted save are damaged: {'; '.join(errors)}")


def run_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory of a run directory, or ``path`` itself when it is one. A path
    without checkpoint.json is taken as a run directory: RUN/checkpoint is then what
    :func:`load_checkpoint` gets, so that it can recover from a crash mid-save."""
    path = Path(path)
    return path if (path / "checkpoint.json").is_file() else path / "checkpoint"


def load_checkpoint(
    directory: str | os.PathLike,
) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
    """Read a checkpoint: ``(weights, state, optimizer_arrays)``, after checking its format,
    version and both files' sha256. ``state`` is the dict given to :func:`save_checkpoint`.

    Raises FileNotFoundError when ``directory`` does not exist (and no ``DIR.old-*`` left by an
    interrupted save can stand in for it), CheckpointError for anything malformed.
    """
    directory = Path(directory)
    if not os.path.lexists(directory):
        return _recover(directory)
    return _load(directory)


def load_run_checkpoint(path: str | os.PathLike, kind: str, command: str):
    """A run directory (or its ``checkpoint/``) holding a ``kind`` checkpoint -> (the checkpoint
    directory, weights, state, optimizer arrays). A checkpoint of another kind is a
    CheckpointError that names the command which writes the expected one."""
    ckpt = run_checkpoint(path)
    weights, state, arrays = load_checkpoint(ckpt)
    if state.get("kind") != kind:
        raise CheckpointError(f"{ckpt}: expected a {kind} checkpoint (written by {command}), "
                              f"got {state.get('kind')!r}")
    return ckpt, weights, state, arrays
