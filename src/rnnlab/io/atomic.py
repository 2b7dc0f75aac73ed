"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

The data goes to a fresh temporary file in the target's directory (same filesystem, so the
rename is atomic), is flushed and fsynced, then ``os.replace`` puts it in place and the
directory is fsynced so the rename itself survives a power cut. On any failure the temporary
file is removed and the old file is left untouched.

:func:`atomic_write_files` does the same for a set of files that belong together (a model and
the JSON that describes it): all are written to temporary files before the first is renamed
into place, and a failure at any point leaves every target as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

# Filesystems (and platforms) that cannot fsync a directory answer with one of these.
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES,
                 errno.EISDIR, errno.EPERM}


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make renames and creations inside ``directory`` durable (a no-op where unsupported)."""
    if os.name == "nt":  # Windows cannot open a directory for fsync
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as e:
        if e.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.tmp-<random>`` beside ``path`` exclusively (mode 0666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write; on a clean exit it atomically replaces ``path``.

    If the body raises, or flushing, fsyncing or renaming fails, the temporary file is removed,
    ``path`` is unchanged and the exception propagates.
    """
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write_bytes: expected bytes, got {type(data).__name__}")
    with atomic_open(path) as f:
        f.write(data)


def _keep_old(path: Path) -> Path | None:
    """A hard link ``.<name>.old-<random>`` to ``path``'s current file (None: no file there),
    to put it back with if a later rename of the set fails; a copy where links are refused."""
    if not path.is_file():  # nothing to keep (a directory there fails its rename later)
        return None
    while True:
        old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
        try:
            os.link(path, old)
            return old
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links
            break
    fd, old = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(old)
        raise
    return old


def atomic_write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write each ``path: data`` of ``files`` so that the set lands together or not at all.

    Every file is written and fsynced to a temporary file beside its target first; only then
    are they renamed into place, one after another (a reader may see some new and some old
    files during those renames, never a torn one). If a write, a rename or anything else fails,
    the targets already renamed get their old file back (or are removed where there was none),
    every temporary file is removed and the exception propagates.
    """
    items = [(Path(p), data) for p, data in files.items()]
    if len({path.resolve() for path, _ in items}) < len(items):
        raise ValueError(f"atomic_write_files: expected distinct paths, got "
                         f"{[os.fspath(path) for path, _ in items]}")
    temps: list[Path] = []
    olds: dict[Path, Path | None] = {}
    renamed: list[Path] = []
    try:
        for path, data in items:
            fd, tmp = _create_temp(path)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, _ in items:
            olds[path] = _keep_old(path)
        for (path, _), tmp in zip(items, temps, strict=True):
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        for path in reversed(renamed):
            old = olds[path]
            with contextlib.suppress(OSError):
                if old is None:
                    os.unlink(path)
                else:
                    os.replace(old, path)
        for leftover in [*temps, *(o for o in olds.values() if o is not None)]:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise
    for old in olds.values():
        if old is not None:
            os.unlink(old)
    for directory in {path.parent for path, _ in items}:
        fsync_directory(directory)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding``."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: expected str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: object, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON (plus a final newline) to ``path`` atomically.

    The object is serialised before anything touches the disk, so an object that is not
    JSON-able raises ``TypeError`` and leaves ``path`` alone. NaN and Infinity are written as
    Python's ``json`` writes them (and reads them back).
    """
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        msg = f"atomic_write_json: expected a JSON-able object for {path}, got: {e}"
        raise TypeError(msg) from None
    atomic_write_text(path, text + "\n")
