"""``metrics.jsonl``: one JSON record per line, appended as training goes, cut back on resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rnnlab.io.atomic import atomic_write_text


def append_record(path: Path, record: dict) -> None:
    """Add one JSON line to a metrics file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: Path, log: Callable[[str], object] = print) -> list[tuple[str, dict]]:
    """(line, record) pairs of a metrics file. A last line torn by a crash while it was appended
    is dropped (and said so); a damaged line elsewhere is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            records.append((ln, json.loads(ln)))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                log(f"{path}: dropped an incomplete last line")
                continue
            raise ValueError(f"{path}, line {i + 1}: not a JSON record ({err})") from None
    return records


def keep_records(path: Path, keep: Callable[[int, dict], bool],
                 log: Callable[[str], object] = print) -> list[dict]:
    """Rewrite a metrics file (atomically) with only the records ``keep(index, record)``
    accepts, and return them: a resumed run drops what was written after its checkpoint (a
    crash between the two), so the file reads as if the run had never stopped."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [(ln, r) for i, (ln, r) in enumerate(read_records(path, log)) if keep(i, r)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(ln + "\n" for ln, _ in kept))
    return [r for _, r in kept]
